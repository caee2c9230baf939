"""Decoders that index new axes into their value (``z[:, :, None, None]`` before a transposed
convolution from 1x1, as DCGAN-style decoders start; ``x[..., None]``), copy it (``.clone()``,
``.contiguous(memory_format=...)``) or slice it fully (``x[:, ...]``, which ``torch.export``
writes as ``aten.slice``): recognized as chains, traced and exported, values and directional
derivatives equal to forward-mode AD. Indexing that cuts the value is not a chain. Attention
(``nn.MultiheadAttention``, whose fused CPU kernel has no forward-mode derivative) goes through
the ``torch.func`` fallback exactly.
"""

from __future__ import annotations

import pytest
import torch
from helpers import randn
from test_decoders_conv import check, check_forms, init_
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.generic import generic_value_and_tangents
from fastgeo.decoders.steps import Axes, walk

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


DECODERS = {
    "from_one_pixel": FromOnePixel,
    "ellipsis_and_clone": EllipsisAndClone,
    "axes_between": AxesBetween,
}


def _decoder(name: str) -> nn.Module:
    return init_(DECODERS[name]())


def _unsqueezes(fn, z) -> int:
    chain = stacked_chain(fn, z[:4])
    assert chain is not None
    return sum(isinstance(s, Axes) and s.op == "unsqueeze" for s in walk(chain.steps))


@pytest.mark.parametrize("name", list(DECODERS))
def test_traced_exported_and_float32(name):
    check_forms(_decoder(name), D_LAT, lambda fn, z: _unsqueezes(fn, z) >= 2)


class Cuts(nn.Module):
    def __init__(self, index) -> None:
        super().__init__()
        self.fc, self.index = nn.Linear(D_LAT, 12), index

    def forward(self, z):
        return torch.tanh(self.fc(z))[self.index]


@pytest.mark.parametrize(
    "index",
    [
        (slice(None), slice(0, 6)),
        (slice(1, None),),
        (slice(None), slice(None, None, 2)),
        (Ellipsis, slice(2, 8)),
    ],
    ids=["cut_features", "cut_batch", "strided", "ellipsis_then_cut"],
)
def test_indexing_that_cuts_or_moves_the_batch_is_not_a_chain(index):
    """Such an index is not a rearrangement of each point: the generic path, exact."""
    model = init_(Cuts(index))
    z = randn(5, D_LAT, dtype=torch.float64, seed=4)
    if index == (slice(1, None),):  # fewer rows than points: refused by the shape check
        with pytest.raises(ValueError, match="must map points"):
            check(model, z, recognized=False)
    else:
        check(model, z, recognized=False)


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
