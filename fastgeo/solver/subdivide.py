"""Subdivision: curves that a finer spline would shorten are solved again in it.

A cubic B-spline with ``m`` interior control points on uniform knots is exactly a B-spline with
``2 m - 1`` (every knot span halved): lifting a curve into the finer basis loses nothing. The
Gauss-Newton model of each curve's energy in the finer basis predicts what the finer curve would
gain (:mod:`.finer_gain`; recorded by the solver's last phase from its last linearization, so at
no decoder cost, or computed here for the curves it did not record). Long winding curves (along
the data of 2-D VAEs) and the curves of large latent dimensions (d = 16-32) gain 0.03-0.3 % there,
and the prediction tells them apart curve by curve (about twice the relative length gained,
measured on trained VAEs): those predicted to gain more than ``opts.subdivide_above`` (default
:data:`~fastgeo.solver.defaults.SUBDIVIDE_ABOVE`; ``fast``: a looser one) are solved on
in the finer basis with twice their points, the others keep their curve.

That is one level; ``opts.subdivide`` levels are taken, each on the curves the level before
solved (whose finer solve recorded their predicted gains in the next basis) that are predicted to
gain NEXT_LEVEL_ASKS times what the level before asked. One level left a trained d = 16 tanh conv
decoder's curves 0.03-0.06 % long on average (0.28-0.29 % at worst), a second gives 0.002 % /
0.026 % (bench/RESULTS.md, "A second level of subdivision"). Every result is then written in the
finest basis, whatever its batch (a curve's basis must not depend on the other curves of its
batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._progress import phase
from ..curves import BSplineBasis, Curves, evaluate
from ..discrete import energy_from_segments
from ..metric import ExpectedMetric
from .finer_gain import FinerGains, finer_basis, lift_matrix
from .linearize import products_by_chunks
from .options import SolverOptions, working_memory_per_curve
from .problem import Grid, full_gradient, full_parts
from .resolution import RESOLUTION_TOL, midpoint_lengths
from .result import CONVERGED, NONFINITE, UNDER_RESOLVED, GeodesicResult, Work
from .secant_finish import plain_then_secant

# Each level past the first asks this many times the predicted gain of the level before (its
# solve has twice the points): 1.0 (the first's threshold at the second level) cost 1.16-1.36x
# one level on mlp32_shapes, conv8_shapes and mlp64_glyphs, 2.5 1.0-1.13x with most of the gain
# (conv8_shapes 0.013 / 0.149 % -> 0.006 / 0.024 %, 1.0: 0.004 / 0.019 %; a held-out tanh conv
# decoder 0.059 / 0.290 -> 0.002 / 0.026 %, 1.0: -0.005 / 0.015 %; bench/RESULTS.md).
NEXT_LEVEL_ASKS = 2.5

# The finer solve runs to the call's own tolerance: with 10x it gained the same to 0.001 % on
# trained VAEs (d = 16-32) in 40-60 % fewer iterations, but stopped the demo's curve across the
# moons in a flat valley 0.2 % long.


def subdivide_curves(
    metric: ExpectedMetric,
    res: GeodesicResult,
    opts: SolverOptions,
    work: Work,
    first: tuple[Tensor, Tensor] | None,
    gains: Tensor,
) -> tuple[Tensor, Tensor] | None:
    """Lift every curve of ``res`` into the finer basis and solve on those predicted to gain, at
    twice their resolution (in place), ``opts.subdivide`` times: each level lifts every curve
    again and takes on the curves the level before solved. ``gains`` (B,): the predicted relative
    gains the solver recorded (NaN: not recorded, predicted here). ``first``: each curve's lengths
    on its grid and with the midpoints added (from the resolution check), updated for the curves
    solved again."""
    assert isinstance(opts.basis, BSplineBasis), "subdivision halves the spans of a B-spline"
    curves = res.curves
    candidates = ~(curves.z0 == curves.z1).all(-1) & (res.status_code != NONFINITE)
    basis = opts.basis
    for level in range(opts.subdivide):
        finer = finer_basis(basis)
        # A batched matmul, as in curves.evaluate: each curve lifted the same way whatever its batch.
        coeffs = torch.matmul(lift_matrix(basis, finer, res.curves.coeffs), res.curves.coeffs)
        res.curves = Curves(curves.z0, curves.z1, coeffs, finer)
        last = level == opts.subdivide - 1
        next_gains = torch.full_like(gains, torch.nan)
        solved = torch.zeros_like(candidates)
        p = finer.m * curves.z0.shape[1]
        # The groups by resolution before any is solved: a curve solved on at 2 n is in the finer
        # basis already and must not be taken again with the curves that were at 2 n.
        resolutions = torch.unique(res.resolution[candidates]).tolist()
        groups = [(n, candidates & (res.resolution == n)) for n in resolutions]
        for n, at_n in groups:
            unknown = (at_n & gains.isnan()).nonzero().squeeze(1)
            own = Grid.of(finer, n, coeffs)  # the curves' own grid, in the finer basis
            record = FinerGains(own.psi, gains, banded=not opts.secant)
            size = _batch_size(opts, metric, n, p)
            for lo in range(0, unknown.numel(), size):
                _predict(metric, res, opts, work, unknown[lo : lo + size], own, record)
            above = opts.subdivide_above * NEXT_LEVEL_ASKS**level
            go = (at_n & (gains > above)).nonzero().squeeze(1)  # NaN: not finite, kept
            size = _batch_size(opts, metric, 2 * n, p)
            grid = Grid.of(finer, 2 * n, coeffs)
            finest = None if last else finer_basis(finer)(grid.t)
            with phase(f"finer spline {level + 1}/{opts.subdivide}: {go.numel()} curves on {2 * n} points"):
                for lo in range(0, go.numel(), size):
                    rows = go[lo : lo + size]
                    done = _solve_finer(metric, res, opts, work, rows, grid, first, finest, next_gains)
                    solved[done] = True
        candidates, gains, basis = solved, next_gains, finer
    return first


def _predict(
    metric: ExpectedMetric,
    res: GeodesicResult,
    opts: SolverOptions,
    work: Work,
    rows: Tensor,
    grid: Grid,
    record: FinerGains,
) -> None:
    """The predicted gains of curves ``rows`` (already in the finer basis), from a linearization on
    their own points (``grid``)."""
    z0, z1 = res.curves.z0[rows], res.curves.z1[rows]
    pts = evaluate(z0, z1, res.curves.coeffs[rows], grid.psi, grid.t)
    s, v, G, C = products_by_chunks(full_parts(metric, work, opts.fresh_tangent_dtype), pts, rows)
    record.record(rows, (v, G, C), energy_from_segments(s))


def _solve_finer(
    metric: ExpectedMetric,
    res: GeodesicResult,
    opts: SolverOptions,
    work: Work,
    rows: Tensor,
    grid: Grid,
    first: tuple[Tensor, Tensor] | None,
    finest: Tensor | None,
    gains: Tensor,
) -> Tensor:
    """Curves ``rows`` of ``res`` (already in the finer basis) solved on ``grid``; returns the rows
    whose curves changed. ``finest``: the next level's basis on ``grid``, where the converged
    curves' predicted gains in it are recorded (into ``gains``, (B,)); None at the last level."""
    z0, z1 = res.curves.z0[rows], res.curves.z1[rows]
    record = None
    if finest is not None:
        record = FinerGains(finest, gains.new_full((rows.numel(),), torch.nan), banded=not opts.secant)
    coeffs, energies, status, iterations = plain_then_secant(
        full_parts(metric, work, opts.tangent_dtype or opts.fresh_tangent_dtype),
        z0,
        z1,
        res.curves.coeffs[rows],
        grid,
        opts.max_iter,
        opts.tol,
        gradient=full_gradient(metric, work) if opts.lagged else None,
        secant=opts.secant,
        finer=record,
        rounded=opts.tangent_dtype is not None,
    )
    if record is not None:
        gains[rows] = record.gains
    keep = status != NONFINITE  # a finer solve that met NaN keeps the curve it started from
    idx, coeffs, energies, status, iterations = (
        x[keep] for x in (rows, coeffs, energies, status, iterations)
    )
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
    return idx


def _batch_size(opts: SolverOptions, metric: ExpectedMetric, n: int, p: int) -> int:
    """Curves solved at once in the finer basis: the call's batch scaled by the memory model."""
    item = torch.finfo(metric.dtype).bits // 8
    d, D = metric.latent_dim, metric.data_dim
    was = working_memory_per_curve(d, D, opts.n_points, opts.m * d, item)
    now = working_memory_per_curve(d, D, n, p, item)
    return max(1, opts.batch_size * was // now)
