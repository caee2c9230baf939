"""The resolution check: a curve can step over a thin ridge of the metric between its points, and
its discrete length then underestimates it. Every curve is measured at the midpoints of its
segments too; those whose length grows by more than :data:`RESOLUTION_TOL` are solved again
with twice the points, up to :data:`RESOLUTION_DOUBLINGS` times, and flagged unconverged if
still under-resolved."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..curves import Curves
from ..metric import ExpectedMetric, feature_segments, length_from_segments
from .result import GIVEN, GeodesicResult

RESOLUTION_TOL = 0.01  # a length that grows more than this at the midpoints is under-resolved
RESOLUTION_DOUBLINGS = 2  # re-solve under-resolved curves with up to 2**this times the points

# solve_finer(curves idx, points n, starting coefficients) -> their result at n points
SolveFiner = Callable[[Tensor, int, Tensor], GeodesicResult]


def lengths_and_midpoint_lengths(metric: ExpectedMetric, curves: Curves, n: int) -> tuple[Tensor, Tensor]:
    """Discrete lengths (B,) of the curves at ``n`` points and at ``2n - 1`` (the midpoints of
    the segments added), from one pass of the decoder over the finer points."""
    f = metric.features(curves.points(2 * n - 1))  # (B, 2n-1, F); every other point is the n-grid
    fine = length_from_segments(feature_segments(f))
    coarse = length_from_segments(feature_segments(f[:, ::2]))
    return coarse, fine


def refine_resolution(
    metric: ExpectedMetric, res: GeodesicResult, midpoint_lengths: Tensor, solve_finer: SolveFiner
) -> GeodesicResult:
    """Re-solve the under-resolved curves of ``res`` (in place) with twice the points, up to
    RESOLUTION_DOUBLINGS times; flag those still under-resolved as not converged."""
    n = res.n_points
    same = (res.curves.z0 == res.curves.z1).all(-1)
    for level in range(RESOLUTION_DOUBLINGS + 1):
        under = (midpoint_lengths > res.lengths * (1 + RESOLUTION_TOL)) & (res.resolution == n) & ~same
        if not bool(under.any()):
            break
        idx = under.nonzero().squeeze(1)
        if level == RESOLUTION_DOUBLINGS:
            res.converged[idx] = False
            break
        n *= 2
        sub = solve_finer(idx, n, res.curves.coeffs[idx])
        res.curves.coeffs[idx] = sub.curves.coeffs
        for name in ("lengths", "energies", "converged", "straight_lengths"):
            getattr(res, name)[idx] = getattr(sub, name)
        # A start "given" here is the coarser solution: keep naming the start that one came from.
        res.init[idx] = torch.where(sub.init == GIVEN, res.init[idx], sub.init)
        res.iterations[idx] += sub.iterations
        res.resolution[idx] = n
        res.decoder_evals += sub.decoder_evals
        res.decoder_jvps += sub.decoder_jvps
        with torch.no_grad():
            _, mid = lengths_and_midpoint_lengths(metric, sub.curves, n)
        res.decoder_evals += idx.numel() * (2 * n - 1)
        midpoint_lengths = midpoint_lengths.clone()
        midpoint_lengths[idx] = mid
    return res
