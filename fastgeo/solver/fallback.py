"""Never longer than the straight line: where the optimized curve is longer than the straight
line between its ends (a failed optimization), the result falls back to the straight line."""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import Curves, straight_line, time_grid
from ..metric import ExpectedMetric
from .resolution import lengths_and_midpoint_lengths
from .result import STRAIGHT, GeodesicResult, Work


def never_longer_than_straight(
    metric: ExpectedMetric, res: GeodesicResult, midpoint_lengths: Tensor, work: Work
) -> Tensor:
    """Measure the straight lines of ``res`` (``res.straight_lengths``) and replace, in place,
    the curves longer than theirs by them. Returns the midpoint lengths of the final curves
    (for the resolution check)."""
    n = res.n_points
    z0, z1 = res.curves.z0, res.curves.z1
    with torch.no_grad():
        res.straight_lengths = metric.length(straight_line(z0, z1, time_grid(n, z0)))
    work.evals += z0.shape[0] * n
    worse = res.lengths > res.straight_lengths
    if not bool(worse.any()):
        return midpoint_lengths
    coeffs = torch.where(worse[:, None, None], torch.zeros_like(res.curves.coeffs), res.curves.coeffs)
    res.curves = Curves(z0, z1, coeffs, res.curves.basis)
    res.lengths = torch.where(worse, res.straight_lengths, res.lengths)
    idx = worse.nonzero().squeeze(1)
    with torch.no_grad():  # the straight line's own midpoint lengths, for the resolution check
        line = Curves(z0[idx], z1[idx], torch.zeros_like(coeffs[idx]), res.curves.basis)
        midpoint_lengths[idx] = lengths_and_midpoint_lengths(metric, line, n)[1]
        res.energies = torch.where(
            worse, metric.energy(straight_line(z0, z1, time_grid(n, z0))), res.energies
        )
    work.evals += idx.numel() * (2 * n - 1)
    res.init = torch.where(worse, torch.full_like(res.init, STRAIGHT), res.init)
    return midpoint_lengths
