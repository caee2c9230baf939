"""Accuracy as the benchmarks and tests measure it: excess length ``L / L_dense - 1`` against
``method="dense"``, every curve (the oracle's too) measured the same way, in float64, on a grid
of ``MEASURE_POINTS`` points.

The fine grid matters for the oracle: its polylines have 128 nodes, and where the metric has
sharp ridges (sigma rising steeply between clusters) a segment can step over one, so the
polyline's own 128-node length misses what lies between its nodes. Measured between its nodes
too (the polyline is linear there), the oracle gets no credit a smooth curve could not. Where a
segment crosses a very thin wall even 1,024 points can step over it (the synthetic generator of
``fastgeo bench``: two polylines 3.2 long on their nodes, 152.9 on 1,024 points, 163.7 on 65,537),
so the oracle's polylines are measured on finer grids until each length settles
(:func:`fastgeo.solver.measure.measure`, to ``ORACLE_RTOL``); on smooth metrics they settle at
once, to the 1,024-point length within that tolerance.

``length_gaps`` checks the other side of a result: that each reported length is its own curve's,
measured on a grid much finer than the solver's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import Curves
from ..metric import ExpectedMetric
from ..solver import GeodesicResult
from ..solver.measure import measure
from ..solver.result import Work

MEASURE_POINTS = 1024
FINE_POINTS = 4096
ORACLE_RTOL = 1e-5  # the oracle's lengths are measured until their estimated error is below this
ORACLE_MAX_POINTS = 65537


MEASURE_CHUNK = 8192  # points decoded at once (a conv decoder's float64 activations are large)


def measured_lengths(metric64: ExpectedMetric, points: Tensor) -> Tensor:
    """Lengths (B,) of curves sampled densely enough, (B, n, d) in any float dtype; no autograd
    graph, curves in chunks of about MEASURE_CHUNK points (bounded memory)."""
    B, n = points.shape[:2]
    step = max(1, MEASURE_CHUNK // n)
    with torch.no_grad():
        parts = [metric64.length(points[i : i + step].to(metric64.dtype)) for i in range(0, B, step)]
    return torch.cat(parts) if parts else points.new_zeros(0, dtype=metric64.dtype)


def oracle_lengths(metric64: ExpectedMetric, dense: GeodesicResult) -> Tensor:
    """Lengths (B,) of the dense oracle's polylines, in float64: from MEASURE_POINTS points, on
    finer grids until each length's estimated error is below ORACLE_RTOL (at most
    ORACLE_MAX_POINTS points)."""
    c = dense.curves
    dtype = metric64.dtype
    curves = Curves(c.z0.to(dtype), c.z1.to(dtype), c.coeffs.to(dtype), c.basis)
    start = torch.full((len(curves),), MEASURE_POINTS, dtype=torch.long, device=c.z0.device)
    with torch.no_grad():
        lengths, _, _ = measure(
            metric64, curves, start, Work(), rtol=ORACLE_RTOL, max_points=ORACLE_MAX_POINTS
        )
    return lengths


def excess(metric64: ExpectedMetric, points: Tensor, dense: GeodesicResult) -> Tensor:
    """Relative excess length (B,) of curves (B, MEASURE_POINTS, d) over the dense oracle."""
    return measured_lengths(metric64, points) / oracle_lengths(metric64, dense) - 1


def length_gaps(metric64: ExpectedMetric, result: GeodesicResult, n: int = FINE_POINTS) -> Tensor:
    """Relative gaps (B,) ``reported / measured - 1`` between the lengths a result reports and
    its own curves' lengths on ``n`` points, the curves and the metric in float64 (in float32,
    thousands of segments of a short curve add up visible rounding noise)."""
    c = result.curves
    dtype = metric64.dtype
    curves = Curves(c.z0.to(dtype), c.z1.to(dtype), c.coeffs.to(dtype), c.basis)
    # In chunks of curves, like measured_lengths: 48 curves of 4,096 points through a conv decoder
    # in float64 at once held ~20 GB (a dense-oracle run was killed for memory).
    return result.lengths.to(dtype) / measured_lengths(metric64, curves.points(n)) - 1
