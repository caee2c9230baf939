"""A list of pairs of nodes solved in chunks, split over worker processes and the processes of
``torch.distributed``: the graph mode's edges and error sample, and the nearest neighbours'
candidates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._progress import call_bar
from ..metric import ExpectedMetric
from .chunks import all_reduce_sum, dist_info, solve_chunk
from .workers import chunk_loop, shared, split_size


@dataclass
class SolvedPairs:
    """Per pair its geodesic's ``lengths`` (n,) float64 and status codes ``status`` (n,) int64
    (:data:`fastgeo.solver.result.STATUSES`), and the decoder work of them all."""

    lengths: Tensor
    status: Tensor
    decoder_evals: int
    decoder_jvps: int


def solve_pair_list(
    nodes: Tensor,
    a: Tensor,
    b: Tensor,
    solve: Callable[[Tensor, Tensor], dict[str, Any]],
    chunk_size: int,
    workers: int,
    show: bool,
    label: str,
    unit: str,
) -> SolvedPairs:
    """The geodesics ``nodes[a[k]] -> nodes[b[k]]`` (``a``, ``b`` (n,) indices into ``nodes``
    (N, d)) by ``solve(z0, z1)`` (a record of :func:`.chunks.solve_chunk`), in chunks of at most
    ``chunk_size`` pairs taken by ``workers`` worker processes (and under ``torch.distributed``
    every ``world_size``-th chunk by each process, summed after), with a progress bar
    ``label`` counting ``unit``s where ``show``."""
    n = a.numel()
    world = dist_info()[1]
    chunk_size = split_size(n, chunk_size, workers * world)
    lengths = shared(torch.zeros(n, dtype=torch.float64, device="cpu"), workers)
    status = shared(torch.zeros(n, dtype=torch.int64, device="cpu"), workers)
    work = shared(torch.zeros(workers, 2, dtype=torch.int64, device="cpu"), workers)
    a, b = a.cpu(), b.cpu()

    def body(c: int, w: int) -> int:
        sl = slice(c * chunk_size, (c + 1) * chunk_size)
        rec = solve(nodes[a[sl].to(nodes.device)], nodes[b[sl].to(nodes.device)])
        lengths[sl], status[sl] = rec["lengths"].double(), rec["status"].long()
        work[w] += torch.tensor([rec["decoder_evals"], rec["decoder_jvps"]], device="cpu")
        return rec["lengths"].numel()

    # In this process (one worker) the solves' stages and decoder work redraw the bar as they go.
    with call_bar(n, show, label, unit, delay=0.0, leave=True) as bar:
        chunk_loop(mine(-(-n // chunk_size)), workers, body, bar)
    work = work.sum(0)
    if world > 1:  # disjoint chunks, zeros elsewhere: exact sums
        for p in (lengths, status, work):
            all_reduce_sum(p, nodes.device)
    return SolvedPairs(lengths.clone(), status.clone(), int(work[0]), int(work[1]))


def mine(n_chunks: int) -> list[int]:
    """This process's chunks under ``torch.distributed`` (every world-th)."""
    rank, world = dist_info()
    return list(range(rank, n_chunks, world))


Solve = Callable[[Tensor, Tensor], dict[str, Any]]


def pair_solver(metric: ExpectedMetric, options: dict[str, Any]) -> Solve:
    """``solve(z0, z1)``: the record of :func:`.chunks.solve_chunk` for ``geodesics(metric, z0, z1,
    **options)``."""
    return functools.partial(_solve, metric, options)


def _solve(metric: ExpectedMetric, options: dict[str, Any], a: Tensor, b: Tensor) -> dict[str, Any]:
    return solve_chunk(metric, a, b, options)
