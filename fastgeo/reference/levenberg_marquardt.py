"""One Levenberg-Marquardt iteration of the solver, for a batch of curves, in two halves:

- :func:`lm_propose`: the damped step ``(H + S + lam diag(scale)) step = -g`` of each curve (Gauss-
  Newton matrix ``H``, secant curvature model ``S``, Marquardt scaling with a floor) and the
  energy decrease its model predicts;
- :func:`lm_update`: after the caller has evaluated the trial points and their Gauss-Newton system,
  the acceptance test, the structured secant update of ``S`` (Dennis, Gay & Welsch, with
  Oren-Luenberger sizing), Nielsen's damping update and the convergence test.

These are the oracles of the operators ``torch.ops.fastgeo.lm_propose`` / ``lm_update`` (C++
kernels on CPU tensors: a batched PyTorch version costs dozens of tiny operations per iteration
on such small per-curve systems, more than the arithmetic).

Shapes: ``b`` curves, ``p`` unknowns; grad (b, p), hess and curv (b, p, p), the rest (b,).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lm_propose(
    grad: Tensor, hess: Tensor, curv: Tensor, lam: Tensor, segments: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Step (b, p), predicted decrease of ``E = segments/2 sum ||r||^2`` (b,), solved (b,) bool.

    A system whose Cholesky factorization fails (not positive definite at this precision) or
    whose step is not finite gives a zero step, ``solved = False``.
    """
    diag = torch.diagonal(hess, dim1=-2, dim2=-1)
    # Marquardt scaling, with a floor so directions the metric ignores stay solvable.
    scale = diag + 1e-12 * diag.amax(-1, keepdim=True).clamp(min=1e-30)
    h = hess + curv
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    chol, info = torch.linalg.cholesky_ex(h + (lam[:, None] * scale)[:, :, None] * eye)
    solved = info == 0
    chol = torch.where(solved[:, None, None], chol, eye)
    step = torch.cholesky_solve(-grad[..., None], chol)[..., 0]
    solved = solved & torch.isfinite(step).all(-1)
    step = torch.where(solved[:, None], step, 0.0)
    predicted = -segments * ((grad + 0.5 * (h * step[:, None, :]).sum(-1)) * step).sum(-1)
    return step, predicted, solved


def lm_update(
    e: Tensor,
    length: Tensor,
    e_new: Tensor,
    l_new: Tensor,
    grad: Tensor,
    g_new: Tensor,
    g_old_jac: Tensor,
    hess: Tensor,
    h_new: Tensor,
    curv: Tensor,
    step: Tensor,
    predicted: Tensor,
    solved: Tensor,
    lam: Tensor,
    nu: Tensor,
    tol: float,
    length_tol_factor: float,
) -> tuple[Tensor, ...]:
    """Accept or reject each trial point and update the state.

    e, length: energy and length at the current points; e_new, l_new at the trial points;
    g_new, h_new: the Gauss-Newton system at the trial points; g_old_jac: the gradient at the
    trial points with the current Jacobians (for the secant update).

    Returns accept (b,) bool, status (b,) int8 and ok (b,) bool, and the new e, length, grad, hess,
    curv, lam, nu. Status 1, converged: an accepted step changed the energy by less than ``tol``
    relative (or the length by less than ``tol`` while the energy changed by less than
    ``length_tol_factor * tol``), or the model predicts no gain at this precision; 2, stalled: steps
    keep failing although the model predicts a gain (the damping blew up); 0: iterating. ``ok`` is
    False where the new system is not finite.
    """
    accept = e_new < e
    gain = e - e_new
    rel = gain / e
    rel_len = (l_new - length).abs() / length
    updated = secant_update(curv, step, g_new - grad, g_new - g_old_jac)
    curv = torch.where(accept[:, None, None], updated, curv)
    grad = torch.where(accept[:, None], g_new, grad)
    hess = torch.where(accept[:, None, None], h_new, hess)
    e, length = torch.where(accept, e_new, e), torch.where(accept, l_new, length)
    ok = torch.isfinite(grad).all(-1) & torch.isfinite(hess).flatten(1).all(-1)
    # Nielsen's damping update: shrink lambda by how well the model predicted the gain.
    rho = gain / predicted.clamp(min=torch.finfo(e.dtype).tiny)
    shrink = (1 - (2 * rho.clamp(max=1) - 1) ** 3).clamp(min=1 / 3)
    lam = torch.where(accept, (lam * shrink).clamp(min=1e-12), lam * nu)
    nu = torch.where(accept, 2.0, nu * 2)
    settled = (rel < tol) | ((rel_len < tol) & (rel < length_tol_factor * tol))
    converged = (accept & settled) | (solved & (predicted <= tol * e))
    stalled = ~accept & (lam > 1e10)
    status = torch.where(converged, 1, torch.where(stalled, 2, 0)).to(torch.int8)
    return accept, status, ok, e, length, grad, hess, curv, lam, nu


def secant_update(curv: Tensor, step: Tensor, y: Tensor, y_sharp: Tensor) -> Tensor:
    """Dennis-Gay-Welsch update of the residual-curvature model S (b, p, p) so that
    ``S step = y_sharp`` (``y_sharp = (J_new - J_old)^T r_new``, ``y`` the gradient change), with
    Oren-Luenberger sizing; skipped where ``y . step <= 0``."""
    ys = (y * step).sum(-1)
    ok = ys > 1e-12 * y.norm(dim=-1) * step.norm(dim=-1)
    s_curv_s = (step * (curv * step[:, None, :]).sum(-1)).sum(-1)
    size = ((step * y_sharp).sum(-1).abs() / s_curv_s.abs().clamp(min=1e-300)).clamp(max=1)
    curv = torch.where((s_curv_s != 0)[:, None, None], size[:, None, None] * curv, curv)
    resid = y_sharp - (curv * step[:, None, :]).sum(-1)
    denom = torch.where(ok, ys, torch.ones_like(ys))
    upd = (resid[:, :, None] * y[:, None, :] + y[:, :, None] * resid[:, None, :]) / denom[:, None, None] - (
        (resid * step).sum(-1) / denom**2
    )[:, None, None] * (y[:, :, None] * y[:, None, :])
    return torch.where(ok[:, None, None], curv + upd, curv)
