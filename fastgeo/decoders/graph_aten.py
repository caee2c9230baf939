"""Reading the ``aten`` ops of graphs ``torch.export`` captures (a module exported, a mean
saved with ``format="export"`` and loaded back, decomposed or not), and building the steps both
kinds of graph share (reshapes, axes, indexing and pieces, activations by name, clamps, softmax,
pixel shuffle, pooling, padding, upsampling, convolutions, products by a parameter):
:class:`AtenReader`, whose subclass in :mod:`fastgeo.decoders.graphs` reads symbolically traced
graphs too."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

from torch.fx import Node
from torch.fx.operator_schemas import normalize_function

from .graph_arithmetic import ATEN_ARITHMETIC, aten_arithmetic_step
from .graph_ops import (
    ATEN_CONVERSIONS,
    ATEN_IDENTITY,
    ATEN_SIMPLE,
    ATEN_UPSAMPLE,
    ATEN_VIEWS,
    AXES,
    NAMED,
    converts_to_floats,
)
from .graph_walk import ChainReader, NotAChain, attribute, attribute_names, nodes, require
from .modules import (
    GELU_APPROXIMATIONS,
    PAD_MODES,
    SELU_ALPHA,
    SELU_SCALE,
    UPSAMPLE_MODES,
    glu_steps,
    hardsigmoid_steps,
    hashable,
    softmax_steps,
)
from .steps import (
    Activation,
    AdaptiveAvgPool,
    Affine,
    AvgPool,
    Axes,
    BatchNorm,
    Broadcast,
    Concat,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    Pad,
    Part,
    PixelShuffle,
    PReLU,
    Reshape,
    Unflatten,
    Upsample,
)


class AtenReader(ChainReader):
    """The ops of ``aten`` graphs, and the steps both graph readers build alike."""

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

    def _einsum(self, equation: Any, operands: Any) -> None:
        """``einsum`` of the chain's value and a parameter that is a linear layer on the last
        axis: ``"bi,ij->bj"`` (W (in, out)), ``"bi,ji->bj"`` (W (out, in)), the operands either
        way round, ``...`` for the batch (and a point's leading axes)."""
        require(isinstance(equation, str) and isinstance(operands, (tuple, list)) and len(operands) == 2)
        inputs, _, out = equation.replace(" ", "").partition("->")
        subscripts = inputs.split(",")
        require(len(subscripts) == 2 and self.current in operands)
        mine = operands.index(self.current)
        x, w, other = subscripts[mine], subscripts[1 - mine], operands[1 - mine]
        require(len(w) == 2 and w[0] != w[1] and w.isalpha() and x[-1:] in w)
        batch, i = x[:-1], x[-1]
        require(batch == "..." or len(batch) == 1 and batch.isalpha() and batch not in w)
        j = w.replace(i, "")
        require(out == batch + j)
        weight, identity = self._weight_of_product(other, linear=w == j + i)
        self._add(Affine(weight, lambda: None, identity))

    def _concat(self, tensors: Any, dim: Any) -> None:
        """``torch.cat`` of the value and a tensor of the decoder's own copied along the batch."""
        require(isinstance(tensors, (tuple, list)) and len(tensors) == 2 and self.current in tensors)
        require(type(dim) is int and dim != 0)
        mine = tensors.index(self.current)
        other = tensors[1 - mine]
        require(other in self.constants)
        source = self.constants[other]
        self._add(Concat(attribute(self.root, source.target), source.target, dim, mine == 1))

    def _broadcast(self, op: str, sizes: list[Any]) -> None:
        """``x.expand(batch or -1, *sizes)`` or ``x.repeat(1, *sizes)`` of the chain's value."""
        require(len(sizes) >= 2 and all(type(s) is int for s in sizes[1:]))
        if op == "repeat":
            require(sizes[0] == 1 and all(s >= 1 for s in sizes[1:]))
        else:
            require((sizes[0] == -1 or sizes[0] in self.batch) and all(s >= -1 for s in sizes[1:]))
        self._add(Broadcast(op, tuple(sizes[1:])))

    def _reshape(self, shape: Any) -> None:
        """A reshape to ``shape`` (batch first: -1, or the batch size from a node)."""
        require(isinstance(shape, (tuple, list)) and len(shape) >= 2)
        first, rest = shape[0], tuple(shape[1:])
        require(first == -1 if isinstance(first, int) else first in self.batch)
        require(all(isinstance(s, int) and s >= -1 for s in rest) and list(shape).count(-1) <= 1)
        self._add(Reshape(rest))

    def _axes(self, op: str, a: dict[str, Any]) -> None:
        """``permute`` (``a["dims"]``, the batch axis first), ``transpose`` (``dim0``, ``dim1``),
        ``unsqueeze`` or ``squeeze`` (``dim``: given, so that a batch of one is not squeezed) of
        the point's axes."""
        if op == "permute":
            dims = a["dims"]
            require(isinstance(dims, (tuple, list)) and len(dims) >= 2 and dims[0] == 0)
            axes = tuple(dims[1:])
        else:
            axes = (a["dim0"], a["dim1"]) if op == "transpose" else (a["dim"],)
        require(all(isinstance(x, int) and not isinstance(x, bool) and x != 0 for x in axes))
        self._add(Axes(op, (0, *axes) if op == "permute" else axes))

    def _index(self, index: Any) -> None:
        """``x[:, :, None, None]``, ``x[..., None]``, ``h[:, :D]``, ``h[..., D:]``, ``x[:, 0]``: per
        axis after the batch's (a full slice first, or an Ellipsis), new axes of length one
        (unsqueezes), slices by constants and integers (:class:`Part` steps); anything else (a
        slice or index of the batch, a tensor index) raises :class:`NotAChain`."""
        items = index if isinstance(index, tuple) else (index,)
        full = slice(None, None, None)
        require(all(_index_item(i) for i in items) and items.count(Ellipsis) <= 1)
        cut = items.index(Ellipsis) if Ellipsis in items else len(items)
        before, after = items[:cut], items[cut + 1 :]
        require(cut > 0 and before[0] == full or cut == 0 and Ellipsis in items)  # the batch stays first
        axis = 1
        for item in before[1:]:  # the axes before each are in place already
            self._index_step(item, axis)
            axis += 0 if isinstance(item, int) else 1
        kept = 0  # axes after the item, in place already: right to left
        for item in reversed(after):
            self._index_step(item, -(kept + 1))
            kept += not isinstance(item, int)

    def _index_step(self, item: Any, axis: int) -> None:
        if item is None:
            self._add(Axes("unsqueeze", (axis,)))
        elif isinstance(item, int):
            self._add(Part("select", item, axis))
        elif item != slice(None, None, None):
            self._add(Part("slice", (item.start, item.stop, item.step), axis))

    def _parts(self, op: str, arg: Any, dim: Any) -> None:
        """``chunk`` (``arg`` chunks) or ``split`` (``arg`` a size or sizes) along ``dim`` of the
        point: its pieces follow, each a :class:`Part` (a fork where several are used)."""
        require(isinstance(dim, int) and not isinstance(dim, bool) and dim != 0)
        sizes = tuple(arg) if isinstance(arg, (list, tuple)) else arg
        require(all(type(n) is int and n >= 0 for n in (sizes if isinstance(sizes, tuple) else (sizes,))))
        self.parts = (op, sizes, dim)

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

    def _aten(self, node: Node) -> None:
        normalized = normalize_function(
            node.target, node.args, node.kwargs, normalize_to_only_use_kwargs=True
        )
        require(normalized is not None)
        a = dict(normalized.kwargs)
        name = node.target.overloadpacket.__name__
        if name == "einsum":
            self._einsum(a["equation"], a["tensors"])
            return
        if name == "cat":
            self._concat(a["tensors"], a.get("dim", 0))
            return
        if name == "broadcast_tensors":
            self._broadcast_with(node, a["tensors"])
            return
        if name == "mul" and a.get("input") is self.current and a.get("other") is self.current:
            self._power(2)
            return
        if name in ("pow", "square") and a.get("input") is self.current:
            self._power(a["exponent"] if name == "pow" else 2)
            return
        if name in ("expand", "repeat"):
            require(a.get("implicit") in (None, False))
            self._broadcast(name, list(a["size" if name == "expand" else "repeats"]))
            return
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
        elif name in ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d"):
            self._adaptive_avg_pool(int(name[-2]), a["output_size"])
        elif name in ("prelu", "_prelu_kernel"):
            self._add(PReLU(self._param(a["weight"], False), attribute_names(a, "weight")))
        elif name in ("dropout", "alpha_dropout", "feature_dropout", "feature_alpha_dropout"):
            require(not a["train"])
        elif name == "slice":  # x[:, ...] exported (a full slice, the identity), h[:, :D]
            start, end, step, dim = a.get("start"), a.get("end"), a.get("step", 1), a.get("dim", 0)
            full = start in (None, 0) and step == 1 and (end is None or type(end) is int and end >= 2**62)
            if not (full or dim == 0 and start in (None, 0) and step == 1 and end in self.batch):
                require(all(v is None or type(v) is int for v in (start, end, step)))
                require(dim != 0 and step > 0)
                end = None if type(end) is int and end >= 2**62 else end
                self._add(Part("slice", (start, end, step if step != 1 else None), dim))
        elif name == "glu":
            self._glu(a.get("dim", -1))
        elif name == "select" and node.target._overloadname == "int":
            require(type(a["index"]) is int and type(a["dim"]) is int and a["dim"] != 0)
            self._add(Part("select", a["index"], a["dim"]))
        elif name in ("chunk", "split", "split_with_sizes"):
            sizes = a[{"chunk": "chunks", "split": "split_size", "split_with_sizes": "split_sizes"}[name]]
            self._parts("chunk" if name == "chunk" else "split", sizes, a.get("dim", 0))
        elif name in ATEN_CONVERSIONS:  # the identity on the stack
            require(converts_to_floats(list(a.values())))
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

    def _glu(self, dim: Any) -> None:
        steps = glu_steps(dim)
        require(steps is not None)
        self._add(steps[0])

    def _broadcast_with(self, node: Node, tensors: Any) -> None:
        """``broadcast_tensors(x, c, ...)`` whose output 0 continues the chain (a distribution's
        parameters broadcast together: ``Normal(mu, sigma).mean``, ``Bernoulli(logits=x).mean``):
        the identity where the constants ``c`` do not widen x (where the graph records shapes, they
        are compared; the check against the decoder catches any other widening)."""
        require(isinstance(tensors, (list, tuple)) and tensors and tensors[0] is self.current)
        require(all(isinstance(t, Node) and t.op == "get_attr" for t in tensors[1:]))
        out, x = node.meta.get("val"), self.current.meta.get("val")
        if isinstance(out, (list, tuple)) and out and hasattr(x, "shape"):
            wide, own = out[0].shape, x.shape
            require(len(wide) == len(own))
            require(all(a == b for a, b in zip(wide, own, strict=True) if type(a) is int and type(b) is int))
        self.pending = node

    def _power(self, exponent: Any) -> None:
        """``x ** p`` (``torch.square``, ``x * x``) for a whole number ``p >= 1``."""
        require(type(exponent) in (int, float) and float(exponent).is_integer() and exponent >= 1)
        if exponent != 1:
            self._add(Activation("power", (float(exponent),)))

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

    def _adaptive_avg_pool(self, dims: int, output_size: Any) -> None:
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
        require(all(n is None or type(n) is int and n >= 1 for n in sizes))
        self._add(AdaptiveAvgPool(dims, hashable(output_size)))

    def _conv(self, name: str, a: dict[str, Any]) -> None:
        transposed = bool(a["transposed"]) if name == "convolution" else name.startswith("conv_transpose")
        padding = a["padding"]
        require(not (transposed and isinstance(padding, str)))
        self._add(Conv(
            self._param(a["weight"], False), self._param(a["bias"]), attribute_names(a, "weight", "bias"),
            tuple(a["stride"]), padding if isinstance(padding, str) else tuple(padding), tuple(a["dilation"]),
            int(a["groups"]), transposed, tuple(a["output_padding"]) if transposed else (),
        ))  # fmt: skip


def _index_item(item: Any) -> bool:
    """An item of an index a chain may take: None, Ellipsis, an integer, a slice by constants
    (a positive step)."""
    if item is None or item is Ellipsis or type(item) is int:
        return True
    bounds = (item.start, item.stop, item.step) if isinstance(item, slice) else (0.5,)
    return all(v is None or type(v) is int for v in bounds) and (item.step is None or item.step > 0)
