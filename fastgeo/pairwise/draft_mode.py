"""``pairwise_distances(mode="draft")``: every pair solved as a coarse curve, and the error of
those lengths measured on a random sample of pairs solved exactly.

A draft is the default's algorithm on the coarsest curve that bends where geodesics do: a B-spline
of 4 control points per latent axis on 16 points, started from the straight line alone (no race,
no graph corridors, no subdivision) and stopped at a relative energy step of 1e-3 or after 10
Levenberg-Marquardt steps. Its length is that curve's length, measured to 1e-4 like every
solver length: an upper bound of the distance. In latent d >= 4, where the graph mode's chains
zig-zag through codes that are all about equally far apart (16-40 % above the geodesics at M =
256), drafts are 0.05-1.3 % above on average at 8-15x less time per pair than exact geodesics
(bench/RESULTS.md, "Drafts"): the approximate matrix for M up to a few thousand codes; the graph
mode stays the one for M in the tens of thousands.

A chain of drafts through other codes is a curve too: without ``Y`` every entry then takes the
shortest chain of drafts where that is shorter (:func:`close_chains`). In 2-D, where a draft
from the straight line can cross a wall of the metric that the geodesic goes around, this takes
the drafts of 128 digits codes from 0.64 % to 0.22 % above the geodesics on average (worst
sampled pair 9.2 % -> 1.2 %); in d >= 5 it shortens a few entries (a d = 12 MLP's worst sampled
pair 27 % -> 19 %).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from .._progress import DELAY, call_bar
from ..metric import ExpectedMetric
from ..solver.result import DRAFT, NONFINITE
from .chains import TOL, shortest_stop
from .chunks import dist_info, solve_chunk
from .error_sample import node_indices, sample_error
from .pair_list import Solve, pair_solver

# The draft: 4 control points per axis on 16 points, the straight start alone, stopped at a
# relative energy step of 1e-3 (most curves after 5-6 steps) or after 10 steps. On 48 random pairs
# of 256 codes of eight trained VAEs (d = 2-32), against the default's curves: mean excess
# 0.07-1.3 %, p95 0.4-4.9 %. Stopped after 1-3 steps, the d = 12-32 MLPs kept 4-13 % on average;
# 5 control points on 20 points, or 20 Adam steps first, won on some decoders and lost on others,
# for up to 2x the time (bench/RESULTS.md, "Drafts").
DRAFT_OPTIONS: dict[str, Any] = {
    "method": "fast",
    "m": 4,
    "n_points": 16,
    "coarse_points": 16,
    "refine": 1,
    "corridors": 0,
    "explore": False,
    "subdivide": False,
    "warm_start": False,
    "tol": 1e-3,
    "max_iter": 10,
}
# Rounds of chains of drafts: each round at most doubles the drafts a chain joins (128 2-D codes:
# 9,262, 3,266 and 62 entries shortened by the first three rounds, none by the fourth).
CHAIN_ROUNDS = 8


def draft_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of the drafts: :data:`DRAFT_OPTIONS`, with the call's ``linearize`` and
    ``check_resolution`` (the other solver options are the error sample's)."""
    kept = {k: options[k] for k in ("linearize", "check_resolution") if k in options}
    return {**DRAFT_OPTIONS, **kept}


def draft_solver(metric: ExpectedMetric, options: dict[str, Any]) -> Solve:
    """``solve(z0, z1)``: the record of a chunk of drafts (:func:`draft_options` of ``options``),
    every status ``draft`` but ``nonfinite``."""
    return functools.partial(_drafts, metric, draft_options(options))


def _drafts(metric: ExpectedMetric, options: dict[str, Any], a: Tensor, b: Tensor) -> dict[str, Any]:
    rec = solve_chunk(metric, a, b, options)
    rec["status"] = as_drafts(rec["status"])
    return rec


def as_drafts(status: Tensor) -> Tensor:
    """Status codes of drafts: ``draft``, but ``nonfinite`` where the solve was not finite."""
    return torch.where(status == NONFINITE, status, torch.full_like(status, DRAFT))


def finish_draft_mode(
    metric: ExpectedMetric,
    pts: Tensor,
    Y: Tensor | None,
    options: dict[str, Any],
    matrix: Tensor,
    status: Tensor,
    chunk_size: int,
    error_sample: int,
    progress: bool,
    workers: int,
) -> tuple[Tensor, dict[str, Any], tuple[int, int]]:
    """After the drafts of every pair are in ``matrix`` (rows ``pts`` (M, d), columns ``pts`` or
    ``Y`` (P, d)) with their solver ``status`` codes (int8): every draft gets the status ``draft``
    (but where not finite: ``nonfinite``, the straight line's length); without ``Y`` entries take
    the shortest chain of drafts where shorter (:func:`close_chains`); then ``error_sample``
    random pairs are solved by ``geodesics(**options)`` in chunks of ``chunk_size`` to measure the
    entries' error (those entries keep the shorter length). Returns the statuses, the report's
    extra fields and the sample's decoder evaluations and JVPs."""
    status = as_drafts(status)
    show = progress and dist_info()[0] == 0
    chained = 0 if Y is not None else close_chains(matrix, status, show)
    nodes, rows, cols = node_indices(pts, Y)
    run = (chunk_size, error_sample, matrix, status, show, workers)
    error, evals, jvps = sample_error(
        nodes, rows, cols, Y is None, pair_solver(metric, options), *run, "draft distances"
    )
    return status, {"draft_error": error, "draft_chains": chained}, (evals, jvps)


def close_chains(matrix: Tensor, status: Tensor, show: bool) -> int:
    """Every entry of the symmetric (M, M) ``matrix`` (zero diagonal) that a chain of entries
    through other codes beats by more than :data:`.chains.TOL` (relative: the error allowed to
    two measured lengths) takes the chain's length, in rounds of :func:`.chains.shortest_stop`
    (``status`` of those entries: ``draft``); returns the entries ``i < j`` shortened."""
    D = matrix.to(dtype=torch.float64)
    shortened = torch.zeros(D.shape, dtype=torch.bool, device=D.device)
    for _ in range(CHAIN_ROUNDS):
        with call_bar(D.shape[0], show, "chains of drafts", "row", DELAY) as bar:
            best, _ = shortest_stop(D, bar)
        better = best < (1 - TOL) * D
        if not bool(better.any()):
            break
        D = torch.where(better, best, D)
        shortened |= better
    if bool(shortened.any()):
        matrix[shortened.to(matrix.device)] = D[shortened].to(matrix)
        status[shortened.to(status.device)] = DRAFT
    return int(torch.triu(shortened, diagonal=1).sum())
