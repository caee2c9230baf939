"""Lengths that are the curve's length: each curve is measured on finer and finer grids (doubling
the points) until the length settles to ``LENGTH_RTOL``, in bounded memory.

The discrete length of a curve on n points is the length of the polyline through the images of
those points: it never decreases when points are added (triangle inequality) and, for a smooth
metric, approaches the curve's length as O(1/n^2). So the change between two grids bounds the
remaining error: ``(L_2n - L_n) / 3`` is reported as its estimate (Richardson).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import Curves
from ..metric import ExpectedMetric, feature_segments, length_from_segments
from .result import Work

LENGTH_RTOL = 1e-4  # a length has settled when doubling the points changes it by less than this
MAX_POINTS = 4097  # the finest grid (4096 segments)
BUDGET = 64 << 20  # bytes of features held at once


def curve_lengths(metric: ExpectedMetric, curves: Curves, n: int, work: Work) -> Tensor:
    """Discrete lengths (B,) of the curves on n points, the points in chunks (bounded memory)."""
    B = len(curves)
    if B == 0:
        return curves.z0.new_zeros(0)
    per_point = 2 * metric.data_dim * curves.z0.element_size()
    rows = max(2, BUDGET // per_point)  # points evaluated at once
    curves_at_once = max(1, rows // n)
    t_chunk = max(2, min(n, rows))
    total = curves.z0.new_zeros(B)
    t = torch.linspace(0, 1, n, dtype=curves.z0.dtype, device=curves.z0.device)
    with torch.no_grad():
        for b0 in range(0, B, curves_at_once):
            sub = Curves(
                *(x[b0 : b0 + curves_at_once] for x in (curves.z0, curves.z1, curves.coeffs)), curves.basis
            )
            for s0 in range(0, n - 1, t_chunk - 1):  # chunks share their end point
                pts = sub.at(t[s0 : s0 + t_chunk])
                total[b0 : b0 + curves_at_once] += length_from_segments(
                    feature_segments(metric.features(pts))
                )
                work.evals += pts.shape[0] * pts.shape[1]
    return total


def measure(
    metric: ExpectedMetric,
    curves: Curves,
    start: Tensor,
    work: Work,
    rtol: float = LENGTH_RTOL,
    first: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Lengths (B,), their error estimates (B,) and the points of the grid they were measured on
    (B,): grids of n, 2n - 1, 4n - 3, ... points from ``start`` (B,) points each, until the
    length changes by less than ``rtol`` relative or MAX_POINTS is reached. ``first``: the
    lengths on the first two grids where already known (the resolution check measures them)."""
    B = len(curves)
    if first is not None and any(f.shape != (B,) for f in first):
        raise ValueError(f"first: two lengths per curve, (B,) = ({B},) each, measured at `start` points")
    lengths = curves.z0.new_zeros(B)
    errors = torch.full_like(lengths, torch.inf)
    used = start.clone()
    for n0 in torch.unique(start).tolist():
        idx = (start == n0).nonzero().squeeze(1)
        sub = Curves(curves.z0[idx], curves.z1[idx], curves.coeffs[idx], curves.basis)
        known = first is not None and 2 * n0 - 1 <= MAX_POINTS
        n = int(n0)
        previous = first[0][idx].clone() if known else curve_lengths(metric, sub, n, work)
        active = torch.arange(len(idx), device=idx.device)
        while active.numel() and n < MAX_POINTS:
            n = min(2 * n - 1, MAX_POINTS)
            if known and n == 2 * n0 - 1:
                finer = first[1][idx]
            else:
                part = Curves(sub.z0[active], sub.z1[active], sub.coeffs[active], sub.basis)
                finer = curve_lengths(metric, part, n, work)
            change = finer - previous[active]
            rows = idx[active]
            lengths[rows], errors[rows], used[rows] = finer, change.abs() / 3, n
            settled = ~(change.abs() > rtol * finer)  # NaN settles: it stays NaN
            previous[active] = finer
            active = active[~settled]
    return lengths, errors, used
