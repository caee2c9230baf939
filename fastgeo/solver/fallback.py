"""Never longer than the straight line: where the optimized curve is longer than the straight
line between its ends (a failed optimization), the result falls back to the straight line."""

from __future__ import annotations

import torch

from ..curves import Curves, straight_line, time_grid
from ..metric import ExpectedMetric
from .measure import LENGTH_RTOL, measure
from .result import STRAIGHT, STRAIGHT_FALLBACK, GeodesicResult, Work

# The straight lines are measured to LINE_RTOL, and finer than the curves' LENGTH_RTOL only where
# they are within CLOSE of their curve: elsewhere the comparison is decided (a discrete length is a
# lower bound of the length: a straight line measured longer than its curve is longer), and
# halving the grid doublings of the check matters when the decoder is expensive.
LINE_RTOL = 1e-3
CLOSE = 1e-2


def never_longer_than_straight(metric: ExpectedMetric, res: GeodesicResult, work: Work) -> None:
    """Measure the straight lines of ``res`` (``res.straight_lengths``: to LINE_RTOL, or to a third
    of the curves' tolerance where within CLOSE of them) and replace, in place, the curves longer
    than theirs by them: status ``straight_fallback``, unless the curve was no longer than its
    straight line within the measurements' tolerance and error estimates (the straight line is
    then the geodesic, as for a linear decoder, and the status stays)."""
    z0, z1 = res.curves.z0, res.curves.z1
    line = Curves(z0, z1, torch.zeros_like(res.curves.coeffs), res.curves.basis)
    start = torch.full_like(res.resolution, res.n_points)
    straight, errors, used = measure(metric, line, start, work, rtol=max(LINE_RTOL, LENGTH_RTOL))
    close = (~(straight > res.lengths * (1 + CLOSE))).nonzero().squeeze(1)  # NaN: measured again
    if close.numel():
        sub = Curves(z0[close], z1[close], line.coeffs[close], line.basis)
        # Finer than the curves' own tolerance: a line within it of its curve decides which one
        # is returned, and a grid's error estimate can be a few times short of the truth.
        finer = measure(metric, sub, used[close], work, rtol=LENGTH_RTOL / 3)
        straight[close], errors[close], used[close] = finer
    res.straight_lengths = straight
    worse = res.lengths > straight
    if not bool(worse.any()):
        return
    # Longer beyond both measurements' error estimates (each up to LENGTH_RTOL): a failed curve.
    failed = worse & (res.lengths > straight * (1 + LENGTH_RTOL) + errors + res.length_errors)
    res.curves = Curves(z0, z1, torch.where(worse[:, None, None], line.coeffs, res.curves.coeffs), line.basis)
    res.lengths = torch.where(worse, straight, res.lengths)
    res.length_errors = torch.where(worse, errors, res.length_errors)
    res.measure_points = torch.where(worse, used, res.measure_points)
    with torch.no_grad():
        e_line = metric.energy(straight_line(z0, z1, time_grid(res.n_points, z0)))
    work.add(evals=z0.shape[0] * res.n_points)
    res.energies = torch.where(worse, e_line, res.energies)
    res.resolution = torch.where(worse, res.n_points, res.resolution)
    res.init = torch.where(worse, torch.full_like(res.init, STRAIGHT), res.init)
    res.status_code = torch.where(failed, STRAIGHT_FALLBACK, res.status_code.long()).to(torch.int8)
