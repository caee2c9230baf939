"""A recognized chain of steps back as standard layers: the ``nn.Sequential`` a safe generator
file stores for a decoder that is a custom module, a method or a function (``torch.fx`` traced it
into steps; :mod:`fastgeo.decoders.recognize`). Steps without a standard layer give None; the
file's probe check (:func:`fastgeo.save_generator`) compares the layers with the decoder itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .modules import SELU_ALPHA, SELU_SCALE
from .steps import (
    Activation,
    Affine,
    BatchNorm,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    PixelShuffle,
    Reshape,
    Unflatten,
)
from .steps import Upsample as UpsampleStep


def _scaled_elu(params: tuple[float, ...]) -> nn.Module | None:
    """SELU and CELU (the recognizer's ``scaled_elu`` of both); None for other constants."""
    alpha, scale, input_scale = params
    if (alpha, scale, input_scale) == (SELU_ALPHA, SELU_SCALE, 1.0):
        return nn.SELU()
    if scale == 1.0 and input_scale == 1.0 / alpha:
        return nn.CELU(alpha)
    return None


ACTIVATION_MODULES: dict[str, Callable[[tuple[float, ...]], nn.Module | None]] = {
    "elu": lambda p: nn.ELU(*p),
    "relu": lambda p: nn.ReLU(),
    "leaky_relu": lambda p: nn.LeakyReLU(*p),
    "tanh": lambda p: nn.Tanh(),
    "sigmoid": lambda p: nn.Sigmoid(),
    "softplus": lambda p: nn.Softplus(*p),
    "silu": lambda p: nn.SiLU(),
    "gelu": lambda p: nn.GELU(),
    "gelu_tanh": lambda p: nn.GELU("tanh"),
    "hardtanh": lambda p: nn.Hardtanh(*p),
    "mish": lambda p: nn.Mish(),
    "hardswish": lambda p: nn.Hardswish(),
    "softsign": lambda p: nn.Softsign(),
    "logsigmoid": lambda p: nn.LogSigmoid(),
    "tanhshrink": lambda p: nn.Tanhshrink(),
    "scaled_elu": _scaled_elu,
}
_CONV = {
    (1, False): nn.Conv1d,
    (2, False): nn.Conv2d,
    (1, True): nn.ConvTranspose1d,
    (2, True): nn.ConvTranspose2d,
}


def _copy(param: Tensor | None, value: Tensor | None) -> None:
    if param is not None and value is not None:
        with torch.no_grad():
            param.copy_(value.detach())


def _conv(step: Conv) -> nn.Module | None:
    weight = step.weight().detach()
    cls = _CONV.get((weight.dim() - 2, step.transposed))
    if cls is None:
        return None
    bias = step.bias()
    if step.transposed:
        channels = weight.shape[0], weight.shape[1] * step.groups
        extra = {"output_padding": step.output_padding}
    else:
        channels = weight.shape[1] * step.groups, weight.shape[0]
        extra = {}
    layer = cls(
        *channels, tuple(weight.shape[2:]), stride=step.stride, padding=step.padding,
        dilation=step.dilation, groups=step.groups, bias=bias is not None, **extra,
    )  # fmt: skip
    layer = layer.to(dtype=weight.dtype, device=weight.device)
    _copy(layer.weight, weight)
    _copy(layer.bias, bias)
    return layer


def _batch_norm(step: BatchNorm, rank: int) -> nn.Module | None:
    weight, bias = step.weight(), step.bias()
    if (weight is None) != (bias is None) or rank > 3:
        return None
    mean = step.running_mean().detach()
    cls = nn.BatchNorm2d if rank == 3 else nn.BatchNorm1d
    layer = cls(mean.numel(), eps=step.eps, affine=weight is not None)
    layer = layer.to(dtype=mean.dtype, device=mean.device)
    _copy(layer.weight, weight)
    _copy(layer.bias, bias)
    _copy(layer.running_mean, mean)
    _copy(layer.running_var, step.running_var())
    return layer.eval()


def _group_norm(step: GroupNorm) -> nn.Module | None:
    weight, bias = step.weight(), step.bias()
    if weight is None or bias is None:  # the channels are known from the affine map alone
        return None
    layer = nn.GroupNorm(step.groups, weight.numel(), eps=step.eps)
    layer = layer.to(dtype=weight.dtype, device=weight.device)
    _copy(layer.weight, weight)
    _copy(layer.bias, bias)
    return layer


def _layer_norm(step: LayerNorm) -> nn.Module:
    weight, bias = step.weight(), step.bias()
    affine = {"elementwise_affine": weight is not None, "bias": bias is not None}
    layer = nn.LayerNorm(step.shape, eps=step.eps, **affine)
    if weight is not None:
        layer = layer.to(dtype=weight.dtype, device=weight.device)
    _copy(layer.weight, weight)
    _copy(layer.bias, bias)
    return layer


def sequential_from_steps(steps: list) -> nn.Sequential | None:
    """Standard layers computing the chain ``steps`` on (P, d) codes, or None if a step has none
    (the steps' per-point rank is followed to pick BatchNorm1d or BatchNorm2d)."""
    layers, _ = _layers_of(steps)
    return None if layers is None else nn.Sequential(*layers)


def first_without_layer(steps: list) -> str | None:
    """The first of ``steps`` that no standard layer computes, named (None if every one has)."""
    _, step = _layers_of(steps)
    if step is None:
        return None
    name = getattr(step, "name", None)
    return type(step).__name__ + (f" {name!r}" if isinstance(name, str) else "")


def _layers_of(steps: list) -> tuple[list[nn.Module] | None, object]:
    """The layers of :func:`sequential_from_steps`, or None and the first step without one."""
    layers: list[nn.Module] = []
    rank = 1  # axes per point: a code is a vector
    for step in steps:
        if isinstance(step, Affine):
            weight, bias = step.weight().detach(), step.bias()
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear = linear.to(dtype=weight.dtype, device=weight.device)
            _copy(linear.weight, weight)
            _copy(linear.bias, bias)
            layers.append(linear)
        elif isinstance(step, Activation):
            layer = ACTIVATION_MODULES[step.name](step.params) if step.name in ACTIVATION_MODULES else None
            if layer is None:
                return None, step
            layers.append(layer)
        elif isinstance(step, Conv):
            layer = _conv(step)
            if layer is None:
                return None, step
            layers.append(layer)
            rank = step.weight().dim() - 1
        elif isinstance(step, BatchNorm):
            layer = _batch_norm(step, rank)
            if layer is None:
                return None, step
            layers.append(layer)
        elif isinstance(step, GroupNorm):
            layer = _group_norm(step)
            if layer is None:
                return None, step
            layers.append(layer)
        elif isinstance(step, LayerNorm):
            layers.append(_layer_norm(step))
        elif isinstance(step, UpsampleStep):
            layers.append(nn.Upsample(step.size, step.scale_factor, step.mode, step.align_corners,
                                      step.recompute_scale_factor))  # fmt: skip
        elif isinstance(step, PixelShuffle):
            layers.append(nn.PixelUnshuffle(step.factor) if step.inverse else nn.PixelShuffle(step.factor))
        elif isinstance(step, Reshape):
            layers.append(nn.Flatten(1))
            if len(step.shape) > 1:
                layers.append(nn.Unflatten(1, step.shape))
            rank = len(step.shape)
        elif isinstance(step, Flatten):
            end = step.end if step.end >= 0 else rank + 1 + step.end
            layers.append(nn.Flatten(step.start, step.end))
            rank -= end - step.start
        elif isinstance(step, Unflatten):
            layers.append(nn.Unflatten(step.dim, step.sizes))
            rank += len(step.sizes) - 1
        else:
            return None, step
    return layers, None
