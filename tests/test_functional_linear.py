"""Decoders written with their own weight matrices instead of ``nn.Linear``: ``x @ W + b``, ``x @
W.T``, ``W.t()``, ``W.mT``, ``W.transpose(0, 1)``, ``torch.matmul`` / ``torch.mm`` /
``x.matmul``, ``F.linear(x, W, b)``, ``torch.addmm``, ``torch.einsum``, with parameters and
buffers. Traced and exported, each is recognized as a chain of ``Affine`` steps whose values and
directional derivatives equal forward-mode AD; a product with anything but a tensor of the
decoder's own is not a chain, and a weight of a shape the chain did not expect fails the check
against the decoder (no chain).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import check, check_forms, init_
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.steps import Affine, walk

D_LAT, WIDTH, OUT = 3, 8, 5


class Matmuls(nn.Module):
    """``x @ W + b`` with W (in, out), then a product with a transposed (out, in) weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.ones(D_LAT, WIDTH)), nn.Parameter(torch.zeros(WIDTH))
        self.w2 = nn.Parameter(torch.ones(OUT, WIDTH))

    def forward(self, z):
        return torch.sigmoid(torch.tanh(z @ self.w1 + self.b1) @ self.w2.T)


class FunctionalLinear(nn.Module):
    """``F.linear`` with and without a bias, and of a transposed (in, out) weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.ones(WIDTH, D_LAT)), nn.Parameter(torch.zeros(WIDTH))
        self.w2 = nn.Parameter(torch.ones(WIDTH, OUT))

    def forward(self, z):
        return F.linear(F.elu(F.linear(z, self.w1, self.b1)), self.w2.t())


class EveryForm(nn.Module):
    """``torch.mm``, ``torch.matmul``, the method ``.matmul``, ``.mT``, ``.transpose(0, 1)`` and a
    buffer as the last weight."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(D_LAT, WIDTH))
        self.w2 = nn.Parameter(torch.ones(WIDTH, WIDTH))
        self.w3 = nn.Parameter(torch.ones(WIDTH, WIDTH))
        self.register_buffer("w4", torch.ones(WIDTH, OUT))

    def forward(self, z):
        h = F.silu(torch.mm(z, self.w1))
        h = torch.tanh(torch.matmul(h, self.w2.mT)).matmul(self.w3.transpose(0, 1))
        return h @ self.w4


class Einsums(nn.Module):
    """``torch.einsum`` as a linear layer: ``"bi,ij->bj"``, the weight first with ``...`` for the
    batch, a transposed weight, spaces, ``torch.addmm(b, x, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.ones(D_LAT, WIDTH))
        self.w2 = nn.Parameter(torch.ones(WIDTH, WIDTH))
        self.w3, self.b3 = nn.Parameter(torch.ones(WIDTH, WIDTH)), nn.Parameter(torch.zeros(WIDTH))
        self.w4 = nn.Parameter(torch.ones(OUT, WIDTH))

    def forward(self, z):
        h = torch.tanh(torch.einsum("bi,ij->bj", z, self.w1))
        h = F.elu(torch.einsum("ji, ...i -> ...j", self.w2, h))
        h = torch.sigmoid(torch.addmm(self.b3, h, self.w3.T))
        return torch.einsum("ni,ji->nj", h, self.w4)


DECODERS = {
    "matmuls": Matmuls, "functional_linear": FunctionalLinear, "every_form": EveryForm, "einsums": Einsums,
}  # fmt: skip


def _decoder(name: str) -> nn.Module:
    return init_(DECODERS[name]())


def _affines(fn, z) -> int:
    chain = stacked_chain(fn, z[:4])
    assert chain is not None
    return sum(isinstance(s, Affine) for s in walk(chain.steps))


@pytest.mark.parametrize("name", list(DECODERS))
def test_traced_exported_and_float32(name):
    check_forms(_decoder(name), D_LAT, lambda fn, z: _affines(fn, z) >= 2)


def test_weights_changed_in_place_are_seen():
    model = _decoder("matmuls")
    z = randn(5, D_LAT, dtype=torch.float64, seed=4)
    check(model, z)
    with torch.no_grad():
        model.w1.mul_(-2.0)
        model.w2.add_(0.3)
    check(model, z)


class ByInput(nn.Module):
    """``h @ h.T``: a product of the value with itself, not a linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, OUT)

    def forward(self, z):
        h = torch.tanh(self.fc(z))
        return (h[:, :, None] @ h[:, None, :]).flatten(1)


class MadeInForward(nn.Module):
    """A product with a tensor made in ``forward`` (not a parameter or buffer of the decoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, OUT)

    def forward(self, z):
        return torch.tanh(self.fc(z)) @ torch.ones(OUT, OUT, dtype=z.dtype)


class EinsumNotLinear(nn.Module):
    """einsums that are not a linear layer of each point: the value with itself, a weight that
    mixes points (over the batch), a weight's diagonal."""

    def __init__(self, equation: str) -> None:
        super().__init__()
        self.fc, self.equation = nn.Linear(D_LAT, OUT), equation
        self.w = nn.Parameter(torch.ones(OUT, OUT))

    def forward(self, z):
        h = torch.tanh(self.fc(z))
        if self.equation == "outer":
            return torch.einsum("bi,bj->bij", h, h).flatten(1)
        if self.equation == "diagonal":
            return torch.einsum("bi,ii->bi", h, self.w)
        return torch.einsum("bi,ij->bj", h, self.w) + torch.einsum("bi,cj->bj", h, self.w[:1]).sum(0)


@pytest.mark.parametrize(
    "make",
    [ByInput, MadeInForward, *(lambda e=e: EinsumNotLinear(e) for e in ("outer", "diagonal", "batch"))],
    ids=["by_input", "made_in_forward", "einsum_outer", "einsum_diagonal", "einsum_over_the_batch"],
)
def test_other_products_are_not_chains(make):
    model = init_(make())
    z = randn(5, D_LAT, dtype=torch.float64, seed=5)
    check(model, z, recognized=False)


SHIFT = 0.5  # a global a traced function reads (rebound below)


def test_a_traced_function_follows_the_values_it_reads_by_name():
    """``torch.fx`` bakes the tensors and numbers a function reads from its closure or globals
    into its graph: rebound (a new plane to decode, a new scale), the function is traced again,
    not differentiated with the old ones."""
    global SHIFT
    net = init_(nn.Sequential(nn.Linear(D_LAT, WIDTH), nn.Tanh(), nn.Linear(WIDTH, OUT)))
    plane, scale = randn(2, D_LAT, dtype=torch.float64, seed=6), 2.0
    fn = lambda z: net(z @ plane + SHIFT) * scale  # noqa: E731 - a user's latent plane
    z = randn(5, 2, dtype=torch.float64, seed=7)
    _, before = check(fn, z)
    plane, scale = randn(2, D_LAT, dtype=torch.float64, seed=8), 3.0
    SHIFT = -1.0
    try:
        _, after = check(fn, z)
    finally:
        SHIFT = 0.5
    assert not torch.allclose(before, after)
    with torch.no_grad():
        plane.mul_(2.0)  # in place: read at every call
    check(fn, z)
