"""One Levenberg-Marquardt iteration of the solver, for a batch of curves, in two halves:

- :func:`lm_propose`: the damped step ``(H + S + lam diag(scale)) step = -g`` of each curve (Gauss-
  Newton matrix ``H``, secant curvature model ``S``, Marquardt scaling with a floor) and the
  energy decrease its model predicts;
- :func:`lm_update`: after the caller has evaluated the trial points and their Gauss-Newton system,
  the acceptance test, the structured secant update of ``S`` (Dennis, Gay & Welsch, with
  Oren-Luenberger sizing), Nielsen's damping update and the convergence test.

These are the oracles of the operators ``torch.ops.fastgeo.lm_propose`` / ``lm_update`` /
``banded_lm_propose`` (C++
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
    damping = marquardt_damping(hess, lam)
    # Large systems (this path serves p > 64) are bound by passes over the (b, p, p) matrices,
    # not by the factorization: one matrix is formed, damped in place on its diagonal, and
    # reused for the model's prediction.
    system = hess + curv
    system.diagonal(dim1=-2, dim2=-1).add_(damping)
    chol, info = torch.linalg.cholesky_ex(system)
    solved = info == 0
    if not bool(solved.all()):
        chol[~solved] = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    step = torch.cholesky_solve(-grad[..., None], chol)[..., 0]
    solved = solved & torch.isfinite(step).all(-1)
    step = torch.where(solved[:, None], step, 0.0)
    # (H + S) step, as a per-curve product: a curve's result must not depend on its batch.
    h_step = (system * step[:, None, :]).sum(-1) - damping * step
    return step, predicted_decrease(grad, h_step, step, segments), solved


def banded_lm_propose(
    grad: Tensor, hess: Tensor, lam: Tensor, segments: int, block: int, band: int
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`lm_propose` without a secant model for ``hess`` block-banded: blocks of ``block``
    unknowns, half-bandwidth ``band`` blocks; entries outside the band are taken as zero (not
    read). The oracle of ``torch.ops.fastgeo.banded_lm_propose`` (a band Cholesky factorization
    on CPU)."""
    p = grad.shape[-1]
    if block < 1 or p % block:
        raise ValueError(f"block must divide the {p} unknowns, got {block}")
    blocks = torch.arange(p, device=grad.device) // block
    outside = (blocks[:, None] - blocks[None, :]).abs() > band
    banded = hess.masked_fill(outside, 0.0)
    return lm_propose(grad, banded, torch.zeros_like(banded), lam, segments)


def marquardt_damping(hess: Tensor, lam: Tensor) -> Tensor:
    """The damping ``lam diag(scale)`` (b, p) added to the diagonal: Marquardt scaling by the
    Gauss-Newton diagonal, with a floor so directions the metric ignores stay solvable."""
    diag = torch.diagonal(hess, dim1=-2, dim2=-1)
    scale = diag + 1e-12 * diag.amax(-1, keepdim=True).clamp(min=1e-30)
    return lam[:, None] * scale


def predicted_decrease(grad: Tensor, h_step: Tensor, step: Tensor, segments: int) -> Tensor:
    """The model's decrease of ``E = segments/2 sum ||r||^2`` along ``step`` (b,), from the
    gradient and ``(H + S) step`` (b, p)."""
    return -segments * ((grad + 0.5 * h_step) * step).sum(-1)


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
    curv: Tensor | None,
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
    False where the new system is not finite (``h_new`` given as the very ``hess`` tensor, the
    lagged mode's kept matrices, counts as checked: the state holds finite systems only).
    """
    accept = e_new < e
    gain = e - e_new
    rel = gain / e
    rel_len = (l_new - length).abs() / length
    if curv is not None:  # None: plain Gauss-Newton, no secant model (not in the operator's schema)
        curv = secant_update(curv, step, g_new - grad, g_new - g_old_jac, accept)
    grad = torch.where(accept[:, None], g_new, grad)
    if h_new is hess:
        # The same matrices (lagged Gauss-Newton): checked when they entered the state, which
        # keeps only curves whose system is finite.
        finite_hess = torch.ones_like(accept)
    else:
        hess = h_new if bool(accept.all()) else torch.where(accept[:, None, None], h_new, hess)
        # Its least and largest entry per matrix (NaN and inf show in them); amax and amin apart:
        # torch.aminmax is ~4x slower on CPU (16 matrices of 768 x 768: 28 ms against 6.6).
        flat = hess.flatten(1)
        low, high = flat.amin(-1), flat.amax(-1)
        finite_hess = torch.isfinite(low) & torch.isfinite(high)
    e, length = torch.where(accept, e_new, e), torch.where(accept, l_new, length)
    ok = torch.isfinite(grad).all(-1) & finite_hess
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


def secant_update(
    curv: Tensor, step: Tensor, y: Tensor, y_sharp: Tensor, rows: Tensor | None = None
) -> Tensor:
    """Dennis-Gay-Welsch update of the residual-curvature model S (b, p, p) so that
    ``S step = y_sharp`` (``y_sharp = (J_new - J_old)^T r_new``, ``y`` the gradient change), with
    Oren-Luenberger sizing, for the curves where ``rows`` (b,) bool (default: all); skipped where
    ``y . step <= 0`` (S only sized there). S of the other curves is returned unchanged.

    Written as ``size * S + a y^T + y b^T`` on one new matrix; the vectors of the curves left
    alone are zero, so their S is copied exactly."""
    if rows is None:
        rows = torch.ones(step.shape[0], dtype=torch.bool, device=step.device)
    ys = (y * step).sum(-1)
    ok = rows & (ys > 1e-12 * y.norm(dim=-1) * step.norm(dim=-1))
    if not bool(y_sharp.any()) and not bool(curv.count_nonzero()):
        # Nothing to learn and nothing to size (plain Gauss-Newton: y_sharp = 0 and S = 0): the
        # update below would return S exactly; its passes over the (b, p, p) matrices are skipped
        # (counting S's nonzeros reads it once, ~6x faster than forming S step).
        return curv
    curv_step = (curv * step[:, None, :]).sum(-1)
    s_curv_s = (step * curv_step).sum(-1)
    size = ((step * y_sharp).sum(-1).abs() / s_curv_s.abs().clamp(min=1e-300)).clamp(max=1)
    size = torch.where(rows & (s_curv_s != 0), size, 1.0)
    resid = y_sharp - size[:, None] * curv_step  # y_sharp - (size S) step
    denom = torch.where(ok, ys, 1.0)
    # (r y^T + y r^T) / ys - (r . s) / ys^2  y y^T  =  a y^T + y b^T
    a = torch.where(ok[:, None], resid / denom[:, None], 0.0)
    y_ok = torch.where(ok[:, None], y, 0.0)
    b = a - torch.where(ok, (resid * step).sum(-1) / denom**2, 0.0)[:, None] * y_ok
    # Separate products and sums, no addcmul: its vectorized (fused) and scalar loops round
    # differently, and where a thread's share of the batch ends depends on the batch size.
    out = curv * size[:, None, None]
    out += a[:, :, None] * y_ok[:, None, :]
    out += y_ok[:, :, None] * b[:, None, :]
    return out
