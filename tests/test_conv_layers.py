"""The stacked forward mode through every convolutional layer kind (``fastgeo.decoders``), each
between an ELU and a Tanh, against forward-mode AD and reverse mode: Conv2d / ConvTranspose2d
(strides, padding, 'same', padding modes, output_padding, dilation, groups, no bias), Conv1d /
ConvTranspose1d, Upsample (nearest, nearest-exact, bilinear with and without align_corners,
bicubic, scale factor or size), BatchNorm1d / 2d with non-trivial running statistics, GroupNorm,
LayerNorm (over the last one to three axes, with and without weight and bias), padding layers,
Flatten / Unflatten, Dropout (eval), Identity, every activation; float64 to 1e-10, float32 to
1e-5 of the largest entry."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, randn
from tangent_checks import F32_TOL, POINTWISE, C, H, around, check, init_, jacrev_rows, running
from torch import nn
from torch.nn.utils import parametrizations

from fastgeo.decoders import (
    jacobian_rows,
    recognize,
    stacked_chain,
)
from fastgeo.decoders.steps import Conv, GroupNorm, Upsample

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
    **POINTWISE,
    "instancenorm": lambda: nn.InstanceNorm2d(C),
    "instancenorm_affine": lambda: nn.InstanceNorm2d(C, affine=True, eps=1e-3),
    "instancenorm_running_stats": lambda: running(nn.InstanceNorm2d(C, track_running_stats=True)),
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
