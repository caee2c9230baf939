"""The steps of a recognized decoder chain, as data: what :mod:`fastgeo.decoders.recognize`
reads off a module or graph and :mod:`fastgeo.decoders.layers` applies to a stacked value and
its tangents.

A chain acts on one point at a time: every step maps a batch (P, *shape_in) to (P, *shape_out)
point by point. Parameters are read through getters at every call, so in-place training shows;
``identity`` (the layer's ``id``, or the graph's attribute names) and the settings (strides,
eps, ...) enter the chain's :func:`signature`. A chain may fork into two chains that are summed
multiplied or concatenated (:class:`Branches`: residual blocks, gates, heads side by side). All
steps but :class:`Activation`, :class:`PReLU`, :class:`GroupNorm`, :class:`LayerNorm`,
:class:`Softmax` and the product of :class:`Branches` are affine maps of their input: linear in
the tangents.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from torch import Tensor

Getter = Callable[[], Tensor]
OptionalGetter = Callable[[], "Tensor | None"]


@dataclass(frozen=True)
class Affine:
    """``x W^T + b`` on the last axis: W (out, in), b (out,) or None."""

    weight: Getter
    bias: OptionalGetter
    identity: Hashable


@dataclass(frozen=True)
class Conv:
    """A convolution (``transposed``: its transpose) over (C, *spatial) per point, N-d with N =
    ``weight().dim() - 2``, settings as ``torch.nn.functional.conv{N}d`` /
    ``conv_transpose{N}d`` take them (``padding`` may be ``"same"`` / ``"valid"``, not
    transposed). W (C_out, C_in / groups, *kernel), transposed (C_in, C_out / groups, *kernel)."""

    weight: Getter
    bias: OptionalGetter
    identity: Hashable
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    transposed: bool = False
    output_padding: tuple[int, ...] = ()


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalization with running statistics (eval mode), a per-channel affine map of
    (C, ...) per point: ``(x - mean) / sqrt(var + eps) * weight + bias``; each (C,), weight and
    bias possibly None."""

    weight: OptionalGetter
    bias: OptionalGetter
    running_mean: Getter
    running_var: Getter
    eps: float
    identity: Hashable


@dataclass(frozen=True)
class GroupNorm:
    """Group normalization of (C, ...) per point over ``groups`` groups of channels, then the
    per-channel ``weight`` and ``bias`` (C,) (or None). Not linear: its JVP is explicit."""

    weight: OptionalGetter
    bias: OptionalGetter
    groups: int
    eps: float
    identity: Hashable


@dataclass(frozen=True)
class LayerNorm:
    """Layer normalization of each point over its last ``len(shape)`` axes (sizes ``shape``),
    then the elementwise ``weight`` and ``bias`` of that shape (or None). Not linear: its JVP
    is explicit."""

    weight: OptionalGetter
    bias: OptionalGetter
    shape: tuple[int, ...]
    eps: float
    identity: Hashable


@dataclass(frozen=True)
class Upsample:
    """``torch.nn.functional.interpolate`` of (C, *spatial) per point, any linear mode
    (nearest, nearest-exact, bilinear, bicubic, ...): ``size`` or ``scale_factor``."""

    size: int | tuple[int, ...] | None
    scale_factor: float | tuple[float, ...] | None
    mode: str
    align_corners: bool | None
    recompute_scale_factor: bool | None = None


@dataclass(frozen=True)
class Pad:
    """``torch.nn.functional.pad`` of (C, *spatial) per point: ``mode`` "constant" (zeros),
    "reflect", "replicate" or "circular"."""

    pad: tuple[int, ...]
    mode: str


@dataclass(frozen=True)
class Reshape:
    """Each point reshaped to ``shape`` (at most one -1)."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Flatten:
    """``x.flatten(start, end)`` with dims of the batch (P, ...): ``start`` is never 0."""

    start: int
    end: int


@dataclass(frozen=True)
class Part:
    """A part of each point along one of its axes (``axis`` of the batch (P, ...), never 0):
    ``op`` "slice" (``arg`` (start, stop, step), as ``x[:, start:stop:step]``), "select" (``arg``
    the index; the axis goes), "chunk" (``arg`` the number of chunks) or "split" (``arg`` the size
    or the sizes), then the ``index``-th piece (``mu, logvar = h.chunk(2, dim=-1)``)."""

    op: str
    arg: Hashable
    axis: int
    index: int = 0


@dataclass(frozen=True)
class Broadcast:
    """Copies of each point along its axes: ``x.expand(P, *sizes)`` (``op="expand"``: axes of size
    1 broadcast, ``-1`` keeps one; a code spread over an image's positions, as a spatial
    broadcast decoder does) or ``x.repeat(1, *sizes)`` (``"repeat"``: tiles). Linear."""

    op: str
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Concat:
    """``torch.cat`` of each point with a tensor of the decoder's own along the point axis
    ``axis`` of the batch (P, ...) (never 0), the operand before the value where ``first``: a
    fixed condition of a conditional decoder, coordinate channels. The operand, read at every
    call, broadcasts over the points (an axis along the batch of size 1, or none) and to the
    value's sizes on the other axes; its tangents are zero."""

    operand: Getter
    identity: Hashable
    axis: int
    first: bool


@dataclass(frozen=True)
class Unflatten:
    """``x.unflatten(dim, sizes)`` with ``dim`` of the batch (P, ...), never 0."""

    dim: int
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class Axes:
    """The point's axes rearranged, the batch axis kept: ``op`` "permute" (``axes`` the new order
    of the batch tensor's axes, 0 first), "transpose" (two axes), "unsqueeze" or "squeeze" (one
    axis); axes of the batch (P, ...), 0 only as permute's first (negative ones count from the
    end: an op that would move the batch fails the check against the decoder itself)."""

    op: str
    axes: tuple[int, ...]


@dataclass(frozen=True)
class Activation:
    """A pointwise activation of :data:`fastgeo.decoders.activations.ACTIVATIONS` with its
    parameters (e.g. the ELU's alpha)."""

    name: str
    params: tuple[float, ...] = ()


@dataclass(frozen=True)
class PReLU:
    """``max(0, x) + a min(0, x)`` with the learned slopes ``a`` (1 or C values, C the channel
    axis: the first of each point); ``beta``: its kink rounded as the smoothed LeakyReLU's
    (:mod:`fastgeo.decoders.smoothing`), None for the true PReLU."""

    weight: Getter
    identity: Hashable
    beta: float | None = None


@dataclass(frozen=True)
class Softmax:
    """``softmax`` (``log``: ``log_softmax``) over axis ``dim`` of the batch (P, ...): never the
    batch axis (``dim >= 1``, or -1). Not linear: its JVP is explicit."""

    dim: int
    log: bool = False


@dataclass(frozen=True)
class Normalize:
    """``F.normalize(x, p=2, dim, eps)``: each point divided by the L2 norm of its axis ``dim``
    (never the batch axis), at least ``eps``. Not linear: its JVP is explicit."""

    dim: int
    eps: float = 1e-12


@dataclass(frozen=True)
class PixelShuffle:
    """``pixel_shuffle`` of (C r^2, H, W) to (C, H r, W r) per point with ``factor`` r
    (``inverse``: ``pixel_unshuffle``): a permutation."""

    factor: int
    inverse: bool = False


@dataclass(frozen=True)
class AvgPool:
    """``avg_pool{dims}d`` of (C, *spatial) per point, settings as the function takes them."""

    dims: int
    kernel: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None
    padding: int | tuple[int, ...]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None = None


@dataclass(frozen=True)
class AdaptiveAvgPool:
    """``adaptive_avg_pool{dims}d`` of (C, *spatial) per point to ``output_size``."""

    dims: int
    output_size: int | tuple[int | None, ...]


@dataclass(frozen=True)
class Branches:
    """Two chains of steps from one input, joined: ``join="sum"``, ``first(x) + second(x)`` (a
    residual block: ``x + f(x)`` has an empty ``first``; a projection shortcut ``f(x) + g(x)``
    two chains); ``"product"``, elementwise (a gate: ``x * sigmoid(f(x))``, SiLU written out);
    ``"cat"``, concatenated along axis ``dim`` of the point (1 or more, or negative: channels,
    two output heads side by side)."""

    first: tuple[Step, ...]
    second: tuple[Step, ...]
    join: str = "sum"
    dim: int = 0


@dataclass(frozen=True)
class Scale:
    """``x * scale + shift`` with constants (e.g. ``torch.tanh(x) * 0.5 + 0.5``)."""

    scale: float
    shift: float


@dataclass(frozen=True)
class ByTensor:
    """``x * p`` (``op="mul"``), ``x / p`` (``"div"``) or ``x_coef x + p_coef p`` (``"add"``: x + p,
    x - p, p - x) with a tensor p of the decoder's own, read at every call (a parameter or buffer:
    a learned output scale, a layer scale, the data's mean and standard deviation), broadcast
    over each point's axes (no axis along the batch, or one of size 1)."""

    op: str
    operand: Getter
    identity: Hashable
    x_coef: float = 1.0
    p_coef: float = 1.0


Step = (
    Affine | Conv | BatchNorm | GroupNorm | LayerNorm | Upsample | Pad | Reshape | Flatten | Unflatten
    | Axes | Part | Activation | PReLU | Softmax | Normalize | PixelShuffle | AvgPool | AdaptiveAvgPool
    | Scale | ByTensor | Broadcast | Concat | Branches
)  # fmt: skip
# Steps with parameters of their own (a chain without one is not a decoder worth recognizing).
LAYERS = (Affine, Conv)


def signature(steps: list[Step] | tuple[Step, ...]) -> tuple[Hashable, ...]:
    """What identifies a chain's structure: each step's kind, identity and settings (every
    field but the parameter getters; the branches' own signatures)."""
    return tuple(
        ("Branches", s.join, s.dim, signature(s.first), signature(s.second))
        if isinstance(s, Branches)
        else (type(s).__name__, *(v for f in dataclasses.fields(s) if not callable(v := getattr(s, f.name))))
        for s in steps
    )


def walk(steps: list[Step] | tuple[Step, ...]) -> Iterator[Step]:
    """Every step of a chain, those inside :class:`Branches` too (after the branches' step)."""
    for s in steps:
        yield s
        if isinstance(s, Branches):
            yield from walk(s.first)
            yield from walk(s.second)


def convolves(steps: list[Step] | tuple[Step, ...]) -> bool:
    """Whether a chain has a convolution (transposed too), in its branches too."""
    return any(isinstance(s, Conv) for s in walk(steps))
