"""Each step of a chain applied to a stacked value and its tangents.

The stack ``x`` is (k+1, P, *shape): block 0 holds the value at P points, blocks 1..k the k
tangents at the same points. An affine step is linear in the tangents, so all k+1 blocks go
through it as one batch of (k+1) P inputs (one GEMM, one convolution), the bias added to the
value block only; an activation multiplies the tangents by its derivative at the value;
group, layer and L2 normalization and softmax have their JVP written out
(:mod:`fastgeo.decoders.normalizing`). The stack is this
module's own tensor: steps may update it in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .activations import ACTIVATIONS, SOFT_THRESHOLD
from .normalizing import group_norm, layer_norm, normalize, softmax
from .stack import batch, channels, like, stack_dim, unbatch
from .steps import (
    Activation,
    AdaptiveAvgPool,
    Affine,
    AvgPool,
    Axes,
    BatchNorm,
    Branches,
    Broadcast,
    ByTensor,
    Concat,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    Normalize,
    Pad,
    Part,
    PixelShuffle,
    PReLU,
    Reshape,
    Scale,
    Softmax,
    Step,
    Unflatten,
    Upsample,
)

_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}






def _affine(step: Affine, x: Tensor) -> Tensor:
    weight, bias = like(step.weight(), x), like(step.bias(), x)
    y = torch.mm(x.reshape(-1, x.shape[-1]), weight.T).reshape(*x.shape[:-1], weight.shape[0])
    if bias is not None:
        y[0] += bias
    return y


def _conv(step: Conv, x: Tensor) -> Tensor:
    weight, bias = like(step.weight(), x), like(step.bias(), x)
    n = weight.dim() - 2
    xb = batch(x)
    if n == 2 and xb.device.type == "cpu":
        # oneDNN convolves channels-last images about twice as fast on CPU; the layout then
        # stays through activations and further convolutions, until a reshape.
        xb = xb.contiguous(memory_format=torch.channels_last)
        weight = weight.contiguous(memory_format=torch.channels_last)
    if step.transposed:
        y = _CONV_T[n](xb, weight, None, step.stride, step.padding, step.output_padding, step.groups,
                       step.dilation)  # fmt: skip
    else:
        y = _CONV[n](xb, weight, None, step.stride, step.padding, step.dilation, step.groups)
    y = unbatch(y, x)
    if bias is not None:
        y[0] += channels(bias, y)
    return y


def _batch_norm(step: BatchNorm, x: Tensor) -> Tensor:
    weight, bias = step.weight(), step.bias()
    scale = torch.rsqrt(step.running_var() + step.eps)
    if weight is not None:
        scale = scale * weight
    shift = -step.running_mean() * scale
    if bias is not None:
        shift = shift + bias
    x.mul_(channels(like(scale, x), x))
    x[0] += channels(like(shift, x), x)
    return x





def _upsample(step: Upsample, x: Tensor) -> Tensor:
    y = F.interpolate(batch(x), step.size, step.scale_factor, step.mode, step.align_corners,
                      step.recompute_scale_factor)  # fmt: skip
    return unbatch(y, x)


def _pad(step: Pad, x: Tensor) -> Tensor:
    return unbatch(F.pad(batch(x), step.pad, step.mode), x)


def _reshape(step: Reshape, x: Tensor) -> Tensor:
    shape = list(step.shape)
    if -1 in shape:  # resolved here: reshape cannot infer it when there are no points (P = 0)
        known = math.prod(s for s in shape if s != -1)
        shape[shape.index(-1)] = math.prod(x.shape[2:]) // known if known else 0
    return x.reshape(*x.shape[:2], *shape)



def _flatten(step: Flatten, x: Tensor) -> Tensor:
    return x.flatten(stack_dim(step.start), stack_dim(step.end))


def _unflatten(step: Unflatten, x: Tensor) -> Tensor:
    return x.unflatten(stack_dim(step.dim), step.sizes)


def _axes(step: Axes, x: Tensor) -> Tensor:
    axes = tuple(stack_dim(a) for a in step.axes)
    if step.op == "permute":
        return x.permute(0, *axes)
    if step.op == "transpose":
        return x.transpose(*axes)
    return x.unsqueeze(*axes) if step.op == "unsqueeze" else x.squeeze(*axes)


def _part(step: Part, x: Tensor) -> Tensor:
    """The same piece of every block (linear: the tangents' piece is the piece's tangent)."""
    axis = stack_dim(step.axis)
    if step.op == "slice":
        piece = slice(*step.arg)
        if axis >= 0:
            return x[(slice(None),) * axis + (piece,)]
        return x[(..., piece) + (slice(None),) * (-axis - 1)]
    if step.op == "select":
        return x.select(axis, step.arg)
    if step.op == "chunk":
        return x.chunk(step.arg, axis)[step.index]
    return x.split(list(step.arg) if isinstance(step.arg, tuple) else step.arg, axis)[step.index]


def _broadcast(step: Broadcast, x: Tensor) -> Tensor:
    if step.op == "repeat":
        return x.repeat(1, 1, *step.sizes)
    return x.expand(*x.shape[:2], *step.sizes).contiguous()  # steps after may update it in place


def _concat(step: Concat, x: Tensor) -> Tensor:
    """The value block gets the operand beside it, the tangent blocks zeros."""
    p = step.operand()
    point = x.dim() - 2
    if not isinstance(p, Tensor) or not (p.dim() == point or p.dim() == point + 1 and p.shape[0] == 1):
        got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
        raise ValueError(f"{step.identity!r} = {got} does not broadcast over points {tuple(x.shape[1:])}")
    p = like(p, x)
    p = p[0] if p.dim() == point + 1 else p
    axis = stack_dim(step.axis)
    shape = list(x.shape)
    shape[axis] = p.shape[axis - 2 if axis >= 0 else axis]
    piece = x.new_zeros(shape)
    piece[0] = p
    return torch.cat([piece, x] if step.first else [x, piece], axis)


def _activation(step: Activation, x: Tensor) -> Tensor:
    y, dy = ACTIVATIONS[step.name](x[0], *step.params)
    x[1:] *= dy
    x[0] = y
    return x


def prelu(step: PReLU, value: Tensor) -> tuple[Tensor, Tensor]:
    """The PReLU's value and derivative at ``value`` (P, C, ...) or (P, F), out of place."""
    a = like(step.weight(), value)
    a = a.reshape(-1, *(1,) * (value.dim() - 2)) if a.numel() > 1 else a.reshape(())
    if step.beta is None:
        positive = value > 0
        return torch.where(positive, value, a * value), torch.where(positive, torch.ones_like(a), a)
    sp, dsp = ACTIVATIONS["softplus"](value, step.beta, SOFT_THRESHOLD)  # as the smoothed LeakyReLU
    return a * value + (1 - a) * sp, a + (1 - a) * dsp


def _prelu(step: PReLU, x: Tensor) -> Tensor:
    y, dy = prelu(step, x[0])
    x[1:] *= dy
    x[0] = y
    return x



def _pixel_shuffle(step: PixelShuffle, x: Tensor) -> Tensor:
    fn = F.pixel_unshuffle if step.inverse else F.pixel_shuffle
    return unbatch(fn(batch(x), step.factor), x)


def _avg_pool(step: AvgPool, x: Tensor) -> Tensor:
    divisor = () if step.dims == 1 else (step.divisor_override,)  # avg_pool1d takes none
    y = _AVG_POOL[step.dims](batch(x), step.kernel, step.stride, step.padding, step.ceil_mode,
                             step.count_include_pad, *divisor)  # fmt: skip
    return unbatch(y, x)


def _adaptive_avg_pool(step: AdaptiveAvgPool, x: Tensor) -> Tensor:
    pool = F.adaptive_avg_pool1d if step.dims == 1 else F.adaptive_avg_pool2d
    return unbatch(pool(batch(x), step.output_size), x)


class Peak:
    """Elements per point held at once while steps run, the most seen: what sizes the chunks of
    points (a residual block holds its input, then its first branch's output, while a branch
    runs)."""

    def __init__(self) -> None:
        self.held = 0  # elements per point kept outside the chain now running
        self.most = 0

    def see(self, x: Tensor) -> None:
        self.most = max(self.most, self.held + math.prod(x.shape[2:]))


def run(steps: tuple[Step, ...] | list[Step], x: Tensor, peak: Peak | None = None) -> Tensor:
    """The steps one after the other on the stack x (updated in place, like each step); ``peak``
    records the elements per point they hold."""
    for step in steps:
        x = _branches(step, x, peak) if isinstance(step, Branches) else APPLY[type(step)](step, x)
        if peak is not None:
            peak.see(x)
    return x


def _branches(step: Branches, x: Tensor, peak: Peak | None = None) -> Tensor:
    """The derivative of a sum is the sum of the derivatives: the stack of ``first(x) +
    second(x)`` is the sum of the two chains' stacks (values and tangents alike), of their
    concatenation the concatenation. Of a product ``a b``: value ``a b``, tangents ``a' b + a b'``
    (linear in the tangents at known values)."""
    held = 0 if peak is None else peak.held
    if peak is not None:
        peak.held = held + math.prod(x.shape[2:])  # x waits for the second branch
    y = run(step.first, x.clone(), peak)
    if peak is not None:
        peak.held = held + math.prod(y.shape[2:])  # the first's result waits for the sum
    other = run(step.second, x, peak)
    if peak is not None:
        peak.held = held
    if step.join == "sum":  # in place into the one whose shape the sum has (a bias map broadcast)
        shape = torch.broadcast_shapes(y.shape, other.shape)
        if y.shape == shape:
            y += other
            return y
        if other.shape == shape:
            other += y
            return other
        return y + other
    if step.join == "cat":
        return torch.cat([y, other], stack_dim(step.dim))
    out = y * other[:1]  # a b, a' b (broadcast: a gate per channel multiplies whole maps)
    out[1:] += y[:1] * other[1:]  # + a b'
    return out


def _scale(step: Scale, x: Tensor) -> Tensor:
    if step.scale != 1.0:
        x *= step.scale
    if step.shift != 0.0:
        x[0] += step.shift
    return x


def _by_tensor(step: ByTensor, x: Tensor) -> Tensor:
    """``x * p``, ``x / p`` (tangents too: linear), ``a x + b p`` (the tangents ``a x'``); p
    broadcasts over the points (P, *shape) as it did in the decoder: right-aligned, any axis along
    the batch of size 1."""
    p = step.operand()
    p = like(p, x) if isinstance(p, Tensor) else p
    if not isinstance(p, Tensor) or p.dim() > x.dim() - 1 or p.dim() == x.dim() - 1 and p.shape[0] != 1:
        got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
        raise ValueError(f"{step.identity!r} = {got} does not broadcast over points {tuple(x.shape[1:])}")
    if step.op == "mul":
        return x * p
    if step.op == "div":
        return x / p
    shape = torch.broadcast_shapes(x.shape[1:], p.shape)
    y = x if shape == x.shape[1:] else x.expand(x.shape[0], *shape).clone()
    if step.x_coef != 1.0:
        y *= step.x_coef
    y[0] += p if step.p_coef == 1.0 else step.p_coef * p
    return y


APPLY: dict[type, Callable[..., Tensor]] = {
    Affine: _affine,
    Conv: _conv,
    BatchNorm: _batch_norm,
    GroupNorm: group_norm,
    LayerNorm: layer_norm,
    Upsample: _upsample,
    Pad: _pad,
    Reshape: _reshape,
    Flatten: _flatten,
    Unflatten: _unflatten,
    Axes: _axes,
    Part: _part,
    Activation: _activation,
    PReLU: _prelu,
    Softmax: softmax,
    Normalize: normalize,
    PixelShuffle: _pixel_shuffle,
    AvgPool: _avg_pool,
    AdaptiveAvgPool: _adaptive_avg_pool,
    Scale: _scale,
    ByTensor: _by_tensor,
    Broadcast: _broadcast,
    Concat: _concat,
    Branches: _branches,
}


# Steps that update their input stack in place (the others make a new one or only view it).
IN_PLACE = (BatchNorm, Scale, ByTensor)


def apply(step: Step, x: Tensor) -> Tensor:
    """One step on the stack: x (k+1, P, *shape_in) -> (k+1, P, *shape_out), value block first."""
    return APPLY[type(step)](step, x)
