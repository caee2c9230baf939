"""Decoders with piecewise-linear activations (ReLU, LeakyReLU, Hardtanh, ReLU6) are recognized
as such: calls with lagged Gauss-Newton matrices (d >= 8) keep the secant model for them, and
the user is warned that their geodesics can stop short (bench/RESULTS.md, "Piecewise-linear
decoders"); smooth decoders take plain Gauss-Newton steps, without a warning."""

import warnings

import pytest
import torch
from torch import nn

import fastgeo
from fastgeo.decoders import piecewise_linear
from fastgeo.solver import options

D = 12


def mlp(d: int, act: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), act, nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, D)).double()


@pytest.mark.parametrize(
    "act,expected",
    [
        (nn.ReLU(), True),
        (nn.LeakyReLU(0.2), True),
        (nn.ReLU6(), True),
        (nn.Hardtanh(-2.0, 2.0), True),
        (nn.ELU(), False),
        (nn.GELU(), False),
        (nn.Softplus(), False),
    ],
)
def test_piecewise_linear_chains(act, expected):
    assert piecewise_linear(mlp(3, act)) is expected


def test_unrecognized_decoders_are_not_called_piecewise_linear():
    model = mlp(3, nn.ReLU())
    assert piecewise_linear(lambda z: model(z)) is False  # a plain callable: structure unknown
    hooked = mlp(3, nn.ReLU())
    hooked.register_forward_hook(lambda mod, inp, out: out)
    assert piecewise_linear(hooked) is False


def metric(d: int, act: nn.Module) -> fastgeo.ExpectedMetric:
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(6, d, generator=g, dtype=torch.float64)
    prec = fastgeo.RBFPrecision(centers, torch.full((6,), 0.5, dtype=torch.float64),
                                torch.rand(D, 6, generator=g, dtype=torch.float64) * 20, 0.05)  # fmt: skip
    return fastgeo.ExpectedMetric(mlp(d, act), prec)


@pytest.mark.parametrize("act,secant", [(nn.ReLU(), True), (nn.ELU(), False)])
def test_lagged_calls_keep_the_secant_model_for_piecewise_linear_decoders(act, secant):
    """d = 8: lagged matrices; the result records which steps were taken; the curves converge;
    a warning for the piecewise-linear decoder only."""
    m = metric(8, act)
    assert m.piecewise_linear_mean is secant
    z = m.precision.centers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = fastgeo.geodesics(m, z[:3], z[3:], tol=1e-6)
    warned = [w for w in caught if "piecewise-linear activations" in str(w.message)]
    assert len(warned) == (1 if secant else 0)
    assert res.options["lagged"] is True and res.options["secant"] is secant
    assert res.converged.all()


def test_the_benchmark_override_forces_either_way(monkeypatch):
    m = metric(8, nn.ReLU())
    z = m.precision.centers
    monkeypatch.setattr(options, "LAGGED_SECANT", False)
    with pytest.warns(UserWarning, match="piecewise-linear"):
        res = fastgeo.geodesics(m, z[:2], z[3:5], max_iter=3)
    assert res.options["secant"] is False
    monkeypatch.setattr(options, "LAGGED_SECANT", True)
    assert fastgeo.geodesics(metric(8, nn.ELU()), z[:2], z[3:5], max_iter=3).options["secant"] is True
