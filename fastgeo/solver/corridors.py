"""Starts from the latent graph through different corridors (:class:`.graph.LatentGraph`).

The shortest graph path between two codes is not always in the basin of the shortest geodesic:
graph paths zig-zag between nodes, more in some corridors than in others, so two corridors whose
geodesics differ by a few percent can swap ranks on the graph. So the solver races several
corridors: the shortest path, then the shortest path through a node farther than ``apart``
chords from every path found so far (a via-node path, within ``1 + slack`` of the shortest), and
so on. With the distances from both ends to every node (a row of Dijkstra from each end, kept
by the graph), each via-node path costs a walk along predecessors.

Each path is resampled at the curve's times by arc length and fitted by least squares in the
curve basis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..curves import fit_polyline
from .graph import LatentGraph

APART = 0.2  # a corridor's via node is this many chords away from every earlier path
SLACK = 0.5  # ... and its path at most this much longer than the shortest (graph lengths)
BLOCK = 128  # pairs per block: the (pairs, nodes) distance arrays stay small


@dataclass
class GraphPaths:
    """One path per pair through the graph: ``nodes`` (B, L) indices into the graph's nodes
    followed by the attached end points ``ends`` (index ``n + e``), from the source to the target
    (padded by repeating); ``arc`` (B, L) metric arc length from the source; ``exists`` (B,)."""

    nodes: np.ndarray
    arc: np.ndarray
    exists: np.ndarray
    ends: Tensor


def corridor_starts(
    graph: LatentGraph, z0: Tensor, z1: Tensor, psi: Tensor, t: Tensor, count: int
) -> tuple[list[Tensor], int]:
    """Up to ``count`` sets of coefficients (B, m, d) fitted to graph paths through different
    corridors (a pair with fewer corridors repeats its last one), and the decoder evaluations
    spent attaching the end points to the graph."""
    paths, evals = graph_paths(graph, z0, z1, count)
    return [fit_path(graph, p, z0, z1, psi, t) for p in paths], evals


def graph_paths(graph: LatentGraph, z0: Tensor, z1: Tensor, count: int) -> tuple[list[GraphPaths], int]:
    """``count`` paths per pair through different corridors (see the module docstring), and the
    decoder evaluations spent attaching the end points to the graph (those seen before cost
    none)."""
    B, d = z0.shape
    ends, inverse = torch.unique(torch.cat([z0, z1]), dim=0, return_inverse=True)
    if B == 0:
        empty = np.zeros((0, 2), dtype=np.int64)
        return [GraphPaths(empty, empty.astype(float), np.zeros(0, dtype=bool), ends)] * count, 0
    inverse = inverse.cpu().numpy()
    blocks, evals = [], 0
    for lo in range(0, B, BLOCK):  # the rows of one block's end points at a time
        src, dst = inverse[:B][lo : lo + BLOCK], inverse[B:][lo : lo + BLOCK]
        local, at = np.unique(np.concatenate([src, dst]), return_inverse=True)
        dist, pred, spent = graph.end_rows(ends[torch.as_tensor(local, device=ends.device)])
        evals += spent
        rows = (dist[at[: len(src)]], dist[at[len(src) :]], pred[at[: len(src)]], pred[at[len(src) :]])
        blocks.append(_via_paths(graph, *rows, src, dst, (z1 - z0)[lo : lo + BLOCK], ends, count))
    return [_concat([blk[i] for blk in blocks], ends) for i in range(count)], evals


def _concat(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], ends: Tensor) -> GraphPaths:
    L = max(p.shape[1] for p, _, _ in parts)

    def pad(x: np.ndarray) -> np.ndarray:  # repeat the last entry (the target)
        return np.concatenate([x, np.repeat(x[:, -1:], L - x.shape[1], 1)], 1)

    return GraphPaths(
        np.concatenate([pad(p) for p, _, _ in parts]),
        np.concatenate([pad(a) for _, a, _ in parts]),
        np.concatenate([e for _, _, e in parts]),
        ends,
    )


def _via_paths(
    graph: LatentGraph,
    d_s: np.ndarray,
    d_t: np.ndarray,
    p_s: np.ndarray,
    p_t: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    chord: Tensor,
    ends: Tensor,
    count: int,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """For each pair (src[b], dst[b]) (indices of end points, whose shortest-path distances and
    predecessors to every node are d_s, p_s and d_t, p_t, (B, n) each), ``count`` paths (B, L) of
    indices into nodes + ends, their arc lengths (B, L) and whether they exist (B,)."""
    n, B = graph.nodes.shape[0], len(src)
    total = d_s + d_t  # (B, n): the shortest path through each node
    best = total.min(1)
    allowed = np.isfinite(total) & (total <= (1 + SLACK) * best[:, None])
    radius = (APART * chord.norm(dim=-1)).to(graph.nodes)[:, None]
    all_points = torch.cat([graph.nodes, ends.to(graph.nodes)])
    b = np.arange(B)
    found = []
    for _ in range(count):
        masked = np.where(allowed, total, np.inf)
        via = masked.argmin(1)
        ok = np.isfinite(masked[b, via]) & (src != dst)
        if found and not ok.all():  # no corridor left for some pairs: repeat their last one
            via = np.where(ok, via, found[-1][3])
        first = _walk_back(p_s, via)  # (B, L1): entry ... via
        second = _walk_back(p_t, via)[:, ::-1]  # via ... exit
        path = np.concatenate([(src + n)[:, None], first, second[:, 1:], (dst + n)[:, None]], 1)
        through = total[b, via][:, None]
        with np.errstate(invalid="ignore"):  # inf - inf where no corridor exists (not used then)
            second_arc = through - d_t[b[:, None], second[:, 1:]]
        arc = np.concatenate([np.zeros((B, 1)), d_s[b[:, None], first], second_arc, through], 1)
        exists = np.isfinite(through[:, 0]) & (src != dst)
        found.append((path, arc, exists, via))
        # Nodes near this path cannot be the via node of a later corridor.
        if len(found) < count:
            pts = all_points[
                torch.as_tensor(np.ascontiguousarray(path), device=all_points.device)
            ]  # (B, L, d)
            allowed &= ~_near_path(pts, graph.nodes, allowed, radius)
    return [(p, a, e) for p, a, e, _ in found]


def _near_path(pts: Tensor, nodes: Tensor, allowed: np.ndarray, radius: Tensor) -> np.ndarray:
    """(B, n) bool: the nodes still ``allowed`` (B, n) that lie within ``radius`` (B, 1) of a
    point of their pair's path ``pts`` (B, L, d). Only allowed nodes can be a later via node, and
    they are a tenth of the graph or less (digits: 8 %), so the others are not measured, pair by
    pair (6x less time than all nodes at once, 3x less than every pair's padded to the most any
    has). On the host, as the rest of the corridor search: one copy from a GPU, not one a pair."""
    pts, nodes, radius = pts.cpu(), nodes.cpu(), radius.cpu()
    near = np.zeros_like(allowed)
    for b in range(pts.shape[0]):
        cand = np.flatnonzero(allowed[b])
        if cand.size:
            dist = torch.cdist(pts[b], nodes[torch.as_tensor(cand, device=nodes.device)]).amin(0)
            near[b, cand[(dist <= radius[b]).numpy()]] = True
    return near


def _walk_back(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Node paths (B, L) from the root of each predecessor row ``pred[b]`` (B, n) to
    ``target[b]``; finished walks repeat their root, so every path has at least two entries."""
    walk = [target]
    cur = target.copy()
    row = np.arange(pred.shape[0])
    for _ in range(pred.shape[1]):
        prev = pred[row, cur]
        done = prev < 0
        if done.all():
            break
        cur = np.where(done, cur, prev)
        walk.append(cur)
    walk.append(walk[-1])
    return np.stack(walk[::-1], 1)


def fit_path(graph: LatentGraph, paths: GraphPaths, z0: Tensor, z1: Tensor, psi: Tensor, t: Tensor) -> Tensor:
    """Coefficients (B, m, d) of the curves that best fit the paths, resampled at the times t by
    metric arc length (about constant speed); zero (the straight line) where no path exists."""
    B, d = z0.shape
    if B == 0:
        return z0.new_zeros(0, psi.shape[1], d)
    all_points = torch.cat([graph.nodes, paths.ends]).to(z0)
    pts = all_points[torch.as_tensor(np.ascontiguousarray(paths.nodes), device=z0.device)]  # (B, L, d)
    arc = torch.as_tensor(np.ascontiguousarray(paths.arc), dtype=z0.dtype, device=z0.device)
    arc = torch.cummax(torch.where(torch.isfinite(arc), arc, torch.zeros_like(arc)), 1).values
    arc = arc / arc[:, -1:].clamp(min=torch.finfo(z0.dtype).tiny)
    coeffs = fit_polyline(z0, z1, pts, arc, psi, t)
    exists = torch.as_tensor(paths.exists, device=z0.device)
    return torch.where(exists[:, None, None], coeffs, torch.zeros_like(coeffs))
