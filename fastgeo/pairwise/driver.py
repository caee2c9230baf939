"""``fastgeo.pairwise_distances``: geodesic distance matrices at scale, chunked, resumable and
multi-process.

The ``M (M-1) / 2`` geodesics ``i < j`` (``M P`` with a second set ``Y``) are solved in fixed
chunks (:mod:`.layout`) sized to a memory budget by the solver's memory model, so the extra
memory does not grow with ``M``; the matrix itself is the only ``O(M^2)`` allocation (with the
per-pair status), in memory or in a memory-mapped file (:mod:`.output`). Chunks are split over
worker processes of one thread each (:mod:`.workers`); finished chunks can be kept in a
checkpoint folder (:mod:`.checkpoint`); under ``torch.distributed`` the processes take every
``world_size``-th chunk (:mod:`.solve_all`). ``mode="graph"`` solves only the edges of a graph of
near codes and reads every distance off it (:mod:`.graph_mode`, :mod:`.code_graph`);
``mode="draft"`` solves every pair as a coarse curve (:mod:`.draft_mode`); ``mode="chord"``
estimates every pair from its codes' features and metric tensors, fitted to a sample
(:mod:`.chord_mode`); all three measure their error on a sample of pairs solved exactly
(:mod:`.error_sample`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ..decoders.uses import one_use
from ..metric import ExpectedMetric
from ..solver.result import CONVERGED, NONFINITE, UNSOLVED
from .chains import check_chains
from .checkpoint import checkpointed_chunk_size, open_checkpoint
from .chord_mode import CHORD_SAMPLE_METHOD, MIN_SAMPLE, run_chord_mode
from .chunks import dist_info
from .code_graph import NEIGHBORS
from .draft_mode import draft_options, finish_draft_mode
from .feature_bound import finite_features
from .graph_mode import EDGES, run_graph_mode
from .layout import Layout, distinct_rows, equal_pairs, expand_duplicates
from .output import allocate, expand, filled_in_place, npy_path
from .report import PairwiseReport, warn_estimates, warn_unfinished
from .setup import (
    build_latent_graph,
    check_inputs,
    check_memory_budget,
    chunk_size_for_budget,
    solver_options_of,
)
from .solve_all import solve_chunks, split_record
from .straight import default_on as straight_default
from .workers import check_workers, shared, split_size

MODES = ("exact", "graph", "draft", "chord")
ERROR_SAMPLE = 200  # approximate modes: random pairs solved exactly to measure their error


def pairwise_distances(
    metric: ExpectedMetric,
    Z: Tensor,
    Y: Tensor | None = None,
    *,
    mode: str = "exact",
    neighbors: int | None = None,
    error_sample: int | None = None,
    straight: bool | None = None,
    edges: str | None = None,
    chains: bool | None = None,
    out: str | os.PathLike | None = None,
    workers: int | None = None,
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool | None = True,
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
            ``"graph"``: for large M (thousands of codes, in 2-D), only the curves between each
            code and its ``neighbors`` nearest codes are solved (drafts, see ``edges``); every
            other entry is the length of the shortest chain of them (Dijkstra), an upper bound of
            the distance, with the status ``graph_estimate``. ``error_sample`` random pairs are
            solved exactly too: the report's ``graph_error`` gives the chains' relative excess
            over them (mean, median, 95th percentile, max), and those entries keep the shorter
            length.
            ``"draft"``: for M up to a few thousand codes in latent d >= 4 (where the graph's
            chains zig-zag, 16-40 % too long at M = 256): every pair solved as a coarse curve
            (:mod:`fastgeo.pairwise.draft_mode`: 4 control points per axis, the straight start,
            at most 10 steps), then (without ``Y``) the shortest chain of drafts through other
            codes where shorter: 8-15x faster than exact geodesics and 0.05-1.1 % above them on
            average on trained VAEs (2-D: 0.17 %); each entry is an upper bound of the distance,
            with the status ``draft``; ``error_sample`` random pairs are solved exactly too, and the
            report's ``draft_error`` gives the drafts' excess over them. Solver options apply
            to the sample (the drafts take ``linearize`` and ``check_resolution`` alone).
            ``"chord"``: for tens of thousands of codes in latent d >= 4, where drafts of every
            pair cost too much and the graph's chains zig-zag (77 % too long for 10,000 codes of a
            d = 10 decoder): no curve between the codes; each code is decoded once with its
            metric tensor, and every entry is the pair's chord in feature space (a lower bound)
            times a ratio fitted by least squares to the ``error_sample`` pairs solved exactly,
            predicted from the metric at the two codes and shortest paths through the codes
            (:mod:`fastgeo.pairwise.chord_mode`): an estimate, neither bound, status
            ``chord_estimate``; the report's ``chord_error`` gives its relative error on the
            sample, each pair predicted by the fit without it (1.3-3.4 % on average on trained MLP
            decoders, 4.8-5.3 % on two convolutional ones, 10,000 codes). The sample is solved by
            ``method="fast"`` unless a ``method`` is passed: its curves are 0.02-0.13 % longer on
            average than the default's, which moves the fit's error by <= 0.02 points, for a
            quarter of the time (most of the mode's time on convolutional decoders). The sampled
            entries hold their solved lengths. In 2-D (geodesics winding along the data) the graph
            mode's chains are closer for up to a few thousand codes.
        neighbors: graph mode: edges per code (nearest codes, in different directions; default
            16); 0: no edges, every entry its straight segment (with ``straight=True``: in
            d >= 8 on a decoder whose geodesics are nearly straight, as accurate as with edges
            at a fraction of the time). Refused in the other modes, where it would have no effect.
        edges: graph mode: how the edges are solved: ``"draft"`` (default), a coarse curve each as
            in ``mode="draft"`` (status ``draft`` where an entry is its edge): the call 1.7-9.5x
            faster than with ``"exact"`` (geodesics, the solver options' with one start each), the
            graph distances about as far above the geodesics (a chain's excess comes from its
            bends): within 0.06 % up to 1,000 codes, but 2.9 % instead of 2.4 % for 10,000 2-D
            codes and 3.1 % instead of 2.9 % for 64 codes of a conv decoder. Refused in the other
            modes.
        error_sample: graph, draft and chord modes: random pairs solved exactly to measure the
            error (0: none; default 200; the chord mode fits its estimates to them and needs at
            least 20). Refused in exact mode.
        straight: graph mode: also measure the straight segment between every pair (a forward
            pass on 17-65 points each, no geodesic) and keep it where it is shorter than the
            chain; the report's ``straight_shortcuts`` counts those entries. In latent dimension
            >= 4, where chains through few codes zig-zag, this cuts the graph distances' excess
            several times on some decoders (a d = 10 decoder with a linear last layer: 16.9 % ->
            2.2 % on average). Default: on in d >= 4 up to 2^21 pairs (M ~ 2,000), off in d <= 3
            (dense codes, chains within ~1 %). Refused in the other modes.
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
            (the returned tensor, on the CPU, maps the file), so that it does not hold memory
            of its own (the run's per-entry status and iterations still do: about 9 bytes per
            entry, more than a float32 matrix's 4). It is filled under a temporary name beside
            it and put in place when the run ends: an interrupted run leaves an earlier file as
            it was. Under ``torch.distributed`` rank 0 writes it (the other ranks return the
            matrix in memory).
        memory_budget: bytes of solver working memory per chunk, by the solver's memory model
            (default: a quarter of free GPU memory up to 4 GiB, or 1 GiB on the CPU, as a
            ``geodesics`` batch; the model bounds the memory from far above). Sets the chunk size.
        chunk_size: pairs per chunk, overrides ``memory_budget``.
        checkpoint: folder for resumable runs (exact and draft modes): finished chunks are saved
            atomically as they finish; a run started again with the same arguments solves only
            the missing chunks. Inputs that differ (Z, Y, options, chunk layout, metric
            parameters) are refused.
        progress: show tqdm progress bars (pairs per second, time left; None: as True).
        return_report: also return a :class:`PairwiseReport`.
        **solver_options: passed to :func:`fastgeo.geodesics` (method, m, n_points, family,
            warm_start, max_iter, tol, batch_size, ...).

    With ``torch.distributed`` initialized, the processes take every ``world_size``-th chunk
    (graph mode: of edges and of the sample) and all of them return the full matrix (a sum
    all-reduce of disjoint parts: exact).

    Returns:
        D (M, M) (or (M, P)) tensor of geodesic lengths, dtype and device of the metric (with
        ``out``: on the CPU); with ``return_report=True`` the tuple ``(D, report)``. The
        entries carry no gradient (:func:`fastgeo.geodesics` gives lengths differentiable in
        their end points). An entry is never NaN: a pair whose solve ends non-finite holds its
        straight line's length, or inf where that is not finite either (a decoder NaN or inf
        between the codes), with status ``nonfinite`` (a warning says so); codes where the
        decoder itself is not finite are refused before any work (ValueError naming them).
    """
    with one_use():
        t_start = time.perf_counter()
        _checks.autograd_enabled("pairwise_distances")
        _checks.outside_autocast("pairwise_distances")
        Z, Y, options = check_inputs(pairwise_distances, metric, Z, Y, solver_options)
        finite_features(metric, Z if Y is None else torch.cat([Z, Y]), Z.shape[0], Y is None)
        progress, return_report = (
            _checks.boolean("progress", True if progress is None else progress),
            _checks.boolean("return_report", return_report),
        )
        mode = _checks.choice("mode", mode, MODES)
        for name, value, modes in (
            ("neighbors", neighbors, ("graph",)),
            ("straight", straight, ("graph",)),
            ("edges", edges, ("graph",)),
            ("error_sample", error_sample, ("graph", "draft", "chord")),
        ):
            if value is not None and mode not in modes:
                wanted = " or ".join(repr(m) for m in modes)
                raise ValueError(f"{name} is for mode={wanted}; it has no effect in mode={mode!r}")
        symmetric_exact = mode == "exact" and Y is None
        if chains is not None:
            chains = _checks.boolean("chains", chains)
            if not symmetric_exact:
                raise ValueError(
                    "chains is for mode='exact' without Y (a symmetric matrix of solved pairs); it has no "
                    f"effect in mode={mode!r}" + (" with Y" if mode == "exact" else "")
                )
        chains = symmetric_exact and chains is not False
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a folder's path (str or os.PathLike), got {checkpoint!r}")
        if checkpoint is not None and not str(checkpoint).strip():  # not the current folder by accident
            raise ValueError("checkpoint must name a folder, got an empty path (the current folder is '.')")
        memory_budget = check_memory_budget(memory_budget)
        if mode == "chord":  # its sample only feeds a fit a few % off: the coarser method is enough
            options.setdefault("method", CHORD_SAMPLE_METHOD)
        neighbors = _checks.integer("neighbors", NEIGHBORS if neighbors is None else neighbors, 0)
        error_sample = _checks.integer(
            "error_sample", ERROR_SAMPLE if error_sample is None else error_sample, 0
        )
        if mode == "chord" and error_sample < MIN_SAMPLE:
            raise ValueError(
                f"error_sample={error_sample}: mode='chord' fits its estimates to the sampled pairs and "
                f"needs at least {MIN_SAMPLE}"
            )
        workers = check_workers(workers, metric.device, dist_info()[1] > 1)
        out_path = None if out is None else npy_path(out)
        if dist_info()[0] > 0:  # rank 0 writes the file: ranks mapping it too would sum their writes twice
            out_path = None
        if mode in ("graph", "chord") and checkpoint is not None:
            raise ValueError(
                f"checkpoint is for mode='exact' or 'draft'; a {mode}-mode run solves only a few geodesics"
            )
        pts, rep = distinct_rows(Z) if Y is None else (Z, None)
        other = pts if Y is None else Y
        pairs, n_proc = Layout(Y is None, pts.shape[0], other.shape[0], 1), workers * dist_info()[1]
        exact_checkpoint = checkpoint if mode == "exact" else None
        layout = _layout(metric, options, pairs, chunk_size, memory_budget, exact_checkpoint, n_proc)
        options.setdefault("batch_size", layout.chunk_size)
        solved_options, solved_layout = options, layout  # what solve_chunks solves every pair with
        if mode == "draft":
            solved_options = draft_options(options)
            solved_layout = _layout(
                metric, solved_options, pairs, chunk_size, memory_budget, checkpoint, n_proc
            )
            solved_options["batch_size"] = solved_layout.chunk_size
        if mode == "graph":
            if straight is None:
                straight = straight_default(metric.latent_dim, layout.n_pairs)
            straight = _checks.boolean("straight", straight)
            if neighbors == 0 and not straight:
                raise ValueError(
                    "neighbors=0 (no geodesics between codes) needs straight=True: no entry bounded"
                )
            edges = _checks.choice("edges", "draft" if edges is None else edges, EDGES)
        ckpt = None  # opened (and checked against the run) before the output file is touched
        if checkpoint is not None:
            ckpt = open_checkpoint(checkpoint, metric, Z, Y, solved_options, solved_layout)
        # The file is filled under a temporary name, in place when the run ends (an interrupted run
        # leaves an earlier file as it was).
        with filled_in_place(out_path) as target:
            solves_exact = mode == "exact" or error_sample > 0  # geodesics that may race the latent graph
            resumed = ckpt is not None and ckpt.finished() >= solved_layout.n_chunks and mode == "exact"
            # built once, before the fork (where there is a pair to solve)
            shared_graph = workers > 1 and solves_exact and not resumed and solved_layout.n_pairs > 0
            graph_evals = build_latent_graph(metric, options, progress) if shared_graph else 0
            matrix, mapped = allocate((layout.rows, layout.cols), metric, target if rep is None else None)
            if mapped is None and mode in ("exact", "draft"):  # workers write it (a file mapping is shared)
                matrix = shared(matrix, workers)
            estimated = mode if 0 not in matrix.shape else None  # no pair at all: nothing to estimate
            if estimated == "graph":
                graph_args = (layout.chunk_size, neighbors, error_sample, progress, workers, straight, edges)
                status, iterations, counts, world, extra = run_graph_mode(
                    metric, pts, Y, options, matrix, *graph_args
                )
            elif estimated == "chord":
                chord_args = (layout.chunk_size, error_sample, progress, workers)
                status, iterations, counts, world, extra = run_chord_mode(
                    metric, pts, Y, options, matrix, *chord_args
                )
            else:
                record, counts, world = solve_chunks(
                    metric, pts, other, solved_layout, solved_options, ckpt, progress, matrix, workers,
                    "drafts" if mode == "draft" else "geodesics",
                )  # fmt: skip
                (status, iterations), extra = split_record(record), {}
                if mode == "draft":
                    sample_args = (layout.chunk_size, error_sample, progress, workers)
                    status, extra, work = finish_draft_mode(
                        metric, pts, Y, options, matrix, status, *sample_args
                    )
                    counts[0] += work[0]
                    counts[1] += work[1]
            if Y is None:
                matrix.fill_diagonal_(0)  # exact zero diagonal
                status.fill_diagonal_(CONVERGED)
            else:  # codes in both sets: exact zeros, as on the diagonal
                ii, jj = equal_pairs(pts, Y)
                matrix[ii.to(matrix.device), jj.to(matrix.device)] = 0
                status[ii.to(status.device), jj.to(status.device)] = CONVERGED
                if estimated not in ("graph", "chord"):  # (these keep no iterations per pair)
                    iterations[ii.to(iterations.device), jj.to(iterations.device)] = -1
            if chains:
                opts, shown = solver_options_of(metric, options), progress and dist_info()[0] == 0
                check = check_chains(metric, pts, matrix, status, iterations, options, opts, shown)
                extra["chain_check"] = check
                counts[0] += check.decoder_evals
                counts[1] += check.decoder_jvps
            solved = ~torch.isin(status, torch.tensor(UNSOLVED, dtype=status.dtype, device=status.device))
            estimates_left = bool((~solved).any())  # not where every pair was in the error sample
            if Y is None:
                solved = torch.triu(solved, diagonal=1)
            else:
                solved[ii.to(solved.device), jj.to(solved.device)] = False
            n_solved = int(solved.sum())
            failed = solved & (status != CONVERGED)
            n_failed = int(failed.sum())
            n_inf = int((solved & (status == NONFINITE) & torch.isinf(matrix).to(status.device)).sum())
            unfinished = status[failed]  # (before duplicates are expanded)
            if rep is not None:  # duplicates: copies of their first row (exact zeros between them)
                matrix, mapped = expand(matrix, rep, metric, target)
                status, iterations = expand_duplicates(status, rep), expand_duplicates(iterations, rep)
            warn_unfinished(n_failed, n_solved, n_inf, return_report, unfinished)
            if estimates_left:
                warn_estimates(extra, metric.latent_dim)
            if mapped is not None:
                mapped.flush()
            counts[0] += graph_evals
            if not return_report:
                return matrix
            # fmt: off
            report = PairwiseReport(
                status_code=status, iterations=iterations, n_pairs=layout.n_pairs,
                n_converged=n_solved - n_failed, n_failed=n_failed, chunk_size=solved_layout.chunk_size,
                chunks_total=solved_layout.n_chunks, chunks_computed=int(counts[2]),
                chunks_loaded=int(counts[3]),
                wall_time=time.perf_counter() - t_start,
                decoder_evals=int(counts[0]), decoder_jvps=int(counts[1]),
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
        budgeted = chunk_size_for_budget(metric, options, memory_budget, stacklevel=3)
        chunk_size = split_size(pairs.n_pairs, budgeted, workers)
    chunk_size = _checks.integer("chunk_size", chunk_size, 1)
    if checkpoint is not None and not explicit:
        chunk_size = checkpointed_chunk_size(checkpoint, chunk_size)  # keep a resumed run's layout
    return Layout(pairs.symmetric, pairs.rows, pairs.cols, min(chunk_size, max(1, pairs.n_pairs)))
