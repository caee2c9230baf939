"""Walking a ``torch.fx`` graph along a single chain from its one input to its output: the
bookkeeping every graph reader shares (:mod:`fastgeo.decoders.graphs` knows the ops).

Every node must be on the chain, except parameters (``get_attr``, and their transposes) and the
batch size (``x.size(0)``, ``x.shape[0]``, ``sym_size``), which may only lead a reshape's shape.
A reshape must keep the batch: ``(-1, C, H, W)`` or ``(batch, ...)``. Anything else raises
:class:`NotAChain`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import Graph, Node

from .modules import GELU_APPROXIMATIONS, PAD_MODES, UPSAMPLE_MODES, hashable
from .steps import Activation, Affine, Flatten, Pad, Reshape, Step, Unflatten, Upsample

aten = torch.ops.aten


class NotAChain(Exception):
    pass


def require(condition: object) -> None:
    if not condition:
        raise NotAChain


def bind(args: tuple, kwargs: dict, params: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Arguments after the input, by name, with the defaults filled in."""
    require(len(args) <= len(params) and set(kwargs) <= {p for p, _ in params})
    bound = {p: default for p, default in params}
    bound.update(zip([p for p, _ in params], args, strict=False))
    bound.update(kwargs)
    return bound


class ChainReader:
    """Walks a graph in order, following the chain from the input to the output."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.current: Node | None = None
        self.on_chain: set[Node] = set()
        self.batch: set[Node] = set()  # nodes holding the batch size
        self.shapes: set[Node] = set()  # x.shape / x.size() of a chain node
        self.transposed: dict[Node, Node] = {}  # W^T (permute / t of a get_attr) -> W
        self.pending: Node | None = None  # a multi-output op whose output 0 continues the chain
        self.flat = True  # each point is a vector (as the input is)
        self.width: int | None = None  # of the last width-keeping reshape of a vector
        self.steps: list[Step] = []
        self.at: Node | None = None  # the node being read (where a graph stops being a chain)

    def read(self, graph: Graph) -> list[Step]:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        require(len(placeholders) == 1)
        self.current = placeholders[0]
        self.on_chain.add(self.current)
        for node in graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            self.at = node
            if node.op == "output":
                out = node.args[0]
                out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
                require(out is self.current and self.pending is None)
                return self.steps
            if node.op == "call_module" and not node.users and node.target == "_guards_fn":
                continue  # torch.export's input guards: no value flows out of them
            if self._aside(node):
                continue
            if self.pending is not None:  # only output 0 of a multi-output op is used
                require(node.target is operator.getitem and node.args == (self.pending, 0))
                self.pending = None
            else:
                self._step(node)
            self.current = node
            self.on_chain.add(node)
        raise NotAChain

    # ------------------------------------------------------------------ beside the chain

    def _aside(self, node: Node) -> bool:
        """Records a node beside the chain: the batch size, a chain node's shape, a transposed
        weight (decomposed linear layers); False for others."""
        args = node.args
        source = args[0] if args else None
        if not isinstance(source, Node):
            return False
        if source.op == "get_attr" and node.target in (aten.t.default, aten.permute.default):
            require(args[1:] in ((), ([1, 0],)) and not node.kwargs)
            self.transposed[node] = source
            return True
        if source not in self.on_chain and source not in self.shapes:
            return False
        if node.op == "call_function" and node.target is aten.sym_size.int:
            require(args[1:] == (0,) and not node.kwargs)
            self.batch.add(node)
        elif node.op == "call_method" and node.target == "size":
            dims = args[1:] + ((node.kwargs["dim"],) if "dim" in node.kwargs else ())
            require(dims in ((), (0,)) and set(node.kwargs) <= {"dim"})
            (self.batch if dims else self.shapes).add(node)
        elif node.op == "call_function" and node.target is getattr and args[0] in self.on_chain:
            require(args[1:] == ("shape",))
            self.shapes.add(node)
        elif node.op == "call_function" and node.target is operator.getitem and args[0] in self.shapes:
            require(args[1:] == (0,))
            self.batch.add(node)
        else:
            return False
        return True

    def _step(self, node: Node) -> None:
        """One node of the chain (the ops a reader knows)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ steps

    def _add(self, step: Step) -> None:
        """Appends a step, keeping track of whether points are vectors; drops the reshapes of a
        vector that keep it a vector (no-ops: a reshape that changed the batch would make the
        decoder's output fail the shape check)."""
        if isinstance(step, Reshape) and self.flat and len(step.shape) == 1:
            width = step.shape[0]
            if width == -1:
                return
            require(self.width is None or width == self.width)
            self.width = width
            return
        if isinstance(step, Flatten) and self.flat and (step.start, step.end) in ((1, -1), (1, 1), (-1, -1)):
            return
        if isinstance(step, Affine):
            self.width = None
        if isinstance(step, (Reshape, Flatten, Unflatten)):
            reshape_to_vector = isinstance(step, Reshape) and len(step.shape) == 1
            self.flat = reshape_to_vector or isinstance(step, Flatten) and (step.start, step.end) == (1, -1)
            self.width = None
        self.steps.append(step)

    def _reshape(self, shape: Any) -> None:
        """A reshape to ``shape`` (batch first: -1, or the batch size from a node)."""
        require(isinstance(shape, (tuple, list)) and len(shape) >= 2)
        first, rest = shape[0], tuple(shape[1:])
        require(first == -1 if isinstance(first, int) else first in self.batch)
        require(all(isinstance(s, int) and s >= -1 for s in rest) and list(shape).count(-1) <= 1)
        self._add(Reshape(rest))

    def _gelu(self, approximate: Any) -> None:
        require(approximate in GELU_APPROXIMATIONS)
        self._add(Activation(GELU_APPROXIMATIONS[approximate]))

    def _flatten(self, start: Any, end: Any) -> None:
        require(isinstance(start, int) and isinstance(end, int) and start != 0)
        self._add(Flatten(start, end))

    def _unflatten(self, dim: Any, sizes: Any) -> None:
        require(isinstance(dim, int) and dim != 0 and isinstance(sizes, (tuple, list)))
        require(all(isinstance(s, int) for s in sizes))
        self._add(Unflatten(dim, tuple(sizes)))

    def _upsample(self, size: Any, scale: Any, mode: str, align_corners: Any, recompute: Any = None) -> None:
        require(mode in UPSAMPLE_MODES)
        self._add(Upsample(hashable(size), hashable(scale), mode, align_corners, recompute))

    def _pad(self, pad: Any, mode: str, value: Any) -> None:
        require(mode in PAD_MODES and (value is None or float(value) == 0.0))
        self._add(Pad(tuple(pad), mode))

    def _param(self, value: Any, optional: bool = True) -> Callable[[], Any]:
        """The getter of a parameter argument: a ``get_attr`` node, or None if optional."""
        if value is None and optional:
            return lambda: None
        require(isinstance(value, Node) and value.op == "get_attr")
        return attribute(self.root, value.target)


def nodes(value: Any) -> list[Node]:
    """The nodes among arguments (nested in lists, tuples and dicts)."""
    if isinstance(value, Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in nodes(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in nodes(v)]
    return []


def attribute_names(a: dict[str, Any], *keys: str) -> tuple[str | None, ...]:
    """The attribute names of a step's parameters: its identity in an aten graph."""
    return tuple(a[k].target if isinstance(a[k], Node) else None for k in keys)


def attribute(root: nn.Module, name: str) -> Callable[[], Any]:
    def get() -> Any:
        obj = root
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    return get
