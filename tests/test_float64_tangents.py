"""Float64 solves of a convolutional decoder on the CPU push its tangents in float32 (CPU
convolutions have no float64 oneDNN kernels): when they do, and that the curves are those of exact
float64 tangents (the values, the energies and every test stay float64): the dense oracle's
polylines, and the default's race, refinement and finer splines."""

from __future__ import annotations

import pytest
import torch
from helpers import randn, rbf_params
from tangent_checks import init_
from test_low_precision import DECODERS
from torch import nn

import fastgeo
from fastgeo.decoders import stacked_chain, value_and_tangents
from fastgeo.solver import options as solver_options_module
from fastgeo.solver import race, subdivide
from fastgeo.solver.options import solver_options

F64 = torch.float64


def _conv() -> nn.Module:
    return nn.Sequential(
        nn.Linear(3, 2 * 4 * 4), nn.ELU(), nn.Unflatten(1, (2, 4, 4)), nn.ConvTranspose2d(2, 3, 4, 2, 1),
        nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1), nn.Flatten(), nn.Sigmoid(),
    )  # fmt: skip


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 24), nn.Tanh(), nn.Linear(24, 64))


def _metric(mean: nn.Module, dtype: torch.dtype = F64) -> fastgeo.ExpectedMetric:
    c, g, w, z = rbf_params(8, 3, 64, dtype=dtype, seed=3)
    return fastgeo.ExpectedMetric(init_(mean).to(dtype).eval(), fastgeo.RBFPrecision(c, g, w, z))


@pytest.mark.parametrize(
    ("dtype", "method", "convolutional", "device", "expected"),
    [
        (F64, "dense", True, "cpu", torch.float32),
        (F64, "dense", False, "cpu", None),  # MLPs: float64 GEMMs cost about what float32's do
        (torch.float32, "dense", True, "cpu", None),
        (F64, "default", True, "cpu", torch.float32),
        (F64, "fast", True, "cpu", torch.float32),
        (F64, "default", False, "cpu", None),
        (F64, "dense", True, None, None),
        (F64, "dense", True, "meta", None),  # other devices: unmeasured
    ],
)
def test_when_a_solve_pushes_float32_tangents(dtype, method, convolutional, device, expected):
    opts = solver_options(dtype, 3, 64, method=method, convolutional=convolutional, device=device)
    assert opts.fresh_tangent_dtype == expected
    assert opts.summary()["fresh tangents"] == ("float32" if expected else "exact")


@pytest.mark.parametrize("name", list(DECODERS))
def test_float32_tangents_of_a_float64_chain_round_the_exact_ones(name):
    """Every layer kind that reads a parameter or a tensor of the decoder (cast to float32 for the
    tangents), normalizations, softmax: the value stays float64 (to its rounding), and the
    tangents are the float64 ones to float32's rounding."""
    model = init_(DECODERS[name]())  # float64
    z = randn(9, 3, seed=2, scale=1.5)
    tangents = randn(3, 9, 3, seed=3)
    assert stacked_chain(model, z[:4]) is not None
    value, out = value_and_tangents(model, z, tangents)
    value_lo, out_lo = value_and_tangents(model, z, tangents, torch.float32)
    assert value_lo.dtype == out_lo.dtype == F64
    # the value apart, in float64 (its GEMMs have other row counts: equal to rounding)
    torch.testing.assert_close(value_lo, value, rtol=1e-13, atol=1e-13)
    err = float((out_lo - out).abs().max() / out.abs().max())
    assert 0 < err < 1e-5, err  # rounded (so: pushed in float32), and only rounded


class Huge(nn.Module):
    """A float64 decoder whose activations leave float32's range (~3e38)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _conv()

    def forward(self, z):
        return self.net(z) * 1e200 * 1e-200


def test_tangents_beyond_float32s_range_are_pushed_in_float64():
    model = init_(Huge()).eval()
    z, tangents = randn(6, 3, seed=2), randn(3, 6, 3, seed=3)
    assert stacked_chain(model, z[:4]) is not None
    value, out = value_and_tangents(model, z, tangents)
    value_lo, out_lo = value_and_tangents(model, z, tangents, torch.float32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out_lo, out, rtol=1e-13, atol=1e-13)  # float64: not inf, not NaN
    metric = _metric(Huge())
    res = fastgeo.geodesics(metric, randn(2, 3, seed=5), randn(2, 3, seed=6), progress=False)
    assert res.options["fresh tangents"] == "float32" and list(res.status) == ["converged"] * 2


def test_the_metric_knows_a_convolutional_mean():
    assert _metric(_conv()).convolutional_mean
    assert not _metric(_mlp()).convolutional_mean

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(3, 64), nn.Unflatten(1, (1, 8, 8)))
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, z):
            h = self.inner(z)
            return (h + self.conv(h)).flatten(1)

    assert _metric(Block()).convolutional_mean  # a convolution inside a branch counts too
    precision = fastgeo.RBFPrecision(*rbf_params(8, 3, 64, seed=3))
    plain = fastgeo.ExpectedMetric(lambda z: torch.sin(z @ torch.ones(3, 64, dtype=z.dtype)), precision)
    assert not plain.convolutional_mean  # not a recognized chain: torch.func, whatever it computes


@pytest.mark.parametrize(
    ("options", "modules"),
    [
        ({"method": "dense", "n_points": 24}, (race,)),
        ({"m": 6, "n_points": 24, "subdivide": 1}, (race, subdivide)),
    ],
    ids=["dense", "default"],
)
def test_the_curves_are_those_of_exact_tangents(monkeypatch, options, modules):
    monkeypatch.setattr(solver_options_module, "SUBDIVIDE_ABOVE", 0.0)  # every curve gets a finer spline
    metric = _metric(_conv())
    z0, z1 = randn(3, 3, seed=5, scale=1.2), randn(3, 3, seed=6, scale=1.2)
    seen: dict[str, list] = {m.__name__: [] for m in modules}
    for module in modules:

        def spy(metric, work, tangent_dtype=None, parts=module.full_parts, name=module.__name__):
            seen[name].append(tangent_dtype)
            return parts(metric, work, tangent_dtype)

        monkeypatch.setattr(module, "full_parts", spy)
    rounded = fastgeo.geodesics(metric, z0, z1, progress=False, **options)
    assert all(torch.float32 in dtypes for dtypes in seen.values()), seen  # every linearizing phase
    assert rounded.options["fresh tangents"] == "float32"
    for dtypes in seen.values():
        dtypes.clear()
    monkeypatch.setattr(fastgeo.ExpectedMetric, "convolutional_mean", property(lambda self: False))
    exact = fastgeo.geodesics(metric, z0, z1, progress=False, **options)
    assert not any(torch.float32 in dtypes for dtypes in seen.values())
    assert exact.options["fresh tangents"] == "exact"
    assert list(rounded.status) == list(exact.status) == ["converged"] * 3
    torch.testing.assert_close(rounded.lengths, exact.lengths, rtol=1e-8, atol=0)
    assert rounded.lengths.dtype == F64
