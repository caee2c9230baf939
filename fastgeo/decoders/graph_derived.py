"""Tensors a decoder computes from its own parameters in ``forward``: a learned output scale as
``self.log_scale.exp()`` or ``F.softplus(self.raw_scale)``, a weight normalized by hand,
``self.v / self.v.norm(dim=1, keepdim=True)``, a slice of a parameter. In a graph they are nodes
that do not depend on the input. Before a graph is read they are replaced by ``get_attr`` nodes
of a name of their own (a description of how they are computed), whose getter computes them
from the parameters at every call (so that in-place changes of the parameters show, as for the
parameters themselves): every step that takes a parameter takes them too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn
from torch.fx import Graph, Node
from torch.fx.node import map_arg

# (id of the root module, name) -> getter, while a graph of that root is read
_GETTERS: dict[tuple[int, str], Callable[[], Any]] = {}


def derived_getter(root: nn.Module, name: str) -> Callable[[], Any] | None:
    """The getter of the derived tensor ``name`` of a graph of ``root`` being read, or None."""
    return _GETTERS.get((id(root), name))


@contextlib.contextmanager
def derived_tensors(graph: Graph, root: nn.Module, kept: Callable[[Node], bool]) -> Iterator[Graph]:
    """``graph`` with its derived tensors as ``get_attr`` nodes (a copy where it has any: the
    graph itself is not changed), their getters registered while the context is open; ``kept``:
    nodes left for the reader (a parameter's transpose, dtype or device)."""
    derived = _derived_nodes(graph, kept)
    used = [n for n in derived if any(u not in derived for u in n.users)]
    if not used:
        yield graph
        return
    copy, env = Graph(), {}
    copy.output(copy.graph_copy(graph, env))
    names = []
    try:
        for node in used:
            name = f"<{_describe(node)}>"
            _GETTERS[id(root), name] = _getter(node, root)
            names.append(name)
            mine = env[node]
            with copy.inserting_before(mine):
                mine.replace_all_uses_with(copy.get_attr(name))
        copies = {env[n] for n in derived}
        for node in reversed(list(copy.nodes)):
            if node in copies and not node.users:
                copy.erase_node(node)
        yield copy
    finally:
        for name in names:
            _GETTERS.pop((id(root), name), None)


def _derived_nodes(graph: Graph, kept: Callable[[Node], bool]) -> set[Node]:
    """The pure functions and methods of parameters and of such nodes (not in place, not
    ``kept``, with at least one node among their arguments)."""
    derived: set[Node] = set()
    for n in graph.nodes:
        inputs = n.all_input_nodes
        if n.op not in ("call_function", "call_method") or not inputs or kept(n) or _in_place(n):
            continue
        if all(a.op == "get_attr" or a in derived or kept(a) for a in inputs):
            derived.add(n)
    return derived


def _in_place(node: Node) -> bool:
    """Whether ``node`` changes a tensor in place (``detach_`` changes no values: a constant of a
    distribution lifted by ``torch.export`` is detached in place)."""
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if name in ("detach_", "detach_.default"):
        return False
    if hasattr(node.target, "_schema"):  # an aten op overload
        return node.target._schema.is_mutable
    return name.endswith("_") and not name.startswith("_")


def _describe(node: Any) -> str:
    """How a derived tensor is computed, for its name (its identity in the chain's structure)."""
    if isinstance(node, Node):
        if node.op == "get_attr":
            return str(node.target)
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        args = [_describe(a) for a in node.args] + [f"{k}={_describe(v)}" for k, v in node.kwargs.items()]
        return f"{name}({', '.join(args)})"
    if isinstance(node, (list, tuple)):
        return "(" + ", ".join(_describe(a) for a in node) + ")"
    return repr(node)


def _getter(node: Node, root: nn.Module) -> Callable[[], Any]:
    """A getter that computes ``node`` from ``root``'s parameters (as the decoder does)."""

    def value(n: Node) -> Any:
        if n.op == "get_attr":
            obj = root
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        args, kwargs = map_arg(n.args, value), map_arg(n.kwargs, value)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        return getattr(args[0], n.target)(*args[1:], **kwargs)

    return lambda: value(node)
