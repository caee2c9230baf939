"""Paths through the codes for the chord mode: how far a pair's chord is from the codes between
its ends.

A feature-space chord is short where the geodesic is not when the decoder's image of the
straight segment leaves the codes' manifold (a gap between classes, a fold): the geodesic goes
around, through where the codes are. Shortest paths on two k-nearest-neighbour graphs of the
codes see this at no decoder cost: one in feature space (edges: chords), one in latent space
(edges: the straight segment under the metric frozen at the ends, ``sqrt(a0 a1)``, at least the
chord). Their ratios to the chord are two more covariates of the chord mode's fit: on 100
held-out pairs of 4,000-10,000 training codes (bench/RESULTS.md, "Chord estimates with paths
through the codes"), a 2-D digits VAE's mean |error| 9.3 -> 3.4 %, a d = 5 conv decoder's 9.9
-> 5.3 %, the MLPs' 3.5 -> 3.3 %.

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


def nearest_edges(X: Tensor, k: int = NEIGHBORS) -> Tensor:
    """Edges (E, 2), ``i < j``, unique: each row of ``X`` (n, f) to its ``k`` nearest rows
    (Euclidean), plus the shortest edges that connect the graph. Rows that are not finite get no
    edge (and stay apart)."""
    n = X.shape[0]
    finite = torch.isfinite(X).all(1)
    keep = finite.nonzero().squeeze(1)
    Xk = X[keep]
    m = Xk.shape[0]
    if m < 2:
        return torch.zeros(0, 2, dtype=torch.long)
    k = min(k, m - 1)
    block = max(1, SEARCH_BYTES // (8 * m))
    edges = []
    for lo in range(0, m, block):
        dist = torch.cdist(Xk[lo : lo + block], Xk)
        rows = torch.arange(dist.shape[0])
        dist[rows, lo + rows] = torch.inf
        near = dist.topk(k, largest=False).indices
        edges.append(torch.stack([(lo + rows)[:, None].expand_as(near), near], -1).reshape(-1, 2))
    local = torch.cat(edges)
    local = torch.cat([local, connecting_edges(Xk, local)])
    local = torch.unique(torch.sort(local, dim=1).values, dim=0)
    return keep[local] if n != m else local


def path_graphs(F: Tensor, G: Tensor, Z: Tensor, k: int = NEIGHBORS) -> tuple[CodeGraph, CodeGraph]:
    """The feature-space and latent-space neighbour graphs of ``n`` codes (features ``F``
    (n, f), metric tensors ``G`` (n, d, d), codes ``Z`` (n, d), float64): edges weighted by the
    chord, and by the longer of the chord and ``sqrt(a0 a1)``. A code whose features or metric
    tensor is not finite is in neither."""
    ok = torch.isfinite(F).all(1) & torch.isfinite(G).flatten(1).all(1)
    n = F.shape[0]
    graphs = []
    for space in (F, Z):
        X = torch.where(ok[:, None], space, torch.full_like(space, torch.nan))
        e = nearest_edges(X, k)
        block = max(1, EDGE_BYTES // (8 * (F.shape[1] + G[0].numel())))
        parts = [_edge_lengths(F, G, Z, part, space is Z) for part in e.split(block)]
        w = torch.cat([*parts, F.new_zeros(0)])
        status = np.zeros(len(e), dtype=np.int8)
        graphs.append(CodeGraph(n, e.numpy(), w.numpy(), status))
    return graphs[0], graphs[1]


def _edge_lengths(F: Tensor, G: Tensor, Z: Tensor, e: Tensor, latent: bool) -> Tensor:
    """The chords (E,) of edges ``e`` (E, 2), or (``latent``) the longer of the chord and
    ``sqrt(a0 a1)``."""
    i, j = e[:, 0], e[:, 1]
    w = (F[i] - F[j]).norm(dim=1)
    if latent:
        v = Z[j] - Z[i]
        q0 = torch.einsum("ei,eij,ej->e", v, G[i], v).clamp(min=0)  # a0^2
        q1 = torch.einsum("ei,eij,ej->e", v, G[j], v).clamp(min=0)
        w = torch.maximum(w, (q0 * q1).sqrt().sqrt())
    return w


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
    out = shared(torch.empty(len(graphs), S, graphs[0].n, dtype=torch.float64), workers)
    bounds = torch.linspace(0, S, workers + 1).round().long().tolist()

    def task(w: int, _: int) -> None:
        lo, hi = bounds[w], bounds[w + 1]
        if hi > lo:
            out[:, lo:hi] = path_lengths(graphs, sources[lo:hi])

    run_in_workers(workers, task, shared(torch.zeros(workers, dtype=torch.int64), workers))
    return out
