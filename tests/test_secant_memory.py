"""Gauss-Newton corrected along the last few steps (:mod:`fastgeo.solver.secant_memory`).

The two-loop step is the exact step of the BFGS-updated damped Gauss-Newton matrix (checked
against a dense solve of that matrix), its predicted decrease is the undamped model's, the model
meets the secant condition of its newest pair, stored pairs are Powell-damped, a curve without
pairs takes the plain step, a curve's step does not depend on its batch; and on a trained d = 12
VAE the solver with it reaches the lengths of the last-step correction.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices
from fastgeo.io import load_extra
from fastgeo.reference.levenberg_marquardt import lm_propose, marquardt_damping, predicted_decrease
from fastgeo.solver import secant_memory
from fastgeo.solver.secant_memory import FLOOR, multi_secant_step, store


def _system(b: int, p: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(b, 3 * p, p, generator=g, dtype=dtype)
    hess = J.transpose(1, 2) @ J / p
    grad = torch.randn(b, p, generator=g, dtype=dtype)
    lam = 10.0 ** torch.linspace(-6, -1, b, dtype=dtype)
    return grad, hess, lam, g


def _pairs(hess: torch.Tensor, k: int, g: torch.Generator, ratios: list[float]):
    """k stored pairs per curve: random steps whose gradient changes meet ``ratio`` times the
    Gauss-Newton curvature along them (plus a random perturbation)."""
    b, p = hess.shape[:2]
    S = torch.zeros(b, k, p, dtype=hess.dtype)
    Y = torch.zeros_like(S)
    ok = torch.zeros(b, k, dtype=torch.bool)
    for ratio in ratios:
        s = torch.randn(b, p, generator=g, dtype=hess.dtype)
        dg = ratio * (hess @ s[..., None])[..., 0] + 0.1 * torch.randn(b, p, generator=g, dtype=hess.dtype)
        S, Y, ok = store(S, Y, ok, torch.ones(b, dtype=torch.bool), s, dg, hess, None)
    return S, Y, ok


def _bfgs_matrix(A: torch.Tensor, S: torch.Tensor, Yd: torch.Tensor) -> torch.Tensor:
    """A updated by BFGS with the pairs (oldest first), one curve."""
    B = A.clone()
    for s, y in zip(S, Yd, strict=True):
        Bs = B @ s
        B = B - torch.outer(Bs, Bs) / (s @ Bs) + torch.outer(y, y) / (y @ s)
    return B


@pytest.mark.parametrize("ratios", [[0.1], [0.3, 1.5, 0.05], [0.5, 0.2, 0.9, 0.4, 2.0]])
def test_step_solves_the_bfgs_model(ratios):
    b, p, k, segments = 4, 10, 5, 47
    grad, hess, lam, g = _system(b, p)
    S, Y, ok = _pairs(hess, k, g, ratios)
    x, pred, good = multi_secant_step(grad, hess, lam, S, Y, ok, segments, None)
    assert bool(good.all())
    damping = marquardt_damping(hess, lam)
    for i in range(b):
        n = len(ratios)
        Si, Yd = S[i, k - n :], Y[i, k - n :] + damping[i] * S[i, k - n :]
        B = _bfgs_matrix(hess[i] + torch.diag(damping[i]), Si, Yd)
        torch.testing.assert_close(B @ Si[-1], Yd[-1], rtol=1e-9, atol=1e-10)  # secant condition
        expected = torch.linalg.solve(B, -grad[i])
        torch.testing.assert_close(x[i], expected, rtol=1e-8, atol=1e-11)
        h_x = (B - torch.diag(damping[i])) @ x[i]
        torch.testing.assert_close(
            pred[i : i + 1],
            predicted_decrease(grad[i : i + 1], h_x[None], x[i : i + 1], segments),
            rtol=1e-8,
            atol=1e-12,
        )


def test_without_pairs_the_plain_step():
    b, p, k, segments = 3, 8, 4, 23
    grad, hess, lam, _ = _system(b, p, seed=1)
    S = torch.zeros(b, k, p, dtype=hess.dtype)
    x, pred, good = multi_secant_step(
        grad, hess, lam, S, S.clone(), torch.zeros(b, k, dtype=torch.bool), segments, None
    )
    step, predicted, _ = lm_propose(grad, hess, torch.zeros_like(hess), lam, segments)
    assert bool(good.all())
    torch.testing.assert_close(x, step, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pred, predicted, rtol=1e-10, atol=1e-12)


def test_store_damps_appends_and_leaves_other_rows():
    b, p, k = 3, 6, 2
    grad, hess, lam, g = _system(b, p, seed=2)
    S = torch.zeros(b, k, p, dtype=hess.dtype)
    Y, ok = torch.zeros_like(S), torch.zeros(b, k, dtype=torch.bool)
    s = torch.randn(b, p, generator=g, dtype=hess.dtype)
    h_s = (hess @ s[..., None])[..., 0]
    dg = torch.stack([-h_s[0], 0.05 * h_s[1], 2.0 * h_s[2]])  # negative, below the floor, above GN
    add = torch.tensor([True, True, False])
    S1, Y1, ok1 = store(S, Y, ok, add, s, dg, hess, None)
    s_h_s = (s * h_s).sum(-1)
    torch.testing.assert_close((S1[:2, -1] * Y1[:2, -1]).sum(-1), FLOOR * s_h_s[:2])
    assert ok1.tolist() == [[False, True], [False, True], [False, False]]
    assert torch.equal(S1[2], S[2]) and torch.equal(Y1[2], Y[2])
    S2, Y2, ok2 = store(S1, Y1, ok1, torch.ones(b, dtype=torch.bool), s, dg, hess, None)
    torch.testing.assert_close(Y2[2, -1], dg[2])  # curvature above Gauss-Newton's is kept
    assert torch.equal(S2[:2, 0], S1[:2, -1]), "the older pair moves down"
    assert ok2.tolist() == [[True, True], [True, True], [False, True]]


def test_batch_independent():
    b, p, k, segments = 7, 20, 5, 31
    grad, hess, lam, g = _system(b, p, seed=3, dtype=torch.float32)
    S, Y, ok = _pairs(hess, k, g, [0.2, 0.7, 0.1])
    x, pred, good = multi_secant_step(grad, hess, lam, S, Y, ok, segments, None)
    for i in range(b):
        r = slice(i, i + 1)
        xi, pi, gi = multi_secant_step(grad[r], hess[r], lam[r], S[r], Y[r], ok[r], segments, None)
        assert torch.equal(xi[0], x[i]) and torch.equal(pi[0], pred[i]) and bool(gi[0] == good[i])


def test_same_lengths_as_the_last_step_correction(monkeypatch):
    """mlp12_small (d = 12: lagged Gauss-Newton): the memory reaches the curves the last-step
    correction reaches (iterations and time: bench/RESULTS.md)."""
    path = Path(__file__).parent / "data" / "mlp12_small.safetensors"
    metric = fastgeo.load_generator(path)
    extra = load_extra(path)
    I, J = pair_indices(extra["labels"], 8, 1)
    z0, z1 = extra["latents"][I].float(), extra["latents"][J].float()
    with torch.no_grad():
        monkeypatch.setattr(secant_memory, "MEMORY", 5)
        with_it = fastgeo.geodesics(metric, z0, z1, progress=False)
        monkeypatch.setattr(secant_memory, "MEMORY", 0)
        without = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert with_it.converged.all() and without.converged.all()
    rel = (with_it.lengths / without.lengths - 1).abs()
    assert float(rel.max()) < 2e-4, rel  # measured 1e-6 to 1e-5: the same curves
