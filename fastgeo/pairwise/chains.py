"""Chains of geodesics through a third code: every entry of a symmetric distance matrix checked
against ``D[i, k] + D[k, j]``, and the entries a chain beats solved again from the chain's curve.

Every entry is the length of a curve, an upper bound of the distance (but an ``under_resolved``
curve's, whose measure may fall short: such entries are checked, never legs); so is a chain of
two of them, the length of the concatenated curve. Where a chain is shorter than the entry, the solve of
``(i, j)`` ended in a longer basin than the chain's: the race missed it. Those pairs are solved
again with the chain's curve among their starts; where the chain stays shorter (a passage too
narrow for the solver's curves), the entry takes the chain's length, with the status ``chain``:
not one optimized curve, but a shorter upper bound. On every pair of 80 codes of the 2-D digits
VAE (``bench/bench_chain_check.py``), 9 of 3,160 entries were 0.04-0.9 % longer than a chain, and
all 9 solved again to shorter converged curves: 7 had been 0.04-0.93 % above the float64 dense
oracle's and are now 0.003-0.010 % below it, 2 had matched it and are now 0.45 % and 1.07 % below
(corridors the oracle misses too; on 80 two-moons codes 22 such entries, up to 3.5 %, with the
coarser latent graph of before 2026-12-04, 4-6 with today's, up to 1.3 %).

Costs ``M^3`` additions (blocked, on the metric's device; about 7 s a round at M = 1,000 on one
CPU thread), three (M, M) float64/int64 arrays while it runs, and three
geodesics per entry beaten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._progress import DELAY, call_bar
from ..curves import fit_polyline, time_grid
from ..metric import ExpectedMetric
from ..solver import SolverOptions, geodesics
from ..solver.result import CHAIN, UNDER_RESOLVED, GeodesicResult

# A chain beats an entry when it is shorter by this much, relative: twice the error allowed to a
# measured length (1e-4), as a chain through a code on the geodesic adds two. On the digits matrix
# below, 165 entries are 1e-5 longer than a chain and 15 1e-4 longer, 6 of those by 1.0-1.2e-4
# (noise: solved again, they moved by as little); the other 9, by 0.04-0.9 %, were missed basins.
TOL = 2e-4
ROUNDS = 2  # checks of the whole matrix (a chain found may shorten others)
BLOCK = 1 << 22  # entries of the (rows, ks, M) sums of the chain search
LEG_POINTS = 4  # a leg is sampled at this many times the solver's points to fit the chain's start


@dataclass
class ChainCheck:
    """What the check of a symmetric matrix against chains through a third code found.

    Attributes:
        beaten: pairs ``i < j`` a chain beat by more than :data:`TOL` (all rounds).
        solved_shorter: of those, pairs whose solve from the chain's curve found a curve at least
            as short as the chain (within :data:`TOL`): the entry is that curve's length.
        chain_entries: pairs whose entry is now a chain's length (status ``chain``).
        remaining: pairs a chain still beats after the last round (0 unless chains of chains).
        geodesics: geodesics solved by the check (legs and pairs); decoder_evals, decoder_jvps:
            their decoder work.
    """

    beaten: int = 0
    solved_shorter: int = 0
    chain_entries: int = 0
    remaining: int = 0
    geodesics: int = 0
    decoder_evals: int = 0
    decoder_jvps: int = 0

    def __str__(self) -> str:
        return (
            f"chains: {self.beaten} entries beaten by a chain through a third code, {self.solved_shorter} "
            f"solved shorter from it, {self.chain_entries} hold the chain's length, {self.remaining} left"
        )


def shortest_stop(D: Tensor, bar: Any = None) -> tuple[Tensor, Tensor]:
    """Per entry of a symmetric (M, M) matrix, ``min_k D[i, k] + D[k, j]`` and its ``k``
    (``k = i`` gives ``D[i, j]`` itself, the diagonal being zero); ``bar``: a progress bar
    updated by rows."""
    M = D.shape[0]
    best = D.clone()
    via = torch.arange(M, device=D.device)[:, None].expand(M, M).clone()
    step = max(1, int((BLOCK / max(1, M)) ** 0.5))
    for r in range(0, M, step):  # (rows, ks, M) sums of about BLOCK entries
        for q in range(0, M, step):
            s, at = (D[r : r + step, q : q + step, None] + D[None, q : q + step]).min(1)
            better = s < best[r : r + step]
            best[r : r + step] = torch.where(better, s, best[r : r + step])
            via[r : r + step] = torch.where(better, at + q, via[r : r + step])
        if bar is not None:
            bar.update(min(step, M - r))
    return best, via


def check_chains(
    metric: ExpectedMetric,
    pts: Tensor,
    matrix: Tensor,
    status: Tensor,
    iterations: Tensor,
    options: dict[str, Any],
    basis_options: SolverOptions,
    progress: bool = False,
) -> ChainCheck:
    """Check a symmetric matrix of geodesic lengths between ``pts`` (M, d) against chains
    through a third code, and repair the entries chains beat, in place: ``matrix``, ``status``
    (int8 codes) and ``iterations`` (int32: the solve from the chain's are added).
    ``options``: the keyword arguments of :func:`fastgeo.geodesics` the matrix was solved with;
    ``basis_options``: the solver's options they make (the chain's start is fitted in its basis);
    ``progress``: a bar over the rows of each check that runs longer than ``_progress.DELAY``."""
    found = ChainCheck()
    done = torch.zeros(matrix.shape, dtype=torch.bool, device=pts.device)  # solved from a chain
    for round_ in range(ROUNDS + 1):
        D = matrix.to(device=pts.device, dtype=torch.float64)
        # An under-resolved curve's length may fall short of the curve's: no upper bound, no leg.
        legs = D.masked_fill(status.to(pts.device) == UNDER_RESOLVED, torch.inf)
        with call_bar(D.shape[0], progress, "chains", "row", DELAY) as bar:
            best, via = shortest_stop(legs, bar)
        i, j = torch.triu(best < (1 - TOL) * D, diagonal=1).nonzero(as_tuple=True)
        if round_ == ROUNDS or i.numel() == 0:
            found.remaining = int(i.numel())
            break
        k = via[i, j]
        chain = legs[i, k] + legs[k, j]
        lengths, codes = chain.clone(), torch.full_like(i, CHAIN)
        its = torch.zeros_like(i)
        fresh = (~done[i, j]).nonzero(as_tuple=True)[0]
        found.beaten += fresh.numel()
        if fresh.numel():
            res, work = _solve_from_chains(metric, pts, i[fresh], k[fresh], j[fresh], options, basis_options)
            found.geodesics += work[0]
            found.decoder_evals += work[1]
            found.decoder_jvps += work[2]
            new = res.lengths.to(D)
            won = new <= (1 + TOL) * chain[fresh]  # as short as the chain: a curve's own length
            found.solved_shorter += int(won.sum())
            lengths[fresh[won]] = new[won]
            codes[fresh[won]] = res.status_code[won].to(codes)
            its[fresh] = res.iterations.to(its)
        _write(matrix, status, iterations, i, j, lengths, codes, its)
        done[i, j] = done[j, i] = True
    found.chain_entries = int(torch.triu(status == CHAIN, diagonal=1).sum())
    return found


def _write(
    matrix: Tensor, status: Tensor, iterations: Tensor, i: Tensor, j: Tensor, lengths: Tensor, codes: Tensor,
    its: Tensor,
) -> None:  # fmt: skip
    """Entries (i, j) and (j, i) set to ``lengths`` with status ``codes``; ``its`` iterations added."""
    for a, b in ((i, j), (j, i)):
        matrix[a.to(matrix.device), b.to(matrix.device)] = lengths.to(matrix)
        sa, sb = a.to(status.device), b.to(status.device)
        status[sa, sb] = codes.to(status)
        iterations[sa, sb] += its.to(iterations)


def _solve_from_chains(
    metric: ExpectedMetric,
    pts: Tensor,
    i: Tensor,
    k: Tensor,
    j: Tensor,
    options: dict[str, Any],
    opts: SolverOptions,
) -> tuple[GeodesicResult, tuple[int, int, int]]:
    """Pairs ``(i, j)`` solved again with the chain ``i -> k -> j`` of geodesics among their
    starts; the result, and the geodesics solved (the legs, each once, and the pairs) with
    their decoder evaluations and JVPs."""
    n = i.numel()
    legs = torch.cat([torch.stack([i, k], 1), torch.stack([k, j], 1)]).sort(1).values
    uniq, where = torch.unique(legs, dim=0, return_inverse=True)
    leg = geodesics(metric, pts[uniq[:, 0]], pts[uniq[:, 1]], progress=False, **options)
    first, second = where[:n], where[n:]
    points = LEG_POINTS * opts.n_points
    u = time_grid(points, pts)
    legs_pts = leg.curves.points(points)  # from the smaller index to the larger
    p1 = torch.where((uniq[first, 0] == i)[:, None, None], legs_pts[first], legs_pts[first].flip(1))
    p2 = torch.where((uniq[second, 0] == k)[:, None, None], legs_pts[second], legs_pts[second].flip(1))
    l1, l2 = leg.lengths[first].to(pts), leg.lengths[second].to(pts)
    split = (l1 / (l1 + l2).clamp(min=torch.finfo(pts.dtype).tiny))[:, None]
    arc = torch.cat([split * u, split + (1 - split) * u[1:]], 1)  # about constant metric speed
    init = fit_polyline(pts[i], pts[j], torch.cat([p1, p2[:, 1:]], 1), arc, opts.basis(u), u)
    res = geodesics(metric, pts[i], pts[j], init=init, progress=False, **options)
    work = (uniq.shape[0] + n, leg.decoder_evals + res.decoder_evals, leg.decoder_jvps + res.decoder_jvps)
    return res, work
