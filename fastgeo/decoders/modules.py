"""Layers as steps: the step list of an ``nn.Sequential`` (nested too) of exactly the standard
layer types below, or of one such layer. A subclass, a module with hooks, or a layer whose
output depends on the batch or on chance (BatchNorm in training mode or without running
statistics, Dropout in training mode) has no steps (None).

Linear; Conv1d / Conv2d, ConvTranspose1d / ConvTranspose2d (any stride, padding, output
padding, dilation, groups, padding mode); Upsample (and UpsamplingNearest2d /
UpsamplingBilinear2d); BatchNorm1d / BatchNorm2d (eval); GroupNorm; LayerNorm; ZeroPad2d,
ReflectionPad2d, ReplicationPad2d; Flatten, Unflatten; Identity, Dropout (eval); ELU, ReLU,
LeakyReLU, ReLU6, Hardtanh, Tanh, Sigmoid, Softplus, SiLU, GELU (exact or tanh).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .steps import (
    Activation,
    Affine,
    BatchNorm,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    Pad,
    Step,
    Unflatten,
    Upsample,
)

_SIMPLE = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SiLU: "silu"}
_CONVS = (nn.Conv1d, nn.Conv2d)
_CONVS_T = (nn.ConvTranspose1d, nn.ConvTranspose2d)
_UPSAMPLES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
# Interpolation modes: every one is a linear map of its input.
UPSAMPLE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_PADS = {nn.ZeroPad2d: "constant", nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate"}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
PAD_MODES = ("constant", "reflect", "replicate", "circular")
GELU_APPROXIMATIONS = {"none": "gelu", "tanh": "gelu_tanh"}  # nn.GELU's approximate -> activation


def getter(module: nn.Module, name: str) -> Callable[[], Tensor]:
    """Reads ``module.<name>`` at call time (a parameter, a buffer, or None)."""
    return lambda: getattr(module, name)


def hashable(value: object) -> object:
    """Lists as tuples, recursively (settings that enter a signature)."""
    return tuple(hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def has_hooks(module: nn.Module) -> bool:
    """Whether forward hooks or pre-hooks may change what the module computes."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def module_steps(module: nn.Module) -> list[Step] | None:
    """Steps of an nn.Sequential (nested too) of known layers, or of one known layer; None
    if it is anything else."""
    if has_hooks(module):
        return None
    if type(module) is nn.Sequential:
        steps: list[Step] = []
        for child in module:
            sub = module_steps(child)
            if sub is None:
                return None
            steps += sub
        return steps
    return layer_steps(module)


def layer_steps(m: nn.Module) -> list[Step] | None:
    """Steps of one layer of a known type (exact: not a subclass), or None. Hooks not checked."""
    kind = type(m)
    if kind is nn.Linear:
        return [Affine(getter(m, "weight"), getter(m, "bias"), id(m))]
    if kind in _CONVS or kind in _CONVS_T:
        return _conv_steps(m)
    if kind in _UPSAMPLES:
        if m.mode not in UPSAMPLE_MODES:
            return None
        return [Upsample(hashable(m.size), hashable(m.scale_factor), m.mode, m.align_corners,
                         m.recompute_scale_factor)]  # fmt: skip
    if kind in _BATCH_NORMS:
        if m.training or m.running_mean is None or m.running_var is None:
            return None  # batch statistics: the output of a point depends on the others
        return [BatchNorm(getter(m, "weight"), getter(m, "bias"), getter(m, "running_mean"),
                          getter(m, "running_var"), float(m.eps), id(m))]  # fmt: skip
    if kind is nn.GroupNorm:  # the same computation in training and eval mode
        return [GroupNorm(getter(m, "weight"), getter(m, "bias"), int(m.num_groups), float(m.eps), id(m))]
    if kind is nn.LayerNorm:  # so is this one
        return [LayerNorm(getter(m, "weight"), getter(m, "bias"), tuple(m.normalized_shape), float(m.eps),
                          id(m))]  # fmt: skip
    if kind in _PADS:
        if kind is nn.ZeroPad2d and float(m.value) != 0.0:
            return None
        return [Pad(tuple(m.padding), _PADS[kind])]
    if kind is nn.Flatten:
        return None if m.start_dim == 0 else [Flatten(int(m.start_dim), int(m.end_dim))]
    if kind is nn.Unflatten:
        sizes = m.unflattened_size
        if not isinstance(m.dim, int) or m.dim == 0 or not all(isinstance(s, int) for s in sizes):
            return None
        return [Unflatten(m.dim, tuple(m.unflattened_size))]
    if kind is nn.Identity:
        return []
    if kind in _DROPOUTS:
        return None if m.training else []
    return activation_steps(m)


def activation_steps(m: nn.Module) -> list[Step] | None:
    """The step of an activation module, or None."""
    kind = type(m)
    if kind in _SIMPLE:
        return [Activation(_SIMPLE[kind])]
    if kind is nn.ELU:
        return [Activation("elu", (float(m.alpha),))]
    if kind is nn.LeakyReLU:
        return [Activation("leaky_relu", (float(m.negative_slope),))]
    if kind is nn.Softplus:
        return [Activation("softplus", (float(m.beta), float(m.threshold)))]
    if kind is nn.GELU and m.approximate in GELU_APPROXIMATIONS:
        return [Activation(GELU_APPROXIMATIONS[m.approximate])]
    if kind in (nn.Hardtanh, nn.ReLU6):
        return [Activation("hardtanh", (float(m.min_val), float(m.max_val)))]
    return None


def _conv_steps(m: nn.Module) -> list[Step] | None:
    n = len(m.kernel_size)
    transposed = type(m) in _CONVS_T
    steps: list[Step] = []
    padding = m.padding
    if m.padding_mode != "zeros":  # what the module's forward does: pad, then convolve unpadded
        if transposed or m.padding_mode not in PAD_MODES:
            return None
        steps.append(Pad(tuple(m._reversed_padding_repeated_twice), m.padding_mode))
        padding = (0,) * n
    steps.append(Conv(
        getter(m, "weight"), getter(m, "bias"), id(m), tuple(m.stride),
        padding if isinstance(padding, str) else tuple(padding), tuple(m.dilation), int(m.groups),
        transposed, tuple(m.output_padding) if transposed else (),
    ))  # fmt: skip
    return steps
