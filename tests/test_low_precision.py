"""Tangents pushed in bfloat16 (``fastgeo.decoders.low_precision``): where they are used, that the
stacked forward mode's value stays exact and its tangents within bfloat16's rounding of the
float32 ones (every layer kind that reads a parameter, normalizations and softmax; PReLU's chains
are piecewise linear and keep float32 tangents), that the lagged solver takes every
gradient by reverse mode then (the lengths agree with float32 tangents, statuses too), and that
results stay independent of the batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import randn
from tangent_checks import init_
from test_by_tensor import ChannelScale, OutputAffine
from torch import nn

import fastgeo
from fastgeo.decoders import low_precision, stacked_chain, value_and_tangents
from fastgeo.solver.levenberg_marquardt import levenberg_marquardt
from fastgeo.solver.options import solver_options
from fastgeo.solver.problem import Grid, full_parts
from fastgeo.solver.result import Work

DATA = Path(__file__).parent / "data"
BF16 = torch.bfloat16
# bfloat16 keeps 8 bits: ~0.4 % per rounding, a few roundings per layer
BF16_TOL = 3e-2


@pytest.fixture
def enabled(monkeypatch):
    monkeypatch.setattr(low_precision, "ENABLED", True)


def _norms() -> nn.Module:
    return nn.Sequential(
        nn.Linear(3, 4 * 4 * 4), nn.LayerNorm(64), nn.Mish(), nn.Unflatten(1, (4, 4, 4)),
        nn.ConvTranspose2d(4, 4, 4, 2, 1), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 4, 3, padding=1),
        nn.GroupNorm(2, 4), nn.ELU(), nn.Conv2d(4, 1, 3, padding=1), nn.Flatten(), nn.Sigmoid(),
    )  # fmt: skip


DECODERS = {
    "mlp": lambda: nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 32), nn.ELU(), nn.Linear(32, 20)),
    "norms_conv": _norms,
    "by_tensor": OutputAffine,
    "softmax": lambda: nn.Sequential(nn.Linear(3, 40), nn.Unflatten(1, (4, 10)), nn.Softmax(1), nn.Flatten()),
    "channel_scale_exp": ChannelScale,
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_tangents_in_bfloat16_round_the_float32_ones(name):
    model = init_(DECODERS[name]()).float()
    z = randn(9, 3, dtype=torch.float32, seed=2, scale=1.5)
    tangents = randn(3, 9, 3, dtype=torch.float32, seed=3)
    assert stacked_chain(model, z[:4]) is not None
    value, out = value_and_tangents(model, z, tangents)
    value_lo, out_lo = value_and_tangents(model, z, tangents, BF16)
    assert value_lo.dtype == out_lo.dtype == torch.float32
    # the value apart, in float32 (its GEMMs have other row counts: equal to rounding, any threads)
    torch.testing.assert_close(value_lo, value, rtol=1e-5, atol=1e-5)
    err = float((out_lo - out).abs().max() / out.abs().max())
    assert 0 < err < BF16_TOL, err  # rounded (so: pushed in bfloat16), and only rounded


def test_float64_and_generic_decoders_ignore_it():
    model = init_(DECODERS["mlp"]())  # float64
    z = randn(5, 3, dtype=torch.float64, seed=4)
    t = randn(2, 5, 3, dtype=torch.float64, seed=5)
    assert torch.equal(value_and_tangents(model, z, t, torch.float64)[1], value_and_tangents(model, z, t)[1])

    def fn(z):  # no module: torch.func
        return torch.sin(z) @ torch.ones(3, 4, dtype=z.dtype)

    z32, t32 = z.float(), t.float()
    assert torch.equal(value_and_tangents(fn, z32, t32, BF16)[1], value_and_tangents(fn, z32, t32)[1])


def test_where_it_is_used(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(low_precision, "ENABLED", True)
    assert solver_options(torch.float32, 12, 50, device=cpu).tangent_dtype is BF16
    assert solver_options(torch.float32, 12, 50, device=cpu).summary()["tangents"] == "bfloat16"
    assert solver_options(torch.float32, 12, 50).tangent_dtype is None  # device unknown
    assert solver_options(torch.float64, 12, 50, device=cpu).tangent_dtype is None
    assert solver_options(torch.float32, 2, 50, device=cpu).tangent_dtype is None  # not lagged
    kinks = solver_options(torch.float32, 12, 50, device=cpu, piecewise_linear=True)
    assert kinks.tangent_dtype is None  # a rounded input may cross a kink
    assert solver_options(torch.float32, 12, 50, method="dense", device=cpu).tangent_dtype is None
    monkeypatch.setattr(low_precision, "ENABLED", False)
    assert solver_options(torch.float32, 12, 50, device=cpu).summary()["tangents"] == "exact"


def test_the_environment_decides_before_the_hardware(monkeypatch):
    monkeypatch.setattr(low_precision, "ENABLED", None)
    monkeypatch.setenv(low_precision.ENV, "1")
    assert low_precision.bfloat16_is_fast(torch.device("cuda"))
    monkeypatch.setenv(low_precision.ENV, "0")
    assert not low_precision.bfloat16_is_fast(torch.device("cpu"))
    monkeypatch.setenv(low_precision.ENV, "yes")
    with pytest.raises(ValueError, match=low_precision.ENV):
        low_precision.bfloat16_is_fast(torch.device("cpu"))
    monkeypatch.delenv(low_precision.ENV)
    assert not low_precision.bfloat16_is_fast(torch.device("cuda"))  # unmeasured on GPUs


def test_rounded_jacobians_need_exact_gradients():
    metric = fastgeo.load_generator(DATA / "mlp12_small.safetensors")
    z0, z1 = randn(2, 12, dtype=torch.float32, seed=6), randn(2, 12, dtype=torch.float32, seed=7)
    grid = Grid.of(solver_options(metric.dtype, 12, metric.data_dim).basis, 24, z0)
    coeffs = z0.new_zeros(2, grid.psi.shape[1], 12)
    with pytest.raises(ValueError, match="gradient"):
        levenberg_marquardt(full_parts(metric, Work(), BF16), z0, z1, coeffs, grid, 5, 1e-6, rounded=True)


@pytest.fixture(scope="module")
def pairs():
    path = DATA / "mlp12_small.safetensors"
    Z = fastgeo.load_extra(path)["latents"]
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(Z.shape[0], (2, 8), generator=g)
    return fastgeo.load_generator(path), Z[i], Z[j]


def test_lengths_agree_with_float32_tangents(pairs, monkeypatch, one_thread):
    """d = 12 (lagged): the same curves to the solver's tolerance, the same statuses."""
    metric, z0, z1 = pairs
    monkeypatch.setattr(low_precision, "ENABLED", False)
    exact = fastgeo.geodesics(metric, z0, z1, progress=False)
    monkeypatch.setattr(low_precision, "ENABLED", True)
    rounded = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert exact.options["tangents"] == "exact" and rounded.options["tangents"] == "bfloat16"
    assert (rounded.status == exact.status).all()
    torch.testing.assert_close(rounded.lengths, exact.lengths, rtol=2e-4, atol=0)


def test_results_do_not_depend_on_the_batch(pairs, enabled, one_thread):
    metric, z0, z1 = pairs
    whole = fastgeo.geodesics(metric, z0, z1, progress=False)
    for idx in (torch.tensor([3]), torch.tensor([5, 0, 7]), torch.arange(8).flip(0)):
        part = fastgeo.geodesics(metric, z0[idx], z1[idx], progress=False)
        assert torch.equal(part.lengths, whole.lengths[idx]), idx
        assert (part.status == whole.status[idx.numpy()]).all(), idx
