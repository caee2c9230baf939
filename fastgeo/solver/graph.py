"""Graph initialization: shortest paths on a neighbourhood graph where the precision is high.

Gradient steps from a straight line can end in the wrong basin when the data bends around
empty space. A graph over points near the data, with each edge weighted by its metric length,
finds the right corridor in any latent dimension: nodes are the RBF centers, samples around
them (within one bandwidth) and optionally the user's latent codes; edges join k nearest
neighbours (plus a Euclidean spanning tree, so the graph is connected). The graph is built once
per metric and reused (:class:`GraphCache`); each query attaches its end points to their k
nearest nodes, reads the shortest paths between those nodes from rows of Dijkstra (scipy) runs
that are computed on first use and kept with the graph, and turns each path into curve
coefficients by a least-squares fit.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch
from torch import Tensor

from .. import _checks
from ..curves import straight_line, time_grid
from ..metric import ExpectedMetric


class LatentGraph:
    """A neighbourhood graph over latent points with metric-length edge weights.

    Args:
        metric: the :class:`ExpectedMetric`.
        latents: optional (M, d) latent codes of the data, added as nodes (a random subset of
            ``n_nodes`` of them when M is larger).
        n_nodes: nodes sampled around the RBF centers (default 1500).
        k: neighbours per node (default 10).
        edge_points: points per edge used to measure its metric length (default 8).
        seed: sampling seed.
    """

    def __init__(
        self,
        metric: ExpectedMetric,
        latents: Tensor | None = None,
        n_nodes: int = 1500,
        k: int = 10,
        edge_points: int = 8,
        seed: int = 0,
    ) -> None:
        self.metric = metric
        self.k = k
        self.edge_points = edge_points
        prec = metric.precision
        centers, gammas = prec.centers.detach(), prec.gammas.detach()
        K, d = centers.shape
        per_center = max(1, math.ceil(n_nodes / K))
        g = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(K, per_center, d, generator=g, dtype=torch.float64).to(centers)
        # One bandwidth around each center: phi_k = exp(-1/2) at distance (2 gamma_k)^-1/2.
        radius = (2 * gammas).rsqrt()[:, None, None]
        nodes = [centers, (centers[:, None, :] + radius * noise).reshape(-1, d)]
        if latents is not None:
            metric.check_points("latents", latents, ndim=2)
            if latents.shape[0] > n_nodes:  # a random subset keeps the graph's cost bounded
                keep = torch.randperm(latents.shape[0], generator=g)[:n_nodes].to(latents.device)
                latents = latents[keep]
            nodes.append(latents.detach())
        self.nodes = torch.cat(nodes)
        self.edges, self.weights = self._knn_edges(self.nodes, self.nodes, k, exclude_self=True)
        self.edge_evals = self.edges.shape[0] * edge_points
        self._row_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # see _rows
        self._csr = None

    def _segment_lengths(self, a: Tensor, b: Tensor) -> Tensor:
        """Metric length of straight segments a -> b: (E, d) x 2 -> (E,), in chunks."""
        t = time_grid(self.edge_points, a)
        out = []
        chunk = max(1, (64 << 20) // (self.edge_points * 2 * self.metric.data_dim * a.element_size()))
        with torch.no_grad():
            for s in range(0, a.shape[0], chunk):
                pa, pb = a[s : s + chunk], b[s : s + chunk]
                out.append(self.metric.length(straight_line(pa, pb, t)))
        return torch.cat(out) if out else a.new_zeros(0)

    def _knn_edges(self, queries: Tensor, nodes: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
        """Edges (E, 2) from each query to its k nearest nodes (plus a spanning tree among nodes
        when ``exclude_self``), weighted by metric length (E,)."""
        dist = torch.cdist(queries, nodes)
        if exclude_self:
            dist.fill_diagonal_(float("inf"))
        kk = min(k, nodes.shape[0] - (1 if exclude_self else 0))
        nbr = dist.topk(kk, largest=False).indices  # (Q, kk)
        src = torch.arange(queries.shape[0], device=nodes.device).repeat_interleave(kk)
        pairs = torch.stack([src, nbr.reshape(-1)], 1)
        if exclude_self:
            pairs = torch.cat([pairs, _bridges(pairs, dist)])
            pairs = torch.unique(torch.sort(pairs, dim=1).values, dim=0)
        weights = self._segment_lengths(queries[pairs[:, 0]], nodes[pairs[:, 1]])
        return pairs, weights

    def _sparse(self):
        """The graph as a CSR matrix of its edges (read as undirected), built once. Zero-length
        edges would vanish from a sparse matrix: they are kept, tiny but present."""
        if self._csr is None:
            from scipy.sparse import coo_matrix

            rows, cols = self.edges[:, 0].cpu().numpy(), self.edges[:, 1].cpu().numpy()
            w = np.maximum(self.weights.double().cpu().numpy(), 1e-300)
            n = self.nodes.shape[0]
            self._csr = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
        return self._csr

    def _rows(self, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shortest-path distances and predecessors from graph nodes ``sources`` (E,) to every
        node: (E, n) each. Rows are computed by Dijkstra on first use and kept: queries near the
        same data enter the graph through the same nodes. The kept rows take 12 n bytes each, at
        most 12 n^2 (30 MB for the default graph of ~1600 nodes)."""
        missing = np.array([s for s in np.unique(sources) if s not in self._row_cache], dtype=np.int64)
        if missing.size:
            from scipy.sparse.csgraph import dijkstra

            dist, pred = dijkstra(self._sparse(), directed=False, indices=missing, return_predecessors=True)
            for node, d_row, p_row in zip(missing.tolist(), dist, pred.astype(np.int32), strict=True):
                self._row_cache[node] = (d_row, p_row)
        rows = [self._row_cache[s] for s in sources.tolist()]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def initial_coeffs(self, z0: Tensor, z1: Tensor, psi: Tensor, t: Tensor) -> tuple[Tensor, int]:
        """Coefficients (B, m, d) of the curves that best fit the shortest graph paths z0 -> z1,
        and the decoder evaluations spent attaching the end points."""
        B, d = z0.shape
        if B == 0:
            return z0.new_zeros(0, psi.shape[1], d), 0
        ends, inverse = torch.unique(torch.cat([z0, z1]), dim=0, return_inverse=True)
        q_edges, q_weights = self._knn_edges(ends, self.nodes, self.k, exclude_self=False)
        src_q, dst_q = inverse[:B].cpu().numpy(), inverse[B:].cpu().numpy()
        path, arc = self._paths(q_edges, q_weights, ends.shape[0], src_q, dst_q)
        # Paths are (B, L) indices into nodes + ends, from the source (padded at the start by
        # repeating it) to the target; arc (B, L) is the metric distance from the source.
        reachable = np.isfinite(arc[:, -1]) & (dst_q != src_q)
        all_points = torch.cat([self.nodes, ends]).to(z0)
        pts = all_points[torch.as_tensor(path, device=z0.device)]  # (B, L, d)
        arc = torch.as_tensor(arc, dtype=z0.dtype, device=z0.device)
        total = arc[:, -1:].clamp(min=torch.finfo(z0.dtype).tiny)
        arc = torch.where(torch.isfinite(arc), arc / total, torch.zeros_like(arc))
        # Resample each path at the curve's times, by metric arc length (about constant speed).
        tq = t.expand(B, -1).contiguous()
        hi = torch.searchsorted(arc.contiguous(), tq, right=True).clamp(1, arc.shape[1] - 1)
        lo = hi - 1
        a_lo, a_hi = arc.gather(1, lo), arc.gather(1, hi)
        frac = ((tq - a_lo) / (a_hi - a_lo).clamp(min=torch.finfo(z0.dtype).tiny)).clamp(0, 1)
        p_lo = pts.gather(1, lo[..., None].expand(-1, -1, d))
        p_hi = pts.gather(1, hi[..., None].expand(-1, -1, d))
        sampled = p_lo + frac[..., None] * (p_hi - p_lo)
        offset = (sampled - straight_line(z0, z1, t))[:, 1:-1]  # psi vanishes at the end points
        coeffs = torch.linalg.pinv(psi[1:-1]) @ offset
        ok = torch.as_tensor(reachable, device=z0.device)
        coeffs = torch.where(ok[:, None, None], coeffs, torch.zeros_like(coeffs))
        return coeffs, q_edges.shape[0] * self.edge_points

    def _paths(
        self, q_edges: Tensor, q_weights: Tensor, n_ends: int, src_q: np.ndarray, dst_q: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shortest paths ``source, a, ..., b, target`` (B, L) through the graph, and their arc
        lengths from the source (B, L). Each end point joins the graph by its k edges ``q_edges``
        (ordered by end); the path enters by any edge of its source and leaves by any edge of its
        target, the best of these k x k pairs (a, b)."""
        n, B = self.nodes.shape[0], len(src_q)
        kk = q_edges.shape[0] // max(n_ends, 1)
        nbr = q_edges[:, 1].reshape(n_ends, kk).cpu().numpy()
        w = q_weights.double().reshape(n_ends, kk).cpu().numpy()
        w = np.where(np.isnan(w), np.inf, w)
        s_nbr, s_w, t_nbr, t_w = nbr[src_q], w[src_q], nbr[dst_q], w[dst_q]  # (B, kk) each
        entries, row = np.unique(s_nbr, return_inverse=True)
        row = row.reshape(s_nbr.shape)
        dist, pred = self._rows(entries)
        total = s_w[:, :, None] + dist[row[:, :, None], t_nbr[:, None, :]] + t_w[:, None, :]
        total = np.where(np.isnan(total), np.inf, total).reshape(B, -1)
        best = total.argmin(1)
        rows = np.arange(B)
        a_row, b = row[rows, best // kk], t_nbr[rows, best % kk]
        length = total[rows, best]
        inner = _walk_back(pred, a_row, b, np.isfinite(length))  # (B, L): a (repeated) ... b
        arc_inner = s_w[rows, best // kk][:, None] + dist[a_row[:, None], inner]
        path = np.concatenate([(src_q + n)[:, None], inner, (dst_q + n)[:, None]], 1)
        arc = np.concatenate([np.zeros((B, 1)), arc_inner, length[:, None]], 1)
        return path, arc


def _walk_back(pred: np.ndarray, row: np.ndarray, target: np.ndarray, reachable: np.ndarray) -> np.ndarray:
    """Node paths (B, L) ending at ``target``, from predecessor rows ``pred[row]`` (negative: the
    root); finished walks repeat their first node, so every path has at least two entries."""
    walk = [target]
    cur = target.copy()
    for _ in range(pred.shape[1]):
        prev = pred[row, cur]
        done = (prev < 0) | ~reachable
        if done.all():
            break
        cur = np.where(done, cur, prev)
        walk.append(cur)
    walk.append(walk[-1])
    return np.stack(walk[::-1], 1)


def _bridges(pairs: Tensor, dist: Tensor) -> Tensor:
    """Edges (E, 2) that join the components of a graph: the shortest Euclidean edge from the
    first component to the rest, repeatedly, until one component remains."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = dist.shape[0]
    p = pairs.cpu().numpy()
    adj = coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    count, label = connected_components(adj, directed=False)
    label = torch.as_tensor(label, device=dist.device)
    extra = []
    while count > 1:
        inside = label == label[0]
        sub = dist[inside][:, ~inside]
        flat = int(sub.argmin())
        i = inside.nonzero()[flat // sub.shape[1], 0]
        j = (~inside).nonzero()[flat % sub.shape[1], 0]
        extra.append(torch.stack([i, j]))
        label = torch.where(label == label[j], label[0], label)
        count -= 1
    if not extra:
        return pairs.new_zeros(0, 2)
    return torch.stack(extra)


def check_graph_inputs(metric: ExpectedMetric, graph: object, latents: Tensor | None) -> None:
    """The ``graph`` and ``latents`` options of :func:`fastgeo.geodesics`, checked."""
    if not isinstance(graph, (bool, LatentGraph)):
        raise TypeError(f"graph must be True, False or a fastgeo.LatentGraph, got {graph!r}")
    if latents is not None:
        metric.check_points("latents", latents, ndim=2)
        _checks.finite("latents", latents)


class GraphCache:
    """The :class:`LatentGraph` of one metric, built on first use and rebuilt when the decoder,
    the precision or the latents change (trained in place, or replaced): the key holds the
    metric's :meth:`~fastgeo.ExpectedMetric.probe` outputs, whatever holds the parameters."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._probe: Tensor | None = None
        self.graph: LatentGraph | None = None

    def get(self, metric: ExpectedMetric, latents: Tensor | None) -> tuple[LatentGraph, bool]:
        """(the graph, whether it was built by this call)."""
        key = None if latents is None else (latents.data_ptr(), tuple(latents.shape), latents._version)
        probe = metric.probe(4)
        fresh = self.graph is None or key != self._key or not torch.equal(probe, self._probe)
        if fresh:
            self.graph = LatentGraph(metric, latents)
            self._key, self._probe = key, probe
        return self.graph, fresh


_CACHES: weakref.WeakKeyDictionary[ExpectedMetric, GraphCache] = weakref.WeakKeyDictionary()


def cached_graph(metric: ExpectedMetric, latents: Tensor | None) -> tuple[LatentGraph, bool]:
    """The metric's graph for these latents from its :class:`GraphCache`, and whether it was
    built now (its edges then cost decoder evaluations)."""
    return _CACHES.setdefault(metric, GraphCache()).get(metric, latents)
