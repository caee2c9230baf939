"""The stacked forward mode of convolutional decoders (``fastgeo.decoders``).

``value_and_tangents(fn, z, tangents)`` gives ``fn(z)`` (P, F) and ``J(z_p) t_{i,p}`` (k, P, F)
for any k directions per point; ``jacobian_rows`` is its case of the d coordinate axes.
Checked against oracles that share no code with the stacked forward mode (dual tensors of
``torch.autograd.forward_ad`` one direction at a time, ``torch.func.jvp`` under ``vmap`` for the
d axes of large decoders, ``torch.func.jacrev`` point by point), float64 to 1e-10 and float32 to
1e-5 of the largest entry:

- every layer kind, between an ELU and a Tanh: Conv2d / ConvTranspose2d (strides, padding,
  'same', padding modes, output_padding, dilation, groups, no bias), Conv1d / ConvTranspose1d,
  Upsample (nearest, nearest-exact, bilinear with and without align_corners, bicubic, scale
  factor or size), BatchNorm1d / 2d with non-trivial running statistics, GroupNorm, LayerNorm
  (over the last one to three axes, with and without weight and bias), padding layers,
  Flatten / Unflatten, Dropout (eval), Identity, every activation;
- whole decoders (28x28 and 64x64x3 outputs, d = 5, 16, 32) as an ``nn.Sequential``, a
  ``torch.export`` graph (decomposed too), a custom ``nn.Module`` (``torch.fx`` tracing), and
  saved generator files; arbitrary directions (k != d, k = 0); P = 0 and P = 1; large P in chunks;
- what is not recognized (training-mode BatchNorm and Dropout, hooks, unknown layers and
  functions, residual connections, untraceable forwards) falls back and is still correct;
- structure changes after a first call are seen; a custom module is traced once per structure;
- a decoder that raises raises to the user (its own error, from a plain call), and one whose
  output is not (P, F) gets a ValueError.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from helpers import assert_close_rel, randn
from torch import nn
from torch.nn.utils import parametrizations

import fastgeo
from fastgeo.decoders import (
    forward_mode,
    generic_value_and_tangents,
    jacobian_rows,
    recognize,
    stacked_chain,
    value_and_tangents,
)
from fastgeo.decoders.steps import Conv, GroupNorm, Upsample

F64 = torch.float64
F32_TOL = 1e-5
C, H = 4, 6  # channels and side of the feature map every single-layer case starts from


def init_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Seeded N(0, scale^2) parameters (norm weights 1 + N(0, scale^2)) and non-trivial running
    statistics; eval mode, float64."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=F64))
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.add_(1.0)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g, dtype=F64))
    return module.double().eval()


def reference(fn, z: torch.Tensor, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value (P, F) and directional derivatives (k, P, F) by forward-mode AD with dual tensors
    (``torch.autograd.forward_ad``), one direction at a time."""
    with torch.no_grad():
        value = fn(z)
    outs = []
    with fwAD.dual_level():
        for t in tangents:
            outs.append(fwAD.unpack_dual(fn(fwAD.make_dual(z, t))).tangent)
    return value, torch.stack(outs) if outs else value.new_empty(0, *value.shape)


def jacrev_rows(fn, z: torch.Tensor) -> torch.Tensor:
    """Jacobian rows (d, P, F) by reverse mode (torch.func.jacrev), point by point."""
    rows = [torch.func.jacrev(lambda x: fn(x[None])[0])(z[p]) for p in range(z.shape[0])]  # (F, d) each
    return torch.stack(rows).permute(2, 0, 1)


def axes(z: torch.Tensor) -> torch.Tensor:
    P, d = z.shape
    return torch.eye(d, dtype=z.dtype)[:, None, :].expand(d, P, d)


def check(fn, z: torch.Tensor, tangents: torch.Tensor | None = None, recognized: bool = True,
          rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """value_and_tangents(fn, z, tangents) (default: the d axes) equals forward-mode AD to
    ``rtol`` of the largest entry (dual tensors, one direction at a time, for k <= 3; else
    torch.func.jvp vectorized by vmap: float64 convolutions under forward-mode AD take a slow
    path), and fn is (or is not) recognized; returns the fast result."""
    tangents = axes(z) if tangents is None else tangents
    assert (stacked_chain(fn, z[:4]) is not None) == recognized
    value, out = value_and_tangents(fn, z, tangents)
    oracle = reference if tangents.shape[0] <= 3 else generic_value_and_tangents
    value_ref, out_ref = oracle(fn, z, tangents)
    assert value.shape == value_ref.shape and out.shape == (tangents.shape[0], *value_ref.shape)
    assert value.dtype == out.dtype == z.dtype
    assert_close_rel(value, value_ref, rtol)
    assert_close_rel(out, out_ref, rtol)
    return value, out


# ----------------------------------------------------------------------------- single layers

LAYERS = {
    "conv_k3": lambda: nn.Conv2d(C, 6, 3),
    "conv_stride2_pad1": lambda: nn.Conv2d(C, 6, 3, stride=2, padding=1),
    "conv_dilation2": lambda: nn.Conv2d(C, 6, 3, dilation=2, padding=2),
    "conv_groups2_nobias": lambda: nn.Conv2d(C, 6, 3, padding=1, groups=2, bias=False),
    "conv_rect": lambda: nn.Conv2d(C, 6, (3, 2), stride=(2, 1), padding=(1, 0)),
    "conv_same_k4_reflect": lambda: nn.Conv2d(C, 6, 4, padding="same", padding_mode="reflect"),
    "conv_circular": lambda: nn.Conv2d(C, 6, 3, padding=1, padding_mode="circular"),
    "conv_replicate_s2": lambda: nn.Conv2d(C, 6, 3, stride=2, padding=2, padding_mode="replicate"),
    "convT_k4s2p1": lambda: nn.ConvTranspose2d(C, 6, 4, 2, 1),
    "convT_output_padding": lambda: nn.ConvTranspose2d(C, 6, 3, stride=2, padding=1, output_padding=1),
    "convT_dilation_groups_nobias": lambda: nn.ConvTranspose2d(
        C, 6, 3, stride=3, padding=2, output_padding=2, dilation=2, groups=2, bias=False
    ),
    "up_nearest_x2": lambda: nn.Upsample(scale_factor=2),
    "up_nearest_size": lambda: nn.Upsample(size=(9, 11)),
    "up_nearest_exact": lambda: nn.Upsample(scale_factor=1.7, mode="nearest-exact"),
    "up_bilinear": lambda: nn.Upsample(scale_factor=2, mode="bilinear"),
    "up_bilinear_align": lambda: nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True),
    "up_bilinear_size": lambda: nn.Upsample(size=(10, 7), mode="bilinear"),
    "up_bicubic": lambda: nn.Upsample(scale_factor=2, mode="bicubic"),
    "upsampling_bilinear2d": lambda: nn.UpsamplingBilinear2d(scale_factor=2),
    "batchnorm2d": lambda: nn.BatchNorm2d(C),
    "batchnorm2d_no_affine": lambda: nn.BatchNorm2d(C, affine=False, eps=1e-3),
    "groupnorm2": lambda: nn.GroupNorm(2, C),
    "groupnorm1_no_affine": lambda: nn.GroupNorm(1, C, affine=False),
    "groupnorm4_eps": lambda: nn.GroupNorm(C, C, eps=1e-3),
    "layernorm_spatial": lambda: nn.LayerNorm([H, H]),
    "layernorm_all_no_affine": lambda: nn.LayerNorm([C, H, H], elementwise_affine=False, eps=1e-3),
    "layernorm_last_no_bias": lambda: nn.LayerNorm(H, bias=False),
    "zero_pad": lambda: nn.ZeroPad2d((1, 2, 0, 1)),
    "reflection_pad": lambda: nn.ReflectionPad2d(1),
    "replication_pad": lambda: nn.ReplicationPad2d((2, 0, 1, 1)),
    "flatten_unflatten": lambda: nn.Sequential(nn.Flatten(2), nn.Unflatten(2, (H, H))),
    "dropout_identity": lambda: nn.Sequential(nn.Dropout(0.3), nn.Dropout2d(0.5), nn.Identity()),
    "elu": lambda: nn.ELU(),
    "elu_alpha0.5": lambda: nn.ELU(alpha=0.5),
    "relu": lambda: nn.ReLU(),
    "leaky_relu0.1": lambda: nn.LeakyReLU(0.1),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "softplus_b2_t1": lambda: nn.Softplus(beta=2, threshold=1),
    "silu": lambda: nn.SiLU(),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "hardtanh": lambda: nn.Hardtanh(-0.3, 0.5),
    "relu6": lambda: nn.ReLU6(),
    "instancenorm": lambda: nn.InstanceNorm2d(C),
    "instancenorm_affine": lambda: nn.InstanceNorm2d(C, affine=True, eps=1e-3),
    "instancenorm_running_stats": lambda: _running(nn.InstanceNorm2d(C, track_running_stats=True)),
    "pixel_shuffle": lambda: nn.Sequential(nn.Conv2d(C, 4 * C, 1), nn.PixelShuffle(2)),
    "pixel_unshuffle": lambda: nn.PixelUnshuffle(2),
    "avg_pool2": lambda: nn.AvgPool2d(2),
    "avg_pool_k3s2p1_ceil": lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    "avg_pool_divisor": lambda: nn.AvgPool2d((2, 3), divisor_override=4),
    "adaptive_avg_pool": lambda: nn.AdaptiveAvgPool2d(3),
    "adaptive_avg_pool_uneven": lambda: nn.AdaptiveAvgPool2d((4, None)),
    "softmax_channels": lambda: nn.Softmax(dim=1),
    "softmax_last": lambda: nn.Softmax(dim=-1),
    "log_softmax_channels": lambda: nn.LogSoftmax(dim=1),
    "prelu_channels": lambda: nn.PReLU(C),
    "prelu_one": lambda: nn.PReLU(init=0.1),
    "mish": lambda: nn.Mish(),
    "selu": lambda: nn.SELU(),
    # torch's own CELU derivative takes 1 / alpha in float32: an alpha whose inverse is exact
    "celu0.5": lambda: nn.CELU(0.5),
    "hardswish": lambda: nn.Hardswish(),
    "hardsigmoid": lambda: nn.Hardsigmoid(),
    "softsign": lambda: nn.Softsign(),
    "logsigmoid": lambda: nn.LogSigmoid(),
    "tanhshrink": lambda: nn.Tanhshrink(),
    # parametrized weights, read as the layer computes them
    "weight_norm_conv": lambda: parametrizations.weight_norm(nn.Conv2d(C, C, 3, padding=1)),
}


# torch's own derivative of Hardsigmoid multiplies by 1/6 rounded to float32 (3e-8 relative)
TORCH_ROUNDS = {"hardsigmoid": 1e-7}


def _running(norm: nn.Module) -> nn.Module:
    """A norm layer with non-trivial running statistics (used in eval mode)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=g))
        norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=g))
    return norm


def around(layer: nn.Module, d: int = 3) -> nn.Sequential:
    """Linear(d, C H H) - ELU - Unflatten - layer - Tanh - Flatten: the layer sees points that
    vary nonlinearly with z."""
    head = [nn.Linear(d, C * H * H), nn.ELU(), nn.Unflatten(1, (C, H, H))]
    return init_(nn.Sequential(*head, layer, nn.Tanh(), nn.Flatten()), scale=1.0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_float64(name):
    """Each layer kind: recognized; the Jacobian rows and the derivatives along k = 2 random
    directions equal jvp to 1e-10 (float64)."""
    model = around(LAYERS[name]())
    z = randn(5, 3, scale=1.5)
    rtol = TORCH_ROUNDS.get(name, 1e-10)
    _, jac = check(model, z, rtol=rtol)
    assert float(jac.abs().max()) > 1e-3
    check(model, z, randn(2, 5, 3, seed=7), rtol=rtol)


def test_layers_against_reverse_mode():
    """Independent oracle: torch.func.jacrev, point by point, through a chain of every linear
    layer kind (strided, dilated, grouped, transposed convolutions, both normalizations,
    upsampling, padding)."""
    model = init_(nn.Sequential(
        nn.Linear(3, 2 * 16), nn.ELU(), nn.Unflatten(1, (2, 4, 4)),
        nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2), nn.BatchNorm2d(4),
        nn.SiLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="reflect", bias=False), nn.GroupNorm(2, 4),
        nn.Tanh(), nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True), nn.ZeroPad2d(1),
        nn.Conv2d(4, 2, 3, stride=2), nn.Softplus(), nn.Flatten(),
    ), scale=1.0)  # fmt: skip
    z = randn(3, 3, scale=1.5)
    _, jac = jacobian_rows(model, z)
    assert stacked_chain(model, z) is not None
    assert_close_rel(jac, jacrev_rows(model, z), 1e-10)


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_float32(name):
    """float32: the stacked forward mode and jvp agree to 1e-5 of the largest entry."""
    model = around(LAYERS[name]()).float()
    check(model, randn(5, 3, scale=1.5, dtype=torch.float32), rtol=F32_TOL)


def test_conv1d_batchnorm1d_chain():
    """Conv1d, BatchNorm1d on (C, L) and on vectors, ConvTranspose1d."""
    model = init_(nn.Sequential(
        nn.Linear(3, 16), nn.BatchNorm1d(16), nn.SiLU(), nn.Unflatten(1, (4, 4)),
        nn.Conv1d(4, 6, 3, stride=2, padding=1), nn.BatchNorm1d(6), nn.ELU(),
        nn.ConvTranspose1d(6, 2, 4, 2, 1, bias=False), nn.Flatten(),
    ), scale=1.0)  # fmt: skip
    z = randn(6, 3, scale=1.5)
    _, jac = check(model, z)
    assert_close_rel(jac, jacrev_rows(model, z), 1e-10)


def test_settings_read_into_steps():
    """The settings of a layer become its step: strides, padding, output padding, dilation,
    groups, modes."""
    model = around(nn.Sequential(
        nn.ConvTranspose2d(C, 4, 3, stride=3, padding=2, output_padding=2, dilation=2, groups=2),
        nn.GroupNorm(2, 4, eps=1e-3), nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=True),
    ))  # fmt: skip
    steps = recognize.recognize(model)[0]
    conv = next(s for s in steps if isinstance(s, Conv))
    assert (conv.stride, conv.padding, conv.output_padding, conv.dilation, conv.groups, conv.transposed) == (
        (3, 3), (2, 2), (2, 2), (2, 2), 2, True)  # fmt: skip
    assert next(s for s in steps if isinstance(s, GroupNorm)).eps == 1e-3
    up = next(s for s in steps if isinstance(s, Upsample))
    assert (up.scale_factor, up.mode, up.align_corners) == (0.5, "bilinear", True)


# ----------------------------------------------------------------------------- whole decoders


def mnist_sequential(d: int, c: int = 4) -> nn.Sequential:
    """(P, d) -> (P, 784): Linear - ELU - Unflatten - ConvT (7 -> 14) - BatchNorm - ELU - ConvT
    (14 -> 28) - Sigmoid - Flatten."""
    return init_(nn.Sequential(
        nn.Linear(d, 2 * c * 7 * 7), nn.ELU(), nn.Unflatten(1, (2 * c, 7, 7)),
        nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ELU(),
        nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid(), nn.Flatten(),
    ))  # fmt: skip


def rgb64_sequential(d: int, c: int = 2) -> nn.Sequential:
    """(P, d) -> (P, 3 * 64 * 64): 4x4 -> 8 (ConvT) -> 16 (bilinear Upsample) -> 32 (ConvT)
    -> 64 (ConvT) with GroupNorm, SiLU, LeakyReLU, ELU, Sigmoid."""
    return init_(nn.Sequential(
        nn.Linear(d, 4 * c * 16), nn.Unflatten(1, (4 * c, 4, 4)), nn.SiLU(),
        nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.GroupNorm(2, 2 * c), nn.SiLU(),
        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(2 * c, c, 3, padding=1), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(c, c, 4, 2, 1), nn.ELU(), nn.ConvTranspose2d(c, 3, 4, 2, 1), nn.Sigmoid(),
        nn.Flatten(),
    ))  # fmt: skip


class MnistDecoder(nn.Module):
    """A custom decoder class: ``fc``, ``.view(-1, C, 7, 7)``, a deconvolution stack, then
    ``torch.sigmoid`` and ``.flatten(1)``."""

    def __init__(self, d: int, c: int = 4) -> None:
        super().__init__()
        self.c = 2 * c
        self.fc = nn.Linear(d, 2 * c * 7 * 7)
        self.deconv = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ELU(),
                                    nn.ConvTranspose2d(c, 1, 4, 2, 1))  # fmt: skip

    def forward(self, z):
        h = F.elu(self.fc(z)).view(-1, self.c, 7, 7)
        return torch.sigmoid(self.deconv(h)).flatten(1)


class Rgb64Decoder(nn.Module):
    """A custom decoder with functional activations, ``x.size(0)`` / ``x.shape[0]`` reshapes,
    ``F.interpolate`` and ``torch.flatten``."""

    def __init__(self, d: int, c: int = 2) -> None:
        super().__init__()
        self.alpha = 0.7
        self.fc = nn.Linear(d, 4 * c * 16)
        self.up1 = nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1)
        self.norm = nn.GroupNorm(2, 2 * c)
        self.conv = nn.Conv2d(2 * c, c, 3, padding=1, bias=False)
        self.up2 = nn.ConvTranspose2d(c, c, 4, 2, 1)
        self.out = nn.ConvTranspose2d(c, 3, 4, 2, 1)

    def forward(self, z):
        h = F.silu(self.fc(z)).reshape(z.size(0), -1, 4, 4)
        h = torch.relu(self.norm(self.up1(h)))
        h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
        h = F.leaky_relu(self.conv(h), 0.2).view(h.shape[0], -1, 16, 16)
        h = F.elu(self.up2(h), alpha=self.alpha)
        return torch.flatten(torch.sigmoid(self.out(h)), 1)


def exported(model: nn.Module, d: int) -> nn.Module:
    batch = ({0: torch.export.Dim("P", min=0)},)
    return torch.export.export(model, (randn(3, d),), dynamic_shapes=batch).module()


def check_forms(model: nn.Module, d: int, found: Callable[[nn.Module, torch.Tensor], object]) -> None:
    """A float64 decoder traced and exported: recognized, with ``found(fn, z)`` true (the steps
    the case is about), values and directional derivatives equal forward-mode AD to 1e-10; a
    float32 copy to F32_TOL."""
    z = randn(7, d, seed=1, scale=1.5)
    assert found(model, z)
    check(model, z)
    gm = exported(model, d).double()
    z = randn(6, d, seed=2, scale=1.5)
    assert found(gm, z)
    check(gm, z)
    check(copy.deepcopy(model).float(), randn(9, d, dtype=torch.float32, seed=3), rtol=F32_TOL)


class LayerNormGeluDecoder(nn.Module):
    """A custom MLP decoder with LayerNorm and functional GELU (tanh), ReLU6 and Hardtanh."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.norm, self.fc2 = nn.Linear(d, 24), nn.LayerNorm(24), nn.Linear(24, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, z):
        h = F.gelu(self.norm(self.fc(z)), approximate="tanh")
        h = F.relu6(self.fc2(h))
        return F.hardtanh(self.fc3(h), -1.5, 1.5)


class ShuffleSoftmaxDecoder(nn.Module):
    """A custom decoder of categorical images: functional Mish, SELU, Hardswish, pixel shuffle,
    average pooling and a log-softmax over the classes (channels), as torch.export keeps them."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 8 * 16)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.prelu = nn.PReLU(4)
        self.out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, z):
        h = F.mish(self.fc(z)).view(-1, 8, 4, 4)
        h = F.selu(F.pixel_shuffle(self.conv(h), 2))  # (4, 8, 8)
        h = F.hardswish(self.prelu(F.avg_pool2d(h, 2)))  # (4, 4, 4)
        h = F.pixel_unshuffle(F.celu(h, 0.5), 2)  # (16, 2, 2)
        h = F.pixel_shuffle(torch.special.expit(h), 2)
        return torch.log_softmax(self.out(h), dim=1).flatten(1)


class SequenceDecoder(nn.Module):
    """A custom decoder of sequences (a protein-like 21-letter alphabet over 12 positions): Conv1d
    with InstanceNorm1d, functional soft activations and a softmax over the letters (method)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 6 * 12)
        self.norm = nn.InstanceNorm1d(6, affine=True)
        self.conv = nn.Conv1d(6, 21, 3, padding=1)

    def forward(self, z):
        h = self.norm(self.fc(z).reshape(z.shape[0], 6, 12))
        h = F.tanhshrink(F.softsign(F.logsigmoid(h) + 1.0))
        return self.conv(h).softmax(1).flatten(1)


def instance_norms(d: int) -> nn.Module:
    """InstanceNorm2d with its instance statistics and with running ones (eval mode), side by side."""
    return nn.Sequential(
        nn.Linear(d, C * 16), nn.Unflatten(1, (C, 4, 4)), nn.InstanceNorm2d(C, affine=True), nn.Tanh(),
        nn.Conv2d(C, 2 * C, 3, padding=1), _running(nn.InstanceNorm2d(2 * C, track_running_stats=True)),
        nn.Flatten(),
    )  # fmt: skip


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(x))))``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.GroupNorm(2, c)

    def forward(self, x):
        return x + self.c2(F.silu(self.norm(self.c1(x))))


class UpBlock(nn.Module):
    """A projection shortcut: ``elu(convT(x)) + conv1x1(upsample(x))``."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(a, b, 4, 2, 1)
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 1))

    def forward(self, x):
        return F.elu(self.up(x)) + self.shortcut(x)


class ResNetDecoder(nn.Module):
    """A residual decoder (P, d) -> (P, 784): a residual MLP on the code, residual conv blocks
    (nested: a block inside a block), a projection shortcut, ``torch.add`` and ``+``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lift = nn.Linear(d, d)
        self.fc = nn.Linear(d, 8 * 7 * 7)
        self.block1 = ResBlock(8)
        self.up1, self.up2 = UpBlock(8, 4), UpBlock(4, 4)
        self.inner = nn.Sequential(ResBlock(4), nn.Tanh())
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, z):
        z = torch.add(z, torch.tanh(self.lift(z)))
        h = self.block1(self.fc(z).view(z.size(0), 8, 7, 7))
        h = self.up1(h)
        h = h + self.inner(h)  # a block whose residual branch holds a block
        return torch.sigmoid(self.out(self.up2(h))).flatten(1)


class ClampDecoder(nn.Module):
    """Clamps by constants: both sides (a method), one side (``torch.clamp(min=)``, ``clamp_max``),
    ``torch.clip``: Hardtanh steps with an infinite side."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.fc2, self.fc3 = nn.Linear(d, 24), nn.Linear(24, 16), nn.Linear(16, 10)

    def forward(self, z):
        h = self.fc2(self.fc(z).clamp(-0.5, 0.8))
        h = self.fc3(torch.clamp(h, min=-0.2).clamp_max(0.9))
        return torch.clip(h, 0.0, 1.0)


class HeadsDecoder(nn.Module):
    """Output heads side by side (a mixed-type decoder: intensities, a categorical part and a
    linear one), and a channel concatenation: ``torch.cat`` joins of two and of three chains."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * 3 * 3)
        self.conv = nn.Conv2d(4, 2, 3, padding=1)
        self.a, self.b, self.c = nn.Linear(54, 5), nn.Linear(54, 7), nn.Linear(54, 3)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, 4, 3, 3)
        h = torch.cat([h, F.elu(self.conv(h))], dim=1).flatten(1)  # (P, 6 * 3 * 3)
        return torch.cat((torch.sigmoid(self.a(h)), torch.softmax(self.b(h), -1), self.c(h)), -1)


class AxesDecoder(nn.Module):
    """The point's axes rearranged: a (P, 5, 8) sequence permuted for a Conv1d and back
    (``permute``, ``transpose``, ``torch.transpose`` with negative axes), a Linear over its last
    axis, and a map given a channel axis for a Conv2d (``unsqueeze``; ``squeeze`` of a size-1
    axis)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.conv1 = nn.Linear(d, 40), nn.Conv1d(8, 4, 3, padding=1)
        self.per, self.conv2 = nn.Linear(5, 6), nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, 5, 8).permute(0, 2, 1)
        h = torch.transpose(self.conv1(h).transpose(1, 2), -1, -2)  # (P, 4, 5)
        h = torch.sigmoid(self.per(h)).unsqueeze(1)  # (P, 1, 4, 6)
        return torch.unsqueeze(self.conv2(h).flatten(1), -1).squeeze(-1)


class GatedDecoder(nn.Module):
    """Gates (P, d) -> (P, 784): swish written out (``h * sigmoid(h)``), a gate per pixel
    (``h * sigmoid(conv(h))``), a gate per channel (squeeze-excitation: broadcast over the map)
    and a product of two chains (``tanh(conv(x)) * sigmoid(conv(x))``, a GLU-like gate)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * 7 * 7)
        self.gate = nn.Conv2d(4, 4, 3, padding=1)
        self.squeeze = nn.Sequential(nn.AvgPool2d(7), nn.Conv2d(4, 4, 1))
        self.up = nn.ConvTranspose2d(4, 4, 4, 2, 1)
        self.value, self.weight = nn.Conv2d(4, 2, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)
        self.out = nn.ConvTranspose2d(2, 1, 4, 2, 1)

    def forward(self, z):
        h = self.fc(z)
        h = (h * torch.sigmoid(h)).view(-1, 4, 7, 7)
        h = h * torch.sigmoid(self.gate(h))
        h = h * torch.sigmoid(self.squeeze(h))
        h = F.elu(self.up(h))
        h = torch.tanh(self.value(h)) * torch.sigmoid(self.weight(h))
        return torch.sigmoid(self.out(h)).flatten(1)


DECODERS = {
    "mnist_sequential_d5": (lambda: mnist_sequential(5), 5, 784),
    "mnist_exported_d16": (lambda: exported(mnist_sequential(16), 16), 16, 784),
    "mnist_custom_d8": (lambda: init_(MnistDecoder(8)), 8, 784),
    "mnist_custom_exported_d5": (lambda: exported(init_(MnistDecoder(5)), 5), 5, 784),
    "rgb64_sequential_d32": (lambda: rgb64_sequential(32), 32, 12288),
    "rgb64_custom_d32": (lambda: init_(Rgb64Decoder(32)), 32, 12288),
    "rgb64_exported_d6": (lambda: exported(init_(Rgb64Decoder(6)), 6), 6, 12288),
    "layernorm_gelu_custom_d7": (lambda: init_(LayerNormGeluDecoder(7)), 7, 10),
    "layernorm_gelu_exported_d4": (lambda: exported(init_(LayerNormGeluDecoder(4)), 4), 4, 10),
    "shuffle_softmax_custom_d6": (lambda: init_(ShuffleSoftmaxDecoder(6)), 6, 48),
    "shuffle_softmax_exported_d5": (lambda: exported(init_(ShuffleSoftmaxDecoder(5)), 5), 5, 48),
    "sequence_custom_d8": (lambda: init_(SequenceDecoder(8)), 8, 21 * 12),
    "instancenorm_running_exported_d4": (lambda: exported(init_(instance_norms(4)), 4), 4, 2 * C * 16),
    "resnet_custom_d6": (lambda: init_(ResNetDecoder(6)), 6, 784),
    "resnet_exported_d5": (lambda: exported(init_(ResNetDecoder(5)), 5), 5, 784),
    "residual_custom_d3": (lambda: init_(Residual()), 3, C * H * H),
    "gated_custom_d5": (lambda: init_(GatedDecoder(5)), 5, 784),
    "clamp_custom_d4": (lambda: init_(ClampDecoder(4), scale=1.0), 4, 10),
    "clamp_exported_d3": (lambda: exported(init_(ClampDecoder(3), scale=1.0), 3), 3, 10),
    "gated_exported_d4": (lambda: exported(init_(GatedDecoder(4)), 4), 4, 784),
    "gate_custom_d3": (lambda: init_(Gated()), 3, C * H * H),
    "concatenated_custom_d3": (lambda: init_(Concatenated()), 3, 2 * C * H * H),
    "heads_custom_d4": (lambda: init_(HeadsDecoder(4), scale=1.0), 4, 15),
    "axes_custom_d3": (lambda: init_(AxesDecoder(3), scale=1.0), 3, 48),
    "axes_exported_d4": (lambda: exported(init_(AxesDecoder(4), scale=1.0), 4), 4, 48),
    "heads_exported_d3": (lambda: exported(init_(HeadsDecoder(3), scale=1.0), 3), 3, 15),
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_jacobian_and_arbitrary_directions(name):
    """Whole decoders in every form: recognized; Jacobian rows and k = 2 (!= d) random
    directions per point equal forward-mode AD to 1e-10; k = 0 directions give (0, P, F);
    P = 1 works."""
    make, d, D = DECODERS[name]
    model = make()
    z = randn(3, d, scale=1.5)
    value, jac = check(model, z)
    assert value.shape == (3, D) and jac.shape == (d, 3, D)
    check(model, z, randn(2, 3, d, seed=5))
    value0, out0 = value_and_tangents(model, z, z.new_empty(0, 3, d))
    assert out0.shape == (0, 3, D)
    assert_close_rel(value0, value, 1e-12)
    check(model, z[:1], randn(1, 1, d, seed=6))


class HardsigmoidDecoder(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.fc2 = nn.Linear(d, 16), nn.Linear(16, 10)

    def forward(self, z):
        return F.hardsigmoid(self.fc2(F.celu(self.fc(z), 0.7)) * 3.0)


@pytest.mark.parametrize("form", ["custom", "exported"])
def test_functional_hardsigmoid_and_celu(form):
    """F.hardsigmoid (a Hardtanh of x / 6 + 1/2) and F.celu with any alpha, traced and exported:
    recognized, and equal to torch's derivatives to 1e-7 (torch's own take 1/6 and 1/alpha in
    float32)."""
    model = init_(HardsigmoidDecoder(4), scale=1.0)
    model = exported(model, 4) if form == "exported" else model
    _, jac = check(model, randn(6, 4, scale=1.5), rtol=1e-7)
    assert float(jac.abs().max()) > 1e-3


DECOMPOSED = {
    "mnist_sequential": lambda: mnist_sequential(5),
    "mnist_custom": lambda: init_(MnistDecoder(5)),
    "groupnorm_upsample": lambda: around(nn.Sequential(nn.GroupNorm(2, C), nn.Upsample(scale_factor=2))),
    "layernorm_gelu": lambda: init_(LayerNormGeluDecoder(5)),
    "residual": lambda: init_(Residual()),
    "resnet": lambda: init_(ResNetDecoder(5)),  # SiLU decomposes into x * sigmoid(x): a gate
    "gated": lambda: init_(GatedDecoder(5)),
    "heads": lambda: init_(HeadsDecoder(5)),
}


@pytest.mark.parametrize("name", list(DECOMPOSED))
def test_decomposed_export_graph(name):
    """torch.export graphs after run_decompositions() (addmm of a permuted weight, convolution,
    _native_batch_norm_legit_no_training and native_group_norm with getitem) are chains too."""
    model = DECOMPOSED[name]()
    d = model[0].in_features if isinstance(model, nn.Sequential) else model.fc.in_features
    d = model.lift.in_features if isinstance(model, ResNetDecoder) else d
    batch = ({0: torch.export.Dim("P", min=0)},)
    gm = torch.export.export(model, (randn(3, d),), dynamic_shapes=batch).run_decompositions().module()
    targets = {n.target for n in gm.graph.nodes}
    assert torch.ops.aten.addmm.default in targets and torch.ops.aten.linear.default not in targets
    check(gm, randn(4, d, scale=1.5))


@pytest.mark.parametrize("name", ["mnist_sequential_d5", "mnist_exported_d16", "mnist_custom_d8"])
def test_decoder_float32(name):
    make, d, _ = DECODERS[name]
    check(make().float(), randn(4, d, scale=1.5, dtype=torch.float32), rtol=F32_TOL)


@pytest.mark.parametrize("name", ["mnist_sequential_d5", "mnist_exported_d16", "mnist_custom_d8"])
def test_empty_batch(name):
    """P = 0: value (0, F) and derivatives (k, 0, F), before and after the chain is cached."""
    make, d, D = DECODERS[name]
    model = make()
    for _ in range(2):
        value, out = value_and_tangents(model, randn(0, d), randn(2, 0, d))
        assert value.shape == (0, D) and out.shape == (2, 0, D)
        value, jac = jacobian_rows(model, randn(0, d))
        assert value.shape == (0, D) and jac.shape == (d, 0, D)
        jacobian_rows(model, randn(4, d))  # caches the chain


@pytest.mark.parametrize("recognized", [True, False])
def test_decoder_that_refuses_an_empty_batch(recognized):
    """InstanceNorm raises on an empty batch (torch's own IndexError): fastgeo never hands the
    decoder one (the solver decodes empty sets of curves, e.g. when no race is close), in the
    stacked forward mode or not; decode of no points is still a function of them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, C * 16), nn.Unflatten(1, (C, 4, 4)), nn.InstanceNorm2d(C, affine=True),
                        nn.ELU(), nn.Flatten()).eval()  # fmt: skip
    with pytest.raises(IndexError):
        net(torch.zeros(0, 4))
    mean = net if recognized else (lambda z: net(z))
    z = torch.randn(40, 4)
    with torch.no_grad():
        x = net(z) + 0.01 * torch.randn(40, C * 16)
    prec = fastgeo.RBFPrecision.fit(z, x, net, num_centers=6, steps=10, progress=False)
    metric = fastgeo.ExpectedMetric(mean, prec)
    none = torch.zeros(0, 4, requires_grad=True)
    assert metric.decode(none).shape == (0, C * 16)
    assert torch.autograd.grad(metric.decode(none).sum(), none)[0].shape == (0, 4)
    features, jac_t = metric.features_and_jacobian_t(none.detach())
    assert features.shape == (0, 2 * C * 16) and jac_t.shape == (0, 4, 2 * C * 16)
    value, out = value_and_tangents(mean, none.detach(), torch.zeros(3, 0, 4))
    assert value.shape == (0, C * 16) and out.shape == (3, 0, C * 16)
    res = fastgeo.geodesics(metric, z[:3], z[3:6], method="fast")
    assert bool(torch.isfinite(res.lengths).all())


def test_large_batches_in_chunks(monkeypatch):
    """Points are taken in chunks when the stack would be large: same result to rounding."""
    model = mnist_sequential(5)
    z = randn(11, 5)
    whole = value_and_tangents(model, z, axes(z))
    monkeypatch.setitem(forward_mode.CHUNK_BYTES, "cpu", 1)  # one point per chunk
    chunked = value_and_tangents(model, z, axes(z))
    for a, b in zip(whole, chunked, strict=True):
        assert_close_rel(b, a, 1e-14)


class WideBranch(nn.Module):
    """``h + W2 tanh(W1 h)`` with W1 widening 10 -> 96: the widest stack is inside the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.wide = nn.Linear(10, 96)
        self.back = nn.Linear(96, 10)

    def forward(self, z):
        h = torch.tanh(self.fc(z))
        return h + self.back(torch.tanh(self.wide(h)))


def test_chunks_count_what_a_residual_branch_holds(monkeypatch):
    """The chunks of points are sized by the elements per point held at once, the stacks inside
    a residual branch and the input it waits beside included (a branch wider than the chain's
    outputs once went uncounted); chunked values equal the whole batch's."""
    model = init_(WideBranch())
    z = randn(9, 3)
    chain = stacked_chain(model, z[:4])
    assert chain is not None
    whole = chain.value_and_tangents(z, axes(z))
    assert chain.widest == 10 + 96  # the branch's widest stack beside its input h
    monkeypatch.setitem(forward_mode.CHUNK_BYTES, "cpu", 4 * 106 * z.element_size() * 2)  # 2 points
    rows: list[int] = []
    real = forward_mode.StackedChain._stacked

    def counted(self, x):
        rows.append(x.shape[1])
        return real(self, x)

    monkeypatch.setattr(forward_mode.StackedChain, "_stacked", counted)
    chunked = chain.value_and_tangents(z, axes(z))
    assert max(rows) == 2
    for a, b in zip(whole, chunked, strict=True):
        assert_close_rel(b, a, 1e-14)


@pytest.mark.parametrize("recognized", [True, False])
def test_metric_decodes_long_inputs_in_chunks(monkeypatch, recognized):
    """ExpectedMetric.decode (and so length, energy, features) calls the mean on chunks whose
    widest activation fits DECODE_BYTES (conv activations are many times D; 32 x 1024 points
    of an MNIST conv decoder once asked for 29 GB): same values, no call over the chunk size."""
    import fastgeo.metric as metric_module

    d = 5
    model = mnist_sequential(d)
    calls: list[int] = []

    def mean(z: torch.Tensor) -> torch.Tensor:
        calls.append(z.shape[0])
        return model(z)

    prec = fastgeo.RBFPrecision(randn(7, d), torch.ones(7, dtype=torch.float64), randn(784, 7).abs(), 0.1)
    metric = fastgeo.ExpectedMetric(model if recognized else mean, prec)
    z = randn(3, 100, d)
    whole = metric.decode(z)
    width = forward_mode.activation_width(model, z[0, :4]) if recognized else None
    assert (width is not None) == recognized and (width is None or width >= 784)
    monkeypatch.setattr(metric_module, "DECODE_BYTES", 1)
    monkeypatch.setattr(metric_module, "MIN_DECODE_ROWS", 64)
    if recognized:  # the module itself is the mean: its calls counted by a hook
        model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    calls.clear()
    chunked = metric.decode(z)
    assert_close_rel(chunked, whole, 1e-14)
    # each curve's 100 points padded to whole blocks of ROW_ALIGN rows, decoded 64 at a time
    padded = 3 * -(-100 // metric_module.ROW_ALIGN) * metric_module.ROW_ALIGN
    assert max(calls) == 64 and sum(calls) == padded, calls
    assert_close_rel(metric.length(z), fastgeo.ExpectedMetric(mean, prec).length(z), 1e-14)


@pytest.mark.parametrize("fmt", ["safe", "export"])
def test_saved_conv_generator_is_recognized(tmp_path, fmt):
    """A conv decoder saved with save_generator and loaded back (an nn.Sequential rebuilt from
    the safe format, or a FlatMean around an exported graph) takes the stacked forward mode."""
    mean = mnist_sequential(3)
    g = torch.Generator().manual_seed(0)
    precision = fastgeo.RBFPrecision(torch.randn(4, 3, generator=g, dtype=F64), torch.ones(4, dtype=F64),
                                     torch.rand(784, 4, generator=g, dtype=F64), 0.1)  # fmt: skip
    path = fastgeo.save_generator(tmp_path / f"g.{fmt}", (mean, precision), format=fmt)
    if fmt == "export":
        with pytest.warns(UserWarning, match="trusted code"):
            loaded = fastgeo.load_generator(path, trust=True)
    else:
        loaded = fastgeo.load_generator(path)
    z = randn(4, 3)
    _, jac = check(loaded.mean, z)
    assert_close_rel(jac, jacobian_rows(mean, z)[1], 1e-12)


# ----------------------------------------------------------------------------- not recognized


class Residual(nn.Module):
    """``h + conv(h)``: a residual block (recognized: the forks the others make are not)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C * H * H)
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return (h + self.conv(h)).flatten(1)


class Gated(Residual):
    """A fork joined by a product (a gate), not a sum: recognized too."""

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return (h * torch.sigmoid(self.conv(h))).flatten(1)


class Concatenated(Residual):
    """A fork joined by concatenating the channels: recognized too."""

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return torch.cat([h, self.conv(h)], dim=1).flatten(1)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C * H * H)
        self.conv = nn.Conv2d(C, 2, 3)

    def forward(self, z):
        h = self.fc(z).view(-1, C, H, H)
        if h.sum() > 0:  # control flow on values: tracing fails
            h = torch.tanh(h)
        return self.conv(h).flatten(1)


class MyConv(nn.Conv2d):
    """A subclass: not recognized as a layer, even with the same forward (its ops are read from
    torch.export's graph where the latent dimension is known)."""


def _training_batchnorm():
    return mnist_sequential(3).train()


def _hooked(where):
    model = mnist_sequential(3)
    if where == "child":
        model[3].register_forward_hook(lambda mod, inp, out: 2 * out)
    else:
        model.register_forward_pre_hook(lambda mod, inp: (0.5 * inp[0],))
    return model


def _hooked_custom_child():
    model = init_(MnistDecoder(3))
    model.deconv[1].register_forward_hook(lambda mod, inp, out: out + 0.1)
    return model


NOT_CHAINS = {
    "batchnorm_training": _training_batchnorm,
    "batchnorm_without_running_stats": lambda: around(nn.BatchNorm2d(C, track_running_stats=False)),
    "child_forward_hook": lambda: _hooked("child"),
    "forward_pre_hook": lambda: _hooked("pre"),
    "custom_child_hook": _hooked_custom_child,
    "max_pool": lambda: around(nn.MaxPool2d(2)),
    "untraceable": lambda: init_(Untraceable()),
}


@pytest.mark.parametrize("name", list(NOT_CHAINS))
def test_non_chains_fall_back_and_stay_correct(name):
    """Not recognized; the values and derivatives are those of fn itself (hooks included)."""
    model = NOT_CHAINS[name]()
    z = randn(4, 3, scale=1.5)
    assert recognize.recognize(model) is None or stacked_chain(model, z) is None
    check(model, z, randn(2, 4, 3, seed=3), recognized=False)


# read from the ops torch.export records, where the module's types alone say too little
EXPORTED = {
    "softmax_implicit_dim": lambda: around(nn.Softmax()),  # the dim of 4-D inputs: 1
    "subclass": lambda: around(MyConv(C, 2, 3)),
}


@pytest.mark.parametrize("name", list(EXPORTED))
def test_read_through_torch_export_where_the_latent_dimension_is_known(name):
    model = EXPORTED[name]()
    z = randn(4, 3, scale=1.5)
    assert recognize.recognize(model) is None and recognize.recognize(model, 3) is not None
    check(model, z, randn(2, 4, 3, seed=3))


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_spectral_norm(dtype):
    """A spectral-normalized transposed convolution in eval mode is a chain (float64 to 1e-10,
    float32 to 1e-5); in training mode its power iteration updates the weight at every call: not
    a chain."""
    model = around(parametrizations.spectral_norm(nn.ConvTranspose2d(C, C, 3))).train().to(dtype)
    with torch.no_grad():  # the power iteration converges to the weight init_ gave it
        for _ in range(30):
            model(randn(2, 3, dtype=dtype))
    assert stacked_chain(model, randn(4, 3, dtype=dtype)) is None
    model.eval()
    check(model, randn(5, 3, scale=1.5, dtype=dtype), rtol=1e-10 if dtype == F64 else F32_TOL)


def test_training_dropout_not_recognized_groupnorm_is():
    """Dropout in training mode is random: refused. GroupNorm computes the same in either mode."""
    assert stacked_chain(around(nn.Dropout(0.5)).train(), randn(4, 3)) is None
    check(around(nn.GroupNorm(2, C)).train(), randn(4, 3))


# ----------------------------------------------------------------------------- changes after a first call


def test_sequential_changes_are_seen():
    """In-place weights, a replaced layer, a changed Upsample mode, train / eval and a hook
    after the first call (which cached the chain) are all seen."""
    model = around(nn.Sequential(nn.ConvTranspose2d(C, 2, 4, 2, 1), nn.Upsample(scale_factor=2)))
    z = randn(4, 3)
    _, jac0 = check(model, z)
    with torch.no_grad():
        model[3][0].weight.mul_(-2)
    _, jac1 = check(model, z)
    assert not torch.allclose(jac0, jac1)
    model[3][0] = init_(nn.ConvTranspose2d(C, 2, 3, 2, 1, output_padding=1), seed=4)
    check(model, z)
    model[3][1].mode = "bilinear"
    check(model, z)
    model[3].append(init_(nn.BatchNorm2d(2)))
    check(model, z)
    model.train()
    assert stacked_chain(model, z) is None
    model.eval()
    model[3][0].register_forward_hook(lambda mod, inp, out: out * 3)
    check(model, z, recognized=False)


def test_custom_module_traced_once_per_structure(monkeypatch):
    """A custom module is traced once; a replaced layer, a changed setting read by forward, a
    changed activation setting and a hook after the first call are seen."""
    traces = []
    trace = recognize._trace
    monkeypatch.setattr(recognize, "_trace", lambda m: traces.append(m) or trace(m))
    model = init_(Rgb64Decoder(4))
    z = randn(3, 4)
    for _ in range(3):
        check(model, z)
    assert len(traces) == 1
    model.fc = init_(nn.Linear(4, 4 * 2 * 16), seed=8)
    check(model, z)
    model.alpha = 0.2  # a plain setting its forward reads
    check(model, z)
    model.norm.eps = 0.5
    check(model, z)
    assert len(traces) == 4
    model.conv.register_forward_hook(lambda mod, inp, out: out + 1)
    check(model, z, recognized=False)


def test_exported_graph_sees_inplace_weight_changes():
    model = exported(mnist_sequential(4), 4)
    z = randn(4, 4)
    _, jac0 = check(model, z)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if n.endswith("weight")).mul_(1.5)
    _, jac1 = check(model, z)
    assert not torch.allclose(jac0, jac1)


# ----------------------------------------------------------------------------- errors


class Refuses(Exception):
    pass


def test_recognized_decoder_that_raises_raises_once(monkeypatch):
    """An error of the decoder itself on the recognition probe propagates at once (the
    decoder is called once), not swallowed as 'not a chain'."""
    model = mnist_sequential(3)
    calls = []

    def forward(self, x):
        calls.append(x.shape)
        raise Refuses("no convolution today")

    monkeypatch.setattr(nn.ConvTranspose2d, "forward", forward)
    with pytest.raises(Refuses, match="no convolution today"):
        jacobian_rows(model, randn(5, 3))
    assert len(calls) == 1


def test_unrecognized_decoder_that_raises_raises_its_own_error():
    """The torch.func path: the decoder's own error comes from a plain call (not chained to
    vmap's), for ValueError and RuntimeError alike."""
    for error in (ValueError, RuntimeError):
        calls = []

        def mean(z, error=error, calls=calls):
            calls.append(1)
            raise error("bad latent codes")

        with pytest.raises(error, match="bad latent codes") as info:
            value_and_tangents(mean, randn(4, 3), randn(2, 4, 3))
        assert info.value.__context__ is None and len(calls) == 2


def test_not_vmappable_decoder_falls_back_per_direction():
    """A decoder vmap cannot batch (.item() on a value) still gets its derivatives."""

    def mean(z):
        return torch.tanh(z * float(z.detach().abs().sum().item() > -1)).repeat(1, 2)

    z = randn(4, 3)
    value, out = generic_value_and_tangents(mean, z, randn(2, 4, 3))
    value_ref, out_ref = reference(mean, z, randn(2, 4, 3))
    assert_close_rel(value, value_ref, 1e-14)
    assert_close_rel(out, out_ref, 1e-14)


@pytest.mark.parametrize("form", ["sequential", "function", "tuple"])
def test_output_not_p_by_f_is_a_value_error(form):
    """A mean must return (P, F): a (P, 1, 28, 28) image batch, or a tuple, is refused."""
    model = mnist_sequential(3)[:-1]  # no Flatten
    fn = {"sequential": model, "function": lambda z: model(z), "tuple": lambda z: (model(z),)}[form]
    with pytest.raises(ValueError, match=r"\(P, F\)"):
        jacobian_rows(fn, randn(4, 3))


def test_tangents_shape_is_checked():
    with pytest.raises(ValueError, match="tangents"):
        value_and_tangents(mnist_sequential(3), randn(4, 3), randn(2, 4, 2))


@pytest.mark.parametrize("as_module", [True, False])
def test_image_output_decoder_is_flattened(as_module):
    """A decoder returning images (P, 1, 28, 28) (the usual conv decoder, no Flatten at its end):
    RBFPrecision.fit takes images as data and ExpectedMetric flattens the mean, so that lengths,
    geodesics and the stacked forward mode (modules) equal those of the same decoder with an
    explicit Flatten; a mean whose images do not hold D values is refused."""
    torch.manual_seed(0)
    flat = mnist_sequential(5).double()
    images = nn.Sequential(*list(flat)[:-1])  # the same layers without the final Flatten
    mean = images if as_module else (lambda z: images(z))
    z = randn(60, 5)
    with torch.no_grad():
        x = images(z) + 0.05 * randn(60, 1, 28, 28)
    prec = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=6, steps=20, progress=False)
    ref_prec = fastgeo.RBFPrecision.fit(z, x.flatten(1), flat, num_centers=6, steps=20, progress=False)
    assert torch.equal(prec.weights, ref_prec.weights)
    metric, ref = fastgeo.ExpectedMetric(mean, prec), fastgeo.ExpectedMetric(flat, ref_prec)
    assert metric.mean(z[:3]).shape == (3, 784)
    if as_module:
        assert stacked_chain(metric.mean, z[:4]) is not None  # the structure stays visible
    curves = randn(2, 7, 5)
    assert_close_rel(metric.length(curves), ref.length(curves), 1e-12)
    with torch.no_grad():
        a = fastgeo.geodesics(metric, z[:2], z[2:4], max_iter=5, check_resolution=False)
        b = fastgeo.geodesics(ref, z[:2], z[2:4], max_iter=5, check_resolution=False)
    assert_close_rel(a.lengths, b.lengths, 1e-9)
    with pytest.raises(ValueError, match="images"):
        fastgeo.ExpectedMetric(lambda q: images(q)[..., :27], prec)  # 756 values, not 784
    with pytest.raises(ValueError, match="mean must map"):
        fastgeo.RBFPrecision.fit(z, x, lambda q: images(q)[..., :27], num_centers=6, steps=1, progress=False)
