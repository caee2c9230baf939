"""Steps of a ``torch.fx`` graph that is a single chain from its one input to its output.

Two kinds of graphs are read:

- ``aten`` graphs, as ``torch.export`` captures a module (``torch.export.export(...).module()``,
  a mean saved by :func:`fastgeo.save_generator` with ``format="export"`` and loaded back,
  decomposed or not): linear (or addmm / mm of a transposed weight), convolution / conv{1,2}d /
  conv_transpose{1,2}d, upsample_*.vec, batch_norm / _native_batch_norm_legit_no_training
  (eval), group_norm / native_group_norm, layer_norm / native_layer_norm, pad and the padding
  ops, view / reshape / _unsafe_view / flatten / unflatten, clone, dropout (eval) and the
  activations (in-place variants too);
- graphs of ``torch.fx.symbolic_trace`` (a custom decoder's ``forward``): call_module nodes of
  the layers of :mod:`fastgeo.decoders.modules`, torch / ``torch.nn.functional`` activations
  (relu, tanh, sigmoid, silu, elu, leaky_relu, softplus, gelu, hardtanh, relu6),
  ``F.interpolate``, ``F.pad``, ``torch.flatten`` / ``torch.reshape`` / ``torch.unflatten``, and
  the methods view / reshape / flatten / unflatten / contiguous / relu / tanh / sigmoid.

Every node must be on the chain, except parameters (``get_attr``, and their transposes) and the
batch size (``x.size(0)``, ``x.shape[0]``, ``sym_size``), which may only lead a reshape's shape.
A reshape must keep the batch: ``(-1, C, H, W)`` or ``(batch, ...)``. Anything else, or
arguments of an unexpected form, and the graph is not a chain (None).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.fx.operator_schemas import normalize_function

from .modules import GELU_APPROXIMATIONS, PAD_MODES, UPSAMPLE_MODES, hashable, module_steps
from .steps import (
    Activation,
    Affine,
    BatchNorm,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    Pad,
    Reshape,
    Step,
    Unflatten,
    Upsample,
)

aten = torch.ops.aten

_ATEN_SIMPLE = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "silu": "silu"}
_ATEN_UPSAMPLE = {
    "upsample_nearest1d": "nearest",
    "upsample_nearest2d": "nearest",
    "_upsample_nearest_exact1d": "nearest-exact",
    "_upsample_nearest_exact2d": "nearest-exact",
    "upsample_linear1d": "linear",
    "upsample_bilinear2d": "bilinear",
    "upsample_bicubic2d": "bicubic",
}
_ATEN_IDENTITY = {"clone", "contiguous", "alias"}
_ATEN_VIEWS = {"view", "reshape", "_unsafe_view"}
# torch-level functions of symbolically traced graphs: name, then (parameter, default) after x.
_FUNCTIONS: dict[Callable, tuple[str, tuple[tuple[str, Any], ...]]] = {
    torch.relu: ("relu", ()),
    torch.tanh: ("tanh", ()),
    torch.sigmoid: ("sigmoid", ()),
    F.relu: ("relu", (("inplace", False),)),
    F.tanh: ("tanh", ()),
    F.sigmoid: ("sigmoid", ()),
    F.silu: ("silu", (("inplace", False),)),
    F.elu: ("elu", (("alpha", 1.0), ("inplace", False))),
    F.leaky_relu: ("leaky_relu", (("negative_slope", 0.01), ("inplace", False))),
    F.softplus: ("softplus", (("beta", 1.0), ("threshold", 20.0))),
    F.gelu: ("gelu", (("approximate", "none"),)),
    F.hardtanh: ("hardtanh", (("min_val", -1.0), ("max_val", 1.0), ("inplace", False))),
    F.relu6: ("hardtanh", (("inplace", False),)),
    torch.flatten: ("flatten", (("start_dim", 0), ("end_dim", -1))),
    torch.reshape: ("reshape", (("shape", None),)),
    torch.unflatten: ("unflatten", (("dim", None), ("sizes", None))),
    F.interpolate: ("interpolate", (("size", None), ("scale_factor", None), ("mode", "nearest"),
                                    ("align_corners", None), ("recompute_scale_factor", None),
                                    ("antialias", False))),
    F.pad: ("pad", (("pad", None), ("mode", "constant"), ("value", None))),
}  # fmt: skip
_METHODS: dict[str, tuple[tuple[str, Any], ...]] = {
    "relu": (),
    "tanh": (),
    "sigmoid": (),
    "contiguous": (),
    "flatten": (("start_dim", 0), ("end_dim", -1)),
    "unflatten": (("dim", None), ("sizes", None)),
}


def graph_steps(gm: GraphModule) -> list[Step] | None:
    """Steps of ``gm`` if its graph is a single chain of known ops from its one input to its
    output, else None. Parameters are read from ``gm`` at call time."""
    return read_graph(gm.graph, gm)


def read_graph(graph: Graph, root: nn.Module) -> list[Step] | None:
    """Steps of ``graph`` (its modules and attributes looked up in ``root``), or None."""
    try:
        return _Reader(root).read(graph)
    except Exception:  # noqa: BLE001 - _NotAChain, or arguments of an unexpected form: not a chain
        return None


class _NotAChain(Exception):
    pass


def _require(condition: object) -> None:
    if not condition:
        raise _NotAChain


def _bind(args: tuple, kwargs: dict, params: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """Arguments after the input, by name, with the defaults filled in."""
    _require(len(args) <= len(params) and set(kwargs) <= {p for p, _ in params})
    bound = {p: default for p, default in params}
    bound.update(zip([p for p, _ in params], args, strict=False))
    bound.update(kwargs)
    return bound


class _Reader:
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

    def read(self, graph: Graph) -> list[Step]:
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        _require(len(placeholders) == 1)
        self.current = placeholders[0]
        self.on_chain.add(self.current)
        for node in graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                out = node.args[0]
                out = out[0] if isinstance(out, (tuple, list)) and len(out) == 1 else out
                _require(out is self.current and self.pending is None)
                return self.steps
            if node.op == "call_module" and not node.users and node.target == "_guards_fn":
                continue  # torch.export's input guards: no value flows out of them
            if self._aside(node):
                continue
            if self.pending is not None:  # only output 0 of a multi-output op is used
                _require(node.target is operator.getitem and node.args == (self.pending, 0))
                self.pending = None
            else:
                self._step(node)
            self.current = node
            self.on_chain.add(node)
        raise _NotAChain

    # ------------------------------------------------------------------ beside the chain

    def _aside(self, node: Node) -> bool:
        """Records a node beside the chain: the batch size, a chain node's shape, a transposed
        weight (decomposed linear layers); False for others."""
        args = node.args
        source = args[0] if args else None
        if not isinstance(source, Node):
            return False
        if source.op == "get_attr" and node.target in (aten.t.default, aten.permute.default):
            _require(args[1:] in ((), ([1, 0],)) and not node.kwargs)
            self.transposed[node] = source
            return True
        if source not in self.on_chain and source not in self.shapes:
            return False
        if node.op == "call_function" and node.target is aten.sym_size.int:
            _require(args[1:] == (0,) and not node.kwargs)
            self.batch.add(node)
        elif node.op == "call_method" and node.target == "size":
            dims = args[1:] + ((node.kwargs["dim"],) if "dim" in node.kwargs else ())
            _require(dims in ((), (0,)) and set(node.kwargs) <= {"dim"})
            (self.batch if dims else self.shapes).add(node)
        elif node.op == "call_function" and node.target is getattr and args[0] in self.on_chain:
            _require(args[1:] == ("shape",))
            self.shapes.add(node)
        elif node.op == "call_function" and node.target is operator.getitem and args[0] in self.shapes:
            _require(args[1:] == (0,))
            self.batch.add(node)
        else:
            return False
        return True

    # ------------------------------------------------------------------ chain steps

    def _step(self, node: Node) -> None:
        if node.op == "call_module":
            _require(node.args == (self.current,) and not node.kwargs)
            try:
                module = self.root.get_submodule(node.target)
            except AttributeError as e:
                raise _NotAChain from e
            steps = module_steps(module)
            _require(steps is not None)
            for step in steps:
                self._add(step)
        elif node.op == "call_method":
            _require(node.args and node.args[0] is self.current)
            self._method(node.target, node.args[1:], node.kwargs)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            self._aten(node)
        elif node.op == "call_function" and node.target in _FUNCTIONS:
            _require(node.args and node.args[0] is self.current)
            name, params = _FUNCTIONS[node.target]
            self._function(name, _bind(node.args[1:], node.kwargs, params))
        else:
            raise _NotAChain

    def _add(self, step: Step) -> None:
        """Appends a step, keeping track of whether points are vectors; drops the reshapes of a
        vector that keep it a vector (no-ops: a reshape that changed the batch would make the
        decoder's output fail the shape check)."""
        if isinstance(step, Reshape) and self.flat and len(step.shape) == 1:
            width = step.shape[0]
            if width == -1:
                return
            _require(self.width is None or width == self.width)
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
        _require(isinstance(shape, (tuple, list)) and len(shape) >= 2)
        first, rest = shape[0], tuple(shape[1:])
        _require(first == -1 if isinstance(first, int) else first in self.batch)
        _require(all(isinstance(s, int) and s >= -1 for s in rest) and list(shape).count(-1) <= 1)
        self._add(Reshape(rest))

    def _method(self, name: str, args: tuple, kwargs: dict) -> None:
        if name in ("view", "reshape"):
            _require(not kwargs)
            self._reshape(args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args)
        elif name in _METHODS:
            self._function(name, _bind(args, kwargs, _METHODS[name]))
        else:
            raise _NotAChain

    def _function(self, name: str, a: dict[str, Any]) -> None:
        """A torch-level function or method ``name`` of the chain's value, other arguments ``a``."""
        _require(all(n in self.batch for n in _nodes(a)))  # only reshapes take them
        if name in ("relu", "tanh", "sigmoid", "silu"):
            self._add(Activation(name))
        elif name == "elu":
            self._add(Activation("elu", (float(a["alpha"]),)))
        elif name == "leaky_relu":
            self._add(Activation("leaky_relu", (float(a["negative_slope"]),)))
        elif name == "softplus":
            self._add(Activation("softplus", (float(a["beta"]), float(a["threshold"]))))
        elif name == "gelu":
            self._gelu(a["approximate"])
        elif name == "hardtanh":  # F.relu6 binds no bounds
            self._add(Activation("hardtanh", (float(a.get("min_val", 0.0)), float(a.get("max_val", 6.0)))))
        elif name == "flatten":
            self._flatten(a["start_dim"], a["end_dim"])
        elif name == "unflatten":
            self._unflatten(a["dim"], a["sizes"])
        elif name == "reshape":
            self._reshape(a["shape"])
        elif name == "interpolate":
            _require(not a["antialias"])
            a["recompute"] = a.pop("recompute_scale_factor")
            self._upsample(a["size"], a["scale_factor"], a["mode"], a["align_corners"], a["recompute"])
        elif name == "pad":
            self._pad(a["pad"], a["mode"], a["value"])
        elif name != "contiguous":
            raise _NotAChain

    def _gelu(self, approximate: Any) -> None:
        _require(approximate in GELU_APPROXIMATIONS)
        self._add(Activation(GELU_APPROXIMATIONS[approximate]))

    def _flatten(self, start: Any, end: Any) -> None:
        _require(isinstance(start, int) and isinstance(end, int) and start != 0)
        self._add(Flatten(start, end))

    def _unflatten(self, dim: Any, sizes: Any) -> None:
        _require(isinstance(dim, int) and dim != 0 and isinstance(sizes, (tuple, list)))
        _require(all(isinstance(s, int) for s in sizes))
        self._add(Unflatten(dim, tuple(sizes)))

    def _upsample(self, size: Any, scale: Any, mode: str, align_corners: Any, recompute: Any = None) -> None:
        _require(mode in UPSAMPLE_MODES)
        self._add(Upsample(hashable(size), hashable(scale), mode, align_corners, recompute))

    def _pad(self, pad: Any, mode: str, value: Any) -> None:
        _require(mode in PAD_MODES and (value is None or float(value) == 0.0))
        self._add(Pad(tuple(pad), mode))

    # ------------------------------------------------------------------ aten ops

    def _param(self, value: Any, optional: bool = True) -> Callable[[], Any]:
        """The getter of a parameter argument: a ``get_attr`` node, or None if optional."""
        if value is None and optional:
            return lambda: None
        _require(isinstance(value, Node) and value.op == "get_attr")
        return _attribute(self.root, value.target)

    def _aten(self, node: Node) -> None:
        normalized = normalize_function(
            node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
        )
        _require(normalized is not None)
        a = dict(normalized.kwargs)
        name = node.target.overloadpacket.__name__
        if name == "addmm":  # addmm(bias, x, W^T)
            a["bias"] = a.pop("input")
        _require(a.pop("mat1" if name == "addmm" else "input", None) is self.current)
        # Only parameters (get_attr, or transposed) and batch sizes in shapes may be nodes.
        _require(all(n.op == "get_attr" or n in self.batch or n in self.transposed for n in _nodes(a)))
        inplace = name.endswith("_") and not name.startswith("_")
        base = name[:-1] if inplace else name
        if base in _ATEN_SIMPLE:
            self._add(Activation(_ATEN_SIMPLE[base]))
        elif base == "elu":
            _require(float(a["scale"]) == 1.0 and float(a["input_scale"]) == 1.0)  # not SELU
            self._add(Activation("elu", (float(a["alpha"]),)))
        elif base == "leaky_relu":
            self._add(Activation("leaky_relu", (float(a["negative_slope"]),)))
        elif base == "softplus":
            self._add(Activation("softplus", (float(a["beta"]), float(a["threshold"]))))
        elif base == "gelu":
            self._gelu(a.get("approximate", "none"))
        elif base == "hardtanh":
            self._add(Activation("hardtanh", (float(a.get("min_val", -1.0)), float(a.get("max_val", 1.0)))))
        elif base == "relu6":
            self._add(Activation("hardtanh", (0.0, 6.0)))
        elif inplace:
            raise _NotAChain
        elif name == "linear":
            weight, bias = self._param(a["weight"], False), self._param(a["bias"])
            self._add(Affine(weight, bias, _names(a, "weight", "bias")))
        elif name in ("addmm", "mm"):  # x W^T (+ b) as torch.export's decompositions write it
            weight = self.transposed.get(a["mat2"])
            _require(weight is not None and a.get("beta", 1) == 1 and a.get("alpha", 1) == 1)
            bias = a.get("bias")
            self._add(Affine(_attribute(self.root, weight.target), self._param(bias),
                             (weight.target, bias.target if bias is not None else None)))  # fmt: skip
        elif name in ("convolution", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"):
            self._conv(name, a)
        elif name in _ATEN_UPSAMPLE:
            _require(node.target._overloadname == "vec")
            self._upsample(hashable(a["output_size"]), hashable(a["scale_factors"]), _ATEN_UPSAMPLE[name],
                           a.get("align_corners"))  # fmt: skip
        elif name in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"):
            _require(not a.get("training", False))
            names = ("weight", "bias", "running_mean", "running_var")
            weight, bias, mean, var = (self._param(a[k], not k.startswith("running")) for k in names)
            self._add(BatchNorm(weight, bias, mean, var, float(a["eps"]), _names(a, *names)))
            self.pending = None if name == "batch_norm" else node
        elif name in ("group_norm", "native_group_norm"):
            groups = a["num_groups"] if name == "group_norm" else a["group"]
            weight, bias = self._param(a["weight"]), self._param(a["bias"])
            self._add(GroupNorm(weight, bias, int(groups), float(a["eps"]), _names(a, "weight", "bias")))
            self.pending = None if name == "group_norm" else node
        elif name in ("layer_norm", "native_layer_norm"):
            shape = a["normalized_shape"]
            _require(isinstance(shape, (tuple, list)) and all(isinstance(n, int) for n in shape))
            weight, bias = self._param(a.get("weight")), self._param(a.get("bias"))
            eps = float(a.get("eps", 1e-5))
            self._add(LayerNorm(weight, bias, tuple(shape), eps, _names(a, "weight", "bias")))
            self.pending = None if name == "layer_norm" else node
        elif name in ("pad", "constant_pad_nd"):
            self._pad(a["pad"], a.get("mode", "constant"), a["value"])
        elif name in ("reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d"):
            self._pad(a["padding"], "reflect" if name.startswith("reflection") else "replicate", None)
        elif name in _ATEN_VIEWS:
            self._reshape(a["size"] if "size" in a else a["shape"])
        elif name == "flatten" and node.target._overloadname == "using_ints":
            self._flatten(a["start_dim"], a["end_dim"])
        elif name == "unflatten" and node.target._overloadname == "int":
            self._unflatten(a["dim"], a["sizes"])
        elif name == "dropout":
            _require(not a["train"])
        elif name not in _ATEN_IDENTITY:
            raise _NotAChain

    def _conv(self, name: str, a: dict[str, Any]) -> None:
        transposed = bool(a["transposed"]) if name == "convolution" else name.startswith("conv_transpose")
        padding = a["padding"]
        _require(not (transposed and isinstance(padding, str)))
        self._add(Conv(
            self._param(a["weight"], False), self._param(a["bias"]), _names(a, "weight", "bias"),
            tuple(a["stride"]), padding if isinstance(padding, str) else tuple(padding), tuple(a["dilation"]),
            int(a["groups"]), transposed, tuple(a["output_padding"]) if transposed else (),
        ))  # fmt: skip


def _nodes(value: Any) -> list[Node]:
    """The nodes among arguments (nested in lists, tuples and dicts)."""
    if isinstance(value, Node):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _nodes(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _nodes(v)]
    return []


def _names(a: dict[str, Any], *keys: str) -> tuple[str | None, ...]:
    """The attribute names of a step's parameters: its identity in an aten graph."""
    return tuple(a[k].target if isinstance(a[k], Node) else None for k in keys)


def _attribute(root: nn.Module, name: str) -> Callable[[], Any]:
    def get() -> Any:
        obj = root
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    return get
