"""The resolution check: a curve can step over a thin ridge of the metric between its points, and
then the optimizer does not see it. Every curve is measured at the midpoints of its segments too;
those whose length grows by more than :data:`RESOLUTION_TOL` are solved again with twice the
points, up to :data:`RESOLUTION_DOUBLINGS` times, and flagged ``under_resolved`` if still so.
The dense oracle's polylines (one node per point) are only flagged (:func:`flag_under_resolved`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..curves import Curves
from ..metric import ExpectedMetric
from .measure import curve_lengths
from .result import CONVERGED, GIVEN, UNDER_RESOLVED, GeodesicResult, Work

RESOLUTION_TOL = 0.01  # a length that grows more than this at the midpoints is under-resolved
RESOLUTION_DOUBLINGS = 2  # re-solve under-resolved curves with up to 2**this times the points

# solve_at(curves idx, points n, starting coefficients) -> coeffs, energies, status, iterations,
# start, predicted gains of subdivision (not used here)
SolveAt = Callable[[Tensor, int, Tensor], tuple[Tensor, ...]]


def midpoint_lengths(metric: ExpectedMetric, curves: Curves, n: int, work: Work) -> tuple[Tensor, Tensor]:
    """Discrete lengths (B,) of each curve on its n-point grid and with the midpoints added
    (2n - 1 points): their ratio is the check's growth, and they are the first two grids of
    :func:`fastgeo.solver.measure.measure`."""
    return curve_lengths(metric, curves, n, work), curve_lengths(metric, curves, 2 * n - 1, work)


def flag_under_resolved(metric: ExpectedMetric, res: GeodesicResult, work: Work) -> tuple[Tensor, Tensor]:
    """Flag ``under_resolved`` (in place) the converged curves of ``res`` whose length grows by
    more than RESOLUTION_TOL at the midpoints of their ``res.n_points`` points, without solving
    them again; returns the two lengths, as :func:`refine_resolution` does."""
    same = (res.curves.z0 == res.curves.z1).all(-1)
    coarse, fine = midpoint_lengths(metric, res.curves, res.n_points, work)
    under = (fine / coarse - 1 > RESOLUTION_TOL) & ~same & (res.status_code == CONVERGED)
    res.status_code = res.status_code.masked_fill(under, UNDER_RESOLVED)
    return coarse, fine


def refine_resolution(
    metric: ExpectedMetric, res: GeodesicResult, solve_at: SolveAt, work: Work
) -> tuple[Tensor, Tensor]:
    """Re-solve the under-resolved curves of ``res`` (in place) with twice the points, up to
    RESOLUTION_DOUBLINGS times; flag those still under-resolved. Returns each final curve's
    lengths on its grid (``res.resolution`` points) and with the midpoints added."""
    n = res.n_points
    same = (res.curves.z0 == res.curves.z1).all(-1)
    coarse, fine = midpoint_lengths(metric, res.curves, n, work)
    grow = fine / coarse - 1
    for level in range(RESOLUTION_DOUBLINGS + 1):
        under = (grow > RESOLUTION_TOL) & (res.resolution == n) & ~same
        if not bool(under.any()):
            break
        idx = under.nonzero().squeeze(1)
        if level == RESOLUTION_DOUBLINGS:
            flag = res.status_code[idx] == CONVERGED
            res.status_code[idx] = torch.where(flag, UNDER_RESOLVED, res.status_code[idx].long()).to(
                torch.int8
            )
            break
        n *= 2
        coeffs, energies, status, iterations, start, _ = solve_at(idx, n, res.curves.coeffs[idx])
        res.curves.coeffs[idx] = coeffs
        res.energies[idx], res.status_code[idx] = energies, status
        # A start "given" here is the coarser solution: keep naming the start that one came from.
        res.init[idx] = torch.where(start == GIVEN, res.init[idx], start)
        res.iterations[idx] += iterations
        res.resolution[idx] = n
        sub = Curves(res.curves.z0[idx], res.curves.z1[idx], coeffs, res.curves.basis)
        coarse[idx], fine[idx] = midpoint_lengths(metric, sub, n, work)
        grow[idx] = fine[idx] / coarse[idx] - 1
    return coarse, fine
