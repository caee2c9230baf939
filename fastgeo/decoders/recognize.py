"""Recognizing decoder means that the stacked forward mode can differentiate: chains of affine
layers and pointwise activations, read off the module's structure as a list of steps.

- ``nn.Sequential`` (nested too) and bare ``nn.Linear``;
- ``torch.fx.GraphModule`` of ``aten`` ops, e.g. a mean saved by :func:`fastgeo.save_generator`
  (``torch.export``) and loaded back;
- activations: ELU, ReLU, LeakyReLU, Tanh, Sigmoid, Softplus, SiLU, Identity.

Anything else is not a chain (None): its Jacobian comes from ``torch.func``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .flat import FlatMean
from .steps import Activation, Affine, Step

_SIMPLE = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}


def chain_module(fn: Callable[[Tensor], Tensor]) -> nn.Module | None:
    """The module whose structure describes ``fn``: ``fn`` itself, or the module a
    :class:`FlatMean` wraps (it only flattens (..., d) to (P, d)); None for a plain callable."""
    if type(fn) is FlatMean and not (fn._forward_hooks or fn._forward_pre_hooks):
        return fn.flat
    return fn if isinstance(fn, nn.Module) else None


def module_steps(module: nn.Module) -> list[Step] | None:
    """Steps of an nn.Sequential / nn.Linear / activation module, or None if not a plain chain."""
    if isinstance(module, torch.fx.GraphModule):
        return graph_steps(module)  # torch.export's own hooks only check and flatten the input
    if module._forward_hooks or module._forward_pre_hooks:
        return None
    kind = type(module)
    if kind is nn.Sequential:
        steps: list[Step] = []
        for child in module:
            sub = module_steps(child)
            if sub is None:
                return None
            steps += sub
        return steps
    if kind is nn.Linear:
        return [Affine(lambda m=module: m.weight, lambda m=module: m.bias, id(module))]
    if kind is nn.Identity:
        return []
    if kind in _SIMPLE:
        return [Activation(_SIMPLE[kind])]
    if kind is nn.ELU:
        return [Activation("elu", (float(module.alpha),))]
    if kind is nn.LeakyReLU:
        return [Activation("leaky_relu", (float(module.negative_slope),))]
    if kind is nn.Softplus:
        return [Activation("softplus", (float(module.beta), float(module.threshold)))]
    return None


def _attribute(gm: torch.fx.GraphModule, name: str) -> Callable[[], Tensor]:
    def get() -> Tensor:
        obj = gm
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    return get


def _aten_step(node: torch.fx.Node, gm: torch.fx.GraphModule) -> Step | None:
    """The step of one aten call of a chain, or None if it is not one the forward mode knows."""
    aten = torch.ops.aten
    target, args = node.target, node.args
    simple = {
        aten.relu.default: "relu",
        aten.tanh.default: "tanh",
        aten.sigmoid.default: "sigmoid",
        aten.silu.default: "silu",
    }
    if target is aten.linear.default:
        if any(a.op != "get_attr" for a in args[1:]):
            return None
        has_bias = len(args) > 2 and args[2] is not None
        bias = _attribute(gm, args[2].target) if has_bias else (lambda: None)
        return Affine(
            _attribute(gm, args[1].target), bias, (args[1].target, args[2].target if has_bias else None)
        )
    if target is aten.elu.default:
        if any(float(a) != 1.0 for a in args[2:4]):
            return None  # scale / input_scale variants (SELU) are not handled
        return Activation("elu", (float(args[1]) if len(args) > 1 else 1.0,))
    if target is aten.leaky_relu.default:
        return Activation("leaky_relu", (float(args[1]) if len(args) > 1 else 0.01,))
    if target is aten.softplus.default:
        beta = float(args[1]) if len(args) > 1 else 1.0
        return Activation("softplus", (beta, float(args[2]) if len(args) > 2 else 20.0))
    if target in simple:
        return Activation(simple[target])
    return None


def graph_steps(gm: torch.fx.GraphModule) -> list[Step] | None:
    """Steps of an fx graph that is a single chain of aten linear layers and activations from
    its one input to its output (shape bookkeeping such as ``reshape(x, [-1, width])`` allowed)."""
    aten = torch.ops.aten
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    current = placeholders[0]
    width: int | None = None
    steps: list[Step] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            continue
        if node.op == "call_module" and not node.users and node.target == "_guards_fn":
            continue  # torch.export's input guards: no value flows out of them
        if node.op == "output":
            out = node.args[0]
            out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
            return steps if out is current else None
        if node.op != "call_function":
            return None
        if node.target is aten.sym_size.int:
            continue  # only feeds reshape targets, checked below
        if not node.args or node.args[0] is not current or node.kwargs:
            return None
        if node.target in (aten.reshape.default, aten.view.default):
            shape = node.args[1]
            last = shape[-1] if len(shape) == 2 else None
            if not isinstance(last, int) or (width is not None and last != width):
                return None
            width = last
        else:
            step = _aten_step(node, gm)
            if step is None:
                return None
            steps.append(step)
            if isinstance(step, Affine):
                width = None
        current = node
    return None
