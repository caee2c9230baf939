"""Decoders that index their value: new axes (``z[:, :, None, None]`` before a transposed
convolution from 1x1, as DCGAN-style decoders start; ``x[..., None]``), pieces (``mu, logvar =
h.chunk(2, dim=-1)``, ``torch.split``, ``h[:, :D]``, ``h[..., D:]``, strided slices, an integer
index of an axis, a gated linear unit written by hand), copies (``.clone()``,
``.contiguous(memory_format=...)``) and full slices (``x[:, ...]``, which ``torch.export`` writes
as ``aten.slice``; an unused piece it keeps): recognized as chains, traced and exported, values and
directional derivatives equal to forward-mode AD. An index that cuts the batch or takes a tensor
is not a chain. Attention (``nn.MultiheadAttention``, whose fused CPU kernel has no forward-mode
derivative) goes through the ``torch.func`` fallback exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import check, check_forms, init_
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.generic import generic_value_and_tangents
from fastgeo.decoders.steps import Axes, Part, walk

D_LAT = 4


class FromOnePixel(nn.Module):
    """DCGAN-style: the code as a 1x1 image of D_LAT channels, transposed convolutions up."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ConvTranspose2d(D_LAT, 6, 4, 1, 0), nn.BatchNorm2d(6), nn.ELU(),
            nn.ConvTranspose2d(6, 2, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, z):
        return self.net(z[:, :, None, None]).reshape(z.shape[0], -1)


class EllipsisAndClone(nn.Module):
    """``z[..., None, None].clone()`` into the same layers, then ``flatten(1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = FromOnePixel().net

    def forward(self, z):
        return self.net(z[..., None, None].clone()).flatten(1)


class AxesBetween(nn.Module):
    """New axes between others, full slices and a channels-last copy of a sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.conv = nn.Linear(D_LAT, 24), nn.Conv1d(6, 3, 3, padding=1)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, 6, 4)[:, None, :, :].squeeze(1)
        h = self.conv(h)[:, :, None, :].contiguous(memory_format=torch.channels_last)
        return h[:, ...].flatten(1)


class MeanAndLogVariance(nn.Module):
    """One head for both: ``mu, logvar = h.chunk(2, dim=-1)``, the mean through a sigmoid."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D_LAT, 8), nn.ELU(), nn.Linear(8, 2 * 5))

    def forward(self, z):
        mu, logvar = self.net(z).chunk(2, dim=-1)
        return torch.sigmoid(mu)


class SplitAndSlices(nn.Module):
    """``torch.split`` by sizes, then a slice with negative bounds."""

    def __init__(self) -> None:
        super().__init__()
        self.net = MeanAndLogVariance().net

    def forward(self, z):
        return torch.split(self.net(z), [3, 7], dim=1)[1][:, 1:-2]


class GatedByHand(nn.Module):
    """A gated linear unit written out: ``a, b = h.chunk(2, -1); a * sigmoid(b)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.out = MeanAndLogVariance().net, nn.Linear(5, 4)

    def forward(self, z):
        a, b = self.net(z).chunk(2, -1)
        return self.out(a * torch.sigmoid(b))


class ImagePieces(nn.Module):
    """A crop and a strided slice of feature maps, an integer index (a channel), ``h[..., -1:, :]``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.conv = nn.Linear(D_LAT, 3 * 6 * 8), nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, z):
        h = self.conv(torch.tanh(self.fc(z)).view(-1, 3, 6, 8))[:, :, 1:5, ::2]
        return torch.cat([h[:, 0], h[..., -1:, :].flatten(2)[:, 1, None]], 1).flatten(1)


DECODERS = {
    "from_one_pixel": FromOnePixel,
    "ellipsis_and_clone": EllipsisAndClone,
    "axes_between": AxesBetween,
    "mean_and_log_variance": MeanAndLogVariance,
    "split_and_slices": SplitAndSlices,
    "gated_by_hand": GatedByHand,
    "image_pieces": ImagePieces,
}
NEW_AXES = ("from_one_pixel", "ellipsis_and_clone", "axes_between")


def _decoder(name: str) -> nn.Module:
    return init_(DECODERS[name]())


def _count(kind: type, fn, z) -> int:
    chain = stacked_chain(fn, z[:4])
    assert chain is not None
    return sum(isinstance(s, kind) and (kind is not Axes or s.op == "unsqueeze") for s in walk(chain.steps))


@pytest.mark.parametrize("name", list(DECODERS))
def test_traced_exported_and_float32(name):
    kind, least = (Axes, 2) if name in NEW_AXES else (Part, 1)
    check_forms(_decoder(name), D_LAT, lambda fn, z: _count(kind, fn, z) >= least)


class Indexed(nn.Module):
    def __init__(self, index) -> None:
        super().__init__()
        self.fc, self.index = nn.Linear(D_LAT, 12), index

    def forward(self, z):
        return torch.tanh(self.fc(z))[self.index]


def test_an_index_of_the_batch_or_by_a_tensor_is_not_a_chain():
    """Not a piece of each point: the generic path, exact (an index that drops points fails the
    decoder's shape check)."""
    z = randn(5, D_LAT, seed=4)
    model = init_(Indexed((slice(None), torch.tensor([3, 1, 4]))))
    check(model, z, recognized=False)
    with pytest.raises(ValueError, match="must map points"):
        check(init_(Indexed((slice(1, None),))), z, recognized=False)


class Attention(nn.Module):
    """A small transformer-style decoder: tokens from the code, self-attention, a linear read-out."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Linear(D_LAT, 3 * 8)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = nn.Linear(3 * 8, 10)

    def forward(self, z):
        h = self.tokens(z).view(-1, 3, 8)
        h = h + self.attention(h, h, h, need_weights=False)[0]
        return torch.sigmoid(self.out(h.flatten(1)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_goes_through_the_fallback_exactly(dtype):
    model = Attention().eval().to(dtype)
    z = randn(5, D_LAT, dtype=dtype, seed=5)
    tangents = randn(3, 5, D_LAT, dtype=dtype, seed=6)
    assert stacked_chain(model, z[:4]) is None
    value, out = generic_value_and_tangents(model, z, tangents)
    eps = 1e-6 if dtype == torch.float64 else 1e-2
    for i in range(3):  # central differences of the plain call
        with torch.no_grad():
            step = (model(z + eps * tangents[i]) - model(z - eps * tangents[i])) / (2 * eps)
        tol = 1e-8 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(out[i], step, rtol=tol, atol=tol)
    with torch.no_grad():
        torch.testing.assert_close(value, model(z))


class GLUs(nn.Module):
    """``nn.GLU`` and ``F.glu`` over the features and over the channels of an image."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.glu = nn.Linear(D_LAT, 2 * 2 * 3 * 2), nn.GLU()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, z):
        h = self.glu(self.fc(z)).view(-1, 2, 3, 2)  # (P, 24) -> (P, 12)
        return F.glu(self.conv(h), dim=1).flatten(1)


@pytest.mark.parametrize("form", ["module", "sequential"])
def test_glu(form):
    sequential = nn.Sequential(nn.Linear(D_LAT, 10), nn.GLU(), nn.Tanh())
    model = init_(GLUs() if form == "module" else sequential)
    check_forms(model, D_LAT, lambda fn, z: _count(Part, fn, z) >= 2)
