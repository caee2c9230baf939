"""The solver on the small trained generators of latent dimension above 2 (tests/data, made by
``make_real_generators.py``): a d = 5 convolutional decoder (glyphs, D = 784) and a d = 12 MLP
(shapes, D = 784). The default against the dense oracle, the lagged Gauss-Newton mode against the
exact one, batch independence in lagged mode, and its gradient model against the linearization;
shapes and finite values at d = 64."""

from __future__ import annotations

from pathlib import Path

import kept_oracles
import pytest
import torch
from helpers import assert_close_rel

import fastgeo
from fastgeo.benchmarks import accuracy
from fastgeo.benchmarks.pairs import pair_indices
from fastgeo.curves import BSplineBasis, evaluate
from fastgeo.io import load_extra
from fastgeo.solver.linearize import linearize
from fastgeo.solver.problem import Grid, full_gradient, full_parts
from fastgeo.solver.result import Work

DATA = Path(__file__).parent / "data"
PAIRS = 6  # 2 across classes, 4 within


def _pairs(name: str, n: int = PAIRS, seed: int = 0):
    path = DATA / f"{name}.safetensors"
    metric = fastgeo.load_generator(path)
    extra = load_extra(path)
    Z, labels = extra["latents"].float(), extra["labels"]
    I, J = pair_indices(labels, n, seed)
    return metric, Z[I], Z[J]


@pytest.fixture(scope="module", params=["conv5_small", "mlp12_small"])
def generator(request):
    return request.param, *_pairs(request.param)


def test_default_matches_dense_oracle(generator):
    """Issue targets: mean excess <= 0.05 %, worst <= 0.5 % (here on PAIRS pairs; the oracle's
    polylines have 64 nodes to keep this test short: an upper bound of the geodesic, so the
    excess measured is a lower bound of the true one; its starts explore without the latent graph,
    whose float64 build would take most of this test's time; its lengths are kept, see
    kept_oracles.py)."""
    name, metric, z0, z1 = generator
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1)
        measured = accuracy.measured_lengths(metric.to(torch.float64), res.points(accuracy.MEASURE_POINTS))
    excess = measured / kept_oracles.dense_lengths(name, DATA / f"{name}.safetensors", metric, z0, z1) - 1
    assert res.converged.all(), res.status
    assert excess.mean() <= 5e-4 and excess.max() <= 5e-3, (name, excess)
    assert res.options["lagged"] == (metric.latent_dim >= 8)


@pytest.fixture(scope="module")
def mlp12():
    return _pairs("mlp12_small", 8, seed=1)


def test_lagged_gauss_newton_reaches_the_exact_modes_curves_with_fewer_jacobians(mlp12):
    metric, z0, z1 = mlp12
    with torch.no_grad():
        lagged = fastgeo.geodesics(metric, z0, z1, linearize="lagged")
        exact = fastgeo.geodesics(metric, z0, z1, linearize="always")
    assert lagged.converged.all() and exact.converged.all()
    # Same optimum: the lengths agree to the solver's tolerance, not by accident of the start.
    assert_close_rel(lagged.lengths, exact.lengths, 2e-4)
    assert lagged.decoder_jvps < 0.8 * exact.decoder_jvps


def test_lagged_mode_is_batch_independent(mlp12, one_thread):
    """Every pair of the batch solved alone gives the same length, bit for bit, and the same
    status (at one thread: with two, OpenMP splits some reductions by the batch's size, and the
    last bits of a length can differ, within float32 rounding)."""
    metric, z0, z1 = mlp12
    with torch.no_grad():
        batch = fastgeo.geodesics(metric, z0, z1, linearize="lagged")
        for k in range(z0.shape[0]):
            alone = fastgeo.geodesics(metric, z0[k : k + 1], z1[k : k + 1], linearize="lagged")
            assert alone.lengths[0] == batch.lengths[k], k
            assert alone.status[0] == batch.status[k], k


def test_gradient_model_equals_the_linearization(mlp12):
    """The reverse-mode gradient of the energy (lagged mode) and the one of the Gauss-Newton
    linearization (d tangents per point) are the same vector, in float64."""
    metric, z0, z1 = mlp12
    m64 = metric.to(torch.float64)
    a, b = z0[:3].double(), z1[:3].double()
    grid = Grid.of(BSplineBasis(6), 20, a)
    coeffs = 0.3 * torch.randn(3, 6, a.shape[1], generator=torch.Generator().manual_seed(0), dtype=a.dtype)
    pts = evaluate(a, b, coeffs, grid.psi, grid.t)
    idx = torch.arange(3)
    s, grad, _ = linearize(full_parts(m64, Work())(pts, idx), grid.psi)
    s2, g_points = full_gradient(m64, Work())(pts, idx)
    grad2 = torch.matmul(grid.psi.T, g_points).reshape(3, -1)
    assert_close_rel(s2, s, 1e-12)
    assert_close_rel(grad2, grad, 1e-10)


def test_latent_dimension_64_shapes_and_finite_results():
    """A random MLP decoder with d = 64 (D = 100): results of the right shapes, finite, the
    straight line never beaten by more than it should be, gradients of the length finite."""
    torch.manual_seed(0)
    d, D = 64, 100
    decoder = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.Tanh(), torch.nn.Linear(64, D))
    centers = torch.randn(32, d)
    precision = fastgeo.RBFPrecision(
        centers, torch.full((32,), 0.05), torch.rand(D, 32), torch.full((D,), 0.1)
    )
    metric = fastgeo.ExpectedMetric(decoder, precision)
    z0, z1 = torch.randn(3, d), torch.randn(3, d)
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1)
    assert res.options["lagged"]
    assert res.lengths.shape == (3,) and res.points(10).shape == (3, 10, d)
    assert torch.isfinite(res.lengths).all() and (res.lengths <= res.straight_lengths).all()
    pts = res.points(16).detach().requires_grad_(True)
    metric.length(pts).sum().backward()
    assert pts.grad is not None and torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0


@pytest.mark.parametrize("n", [47, 127, 129])
def test_curve_segments_do_not_depend_on_the_batch(mlp12, n, one_thread):
    """A curve measured on an odd number of points (the solver's midpoint and doubling grids)
    has the same segments, bit for bit, alone and among others: ExpectedMetric.decode pads each
    curve's points to whole blocks of rows (BLAS rounds rows of a partial block differently)."""
    metric, z0, _ = mlp12
    g = torch.Generator().manual_seed(n)
    pts = z0[:, None, :] + 0.3 * torch.randn(z0.shape[0], n, z0.shape[1], generator=g)
    with torch.no_grad():
        together = metric.segment_sqdist(pts)
        for k in range(pts.shape[0]):
            assert torch.equal(metric.segment_sqdist(pts[k : k + 1])[0], together[k]), k


def test_a_flat_valley_is_followed_to_its_end():
    """Seed 3's pair 28 of the d = 12 basins benchmark: the energy falls by a few 1e-6 per step
    for ~100 steps (true curvature ~0 along the Gauss-Newton steps) before it drops again; the
    float32 tolerance of 1e-5 stopped there, 0.76 % long against the dense oracle. A float64 solve
    that linearizes every step is the reference here (within 0.01 % of the oracle)."""
    metric, z0, z1 = _pairs("mlp12_small", 48, seed=3)
    z0, z1 = z0[28:29], z1[28:29]
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1)
        m64 = metric.to(torch.float64)
        strong = fastgeo.geodesics(m64, z0.double(), z1.double(), m=24, n_points=96, linearize="always")
        excess = accuracy.excess(m64, res.points(accuracy.MEASURE_POINTS), strong)
    assert res.converged.all(), res.status
    assert excess.max() <= 1e-3, excess
