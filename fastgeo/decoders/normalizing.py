"""Steps that divide each point by a statistic of its own (group and layer normalization, L2
normalization) or exponentiate and sum (softmax): not linear in their input, their JVPs written
out on the stack of :mod:`fastgeo.decoders.stack`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .stack import channels, like, stack_dim
from .steps import GroupNorm, LayerNorm, Normalize, Softmax


def _normalized(g: Tensor, eps: float) -> Tensor:
    """xhat = (x - mean) / sigma over the last axis of the value block g[0], and the tangents
    dxhat = (dx - mean(dx) - xhat mean(xhat dx)) / sigma: g (k+1, P, G, n) -> the same shape."""
    value, tangents = g[0], g[1:]
    var, mean = torch.var_mean(value, -1, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    xhat = (value - mean) * rstd
    out = torch.empty_like(g)
    out[0] = xhat
    out[1:] = (
        tangents - tangents.mean(-1, keepdim=True) - xhat * (xhat * tangents).mean(-1, keepdim=True)
    ) * rstd
    return out


def group_norm(step: GroupNorm, x: Tensor) -> Tensor:
    """y = gamma xhat + beta, xhat normalized over each group of channels (per point)."""
    blocks, P = x.shape[:2]
    y = _normalized(x.reshape(blocks, P, step.groups, -1), step.eps).reshape(x.shape)
    weight, bias = like(step.weight(), x), like(step.bias(), x)
    if weight is not None:
        y.mul_(channels(weight, y))
    if bias is not None:
        y[0] += channels(bias, y)
    return y


def layer_norm(step: LayerNorm, x: Tensor) -> Tensor:
    """y = gamma xhat + beta, xhat normalized over the last len(shape) axes of each point."""
    blocks, P = x.shape[:2]
    y = _normalized(x.reshape(blocks, P, -1, math.prod(step.shape)), step.eps).reshape(x.shape)
    weight, bias = like(step.weight(), x), like(step.bias(), x)
    if weight is not None:
        y.mul_(weight)
    if bias is not None:
        y[0] += bias
    return y


def softmax(step: Softmax, x: Tensor) -> Tensor:
    """y = softmax(x), dy = y (dx - sum(y dx)); log: y = log_softmax(x), dy = dx - sum(softmax dx).
    Into a new stack (autograd through a smoothed chain keeps x)."""
    dim = step.dim  # a point axis: the same axis of the value block (P, ...) as of a batch
    s = torch.softmax(x[0], dim)
    tangents = x[1:] - (s * x[1:]).sum(stack_dim(dim), keepdim=True)  # dims of (k, P, ...): the stack's
    out = torch.empty_like(x)
    out[0] = torch.log_softmax(x[0], dim) if step.log else s
    out[1:] = tangents if step.log else s * tangents
    return out


def normalize(step: Normalize, x: Tensor) -> Tensor:
    """y = x / max(|x|, eps) over axis ``dim`` of each point (``F.normalize``), dy = (dx - y (y .
    dx)) / |x| where |x| > eps, else dx / eps. Into a new stack."""
    dim = stack_dim(step.dim)
    norm = x[0].norm(dim=step.dim, keepdim=True)
    scale = norm.clamp_min(step.eps)
    y = x[0] / scale
    tangents = x[1:]
    along = tangents - y * (y * tangents).sum(dim, keepdim=True)
    out = torch.empty_like(x)
    out[0] = y
    out[1:] = torch.where(norm > step.eps, along, tangents) / scale
    return out
