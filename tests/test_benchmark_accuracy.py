"""The benchmarks' accuracy measure: the dense oracle's polylines are measured until their lengths
settle, so a segment that crosses a thin wall between the measurement points does not make the
oracle look shorter than it is."""

from __future__ import annotations

import types

import torch
from helpers import assert_close_rel

from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from fastgeo.benchmarks.generator import pairs, synthetic_generator
from fastgeo.curves import Curves, PiecewiseLinearBasis


def test_a_polyline_across_thin_walls_is_measured_until_its_length_settles():
    metric, clusters = synthetic_generator(dtype=torch.float64)
    z0, z1 = pairs(24, clusters)
    a, b = z0[2:3], z1[2:3]  # a pair across clusters: steep sigma walls between them
    n = 128
    t = torch.arange(1, n - 1, dtype=torch.float64) / (n - 1)
    # Nodes bunched at the two ends: one segment crosses the whole gap between the clusters, and
    # 1,024 points put only ~8 samples on it.
    s = torch.where(t < 0.5, 0.02 * t, 1 - 0.02 * (1 - t))
    nodes, line = a + s[:, None] * (b - a), a + t[:, None] * (b - a)
    curves = Curves(a, b, (nodes - line)[None], PiecewiseLinearBasis(n))
    coarse = measured_lengths(metric, curves.points(MEASURE_POINTS))
    fine = measured_lengths(metric, curves.points(65537))
    assert bool(coarse < 0.95 * fine), "the walls fall between the 1,024 points"
    settled = oracle_lengths(metric, types.SimpleNamespace(curves=curves))
    assert_close_rel(settled, fine, 1e-4)


def test_smooth_polylines_keep_their_length_on_the_measurement_grid():
    metric, clusters = synthetic_generator(dtype=torch.float64)
    z0, z1 = pairs(24, clusters)
    a, b = z0[8:12], z1[8:12]  # pairs inside clusters
    n = 128
    t = torch.arange(1, n - 1, dtype=torch.float64) / (n - 1)
    bend = 0.1 * torch.sin(torch.pi * t)[None, :, None] * (b - a).flip(-1)[:, None, :]
    curves = Curves(a, b, bend, PiecewiseLinearBasis(n))
    settled = oracle_lengths(metric, types.SimpleNamespace(curves=curves))
    assert_close_rel(settled, measured_lengths(metric, curves.points(MEASURE_POINTS)), 1e-4)
