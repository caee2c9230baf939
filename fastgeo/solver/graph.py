"""The latent graph: a neighbourhood graph of latent points with metric-length edge weights, from
which the solver takes starts that lie in the right basin (:mod:`.corridors`).

Gradient steps from a straight line end in the wrong basin when the data bends around empty
space. Shortest paths on a graph whose edges are weighted by their metric length find the
corridors the data opens where the graph is dense enough to follow a geodesic: in d <= 3. In
d >= 8 its paths have 1-5 inner nodes and are 1.3-1.6x the straight line's length (median over
48 pairs of seven trained VAEs, d = 8-64, longer than the straight line on 46-48 of them; the
same with the training codes as nodes on four): their starts still race as restarts from genuinely
different curves, which found basins the straight line and the explored start missed (better than
random smooth curves 0.3 chords off the line: a d = 12 conv decoder's mean excess 0.004 % against
0.055 %), but which basin they lead to depends on the graph's random draw (bench/RESULTS.md, "A
tenth session").
Nodes:

- in d <= 3: a regular grid over the box around the RBF centers (about ``grid`` nodes), so that
  paths can also run between the data, where a geodesic may cut a corner;
- the RBF centers, and samples around them at about one bandwidth (the Gaussian scaled by
  1/sqrt(d): unscaled, samples in high d land sqrt(d) bandwidths away, off the data);
- the user's latent codes (a random subset of at most ``n_nodes``), which mark the data best.

Edges join each node to its k nearest nodes (plus a Euclidean spanning tree, so the graph is
connected); each is measured on ``edge_points`` points of the straight segment. The graph is built
once per metric and kept (:mod:`.graph_cache`); a query attaches each end point to its k nearest
nodes and reads shortest paths from one row of Dijkstra (scipy) per end point, computed on first
use and kept with the graph.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from .. import _checks, _metric_checks
from .._progress import pulse
from ..curves import straight_line, time_grid
from ..decoders.uses import in_one_use
from ..metric import ExpectedMetric

# In d <= 3 the graph's paths run over a regular grid wherever there is no data. A grid path
# steps in the k directions of its edges only and zig-zags along any other: with 1600 nodes and 10
# neighbours (8 directions in 2-D) paths between trained 2-D VAE codes were 4-10 % longer than
# their geodesics, by direction, and the shortest path ran in the wrong corridor. 3600 nodes and
# 20 neighbours (16 directions) put it in the shortest geodesic's basin on most such pairs: on
# the 81 pairs of 80 random codes (two VAEs, three samples) whose curve a chain of curves through
# a third code beat, 71 -> 12 more than 0.1 % above the curve found from the chain, mean excess
# 0.5-2.0 % -> 0.07-0.17 % (bench/RESULTS.md, "A finer 2-D graph"), for 10-25 % more time per
# call (the rows of Dijkstra) and a build of 1-2 s instead of 0.6-1.1 s.
GRID_NODES = 3600
GRID_NEIGHBOURS = 20
NEIGHBOURS = 10  # per node in d >= 4 (no grid)
# Points of a straight edge where its metric length is measured: 8 in d <= 3, where the grid's
# edges must not step over the thin walls of 2-D VAEs; 4 in d >= 4, where the nodes lie near the
# data: the same curves on every sample of eight trained VAEs (d = 5-64, MLP and conv, 1-5 seeds
# of 48 pairs; LM iterations -1.1 to +1.7 %) for a third of the build's decoder work (a D = 3,072
# conv decoder's first call 23 -> 8 s; bench/RESULTS.md, "Latent graph builds").
EDGE_POINTS = 8
EDGE_POINTS_HIGH_D = 4
ROW_CACHE_BYTES = 256 << 20  # shortest-path rows kept per graph (see LatentGraph.end_rows)
_ROWS_LOCK = threading.Lock()  # the graphs' end-row caches, read and trimmed by several threads


class LatentGraph:
    """A neighbourhood graph over latent points with metric-length edge weights.

    Args:
        metric: the :class:`ExpectedMetric`.
        latents: optional (M, d) latent codes of the data, added as nodes (a random subset of
            ``n_nodes`` of them when M is larger).
        n_nodes: nodes sampled around the RBF centers (default 1500; rounded up to a multiple of
            the K centers, ``ceil(n_nodes / K)`` around each, and the centers themselves added).
        k: neighbours per node (default 10; 20 in d <= 3 with a grid; a k of all the other nodes
            or more joins every pair of nodes).
        edge_points: points per edge used to measure its metric length (default 8 in d <= 3, 4
            above).
        grid: nodes of the regular grid in latent dimension d <= 3 (default 3600; 0 for none).
        seed: sampling seed.

    Attributes:
        nodes: (V, d) the graph's latent points; edges: (E, 2) node indices; weights: (E,) the
        edges' metric lengths; k, edge_points: as used; edge_evals: decoder points spent on the
        edges.
    """

    @in_one_use
    def __init__(
        self,
        metric: ExpectedMetric,
        latents: Tensor | None = None,
        n_nodes: int = 1500,
        k: int | None = None,
        edge_points: int | None = None,
        grid: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(metric, ExpectedMetric):
            raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
        _metric_checks.metric_in_eval(metric)
        n_nodes = _checks.integer("n_nodes", n_nodes, 1)
        if edge_points is not None:
            edge_points = _checks.integer("edge_points", edge_points, 2)
        seed = _checks.integer("seed", seed, 0)
        grid = GRID_NODES if grid is None else _checks.integer("grid", grid, 0)
        if latents is not None:
            metric.check_points("latents", latents, ndim=2)
            _checks.finite("latents", latents)
        centers, gammas = metric.precision.centers.detach(), metric.precision.gammas.detach()
        K, d = centers.shape
        if edge_points is None:
            edge_points = EDGE_POINTS if d <= 3 else EDGE_POINTS_HIGH_D
        k = (GRID_NEIGHBOURS if grid and d <= 3 else NEIGHBOURS) if k is None else _checks.integer("k", k, 1)
        self.metric = metric
        self.probe = metric.probe()  # the metric as it was: a decoder trained in place since is told
        self.precision_key = metric.precision.fingerprint()  # (all of it: the probe sees a few centers)
        self.k = k
        self.edge_points = edge_points
        g = torch.Generator(device="cpu").manual_seed(seed)
        per_center = max(1, math.ceil(n_nodes / K))
        noise = torch.randn(K, per_center, d, generator=g, device="cpu", dtype=torch.float64).to(centers)
        # phi_k = exp(-1/2) at one bandwidth, (2 gamma_k)^-1/2; a Gaussian sample is sqrt(d) long.
        radius = (2 * gammas).rsqrt()[:, None, None]
        nodes = [centers, (centers[:, None, :] + radius * noise / math.sqrt(d)).reshape(-1, d)]
        if grid and d <= 3:
            lo = centers.min(0).values - 2 * radius.max()
            hi = centers.max(0).values + 2 * radius.max()
            per_axis = max(2, round(grid ** (1 / d)))
            axes = [
                torch.linspace(
                    float(lo[i]), float(hi[i]), per_axis, dtype=torch.float64, device=centers.device
                )
                for i in range(d)
            ]
            nodes.append(torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, d).to(centers))
        if latents is not None:
            if latents.shape[0] > n_nodes:  # a random subset keeps the graph's cost bounded
                keep = torch.randperm(latents.shape[0], generator=g)[:n_nodes].to(latents.device)
                latents = latents[keep]
            nodes.append(latents.detach())
        self.nodes = torch.cat(nodes)
        try:
            self.edges, self.weights = self._knn_edges(self.nodes, self.nodes, k, exclude_self=True)
        except Exception as error:  # the user's decoder, off the codes: say where it was called
            reach = float(self.nodes.norm(dim=-1).max())
            if hasattr(error, "add_note"):  # Python >= 3.11
                error.add_note(
                    f"(raised by the decoder mean while fastgeo built its latent graph: "
                    f"{self.nodes.shape[0]} nodes around the RBF centers, up to |z| = {reach:.3g}; "
                    "graph=False solves without one)"
                )
            raise
        self.edge_evals = self.edges.shape[0] * (edge_points - 2) + self.nodes.shape[0]
        self._end_rows: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # see end_rows
        self._csr = None
        self._both_ways = None

    def _segment_lengths(self, a: Tensor, b: Tensor) -> Tensor:
        """Metric length of straight segments a -> b: (E, d) x 2 -> (E,), in chunks, each curve's
        points decoded together (a query's lengths do not depend on the other queries; its
        evaluations are counted by its caller)."""
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
        if not exclude_self:
            return pairs, self._segment_lengths(queries[pairs[:, 0]], nodes[pairs[:, 1]])
        pairs = torch.cat([pairs, _bridges(pairs, dist)])
        pairs = torch.unique(torch.sort(pairs, dim=1).values, dim=0)
        return pairs, self._edge_lengths(nodes, pairs)

    def _edge_lengths(self, nodes: Tensor, pairs: Tensor) -> Tensor:
        """Metric lengths (E,) of the straight edges ``pairs`` (E, 2) between ``nodes`` (n, d), as
        :meth:`_segment_lengths` measures them, each node decoded once and each edge's inner
        points alone (a quarter of the build's decoder work at 8 points per edge: 14.1 -> 11.2 s on a
        d = 8 conv decoder, D = 784, 1 thread). Each step redraws the call's progress bar."""
        t = time_grid(self.edge_points, nodes)
        inner = max(1, self.edge_points - 2)
        chunk = max(1, (64 << 20) // (inner * 2 * self.metric.data_dim * nodes.element_size()))
        out = []
        with torch.no_grad():
            ends = self.metric.mean_embedding(nodes)  # (n, F)
            pulse(nodes.shape[0])
            for s in range(0, pairs.shape[0], chunk):
                i, j = pairs[s : s + chunk, 0], pairs[s : s + chunk, 1]
                points = straight_line(nodes[i], nodes[j], t)
                out.append(self.metric.length_with_ends(points, ends[i], ends[j]))
                pulse(i.shape[0] * (self.edge_points - 2))
        return torch.cat(out) if out else nodes.new_zeros(0)

    @in_one_use
    def attach(self, points: Tensor) -> tuple[np.ndarray, np.ndarray, int]:
        """The k nearest nodes of each point (Q, k) and the metric lengths of the edges to them
        (Q, k; inf where not finite), and the decoder evaluations that cost."""
        self._check_query(points)
        edges, weights = self._knn_edges(points, self.nodes, self.k, exclude_self=False)
        kk = edges.shape[0] // max(points.shape[0], 1)
        nbr = edges[:, 1].reshape(-1, kk).cpu().numpy()
        w = weights.double().reshape(-1, kk).cpu().numpy()
        return nbr, np.where(np.isfinite(w), w, np.inf), edges.shape[0] * self.edge_points

    def _check_query(self, points: object) -> None:
        """Query points must be (Q, d) finite codes of the nodes' dtype and device."""
        _checks.tensor("points", points, ndim=2)
        _checks.same_dtype_device([("graph nodes", self.nodes), ("points", points)])
        d = self.nodes.shape[1]
        if points.shape[1] != d:
            raise ValueError(f"points must be (Q, {d}) codes, got shape {tuple(points.shape)}")
        _checks.finite("points", points)

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

    @in_one_use
    def end_rows(self, points: Tensor) -> tuple[np.ndarray, np.ndarray, int]:
        """Shortest-path distances from each point (Q, d), attached to its k nearest nodes, to
        every node (Q, n), the predecessors (Q, n; -1 at a node reached straight from the point),
        and the decoder evaluations spent attaching the points not seen before.

        One Dijkstra per point, on the graph with the point's edges one way out of it: no path
        runs through another query's point, so a row does not depend on the other points of the
        call. Rows are kept by the point's coordinates (12 n bytes each, the oldest dropped
        beyond ``ROW_CACHE_BYTES``): a distance matrix queries every code many times."""
        self._check_query(points)
        keys = [row.tobytes() for row in points.detach().cpu().numpy()]
        todo: dict[bytes, int] = {}  # each new point's first index
        with _ROWS_LOCK:  # (a graph shared by threads: a row found here is not dropped before use)
            found = {key: self._end_rows[key] for key in keys if key in self._end_rows}
        for i, key in enumerate(keys):
            if key not in found:
                todo.setdefault(key, i)
        evals = 0
        if todo:
            nbr, w, evals = self.attach(points[list(todo.values())])
            dist, pred = self._dijkstra_from(nbr, w)
            new = dict(zip(todo, zip(dist, pred, strict=True), strict=True))
            found.update(new)
            limit = max(1, ROW_CACHE_BYTES // (12 * self.nodes.shape[0]))
            with _ROWS_LOCK:
                self._end_rows.update(new)
                while len(self._end_rows) > limit:
                    self._end_rows.pop(next(iter(self._end_rows)))
        rows = [found[key] for key in keys]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), evals

    def _dijkstra_from(self, nbr: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows (Q, n) of distances and predecessors from Q points attached to nodes ``nbr``
        (Q, k) by edges of lengths ``w`` (Q, k)."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import dijkstra

        if self._both_ways is None:
            csr = self._sparse()
            self._both_ways = (csr + csr.T).tocoo()
        base, n, (Q, k) = self._both_ways, self.nodes.shape[0], nbr.shape
        ok = np.isfinite(w)
        out_rows = np.repeat(n + np.arange(Q), k)[ok.reshape(-1)]
        rows = np.concatenate([base.row, out_rows])
        cols = np.concatenate([base.col, nbr[ok]])
        data = np.concatenate([base.data, np.maximum(w[ok], 1e-300)])
        graph = coo_matrix((data, (rows, cols)), shape=(n + Q, n + Q)).tocsr()
        dist, pred = dijkstra(graph, directed=True, indices=n + np.arange(Q), return_predecessors=True)
        pred = pred[:, :n].astype(np.int32)
        return np.ascontiguousarray(dist[:, :n]), np.where(pred >= n, -1, pred)


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
