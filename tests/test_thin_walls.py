"""Polylines across thin walls of sigma (the synthetic generator of ``fastgeo bench``, pairs across
its clusters): the benchmarks measure the dense oracle's polylines until their lengths settle, and
a dense result whose nodes step over a wall is flagged ``under_resolved``, not ``converged``."""

from __future__ import annotations

import types

import torch
from helpers import assert_close_rel

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from fastgeo.benchmarks.generator import pairs, synthetic_generator
from fastgeo.curves import Curves, PiecewiseLinearBasis
from fastgeo.solver.resolution import flag_under_resolved
from fastgeo.solver.result import Work

NODES = 128


def _setup() -> tuple[fastgeo.ExpectedMetric, torch.Tensor, torch.Tensor]:
    metric, clusters = synthetic_generator(dtype=torch.float64)
    z0, z1 = pairs(24, clusters)
    return metric, z0, z1


def _polyline_across(a: torch.Tensor, b: torch.Tensor) -> Curves:
    """A polyline of NODES nodes from a to b (1, d) whose nodes bunch at the two ends: one segment
    crosses everything between them, and 1,024 points put only ~8 samples on it."""
    t = torch.arange(1, NODES - 1, dtype=torch.float64) / (NODES - 1)
    s = torch.where(t < 0.5, 0.02 * t, 1 - 0.02 * (1 - t))
    nodes, line = a + s[:, None] * (b - a), a + t[:, None] * (b - a)
    return Curves(a, b, (nodes - line)[None], PiecewiseLinearBasis(NODES))


def test_a_polyline_across_thin_walls_is_measured_until_its_length_settles():
    metric, z0, z1 = _setup()
    curves = _polyline_across(z0[2:3], z1[2:3])  # a pair across clusters
    coarse = measured_lengths(metric, curves.points(MEASURE_POINTS))
    fine = measured_lengths(metric, curves.points(65537))
    assert bool(coarse < 0.95 * fine), "the walls fall between the 1,024 points"
    settled = oracle_lengths(metric, types.SimpleNamespace(curves=curves))
    assert_close_rel(settled, fine, 1e-4)


def test_smooth_polylines_keep_their_length_on_the_measurement_grid():
    metric, z0, z1 = _setup()
    a, b = z0[8:12], z1[8:12]  # pairs inside clusters
    t = torch.arange(1, NODES - 1, dtype=torch.float64) / (NODES - 1)
    bend = 0.1 * torch.sin(torch.pi * t)[None, :, None] * (b - a).flip(-1)[:, None, :]
    curves = Curves(a, b, bend, PiecewiseLinearBasis(NODES))
    settled = oracle_lengths(metric, types.SimpleNamespace(curves=curves))
    assert_close_rel(settled, measured_lengths(metric, curves.points(MEASURE_POINTS)), 1e-4)


def test_a_dense_polyline_that_steps_over_a_wall_is_flagged_under_resolved():
    metric, z0, z1 = _setup()
    init = torch.zeros(2, NODES - 2, 2, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z0[8:10], z1[8:10], method="dense", init=init, progress=False)
    assert list(res.status) == ["converged", "converged"]  # inside a cluster: resolved
    # The second curve replaced by a polyline whose nodes step over the walls between clusters.
    across = _polyline_across(z0[2:3], z1[2:3])
    res.curves = Curves(
        torch.cat([res.curves.z0[:1], across.z0]),
        torch.cat([res.curves.z1[:1], across.z1]),
        torch.cat([res.curves.coeffs[:1], across.coeffs]),
        res.curves.basis,
    )
    coarse, fine = flag_under_resolved(metric, res, Work())
    assert list(res.status) == ["converged", "under_resolved"]
    assert bool(fine[1] > 1.01 * coarse[1]) and bool(fine[0] <= 1.01 * coarse[0])
