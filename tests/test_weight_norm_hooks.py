"""Layers normalized by the hook-based ``torch.nn.utils.weight_norm`` and ``spectral_norm`` (the
forms older code uses; their pre-hooks recompute the weight before every forward): in
``nn.Sequential`` and in a traced custom decoder, recognized as chains whose weights are read
through the hooks, values and directional derivatives equal to forward-mode AD (float64);
in-place changes of ``weight_g`` show, and a hook removed later is no longer read. Any other
pre-hook still leaves the decoder to torch.func.
"""

from __future__ import annotations

import warnings

import torch
from helpers import randn
from tangent_checks import check
from torch import nn

D_LAT = 3


def _normed(layer: nn.Module, kind: str = "weight", **kw) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the hook-based forms are deprecated
        return (nn.utils.weight_norm if kind == "weight" else nn.utils.spectral_norm)(layer, **kw)


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        _normed(nn.Linear(D_LAT, 16)), nn.ELU(), _normed(nn.Linear(16, 8 * 9), "spectral"),
        nn.Unflatten(1, (8, 3, 3)), _normed(nn.ConvTranspose2d(8, 2, 3, 2), dim=1), nn.Flatten(),
    ).double().eval()  # fmt: skip


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = _normed(nn.Linear(D_LAT, 12)), _normed(nn.Linear(12, 5), "spectral")

    def forward(self, z):
        return torch.sigmoid(self.fc2(torch.tanh(self.fc1(z))))


def test_weight_and_spectral_norm_hooks_in_a_sequential():
    model = _sequential()
    z = randn(7, D_LAT, seed=1, scale=1.5)
    check(model, z)
    with torch.no_grad():
        model[0].weight_g.mul_(1.7)
    check(model, z)
    nn.utils.remove_weight_norm(model[0])
    check(model, z)


def test_hooks_in_a_traced_decoder():
    torch.manual_seed(0)
    model = Custom().double().eval()
    z = randn(6, D_LAT, seed=2)
    check(model, z)
    nn.utils.remove_spectral_norm(model.fc2)
    with torch.no_grad():
        model.fc2.weight.mul_(-0.5)
    check(model, z)


def test_another_pre_hook_is_not_a_chain():
    model = _sequential()
    model[0].register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    check(model, randn(5, D_LAT, seed=3), recognized=False)
