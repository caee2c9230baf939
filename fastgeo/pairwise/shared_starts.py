"""Starts shared across the pairs of a matrix: each pair's curve started from the chain of
code-graph geodesics between its ends (``pairwise_distances(..., shared_starts=True)``).

The code graph (:mod:`.code_graph`) joins each code to its near codes by exact geodesics, solved
once (``O(M k)`` of them). Dijkstra's path between two codes on it is a chain of geodesics: a
curve through the codes between them, that follows the data. Fitted in the solver's basis, it
starts the pair's solve, raced against the straight line alone (:data:`RACE`) instead of the
default's race of graph corridors and an explored start; pairs whose path is their own edge take
the edge's geodesic. Shorter than the default's race where the chains lie in the right basins
(the trained d >= 4 decoders measured in ``bench/RESULTS.md``, "Starts shared across the pairs
of a matrix"); in 2-D a chain bends at every code it passes and can lead the solve into a
longer basin, so there the default race stays.

Entries then depend on the other codes of the matrix (through the graph), not only on their
pair: a pair solved alone by :func:`fastgeo.geodesics` races other starts, and may end in
another basin.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..curves import fit_polyline, time_grid
from ..metric import ExpectedMetric
from .chunks import solve_chunk
from .code_graph import CodeGraph, solve_code_graph
from .pair_list import pair_solver
from .setup import solver_options_of

EDGE_POINTS = 33  # points per edge curve kept for the chains
LEG_SAMPLES = 4  # the chain is fitted on this many times the solver's points
# The chain's curve races the straight line alone: on every pair of 20 mlp16_shapes codes it won
# on 180-184 of 190 pairs, with the default's lengths; corridors and the explored start on top
# cost 1.4x for nothing there. Options given by the user win.
RACE_ALONE = False
RACE = {"refine": 2, "corridors": 0, "warm_start": False, "explore": False}


def race_options(metric: ExpectedMetric, options: dict[str, Any]) -> dict[str, Any]:
    """The solver options a chain's curve races with: :data:`RACE` in d >= 4; in d <= 3 the
    default's own race with the chain as one more start (there a chain alone is not enough)."""
    if metric.latent_dim >= 4 and RACE_ALONE:
        return RACE
    return {"refine": solver_options_of(metric, options).refine + 1}


class ChainStarts:
    """The solved code graph of ``nodes`` (M, d) and the pairs' solves from its chains."""

    def __init__(
        self, metric: ExpectedMetric, nodes: Tensor, graph: CodeGraph, options: dict[str, Any]
    ) -> None:
        if graph.points is None or graph.iterations is None:
            raise ValueError("the code graph must keep its edges' curves and iterations")
        self.metric, self.nodes, self.graph = metric, nodes, graph
        self.options = {**race_options(metric, options), **options}
        self.basis_options = solver_options_of(metric, self.options)
        self._csr = graph._csr()
        self._edge = {(int(a), int(b)): e for e, (a, b) in enumerate(graph.edges.tolist())}

    @property
    def edges(self) -> int:
        return int(self.graph.edges.shape[0])

    def paths(self, i: Tensor, j: Tensor) -> list[list[int]]:
        """Dijkstra's path on the code graph for each pair ``(i[k], j[k])``, as codes from i to j."""
        from scipy.sparse.csgraph import dijkstra

        ii, jj = i.cpu().numpy(), j.cpu().numpy()
        sources, row = np.unique(ii, return_inverse=True)
        _, pred = dijkstra(self._csr, directed=False, indices=sources, return_predecessors=True)
        paths = []
        for r, a, b in zip(row.tolist(), ii.tolist(), jj.tolist(), strict=True):
            path = [b]
            while path[-1] != a:
                path.append(int(pred[r, path[-1]]))
            paths.append(path[::-1])
        return paths

    def starts(self, i: Tensor, j: Tensor, paths: list[list[int]]) -> Tensor:
        """Coefficients (B, m, d) in the solver's basis of the chains ``paths`` between
        ``nodes[i]`` and ``nodes[j]``, the vertices at times in proportion to arc length."""
        z0, z1 = self.nodes[i], self.nodes[j]
        pts, lengths = self.graph.points, self.graph.lengths
        P = pts.shape[1]
        verts, arcs = [], []
        for path in paths:
            legs, times, s = [], [], 0.0
            for u, v in zip(path[:-1], path[1:], strict=True):
                e = self._edge[(min(u, v), max(u, v))]
                leg = pts[e] if u < v else pts[e].flip(0)
                t = torch.linspace(s, s + float(lengths[e]), P, dtype=torch.float64)
                legs.append(leg if not legs else leg[1:])
                times.append(t if not times else t[1:])
                s += float(lengths[e])
            verts.append(torch.cat(legs))
            arcs.append(torch.cat(times) / max(s, np.finfo(np.float64).tiny))
        L = max(v.shape[0] for v in verts)  # padded by repeating the end: the fit is unchanged
        vert = torch.stack([torch.cat([v, v[-1:].expand(L - v.shape[0], -1)]) for v in verts])
        arc = torch.stack([torch.cat([a, a[-1:].expand(L - a.shape[0])]) for a in arcs])
        u = time_grid(LEG_SAMPLES * self.basis_options.n_points, z0)
        vert, arc = vert.to(z0), arc.to(z0)
        return fit_polyline(z0, z1, vert, arc, self.basis_options.basis(u), u)

    def solve(self, i: Tensor, j: Tensor) -> dict[str, Any]:
        """The pairs ``nodes[i[k]] -> nodes[j[k]]`` (``i != j``): a record of
        :func:`.chunks.solve_chunk`. A pair whose path is its own edge takes the edge's geodesic;
        the others are solved from their chains."""
        paths = self.paths(i, j)
        n = len(paths)
        direct = torch.tensor([len(p) == 2 for p in paths], dtype=torch.bool)
        lengths = torch.zeros(n, dtype=self.nodes.dtype)
        status = torch.zeros(n, dtype=torch.int8)
        iterations = torch.zeros(n, dtype=torch.int32)
        if bool(direct.any()):
            k = direct.nonzero().squeeze(1)
            e = [self._edge[(min(p), max(p))] for p in (paths[q] for q in k.tolist())]
            lengths[k] = torch.as_tensor(self.graph.lengths[e]).to(lengths.dtype)
            status[k] = torch.as_tensor(self.graph.status[e]).to(torch.int8)
            iterations[k] = torch.as_tensor(self.graph.iterations[e]).to(torch.int32)
        rec = {"decoder_evals": 0, "decoder_jvps": 0}
        rest = (~direct).nonzero().squeeze(1)
        if rest.numel():
            a, b = i[rest.to(i.device)], j[rest.to(j.device)]
            init = self.starts(a, b, [paths[q] for q in rest.tolist()])
            rec = solve_chunk(self.metric, self.nodes[a], self.nodes[b], {**self.options, "init": init})
            lengths[rest] = rec["lengths"].to(lengths.dtype)
            status[rest] = rec["status"].to(torch.int8)
            iterations[rest] = rec["iterations"]
        return {**rec, "lengths": lengths, "status": status, "iterations": iterations}


def build_chain_starts(
    metric: ExpectedMetric,
    nodes: Tensor,
    options: dict[str, Any],
    neighbors: int,
    chunk_size: int,
    show: bool,
    workers: int,
) -> ChainStarts:
    """The code graph of ``nodes`` (M, d) (distinct rows) solved with ``options`` (the matrix's:
    edges are entries too, and the graph's far edges need the full race), ``neighbors`` edges per
    code (:func:`.code_graph.neighbour_edges`), its edges' curves kept, split over the processes and
    ``workers`` in chunks of ``chunk_size``; a progress bar where ``show``."""
    solve = pair_solver(metric, options, EDGE_POINTS)
    graph = solve_code_graph(nodes, neighbors, solve, chunk_size, show, workers, EDGE_POINTS)
    graph.points = graph.points.to(nodes.dtype).cpu()
    return ChainStarts(metric, nodes, graph, options)
