"""The ops a ``torch.fx`` graph of a decoder chain may hold, by kind: torch-level functions and
tensor methods of symbolically traced graphs (with their parameters and defaults after the input),
and the names of ``aten`` ops of exported graphs. :mod:`fastgeo.decoders.graphs` reads them."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.fx import Node

from .activations import SMOOTH_POINTWISE

aten = torch.ops.aten

# activations of one value, no parameters: by the same name in aten, torch, and as tensor methods
SIMPLE = ("relu", "tanh", "sigmoid", "silu", "exp", *SMOOTH_POINTWISE)
ATEN_SIMPLE = {name: name for name in SIMPLE}
ATEN_UPSAMPLE = {
    "upsample_nearest1d": "nearest",
    "upsample_nearest2d": "nearest",
    "_upsample_nearest_exact1d": "nearest-exact",
    "_upsample_nearest_exact2d": "nearest-exact",
    "upsample_linear1d": "linear",
    "upsample_bilinear2d": "bilinear",
    "upsample_bicubic2d": "bicubic",
}
ATEN_IDENTITY = {"clone", "contiguous", "alias"}
# Conversions a decoder applies to its input or on the way (``z.to(self.device)``, ``z.float()``,
# ``z.type_as(self.weight)``): the identity on the chain's stack, which runs in the metric's
# dtype on its device (a conversion that changes the probe's values makes the check against the
# decoder fail: torch.func then). Tensor methods of traced graphs, and aten ops.
CONVERSIONS = frozenset({"to", "float", "double", "type_as", "type", "cpu", "cuda"})
ATEN_CONVERSIONS = frozenset({"to", "_to_copy", "type_as"})


def converts_to_floats(values: list[Any]) -> bool:
    """Whether the arguments of a conversion (besides the value) keep it floating point: dtypes
    that are, devices, flags (non_blocking, copy), memory formats, tensors (``type_as``)."""
    for v in values:
        if isinstance(v, torch.dtype) and not v.is_floating_point:
            return False
        if not isinstance(v, (torch.dtype, torch.device, torch.memory_format, torch.layout, str, bool)) and (
            v is not None and not isinstance(v, torch.fx.Node)
        ):
            return False
    return True
# activations known by one name as a torch function and an aten op (in-place variants too)
NAMED = frozenset(
    {"mish", "selu", "celu", "hardswish", "hardsigmoid", "softsign", "logsigmoid", "tanhshrink"}
)
ATEN_VIEWS = {"view", "reshape", "_unsafe_view"}
MATMULS = (operator.matmul, torch.matmul, torch.mm)  # x @ W of a traced forward, W a parameter
AXES = ("permute", "transpose", "unsqueeze", "squeeze")  # rearrangements of the point's axes
_POOL = (("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
         ("count_include_pad", True))  # fmt: skip
# torch-level functions of symbolically traced graphs: name, then (parameter, default) after x.
FUNCTIONS: dict[Callable, tuple[str, tuple[tuple[str, Any], ...]]] = {
    **{getattr(torch, name): (name, ()) for name in SIMPLE if name != "silu"},
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
    F.mish: ("mish", (("inplace", False),)),
    F.selu: ("selu", (("inplace", False),)),
    F.celu: ("celu", (("alpha", 1.0), ("inplace", False))),
    F.hardswish: ("hardswish", (("inplace", False),)),
    F.hardsigmoid: ("hardsigmoid", (("inplace", False),)),
    F.softsign: ("softsign", ()),
    F.logsigmoid: ("logsigmoid", ()),
    F.tanhshrink: ("tanhshrink", ()),
    torch.special.expit: ("sigmoid", ()),
    F.normalize: ("normalize", (("p", 2.0), ("dim", 1), ("eps", 1e-12), ("out", None))),
    F.softmax: ("softmax", (("dim", None), ("_stacklevel", 3), ("dtype", None))),
    F.log_softmax: ("log_softmax", (("dim", None), ("_stacklevel", 3), ("dtype", None))),
    torch.softmax: ("softmax", (("dim", None), ("dtype", None))),
    torch.log_softmax: ("log_softmax", (("dim", None), ("dtype", None))),
    F.pixel_shuffle: ("pixel_shuffle", (("upscale_factor", None),)),
    F.pixel_unshuffle: ("pixel_unshuffle", (("downscale_factor", None),)),
    F.avg_pool1d: ("avg_pool1d", _POOL),
    F.avg_pool2d: ("avg_pool2d", (*_POOL, ("divisor_override", None))),
    F.adaptive_avg_pool1d: ("adaptive_avg_pool1d", (("output_size", None),)),
    F.adaptive_avg_pool2d: ("adaptive_avg_pool2d", (("output_size", None),)),
    torch.flatten: ("flatten", (("start_dim", 0), ("end_dim", -1))),
    torch.reshape: ("reshape", (("shape", None),)),
    torch.unflatten: ("unflatten", (("dim", None), ("sizes", None))),
    F.interpolate: ("interpolate", (("size", None), ("scale_factor", None), ("mode", "nearest"),
                                    ("align_corners", None), ("recompute_scale_factor", None),
                                    ("antialias", False))),
    F.pad: ("pad", (("pad", None), ("mode", "constant"), ("value", None))),
    torch.permute: ("permute", (("dims", None),)),
    torch.transpose: ("transpose", (("dim0", None), ("dim1", None))),
    torch.unsqueeze: ("unsqueeze", (("dim", None),)),
    torch.squeeze: ("squeeze", (("dim", None),)),
    F.glu: ("glu", (("dim", -1),)),
    torch.chunk: ("chunk", (("chunks", None), ("dim", 0))),
    torch.split: ("split", (("split_size_or_sections", None), ("dim", 0))),
    torch.clamp: ("clamp", (("min", None), ("max", None))),
    torch.clip: ("clamp", (("min", None), ("max", None))),
    torch.clamp_min: ("clamp", (("min", None),)),
    torch.clamp_max: ("clamp", (("max", None),)),
}  # fmt: skip
METHODS: dict[str, tuple[tuple[str, Any], ...]] = {
    **{name: () for name in SIMPLE if name != "silu"},
    "contiguous": (("memory_format", None),),
    "clone": (("memory_format", None),),
    "softmax": (("dim", None), ("dtype", None)),
    "log_softmax": (("dim", None), ("dtype", None)),
    "flatten": (("start_dim", 0), ("end_dim", -1)),
    "unflatten": (("dim", None), ("sizes", None)),
    "transpose": (("dim0", None), ("dim1", None)),
    "unsqueeze": (("dim", None),),
    "squeeze": (("dim", None),),
    "chunk": (("chunks", None), ("dim", 0)),
    "split": (("split_size", None), ("dim", 0)),
    "clamp": (("min", None), ("max", None)),
    "clip": (("min", None), ("max", None)),
    "clamp_min": (("min", None),),
    "clamp_max": (("max", None),),
}


def copy_sizes(node: Node) -> tuple[str, list[Any]] | None:
    """("expand" or "repeat", the sizes) of an expand / repeat node, traced or aten; else None."""
    if node.op == "call_method" and node.target in ("expand", "repeat") and not node.kwargs:
        sizes = node.args[1:]
        sizes = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        return node.target, list(sizes)
    if node.op == "call_function" and node.target in (aten.expand.default, aten.repeat.default):
        if len(node.args) != 2 or node.kwargs:
            return None
        return node.target.overloadpacket.__name__, list(node.args[1])
    return None


def along_the_batch(node: Node, batch: set[Node]) -> bool:
    """A tensor copied along a new batch axis of the chain's batch size, unchanged otherwise:
    ``C.expand(len(z), -1)``, ``C.repeat(z.shape[0], 1)``."""
    found = copy_sizes(node)
    if found is None or not found[1] or found[1][0] not in batch:
        return False
    op, sizes = found
    return all(type(s) is int and (s == 1 if op == "repeat" else s >= -1) for s in sizes[1:])
