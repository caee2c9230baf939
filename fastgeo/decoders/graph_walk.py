"""Walking a ``torch.fx`` graph along a single chain from its one input to its output: the
bookkeeping every graph reader shares (:mod:`fastgeo.decoders.graphs` knows the ops).

The chain may fork into two chains that are summed, multiplied or concatenated again (``x +
f(x)``, ``f(x) + g(x)``: residual blocks, nested too; ``x * sigmoid(f(x))``: gates;
``torch.cat([f(x), g(x)], 1)``: heads side by side): the first such join after which nothing uses
the fork or the nodes between closes it, and the two chains become one :class:`Branches` step
(a concatenation of three or more chains: nested ones).
Every node must be on the chain, except parameters (``get_attr``, and their transposes) and the
batch size (``x.size(0)``, ``x.shape[0]``, ``len(x)``, ``sym_size``), which may only lead a reshape's
shape; a chain node's or a parameter's dtype and device, which only conversions take; and the
values that cannot reach the output (a distribution's scale beside its mean: graph_dead).
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

from .graph_dead import dead_nodes, guard
from .graph_derived import derived_getter, derived_tensors
from .graph_ops import along_the_batch
from .steps import Affine, Axes, Branches, Broadcast, Concat, Flatten, Part, Reshape, Scale, Step, Unflatten

aten = torch.ops.aten
# W^T of a parameter in an aten graph (W.T, W.mT, W.t(), W.permute(1, 0); also W.transpose(0, 1))
_ATEN_TRANSPOSES = (aten.t.default, aten.permute.default, aten.numpy_T.default, aten.mT.default)


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
        self.shapes: set[Node] = set()  # x.shape / x.size() (x.dtype / x.device) of a chain node
        self.transposed: dict[Node, Node] = {}  # W^T (permute / t of a get_attr) -> W
        self.constants: dict[Node, Node] = {}  # a get_attr C copied along the batch -> C
        self.pending: Node | None = None  # a multi-output op whose output 0 continues the chain
        self.parts: tuple[str, Any, int] | None = None  # a chunk / split: its pieces follow (getitem)
        self.flat = True  # each point is a vector (as the input is)
        self.width: int | None = None  # of the last width-keeping reshape of a vector
        self.dead: set[Node] = set()  # values that cannot reach the output (graph_dead)
        self.steps: list[Step] = []
        self.at: Node | None = None  # the node being read (where a graph stops being a chain)

    def read(self, graph: Graph) -> list[Step]:
        with derived_tensors(graph, self.root, _parameter_view) as plain:
            return self._read(plain)

    def _read(self, graph: Graph) -> list[Step]:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        require(len(placeholders) == 1)
        self.current = placeholders[0]
        self.on_chain.add(self.current)
        nodes = [n for n in graph.nodes if n.op not in ("placeholder", "get_attr") and not guard(n)]
        self.dead = dead_nodes(graph, self.root)
        nodes = [n for n in nodes if not _unused(n) and n not in self.dead]
        require(nodes and nodes[-1].op == "output")
        self._read_nodes(nodes[:-1])
        self.at = nodes[-1]
        out = nodes[-1].args[0]
        out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
        require(out is self.current and self.pending is None and self.parts is None)
        return self.steps

    def _read_nodes(self, nodes: list[Node]) -> None:
        """Reads ``nodes`` (in graph order) along the chain; a fork of the chain into two chains
        that are summed becomes a :class:`Branches` step. Only users among ``nodes`` count (a
        branch's fork has users in the other branch)."""
        scope = set(nodes)
        i = 0
        while i < len(nodes):
            node = nodes[i]
            self.at = node
            if self._aside(node):
                i += 1
                continue
            if self.pending is None and len([u for u in _chain_users(self.current) if u in scope]) > 1:
                i = self._fork(nodes, i, scope)
                continue
            if self.pending is not None:  # only output 0 of a multi-output op is used
                require(node.target is operator.getitem and node.args == (self.pending, 0))
                self.pending = None
            elif self.parts is not None:  # a piece of a chunk / split
                index = node.args[1] if node.target is operator.getitem and len(node.args) == 2 else None
                require(type(index) is int and node.args[0] is self.current and not node.kwargs)
                self._add(Part(*self.parts, index))
                self.parts = None
            else:
                self._step(node)
            self.current = node
            self.on_chain.add(node)
            i += 1

    # ------------------------------------------------------------------ forks

    def _fork(self, nodes: list[Node], i: int, scope: set[Node]) -> int:
        """The chain forks at ``self.current`` X: finds the join J (a sum p + q, a difference p - q,
        a product or a concatenation) where the two chains from X meet again (the first node after which
        nothing else uses X or a node between), reads the chains to p and to q, adds their
        :class:`Branches` step and returns the index of the node after J."""
        fork = self.current
        between: list[Node] = []  # the nodes that depend on X before J, in order
        inside = {fork}
        for j in range(i, len(nodes)):
            node = nodes[j]
            if not any(a in inside for a in node.all_input_nodes):
                require(self._aside(node))  # the batch size of an earlier node, say
                continue
            terms, join, dim = _join_terms(node)
            if terms is not None and all(t in inside for t in terms):
                seen = self.batch | self.shapes  # sizes read before the fork
                users = {u for n in inside for u in n.users if u in scope and u not in seen}
                if users <= inside | {node}:
                    self._join(fork, between, terms, node, join, dim)
                    return j + 1
            inside.add(node)
            between.append(node)
        raise NotAChain

    def _join(
        self, fork: Node, between: list[Node], terms: tuple[Node, ...], node: Node, join: str, dim: int
    ) -> None:
        among = set(between)
        mine = [_ancestors(t, among) for t in terms]  # each branch's nodes
        require(sum(len(m) for m in mine) == len(among) and set().union(*mine) == among)  # disjoint
        branches = []
        for end, nodes in zip(terms, mine, strict=True):
            branch = type(self)(self.root)
            branch.current, branch.flat, branch.width, branch.parts = fork, self.flat, self.width, self.parts
            branch.on_chain, branch.batch = self.on_chain | {fork}, set(self.batch)
            branch.shapes, branch.transposed = set(self.shapes), dict(self.transposed)
            branch.constants, branch.dead = dict(self.constants), self.dead
            try:
                branch._read_nodes([n for n in between if n in nodes])
            finally:
                self.at = branch.at  # where a branch stops being a chain
            self.at = node
            require(branch.current is end and branch.pending is None and branch.parts is None)
            branches.append(branch)
        self.parts = None  # each branch took its piece
        first, second = branches[0], branches[-1]
        require(all(b.flat == first.flat for b in branches))
        require(join != "cat" or not first.flat or dim in (1, -1))
        # cat([a, b, c]) is cat([a, cat([b, c])]): nested from the last two
        steps = tuple(second.steps)
        if join == "difference":  # p - q is p + (-1) q
            steps, join = (*steps, Scale(-1.0, 0.0)), "sum"
        for branch in reversed(branches[:-1]):
            steps = (Branches(tuple(branch.steps), steps, join, dim),)
        self.steps.extend(steps)
        self.flat = first.flat
        self.width = first.width if first.width == second.width and join != "cat" else None
        self.current = node
        self.on_chain.add(node)

    # ------------------------------------------------------------------ beside the chain

    def _aside(self, node: Node) -> bool:
        """Records a node beside the chain: the batch size, a chain node's shape, a transposed
        weight (decomposed linear layers); False for others."""
        args = node.args
        source = args[0] if args else None
        if not isinstance(source, Node):
            return False
        if source.op == "get_attr" and node.target in _ATEN_TRANSPOSES:
            require(args[1:] in ((), ([1, 0],)) and not node.kwargs)
            self.transposed[node] = source
            return True
        if source.op == "get_attr" and node.target is aten.transpose.int:  # W.mT, W.transpose(0, 1)
            require(args[1:] in ((0, 1), (1, 0), (-1, -2), (-2, -1)) and not node.kwargs)
            self.transposed[node] = source
            return True
        if source.op == "get_attr" and _fx_transpose(node):  # W.T, W.t(), ... of a traced forward
            self.transposed[node] = source
            return True
        if source.op == "get_attr" and along_the_batch(node, self.batch):  # C.expand(len(z), -1)
            self.constants[node] = source
            return True
        if source.op == "get_attr" and node.target is getattr and args[1:] in (("dtype",), ("device",)):
            self.shapes.add(node)  # a weight's dtype or device: for a conversion
            return True
        if source not in self.on_chain and source not in self.shapes:
            return False
        if node.op == "call_function" and node.target is aten.sym_size.int:
            require(args[1:] == (0,) and not node.kwargs)
            self.batch.add(node)
        elif node.op == "call_function" and node.target is len:  # recorded while tracing
            require(len(args) == 1 and not node.kwargs)
            self.batch.add(node)
        elif node.op == "call_method" and node.target == "size":
            dims = args[1:] + ((node.kwargs["dim"],) if "dim" in node.kwargs else ())
            require(dims in ((), (0,)) and set(node.kwargs) <= {"dim"})
            (self.batch if dims else self.shapes).add(node)
        elif node.op == "call_function" and node.target is getattr and args[0] in self.on_chain:
            require(args[1:] in (("shape",), ("dtype",), ("device",)))  # the latter two: conversions
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
        if isinstance(step, Branches):  # a GLU (the pieces of one): the width halves
            self.width = None
        if isinstance(step, (Broadcast, Concat)):
            self.width = None
            self.flat = self.flat and (isinstance(step, Concat) or len(step.sizes) == 1)
        if isinstance(step, (Affine, Axes, Part)):
            self.width = None
            keeps_axes = isinstance(step, Affine) or isinstance(step, Part) and step.op != "select"
            self.flat = self.flat and keeps_axes
        if isinstance(step, (Reshape, Flatten, Unflatten)):
            reshape_to_vector = isinstance(step, Reshape) and len(step.shape) == 1
            self.flat = reshape_to_vector or isinstance(step, Flatten) and (step.start, step.end) == (1, -1)
            self.width = None
        self.steps.append(step)


def _parameter_view(node: Node) -> bool:
    """A transpose of a parameter, or its dtype or device: read beside the chain, as it is."""
    source = node.args[0] if node.args else None
    if not isinstance(source, Node) or source.op != "get_attr":
        return False
    return (
        node.target in _ATEN_TRANSPOSES or node.target is aten.transpose.int or _fx_transpose(node)
        or node.target is getattr
    )  # fmt: skip


_SIZES = ("size", "dim")


def _chain_users(node: Node) -> list[Node]:
    """The users of ``node`` that take its value (not its size or shape, nor a guard)."""
    out = []
    for u in node.users:
        if guard(u) or u.op == "call_method" and u.target in _SIZES:
            continue
        if u.op == "call_function" and u.target in (aten.sym_size.int, getattr, len):
            continue
        out.append(u)
    return out


_SUMS = (operator.add, torch.add, aten.add.Tensor)
_DIFFERENCES = (operator.sub, torch.sub, aten.sub.Tensor)
_PRODUCTS = (operator.mul, torch.mul, aten.mul.Tensor)
_CATS = (torch.cat, torch.concat, aten.cat.default)


def _unused(node: Node) -> bool:
    """A piece of a multi-output op that nothing uses (``torch.export`` keeps them)."""
    return node.op == "call_function" and node.target is operator.getitem and not node.users


def _fx_transpose(node: Node) -> bool:
    """Whether ``node`` of a symbolically traced graph is the matrix transpose of its first
    argument: ``W.T``, ``W.mT``, ``W.t()``, ``torch.t(W)``, ``W.transpose(0, 1)`` (a parameter of
    another shape fails the check of the chain against the decoder)."""
    args, plain = node.args[1:], not node.kwargs
    if node.op == "call_function" and node.target is getattr:
        return args in (("T",), ("mT",))
    if (node.op, node.target) in (("call_function", torch.t), ("call_method", "t")):
        return args == () and plain
    if node.op == "call_method" and node.target in ("transpose", "swapaxes"):
        return plain and args in ((0, 1), (1, 0), (-1, -2), (-2, -1))
    return False


def _join_terms(node: Node) -> tuple[tuple[Node, ...] | None, str, int]:
    """((p, q), join, dim) if ``node`` joins two graph values: ``p + q`` (``operator.add``,
    ``torch.add``, aten ``add.Tensor`` with alpha 1: join "sum"), ``p - q`` ("difference"),
    ``p * q`` ("product") or
    ``torch.cat([p, q, ...], dim)`` along an axis of the point ("cat", two or more); else (None,
    "", 0)."""
    nothing: tuple[None, str, int] = (None, "", 0)
    if node.op != "call_function" or node.target not in _SUMS + _DIFFERENCES + _PRODUCTS + _CATS:
        return nothing
    args, kwargs = node.args, dict(node.kwargs)
    if node.target in _CATS:
        tensors = args[0] if args else kwargs.pop("tensors", None)
        dim = args[1] if len(args) > 1 else kwargs.pop("dim", 0)
        ok = isinstance(tensors, (list, tuple)) and len(tensors) >= 2 and len(args) <= 2 and not kwargs
        if not ok or not all(isinstance(t, Node) for t in tensors) or not isinstance(dim, int) or dim == 0:
            return nothing
        return tuple(tensors), "cat", dim
    alpha = kwargs.get("alpha", 1)
    extra = set(kwargs) - {"alpha"}
    if len(args) != 2 or extra or alpha != 1 or not all(isinstance(a, Node) for a in args):
        return nothing
    join = "product" if node.target in _PRODUCTS else "difference" if node.target in _DIFFERENCES else "sum"
    return (args[0], args[1]), join, 0


def _ancestors(end: Node, among: set[Node]) -> set[Node]:
    """``end`` and the nodes of ``among`` it depends on."""
    seen: set[Node] = set()
    todo = [end]
    while todo:
        n = todo.pop()
        if n in among and n not in seen:
            seen.add(n)
            todo.extend(n.all_input_nodes)
    return seen


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
    """The getter of ``root``'s parameter or buffer ``name`` (or of a tensor derived from them,
    :mod:`fastgeo.decoders.graph_derived`)."""
    derived = derived_getter(root, name)
    if derived is not None:
        return derived

    def get() -> Any:
        obj = root
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    return get
