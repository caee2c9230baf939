"""Lengths that are the curve's length: each curve is measured on finer grids (its segments halved
one or more times) until the length's estimated error is below ``LENGTH_RTOL``, in bounded memory.

The discrete length of a curve on n points is the length of the polyline through the images of
those points: it never decreases when points are added (triangle inequality) and, for a smooth
metric, approaches the curve's length as O(1/n^2). So the change between two grids estimates the
remaining error (Richardson): ``(L_2n - L_n) / 3``. The same estimate tells how much finer the
grid must be (the error falls 4x per doubling): the measurement goes to one doubling short of
it, then doubles once to confirm (a decoder's cost grows with the points: the grids skipped are
saved).

Rounding sets a floor: each segment's feature difference carries the decoder's rounding error, and
on fine grids of a short curve in float32 these errors add up to more than the length itself (a
curve 1e-3 long in a d = 16 image VAE measured 2-5x too long on 4,097 points). A float32 curve
whose length does not settle is measured on its first grid in float64 too; where the two differ,
rounding is what kept it from settling, and it is measured in float64 (the metric converted, when
its mean is an ``nn.Module``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._quiet import quiet
from ..curves import Curves
from ..discrete import feature_segments, length_from_segments
from ..metric import ExpectedMetric
from .result import Work

LENGTH_RTOL = 1e-4  # a length has settled when its estimated error is below this, relative
MAX_POINTS = 4097  # the finest grid (4096 segments)
# Bytes of features held at once. Small on purpose: larger chunks are mapped afresh by glibc on
# every call (page faults) and leave the cache; 4 MB measured 1.5-2x faster than 64 MB (mlp32 and
# conv8 decoders, 16 curves on 1,025 points).
BUDGET = 4 << 20
BUDGET_ELSEWHERE = 64 << 20  # on other devices than the CPU: memory alone counts


def curve_lengths(metric: ExpectedMetric, curves: Curves, n: int, work: Work) -> Tensor:
    """Discrete lengths (B,) of the curves on n points, the points in chunks (bounded memory)."""
    B = len(curves)
    if B == 0:
        return curves.z0.new_zeros(0)
    per_point = 2 * metric.data_dim * curves.z0.element_size()
    budget = BUDGET if curves.z0.device.type == "cpu" else BUDGET_ELSEWHERE
    rows = max(2, budget // per_point)  # points evaluated at once
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
                    feature_segments(metric.embedding(pts))
                )
                work.add(evals=pts.shape[0] * pts.shape[1])
    return total


def measure(
    metric: ExpectedMetric,
    curves: Curves,
    start: Tensor,
    work: Work,
    rtol: float = LENGTH_RTOL,
    first: tuple[Tensor, Tensor] | None = None,
    max_points: int = MAX_POINTS,
) -> tuple[Tensor, Tensor, Tensor]:
    """Lengths (B,), their error estimates (B,) and the points of the grid they were measured on
    (B,): from ``start`` (B,) points each, on grids of n and 2n - 1 points, then, curve by curve,
    on grids with 2^k times the segments (k one short of what its error estimate asks, then one
    doubling to confirm) until the estimated error of one doubling is below ``rtol`` relative or
    the grid has ``max_points`` points (or 2n - 1 if more). ``first``:
    the lengths on the first two grids where already known (the resolution check measures them)."""
    B = len(curves)
    if first is not None and any(f.shape != (B,) for f in first):
        raise ValueError(f"first: two lengths per curve, (B,) = ({B},) each, measured at `start` points")
    start = start.to(torch.long)
    second = 2 * start - 1
    finest = second.clamp(min=max_points)
    if first is not None:
        previous, lengths = first[0].clone(), first[1].clone()
    else:
        previous, lengths = (_grouped(metric, curves, grid, work) for grid in (start, second))
    coarse = previous.clone()
    n = second.clone()
    ratio = torch.full_like(lengths, 2.0)  # segments of this grid over the grid before
    errors = torch.full_like(lengths, torch.inf)
    active = torch.arange(B, device=start.device)
    capped = False
    while active.numel():
        r = ratio[active]
        # Richardson: r times the segments divides an O(1/n^2) error by r^2 (4^k for k doublings;
        # the finest grid need not be a doubling of the one before).
        error = (lengths[active] - previous[active]).abs() / (r * r - 1)
        errors[active] = error
        # Only an estimate from one doubling (or less) settles a length: after a jump the coarser
        # grid can be far from the smooth limit (a thin wall between its points). NaN settles (it
        # stays NaN), as does a curve on its finest grid.
        small = ~(error > rtol * lengths[active])
        go_on = ~(small & (r <= 2)) & (n[active] < finest[active]) & ~torch.isnan(error)
        active, error, small = active[go_on], error[go_on], small[go_on]
        if active.numel() and lengths.dtype == torch.float64 and not capped:
            # float64 has no wider type to measure in: a grid no finer than its rounding allows
            capped = True
            finest[active] = torch.minimum(
                finest[active], _rounding_cap(metric, curves, active, lengths, rtol, work)
            )
            go_on = n[active] < finest[active]
            active, error, small = active[go_on], error[go_on], small[go_on]
        if active.numel() == 0:
            break
        # Each curve goes to the grid its own estimate asks for, less one doubling that confirms
        # it (a curve's length must not depend on its batch).
        asked = (error / (rtol * lengths[active])).clamp(min=1.0, max=4.0**12)
        wanted = torch.log(asked).div(math.log(4.0)).ceil().to(torch.long)
        jump = torch.where(small, 1, (wanted - 1).clamp(min=1))
        previous[active] = lengths[active]
        n_new = torch.minimum((n[active] - 1) * 2**jump + 1, finest[active])
        ratio[active] = ((n_new - 1) / (n[active] - 1)).to(ratio.dtype)
        n[active] = n_new
        lengths[active] = _grouped(metric, _rows(curves, active), n_new, work)
    coarser = (finest < n).nonzero().squeeze(1)  # float64 grids finer than rounding allows
    if coarser.numel():
        lengths[coarser] = _grouped(metric, _rows(curves, coarser), finest[coarser], work)
        n[coarser] = finest[coarser]
    if lengths.dtype == torch.float32:
        _rounding_floor(metric, curves, start, coarse, (lengths, errors, n), work, rtol, max_points)
    return lengths, errors, n


# Times finer than a curve's measurement grid that :func:`finite_between` looks (a curve kept out of
# a decoder's NaN region at its grid points, bulging into it between them: 0.1-1 % of its length
# inside on a 2-D decoder with a NaN disk, so a few points of this grid fall inside).
BETWEEN = 8


def finite_between(
    metric: ExpectedMetric, curves: Curves, points: Tensor, work: Work, rows: Tensor
) -> Tensor:
    """(K,) bool: the metric is finite along the curves ``rows`` (K,) on a grid :data:`BETWEEN`
    times finer than their ``points`` (B,) (the grids their lengths were measured on)."""
    finer = (points[rows].to(torch.long) - 1) * BETWEEN + 1
    return torch.isfinite(_grouped(metric, _rows(curves, rows), finer, work))


# A decoder's output carries more rounding than its last unit: its layers round too (a 2-D digits
# MLP measured ~30 units); the grids' cap counts this many.
DECODER_ULPS = 32


def _rounding_cap(
    metric: ExpectedMetric, curves: Curves, rows: Tensor, lengths: Tensor, rtol: float, work: Work
) -> Tensor:
    """(K,) the finest grid (points) on which the curves ``rows`` (of ``lengths`` (B,)) can be
    measured before rounding adds ``rtol / 4`` to their lengths: each segment's features carry
    ``eps |f|`` of rounding, which adds ``(n eps |f| / L)^2 / 2`` relative over n segments (codes
    1e-12 apart in float64 came out 18-39 % long on 4,097 points, 2e-4 on 96)."""
    ends = torch.stack([curves.z0[rows], curves.z1[rows]], 1)
    with torch.no_grad():
        scale = metric.embedding(ends).norm(dim=-1).amax(-1)
    work.add(evals=ends.shape[0] * 2)
    ratio = DECODER_ULPS * torch.finfo(lengths.dtype).eps * scale / lengths[rows]  # per segment, at n = 2
    room = math.sqrt(rtol / 2)
    most = float(1 << 40)  # no cap (the caller's finest grid applies)
    points = torch.where(ratio > 0, (room / ratio).clamp(max=most), most)
    return points.floor().to(torch.long).clamp(min=2) + 1


def _rounding_floor(
    metric: ExpectedMetric,
    curves: Curves,
    start: Tensor,
    coarse: Tensor,
    measured: tuple[Tensor, Tensor, Tensor],
    work: Work,
    rtol: float,
    max_points: int,
) -> None:
    """Measure again in float64, in place of ``measured`` (lengths, errors, points), the float32
    curves whose length did not settle and whose length on the first grid (``coarse``) moves by
    more than a third of ``rtol`` in float64: rounding, not the curve, kept them from settling.
    Nothing changes where the metric cannot be converted (a plain callable mean) or its float64
    copy fails to run (a decoder written for float32 only): those lengths keep their estimate."""
    lengths, errors, n = measured
    unsettled = (errors > rtol * lengths).nonzero().squeeze(1)
    if unsettled.numel() == 0:
        return
    metric64 = float64_metric(metric)
    if metric64 is None:
        return
    try:
        sub = _rows(curves, unsettled)
        sub = Curves(sub.z0.double(), sub.z1.double(), sub.coeffs.double(), sub.basis)
        coarse64 = _grouped(metric64, sub, start[unsettled], work)
    except (TypeError, RuntimeError):
        return
    noisy = (coarse64 - coarse[unsettled].double()).abs() > rtol / 3 * coarse64
    if not bool(noisy.any()):
        return
    rows = noisy.nonzero().squeeze(1)
    found = measure(metric64, _rows(sub, rows), start[unsettled][rows], work, rtol, max_points=max_points)
    for out, new in zip(measured, found, strict=True):
        out[unsettled[rows]] = new.to(out.dtype)


def _rows(curves: Curves, rows: Tensor) -> Curves:
    return Curves(curves.z0[rows], curves.z1[rows], curves.coeffs[rows], curves.basis)


def _grouped(metric: ExpectedMetric, curves: Curves, points: Tensor, work: Work) -> Tensor:
    """Discrete lengths (B,) of the curves, each on its own number of ``points`` (B,)."""
    out = curves.z0.new_zeros(len(curves))
    for n in torch.unique(points).tolist():
        rows = (points == n).nonzero().squeeze(1)
        out[rows] = curve_lengths(metric, _rows(curves, rows), int(n), work)
    return out


def float64_metric(metric: ExpectedMetric) -> ExpectedMetric | None:
    """A float64 copy of ``metric`` (made afresh: the decoder may have been trained since), or None
    where it cannot be made or run (a plain callable mean, a decoder written for float32). Its
    checks' warnings are not repeated: the user's metric gave them when it was made."""
    try:
        with quiet():
            return metric.to(torch.float64)
    except (TypeError, RuntimeError, ValueError):
        return None
