"""Decoders that combine their value with tensors of their own (``ByTensor`` steps) and end in an
exponential: learned output scales and shifts, output un-normalization by buffers (the data's
mean and standard deviation), layer scales inside residual blocks, per-channel scales of images,
every operand order, ``torch.mul`` / ``torch.add`` as functions, and the same decoders exported
(aten ``mul.Tensor`` / ``add.Tensor`` / ``sub.Tensor`` / ``rsub.Tensor`` / ``div.Tensor``).
Each is recognized as a chain and its values and directional derivatives equal forward-mode AD
(float64, 1e-10 of the largest entry; float32 to F32_TOL); in-place changes of the operands show.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import check, check_forms, init_
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.steps import Activation, ByTensor, walk

D_LAT, WIDTH, OUT = 3, 8, 5


class OutputAffine(nn.Module):
    """``net(z) * scale + shift``: a learned affine map of the output, per feature."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_LAT, WIDTH), nn.Tanh(), nn.Linear(WIDTH, OUT))
        self.scale = nn.Parameter(torch.ones(OUT))
        self.shift = nn.Parameter(torch.zeros(OUT))

    def forward(self, z):
        return self.net(z) * self.scale + self.shift


class Unnormalized(nn.Module):
    """Outputs in data units: ``std * net(z) + mean`` with (1, F) buffers, operands first."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_LAT, WIDTH), nn.ELU(), nn.Linear(WIDTH, OUT))
        self.register_buffer("std", torch.ones(1, OUT))
        self.register_buffer("mean", torch.zeros(1, OUT))

    def forward(self, z):
        return self.mean + self.std * self.net(z)


class Differences(nn.Module):
    """``(p - x) / q``, ``x - p``, ``torch.mul`` and ``torch.add`` as functions."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_LAT, WIDTH), nn.SiLU(), nn.Linear(WIDTH, OUT))
        self.p = nn.Parameter(torch.zeros(OUT))
        self.q = nn.Parameter(torch.ones(OUT))

    def forward(self, z):
        h = (self.p - self.net(z)) / self.q
        h = torch.add(torch.mul(h, self.q), self.p) - self.p
        return torch.sigmoid(h)


class LayerScale(nn.Module):
    """A residual block scaled per feature by a learned ``gamma`` (as in ConvNeXt / CaiT)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(D_LAT, WIDTH)
        self.block = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH))
        self.gamma = nn.Parameter(torch.ones(WIDTH))
        self.out = nn.Linear(WIDTH, OUT)

    def forward(self, z):
        h = self.inp(z)
        return self.out(F.softplus(h + self.gamma * self.block(h)))


class ChannelScale(nn.Module):
    """A conv decoder whose feature maps are scaled per channel ((C, 1, 1)) and whose output is
    offset per pixel ((1, H, W)); its mean is ``exp`` of that (a rate, say)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, 4 * 3 * 3)
        self.up = nn.ConvTranspose2d(4, 2, 4, 2, 1)
        self.channel = nn.Parameter(torch.ones(2, 1, 1))
        self.pixel = nn.Parameter(torch.zeros(1, 6, 6))

    def forward(self, z):
        h = F.elu(self.fc(z)).view(-1, 4, 3, 3)
        h = F.elu(self.up(h)) * self.channel
        return torch.exp(0.3 * (h + self.pixel)).flatten(1)


class Broadcasting(nn.Module):
    """One unit per point plus a (F,) offset: the addition widens each point (P, 1) -> (P, F)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_LAT, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))
        self.offset = nn.Parameter(torch.zeros(OUT))

    def forward(self, z):
        return self.net(z) + self.offset


DECODERS = {
    "output_affine": OutputAffine,
    "unnormalized": Unnormalized,
    "differences": Differences,
    "layer_scale": LayerScale,
    "channel_scale": ChannelScale,
    "broadcasting": Broadcasting,
}


def _decoder(name: str, seed: int = 0) -> nn.Module:
    model = init_(DECODERS[name](), seed)
    with torch.no_grad():  # non-trivial buffers too
        for i, b in enumerate(model.buffers()):
            g = torch.Generator().manual_seed(seed + i)
            b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))
    return model


def _by_tensor_steps(model: nn.Module, z: torch.Tensor) -> list[ByTensor]:
    chain = stacked_chain(model, z[:4])
    assert chain is not None
    return [s for s in walk(chain.steps) if isinstance(s, ByTensor)]


@pytest.mark.parametrize("name", list(DECODERS))
def test_traced_exported_and_float32(name):
    check_forms(_decoder(name), D_LAT, _by_tensor_steps)


def test_exp_is_an_activation():
    model = _decoder("channel_scale")
    chain = stacked_chain(model, randn(4, D_LAT, dtype=torch.float64))
    assert [s.name for s in walk(chain.steps) if isinstance(s, Activation)] == ["elu", "elu", "exp"]


def test_operands_changed_in_place_are_seen():
    """The operands are read at every call: scaled in place after a first call, the rows follow."""
    model = _decoder("output_affine")
    z = randn(5, D_LAT, dtype=torch.float64, seed=4)
    _, before = check(model, z)
    with torch.no_grad():
        model.scale.mul_(3.0)
        model.shift.add_(1.0)
    _, after = check(model, z)
    torch.testing.assert_close(after, 3.0 * before)


def test_an_operand_along_the_batch_is_not_a_chain():
    """A tensor that varies along the batch axis (here (2, F), a decoder of two points at a
    time) is not a per-point operation: not recognized, the generic path is exact."""

    class PerRow(OutputAffine):
        def __init__(self) -> None:
            super().__init__()
            self.rows = nn.Parameter(torch.ones(2, OUT))

        def forward(self, z):
            return self.net(z) * self.rows

    model = init_(PerRow())
    z = randn(2, D_LAT, dtype=torch.float64, seed=5)
    check(model, z, recognized=False)
