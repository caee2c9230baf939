"""Arithmetic of a chain's value with a constant, read off a graph node: ``x * c``, ``x / c``, ``x
+ c``, ``x - c``, ``c - x``, ``-x`` and ``x * x`` (a power), where c is a number (a
:class:`Scale` step) or a tensor of the decoder's own, a ``get_attr`` node (a :class:`ByTensor`
step: a learned output scale, a layer scale, the data's mean and standard deviation kept as
buffers)."""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import nn
from torch.fx import Node

from .graph_walk import attribute, require
from .steps import Activation, ByTensor, Scale, Step

# torch-level arithmetic of symbolically traced graphs -> its aten name
FX_ARITHMETIC = {
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.neg: "neg",
    torch.neg: "neg",
}
# ... and tensor methods (``buffer * x`` is traced as the buffer's method ``mul``)
METHOD_ARITHMETIC = {"mul": "mul", "div": "div", "add": "add", "sub": "sub", "neg": "neg"}
ATEN_ARITHMETIC = frozenset({"mul", "div", "add", "sub", "rsub", "neg"})


def _number(c: Any) -> float | None:
    if isinstance(c, (int, float)) and not isinstance(c, bool):
        require(math.isfinite(c))
        return float(c)
    return None


def _step(name: str, c: Any, alpha: float, first: bool, root: nn.Module) -> Step:
    """``x <name> alpha c`` (``first``: x is the left operand, else ``c <name> x``)."""
    number = _number(c)
    if number is None:
        require(isinstance(c, Node) and c.op == "get_attr")
        get, identity = attribute(root, c.target), c.target
        if name in ("mul", "div"):
            require(first or name == "mul")
            return ByTensor(name, get, identity)
        if name == "add":
            return ByTensor("add", get, identity, 1.0, alpha)
        x_coef, p_coef = (1.0, -alpha) if first else (-1.0, 1.0)
        return ByTensor("add", get, identity, x_coef, p_coef)
    c = alpha * number
    if name == "mul":
        return Scale(c, 0.0)
    if name == "div":
        require(first and c != 0.0)
        return Scale(1.0 / c, 0.0)
    if name == "add":
        return Scale(1.0, c)
    return Scale(1.0, -c) if first else Scale(-1.0, c)


def fx_arithmetic_step(node: Node, current: Node, root: nn.Module) -> Step:
    """The step of a ``torch.fx``-traced arithmetic node (a function of :data:`FX_ARITHMETIC`
    or a method of :data:`METHOD_ARITHMETIC`) on ``current``, the chain's value."""
    require(not node.kwargs)
    name = (METHOD_ARITHMETIC if node.op == "call_method" else FX_ARITHMETIC)[node.target]
    args = node.args
    if name == "neg":
        require(args == (current,))
        return Scale(-1.0, 0.0)
    if name == "mul" and args == (current, current):  # x * x
        return Activation("power", (2.0,))
    require(len(args) == 2 and sum(a is current for a in args) == 1)
    first = args[0] is current
    return _step(name, args[1] if first else args[0], 1.0, first, root)


def aten_arithmetic_step(name: str, a: dict[str, Any], root: nn.Module) -> Step:
    """The step of an aten arithmetic op (of :data:`ATEN_ARITHMETIC`, its input the chain's
    value, other arguments ``a``): ``rsub(x, c, alpha)`` is ``c - alpha x``, ``add`` and ``sub``
    scale c by ``alpha``."""
    if name == "neg":
        return Scale(-1.0, 0.0)
    require(a.get("rounding_mode") is None)  # x // 2 (div.Tensor_mode) is no scaling: its derivative is 0
    alpha = _number(a.get("alpha", 1))
    require(alpha is not None)
    if name == "rsub":  # c - alpha x
        number = _number(a["other"])
        if number is None:
            require(isinstance(a["other"], Node) and a["other"].op == "get_attr")
            return ByTensor("add", attribute(root, a["other"].target), a["other"].target, -alpha)
        return Scale(-alpha, number)
    return _step(name, a["other"], alpha if name in ("add", "sub") else 1.0, True, root)
