"""The accuracy oracle (``method="dense"``): free polylines minimized to convergence from
several starts, keeping the shortest per pair; starts that coincide are polished once (on trained
VAEs with d = 2-12, 50 of 240 starts were distinct: the oracle 2-4x faster, the same lengths)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..curves import straight_line, time_grid
from ..metric import ExpectedMetric
from .graph import cached_graph
from .options import WARM_ITER, SolverOptions
from .result import GeodesicResult

# Starts of one pair this close (fraction of its chord, at every node) are polished once.
SAME_START = 1e-4
# Draws of the latent graph whose curves start the oracle (seeds 0 .. GRAPH_DRAWS - 1) in d >= 4,
# where its nodes are random samples around the RBF centers: which corridors a draw offers decides
# the basin on a rugged decoder (a trained d = 12 MLP: 3 of 4 draws put a pair 0.68 % long, and the
# oracle started from one draw's curves with it; bench/RESULTS.md, "Other draws of the latent
# graph"). In d <= 3 the graph's regular grid gives every draw the same corridors.
GRAPH_DRAWS = 4


def exploring_starts(n_points: int) -> tuple[dict[str, Any], ...]:
    """Options of the default solver whose curves start the oracle: the default's own curve, and
    curves from each start alone, with longer warm starts and every start raced at ``n_points``
    (the oracle explores more basins than the default)."""
    return (
        {},
        {"graph": False},
        {"graph": False, "warm_start": False},
        {"graph": False, "warm_start": 4 * WARM_ITER},
        {"refine": 4, "coarse_points": n_points, "warm_start": 4 * WARM_ITER},
    )


def dense_multistart(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    graph: Any,
    latents: Tensor | None,
    solve: Callable[..., GeodesicResult],
) -> GeodesicResult:
    """Polylines of ``opts.n_points`` nodes from the curves of every exploring start of the
    default solver (``solve`` is :func:`fastgeo.geodesics`) and, with ``graph=True`` in d >= 4,
    of the default with other draws of the latent graph; the shortest per pair."""
    n = opts.n_points
    straight = straight_line(z0, z1, time_grid(n, z0))
    inits = []
    evals = jvps = 0
    seen = set()
    draws = []
    if graph is True and z0.shape[-1] > 3 and z0.shape[0] > 0:
        draws = [{"graph": cached_graph(metric, latents, s)[0]} for s in range(1, GRAPH_DRAWS)]
    for explore in (*exploring_starts(n), *draws):
        options = {"graph": graph} | explore
        key = tuple(sorted((k, v if isinstance(v, (bool, int)) else id(v)) for k, v in options.items()))
        if key in seen:  # e.g. graph=False given: the default's own curve is the graph-free one
            continue
        seen.add(key)
        r = solve(
            metric,
            z0,
            z1,
            method="default",
            batch_size=opts.batch_size,
            latents=None if options["graph"] is False else latents,
            progress=False,
            **options,
        )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        inits.append((r.points(n) - straight)[:, 1:-1])
    stacked = torch.stack(inits)  # (S, B, n - 2, d)
    start, pair = distinct_inits(stacked, (z1 - z0).norm(dim=-1))
    # Every distinct start of every pair in one call (a curve's result does not depend on its batch).
    r = solve(
        metric,
        z0[pair],
        z1[pair],
        method="dense",
        n_points=n,
        max_iter=opts.max_iter,
        tol=opts.tol,
        batch_size=opts.batch_size,
        init=stacked[start, pair],
        check_resolution=opts.check_resolution,
        progress=False,
    )
    # The shortest per pair (ties: the earlier start, as the starts are ordered).
    key = torch.where(torch.isnan(r.lengths), torch.inf, r.lengths)
    order = torch.argsort(key, stable=True)
    order = order[torch.argsort(pair[order], stable=True)]
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = pair[order[1:]] != pair[order[:-1]]
    best = r.select(order[first])
    best.decoder_evals, best.decoder_jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
    return best


def distinct_inits(inits: Tensor, chord: Tensor) -> tuple[Tensor, Tensor]:
    """The starts worth polishing: of the (S, B, n, d) starts of B pairs, those whose polyline is
    more than SAME_START chords (at some node) from every earlier start of its pair; starts that
    close end in the same optimum, and each costs a full dense solve. Returns the start and pair
    index of each (R,), pairs in order, every pair with at least its first start."""
    S, B = inits.shape[:2]
    keep = torch.zeros(S, B, dtype=torch.bool, device=inits.device)
    keep[0] = True
    for s in range(1, S):
        gap = (inits[:s] - inits[s]).norm(dim=-1).amax(-1)  # (s, B)
        near = (gap <= SAME_START * chord) & keep[:s]
        keep[s] = ~near.any(0)
    pair, start = keep.T.nonzero(as_tuple=True)
    return start, pair
