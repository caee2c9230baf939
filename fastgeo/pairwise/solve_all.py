"""Every pair of a chunk layout solved by :func:`fastgeo.geodesics` (the exact and draft modes of
:func:`fastgeo.pairwise_distances`): chunks split over worker processes and the processes of
``torch.distributed``, finished chunks saved to and read back from a checkpoint, and one int32
record per pair that sums exactly over processes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._progress import call_bar
from ..metric import ExpectedMetric
from .checkpoint import Checkpoint
from .chunks import all_reduce_sum, dist_info, solve_chunk
from .layout import Layout
from .workers import chunk_loop, shared

CODES = 16  # status codes (fastgeo.solver.result.STATUSES) fit in 4 bits of the per-pair record


def split_record(record: Tensor) -> tuple[Tensor, Tensor]:
    """Status codes (int8) and iterations (-1 where no solve ran) of a per-pair record."""
    return (record % CODES).to(torch.int8), record // CODES - 1


def solve_chunks(
    metric: ExpectedMetric,
    pts: Tensor,
    other: Tensor,
    layout: Layout,
    options: dict[str, Any],
    ckpt: Checkpoint | None,
    progress: bool,
    out: Tensor,
    workers: int,
    label: str = "geodesics",
) -> tuple[Tensor, Tensor, int]:
    """This process's chunks, solved (by ``workers`` processes) or loaded, then summed over
    processes: the (rows, cols) lengths into ``out`` (zeros; in shared memory or a shared file
    mapping when ``workers > 1``), the per-pair record (``(iterations + 1) * CODES + status code``,
    0 = unsolved: one int32 that sums exactly over processes), counts (decoder evals, JVPs,
    chunks computed, loaded) and the world size; ``label`` names the progress bar."""
    device, symmetric = metric.device, layout.symmetric
    rank, world = dist_info()
    status = shared(torch.zeros(layout.rows, layout.cols, dtype=torch.int32, device=device), workers)
    counts = shared(torch.zeros(workers, 4, dtype=torch.int64, device="cpu"), workers)

    def record(c: int, w: int, rec: dict[str, Any], loaded: bool) -> int:
        i, j = layout.pairs(c, device)
        counts[w] += torch.tensor(
            [rec["decoder_evals"], rec["decoder_jvps"], not loaded, loaded], device="cpu"
        )
        lengths = rec["lengths"].to(device=out.device, dtype=out.dtype)
        st = (rec["iterations"].to(device) + 1) * CODES + rec["status"].to(device=device, dtype=torch.int32)
        io, jo = i.to(out.device), j.to(out.device)
        out[io, jo], status[i, j] = lengths, st
        if symmetric:  # symmetric fill, by the same process: parts stay disjoint
            out[jo, io], status[j, i] = lengths, st
        return i.numel()

    def solve(c: int, w: int) -> int:
        i, j = layout.pairs(c, device)
        rec = solve_chunk(metric, pts[i], other[j], options)
        if ckpt is not None:
            ckpt.save(c, rec)
        return record(c, w, rec, False)

    missing, loaded = [], 0
    for c in range(rank, layout.n_chunks, world):  # finished chunks read back first
        rec = ckpt.load(c, layout.pairs(c, device)[0].numel()) if ckpt is not None else None
        if rec is None:
            missing.append(c)
        else:
            loaded += record(c, 0, rec, True) * world
    shown = progress and rank == 0 and layout.n_chunks > 0
    # The pairs read back start the bar: its rate and time left are this run's solving alone.
    done = min(loaded, layout.n_pairs)
    with call_bar(layout.n_pairs, shown, label, "pair", delay=0.0, leave=True, initial=done) as bar:
        chunk_loop(missing, workers, solve, bar)
    counts = counts.sum(0)
    if world > 1:  # disjoint parts, zeros elsewhere: the sums are exact
        for t in (out, status, counts):
            all_reduce_sum(t, device)
    return status, counts, world
