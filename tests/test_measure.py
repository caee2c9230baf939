"""Lengths measured to their error estimate (fastgeo.solver.measure): each curve goes to the grid
its own estimate asks for, skipping the grids in between, and its length does not depend on the
other curves it is measured with."""

from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.curves import BSplineBasis, Curves
from fastgeo.solver.measure import MAX_POINTS, measure
from fastgeo.solver.result import Work

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def curves_and_metric():
    """Digits VAE, 12 curves between training codes, from straight to strongly bent."""
    path = DATA / "digits.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"]
    g = torch.Generator().manual_seed(3)
    i, j = torch.randint(Z.shape[0], (2, 12), generator=g)
    basis = BSplineBasis(8)
    scale = torch.linspace(0, 1, 12)[:, None, None]
    coeffs = scale * torch.randn(12, 8, 2, generator=g)
    return metric, Curves(Z[i], Z[j], coeffs, basis)


def test_lengths_are_within_their_estimate_of_the_finest_grid(curves_and_metric, one_thread):
    metric, curves = curves_and_metric
    start = torch.full((len(curves),), 9)
    lengths, errors, points = measure(metric, curves, start, Work())
    assert bool((points < MAX_POINTS).all()) and bool((errors <= 1e-4 * lengths).all())
    # A polyline is never longer than its curve; the estimate bounds what it leaves out (to 2x).
    # In float64: 4096 float32 segments add up visible rounding.
    c64 = Curves(*(x.to(torch.float64) for x in (curves.z0, curves.z1, curves.coeffs)), curves.basis)
    t = torch.linspace(0, 1, MAX_POINTS, dtype=torch.float64)
    with torch.no_grad():
        finest = metric.to(torch.float64).length(c64.at(t))
    gap = (finest - lengths.to(torch.float64)) / finest
    assert float(gap.min()) > -1e-6 and float(gap.max()) < 2e-4, gap
    assert len(set(points.tolist())) > 1  # the curves needed different grids


def test_a_curve_goes_straight_to_the_grid_its_estimate_asks_for(curves_and_metric, one_thread):
    """From 9 points, the bent curves need many doublings: measured on fewer points in all than
    the doubling sequence up to their final grid (a measurement that doubles grid by grid
    evaluates every one of them)."""
    metric, curves = curves_and_metric
    bent = Curves(curves.z0[-1:], curves.z1[-1:], curves.coeffs[-1:], curves.basis)
    work = Work()
    _, _, points = measure(metric, bent, torch.tensor([9]), work)
    n, doubling = 9, 9
    while n < int(points[0]):
        n = 2 * n - 1
        doubling += n
    assert n == int(points[0]) and int(points[0]) >= 9 * 8
    assert work.evals < doubling, (work.evals, doubling)


def test_a_curves_length_does_not_depend_on_the_others_measured_with_it(curves_and_metric, one_thread):
    metric, curves = curves_and_metric
    start = torch.full((len(curves),), 9)
    together = measure(metric, curves, start, Work())
    for k in range(len(curves)):
        one = Curves(curves.z0[k : k + 1], curves.z1[k : k + 1], curves.coeffs[k : k + 1], curves.basis)
        alone = measure(metric, one, start[k : k + 1], Work())
        for a, b in zip(together, alone, strict=True):
            assert torch.equal(a[k : k + 1], b), k


@pytest.mark.parametrize("max_points", [20, 40, 70, 100])
def test_a_finest_grid_not_a_doubling_keeps_a_finite_estimate(curves_and_metric, max_points, one_thread):
    """Curves stopped on a finest grid that is not a doubling of the one before (e.g. 382 -> 4096
    segments by 3056) get a finite error estimate from the grids' own ratio (Richardson with
    r^2 - 1, not 4^k - 1 with k rounded to 0: an infinite estimate)."""
    metric, curves = curves_and_metric
    start = torch.full((len(curves),), 9)
    lengths, errors, points = measure(metric, curves, start, Work(), max_points=max_points)
    assert bool((points == max_points).any())  # some curves did stop there
    assert bool(torch.isfinite(errors).all()), (errors, points)
    stopped = points == max_points
    assert bool((errors[stopped] > 0).all())


def test_short_float32_curves_are_measured_above_the_rounding_floor(one_thread):
    """Codes 3e-4 apart: in float32 the decoder's rounding in 4,096 segment differences adds up to
    several times the length. The measurement sees the length not settle, finds float64 disagree,
    and measures in float64: the float32 lengths equal the float64 solve's and have settled."""
    torch.manual_seed(0)
    d, D, K = 4, 32, 16
    dec = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.Tanh(), torch.nn.Linear(32, D))
    prec = fastgeo.RBFPrecision(torch.randn(K, d), torch.ones(K), torch.rand(D, K) * 20, zeta=1e-2)
    metric = fastgeo.ExpectedMetric(dec, prec)
    z0 = torch.randn(3, d)
    z1 = z0 + 3e-4 * torch.nn.functional.normalize(torch.randn(3, d), dim=1)
    with torch.no_grad():
        r32 = fastgeo.geodesics(metric, z0, z1, progress=False)
        r64 = fastgeo.geodesics(metric.to(torch.float64), z0.double(), z1.double(), progress=False)
    gap = (r32.lengths.double() - r64.lengths).abs() / r64.lengths
    assert float(gap.max()) < 1e-4, gap
    assert bool((r32.length_errors <= 1e-4 * r32.lengths).all()) and r32.converged.all()
    straight_gap = (r32.straight_lengths.double() - r64.straight_lengths).abs() / r64.straight_lengths
    assert float(straight_gap.max()) < 1e-3, straight_gap


def test_float64_codes_a_hair_apart_are_measured_on_grids_their_rounding_allows(one_thread):
    """float64 has no wider type to measure in: codes 1e-13 to 1e-11 apart were measured on finer
    and finer grids whose rounding added up (digits VAE: 1e-11 apart 16-75 % long flagged
    converged, 1e-13 apart up to 38x). Against the metric at the chord, sqrt(v^T G v): 1e-11 apart
    within 1e-4, closer within 1 %."""
    metric = fastgeo.load_generator(DATA / "digits.safetensors").to(torch.float64)
    z0 = fastgeo.load_extra(DATA / "digits.safetensors")["latents"].double()[:4]
    for gap, rtol in ((1e-13, 1e-2), (1e-12, 1e-2), (1e-11, 1e-4)):
        z1 = z0 + gap
        res = fastgeo.geodesics(metric, z0, z1, progress=False)
        v = z1 - z0
        with torch.no_grad():
            want = torch.einsum("bi,bij,bj->b", v, metric.metric_tensor(0.5 * (z0 + z1)), v).sqrt()
        assert bool(((res.lengths / want - 1).abs() < rtol).all()), (gap, res.lengths / want)
