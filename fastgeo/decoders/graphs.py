"""Steps of a ``torch.fx`` graph that is a single chain from its one input to its output.

Two kinds of graphs are read:

- ``aten`` graphs, as ``torch.export`` captures a module (``torch.export.export(...).module()``,
  a mean saved by :func:`fastgeo.save_generator` with ``format="export"`` and loaded back,
  decomposed or not): linear (or addmm / mm / matmul of a parameter or its transpose),
  convolution / conv{1,2}d / conv_transpose{1,2}d, upsample_*.vec, batch_norm /
  _native_batch_norm_legit_no_training (eval), group_norm / native_group_norm, layer_norm /
  native_layer_norm, pad and the padding ops, view / reshape / _unsafe_view / flatten /
  unflatten, clone, full slices, dropout (eval), pixel_shuffle / pixel_unshuffle,
  avg_pool{1,2}d, (log_)softmax over an axis of the point, permute / transpose / unsqueeze /
  squeeze of the point's axes, clamp by constants, prelu, exp and the activations (in-place
  variants too);
- graphs of ``torch.fx.symbolic_trace`` (a custom decoder's ``forward``): call_module nodes of
  the layers of :mod:`fastgeo.decoders.modules`, torch / ``torch.nn.functional`` activations
  (relu, tanh, sigmoid / expit, exp, silu, elu, leaky_relu, softplus, gelu, hardtanh, relu6, mish,
  selu, celu, hardswish, hardsigmoid, softsign, logsigmoid, tanhshrink), (log_)softmax,
  ``F.interpolate``, ``F.pad``, ``F.pixel_(un)shuffle``, ``F.avg_pool{1,2}d``, ``torch.flatten``
  / ``torch.reshape`` / ``torch.unflatten``, ``torch.permute`` / ``transpose`` / ``unsqueeze`` /
  ``squeeze``, ``torch.clamp`` / ``clip``, new axes by indexing (``x[:, :, None, None]``), linear
  maps by parameters (``x @ W``, ``x @ W.T``, ``torch.matmul`` / ``mm``, ``F.linear``), and
  the methods view / reshape / flatten / unflatten / permute / transpose / unsqueeze / squeeze /
  clamp / contiguous / clone / relu / tanh / sigmoid / softmax / log_softmax.

In both, arithmetic of the chain's value with a number or with a tensor of the decoder's own (a
parameter or buffer) is read by :mod:`fastgeo.decoders.graph_arithmetic`.

The walk along the chain (what may sit beside it, reshapes of the batch) is
:mod:`fastgeo.decoders.graph_walk`'s; a node of another op, or arguments of an unexpected form,
and the graph is not a chain (None).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Graph, GraphModule, Node
from torch.fx.operator_schemas import normalize_function

from .graph_arithmetic import (
    ATEN_ARITHMETIC,
    FX_ARITHMETIC,
    METHOD_ARITHMETIC,
    aten_arithmetic_step,
    fx_arithmetic_step,
)
from .graph_ops import (
    ATEN_IDENTITY,
    ATEN_SIMPLE,
    ATEN_UPSAMPLE,
    ATEN_VIEWS,
    AXES,
    FUNCTIONS,
    MATMULS,
    METHODS,
    NAMED,
)
from .graph_walk import ChainReader, NotAChain, attribute, attribute_names, bind, nodes, require
from .modules import SELU_ALPHA, SELU_SCALE, hardsigmoid_steps, hashable, module_steps, softmax_steps
from .steps import (
    Activation,
    Affine,
    AvgPool,
    BatchNorm,
    Conv,
    GroupNorm,
    LayerNorm,
    PixelShuffle,
    PReLU,
    Step,
)


def graph_steps(gm: GraphModule) -> list[Step] | None:
    """Steps of ``gm`` if its graph is a single chain of known ops from its one input to its
    output, else None. Parameters are read from ``gm`` at call time."""
    return read_graph(gm.graph, gm)


def read_graph(graph: Graph, root: nn.Module) -> list[Step] | None:
    """Steps of ``graph`` (its modules and attributes looked up in ``root``), or None."""
    try:
        return _Reader(root).read(graph)
    except Exception:  # noqa: BLE001 - NotAChain, or arguments of an unexpected form: not a chain
        return None


def where_not_a_chain(graph: Graph, root: nn.Module) -> str | None:
    """The op of ``graph`` at which it stops being a chain of known ops, in words (``"MaxPool2d
    (layer 'up.2')"``, ``"torch.nn.functional.softmin"``, ``"an operator mul"``, ``"the tensor method
    .exp()"``...), or None if it is one."""
    reader = _Reader(root)
    try:
        reader.read(graph)
    except Exception:  # noqa: BLE001 - NotAChain, or arguments of an unexpected form
        node = reader.at
        if node is None:
            return "its input"
        if node.op == "call_module":
            try:
                kind = type(root.get_submodule(node.target)).__name__
            except AttributeError:
                kind = "a module"
            return f"{kind} (layer {node.target!r})"
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            module = getattr(node.target, "__module__", None) or ""
            operand = "an operator" if module == "_operator" else "a function"
            return f"{operand} {name}" if module in ("", "_operator") else f"{module}.{name}"
        if node.op == "call_method":
            return f"the tensor method .{node.target}()"
        return "its output"
    return None


class _Reader(ChainReader):
    """The ops of ``torch.fx``-traced graphs (modules, torch functions, tensor methods) and of
    ``aten`` graphs."""

    def _step(self, node: Node) -> None:
        if node.op == "call_module":
            require(node.args == (self.current,) and not node.kwargs)
            try:
                module = self.root.get_submodule(node.target)
            except AttributeError as e:
                raise NotAChain from e
            steps = module_steps(module)
            require(steps is not None)
            for step in steps:
                self._add(step)
        elif node.op == "call_function" and node.target in MATMULS or node.op == "call_method" and (
            node.target in ("matmul", "mm", "__matmul__")
        ):  # x @ W with a parameter W (in, out), or with the transpose of one (out, in)
            require(len(node.args) == 2 and node.args[0] is self.current and not node.kwargs)
            weight, identity = self._weight_of_product(node.args[1])
            self._add(Affine(weight, lambda: None, identity))
        elif node.op == "call_function" and node.target is F.linear:
            a = bind(node.args[1:], node.kwargs, (("weight", None), ("bias", None)))
            require(node.args and node.args[0] is self.current and isinstance(a["weight"], Node))
            weight, identity = self._weight_of_product(a["weight"], linear=True)
            self._add(Affine(weight, self._param(a["bias"]), (identity, attribute_names(a, "bias"))))
        elif node.op == "call_method" and node.target in METHOD_ARITHMETIC:
            self._add(fx_arithmetic_step(node, self.current, self.root))
        elif node.op == "call_method":
            require(node.args and node.args[0] is self.current)
            self._method(node.target, node.args[1:], node.kwargs)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            self._aten(node)
        elif node.op == "call_function" and node.target in FX_ARITHMETIC:
            self._add(fx_arithmetic_step(node, self.current, self.root))
        elif node.op == "call_function" and node.target is operator.getitem:
            require(len(node.args) == 2 and node.args[0] is self.current and not node.kwargs)
            self._index(node.args[1])
        elif node.op == "call_function" and node.target in FUNCTIONS:
            require(node.args and node.args[0] is self.current)
            name, params = FUNCTIONS[node.target]
            self._function(name, bind(node.args[1:], node.kwargs, params))
        else:
            raise NotAChain

    def _weight_of_product(self, w: Any, linear: bool = False) -> tuple[Callable[[], Any], Hashable]:
        """The weight (out, in) of ``x @ w`` (``linear``: of ``F.linear(x, w)``) and its identity:
        ``w`` a parameter or buffer (in, out) (``linear``: (out, in)), or the transpose of one."""
        require(isinstance(w, Node))
        transposed = w in self.transposed
        source = self.transposed[w] if transposed else w
        require(source.op == "get_attr")
        get = attribute(self.root, source.target)
        if transposed == linear:  # (in, out): its transpose is the weight
            return (lambda: get().mT), (source.target, "T")
        return get, source.target

    def _method(self, name: str, args: tuple, kwargs: dict) -> None:
        if name in ("view", "reshape"):
            require(not kwargs)
            self._reshape(args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args)
        elif name == "permute":  # x.permute(0, 2, 1) or x.permute((0, 2, 1))
            require(set(kwargs) <= {"dims"})
            dims = kwargs["dims"] if kwargs else args[0] if len(args) == 1 else args
            self._axes("permute", {"dims": dims})
        elif name in METHODS:
            self._function(name, bind(args, kwargs, METHODS[name]))
        else:
            raise NotAChain

    def _function(self, name: str, a: dict[str, Any]) -> None:
        """A torch-level function or method ``name`` of the chain's value, other arguments ``a``."""
        require(all(n in self.batch for n in nodes(a)))  # only reshapes take them
        if name in ("relu", "tanh", "sigmoid", "silu", "exp"):
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
        elif name in ("clamp", "clip", "clamp_min", "clamp_max"):
            self._clamp(a.get("min"), a.get("max"))
        elif name in AXES:
            self._axes(name, a)
        elif name in NAMED:
            self._named(name, a)
        elif name in ("softmax", "log_softmax"):
            require(a["dtype"] is None)
            self._softmax(a["dim"], name == "log_softmax")
        elif name in ("pixel_shuffle", "pixel_unshuffle"):
            self._pixel_shuffle(a["downscale_factor" if name == "pixel_unshuffle" else "upscale_factor"],
                                name == "pixel_unshuffle")  # fmt: skip
        elif name in ("avg_pool1d", "avg_pool2d"):
            self._avg_pool(int(name[-2]), a)
        elif name == "flatten":
            self._flatten(a["start_dim"], a["end_dim"])
        elif name == "unflatten":
            self._unflatten(a["dim"], a["sizes"])
        elif name == "reshape":
            self._reshape(a["shape"])
        elif name == "interpolate":
            require(not a["antialias"])
            a["recompute"] = a.pop("recompute_scale_factor")
            self._upsample(a["size"], a["scale_factor"], a["mode"], a["align_corners"], a["recompute"])
        elif name == "pad":
            self._pad(a["pad"], a["mode"], a["value"])
        elif name not in ("contiguous", "clone"):
            raise NotAChain

    # ------------------------------------------------------------------ aten ops

    def _aten(self, node: Node) -> None:
        normalized = normalize_function(
            node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
        )
        require(normalized is not None)
        a = dict(normalized.kwargs)
        name = node.target.overloadpacket.__name__
        if name == "addmm":  # addmm(bias, x, W^T)
            a["bias"] = a.pop("input")
        elif name in ("mul", "add", "sub") and a.get("other") is self.current and a.get("alpha", 1) == 1:
            a["input"], a["other"] = a["other"], a["input"]  # p * x, p + x, p - x = rsub(x, p)
            name = "rsub" if name == "sub" else name
        require(a.pop("mat1" if name == "addmm" else "input", None) is self.current)
        # Only parameters (get_attr, or transposed) and batch sizes in shapes may be nodes.
        require(all(n.op == "get_attr" or n in self.batch or n in self.transposed for n in nodes(a)))
        inplace = name.endswith("_") and not name.startswith("_")
        base = name[:-1] if inplace else name
        if base in ATEN_SIMPLE:
            self._add(Activation(ATEN_SIMPLE[base]))
        elif base == "elu":
            alpha, scale, input_scale = (float(a[k]) for k in ("alpha", "scale", "input_scale"))
            if scale == 1.0 and input_scale == 1.0:
                self._add(Activation("elu", (alpha,)))
            else:  # SELU and CELU, decomposed
                self._add(Activation("scaled_elu", (alpha, scale, input_scale)))
        elif base in NAMED or base in ("log_sigmoid", "special_expit"):
            self._named({"log_sigmoid": "logsigmoid", "special_expit": "sigmoid"}.get(base, base), a)
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
        elif base in ("clamp", "clip", "clamp_min", "clamp_max"):
            self._clamp(a.get("min"), a.get("max"))
        elif name in AXES and node.target._overloadname in ("default", "int", "dim", "dims"):
            if isinstance(a.get("dim"), (list, tuple)):  # squeeze.dims: one axis only
                require(len(a["dim"]) == 1)
                a["dim"] = a["dim"][0]
            self._axes(name, a)
        elif base in ATEN_ARITHMETIC:
            self._add(aten_arithmetic_step(base, a, self.root))
        elif inplace:
            raise NotAChain
        elif name == "linear":
            weight, identity = self._weight_of_product(a["weight"], linear=True)
            self._add(Affine(weight, self._param(a["bias"]), (identity, attribute_names(a, "bias"))))
        elif name in ("addmm", "mm", "matmul"):  # x W^T (+ b) as torch.export's decompositions write it
            require(a.get("beta", 1) == 1 and a.get("alpha", 1) == 1)  # ... or x @ W of a forward
            weight, identity = self._weight_of_product(a["mat2" if name != "matmul" else "other"])
            bias = a.get("bias")
            identity = (identity, bias.target if bias is not None else None)
            self._add(Affine(weight, self._param(bias), identity))
        elif name in ("convolution", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"):
            self._conv(name, a)
        elif name in ATEN_UPSAMPLE:
            require(node.target._overloadname == "vec")
            self._upsample(hashable(a["output_size"]), hashable(a["scale_factors"]), ATEN_UPSAMPLE[name],
                           a.get("align_corners"))  # fmt: skip
        elif name in ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm"):
            require(not a.get("training", False))
            names = ("weight", "bias", "running_mean", "running_var")
            weight, bias, mean, var = (self._param(a[k], not k.startswith("running")) for k in names)
            self._add(BatchNorm(weight, bias, mean, var, float(a["eps"]), attribute_names(a, *names)))
            self.pending = None if name == "batch_norm" else node
        elif name in ("group_norm", "native_group_norm"):
            groups = a["num_groups"] if name == "group_norm" else a["group"]
            weight, bias = self._param(a["weight"]), self._param(a["bias"])
            identity = attribute_names(a, "weight", "bias")
            self._add(GroupNorm(weight, bias, int(groups), float(a["eps"]), identity))
            self.pending = None if name == "group_norm" else node
        elif name in ("layer_norm", "native_layer_norm"):
            shape = a["normalized_shape"]
            require(isinstance(shape, (tuple, list)) and all(isinstance(n, int) for n in shape))
            weight, bias = self._param(a.get("weight")), self._param(a.get("bias"))
            eps = float(a.get("eps", 1e-5))
            self._add(LayerNorm(weight, bias, tuple(shape), eps, attribute_names(a, "weight", "bias")))
            self.pending = None if name == "layer_norm" else node
        elif name in ("pad", "constant_pad_nd"):
            self._pad(a["pad"], a.get("mode", "constant"), a["value"])
        elif name in ("reflection_pad1d", "reflection_pad2d", "replication_pad1d", "replication_pad2d"):
            self._pad(a["padding"], "reflect" if name.startswith("reflection") else "replicate", None)
        elif name in ATEN_VIEWS:
            self._reshape(a["size"] if "size" in a else a["shape"])
        elif name == "flatten" and node.target._overloadname == "using_ints":
            self._flatten(a["start_dim"], a["end_dim"])
        elif name == "unflatten" and node.target._overloadname == "int":
            self._unflatten(a["dim"], a["sizes"])
        elif name in ("softmax", "_softmax", "log_softmax", "_log_softmax"):
            require(not a.get("half_to_float", False) and a.get("dtype") is None)
            self._softmax(a["dim"], "log" in name)
        elif name in ("pixel_shuffle", "pixel_unshuffle"):
            inverse = name == "pixel_unshuffle"
            self._pixel_shuffle(a["downscale_factor" if inverse else "upscale_factor"], inverse)
        elif name in ("avg_pool1d", "avg_pool2d"):
            self._avg_pool(int(name[-2]), a)
        elif name in ("prelu", "_prelu_kernel"):
            self._add(PReLU(self._param(a["weight"], False), attribute_names(a, "weight")))
        elif name == "dropout":
            require(not a["train"])
        elif name == "slice":  # x[:, ...] exported: a full slice, the identity
            end = a.get("end")
            require(a.get("start") in (None, 0) and a.get("step", 1) == 1)
            require(end is None or end in self.batch or isinstance(end, int) and end >= 2**62)
        elif name not in ATEN_IDENTITY:
            raise NotAChain

    def _named(self, name: str, a: dict[str, Any]) -> None:
        """An activation of :data:`NAMED` (SELU and CELU as the scaled ELU, Hardsigmoid as a
        Hardtanh)."""
        if name == "selu":
            self._add(Activation("scaled_elu", (SELU_ALPHA, SELU_SCALE, 1.0)))
        elif name == "celu":
            alpha = float(a.get("alpha", 1.0))
            require(alpha != 0.0)
            self._add(Activation("scaled_elu", (alpha, 1.0, 1.0 / alpha)))
        elif name == "hardsigmoid":
            for step in hardsigmoid_steps():
                self._add(step)
        else:
            self._add(Activation(name))

    def _clamp(self, low: Any, high: Any) -> None:
        """``clamp(x, min, max)`` by constants: the Hardtanh between them (an open side infinite)."""
        numbers = [v for v in (low, high) if v is not None]
        require(numbers and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers))
        low, high = -math.inf if low is None else float(low), math.inf if high is None else float(high)
        require(low < high)
        self._add(Activation("hardtanh", (low, high)))

    def _softmax(self, dim: Any, log: bool) -> None:
        steps = softmax_steps(dim, log)
        require(steps is not None)
        self._add(steps[0])

    def _pixel_shuffle(self, factor: Any, inverse: bool) -> None:
        require(isinstance(factor, int) and not isinstance(factor, bool) and factor >= 1)
        self._add(PixelShuffle(factor, inverse))

    def _avg_pool(self, dims: int, a: dict[str, Any]) -> None:
        divisor = a.get("divisor_override")
        require(divisor is None or isinstance(divisor, int))
        stride = a.get("stride")
        self._add(AvgPool(dims, hashable(a["kernel_size"]), hashable(stride) if stride else None,
                          hashable(a.get("padding", 0)), bool(a.get("ceil_mode", False)),
                          bool(a.get("count_include_pad", True)), divisor))  # fmt: skip

    def _conv(self, name: str, a: dict[str, Any]) -> None:
        transposed = bool(a["transposed"]) if name == "convolution" else name.startswith("conv_transpose")
        padding = a["padding"]
        require(not (transposed and isinstance(padding, str)))
        self._add(Conv(
            self._param(a["weight"], False), self._param(a["bias"]), attribute_names(a, "weight", "bias"),
            tuple(a["stride"]), padding if isinstance(padding, str) else tuple(padding), tuple(a["dilation"]),
            int(a["groups"]), transposed, tuple(a["output_padding"]) if transposed else (),
        ))  # fmt: skip
