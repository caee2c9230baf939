"""``pairwise_distances(mode="graph")``: every distance read off the code graph
(:mod:`.code_graph`) at the cost of ``O(M k)`` geodesics, and its error measured on a random
sample of pairs solved exactly.

In latent dimension >= 4 (by default, up to :data:`.straight.MAX_PAIRS` pairs) every entry is
also bounded by its pair's straight segment, measured (:mod:`.straight`): there chains through
few codes zig-zag, and the segment is often the shorter.

The edges are drafts by default (a coarse curve each, :mod:`.draft_mode`; ``edges="exact"``:
geodesics). Graph distances are upper bounds (chains of curves, segments): the error sample
(:mod:`.error_sample`) says how far above the distances they are. The sampled pairs keep the
shorter of both lengths, and (without ``Y``: the graph's nodes are then the entries' codes)
edges whose chain is the edge itself keep their curve's status (``draft`` for drafts); every
other entry has the status ``graph_estimate``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._progress import progress_bar
from ..metric import ExpectedMetric
from ..solver.result import GRAPH_ESTIMATE
from .chunks import dist_info
from .code_graph import ROW_BLOCK, CodeGraph, neighbour_edges
from .draft_mode import draft_solver
from .error_sample import EstimateError, node_indices, sample_error
from .pair_list import Solve, pair_solver, solve_pair_list
from .straight import BLOCK as STRAIGHT_BLOCK
from .straight import CHUNK as STRAIGHT_CHUNK
from .straight import straight_solver

# Edges join near neighbours: their geodesics need no race of starts through graph corridors
# (digits, M = 256: the same graph distances to 4 digits, edges 2.6x cheaper). Options given
# by the user win.
EDGE_OPTIONS = {"refine": 1, "corridors": 0}
# How the edges are solved: "draft" (the default), a coarse curve each (.draft_mode): the graph
# mode 1.7-9.5x faster than with "exact" edges (geodesics), its distances about as far above the
# geodesics (within 0.06 % up to 1,000 codes; 10,000 2-D codes 2.4 -> 2.9 %, 64 codes of a conv
# decoder 2.9 -> 3.1 %: bench/RESULTS.md, "Drafts as the graph's edges"): a chain's excess comes
# from its bends between codes, not from its edges.
EDGES = ("draft", "exact")


def graph_distances(
    nodes: Tensor,
    rows: Tensor,
    cols: Tensor,
    symmetric: bool,
    solve_edge: Callable[[Tensor, Tensor], dict[str, Any]],
    solve: Callable[[Tensor, Tensor], dict[str, Any]],
    chunk_size: int,
    neighbors: int,
    error_sample: int,
    out: Tensor,
    status: Tensor,
    progress: bool,
    workers: int,
    straight: Solve | None = None,
) -> tuple[CodeGraph, EstimateError, int, int, int]:
    """Fill ``out`` (R, C) with the code-graph distances between ``nodes[rows]`` and
    ``nodes[cols]`` (distinct ``nodes`` (n, d); ``symmetric``: rows = cols = all nodes, the
    strict upper triangle's pairs sampled) and ``status`` (R, C) int8 (pre-filled by the caller);
    ``solve_edge`` gives the edges' curves (geodesics or drafts), ``solve`` the exact geodesics of
    ``error_sample`` random pairs, in chunks of ``chunk_size`` split over the processes and ``workers``;
    ``straight`` (:func:`.straight.straight_solver`), where given, the straight segment of every
    pair, an entry taking it where it is shorter than the chain (before the sample is measured).
    Returns the graph, the measured error, the decoder evaluations and JVPs of the sample and of
    the segments, and the entries a segment shortened."""
    show = progress and dist_info()[0] == 0
    graph = _graph(nodes, neighbors, solve_edge, chunk_size, show, workers)
    _fill(graph, rows, cols, symmetric, out, show)
    shortened, straight_evals = 0, 0
    if straight is not None:
        shortened, straight_evals = _shortcuts(nodes, rows, cols, symmetric, straight, out, show, workers)
    if symmetric:
        _edge_status(graph, out, status)
    run = (chunk_size, error_sample, out, status, show, workers)
    error, evals, jvps = sample_error(nodes, rows, cols, symmetric, solve, *run, "graph distances")
    return graph, error, evals + straight_evals, jvps, shortened


def _shortcuts(
    nodes: Tensor,
    rows: Tensor,
    cols: Tensor,
    symmetric: bool,
    straight: Solve,
    out: Tensor,
    show: bool,
    workers: int,
) -> tuple[int, int]:
    """Every entry of ``out`` (R, C) that its pair's straight segment beats takes the segment's
    length (``symmetric``: the strict upper triangle measured, mirrored), in blocks of rows of
    at most ``STRAIGHT_BLOCK`` pairs (the pair lists and lengths of one block are held at once);
    returns how many entries (pairs) it shortened and the decoder evaluations."""
    R, C = out.shape
    per_block = max(1, STRAIGHT_BLOCK // C)
    blocks = -(-R // per_block)
    shortened, evals = 0, 0
    for k, r0 in enumerate(range(0, R, per_block)):
        i = torch.arange(r0, min(R, r0 + per_block), device="cpu")[:, None].expand(-1, C).reshape(-1)
        j = torch.arange(C, device="cpu").repeat(i.numel() // C)
        a, b = rows.cpu()[i], cols.cpu()[j]
        keep = (j > i) if symmetric else (a != b)  # equal codes: distance 0 already
        i, j, a, b = i[keep], j[keep], a[keep], b[keep]
        label = "straight segments" + (f" ({k + 1}/{blocks})" if blocks > 1 else "")
        solved = solve_pair_list(nodes, a, b, straight, STRAIGHT_CHUNK, workers, show, label, "pair")
        ii, jj = i.to(out.device), j.to(out.device)
        chain = out[ii, jj]
        seg = solved.lengths.to(out.dtype).to(out.device)
        shorter = seg < chain
        out[ii, jj] = torch.where(shorter, seg, chain)
        if symmetric:
            out[jj, ii] = out[ii, jj]
        shortened += int(shorter.sum())
        evals += solved.decoder_evals
    return shortened, evals


def _graph(
    nodes: Tensor,
    neighbors: int,
    solve: Callable[[Tensor, Tensor], dict[str, Any]],
    chunk_size: int,
    show: bool,
    workers: int,
) -> CodeGraph:
    """The code graph, its edges solved in chunks split over the processes and workers (none
    for ``neighbors=0``: the straight segments alone)."""
    if neighbors == 0:
        empty = np.zeros(0)
        return CodeGraph(nodes.shape[0], np.zeros((0, 2), dtype=np.int64), empty, empty.astype(np.int8))
    edges = neighbour_edges(nodes, neighbors)
    e0, e1 = edges[:, 0], edges[:, 1]
    solved = solve_pair_list(nodes, e0, e1, solve, chunk_size, workers, show, "graph edges", "edge")
    return CodeGraph(
        nodes.shape[0], edges.cpu().numpy(), solved.lengths.numpy(), solved.status.numpy().astype(np.int8),
        solved.decoder_evals, solved.decoder_jvps,
    )  # fmt: skip


def _fill(graph: CodeGraph, rows: Tensor, cols: Tensor, symmetric: bool, out: Tensor, show: bool) -> None:
    """Dijkstra rows into ``out``; symmetric: made exactly symmetric (the shorter of both ways:
    sums of the same edges in another order may round apart)."""
    bar = progress_bar(rows.numel(), show, "graph distances", "row")
    col_idx = cols.cpu().numpy()
    try:
        lo = 0
        for _, dist in graph.distance_rows(rows.cpu().numpy()):
            b = dist.shape[0]
            out[lo : lo + b] = torch.from_numpy(dist[:, col_idx]).to(out.dtype)
            lo += b
            if bar is not None:
                bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    if symmetric:
        n = out.shape[0]
        for i in range(0, n, ROW_BLOCK):
            for j in range(i, n, ROW_BLOCK):
                a, bt = out[i : i + ROW_BLOCK, j : j + ROW_BLOCK], out[j : j + ROW_BLOCK, i : i + ROW_BLOCK].T
                low = torch.minimum(a, bt)
                out[i : i + ROW_BLOCK, j : j + ROW_BLOCK] = low
                out[j : j + ROW_BLOCK, i : i + ROW_BLOCK] = low.T


def _edge_status(graph: CodeGraph, out: Tensor, status: Tensor) -> None:
    """Edges whose chain is the edge itself hold their own curve: its status."""
    i, j = (torch.as_tensor(graph.edges[:, c], device=out.device) for c in (0, 1))
    own = torch.as_tensor(graph.lengths, device=out.device).to(out.dtype)
    itself = (out[i, j] == own).nonzero().squeeze(1)
    st = torch.as_tensor(graph.status, device=status.device)[itself.to(status.device)]
    i, j = i[itself].to(status.device), j[itself].to(status.device)
    status[i, j], status[j, i] = st, st


def run_graph_mode(
    metric: ExpectedMetric,
    pts: Tensor,
    Y: Tensor | None,
    options: dict[str, Any],
    matrix: Tensor,
    chunk_size: int,
    neighbors: int,
    error_sample: int,
    progress: bool,
    workers: int,
    straight: bool = False,
    edges: str = "draft",
) -> tuple[Tensor, Tensor, Tensor, int, dict[str, Any]]:
    """Graph mode into ``matrix`` (distinct ``pts`` (M, d), optional ``Y`` (P, d); ``options``
    of every :func:`fastgeo.geodesics` call; ``straight``: shortcuts by straight segments,
    :mod:`.straight`; ``edges``: one of :data:`EDGES`): status codes (rows, cols) int8,
    iterations (zeros: not kept per pair), the work counts, the world size and the report's
    extra fields."""
    nodes, rows, cols = node_indices(pts, Y)
    status = torch.full(matrix.shape, GRAPH_ESTIMATE, dtype=torch.int8, device=matrix.device)
    edge_options = {**EDGE_OPTIONS, **options}
    solve = pair_solver(metric, options)
    solve_edge = draft_solver(metric, options) if edges == "draft" else pair_solver(metric, edge_options)
    graph, error, evals, jvps, shortened = graph_distances(
        nodes,
        rows,
        cols,
        Y is None,
        solve_edge,
        solve,
        chunk_size,
        neighbors,
        error_sample,
        matrix,
        status,
        progress,
        workers,
        straight_solver(metric) if straight else None,
    )
    iterations = torch.zeros((), dtype=torch.int32, device=matrix.device).expand(matrix.shape)
    counts = torch.tensor([graph.decoder_evals + evals, graph.decoder_jvps + jvps, 0, 0], device="cpu")
    extra = {"graph_error": error, "graph_edges": int(graph.edges.shape[0]), "straight_shortcuts": shortened}
    return status, iterations, counts, dist_info()[1], extra
