"""Tensors a decoder computes from its own parameters in ``forward`` (``self.log_scale.exp()``,
``F.softplus(self.raw)``, a weight normalized by hand, tied weights ``W.t() @ W``, a slice of a
parameter): traced and exported, each is recognized as a chain whose values and directional
derivatives equal forward-mode AD; in-place changes of the parameters show; reading an exported
graph leaves it as it was; a tensor made anew at every call (random) fails the check against the
decoder (torch.func).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import check, check_forms, exported, init_
from torch import nn

from fastgeo.decoders import stacked_chain
from fastgeo.decoders.recognize import recognize
from fastgeo.decoders.steps import Affine, ByTensor, walk

D_LAT, WIDTH, OUT = 3, 8, 5


class Derived(nn.Module):
    """A hand-normalized first layer (``v / ||v|| * g``), tied weights in the second
    (``W.t() @ W``), a learned scale ``exp(log_scale)``, a shift ``softplus(raw)`` sliced."""

    def __init__(self) -> None:
        super().__init__()
        self.v, self.g = nn.Parameter(torch.ones(WIDTH, D_LAT)), nn.Parameter(torch.ones(WIDTH))
        self.tied = nn.Parameter(torch.ones(WIDTH, WIDTH))
        self.out = nn.Linear(WIDTH, OUT)
        self.log_scale, self.raw = nn.Parameter(torch.zeros(OUT)), nn.Parameter(torch.zeros(OUT + 2))

    def forward(self, z):
        weight = self.v / self.v.norm(dim=1, keepdim=True) * self.g[:, None]
        h = torch.tanh(F.linear(z, weight))
        h = F.elu(F.linear(h, self.tied.t() @ self.tied))
        return self.out(h) * self.log_scale.exp() + F.softplus(self.raw)[:OUT]


def _counts(fn, z) -> tuple[int, int]:
    chain = stacked_chain(fn, z[:4])
    assert chain is not None
    steps = list(walk(chain.steps))
    return sum(isinstance(s, Affine) for s in steps), sum(isinstance(s, ByTensor) for s in steps)


def test_traced_exported_and_float32():
    torch.manual_seed(0)
    check_forms(init_(Derived()), D_LAT, lambda fn, z: _counts(fn, z) == (3, 2))


def test_parameters_changed_in_place_are_seen():
    torch.manual_seed(0)
    model = init_(Derived())
    z = randn(6, D_LAT, seed=3)
    check(model, z)
    with torch.no_grad():
        model.log_scale.add_(0.7)
        model.v.mul_(-1.5)
        model.tied.add_(0.2)
    check(model, z)


def test_an_exported_graph_is_read_as_it_is():
    torch.manual_seed(0)
    gm = exported(init_(Derived()), D_LAT).double()
    before = [(n.op, str(n.target)) for n in gm.graph.nodes]
    assert recognize(gm) is not None
    assert [(n.op, str(n.target)) for n in gm.graph.nodes] == before


def test_a_tensor_made_anew_at_every_call_is_not_the_decoder_s():
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.scale = nn.Linear(D_LAT, OUT), nn.Parameter(torch.ones(OUT))

        def forward(self, z):
            return self.fc(z) * torch.rand_like(self.scale)

    model = Noisy().double().eval()
    assert recognize(model) is not None
    assert stacked_chain(model, randn(4, D_LAT, seed=4)) is None
