"""Plain Gauss-Newton steps first, the secant model for the curves left iterating
(:mod:`fastgeo.solver.secant_finish`).

On an analytic tanh decoder plain steps leave a curve at the iteration limit that the finish
converges to the same energy; the two phases share one iteration limit; on a trained d = 12 VAE a
finish that starts early reaches the default's lengths, and a curve's result does not depend on
which curves of its batch switch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices
from fastgeo.curves import BSplineBasis
from fastgeo.io import load_extra
from fastgeo.solver import race, secant_finish
from fastgeo.solver.levenberg_marquardt import levenberg_marquardt
from fastgeo.solver.problem import Grid
from fastgeo.solver.result import CONVERGED, MAX_ITER
from fastgeo.solver.secant_finish import plain_then_secant

DATA = Path(__file__).parent / "data"


def _tanh_problem(b: int = 8, d: int = 8, seed: int = 0):
    """A two-layer tanh decoder (d -> 64 -> 32, steep enough that Gauss-Newton leaves out much
    curvature), its parts and point gradient, ``b`` random end points and a straight start."""
    g = torch.Generator().manual_seed(seed)
    W1 = 3.0 * torch.randn(64, d, generator=g, dtype=torch.float64) / d**0.5
    W2 = torch.randn(32, 64, generator=g, dtype=torch.float64) / 8.0

    def f(z):
        return torch.tanh(3.0 * torch.tanh(z @ W1.T) @ W2.T)

    def parts(points, idx):
        n = points.shape[1]
        flat = points.reshape(-1, d)
        J = torch.func.vmap(torch.func.jacrev(f))(flat)  # (P, F, d)
        return [(f(flat).reshape(-1, n, 32), J.transpose(1, 2).reshape(-1, n, d, 32))]

    def gradient(points, idx):
        p = points.detach().requires_grad_(True)
        with torch.enable_grad():
            F = f(p)
            s = (F[:, 1:] - F[:, :-1]).pow(2).sum(-1)
            (grad,) = torch.autograd.grad(s.sum() / 2, p)
        return s.detach(), grad

    z0 = torch.randn(b, d, generator=g, dtype=torch.float64)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    grid = Grid.of(BSplineBasis(12), 48, z0)
    return parts, gradient, z0, z1, torch.zeros(b, 12, d, dtype=torch.float64), grid


def test_the_finish_converges_a_curve_plain_steps_leave_at_the_limit(one_thread, monkeypatch):
    parts, gradient, z0, z1, c0, grid = _tanh_problem()
    _, e_ref, s_ref, it_ref = levenberg_marquardt(parts, z0, z1, c0, grid, 300, 1e-10, gradient, False)
    assert bool((s_ref == CONVERGED).all())
    slow = int(it_ref.argmax())  # plain steps need ~100 iterations for this curve
    limit = int(it_ref[slow]) - 20
    assert limit > 60, it_ref
    _, _, s_plain, _ = levenberg_marquardt(parts, z0, z1, c0, grid, limit, 1e-10, gradient, False)
    assert int(s_plain[slow]) == MAX_ITER

    monkeypatch.setattr(secant_finish, "SECANT_AFTER", 30)
    _, e, s, it = plain_then_secant(parts, z0, z1, c0, grid, limit, 1e-10, gradient, False)
    assert int(s[slow]) == CONVERGED
    assert bool((it <= limit).all()) and int(it[slow]) > 30
    fast = it_ref < 30  # never switched: the plain call alone, bit for bit
    torch.testing.assert_close(e[fast], e_ref[fast], rtol=0, atol=0)
    torch.testing.assert_close(e[s == CONVERGED], e_ref[s == CONVERGED], rtol=1e-8, atol=0)


def test_both_phases_share_the_iteration_limit(one_thread, monkeypatch):
    parts, gradient, z0, z1, c0, grid = _tanh_problem(b=4, seed=1)
    calls = []

    def spy(*args):
        calls.append((args[5], args[8], args[2].shape[0]))  # max_iter, secant, curves
        return levenberg_marquardt(*args)

    monkeypatch.setattr(secant_finish, "levenberg_marquardt", spy)
    monkeypatch.setattr(secant_finish, "SECANT_AFTER", 100)
    _, _, s, it = plain_then_secant(parts, z0, z1, c0, grid, 6, 1e-10, gradient, False)
    assert calls == [(3, False, 4), (3, True, 4)]  # at most half the limit in plain steps
    assert it.tolist() == [6] * 4 and bool((s == MAX_ITER).all())

    calls.clear()  # with the secant model from the start: one call
    plain_then_secant(parts, z0, z1, c0, grid, 6, 1e-10, gradient, True)
    assert calls == [(6, True, 4)]


@pytest.fixture(scope="module")
def mlp12_pairs():
    path = DATA / "mlp12_small.safetensors"
    metric = fastgeo.load_generator(path)
    extra = load_extra(path)
    I, J = pair_indices(extra["labels"], 6, 2)
    return metric, extra["latents"][I].float(), extra["latents"][J].float()


@pytest.mark.slow
def test_an_early_finish_reaches_the_defaults_lengths(one_thread, monkeypatch, mlp12_pairs):
    """mlp12_small (d = 12: lagged, plain steps): curves switched after 3 plain iterations converge
    to the curves plain steps reach; only the curves still iterating switch."""
    metric, z0, z1 = mlp12_pairs
    with torch.no_grad():
        default = fastgeo.geodesics(metric, z0, z1, progress=False)
        switched = []  # (secant, curves) of each call

        def spy(*args, **kwargs):
            out = levenberg_marquardt(*args, **kwargs)
            switched.append((bool(args[8]), args[2].shape[0]))
            return out

        monkeypatch.setattr(secant_finish, "levenberg_marquardt", spy)
        monkeypatch.setattr(secant_finish, "SECANT_AFTER", 3)
        early = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert default.converged.all() and early.converged.all()
    secant = [n for finish, n in switched if finish]
    assert secant, "no curve reached the secant phase"
    # Each finish takes the curves its plain phase left iterating: no more, and here fewer.
    for (was, plain), (finish, n) in zip(switched, switched[1:], strict=False):
        assert not finish or (not was and n <= plain)
    assert sum(secant) < sum(n for finish, n in switched if not finish)
    rel = (early.lengths / default.lengths - 1).abs()
    assert float(rel.max()) < 2e-4, rel


@pytest.mark.slow
def test_switching_does_not_depend_on_the_batch(one_thread, monkeypatch, mlp12_pairs):
    metric, z0, z1 = mlp12_pairs
    monkeypatch.setattr(secant_finish, "SECANT_AFTER", 3)
    seen = []

    def spy(*args, **kwargs):
        seen.append(args[8])
        return plain_then_secant(*args, **kwargs)

    monkeypatch.setattr(race, "plain_then_secant", spy)
    with torch.no_grad():
        batch = fastgeo.geodesics(metric, z0, z1, progress=False)
        for i in range(z0.shape[0]):
            alone = fastgeo.geodesics(metric, z0[i : i + 1], z1[i : i + 1], progress=False)
            assert alone.lengths[0] == batch.lengths[i], i  # one thread: bit for bit
            assert alone.status[0] == batch.status[i], i
    assert seen and not any(seen), "the refinement ran with the secant model from the start"
