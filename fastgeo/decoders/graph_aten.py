"""Reading the ``aten`` ops of graphs ``torch.export`` captures (a module exported, a mean
saved with ``format="export"`` and loaded back, decomposed or not, a decoder ``torch.fx`` cannot
trace exported by :func:`fastgeo.decoders.tracing.exported_graph`): :class:`AtenReader`, whose
subclass in :mod:`fastgeo.decoders.graphs` reads symbolically traced graphs too."""

from __future__ import annotations

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
from .graph_vocabulary import StepVocabulary
from .graph_walk import NotAChain, attribute_names, nodes, require
from .modules import (
    SELU_ALPHA,
    SELU_SCALE,
    hardsigmoid_steps,
    hashable,
)
from .steps import (
    Activation,
    Affine,
    BatchNorm,
    GroupNorm,
    LayerNorm,
    Part,
    PReLU,
)


class AtenReader(StepVocabulary):
    """The ops of ``aten`` graphs."""

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
        elif name == "instance_norm":  # GroupNorm of one channel per group, or running statistics
            weight, bias = self._param(a.get("weight")), self._param(a.get("bias"))
            identity = attribute_names(a, "weight", "bias")
            if a["use_input_stats"]:
                value = node.args[0].meta.get("val") if isinstance(node.args[0], Node) else None
                require(value is not None and value.dim() >= 2)
                self._add(GroupNorm(weight, bias, int(value.shape[1]), float(a["eps"]), identity))
            else:
                mean, var = self._param(a["running_mean"], False), self._param(a["running_var"], False)
                names = attribute_names(a, "weight", "bias", "running_mean", "running_var")
                self._add(BatchNorm(weight, bias, mean, var, float(a["eps"]), names))
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
