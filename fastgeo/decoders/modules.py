"""Layers as steps: the step list of an ``nn.Sequential`` (nested too) of exactly the standard
layer types below, or of one such layer. A subclass, a module with hooks, or a layer whose
output depends on the batch or on chance (BatchNorm in training mode or without running
statistics, Dropout in training mode) has no steps (None).

Linear; Conv1d / Conv2d, ConvTranspose1d / ConvTranspose2d (any stride, padding, output
padding, dilation, groups, padding mode); Upsample (and UpsamplingNearest2d /
UpsamplingBilinear2d); BatchNorm1d / BatchNorm2d (eval); InstanceNorm1d / InstanceNorm2d;
GroupNorm; LayerNorm; ZeroPad2d, ReflectionPad2d, ReplicationPad2d; PixelShuffle, PixelUnshuffle;
AvgPool1d / AvgPool2d; Flatten, Unflatten; Identity, Dropout and AlphaDropout (eval); ELU, ReLU,
LeakyReLU, PReLU, ReLU6, Hardtanh, Tanh, Sigmoid, Softplus, SiLU, GELU (exact or tanh), Mish, SELU, CELU,
Hardswish, Hardsigmoid, Softsign, LogSigmoid, Tanhshrink; Softmax / LogSoftmax over an axis of
the point. Parametrized weights (``weight_norm``, ``spectral_norm`` in eval mode) are read as
the layer computes them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from .steps import (
    Activation,
    AdaptiveAvgPool,
    Affine,
    AvgPool,
    BatchNorm,
    Branches,
    Conv,
    Flatten,
    GroupNorm,
    LayerNorm,
    Pad,
    Part,
    PixelShuffle,
    PReLU,
    Scale,
    Softmax,
    Step,
    Unflatten,
    Upsample,
)

_SIMPLE = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Hardswish: "hardswish",
    nn.Softsign: "softsign",
    nn.LogSigmoid: "logsigmoid",
    nn.Tanhshrink: "tanhshrink",
}
# SELU's constants, as torch's elu kernel takes them (alpha, scale)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d)
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2}
_CONVS = (nn.Conv1d, nn.Conv2d)
_CONVS_T = (nn.ConvTranspose1d, nn.ConvTranspose2d)
_UPSAMPLES = (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
# Interpolation modes: every one is a linear map of its input.
UPSAMPLE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "bicubic", "trilinear")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_PADS = {nn.ZeroPad2d: "constant", nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate"}
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
PAD_MODES = ("constant", "reflect", "replicate", "circular")
GELU_APPROXIMATIONS = {"none": "gelu", "tanh": "gelu_tanh"}  # nn.GELU's approximate -> activation


def getter(module: nn.Module, name: str) -> Callable[[], Tensor]:
    """Reads ``module.<name>`` at call time (a parameter, a buffer, or None; a weight the hook of
    ``torch.nn.utils.weight_norm`` / ``spectral_norm`` recomputes before every forward: through
    the hook, as it computes it in eval mode)."""
    hook = next((h for h in weight_hooks(module) if h.name == name), None)
    if isinstance(hook, SpectralNorm):
        return lambda: hook.compute_weight(module, do_power_iteration=False)
    if hook is not None:
        return lambda: hook.compute_weight(module)
    return lambda: getattr(module, name)


def weight_hooks(module: nn.Module) -> list[WeightNorm | SpectralNorm]:
    """The module's pre-hooks of ``torch.nn.utils.weight_norm`` / ``spectral_norm`` (the forms
    by hooks): they only recompute a weight from the module's own parameters."""
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, (WeightNorm, SpectralNorm))]


def hashable(value: object) -> object:
    """Lists as tuples, recursively (settings that enter a signature)."""
    return tuple(hashable(v) for v in value) if isinstance(value, (list, tuple)) else value


def has_hooks(module: nn.Module) -> bool:
    """Whether forward hooks or pre-hooks may change what the module computes (not those of
    :func:`weight_hooks`, whose weights :func:`getter` reads through them)."""
    return bool(module._forward_hooks or len(module._forward_pre_hooks) > len(weight_hooks(module)))


def module_steps(module: nn.Module) -> list[Step] | None:
    """Steps of an nn.Sequential (nested too) of known layers, or of one known layer; None
    if it is anything else."""
    if has_hooks(module) or "forward" in vars(module):  # a forward replaced on the instance
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


def layer_type(m: nn.Module) -> type | None:
    """The layer's type; a parametrized one's original type (``weight_norm``, ``spectral_norm``
    and other ``torch.nn.utils.parametrize`` layers: the weight read at every call is the
    parametrized one), or None while a parametrization is in training mode (spectral norm's
    power iteration changes the weight at every call)."""
    if not parametrize.is_parametrized(m):
        return type(m)
    if any(p.training for p in m.parametrizations.modules()):
        return None
    return type(m).__bases__[0]


def layer_steps(m: nn.Module) -> list[Step] | None:
    """Steps of one layer of a known type (exact: not a subclass), or None. Hooks not checked."""
    kind = layer_type(m)
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
    if kind in _INSTANCE_NORMS:  # instance statistics (in eval mode too, without running ones)
        if m.track_running_stats and not m.training:
            return [BatchNorm(getter(m, "weight"), getter(m, "bias"), getter(m, "running_mean"),
                              getter(m, "running_var"), float(m.eps), id(m))]  # fmt: skip
        return [GroupNorm(getter(m, "weight"), getter(m, "bias"), int(m.num_features), float(m.eps), id(m))]
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
    if kind in (nn.PixelShuffle, nn.PixelUnshuffle):
        inverse = kind is nn.PixelUnshuffle
        return [PixelShuffle(int(m.downscale_factor if inverse else m.upscale_factor), inverse)]
    if kind in _AVG_POOLS:
        divisor = getattr(m, "divisor_override", None)
        return [AvgPool(_AVG_POOLS[kind], hashable(m.kernel_size), hashable(m.stride), hashable(m.padding),
                        bool(m.ceil_mode), bool(m.count_include_pad), divisor)]  # fmt: skip
    if kind in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d):
        return [AdaptiveAvgPool(1 if kind is nn.AdaptiveAvgPool1d else 2, hashable(m.output_size))]
    if kind in (nn.Softmax, nn.LogSoftmax):
        return softmax_steps(m.dim, kind is nn.LogSoftmax)
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
    if kind is nn.SELU:
        return [Activation("scaled_elu", (SELU_ALPHA, SELU_SCALE, 1.0))]
    if kind is nn.CELU:
        return [Activation("scaled_elu", (float(m.alpha), 1.0, 1.0 / float(m.alpha)))]
    if kind is nn.Hardsigmoid:
        return hardsigmoid_steps()
    if kind is nn.PReLU:
        return [PReLU(getter(m, "weight"), id(m))]
    if kind is nn.GLU:
        return glu_steps(m.dim)
    return None


def hardsigmoid_steps() -> list[Step]:
    """Hardsigmoid, ``relu6(x + 3) / 6``, as the Hardtanh between 0 and 1 of ``x / 6 + 1/2``
    (whose kinks smoothing then rounds)."""
    return [Scale(1 / 6, 0.5), Activation("hardtanh", (0.0, 1.0))]


def glu_steps(dim: object) -> list[Step] | None:
    """GLU over ``dim`` of the batch (an axis of each point): ``a * sigmoid(b)`` of the two halves,
    as a product of two chains (``Part`` pieces); else None."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim == 0:
        return None
    gate = (Part("chunk", 2, dim, 1), Activation("sigmoid"))
    return [Branches((Part("chunk", 2, dim, 0),), gate, "product")]


def softmax_steps(dim: object, log: bool) -> list[Step] | None:
    """Softmax (``log``: LogSoftmax) over ``dim`` of the batch, if that is an axis of each point
    (``dim >= 1`` or -1; an implicit dim (None) may be the batch's): else None."""
    if not isinstance(dim, int) or isinstance(dim, bool) or not (dim >= 1 or dim == -1):
        return None
    return [Softmax(dim, log)]


def _conv_steps(m: nn.Module) -> list[Step] | None:
    n = len(m.kernel_size)
    transposed = layer_type(m) in _CONVS_T
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
