"""Smooth functions of one value along the chain: ``sin`` and ``cos`` (implicit and sine-activated
decoders), ``atan``, ``erf``, ``sinh``, ``cosh``, ``asinh``, ``log`` and ``log1p`` of positive
values, ``expm1``, ``sqrt``, ``rsqrt`` and ``reciprocal``, as functions, tensor methods and in
place: recognized, traced and exported, their values and directional derivatives equal to
forward-mode AD (float64 to 1e-10, float32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tangent_checks import C, H, check_forms, init_
from torch import nn

from fastgeo.decoders.recognize import recognize
from fastgeo.decoders.steps import Activation, walk

D_LAT = 3

FORMS = {
    "sin": (lambda x: torch.sin(30.0 * x), {"sin"}),
    "cos": (lambda x: x.cos(), {"cos"}),
    "atan_erf": (lambda x: torch.erf(torch.atan(x)), {"atan", "erf"}),
    "sinh_cosh": (lambda x: torch.cosh(x.sinh_()), {"sinh", "cosh"}),
    "asinh": (torch.asinh, {"asinh"}),
    "log": (lambda x: torch.log(torch.sigmoid(x)) + torch.log1p(x.exp()), None),
    "log_chain": (lambda x: torch.log1p(torch.log(F.softplus(x) + 1.0)), {"log", "log1p"}),
    "expm1": (torch.expm1, {"expm1"}),
    "sqrt_rsqrt": (lambda x: torch.rsqrt(torch.sqrt(F.softplus(x)) + 0.5), {"sqrt", "rsqrt"}),
    "reciprocal": (lambda x: (1 + x.exp()).reciprocal(), {"reciprocal"}),
}


class Pointwise(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f
        self.fc1, self.fc2 = nn.Linear(D_LAT, 10), nn.Linear(10, 6)

    def forward(self, z):
        return self.fc2(self.f(self.fc1(z)))


def _names(fn) -> set[str]:
    found = recognize(fn, D_LAT)
    return set() if found is None else {s.name for s in walk(found[0]) if isinstance(s, Activation)}


@pytest.mark.parametrize("name", [k for k, (_, names) in FORMS.items() if names is not None])
def test_smooth_functions_of_one_value(name):
    torch.manual_seed(0)
    f, names = FORMS[name]
    check_forms(Pointwise(f).double().eval(), D_LAT, lambda fn, z: names <= _names(fn))


def test_a_sum_of_two_is_two_branches():
    torch.manual_seed(0)
    model = Pointwise(FORMS["log"][0]).double().eval()
    check_forms(model, D_LAT, lambda fn, z: {"log", "log1p"} <= _names(fn))


class SineConv(nn.Module):
    """A sine-activated layer before a convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, C * H * H)
        self.conv = nn.Conv2d(C, 2, 3)

    def forward(self, z):
        return self.conv(torch.sin(self.fc(z)).view(-1, C, H, H)).flatten(1)


def test_a_sine_activated_conv_decoder():
    check_forms(init_(SineConv()).double().eval(), D_LAT, lambda fn, z: "sin" in _names(fn))


class FiLM(nn.Module):
    """A per-channel bias map added to feature maps, the smaller operand first or second."""

    def __init__(self, bias_first: bool) -> None:
        super().__init__()
        self.fc, self.bias = nn.Linear(D_LAT, C * H * H), nn.Linear(D_LAT, C)
        self.conv, self.bias_first = nn.Conv2d(C, 2, 3), bias_first

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        beta = self.bias(z).view(-1, C, 1, 1)
        return self.conv(beta + h if self.bias_first else h + beta).flatten(1)


@pytest.mark.parametrize("bias_first", [False, True])
def test_a_broadcast_sum_of_branches_in_either_order(bias_first):
    """``beta + h`` (the smaller operand first) failed in the stacked sum and fell back to
    torch.func (2x slower), with a message blaming an in-place operation."""
    from fastgeo.decoders import stacked_chain

    torch.manual_seed(0)
    model = init_(FiLM(bias_first)).double().eval()
    check_forms(model, D_LAT, lambda fn, z: stacked_chain(fn, z) is not None)
