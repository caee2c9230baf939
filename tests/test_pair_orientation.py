"""A distance does not depend on which end a pair names first: the geodesic from z1 to z0 is the
one from z0 to z1 traversed backwards (same length, same status, the same points in reverse).
Users fill matrices and neighbour lists from calls in either order, and every start of the race
(straight line, warm start, graph corridors, explored start) must be as symmetric as the energy."""

from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


def _check(metric, z0, z1, length_rtol, point_rtol):
    with torch.no_grad():
        there = fastgeo.geodesics(metric, z0, z1, progress=False)
        back = fastgeo.geodesics(metric, z1, z0, progress=False)
    assert bool(there.converged.all())
    assert back.status.tolist() == there.status.tolist()
    rel = (back.lengths.double() / there.lengths.double() - 1).abs()
    assert float(rel.max()) < length_rtol, rel
    gap = (back.points(257).flip(1) - there.points(257)).norm(dim=-1).amax(1)
    assert float((gap / (z1 - z0).norm(dim=-1)).max()) < point_rtol, gap


def test_two_dimensional_geodesics_are_the_same_either_way():
    metric = bumpy_metric()
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    z1 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    _check(metric, z0, z1, 1e-10, 1e-8)


@pytest.mark.parametrize("name, pairs", [("digits", 6), ("mlp12_small", 3)])
def test_trained_vaes_geodesics_are_the_same_either_way(name, pairs):
    """digits (d = 2: the grid graph's corridors) and mlp12_small (float32; d = 12: corridors of a
    random graph, explored start, lagged steps), pairs of training codes, a third across classes."""
    path = DATA / f"{name}.safetensors"
    extra = fastgeo.load_extra(path)
    I, J = pair_indices(extra["labels"], 48, 0)
    Z = extra["latents"]
    # Points to 1e-3 of the chord: float32 solves stop within their tolerance along flat valleys,
    # where the CPU's own BLAS rounding (AVX2 or AVX-512 kernels) moves the points of mlp12's
    # third pair by 1.2e-4 of the chord on one machine (AMX, AVX-512), under 1e-4 on another; its length
    # agrees to 1e-7.
    _check(fastgeo.load_generator(path), Z[I[:pairs]], Z[J[:pairs]], 1e-5, 1e-3)
