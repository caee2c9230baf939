"""Subdivision: curves that a finer spline would shorten are solved again in it.

A cubic B-spline with ``m`` interior control points on uniform knots is exactly a B-spline with
``2 m - 1`` (every knot span halved): lifting a curve into the finer basis loses nothing. There,
on twice its points, the Gauss-Newton model of each curve's energy predicts what the finer curve
would gain, ``-(g.step + step.H.step / 2)`` for Levenberg-Marquardt's first step. Long winding
curves (along the data of 2-D VAEs) and the curves of large latent dimensions (d = 16-32) gain
0.03-0.3 % there, and the prediction tells them apart curve by curve (it is about twice the
relative length gained, measured on trained VAEs): those predicted to gain more than
:data:`SUBDIVIDE_ABOVE` go on in the finer basis from that step, the others keep their curve. Every
result is then written in the finer basis, whatever its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import BSplineBasis, Curves, evaluate
from ..metric import ExpectedMetric, energy_from_segments
from ..ops.banded_step import block_bandwidth
from ..ops.solver_ops import lm_propose
from .levenberg_marquardt import INITIAL_DAMPING, levenberg_marquardt
from .linearize import linearize
from .options import SolverOptions, working_memory_per_curve
from .problem import Grid, full_gradient, full_parts
from .resolution import RESOLUTION_TOL, midpoint_lengths
from .result import CONVERGED, NONFINITE, UNDER_RESOLVED, GeodesicResult, Work

# A curve goes on in the finer basis where its energy is predicted to fall by more than this,
# relative (its length by about half as much). Trained VAEs (d = 2-32): curves predicted below
# it gained < 0.01 % when solved anyway.
SUBDIVIDE_ABOVE = 5e-4


def finer_basis(basis: BSplineBasis) -> BSplineBasis:
    """The B-spline with every knot span of ``basis`` halved (``2 m - 1`` interior functions)."""
    return BSplineBasis(2 * basis.m - 1)


def lift_matrix(basis: BSplineBasis, finer: BSplineBasis, like: Tensor) -> Tensor:
    """R (m', m) with ``finer(t) @ R == basis(t)``: coefficients in ``basis`` to the same curve's
    in ``finer`` (``finer``'s knots must contain ``basis``'s; solved in float64, exact to
    rounding)."""
    t = torch.linspace(0, 1, 4 * finer.m + 7, dtype=torch.float64)
    fine, coarse = finer(t), basis(t)
    lift = torch.linalg.lstsq(fine, coarse).solution
    if not torch.allclose(fine @ lift, coarse, atol=1e-10):
        raise ValueError(f"{finer!r} does not contain {basis!r}")
    return lift.to(dtype=like.dtype, device=like.device)


def subdivide_curves(
    metric: ExpectedMetric,
    res: GeodesicResult,
    opts: SolverOptions,
    work: Work,
    first: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor] | None:
    """Lift every curve of ``res`` into the finer basis and solve on those predicted to gain, at
    twice their resolution (in place). ``first``: each curve's lengths on its grid and with the
    midpoints added (from the resolution check), updated for the curves solved again."""
    assert isinstance(opts.basis, BSplineBasis), "subdivision halves the spans of a B-spline"
    finer = finer_basis(opts.basis)
    curves = res.curves
    # A batched matmul, as in curves.evaluate: each curve lifted the same way whatever its batch.
    coeffs = torch.matmul(lift_matrix(opts.basis, finer, curves.coeffs), curves.coeffs)
    res.curves = Curves(curves.z0, curves.z1, coeffs, finer)
    d = curves.z0.shape[1]
    candidates = ~(curves.z0 == curves.z1).all(-1) & (res.status_code != NONFINITE)
    for n in torch.unique(res.resolution[candidates]).tolist():
        rows = (candidates & (res.resolution == n)).nonzero().squeeze(1)
        size = _batch_size(opts, metric, 2 * n, finer.m * d)
        for lo in range(0, rows.numel(), size):
            _solve_finer(metric, res, opts, work, rows[lo : lo + size], Grid.of(finer, 2 * n, coeffs), first)
    return first


def _solve_finer(
    metric: ExpectedMetric,
    res: GeodesicResult,
    opts: SolverOptions,
    work: Work,
    rows: Tensor,
    grid: Grid,
    first: tuple[Tensor, Tensor] | None,
) -> None:
    """Curves ``rows`` of ``res`` (already in the finer basis): predict, and solve on ``grid``
    those predicted to gain."""
    z0, z1 = res.curves.z0[rows], res.curves.z1[rows]
    lifted = res.curves.coeffs[rows]
    parts = full_parts(metric, work)
    local = torch.arange(rows.numel(), device=rows.device)
    s, grad, hess = linearize(parts(evaluate(z0, z1, lifted, grid.psi, grid.t), local), grid.psi)
    _, predicted, _ = lm_propose(
        grad,
        hess,
        torch.zeros_like(hess),
        torch.full_like(s[:, 0], INITIAL_DAMPING),
        grid.n - 1,
        None if opts.secant else (z0.shape[1], block_bandwidth(grid.psi)),
    )
    gain = predicted / energy_from_segments(s)
    go = (gain > SUBDIVIDE_ABOVE).nonzero().squeeze(1)  # NaN: not finite here, keep the curve
    if go.numel() == 0:
        return
    coeffs, energies, status, iterations = levenberg_marquardt(
        parts,
        z0[go],
        z1[go],
        lifted[go],
        grid,
        opts.max_iter,
        opts.tol,
        gradient=full_gradient(metric, work) if opts.lagged else None,
        secant=opts.secant,
        model=(s[go], grad[go], hess[go]),
    )
    keep = status != NONFINITE  # a finer solve that met NaN keeps the curve it started from
    go, coeffs, energies, status, iterations = (x[keep] for x in (go, coeffs, energies, status, iterations))
    idx = rows[go]
    res.iterations[idx] += iterations
    res.resolution[idx] = grid.n
    res.curves.coeffs[idx] = coeffs
    sub = Curves(res.curves.z0[idx], res.curves.z1[idx], coeffs, res.curves.basis)
    coarse, fine = midpoint_lengths(metric, sub, grid.n, work)
    # The finer grid must not step over a ridge either (the resolution check's test).
    under = (fine / coarse - 1 > RESOLUTION_TOL) & (status == CONVERGED)
    res.status_code[idx] = torch.where(under, UNDER_RESOLVED, status.long()).to(torch.int8)
    res.energies[idx] = energies
    if first is not None:
        first[0][idx], first[1][idx] = coarse, fine


def _batch_size(opts: SolverOptions, metric: ExpectedMetric, n: int, p: int) -> int:
    """Curves solved at once in the finer basis: the call's batch scaled by the memory model."""
    item = torch.finfo(metric.dtype).bits // 8
    d, D = metric.latent_dim, metric.data_dim
    was = working_memory_per_curve(d, D, opts.n_points, opts.m * d, item)
    now = working_memory_per_curve(d, D, n, p, item)
    return max(1, opts.batch_size * was // now)
