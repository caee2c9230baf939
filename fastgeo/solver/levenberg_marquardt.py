"""Batched Levenberg-Marquardt on the discrete energy of curves in a basis, each curve with its
own damping and convergence test; the state is compacted to the curves still iterating.

The linear algebra of an iteration is in the operators :func:`fastgeo.ops.solver_ops.
gauss_newton_system`, ``lm_propose`` and ``lm_update`` (C++ kernels on CPU tensors); this file
is the loop around them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..curves import evaluate
from ..discrete import energy_from_segments, length_from_segments
from ..ops.band import block_bandwidth
from ..ops.solver_ops import LMState, LMTrial, lm_propose, lm_update
from . import secant_memory
from .finer_gain import FinerGains
from .last_step import corrected_step
from .linearize import assemble, products_by_chunks
from .problem import Grid, Parts, PointGradient
from .result import CONVERGED, MAX_ITER, NONFINITE, STALLED

LENGTH_TOL_FACTOR = 30.0  # the length test's looser energy tolerance (see levenberg_marquardt)
INITIAL_DAMPING = 1e-3
REFRESH_BELOW = 0.25  # lagged mode: a new Gauss-Newton matrix where the gain ratio falls below this


def levenberg_marquardt(
    parts: Parts,
    z0: Tensor,
    z1: Tensor,
    coeffs: Tensor,
    grid: Grid,
    max_iter: int,
    tol: float,
    gradient: PointGradient | None = None,
    secant: bool = True,
    finer: FinerGains | None = None,
    rounded: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimize ``E(a) = (N-1)/2 sum_n ||f(c_{n+1}) - f(c_n)||^2`` for every curve of a batch.

    parts(points (b, N, d), idx) -> the embedding's parts at the points (features and transposed
    Jacobians, see :mod:`fastgeo.solver.linearize`). Every trial point is linearized as it is
    evaluated (speculatively: the features come with the Jacobian at about the cost of the
    Jacobian alone, and most steps are accepted), so one decoder pass per iteration serves both
    the acceptance test and the next step. The structured secant model of the curvature
    Gauss-Newton leaves out is updated from gradient differences, ``y# = y - H s`` with the
    Gauss-Newton matrix H at the step's start: no Jacobian is kept from one iteration to the
    next, so the memory is that of one linearization.
    Returns coeffs, energies, status (codes of :data:`STATUSES`) and iterations, per curve.
    ``finer``: each curve that converges gets its predicted gain in a
    finer basis recorded there, from the point products of its last linearization (kept per curve).

    With ``gradient`` (lagged mode, for large latent dimensions) trial points get the exact
    gradient by reverse mode only (its cost does not grow with d) and keep the Gauss-Newton matrix
    of an earlier point; a curve is linearized again where an accepted step's gain fell below
    REFRESH_BELOW of the predicted one, and before a convergence or stall is believed: a step
    proposed from a stale matrix proves nothing, so the curve goes on from a fresh one.
    Without the secant model (``secant=False``, the lagged calls) each step is corrected along the
    last accepted one by the curvature that step met (:mod:`.last_step`): in flat valleys plain
    Gauss-Newton steps fall several times short. In the lagged mode the correction is along the
    last ``secant_memory.MEMORY`` trial steps instead (a limited-memory BFGS model on the damped
    Gauss-Newton matrix, :mod:`.secant_memory`), whose exact gradients come with every trial.
    ``rounded`` (lagged mode only): the linearizations' Jacobians are rounded (tangents pushed in
    bfloat16, :mod:`fastgeo.decoders.low_precision`), so every gradient, the first included, comes
    from ``gradient``; the matrices only shape the steps.

    A curve converges when a step changes its energy, or its length ``sum sqrt(s_n)`` while the
    energy changes by less than ``LENGTH_TOL_FACTOR * tol``, by less than ``tol`` relative: near
    the optimum the energy keeps creeping down only by evening out the speed along the curve,
    ill-conditioned in a polynomial basis and irrelevant to the length (the distance).
    """
    if rounded and gradient is None:
        raise ValueError("rounded Jacobians need the exact gradient (the lagged mode)")
    B, m, d = coeffs.shape
    N = grid.n
    coeffs = coeffs.clone()
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    status = torch.full((B,), MAX_ITER, dtype=torch.int8, device=z0.device)
    if B == 0:
        return coeffs, coeffs.new_zeros(0), status, iterations

    def points(c: Tensor, idx: Tensor) -> Tensor:
        return evaluate(z0[idx], z1[idx], c, grid.psi, grid.t)

    kept: list[tuple[Tensor, Tensor, Tensor]] = []  # the last products (v, G, C), for ``finer``

    def linear_model(c: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Segments (b, N-1), gradient (b, p) and Gauss-Newton matrix (b, p, p) at curves idx."""
        s, v, G, C = products_by_chunks(parts, points(c, idx), idx)
        if finer is not None:
            kept.append((v, G, C))
        return (s, *assemble(v, G, C, grid.psi))

    def fresh_products(rows: Tensor, pick: Tensor | None = None) -> None:
        """The products of linear_model's last call (its rows ``pick``, default all) become those
        of the active curves ``rows``."""
        if finer is None or not kept:
            return
        for mine, theirs in zip(products, kept.pop(), strict=True):
            mine[rows] = theirs if pick is None else theirs[pick]

    def gradient_model(c: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Segments (b, N-1) and gradient (b, p) at curves idx, by reverse mode."""
        assert gradient is not None
        s, g = gradient(points(c, idx), idx)
        return s, torch.matmul(grid.psi.T, g).reshape(idx.numel(), m * d)

    everyone = torch.arange(B, device=z0.device)
    s, grad, hess = linear_model(coeffs, everyone)
    if rounded:
        s, grad = gradient_model(coeffs, everyone)
    e, length = energy_from_segments(s), length_from_segments(s)
    energies = e.clone()
    # A non-finite energy or Jacobian (e.g. a decoder returning NaN) ends the curve.
    finite = torch.isfinite(e) & torch.isfinite(grad).all(-1) & torch.isfinite(hess).flatten(1).all(-1)
    status[e == 0] = CONVERGED  # z0 == z1, or already optimal
    status[~finite] = NONFINITE
    # The state of the curves still iterating, compacted: rows of `active` (curve indices). A
    # curve that finishes writes its results out and leaves, so the work shrinks with the batch.
    active = (status == MAX_ITER).nonzero().squeeze(1)
    # Structured secant model of the curvature Gauss-Newton leaves out (sum_n r_n . d2 r_n, large:
    # geodesic residuals do not vanish at the optimum), updated from Jacobian changes.
    state = LMState(
        e,
        length,
        grad,
        hess,
        torch.zeros_like(hess) if secant else None,  # plain Gauss-Newton keeps no (b, p, p) zeros
        torch.full_like(e, INITIAL_DAMPING),
        torch.full_like(e, 2.0),
    ).rows(active)
    c = coeffs[active]
    products = tuple(x[active] for x in kept.pop()) if finer is not None else ()
    age = torch.zeros_like(active)  # iterations since each curve's Gauss-Newton matrix was computed
    # Plain Gauss-Newton in a basis of local support keeps the system block-banded.
    banded = None if secant else (d, block_bandwidth(grid.psi))
    # ... and corrected along the last accepted step by the curvature it met (last_step.py).
    last = torch.zeros_like(state.grad)
    curvature = torch.zeros_like(state.e)
    use = torch.zeros_like(active, dtype=torch.bool)  # curves with a last step to correct along
    # ... or, in the lagged mode, along its last few steps (secant_memory.py): pairs (b, k, p).
    memory = secant_memory.MEMORY if (not secant and gradient is not None) else 0
    mem_s = state.grad.new_zeros(active.numel(), memory, m * d)
    mem_y = torch.zeros_like(mem_s)
    mem_ok = torch.zeros(active.numel(), memory, dtype=torch.bool, device=z0.device)

    for _ in range(max_iter):
        if active.numel() == 0:
            break
        if memory:
            step, predicted, solved = secant_memory.multi_secant_step(
                state.grad, state.hess, state.lam, mem_s, mem_y, mem_ok, N - 1, banded
            )
            redo = (~solved).nonzero().squeeze(1)
            if redo.numel():
                step[redo], predicted[redo], solved[redo] = lm_propose(
                    state.grad[redo], state.hess[redo], None, state.lam[redo], N - 1, banded
                )
        else:
            step, predicted, solved = lm_propose(state.grad, state.hess, state.curv, state.lam, N - 1, banded)
        if not secant and not memory and bool(use.any()):
            step, predicted = corrected_step(
                state.grad, state.hess, state.lam, step, predicted, last, curvature, use, N - 1, banded
            )
        trial = c + step.reshape(-1, m, d)
        stale_step = age > 0
        everyone_active = torch.arange(active.numel(), device=active.device)
        if gradient is None:
            s_new, g_new, h_new = linear_model(trial, active)
        else:
            s_new, g_new, h_new, age = _lagged_model(
                gradient_model, linear_model, trial, active, state, predicted, age, rounded
            )
        iterations[active] += 1
        # secant: y# = y - H s (as a per-curve product: a curve's result must not depend on its batch);
        # without it, y# = 0 keeps the model S exactly zero (plain Gauss-Newton).
        g_old_jac = state.grad + (state.hess * step[:, None, :]).sum(-1) if secant else g_new
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
        g_before, e_before, h_before = state.grad, state.e, state.hess
        accept, verdict, ok, state = lm_update(state, proposal, tol, LENGTH_TOL_FACTOR)
        if memory:
            add = solved & (accept | secant_memory.REJECTED)
            mem_s, mem_y, mem_ok = secant_memory.store(
                mem_s, mem_y, mem_ok, add, step, g_new - g_before, h_before, banded
            )
        if not secant and not memory:  # the curvature met, by gradients and energies: the larger
            last = torch.where(accept[:, None], step, last)
            by_gradient = (step * (g_new - g_before)).sum(-1)
            by_energy = 2 * ((proposal.e - e_before) / (N - 1) - (g_before * step).sum(-1))
            curvature = torch.where(accept, torch.maximum(by_gradient, by_energy), curvature)
            use = accept & solved
        if finer is not None:  # accepted points take their products, where they were computed
            computed = everyone_active if gradient is None else (age == 0).nonzero().squeeze(1)
            took = accept[computed]
            fresh_products(computed[took], took.nonzero().squeeze(1))
        rejected = (~accept).nonzero().squeeze(1)
        if rejected.numel():  # keep their points (rare: most steps are accepted)
            trial[rejected] = c[rejected]
        c = trial
        if gradient is not None:  # believe an end only from a fresh matrix
            doubt = ((verdict != 0) & ok & stale_step).nonzero().squeeze(1)
            if doubt.numel():
                _, g_fresh, h_fresh = linear_model(c[doubt], active[doubt])
                g_fresh = state.grad[doubt] if rounded else g_fresh  # exact already
                state.grad[doubt], state.hess[doubt] = g_fresh, h_fresh
                # lm_update takes kept matrices as checked: a fresh one that is not finite ends here.
                ok[doubt] &= torch.isfinite(g_fresh).all(-1) & torch.isfinite(h_fresh).flatten(1).all(-1)
                fresh_products(doubt)
                stalled = doubt[verdict[doubt] == 2]  # its damping grew against a stale matrix
                state.lam[stalled], state.nu[stalled] = INITIAL_DAMPING, 2.0
                age[doubt], verdict[doubt] = 0, 0
        leave = (verdict != 0) | ~ok
        if bool(leave.any()):
            out = leave.nonzero().squeeze(1)
            rows = active[out]
            coeffs[rows], energies[rows] = c[out], state.e[out]
            ended = torch.where(verdict[out] == 1, CONVERGED, STALLED).to(torch.int8)
            status[rows] = torch.where(ok[out], ended, torch.full_like(ended, NONFINITE))
            if finer is not None:
                done = out[(verdict[out] == 1) & ok[out]]
                finer.record(active[done], tuple(x[done] for x in products), state.e[done])
            stay = (~leave).nonzero().squeeze(1)
            active = active[stay]
            state, c, age = state.rows(stay), c[stay], age[stay]
            last, curvature, use = last[stay], curvature[stay], use[stay]
            mem_s, mem_y, mem_ok = mem_s[stay], mem_y[stay], mem_ok[stay]
            products = tuple(x[stay] for x in products)
    coeffs[active], energies[active] = c, state.e  # curves that hit the iteration limit (MAX_ITER)
    return coeffs, energies, status, iterations


def _lagged_model(
    gradient_model: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    linear_model: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]],
    trial: Tensor,
    active: Tensor,
    state: LMState,
    predicted: Tensor,
    age: Tensor,
    rounded: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Segments, exact gradient and Gauss-Newton matrix at the trial points, the matrix kept from
    the step's start unless the step is accepted with a gain below REFRESH_BELOW of the predicted
    one (``rounded``: its gradient is not taken); returns them with the matrices' new ages."""
    s_new, g_new = gradient_model(trial, active)
    e_new = energy_from_segments(s_new)
    rho = (state.e - e_new) / predicted.clamp(min=torch.finfo(e_new.dtype).tiny)
    refresh = (e_new < state.e) & (rho < REFRESH_BELOW)
    h_new = state.hess  # kept (not copied: nothing writes into it) unless some curve refreshes
    rows = refresh.nonzero().squeeze(1)
    if rows.numel():
        h_new = h_new.clone()
        _, g_fresh, h_new[rows] = linear_model(trial[rows], active[rows])
        if not rounded:
            g_new[rows] = g_fresh
    return s_new, g_new, h_new, torch.where(refresh, 0, age + 1)
