"""Paths through the codes for the chord mode: how far a pair's chord is from the codes between
its ends.

A feature-space chord is short where the geodesic is not when the decoder's image of the
straight segment leaves the codes' manifold (a gap between classes, a fold): the geodesic goes
around, through where the codes are. Shortest paths on two k-nearest-neighbour graphs of the
codes see this at no decoder cost: one in feature space (edges: chords), one in latent space
(edges: the straight segment under the metric frozen at the ends, ``sqrt(a0 a1)``, at least the
chord). Their ratios to the chord are two more covariates of the chord mode's fit: on 100
held-out pairs of 10,000 codes of trained VAEs (bench/RESULTS.md, "Chord estimates with paths
through the codes") the mean |error| of a d = 5 conv decoder went 9.9 -> 5.3 %, a d = 8 one's
5.3 -> 4.8 %, six MLPs' (d = 10-64) down by 0.2-0.4 points; a 2-D digits VAE's (1,000 codes)
9.5 -> 2.1 %.

A path's length is not an estimate of the distance itself (in d >= 8 chains of near codes
zig-zag, 70-110 % above the geodesic): only its ratio to the chord is used, fitted like the
others.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .code_graph import CodeGraph, connecting_edges
from .workers import run_in_workers, shared

NEIGHBORS = 30  # edges per code (before symmetrization)
SEARCH_BYTES = 1 << 26  # float64 distances of one block of the neighbour search
EDGE_BYTES = 1 << 26  # float64 features and metric tensors of one block of edges


def nearest_edges(X: Tensor, k: int = NEIGHBORS, near: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Edges (E, 2), ``i < j``, unique, and their Euclidean lengths (E,): each row of ``X``
    (n, f) to its ``k`` nearest rows, plus the edges that connect the graph, the shortest in
    ``near`` (n, e) (default ``X``: wide features make each bridge an ``n^2 f`` search). Rows
    that are not finite get no edge (and stay apart)."""
    n = X.shape[0]
    keep = torch.isfinite(X).all(1).nonzero().squeeze(1)
    Xk = X[keep]
    m = Xk.shape[0]
    if m < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=X.device), X.new_zeros(0)
    k = min(k, m - 1)
    block = max(1, SEARCH_BYTES // (8 * m))
    edges, lengths = [], []
    for lo in range(0, m, block):
        dist = torch.cdist(Xk[lo : lo + block], Xk)
        rows = torch.arange(dist.shape[0], device=dist.device)
        dist[rows, lo + rows] = torch.inf
        length, nearest = dist.topk(k, largest=False)
        edges.append(torch.stack([(lo + rows)[:, None].expand_as(nearest), nearest], -1).reshape(-1, 2))
        lengths.append(length.reshape(-1))
    local = torch.cat(edges)
    bridges = connecting_edges(Xk if near is None else near[keep], local)
    local = torch.cat([local, bridges])
    length = torch.cat([*lengths, (Xk[bridges[:, 0]] - Xk[bridges[:, 1]]).norm(dim=1)])
    # Both directions of an edge may be found, their lengths a rounding apart: the shorter kept.
    local, where = torch.unique(torch.sort(local, dim=1).values, dim=0, return_inverse=True)
    length = torch.full((local.shape[0],), torch.inf, dtype=X.dtype, device=X.device).scatter_reduce(
        0, where, length, "amin"
    )
    return (keep[local] if n != m else local), length


def path_graphs(F: Tensor, G: Tensor, Z: Tensor, k: int = NEIGHBORS) -> tuple[CodeGraph, CodeGraph]:
    """The feature-space and latent-space neighbour graphs of ``n`` codes (features ``F``
    (n, f), metric tensors ``G`` (n, d, d), codes ``Z`` (n, d), float64): edges weighted by the
    chord, and by the longer of the chord and ``sqrt(a0 a1)``. A code whose features or metric
    tensor is not finite is in neither."""
    ok = torch.isfinite(F).all(1) & torch.isfinite(G).flatten(1).all(1)
    n = F.shape[0]
    nan = torch.tensor(torch.nan, dtype=F.dtype, device=F.device)
    feature, chords = nearest_edges(torch.where(ok[:, None], F, nan), k, near=Z)
    latent, _ = nearest_edges(torch.where(ok[:, None], Z, nan), k)
    block = max(1, EDGE_BYTES // (8 * (F.shape[1] + G[0].numel())))
    parts = [_edge_lengths(F, G, Z, part) for part in latent.split(block)]
    graphs = []
    for e, w in ((feature, chords), (latent, torch.cat([*parts, F.new_zeros(0)]))):
        graphs.append(CodeGraph(n, e.numpy(), w.numpy(), np.zeros(len(e), dtype=np.int8)))
    return graphs[0], graphs[1]


def _edge_lengths(F: Tensor, G: Tensor, Z: Tensor, e: Tensor) -> Tensor:
    """The longer of the chord and ``sqrt(a0 a1)`` (E,) of edges ``e`` (E, 2)."""
    i, j = e[:, 0], e[:, 1]
    v = Z[j] - Z[i]
    q0 = torch.einsum("ei,eij,ej->e", v, G[i], v).clamp(min=0)  # a0^2
    q1 = torch.einsum("ei,eij,ej->e", v, G[j], v).clamp(min=0)
    return torch.maximum((F[i] - F[j]).norm(dim=1), (q0 * q1).sqrt().sqrt())


def path_lengths(graphs: tuple[CodeGraph, ...], sources: Tensor) -> Tensor:
    """Shortest-path lengths (len(graphs), S, n) float64 from the codes ``sources`` (S,) to
    every code on each graph (inf where unconnected)."""
    src = sources.cpu().numpy()
    out = []
    for graph in graphs:
        rows = [d for _, d in graph.distance_rows(src)]
        out.append(torch.from_numpy(np.concatenate(rows) if rows else np.zeros((0, graph.n))))
    return torch.stack(out)


def path_rows(graphs: tuple[CodeGraph, ...], sources: Tensor, workers: int) -> Tensor:
    """:func:`path_lengths` with the sources split over ``workers`` forked processes (scipy's
    Dijkstra holds the GIL): (len(graphs), S, n) float64."""
    S = sources.numel()
    if workers <= 1 or S < 2:
        return path_lengths(graphs, sources)
    out = shared(torch.empty(len(graphs), S, graphs[0].n, dtype=torch.float64, device="cpu"), workers)
    bounds = torch.linspace(0, S, workers + 1, device="cpu").round().long().tolist()

    def task(w: int, _: int) -> None:
        lo, hi = bounds[w], bounds[w + 1]
        if hi > lo:
            out[:, lo:hi] = path_lengths(graphs, sources[lo:hi])

    run_in_workers(workers, task, shared(torch.zeros(workers, dtype=torch.int64, device="cpu"), workers))
    return out
