"""Piecewise-linear decoders, smoothed first.

A decoder mean with ReLU-like activations is piecewise linear: the discrete energy of a curve
has kinks wherever a unit switches along it, and Levenberg-Marquardt from the straight line (or
the warm start) stops in one of them, short of the shortest curve (a trained d = 16 ReLU MLP:
0.4-0.6 % longer than the dense oracle on average, 4 % on single pairs). In d >= 4 the curves are first
optimized under the same decoder with its kinks rounded (:meth:`ExpectedMetric.smoothed`),
the rounding sharpened stage by stage, each stage started from the last one's curves (no
resolution check: only the true decoder's curves are measured); the last stage's curves then
race as one more start of the solve under the true decoder, in their basis, against the best of
that solve's own starts (``TRUE_REFINE`` racers: the rounding can lead a curve into another
basin than the true decoder's own start finds).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from .._progress import phase
from ..metric import ExpectedMetric
from .defaults import HIGH_DIM, POINTS_PER_CONTROL_POINT, SPLINE_METHODS
from .graph import LatentGraph
from .options import SolverOptions, coarse_points_for
from .result import GeodesicResult

# Off: the true decoder alone (for benchmarks).
SMOOTH_FIRST = True
# The sharpness of each stage (beta times the RMS of the pre-activations, as
# fastgeo.decoders.smoothing.SHARPNESS). One stage of 20: on a trained ReLU MLP (d = 16) and a
# LeakyReLU conv decoder (d = 8) 40 and 80 were as accurate on average, each with other pairs
# missed; two stages (20, then 200) were the most accurate on the MLP at 2.6x the time of one.
STAGES: tuple[float, ...] = (20.0,)
# The smoothed stages subdivide curves that gain, once (where the call subdivides; the true solve
# then starts in the finer basis, with one level of subdivision fewer).
SUBDIVIDE = True
# From this latent dimension on (where the default's curves have 12 control points). A 2-D
# ReLU MLP (mlp2_relu_glyphs, 48 pairs) was already within 0.010 % / 0.146 % of the dense oracle
# without it (graph corridors, five starts raced, 24 control points) and 0.005 % / 0.176 % with it,
# at 2.1x the time.
MIN_DIM = HIGH_DIM
# Starts raced under the true decoder after the smoothed stages (where the call leaves ``refine``
# to the method): the smoothed curves and the best of the true decoder's own starts (the smoothed
# stage has raced the method's starts, the graph's corridors included). LeakyReLU
# conv decoder (d = 8, 48 pairs): worst pair 0.522 -> 0.426 % over the best curve known, mean
# 0.028 -> 0.023 %, +10 % time; ReLU MLP (d = 16, 96 pairs): the same curves, +6 % time.
TRUE_REFINE = 2


def smoothed_first(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    graph: LatentGraph | None,
    solve: Callable[..., GeodesicResult],
) -> GeodesicResult | None:
    """The curves of ``solve`` (:func:`fastgeo.geodesics`) under the smoothed decoder, stage by
    stage, with the options of ``opts`` (the true decoder's call) in its basis or the subdivided
    one; ``graph``: the true decoder's graph, whose paths start the first stage too. None where
    the decoder is not piecewise linear, in d < MIN_DIM, or for methods other than ``default`` and
    ``fast``."""
    if not SMOOTH_FIRST or not STAGES or opts.method not in SPLINE_METHODS or metric.latent_dim < MIN_DIM:
        return None
    if not metric.piecewise_linear_mean:
        return None
    res = None
    for stage, sharpness in enumerate(STAGES, 1):
        smooth = metric.smoothed(sharpness)
        if smooth is None:
            return None
        m = opts.m if res is None else res.curves.basis.m
        n = opts.n_points if res is None else POINTS_PER_CONTROL_POINT * (m + 1)
        with phase(f"smoothed decoder {stage}/{len(STAGES)}"):
            res = _solve_stage(solve, smooth, z0, z1, opts, graph, res, m, n)
    return res


def _solve_stage(
    solve: Callable[..., GeodesicResult],
    smooth: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    graph: LatentGraph | None,
    res: GeodesicResult | None,
    m: int,
    n: int,
) -> GeodesicResult:
    """One stage of :func:`smoothed_first`: from the graph's starts (the first) or the stage
    before's curves, at ``m`` control points on ``n`` points."""
    return solve(
            smooth, z0, z1, method=opts.method, m=m, n_points=n, family=opts.family,
            warm_start=opts.warm_iter if res is None else False,
            explore=opts.explore_iter if res is None else False, max_iter=opts.max_iter, tol=opts.tol,
            batch_size=opts.batch_size, graph=False if graph is None or res is not None else graph,
            refine=opts.refine, corridors=opts.corridors if graph and res is None else 0,
            coarse_points=coarse_points_for(opts.coarse_points, n, opts.n_points), check_resolution=False,
            linearize="lagged" if opts.lagged else "always",
            subdivide=min(1, opts.subdivide) if SUBDIVIDE else 0,
            progress=False,  # the true decoder's call has the bar
            init=None if res is None else res.curves.coeffs,
        )  # fmt: skip
