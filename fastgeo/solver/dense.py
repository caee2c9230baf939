"""The accuracy oracle (``method="dense"``): free polylines minimized to convergence from
several starts, keeping the shortest per pair; starts that coincide are polished once (on trained
VAEs with d = 2-12, 50 of 240 starts were distinct: the oracle 2-4x faster, the same lengths).
The starts of a float64 oracle are solved in float32 (see :func:`explorer`); on the CPU its
polylines push a convolutional decoder's tangents in float32, as every float64 solve does
(``solver_options``)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._progress import phase
from ..curves import straight_line, time_grid
from ..metric import ExpectedMetric
from .defaults import WARM_ITER
from .graph import LatentGraph
from .graph_cache import cached_graph
from .options import SolverOptions
from .result import GeodesicResult

# Starts of one pair this close (fraction of its chord, at every node) are polished once. Float32
# starts stop at a relative energy step of 1e-6, which in a flat valley leaves a curve ~1e-3 from
# its optimum: a trained d = 5 conv decoder's starts of one basin (each polished to the same length
# to 1e-10) lay up to 3e-3 chords apart, against 1e-5 in float64. 5e-3 is under half a segment
# of the oracle's 128-node polylines.
SAME_START = 1e-4
SAME_START_FLOAT32 = 5e-3
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


# A float64 metric's float32 copy (None: none that works) and the probe it was made at (a decoder
# trained in place since gets a new copy, as the graph caches do).
_EXPLORERS: weakref.WeakKeyDictionary[ExpectedMetric, tuple[Tensor, ExpectedMetric | None]]
_EXPLORERS = weakref.WeakKeyDictionary()
# The float32 copy's probe must match the metric's this closely (relative to its largest entry).
SAME_PROBE = 1e-4


def explorer(metric: ExpectedMetric, graph: Any) -> ExpectedMetric:
    """The metric the oracle's starts are solved in: a float32 copy of a float64 metric (kept for
    later calls), else the metric itself (a given :class:`LatentGraph` is the metric's own; a mean
    that :meth:`~fastgeo.ExpectedMetric.to` cannot convert, or whose copy fails or disagrees on the
    metric's probe points, e.g. a module that casts its input to float64, stays). The starts only
    choose the basins, each polished in the metric's own dtype, and float32 is several times
    faster: CPU convolutions have no float64 oneDNN kernels (a trained d = 12 conv decoder: 5.2x)."""
    if metric.dtype != torch.float64 or isinstance(graph, LatentGraph):
        return metric
    probe = metric.probe(4)
    kept = _EXPLORERS.get(metric)
    if kept is None or not torch.equal(kept[0], probe):
        kept = (probe, _float32_copy(metric, probe))
        _EXPLORERS[metric] = kept
    return metric if kept[1] is None else kept[1]


def _float32_copy(metric: ExpectedMetric, probe: Tensor) -> ExpectedMetric | None:
    """A float32 copy of ``metric`` that agrees with it at its probe points, or None."""
    try:
        copy = metric.to(torch.float32)
        again = copy.probe(4)
    except (TypeError, RuntimeError, ValueError):  # a plain callable, or a mean that is float64 alone
        return None
    gap = (again.double() - probe).abs().max() if again.shape == probe.shape else torch.inf
    return copy if bool(gap <= SAME_PROBE * probe.abs().max()) else None


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
    inits = []
    evals = jvps = 0
    seen = set()
    draws = []
    starts = explorer(metric, graph)
    e0, e1 = z0.to(starts.dtype), z1.to(starts.dtype)
    # Starts are deviations from their own chord: ends rounded to float32 move no start.
    straight = straight_line(e0, e1, time_grid(n, e0))
    if latents is not None:
        latents = latents.to(starts.dtype)
    if graph is True and z0.shape[-1] > 3 and z0.shape[0] > 0:
        draws = [{"graph": cached_graph(starts, latents, s)[0]} for s in range(1, GRAPH_DRAWS)]
    explorations = (*exploring_starts(n), *draws)
    for at, explore in enumerate(explorations):
        options = {"graph": graph} | explore
        key = tuple(sorted((k, v if isinstance(v, (bool, int)) else id(v)) for k, v in options.items()))
        if key in seen:  # e.g. graph=False given: the default's own curve is the graph-free one
            continue
        seen.add(key)
        with phase(f"oracle starts {at + 1}/{len(explorations)} ({starts.dtype})".replace("torch.", "")):
            r = solve(
                starts,
                e0,
                e1,
                method="default",
                batch_size=opts.batch_size,
                latents=None if options["graph"] is False else latents,
                progress=False,
                **options,
            )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        inits.append((r.points(n) - straight)[:, 1:-1].to(z0.dtype))
    stacked = torch.stack(inits)  # (S, B, n - 2, d)
    same = SAME_START_FLOAT32 if starts.dtype == torch.float32 else SAME_START
    start, pair = distinct_inits(stacked, (z1 - z0).norm(dim=-1), same)
    # Every distinct start of every pair in one call (a curve's result does not depend on its batch).
    with phase(f"oracle polylines: {len(pair)} of {n} nodes ({metric.dtype})".replace("torch.", "")):
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


def distinct_inits(inits: Tensor, chord: Tensor, same: float = SAME_START) -> tuple[Tensor, Tensor]:
    """The starts worth polishing: of the (S, B, n, d) starts of B pairs, those whose polyline is
    more than ``same`` chords (at some node) from every earlier start of its pair; starts that
    close end in the same optimum, and each costs a full dense solve. Returns the start and pair
    index of each (R,), pairs in order, every pair with at least its first start."""
    S, B = inits.shape[:2]
    keep = torch.zeros(S, B, dtype=torch.bool, device=inits.device)
    keep[0] = True
    for s in range(1, S):
        gap = (inits[:s] - inits[s]).norm(dim=-1).amax(-1)  # (s, B)
        near = (gap <= same * chord) & keep[:s]
        keep[s] = ~near.any(0)
    pair, start = keep.T.nonzero(as_tuple=True)
    return start, pair
