"""Plain Gauss-Newton corrected along the last step (:mod:`fastgeo.solver.last_step`).

The closed-form step is the exact solution of the rank-one corrected model (checked against a
dense solve), its predicted decrease is the model's own, the correction never raises the
curvature and leaves curves without a last step alone; a curve's step does not depend on its
batch; and on a trained d = 12 VAE the solver with it reaches the lengths plain Gauss-Newton
reaches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices
from fastgeo.io import load_extra
from fastgeo.reference.levenberg_marquardt import lm_propose, marquardt_damping, predicted_decrease
from fastgeo.solver import last_step, secant_memory
from fastgeo.solver.last_step import FLOOR, corrected_step


def _system(b: int, p: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    J = torch.randn(b, 3 * p, p, generator=g, dtype=torch.float64)
    hess = J.transpose(1, 2) @ J / p
    grad = torch.randn(b, p, generator=g, dtype=torch.float64)
    lam = 10.0 ** torch.linspace(-6, -1, b, dtype=torch.float64)
    last = torch.randn(b, p, generator=g, dtype=torch.float64)
    return grad, hess, lam, last


def _plain(grad, hess, lam, segments):
    return lm_propose(grad, hess, torch.zeros_like(hess), lam, segments)


@pytest.mark.parametrize("ratio", [FLOOR, 0.5, 0.9])
def test_step_solves_the_corrected_model(ratio):
    b, p, segments = 5, 12, 47
    grad, hess, lam, last = _system(b, p)
    step, predicted, _ = _plain(grad, hess, lam, segments)
    p_h_p = (last * (hess @ last[..., None])[..., 0]).sum(-1)
    curvature = ratio * p_h_p
    use = torch.ones(b, dtype=torch.bool)
    x, pred = corrected_step(grad, hess, lam, step, predicted, last, curvature, use, segments)
    # The model: A - delta u u^T with u = A p, curvature c + p^T lam D p along p.
    damping = marquardt_damping(hess, lam)
    A = hess + torch.diag_embed(damping)
    u = (A @ last[..., None])[..., 0]
    p_a_p = (last * u).sum(-1)
    c_a = curvature + (damping * last * last).sum(-1)
    delta = (p_a_p - c_a) / p_a_p**2
    model = A - delta[:, None, None] * u[:, :, None] * u[:, None, :]
    expected = torch.linalg.solve(model, -grad[..., None])[..., 0]
    torch.testing.assert_close(x, expected, rtol=1e-9, atol=1e-12)
    # Its curvature along the last step is the one measured.
    torch.testing.assert_close((last * (model @ last[..., None])[..., 0]).sum(-1), c_a)
    # The predicted decrease is the undamped corrected model's.
    h_x = ((model - torch.diag_embed(damping)) @ x[..., None])[..., 0]
    torch.testing.assert_close(pred, predicted_decrease(grad, h_x, x, segments), rtol=1e-9, atol=1e-12)
    assert bool((pred > predicted).all()), "a flatter model predicts more"


def test_curvature_clamped_and_unused_rows_unchanged():
    b, p, segments = 4, 9, 23
    grad, hess, lam, last = _system(b, p, seed=1)
    step, predicted, _ = _plain(grad, hess, lam, segments)
    p_h_p = (last * (hess @ last[..., None])[..., 0]).sum(-1)
    use = torch.tensor([True, True, True, False])
    # above Gauss-Newton's: no correction; below the floor: clamped to it; NaN: no correction
    curvature = torch.stack(
        [2 * p_h_p[0], -p_h_p[1], torch.tensor(float("nan"), dtype=torch.float64), 0.1 * p_h_p[3]]
    )
    x, pred = corrected_step(grad, hess, lam, step, predicted, last, curvature, use, segments)
    torch.testing.assert_close(x[0], step[0], rtol=1e-12, atol=1e-14)
    assert torch.equal(x[2], step[2]) and torch.equal(pred[2], predicted[2])
    assert torch.equal(x[3], step[3]) and torch.equal(pred[3], predicted[3])
    floor = corrected_step(
        grad[1:2], hess[1:2], lam[1:2], step[1:2], predicted[1:2], last[1:2], FLOOR * p_h_p[1:2],
        use[1:2], segments,
    )  # fmt: skip
    torch.testing.assert_close(x[1:2], floor[0], rtol=0, atol=0)


def test_batch_independent():
    b, p, segments = 7, 20, 31
    grad, hess, lam, last = _system(b, p, seed=2)
    grad, hess, last = grad.float(), hess.float(), last.float()
    lam = lam.float()
    step, predicted, _ = _plain(grad, hess, lam, segments)
    curvature = 0.3 * (last * (hess @ last[..., None])[..., 0]).sum(-1)
    use = torch.ones(b, dtype=torch.bool)
    x, pred = corrected_step(grad, hess, lam, step, predicted, last, curvature, use, segments)
    for i in range(b):
        r = slice(i, i + 1)
        xi, pi = corrected_step(
            grad[r], hess[r], lam[r], step[r], predicted[r], last[r], curvature[r], use[r], segments
        )
        assert torch.equal(xi[0], x[i]) and torch.equal(pi[0], pred[i])


def test_same_lengths_as_plain_gauss_newton(monkeypatch):
    """mlp12_small (d = 12: lagged Gauss-Newton): the corrected steps reach the curves plain
    Gauss-Newton reaches (their iterations: bench/RESULTS.md, 10-40 % fewer on trained VAEs)."""
    path = Path(__file__).parent / "data" / "mlp12_small.safetensors"
    metric = fastgeo.load_generator(path)
    extra = load_extra(path)
    I, J = pair_indices(extra["labels"], 8, 1)
    z0, z1 = extra["latents"][I].float(), extra["latents"][J].float()
    monkeypatch.setattr(secant_memory, "MEMORY", 0)  # the lagged calls correct along the last step
    with torch.no_grad():
        with_it = fastgeo.geodesics(metric, z0, z1, progress=False)
        monkeypatch.setattr(last_step, "FLOOR", 1.0)  # plain Gauss-Newton
        plain = fastgeo.geodesics(metric, z0, z1, progress=False)
    assert with_it.converged.all() and plain.converged.all()
    rel = (with_it.lengths / plain.lengths - 1).abs()
    assert float(rel.max()) < 2e-4, rel  # measured 1e-6 to 1e-5: the same curves
