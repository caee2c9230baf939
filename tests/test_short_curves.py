"""Curves too short for float32 (fastgeo.solver.short_curves): codes a hair apart get the float64
solve's lengths and an honest ``converged``, not rounding (a 2-D digits VAE: codes 1e-5 apart came
out 10-15x their length, flagged converged, or ``under_resolved`` / ``straight_fallback``)."""

import warnings
from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.solver.short_curves import NOISE_ABOVE, rounding_ratios

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def digits():
    path = DATA / "digits.safetensors"
    return fastgeo.load_generator(path), fastgeo.load_extra(path)["latents"].float()


def near_pairs(Z: torch.Tensor, gaps: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Training codes and a point ``gap`` away from each, in a random direction."""
    g = torch.Generator().manual_seed(5)
    z0 = Z[torch.randint(Z.shape[0], (len(gaps),), generator=g)]
    u = torch.randn(z0.shape, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    return z0, z0 + torch.tensor(gaps)[:, None] * u


def test_near_codes_get_the_float64_lengths_and_converge(digits, one_thread):
    metric, Z = digits
    z0, z1 = near_pairs(Z, [1e-5, 3e-5, 1e-4, 1e-3, 3e-3, 1e-2])
    assert bool((rounding_ratios(metric, z0, z1, 96) > NOISE_ABOVE).all())  # all of them short
    got = fastgeo.geodesics(metric, z0, z1, progress=False)
    want = fastgeo.geodesics(metric.to(torch.float64), z0.double(), z1.double(), progress=False)
    assert got.lengths.dtype == torch.float32 and got.curves.coeffs.dtype == torch.float32
    assert (got.status == "converged").all(), got.status
    torch.testing.assert_close(got.lengths.double(), want.lengths, rtol=1e-5, atol=0)
    assert bool((got.iterations <= 10).all()), got.iterations  # no wandering in rounding noise


def test_short_and_long_curves_of_one_call_equal_them_alone(digits, one_thread):
    """The short curves go to a float64 solve, the rest stay in float32: every row is what it is
    alone (a curve's result does not depend on its batch), in the caller's order."""
    metric, Z = digits
    near0, near1 = near_pairs(Z, [1e-5, 1e-3])
    g = torch.Generator().manual_seed(6)
    i, j = torch.randint(Z.shape[0], (2, 3), generator=g)
    z0 = torch.cat([Z[i[:2]], near0[:1], Z[i[2:]], near0[1:]])
    z1 = torch.cat([Z[j[:2]], near1[:1], Z[j[2:]], near1[1:]])
    short = rounding_ratios(metric, z0, z1, 96) > NOISE_ABOVE
    assert short.tolist() == [False, False, True, False, True]
    res = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert (res.status == "converged").all(), res.status
    assert torch.equal(res.curves.z0, z0) and torch.equal(res.curves.z1, z1)
    for b in range(5):
        alone = fastgeo.geodesics(metric, z0[b : b + 1], z1[b : b + 1], progress=False)
        assert torch.equal(res.lengths[b : b + 1], alone.lengths), b
        assert torch.equal(res.curves.coeffs[b : b + 1], alone.curves.coeffs), b
        assert res.status[b] == alone.status[0] and res.iterations[b] == alone.iterations[0]


def test_a_result_passed_back_as_init_keeps_the_float64_route(digits, one_thread):
    """With ``init`` (the documented pass-back of a result, or zeros) the short curves still go to
    the float64 solve, from their rows of init: converged, the lengths of the call without init."""
    metric, Z = digits
    z0, z1 = near_pairs(Z, [1e-4, 3e-4, 1e-2])
    first = fastgeo.geodesics(metric, z0, z1, progress=False)
    back = {"init": first.curves.coeffs, "m": first.curves.basis.m}
    again = fastgeo.geodesics(metric, z0, z1, progress=False, **back)
    zeros = fastgeo.geodesics(metric, z0, z1, init=torch.zeros(3, 24, 2), progress=False)
    for res in (again, zeros):
        assert (res.status == "converged").all(), res.status
        torch.testing.assert_close(res.lengths, first.lengths, rtol=1e-5, atol=0)


def test_a_matrix_of_near_duplicate_codes_converges(digits, one_thread):
    metric, Z = digits
    z0, z1 = near_pairs(Z, [1e-5, 1e-3])
    codes = torch.cat([z0[:1], z1[:1], z0[1:], z1[1:]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no "did not converge" warning
        D, report = fastgeo.pairwise_distances(metric, codes, progress=False, return_report=True)
    assert (report.status == "converged").all()
    want = fastgeo.geodesics(metric.to(torch.float64), z0.double(), z1.double(), progress=False).lengths
    torch.testing.assert_close(torch.stack([D[0, 1], D[2, 3]]).double(), want, rtol=1e-5, atol=0)


def test_a_mean_that_cannot_be_converted_is_solved_in_float32(digits, one_thread):
    """A plain function mean has no float64 copy: its short curves are solved as before (finite
    lengths, never longer than the straight line), not refused."""
    metric, Z = digits
    plain = fastgeo.ExpectedMetric(lambda z: metric.mean(z), metric.precision)
    with pytest.raises(TypeError):
        plain.to(torch.float64)
    z0, z1 = near_pairs(Z, [1e-3, 1e-2])
    res = fastgeo.geodesics(plain, z0, z1, progress=False)
    assert bool(torch.isfinite(res.lengths).all()) and bool((res.lengths <= res.straight_lengths).all())


@pytest.mark.parametrize("options", [dict(method="paper"), dict(method="dense", n_points=16)])
def test_near_codes_of_the_paper_and_dense_methods_are_solved_in_float64_too(digits, options, one_thread):
    """method="paper" / "dense" kept short float32 curves in float32: lengths 2-3.6x long flagged
    converged (paper), 1.6-3.4 % long under_resolved (dense)."""
    metric, Z = digits
    z0, z1 = near_pairs(Z, [1e-5, 1e-3])
    got = fastgeo.geodesics(metric, z0, z1, progress=False, **options)
    with torch.no_grad():
        chord = metric.to(torch.float64).length(torch.stack([z0.double(), z1.double()], 1))
    assert got.lengths.dtype == torch.float32
    torch.testing.assert_close(got.lengths.double(), chord, rtol=1e-4, atol=0)
    assert (got.status == "converged").all(), got.status
