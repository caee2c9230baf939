"""Accuracy as the benchmarks and tests measure it: excess length ``L / L_dense - 1`` against
``method="dense"``, every curve (the oracle's too) measured the same way, in float64, on a grid
of ``MEASURE_POINTS`` points.

The fine grid matters for the oracle: its polylines have 128 nodes, and where the metric has
sharp ridges (sigma rising steeply between clusters) a segment can step over one, so the
polyline's own 128-node length misses what lies between its nodes. Measured between its nodes
too (the polyline is linear there), the oracle gets no credit a smooth curve could not.
"""

from __future__ import annotations

from torch import Tensor

from ..metric import ExpectedMetric
from ..solver import GeodesicResult

MEASURE_POINTS = 1024


def measured_lengths(metric64: ExpectedMetric, points: Tensor) -> Tensor:
    """Lengths (B,) of curves sampled densely enough, (B, n, d) in any float dtype."""
    return metric64.length(points.to(metric64.dtype))


def oracle_lengths(metric64: ExpectedMetric, dense: GeodesicResult) -> Tensor:
    """Lengths (B,) of the dense oracle's polylines on the measurement grid."""
    return measured_lengths(metric64, dense.points(MEASURE_POINTS))


def excess(metric64: ExpectedMetric, points: Tensor, dense: GeodesicResult) -> Tensor:
    """Relative excess length (B,) of curves (B, MEASURE_POINTS, d) over the dense oracle."""
    return measured_lengths(metric64, points) / oracle_lengths(metric64, dense) - 1
