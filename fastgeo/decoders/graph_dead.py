"""The nodes of a graph whose values cannot reach its output: a distribution's other parameters
beside its mean (``Normal(mu, exp(0.5 * logvar)).mean``: ``broadcast_tensors(mu, scale)``, of
which only output 0 is used), heads no one uses (an exported ``vae.decode(z)[0]`` keeps its
logvar head), with what hangs off them (checks on them, which give no value). The graph readers
skip them (:mod:`fastgeo.decoders.graph_walk`)."""

from __future__ import annotations

import inspect
import operator

import torch
from torch import nn
from torch.fx import Graph, Node

aten = torch.ops.aten
_BROADCASTS = (torch.broadcast_tensors, torch.functional.broadcast_tensors, aten.broadcast_tensors.default)
_ASSERTS = (
    torch._assert, torch._assert_async, aten._assert_async.default, aten._assert_async.msg,
    aten._assert_scalar.default, aten._assert_tensor_metadata.default,
)  # fmt: skip
_IN_PLACE = (
    operator.setitem, operator.delitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
    operator.ifloordiv, operator.imod, operator.ipow, operator.imatmul, operator.iand, operator.ior,
    operator.ixor, operator.ilshift, operator.irshift,
)  # fmt: skip


def dead_nodes(graph: Graph, root: nn.Module) -> set[Node]:
    """The nodes whose values do not reach the output, or only through the other tensors of a
    ``broadcast_tensors`` whose outputs but the first are unused, connected to those tensors
    through such nodes; none where one of them might write in place (a view of the mean)."""
    live: set[Node] = set()
    seeds: list[Node] = []
    todo = [n for n in graph.nodes if n.op == "output"]
    while todo:
        node = todo.pop()
        if node in live:
            continue
        live.add(node)
        tensors = _first_used_only(node)
        if tensors is None:
            todo.extend(node.all_input_nodes)
        else:
            todo.extend(tensors[:1])
            seeds.extend(tensors[1:])
    dead: set[Node] = set()
    # ... and a head beside the mean that nothing uses, fed by values of the chain (``torch.export``
    # of ``vae.decode(z)[0]`` keeps the logvar head's layers). Not what the parameters alone feed:
    # a weight's update left beside the graph (a spectral norm's power iteration in training mode)
    # keeps the graph from being read as a chain.
    heads = [n for n in graph.nodes if n not in live and not guard(n) and _fed_by_chain(n, live)]
    todo = [n for n in seeds if n not in live] + heads
    while todo:  # what hangs off them beside the live nodes: checks of their values, say
        node = todo.pop()
        if node in dead or node in live or node.op in ("placeholder", "get_attr", "output"):
            continue
        dead.add(node)
        todo.extend(node.all_input_nodes)
        todo.extend(node.users)
    if any(writes(n, root) for n in dead):
        return set()
    return dead


def _fed_by_chain(node: Node, live: set[Node]) -> bool:
    """Whether ``node`` reads a live value other than a parameter or buffer (``get_attr``)."""
    return any(n in live and n.op != "get_attr" for n in node.all_input_nodes)


def guard(node: Node) -> bool:
    """torch.export's input guards and dtype assertions (before a conversion): no value flows
    out of them."""
    if node.users:
        return False
    return node.op == "call_module" and node.target == "_guards_fn" or (
        node.op == "call_function" and node.target is aten._assert_tensor_metadata.default
    )  # fmt: skip


def _first_used_only(node: Node) -> list[Node] | None:
    """The tensors of ``broadcast_tensors`` if only its output 0 is used (a distribution's mean
    beside its other parameters), else None."""
    if node.op != "call_function" or node.target not in _BROADCASTS or node.kwargs:
        return None
    aten_form = node.target is aten.broadcast_tensors.default
    if aten_form and not (len(node.args) == 1 and isinstance(node.args[0], (list, tuple))):
        return None
    tensors = list(node.args[0] if aten_form else node.args)
    if not tensors or not all(isinstance(t, Node) for t in tensors):
        return None
    for user in node.users:
        piece = user.op == "call_function" and user.target is operator.getitem and len(user.args) == 2
        if not piece or user.kwargs or type(user.args[1]) is not int or user.args[1] != 0 and user.users:
            return None
    return tensors


def writes(node: Node, root: nn.Module) -> bool:
    """Whether ``node`` might write into a tensor (in place, ``out=``) or have another effect
    than its value, other than a check (an assertion): conservatively."""
    target, kwargs = node.target, node.kwargs
    if node.op == "call_method":
        return not isinstance(target, str) or target.endswith("_")
    if node.op == "call_module":
        try:
            sub = root.get_submodule(target)
        except AttributeError:
            return True
        return bool(getattr(sub, "inplace", False)) or bool(getattr(sub, "_is_impure", False))
    if node.op != "call_function":
        return True
    if target in _ASSERTS:
        return False
    if target in _IN_PLACE or kwargs.get("out") is not None or kwargs.get("inplace"):
        return True
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.is_mutable
    if not callable(target) or getattr(target, "__name__", "").endswith("_"):
        return True
    try:
        if node.is_impure(impure_random=False):
            return True
    except Exception:  # noqa: BLE001 - not known to be pure
        return True
    try:
        bound = inspect.signature(target).bind(*node.args, **kwargs).arguments
    except (TypeError, ValueError):  # a builtin without a signature: its kwargs were seen above
        return False
    return bool(bound.get("inplace"))
