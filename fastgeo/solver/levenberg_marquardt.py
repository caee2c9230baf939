"""Batched Levenberg-Marquardt on the discrete energy of curves in a basis, each curve with its
own damping and convergence test; the state is compacted to the curves still iterating.

The linear algebra of an iteration is in the operators :func:`fastgeo.ops.solver_ops.
gauss_newton_system`, ``lm_propose`` and ``lm_update`` (C++ kernels on CPU tensors); this file
is the loop around them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import evaluate
from ..metric import energy_from_segments, feature_segments, length_from_segments
from ..ops.solver_ops import LMState, LMTrial, gauss_newton_system, lm_propose, lm_update
from .problem import FeaturesJacobian, Grid

LENGTH_TOL_FACTOR = 30.0  # the length test's looser energy tolerance (see levenberg_marquardt)
INITIAL_DAMPING = 1e-3


def levenberg_marquardt(
    features_jac: FeaturesJacobian,
    z0: Tensor,
    z1: Tensor,
    coeffs: Tensor,
    grid: Grid,
    max_iter: int,
    tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimize ``E(a) = (N-1)/2 sum_n ||f(c_{n+1}) - f(c_n)||^2`` for every curve of a batch.

    features_jac(points (b, N, d), idx) -> f (b*N, F), J^T (b*N, d, F). Every trial point is
    linearized as it is evaluated (speculatively: the features come with the Jacobian at about
    the cost of the Jacobian alone, and most steps are accepted), so one decoder pass per
    iteration serves both the acceptance test and the next step.
    Returns coeffs, energies, converged, iterations (per curve).

    A curve converges when a step changes its energy, or its length ``sum sqrt(s_n)`` while the
    energy changes by less than ``LENGTH_TOL_FACTOR * tol``, by less than ``tol`` relative: near
    the optimum the energy keeps creeping down only by evening out the speed along the curve,
    ill-conditioned in a polynomial basis and irrelevant to the length (the distance).
    """
    B, m, d = coeffs.shape
    N = grid.n
    coeffs = coeffs.clone()
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    if B == 0:
        return coeffs, coeffs.new_zeros(0), iterations.bool(), iterations

    def linearize(c: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Segments (b, N-1), features (b, N, F) and transposed Jacobians (b, N, d, F)."""
        f, jac = features_jac(evaluate(z0[idx], z1[idx], c, grid.psi, grid.t), idx)
        f, jac = f.reshape(idx.numel(), N, -1), jac.reshape(idx.numel(), N, d, -1)
        return feature_segments(f), f, jac

    everyone = torch.arange(B, device=z0.device)
    s, f, jac = linearize(coeffs, everyone)
    e, length = energy_from_segments(s), length_from_segments(s)
    grad, hess = gauss_newton_system(f, jac, grid.psi)
    energies = e.clone()
    converged = e == 0  # z0 == z1, or already optimal
    # A non-finite energy or Jacobian (e.g. a decoder returning NaN) ends the curve: not converged.
    finite = torch.isfinite(e) & torch.isfinite(grad).all(-1) & torch.isfinite(hess).flatten(1).all(-1)
    # The state of the curves still iterating, compacted: rows of `active` (curve indices). A
    # curve that finishes writes its results out and leaves, so the work shrinks with the batch.
    active = (~converged & finite).nonzero().squeeze(1)
    # Structured secant model of the curvature Gauss-Newton leaves out (sum_n r_n . d2 r_n, large:
    # geodesic residuals do not vanish at the optimum), updated from Jacobian changes.
    state = LMState(
        e,
        length,
        grad,
        hess,
        torch.zeros_like(hess),
        torch.full_like(e, INITIAL_DAMPING),
        torch.full_like(e, 2.0),
    ).rows(active)
    c, jac = coeffs[active], jac[active]

    for _ in range(max_iter):
        if active.numel() == 0:
            break
        step, predicted, solved = lm_propose(state.grad, state.hess, state.curv, state.lam, N - 1)
        trial = c + step.reshape(-1, m, d)
        s_new, f_new, jac_new = linearize(trial, active)
        iterations[active] += 1
        # The new system at every trial point (rejected ones are dropped by lm_update): one
        # batched kernel call costs less than picking the accepted rows out first.
        g_new, h_new = gauss_newton_system(f_new, jac_new, grid.psi)
        g_old_jac, _ = gauss_newton_system(f_new, jac, grid.psi, grad_only=True)
        proposal = LMTrial(
            energy_from_segments(s_new),
            length_from_segments(s_new),
            g_new,
            g_old_jac,
            h_new,
            step,
            predicted,
            solved,
        )
        accept, done, ok, state = lm_update(state, proposal, tol, LENGTH_TOL_FACTOR)
        rejected = (~accept).nonzero().squeeze(1)
        if rejected.numel():  # keep their points (rare: most steps are accepted)
            trial[rejected], jac_new[rejected] = c[rejected], jac[rejected]
        c, jac = trial, jac_new
        leave = done | ~ok
        if bool(leave.any()):
            out = leave.nonzero().squeeze(1)
            rows = active[out]
            coeffs[rows], energies[rows] = c[out], state.e[out]
            converged[rows], finite[rows] = done[out], ok[out]
            stay = (~leave).nonzero().squeeze(1)
            active = active[stay]
            state, c, jac = state.rows(stay), c[stay], jac[stay]
    coeffs[active], energies[active] = c, state.e  # curves that hit the iteration limit
    return coeffs, energies, converged & finite, iterations
