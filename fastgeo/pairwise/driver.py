"""``fastgeo.pairwise_distances``: geodesic distance matrices at scale, chunked, resumable and
multi-process.

The ``M (M-1) / 2`` geodesics ``i < j`` (``M P`` with a second set ``Y``) are solved in fixed
chunks (:mod:`.layout`) sized to a memory budget by the solver's memory model, so the extra
memory does not grow with ``M``; the matrix itself is the only ``O(M^2)`` allocation (with the
per-pair status), in memory or in a memory-mapped file (:mod:`.output`). Chunks are split over
worker processes of one thread each (:mod:`.workers`); finished chunks can be kept in a
checkpoint folder (:mod:`.checkpoint`); under ``torch.distributed`` the processes take every
``world_size``-th chunk. ``mode="graph"`` solves only the edges of a graph of near codes and
reads every distance off it (:mod:`.graph_mode`, :mod:`.code_graph`).
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from .._progress import call_bar
from ..metric import ExpectedMetric
from ..solver.result import CHAIN, CONVERGED, GRAPH_ESTIMATE
from .chains import check_chains
from .checkpoint import Checkpoint, checkpointed_chunk_size, open_checkpoint
from .chunks import dist_info, solve_chunk
from .code_graph import NEIGHBORS
from .graph_mode import run_graph_mode
from .layout import Layout, distinct_rows, expand_duplicates
from .output import allocate, expand, npy_path
from .report import PairwiseReport
from .setup import build_latent_graph, check_inputs, chunk_size_for_budget, solver_options_of
from .straight import default_on as straight_default
from .workers import check_workers, chunk_loop, shared, split_size

MODES = ("exact", "graph")
ERROR_SAMPLE = 200  # graph mode: random pairs solved exactly to measure its error
GRAPH_WARN = 0.05  # graph mode: warn when the sample finds the chains this much too long on average
_CODES = 8  # status codes (fastgeo.solver.result.STATUSES) fit in 3 bits of the per-pair record


def pairwise_distances(
    metric: ExpectedMetric,
    Z: Tensor,
    Y: Tensor | None = None,
    *,
    mode: str = "exact",
    neighbors: int | None = None,
    error_sample: int | None = None,
    straight: bool | None = None,
    chains: bool | None = None,
    out: str | os.PathLike | None = None,
    workers: int | None = None,
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = True,
    return_report: bool = False,
    **solver_options: Any,
) -> Tensor | tuple[Tensor, PairwiseReport]:
    """Geodesic distances between all pairs of ``Z`` (or between ``Z`` and ``Y``).

    Without ``Y`` only the pairs ``i < j`` of distinct rows are solved; the matrix is symmetric,
    with an exact zero diagonal and exact zeros between equal rows. Pairs stream through
    :func:`fastgeo.geodesics` in fixed chunks, so the memory beyond the output matrix is bounded
    by ``memory_budget`` whatever M.

    Pairs whose optimization did not converge keep the best length found, which is never longer
    than the straight line between their ends (an upper bound of the distance); they are counted
    in a warning and flagged in the report's ``converged`` mask, never hidden. No entry is NaN.

    Args:
        metric: the :class:`ExpectedMetric`.
        Z: (M, d) latent codes.
        Y: optional (P, d) second set: the result is then (M, P), all pairs solved.
        mode: ``"exact"`` (default): every pair solved by :func:`fastgeo.geodesics`.
            ``"graph"``: for large M (thousands of codes), only the geodesics between each code
            and its ``neighbors`` nearest codes are solved; every other entry is the length of
            the shortest chain of them (Dijkstra), an upper bound of the distance, with the
            status ``graph_estimate``. ``error_sample`` random pairs are solved exactly too:
            the report's ``graph_error`` gives the chains' relative excess over them (mean,
            median, 95th percentile, max), and those entries keep the shorter length.
        neighbors: graph mode: edges per code (nearest codes, in different directions; default
            16); 0: no edges, every entry its straight segment (with ``straight=True``: in
            d >= 8 on a decoder whose geodesics are nearly straight, as accurate as with edges
            at a fraction of the time). Refused in exact mode, where it would have no effect.
        error_sample: graph mode: random pairs solved exactly to measure the error (0: none;
            default 200). Refused in exact mode.
        straight: graph mode: also measure the straight segment between every pair (a forward
            pass on 17-65 points each, no geodesic) and keep it where it is shorter than the
            chain; the report's ``straight_shortcuts`` counts those entries. In latent dimension
            >= 4, where chains through few codes zig-zag, this cuts the graph distances' excess
            several times on some decoders (a d = 10 decoder with a linear last layer: 16.9 % ->
            2.2 % on average). Default: on in d >= 4 up to 2^21 pairs (M ~ 2,000), off in d <= 3
            (dense codes, chains within ~1 %). Refused in exact mode.
        chains: exact mode without ``Y``: check every entry against chains of two entries through a
            third code (each entry is a curve's length, and so is a chain): the pairs a chain
            beats by more than 2e-4 relative are solved again with the chain's curve among their
            starts, and entries a chain still beats take its length with the status ``chain``
            (:mod:`fastgeo.pairwise.chains`; the report's ``chain_check`` says how many). Costs
            ``M^3`` additions, ``24 M^2`` bytes while it runs, and three geodesics per entry
            beaten (none or a few in a thousand).
            Default: on in exact mode without ``Y``; refused elsewhere.
        workers: processes that split the pairs, one thread each (default: as many as torch
            has threads, on a Linux CPU run; 1 elsewhere and under ``torch.distributed``).
            Threads of one process wait for each other in every small parallel region of the
            solver, and collapse when another
            program takes a core; worker processes do not. 1: solve in this process, with
            torch's threads.
        out: optional path of a ``.npy`` file: the matrix is written there, memory-mapped
            (the returned tensor, on the CPU, maps the file), so that an (M, M) matrix larger
            than memory can be kept.
        memory_budget: bytes of solver working memory per chunk, by the solver's memory model
            (default: a quarter of free GPU memory up to 4 GiB, or 1 GiB on the CPU, as a
            ``geodesics`` batch; the model bounds the memory from far above). Sets the chunk size.
        chunk_size: pairs per chunk, overrides ``memory_budget``.
        checkpoint: folder for resumable runs (exact mode): finished chunks are saved
            atomically as they finish; a run started again with the same arguments solves only
            the missing chunks. Inputs that differ (Z, Y, options, chunk layout, metric
            parameters) are refused.
        progress: show tqdm progress bars (pairs per second, time left).
        return_report: also return a :class:`PairwiseReport`.
        **solver_options: passed to :func:`fastgeo.geodesics` (method, m, n_points, family,
            warm_start, max_iter, tol, batch_size, ...).

    With ``torch.distributed`` initialized, the processes take every ``world_size``-th chunk
    (graph mode: of edges and of the sample) and all of them return the full matrix (a sum
    all-reduce of disjoint parts: exact).

    Returns:
        D (M, M) (or (M, P)) tensor of geodesic lengths, dtype and device of the metric (with
        ``out``: on the CPU); with ``return_report=True`` the tuple ``(D, report)``.
    """
    t_start = time.perf_counter()
    _checks.autograd_enabled("pairwise_distances")
    Z, Y, options = check_inputs(pairwise_distances, metric, Z, Y, solver_options)
    progress, return_report = (
        _checks.boolean("progress", progress),
        _checks.boolean("return_report", return_report),
    )
    mode = _checks.choice("mode", mode, MODES)
    if mode != "graph":
        for name, value in (("neighbors", neighbors), ("error_sample", error_sample), ("straight", straight)):
            if value is not None:
                raise ValueError(f"{name} is for mode='graph'; it has no effect in mode={mode!r}")
    if chains is not None and _checks.boolean("chains", chains) and (mode != "exact" or Y is not None):
        raise ValueError("chains=True is for mode='exact' without Y (a symmetric matrix of solved pairs)")
    chains = mode == "exact" and Y is None and chains is not False
    neighbors = _checks.integer("neighbors", NEIGHBORS if neighbors is None else neighbors, 0)
    error_sample = _checks.integer("error_sample", ERROR_SAMPLE if error_sample is None else error_sample, 0)
    workers = check_workers(workers, metric.device, dist_info()[1] > 1)
    out_path = None if out is None else npy_path(out)
    if mode == "graph" and checkpoint is not None:
        raise ValueError("checkpoint is for mode='exact'; a graph-mode run solves only O(M k) geodesics")
    pts, rep = distinct_rows(Z) if Y is None else (Z, None)
    other = pts if Y is None else Y
    layout = _layout(metric, options, Layout(Y is None, pts.shape[0], other.shape[0], 1), chunk_size,
                     memory_budget, checkpoint, workers * dist_info()[1])  # fmt: skip
    options.setdefault("batch_size", layout.chunk_size)
    if mode == "graph":
        if straight is None:
            straight = straight_default(metric.latent_dim, layout.n_pairs)
        straight = _checks.boolean("straight", straight)
        if neighbors == 0 and not straight:
            raise ValueError("neighbors=0 (no geodesics between codes) needs straight=True: no entry bounded")
    graph_evals = build_latent_graph(metric, options, progress) if workers > 1 else 0
    matrix, mapped = allocate((layout.rows, layout.cols), metric, out_path if rep is None else None)
    if mapped is None and mode == "exact":  # workers write it (a file mapping is shared already)
        matrix = shared(matrix, workers)
    if mode == "graph":
        graph_args = (layout.chunk_size, neighbors, error_sample, progress, workers, straight)
        status, iterations, counts, world, extra = run_graph_mode(
            metric, pts, Y, options, matrix, *graph_args
        )
    else:
        ckpt = None if checkpoint is None else open_checkpoint(checkpoint, metric, Z, Y, options, layout)
        record, counts, world = _solve_chunks(
            metric, pts, other, layout, options, ckpt, progress, matrix, workers
        )
        status, iterations, extra = (record % _CODES).to(torch.int8), record // _CODES - 1, {}
    if Y is None:
        matrix.fill_diagonal_(0)  # exact zero diagonal
        status.fill_diagonal_(CONVERGED)
    if chains:
        opts, shown = solver_options_of(metric, options), progress and dist_info()[0] == 0
        check = check_chains(metric, pts, matrix, status, iterations, options, opts, shown)
        extra["chain_check"] = check
        counts[0] += check.decoder_evals
        counts[1] += check.decoder_jvps
    solved = (status != GRAPH_ESTIMATE) & (status != CHAIN)
    if Y is None:
        solved = torch.triu(solved, diagonal=1)
    n_solved = int(solved.sum())
    n_failed = int((solved & (status != CONVERGED)).sum())
    if rep is not None:  # duplicates: copies of their first row (exact zeros between them)
        matrix, mapped = expand(matrix, rep, metric, out_path)
        status, iterations = expand_duplicates(status, rep), expand_duplicates(iterations, rep)
    if n_failed:
        which = "The report's status says which" if return_report else "Pass return_report=True for the mask"
        warnings.warn(
            f"fastgeo.pairwise_distances: {n_failed} of {n_solved} geodesics did not converge; their "
            "entries hold the best length found (never longer than the straight line). "
            f"{which} (status per pair); raise max_iter, or (d >= 8) pass linearize='always' "
            "(a Gauss-Newton matrix at every step).",
            RuntimeWarning, stacklevel=2,
        )  # fmt: skip
    error = extra.get("graph_error")
    if error is not None and error.pairs and error.mean > GRAPH_WARN:
        warnings.warn(
            f"fastgeo.pairwise_distances: the graph distances are {100 * error.mean:.1f} % above exact "
            f"geodesics on average on {error.pairs} random pairs (95th percentile {100 * error.p95:.1f} %): "
            "too few codes for the latent dimension (in high d all codes are about equally far apart, "
            "and chains through them zig-zag), and straight segments (if measured) cut across where "
            "the geodesics bend; use mode='exact' on the pairs that matter, or more codes.",
            RuntimeWarning, stacklevel=2,
        )  # fmt: skip
    if mapped is not None:
        mapped.flush()
    counts[0] += graph_evals
    if not return_report:
        return matrix
    # fmt: off
    report = PairwiseReport(
        status_code=status, iterations=iterations, n_pairs=layout.n_pairs,
        n_converged=n_solved - n_failed, n_failed=n_failed, chunk_size=layout.chunk_size,
        chunks_total=layout.n_chunks, chunks_computed=int(counts[2]), chunks_loaded=int(counts[3]),
        wall_time=time.perf_counter() - t_start, decoder_evals=int(counts[0]), decoder_jvps=int(counts[1]),
        options={"symmetric": Y is None, "world_size": world, "mode": mode, **options}, **extra,
    )
    # fmt: on
    return matrix, report


def _layout(
    metric: ExpectedMetric,
    options: dict[str, Any],
    pairs: Layout,
    chunk_size: int | None,
    memory_budget: int | None,
    checkpoint: str | os.PathLike | None,
    workers: int,
) -> Layout:
    """The layout of ``pairs`` in chunks: ``chunk_size``, or as many pairs as fit
    ``memory_budget`` (fewer, so that ``workers`` processes in all share them; exact mode), or
    (resuming with neither given) the chunk size of the checkpoint."""
    explicit = chunk_size is not None or memory_budget is not None
    if chunk_size is None:
        chunk_size = split_size(
            pairs.n_pairs, chunk_size_for_budget(metric, options, memory_budget), workers
        )
    chunk_size = _checks.integer("chunk_size", chunk_size, 1)
    if checkpoint is not None and not explicit:
        chunk_size = checkpointed_chunk_size(checkpoint, chunk_size)  # keep a resumed run's layout
    return Layout(pairs.symmetric, pairs.rows, pairs.cols, min(chunk_size, max(1, pairs.n_pairs)))


def _solve_chunks(
    metric: ExpectedMetric,
    pts: Tensor,
    other: Tensor,
    layout: Layout,
    options: dict[str, Any],
    ckpt: Checkpoint | None,
    progress: bool,
    out: Tensor,
    workers: int,
) -> tuple[Tensor, Tensor, int]:
    """This process's chunks, solved (by ``workers`` processes) or loaded, then summed over
    processes: the (rows, cols) lengths into ``out`` (zeros; in shared memory or a shared file
    mapping when ``workers > 1``), the per-pair record (``(iterations + 1) * 8 + status code``,
    0 = unsolved: one int32 that sums exactly over processes), counts (decoder evals, JVPs,
    chunks computed, loaded) and the world size."""
    device, symmetric = metric.device, layout.symmetric
    rank, world = dist_info()
    status = shared(torch.zeros(layout.rows, layout.cols, dtype=torch.int32, device=device), workers)
    counts = shared(torch.zeros(workers, 4, dtype=torch.int64), workers)

    def record(c: int, w: int, rec: dict[str, Any], loaded: bool) -> int:
        i, j = layout.pairs(c, device)
        counts[w] += torch.tensor([rec["decoder_evals"], rec["decoder_jvps"], not loaded, loaded])
        lengths = rec["lengths"].to(device=out.device, dtype=out.dtype)
        st = (rec["iterations"].to(device) + 1) * _CODES + rec["status"].to(device=device, dtype=torch.int32)
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

    shown = progress and rank == 0 and layout.n_chunks > 0
    with call_bar(layout.n_pairs, shown, "geodesics", "pair", delay=0.0, leave=True) as bar:
        missing = []
        for c in range(rank, layout.n_chunks, world):  # finished chunks read here (their warnings too)
            rec = ckpt.load(c, layout.pairs(c, device)[0].numel()) if ckpt is not None else None
            if rec is None:
                missing.append(c)
            elif bar is not None:
                bar.update(min(record(c, 0, rec, True) * world, bar.total - bar.n))
            else:
                record(c, 0, rec, True)
        chunk_loop(missing, workers, solve, bar)
    counts = counts.sum(0)
    if world > 1:  # disjoint parts, zeros elsewhere: the sums are exact
        dist = torch.distributed
        dist.all_reduce(out)
        dist.all_reduce(status)
        counts_dev = counts.to(device)
        dist.all_reduce(counts_dev)
        counts = counts_dev.cpu()
    return status, counts, world
