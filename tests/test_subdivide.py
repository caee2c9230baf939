"""Subdivision (fastgeo/solver/subdivide.py): lifting a B-spline into the one with halved knot spans
is exact; curves predicted to gain are solved on in it and get shorter; the others keep their
curve and length; the option is validated; results carry the finer basis whatever the batch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_close_rel

import fastgeo
from fastgeo.curves import BSplineBasis, PolynomialBasis, evaluate, time_grid
from fastgeo.discrete import energy_from_segments
from fastgeo.solver.defaults import SUBDIVIDE_ABOVE, SUBDIVISIONS
from fastgeo.solver.finer_gain import FinerGains, finer_basis, lift_matrix
from fastgeo.solver.linearize import point_products
from fastgeo.solver.measure import curve_lengths
from fastgeo.solver.options import solver_options
from fastgeo.solver.problem import Grid, full_parts
from fastgeo.solver.result import Work

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("m", [2, 5, 24])
def test_lifting_into_halved_spans_is_exact(m):
    """The same curve, point for point (float64, 1e-12), in 2 m - 1 functions."""
    basis = BSplineBasis(m)
    finer = finer_basis(basis)
    assert finer.m == 2 * m - 1
    coeffs = torch.randn(3, m, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
    lifted = torch.matmul(lift_matrix(basis, finer, coeffs), coeffs)
    t = time_grid(301, coeffs)
    torch.testing.assert_close(finer(t) @ lifted, basis(t) @ coeffs, rtol=0, atol=1e-12)


def test_lifting_refuses_a_basis_that_does_not_contain_the_curve():
    with pytest.raises(ValueError, match="does not contain"):
        lift_matrix(BSplineBasis(6), BSplineBasis(8), torch.zeros(1))


def test_the_option_is_validated():
    metric = fastgeo.load_generator(DATA / "two_moons.safetensors")
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="subdivide"):
        fastgeo.geodesics(metric, z, z + 1, family="legendre", subdivide=True)
    with pytest.raises(ValueError, match="subdivide"):
        fastgeo.geodesics(metric, z, z + 1, method="paper", subdivide=True)
    with pytest.raises(TypeError, match="subdivide"):
        fastgeo.geodesics(metric, z, z + 1, subdivide="yes")
    with pytest.raises(ValueError, match="subdivide"):
        fastgeo.geodesics(metric, z, z + 1, subdivide=-1)
    assert fastgeo.geodesics(metric, z, z + 1, family="legendre").options["subdivide"] == 0
    levels = [fastgeo.geodesics(metric, z, z + 1, subdivide=s).options["subdivide"] for s in (True, 1, 3)]
    assert levels == [SUBDIVISIONS, 1, 3]
    assert fastgeo.geodesics(metric, z, z + 1).curves.basis.m == 4 * (24 - 1) + 1  # spans halved twice


@pytest.fixture(scope="module")
def both():
    """48 digits pairs with and without subdivision, at one thread."""
    path = DATA / "digits.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"]
    i, j = torch.randint(Z.shape[0], (2, 48), generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        on = fastgeo.geodesics(metric, Z[i], Z[j])
        off = fastgeo.geodesics(metric, Z[i], Z[j], subdivide=False)
    finally:
        torch.set_num_threads(threads)
    return metric, on, off


def test_curves_predicted_to_gain_are_solved_on_and_get_shorter(both):
    metric, on, off = both
    assert on.curves.basis.m - 1 == 4 * (off.curves.basis.m - 1)
    assert on.options["subdivide"] == SUBDIVISIONS and not off.options["subdivide"]
    lifted = on.resolution > off.resolution
    assert 0 < int(lifted.sum()) < len(on), "some curves, not all, gain here"
    twice, four = 2 * off.resolution[lifted], 4 * off.resolution[lifted]
    assert bool(((on.resolution[lifted] == twice) | (on.resolution[lifted] == four)).all())
    assert bool((on.iterations[lifted] > off.iterations[lifted]).all())
    # Shorter as curves (measured alike on 1024 points), by about the predicted amount's half.
    work = Work()
    long, short = (curve_lengths(metric.to(torch.float64), _f64(r.curves), 1024, work) for r in (off, on))
    gain = (long - short) / long
    assert bool((gain[lifted] > 0).all())
    assert float(gain[lifted].max()) > SUBDIVIDE_ABOVE / 4
    assert list(on.status) == list(off.status)


def test_the_other_curves_keep_their_curve_and_length(both):
    metric, on, off = both
    kept = on.resolution == off.resolution
    t = time_grid(257, on.curves.z0)
    torch.testing.assert_close(on.curves.at(t)[kept], off.curves.at(t)[kept], rtol=0, atol=1e-5)
    assert_close_rel(on.lengths[kept], off.lengths[kept], 1e-5)
    assert torch.equal(on.energies[kept], off.energies[kept])


def test_results_are_in_the_finer_basis_whatever_the_batch(both, one_thread):
    metric, on, off = both
    alone = fastgeo.geodesics(metric, on.curves.z0[:1], on.curves.z1[:1])
    assert alone.curves.coeffs.shape[1] == on.curves.coeffs.shape[1]
    assert torch.equal(alone.lengths, on.lengths[:1])


@pytest.fixture(scope="module")
def levels():
    """16 pairs of the d = 12 generator with two levels of subdivision (the default) and one, at
    one thread; the calls of ``_predict`` at the second level (spans halved twice) counted."""
    from fastgeo.solver import subdivide

    path = DATA / "mlp12_small.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"]
    i, j = torch.randint(Z.shape[0], (2, 16), generator=torch.Generator().manual_seed(3))
    predicted = []
    real = subdivide._predict

    def spy(metric, res, opts, work, rows, grid, record):
        predicted.append((grid.psi.shape[1], rows.numel()))
        return real(metric, res, opts, work, rows, grid, record)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    subdivide._predict = spy
    try:
        two = fastgeo.geodesics(metric, Z[i], Z[j], progress=False)
        one = fastgeo.geodesics(metric, Z[i], Z[j], subdivide=1, progress=False)
    finally:
        subdivide._predict = real
        torch.set_num_threads(threads)
    return metric, two, one, predicted


def test_a_second_level_takes_on_the_curves_still_predicted_to_gain(levels):
    metric, two, one, predicted = levels
    assert two.curves.basis.m - 1 == 2 * (one.curves.basis.m - 1) == 4 * (12 - 1)
    n = one.n_points
    again = two.resolution == 4 * n
    assert 0 < int(again.sum()) < len(two), "some curves, not all, gain at the second level here"
    assert bool((one.resolution[again] == 2 * n).all()), "only curves the first level solved"
    # The others keep the first level's curve and length (lifted into the finer basis).
    kept = ~again
    t = time_grid(257, two.curves.z0)
    torch.testing.assert_close(two.curves.at(t)[kept], one.curves.at(t)[kept], rtol=0, atol=1e-5)
    assert_close_rel(two.lengths[kept], one.lengths[kept], 1e-5)
    # Those taken on get shorter as curves (measured alike on 1024 points).
    work = Work()
    long, short = (curve_lengths(metric.to(torch.float64), _f64(r.curves), 1024, work) for r in (one, two))
    assert bool((short[again] < long[again]).all())
    assert list(two.status) == list(one.status)
    # Every curve the first level solved converged and recorded its gain in the next basis: the
    # second level linearized none of them again to predict it.
    assert bool(two.converged.all())
    assert not [rows for m, rows in predicted if m == two.curves.basis.m]


def test_a_polynomial_family_is_not_subdivided():
    metric = fastgeo.load_generator(DATA / "two_moons.safetensors")
    Z = fastgeo.load_extra(DATA / "two_moons.safetensors")["latents"]
    res = fastgeo.geodesics(metric, Z[:3], Z[-3:], family="legendre", m=6)
    assert isinstance(res.curves.basis, PolynomialBasis) and res.curves.basis.m == 6


def _f64(curves):
    return type(curves)(curves.z0.double(), curves.z1.double(), curves.coeffs.double(), curves.basis)


@pytest.mark.parametrize(
    "name,rtol", [("digits", 1e-3), ("mlp12_small", 0.05)], ids=["2-D, every step linearized", "d=12, lagged"]
)
def test_the_recorded_gains_are_those_of_the_final_curves(name, rtol, monkeypatch, one_thread):
    """The solver records each converged curve's predicted gain from its last linearization (no
    decoder work): equal to a fresh prediction on the final curve (2-D: the final point's own
    linearization; lagged, d = 12: the last fresh one, a step or two before), recorded for every
    curve here."""
    path = DATA / f"{name}.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"]
    i, j = torch.randint(Z.shape[0], (2, 8), generator=torch.Generator().manual_seed(5))
    module = sys.modules["fastgeo.solver.geodesics"]
    seen = {}
    real = module.subdivide_curves

    def spy(metric, res, opts, work, first, gains):
        seen.update(gains=gains.clone(), coeffs=res.curves.coeffs.clone(), opts=opts)
        return real(metric, res, opts, work, first, gains)

    monkeypatch.setattr(module, "subdivide_curves", spy)
    res = fastgeo.geodesics(metric, Z[i], Z[j])
    opts = seen["opts"]
    finer = finer_basis(opts.basis)
    lifted = torch.matmul(lift_matrix(opts.basis, finer, seen["coeffs"]), seen["coeffs"])
    grid = Grid.of(finer, opts.n_points, lifted)
    pts = evaluate(Z[i], Z[j], lifted, grid.psi, grid.t)
    s, v, G, C = point_products(full_parts(metric, Work())(pts, None))
    fresh = torch.full((8,), torch.nan)
    FinerGains(grid.psi, fresh, banded=not opts.secant).record(
        torch.arange(8), (v, G, C), energy_from_segments(s)
    )
    assert bool(res.converged.all()) and not bool(seen["gains"].isnan().any())
    assert_close_rel(seen["gains"], fresh, rtol, atol=1e-7)


def test_a_results_curves_start_another_call_with_its_basis():
    """res.curves.coeffs (4 m - 3 functions) as init: refused with a message saying what to pass,
    accepted with m=res.curves.basis.m, and no longer for it."""
    metric = fastgeo.load_generator(DATA / "two_moons.safetensors")
    Z = fastgeo.load_extra(DATA / "two_moons.safetensors")["latents"]
    res = fastgeo.geodesics(metric, Z[:3], Z[-3:])
    with pytest.raises(ValueError, match="res.curves.basis.m"):
        fastgeo.geodesics(metric, Z[:3], Z[-3:], init=res.curves.coeffs)
    m = res.curves.basis.m
    again = fastgeo.geodesics(
        metric, Z[:3], Z[-3:], init=res.curves.coeffs, m=m, n_points=4 * (m + 1), subdivide=False, refine=1
    )
    assert again.curves.basis.m == res.curves.basis.m
    # No longer, but for the lengths' own error estimates (~1e-4 relative here).
    assert bool((again.lengths <= res.lengths + res.length_errors + again.length_errors).all())
    # From converged curves, a few iterations: the race's grid has two points per control point
    # (on the default's 48 points, 93 control points wandered for 42-316 iterations, and under
    # torch 2.6 one curve ended in a straight fallback).
    assert list(again.status) == ["converged"] * 3
    assert int(again.iterations.max()) <= 20
    opts = solver_options(torch.float32, 2, metric.data_dim, m=m, n_points=4 * (m + 1))
    assert opts.coarse_points == 2 * m


def test_a_result_passed_back_keeps_its_basis():
    """init=res.curves.coeffs with m=res.curves.basis.m alone (as a warm-started loop passes it):
    the points follow m and the levels of subdivision it has taken are not taken again, call after
    call (they grew 93 -> 369 -> 1,473 functions on digits, on 96 points, straight_fallback)."""
    metric = fastgeo.load_generator(DATA / "digits.safetensors")
    Z = fastgeo.load_extra(DATA / "digits.safetensors")["latents"]
    res = fastgeo.geodesics(metric, Z[:4], Z[100:104], progress=False)
    m = res.curves.basis.m
    assert m == 4 * 24 - 3
    opts = solver_options(torch.float32, 2, metric.data_dim, m=m)
    assert (opts.n_points, opts.subdivide) == (4 * m, 0)
    assert solver_options(torch.float32, 2, metric.data_dim, m=2 * 24 - 1).subdivide == SUBDIVISIONS - 1
    # asked explicitly, the levels count from the method's basis too (True and 2 took two more)
    for asked in (True, 2, SUBDIVISIONS + 1):
        levels = solver_options(torch.float32, 2, metric.data_dim, m=m, subdivide=asked).subdivide
        assert levels == (1 if asked == SUBDIVISIONS + 1 else 0), (asked, levels)
    with pytest.warns(UserWarning, match="fewer than two points per control point"):
        solver_options(torch.float32, 2, metric.data_dim, m=m, n_points=96)  # res.n_points, with res's m
    cold = res
    for asked in (None, True):
        res = fastgeo.geodesics(
            metric, Z[:4], Z[100:104], init=res.curves.coeffs, m=m, subdivide=asked, progress=False
        )
        assert res.curves.basis.m == m and bool(res.converged.all())
        torch.testing.assert_close(res.lengths, cold.lengths, rtol=1e-4, atol=0)  # measured to 1e-4


def test_float64_small_batches_equal_ends_and_no_resolution_check():
    """float64, batch_size=1, check_resolution=False and a pair with equal ends in one call: every
    curve finite and converged, the equal pair at distance 0, lengths those of batch_size=None."""
    metric = fastgeo.load_generator(DATA / "digits.safetensors").to(torch.float64)
    Z = fastgeo.load_extra(DATA / "digits.safetensors")["latents"].double()
    i, j = torch.randint(Z.shape[0], (2, 6), generator=torch.Generator().manual_seed(11))
    z0, z1 = Z[i], Z[j]
    z1[2] = z0[2]
    one = fastgeo.geodesics(metric, z0, z1, batch_size=1, check_resolution=False, refine=1, corridors=0)
    many = fastgeo.geodesics(metric, z0, z1, check_resolution=False, refine=1, corridors=0)
    assert one.curves.basis.m == 93 and bool(torch.isfinite(one.lengths).all())
    assert bool((one.resolution > 96).any()), "some curve subdivided here"
    assert torch.equal(one.resolution, many.resolution)
    assert float(one.lengths[2]) == 0.0 and bool(one.converged.all())
    assert_close_rel(one.lengths, many.lengths, 1e-9)


def test_identical_calls_give_identical_curves(one_thread):
    """Bit for bit, call after call (LAPACK's least squares varied in its last bits between calls,
    and the lift with it: the matrix is rounded to its exact multiples of 1/16 now)."""
    metric = fastgeo.load_generator(DATA / "two_moons.safetensors").to(torch.float64)
    Z = fastgeo.load_extra(DATA / "two_moons.safetensors")["latents"].double()
    i, j = torch.randint(Z.shape[0], (2, 6), generator=torch.Generator().manual_seed(2))
    first = fastgeo.geodesics(metric, Z[i], Z[j], max_iter=20)
    for _ in range(4):
        again = fastgeo.geodesics(metric, Z[i], Z[j], max_iter=20)
        assert torch.equal(again.curves.coeffs, first.curves.coeffs)
        assert torch.equal(again.lengths, first.lengths)
    lift = lift_matrix(BSplineBasis(24), finer_basis(BSplineBasis(24)), Z)
    assert torch.equal(lift * 16, (lift * 16).round())


def test_a_curve_is_subdivided_once_beside_curves_the_resolution_check_solved_again(monkeypatch):
    """A call whose curves sit at n and 2 n points (the resolution check solved some again): a curve
    solved on in the finer basis at 2 n is not taken again with the curves that were at 2 n (it
    was solved twice, at 2 n and 4 n, before the groups were fixed up front)."""
    from fastgeo.solver import subdivide

    metric = fastgeo.load_generator(DATA / "digits.safetensors")
    Z = fastgeo.load_extra(DATA / "digits.safetensors")["latents"]
    i, j = torch.randint(Z.shape[0], (2, 3), generator=torch.Generator().manual_seed(5))
    res = fastgeo.geodesics(metric, Z[i], Z[j], subdivide=False, check_resolution=False, progress=False)
    n = res.n_points
    res.resolution = torch.tensor([n, 2 * n, n])  # as if the second had been solved again at 2 n
    gains = torch.tensor([1.0, 1.0, 0.0])  # the first two predicted to gain a lot, the third not
    solved = []
    original = subdivide.plain_then_secant

    def spy(parts, z0, z1, coeffs, grid, *args, **kwargs):
        solved.append((grid.n, z0.shape[0]))
        return original(parts, z0, z1, coeffs, grid, *args, **kwargs)

    monkeypatch.setattr(subdivide, "plain_then_secant", spy)
    opts = solver_options(torch.float32, 2, metric.data_dim, subdivide=1)
    with torch.no_grad():
        subdivide.subdivide_curves(metric, res, opts, Work(), None, gains)
    assert sorted(solved) == [(2 * n, 1), (4 * n, 1)]
    assert res.resolution.tolist() == [2 * n, 4 * n, n]


def test_the_second_level_asks_a_larger_gain(levels, monkeypatch, one_thread):
    """NEXT_LEVEL_ASKS scales the threshold per level: asked for an unreachable gain, the second
    level solves nothing and every curve keeps the first level's length."""
    from fastgeo.solver import subdivide

    metric, two, one, _ = levels
    monkeypatch.setattr(subdivide, "NEXT_LEVEL_ASKS", 1e9)
    none = fastgeo.geodesics(metric, two.curves.z0, two.curves.z1, progress=False)
    assert none.curves.basis.m == two.curves.basis.m
    assert torch.equal(none.resolution, one.resolution)
    assert_close_rel(none.lengths, one.lengths, 1e-5)
