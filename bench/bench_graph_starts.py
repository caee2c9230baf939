"""Starts shared across the pairs of a matrix (issue 18): every pair of M random codes solved by
the default, and again from the chain of code-graph geodesics between its ends (the graph mode's
edges, Dijkstra's path, the edges' curves joined and fitted in the solver's basis), racing it with
the starts the options name. Prints the CPU time of both (the edges' included), LM iterations,
decoder JVPs, and the lengths against the default's::

    OMP_NUM_THREADS=1 python bench/bench_graph_starts.py --generator digits --m 40 --seed 0
    OMP_NUM_THREADS=1 python bench/bench_graph_starts.py --generator digits --m 40 --seed 0 \\
        --options '{"refine": 4, "corridors": 1, "warm_start": true}'

``--options``: ``geodesics`` options (JSON) over this script's own (the chain's curve raced with
the straight line alone: ``refine=2, corridors=0``, no warm or explored start). ``--own``: start
every pair from the default's own curve instead (an upper bound of what a start in the right
basin saves).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from bench_random_pairs import codes_parser, random_codes
from scipy.sparse.csgraph import dijkstra
from workloads import environment_line, generator

import fastgeo
from fastgeo.curves import fit_polyline, time_grid
from fastgeo.pairwise.code_graph import CodeGraph, neighbour_edges
from fastgeo.pairwise.graph_mode import EDGE_OPTIONS
from fastgeo.solver import solver_options

EDGE_POINTS = 33  # points per edge curve in the joined chains
OWN = {"refine": 2, "corridors": 0, "warm_start": False, "explore": False}


def chain_polylines(
    i: list[int],
    j: list[int],
    pred: np.ndarray,
    edges: torch.Tensor,
    points: torch.Tensor,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair the chain of edge curves along Dijkstra's path: vertices (B, L, d) and their
    times (B, L) by arc length (padded by repeating the last)."""
    index = {(a, b): e for e, (a, b) in enumerate(edges.tolist())}
    chains = []
    for a, b in zip(i, j, strict=True):
        path = [b]
        while path[-1] != a:
            path.append(int(pred[a, path[-1]]))
        path = path[::-1]
        pts, arc, s = [], [], 0.0
        for u, v in zip(path[:-1], path[1:], strict=True):
            e = index[(min(u, v), max(u, v))]
            p = points[e] if u < v else points[e].flip(0)
            t = torch.linspace(s, s + float(lengths[e]), points.shape[1], dtype=torch.float64)
            if pts:
                p, t = p[1:], t[1:]
            pts.append(p)
            arc.append(t)
            s += float(lengths[e])
        chains.append((torch.cat(pts), torch.cat(arc) / s))
    L = max(p.shape[0] for p, _ in chains)
    verts = torch.stack([torch.cat([p, p[-1:].expand(L - p.shape[0], -1)]) for p, _ in chains])
    times = torch.stack([torch.cat([a, a[-1:].expand(L - a.shape[0])]) for _, a in chains])
    return verts, times


def main() -> None:
    p = codes_parser(__doc__, 40)
    p.add_argument("--options", default="{}", help="geodesics options of the shared solve (JSON)")
    p.add_argument("--own", action="store_true", help="start from the default's own curves instead")
    args = p.parse_args()
    name, M, seed = args.generator, args.m, args.seed
    kw = {**OWN, **json.loads(args.options)}
    metric = generator(name)[0]
    Z = random_codes(name, M, seed)
    i, j = torch.triu_indices(M, M, 1)
    fastgeo.geodesics(metric, Z[:2], Z[2:4], progress=False)  # the latent graph, built once
    t = time.process_time()
    r0 = fastgeo.geodesics(metric, Z[i], Z[j], progress=False)
    t_default = time.process_time() - t

    t = time.process_time()
    E = neighbour_edges(Z)
    edges = fastgeo.geodesics(metric, Z[E[:, 0]], Z[E[:, 1]], progress=False, **EDGE_OPTIONS)
    graph = CodeGraph(M, E.numpy(), edges.lengths.double().numpy(), edges.status_code.numpy())
    _, pred = dijkstra(graph._csr(), directed=False, return_predecessors=True)
    verts, times = chain_polylines(
        i.tolist(), j.tolist(), pred, E, edges.curves.points(EDGE_POINTS), edges.lengths
    )
    opts = solver_options(metric.dtype, metric.latent_dim, metric.data_dim)
    u = time_grid(4 * opts.n_points, Z)
    if args.own:  # the default's curves, at about constant speed already
        verts, times = r0.curves.points(u.numel()), u.expand(len(i), -1)
    init = fit_polyline(Z[i], Z[j], verts, times.to(Z.dtype), opts.basis(u), u)
    t_starts = 0.0 if args.own else time.process_time() - t
    t = time.process_time()
    r1 = fastgeo.geodesics(metric, Z[i], Z[j], init=init, progress=False, **kw)
    t_pairs = time.process_time() - t

    rel = r1.lengths.double() / r0.lengths.double() - 1
    edge_jvps = 0 if args.own else edges.decoder_jvps
    shared = t_starts + t_pairs
    it0, it1 = float(r0.iterations.float().mean()), float(r1.iterations.float().mean())
    names, counts = np.unique(r1.init, return_counts=True)
    print(f"{environment_line()}, {metric.dtype}, CPU time (time.process_time)")
    print(f"{name}, M = {M} (seed {seed}), {len(i)} pairs, {E.shape[0]} edges, options {kw}")
    print(
        f"  CPU s: default {t_default:.1f}; shared {shared:.1f} (edges and chains {t_starts:.1f}, "
        f"pairs {t_pairs:.1f}): {t_default / shared:.2f}x; LM iterations per pair {it0:.1f} vs {it1:.1f}; "
        f"decoder JVPs {r0.decoder_jvps:.3g} vs {r1.decoder_jvps + edge_jvps:.3g}"
    )
    print(
        f"  shared / default - 1: mean {100 * rel.mean():+.4f} %, max {100 * rel.max():+.3f} %, min "
        f"{100 * rel.min():+.3f} %; pairs > +0.1 %: {int((rel > 1e-3).sum())}, < -0.1 %: "
        f"{int((rel < -1e-3).sum())}; winning starts (INIT_NAMES codes) {names.tolist()} x {counts.tolist()}"
    )


if __name__ == "__main__":
    main()
