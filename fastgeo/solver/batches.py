"""A call's curves solved batch by batch: ``batch_size`` curves at a time through the race
(:func:`fastgeo.solver.race.solve_batch`), their results joined; and a subset of them solved
again at more points (the resolution check's :func:`solve_at`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from ..metric import ExpectedMetric
from .graph import LatentGraph
from .options import SolverOptions, coarse_points_for
from .race import solve_batch
from .result import Work


def solve_in_batches(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    init: Tensor | None,
    graph: LatentGraph | None,
    work: Work,
    bar: Any = None,
) -> tuple[Tensor, ...]:
    """coeffs (B, m, d), energies, status codes, iterations, start codes and predicted gains of
    subdivision (B,), batch by batch (``bar``: updated as each batch is done)."""
    B, d = z0.shape
    if B == 0:
        empty = torch.zeros(0, dtype=torch.long, device=z0.device)
        none = z0.new_zeros(0)
        return z0.new_zeros(0, opts.m, d), none, empty.to(torch.int8), empty, empty, none
    parts = []
    for lo in range(0, B, opts.batch_size):
        sl = slice(lo, lo + opts.batch_size)
        given = None if init is None else init[sl]
        parts.append(solve_batch(metric, z0[sl], z1[sl], opts, given, graph, work))
        if bar is not None:
            bar.update(parts[-1][0].shape[0])
    return tuple(torch.cat(x) for x in zip(*parts, strict=True))


def solve_at(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    graph: LatentGraph | None,
    work: Work,
    idx: Tensor,
    n: int,
    init: Tensor,
) -> tuple[Tensor, ...]:
    """Curves ``idx`` solved again at ``n`` points from ``init`` (the resolution check)."""
    finer = dataclasses.replace(
        opts, n_points=n, coarse_points=coarse_points_for(opts.coarse_points, n, opts.n_points)
    )
    return solve_in_batches(metric, z0[idx], z1[idx], finer, init, graph, work)
