"""The code graph: work shared between the pairs of an all-pairs run.

Its nodes are the codes themselves; its edges join each code to its nearest codes in different
directions, and each edge is solved as an exact geodesic (:func:`fastgeo.geodesics`), which is
cheap: neighbours are close and their geodesics nearly straight. A shortest path on this graph
is a chain of true geodesics, so its length is an upper bound of the distance between its ends
(up to the edges' own length errors, ``length_errors``), found for all ``M^2`` pairs by
Dijkstra at the cost of ``O(M k)`` geodesics. It overestimates where the chain bends at the
codes it passes through, and where the geodesic crosses a region with no codes; the all-pairs
driver measures by how much on a random sample of pairs solved exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

NEIGHBORS = 16  # edges per code (before symmetrization)
CANDIDATES = 4  # ... chosen among this many times as many nearest codes
# ... and k // 2 more beyond FAR times the nearest code's distance, among FAR_CANDIDATES k nearest:
# long edges are geodesics that cut across the gaps between codes, where chains of short ones
# zig-zag (digits, M = 256: mean excess of graph distances 1.4 % -> 0.9 %, for 1.6x the edges).
FAR = 5
FAR_CANDIDATES = 24
DIVERSE_COS = 0.97  # a candidate within ~14 degrees of a nearer chosen neighbour's direction is skipped
ROW_BLOCK = 1024  # codes per block of bridges and symmetrization ((block, block) matrices)
SEARCH_BLOCK = 128  # codes per block of the neighbour search ((block, M) and (block, C, C))
# ... fewer where C is large (a user's large ``neighbors``): (block, C, C) cosines stay below
# this many elements (256 MB in float32), or one code's (C, C) where that alone is more.
SEARCH_ELEMENTS = 1 << 26
DIJKSTRA_BLOCK = 256  # sources per block of Dijkstra rows ((block, M) float64)


def neighbour_edges(Z: Tensor, k: int = NEIGHBORS) -> Tensor:
    """Edges (E, 2), ``i < j``, unique: each code of ``Z`` (M, d) to its ``k`` nearest codes in
    different directions (nearest first; a candidate whose direction is within ``DIVERSE_COS``
    of a nearer chosen neighbour's is skipped, so that in low d a code gets neighbours all
    around it rather than k along one side), to ``k // 2`` farther ones the same way (beyond
    ``FAR`` times its nearest neighbour's distance), plus the shortest Euclidean edges that
    connect the graph. The rows of ``Z`` must be distinct."""
    M = Z.shape[0]
    if M < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=Z.device)
    far_k = k // 2
    C = min(M - 1, FAR_CANDIDATES * k)
    edges = []
    block = max(1, min(SEARCH_BLOCK, SEARCH_ELEMENTS // max(1, C * C)))
    for lo in range(0, M, block):
        q = Z[lo : lo + block]
        b = q.shape[0]
        rows = torch.arange(b, device=Z.device)
        dist = torch.cdist(q, Z)
        dist[rows, lo + rows] = torch.inf
        cand_d, cand = dist.topk(C, largest=False)  # ascending
        unit = (Z[cand] - q[:, None]) / cand_d[..., None].clamp(min=torch.finfo(Z.dtype).tiny)
        src = (lo + rows)[:, None].expand(b, C)
        cos = unit @ unit.transpose(1, 2)  # (b, C, C)
        near = _spread(cos, (torch.arange(C, device=Z.device) < CANDIDATES * k).expand(b, C), k)
        edges.append(torch.stack([src[near], cand[near]], 1))
        if far_k:
            far = _spread(cos, cand_d >= FAR * cand_d[:, :1], far_k)
            edges.append(torch.stack([src[far], cand[far]], 1))
    edges = torch.cat(edges)
    edges = torch.cat([edges, connecting_edges(Z, edges)])
    return torch.unique(torch.sort(edges, dim=1).values, dim=0)


def _spread(cos: Tensor, allowed: Tensor, k: int) -> Tensor:
    """(b, C) mask: per row, up to ``k`` allowed candidates in different directions (``cos``
    (b, C, C): cosines between the candidates' directions, nearest first)."""
    b, C = allowed.shape
    chosen = torch.zeros(b, C, dtype=torch.bool, device=cos.device)
    count = torch.zeros(b, dtype=torch.long, device=cos.device)
    for c in range(C):
        blocked = ((cos[:, c, :c] > DIVERSE_COS) & chosen[:, :c]).any(1)
        chosen[:, c] = allowed[:, c] & ~blocked & (count < k)
        count += chosen[:, c]
    return chosen


def connecting_edges(Z: Tensor, edges: Tensor) -> Tensor:
    """Edges (k, 2) that connect the components of the graph: repeatedly the shortest Euclidean
    edge from the component of code 0 to the rest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    M = Z.shape[0]
    e = edges.cpu().numpy()
    adj = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(M, M))
    count, label = connected_components(adj, directed=False)
    extra = []
    while count > 1:
        inside = np.flatnonzero(label == label[0])
        outside = np.flatnonzero(label != label[0])
        best = (np.inf, -1, -1)
        for lo in range(0, len(outside), ROW_BLOCK):
            out = outside[lo : lo + ROW_BLOCK]
            dist = torch.cdist(
                Z[torch.as_tensor(inside, device=Z.device)], Z[torch.as_tensor(out, device=Z.device)]
            )
            flat = int(dist.argmin())
            value = float(dist.reshape(-1)[flat])
            if value < best[0]:
                best = (value, int(inside[flat // len(out)]), int(out[flat % len(out)]))
        _, i, j = best
        extra.append((i, j))
        label[label == label[j]] = label[0]
        count -= 1
    return torch.tensor(extra, dtype=torch.long, device=Z.device).reshape(-1, 2)


@dataclass
class CodeGraph:
    """The code graph of ``n`` codes: ``edges`` (E, 2) ``i < j``, their geodesic ``lengths``
    (E,) float64 and per-edge ``status`` (E,) int8 (codes of
    :data:`fastgeo.solver.result.STATUSES`), and the decoder work the edges cost."""

    n: int
    edges: np.ndarray
    lengths: np.ndarray
    status: np.ndarray
    decoder_evals: int = 0
    decoder_jvps: int = 0

    def _csr(self) -> Any:
        from scipy.sparse import coo_matrix

        # Zero-length edges would vanish from a sparse matrix: kept, tiny but present.
        w = np.maximum(self.lengths, 1e-300)
        i, j = self.edges[:, 0], self.edges[:, 1]
        return coo_matrix((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(self.n, self.n)).tocsr()

    def distance_rows(
        self, sources: np.ndarray, block: int = DIJKSTRA_BLOCK
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Shortest-path lengths from ``sources`` (S,) to every code, block by block: yields
        (block of sources (b,), distances (b, n) float64; inf where unreachable)."""
        from scipy.sparse.csgraph import dijkstra

        csr = self._csr()
        for lo in range(0, len(sources), block):
            idx = np.asarray(sources[lo : lo + block], dtype=np.int64)
            # The matrix holds both directions of every edge: read as directed, the same
            # paths, found 1.8x faster than by scipy's undirected search (M = 10,000, k = 30).
            yield idx, np.atleast_2d(dijkstra(csr, directed=True, indices=idx))
