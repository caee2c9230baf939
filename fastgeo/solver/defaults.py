"""The methods' defaults: one table per method (:data:`DEFAULTS`, with its overrides in d >= 4)
and the constants behind the solver's other choices (tolerances, race points, explored starts,
subdivision, lagged linearizations), each with the measurement that set it (bench/RESULTS.md).

:func:`~fastgeo.solver.options.solver_options` reads them as names of :mod:`.options`: a test or
benchmark that changes one for a run sets it there (``"fastgeo.solver.options.SUBDIVISIONS"``).
"""

from __future__ import annotations

from typing import Any

import torch

METHODS = ("default", "fast", "paper", "dense")
# Methods solved by the default's algorithm (B-spline curves, starts raced, Levenberg-Marquardt);
# ``fast`` with coarser curves and a looser tolerance.
SPLINE_METHODS = ("default", "fast")
# Each level of subdivision halves every knot span (2 m - 1 functions): 8 levels ran for minutes on
# two pairs, work growing 2x a level; the default takes 1-3.
MAX_SUBDIVIDE = 6
MAX_M = 4096  # basis functions per dimension (defaults 12-49): larger systems hold no machine's memory
FAMILIES = ("bspline", "legendre", "chebyshev")
# Defaults per method: curve family, basis functions per latent axis (dense: n_points - 2
# polyline nodes), points per curve, iteration limit per phase, starts refined per curve.
# The default's curves: on 2-D VAEs with thin walls of uncertainty (the demo's model on other
# seeds) 12 control points on 48 points left curves along the data 0.3-0.7 % long; 24 on 96 points
# cost ~1.35x the time, 0.02-0.24 % there, and 8x less excess on the shipped generators.
DEFAULTS: dict[str, dict[str, Any]] = {
    "default": {"family": "bspline", "m": 24, "n_points": 96, "max_iter": 300, "refine": 5, "corridors": 3},
    "fast": {
        "family": "bspline",
        "m": 16,
        "n_points": 64,
        "max_iter": 300,
        "refine": 5,
        "corridors": 3,
        "coarse_points": 32,
    },
    "paper": {"family": "legendre", "m": 1, "n_points": 32, "max_iter": 2000, "refine": 1, "corridors": 0},
    "dense": {"family": None, "m": None, "n_points": 128, "max_iter": 300, "refine": 1, "corridors": 0},
}
# From this latent dimension on, ``default`` races the straight line, the explored start (below)
# and two of the latent graph's corridors (refine=4, corridors=2): on every pair of random training
# codes of three trained conv decoders (d = 5 and 8) and a d = 12 MLP, the first two alone missed
# the shortest basin on 0.5-4 % of the pairs (up to 6.8-7.9 % long) and the corridors found them,
# for 1.3-2x the time (none missed on MLPs with d = 16-64; bench/RESULTS.md, "Random pairs in
# d >= 4"); the graph is built once per metric, on the first call (14 s in float32 on a small d = 5
# conv decoder). ``fast`` races no corridor (2-4x faster, for a first look). Their curves start with
# 12 control points on 48 points and are subdivided (23 on 96) where that gains: against the
# shortest curves known, mean excess 0.007-0.016 % at d = 16-64 in about the time 16 control
# points on 64 took without subdivision for 0.022-0.054 % (16 on 64 with subdivision: 0.002 %, at
# 1.3-1.7x the time; bench/RESULTS.md, "Subdivision").
HIGH_DIM = 4
# Adam steps of the explored start (solver/starts.py) in d >= 4: a held-out conv decoder
# (bilinear upsampling, GroupNorm, GELU; d = 12) has several basins between some pairs, and the
# straight line alone led 2 of 16 pairs per sample into ones 1.3-7.6 % longer than the best known
# (bench/RESULTS.md, "Explored starts"); 20 steps found them all. The explored start is nearly
# always the shorter start, and alone (refine=1) it led a trained d = 12 MLP's pair into a basin
# 0.65 % long where the straight line's was right: the default races both (1.15-1.5x the time;
# with two corridors, above), ``fast`` takes the shorter alone (no extra time).
EXPLORE_ITER = 20
HIGH_DIM_DEFAULTS = {
    "refine": 4, "corridors": 2, "m": 12, "n_points": 48, "coarse_points": 24, "explore": EXPLORE_ITER
}  # fmt: skip
# ``fast``: the default's algorithm on coarser curves, stopped at a relative energy step of 1e-4,
# not subdivided (but for piecewise-linear decoders). For users who would otherwise settle for
# StochMan's accuracy (1-6 % long on average): on trained VAEs 1.6-3.1x less time than the
# default for curves ~0.01 % (2-D) and 0.01-0.2 % (d = 8-64) longer on average (bench/RESULTS.md,
# "A fast method").
FAST_HIGH_DIM_DEFAULTS = {
    "refine": 1, "corridors": 0, "m": 10, "n_points": 40, "coarse_points": 20, "explore": EXPLORE_ITER
}  # fmt: skip
FAST_TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
# A curve goes on in the finer spline (subdivide.py) where its energy is predicted to fall by more
# than this, relative (its length by about half as much; the prediction on the curve's own grid is
# 10-20 % below the one on twice the points). Trained VAEs (d = 2-32): curves predicted below it
# gained < 0.02 % when solved anyway.
SUBDIVIDE_ABOVE = 4e-4
# ``fast`` subdivides only the curves its coarse spline leaves clearly long (about 0.2 % in
# length): on a held-out decoder with PixelShuffle, InstanceNorm and Mish (d = 10) fast's curves
# were 1.5 % long on average without it, 0.5 % with it (1.5x the time); on mlp32_shapes 0.17 ->
# 0.10 % for 7 % more time (bench/RESULTS.md, "Decoders users write").
FAST_SUBDIVIDE_ABOVE = 4e-3
# Levels of subdivision: curves solved on in the finer spline that are still predicted to gain
# there are solved on in the spline with its spans halved again (every result in that basis).
SUBDIVISIONS = 2
# One more for piecewise-linear decoders (ReLU-like: their geodesics bend at every kink they
# cross): the trained d = 16 ReLU MLP's curves were 0.037-0.047 % long on average against dense
# oracles with two levels, 0.06-0.14 % on the worst pair; with three the oracles' curves are the
# longer ones (-0.05 to -0.09 %, worst <= 0.061 %) for 1.5x the time (bench/RESULTS.md,
# "A third level of subdivision for piecewise-linear decoders").
PIECEWISE_LINEAR_SUBDIVISIONS = 3
# From this latent dimension on, ``linearize="auto"`` is lagged (see levenberg_marquardt): a
# linearization pushes d tangents through the decoder, a gradient costs a forward and a backward.
LAGGED_MIN_DIM = 8
# The secant model in calls with lagged matrices: None, by the decoder (see solver_options);
# True / False forces it (for benchmarks).
LAGGED_SECANT: bool | None = None
LINEARIZE = ("auto", "always", "lagged")
POINTS_PER_CONTROL_POINT = 4
COARSE_POINTS = 48  # default points per curve of the race between starts (d >= 4: 24)
# The defaults race on two points per control point. A finer spline asked with its n_points (a
# subdivided result's m passed back, m=93 on 376 points) raced on the default's 48 points had more
# unknowns than points: free between them, it wandered (125-316 iterations from a converged curve,
# and a straight fallback under torch 2.6's rounding); it races on as many points per control point.
RACE_POINTS_PER_CONTROL_POINT = 2
MIN_COARSE_POINTS = 4  # the warm start's banded system needs two interior points
WARM_ITER = 5  # iterations of the warm start (a start only: the full energy decides the rest)
# float32: 1e-5 stopped curves in flat valleys of trained VAEs, where the energy falls by a few
# 1e-6 per step for a hundred steps before it drops again (one pair 0.76 % long at d = 12, the
# true curvature along the steps ~0); 1e-6 reaches them (0.03 %) and lowers the excess on every
# generator measured, at 5-33 % more time. Such curves need up to ~160 iterations: hence 300.
DEFAULT_TOL = {torch.float64: 1e-10, torch.float32: 1e-6}
