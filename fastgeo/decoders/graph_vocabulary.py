"""Building the steps both kinds of graph share from an op's arguments (reshapes, axes, indexing
and pieces, activations by name, powers, clamps, softmax, pixel shuffle, pooling, padding,
upsampling, convolutions, products by a parameter, concatenations, broadcasts):
:class:`StepVocabulary`, under the readers of ``aten`` graphs (:mod:`fastgeo.decoders.graph_aten`)
and of symbolically traced ones (:mod:`fastgeo.decoders.graphs`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Any

from torch.fx import Node

from .graph_walk import ChainReader, attribute, attribute_names, require
from .modules import (
    GELU_APPROXIMATIONS,
    PAD_MODES,
    UPSAMPLE_MODES,
    glu_steps,
    hashable,
    softmax_steps,
)
from .steps import (
    Activation,
    AdaptiveAvgPool,
    Affine,
    AvgPool,
    Axes,
    Broadcast,
    Concat,
    Conv,
    Flatten,
    Normalize,
    Pad,
    Part,
    PixelShuffle,
    Reshape,
    Unflatten,
    Upsample,
)


class StepVocabulary(ChainReader):
    """The steps both graph readers build alike, from an op's arguments."""

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

    def _glu(self, dim: Any) -> None:
        steps = glu_steps(dim)
        require(steps is not None)
        self._add(steps[0])

    def _broadcast_with(self, node: Node, tensors: Any) -> None:
        """``broadcast_tensors(x, c, ...)`` whose output 0 continues the chain (a distribution's
        parameters broadcast together: ``Normal(mu, sigma).mean``, ``Bernoulli(logits=x).mean``):
        the identity where the others ``c`` do not widen x (where the graph records shapes, they
        are compared; the check against the decoder catches any other widening). ``c`` are
        constants, x itself, or values computed beside the chain that reach the output only here
        (``self.dead``: a scale from the same head as the mean)."""
        require(isinstance(tensors, (list, tuple)) and tensors and tensors[0] is self.current)
        others = tensors[1:]
        require(all(isinstance(t, Node) and (t.op == "get_attr" or t in self.dead or t is self.current)
                    for t in others))  # fmt: skip
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

    def _normalize(self, dim: Any, eps: Any) -> None:
        """``F.normalize`` (L2) over an axis of each point."""
        require(type(dim) is int and (dim >= 1 or dim < 0) and type(eps) in (int, float) and eps > 0)
        self._add(Normalize(dim, float(eps)))

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
