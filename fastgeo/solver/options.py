"""The solver's options: a call's options validated and filled in from its method's defaults
(:mod:`.defaults`) into :class:`SolverOptions`, and the one memory model that sizes the solver's
batches and :func:`fastgeo.pairwise_distances`' chunks."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from .. import _checks
from ..curves import Basis, BSplineBasis, PiecewiseLinearBasis, PolynomialBasis
from ..decoders.low_precision import bfloat16_is_fast
from .defaults import (  # solver_options reads these as names of this module (see .defaults)
    COARSE_POINTS,
    DEFAULT_TOL,
    DEFAULTS,
    EXPLORE_ITER,
    FAMILIES,
    FAST_HIGH_DIM_DEFAULTS,
    FAST_SUBDIVIDE_ABOVE,
    FAST_TOL,
    HIGH_DIM,
    HIGH_DIM_DEFAULTS,
    LAGGED_MIN_DIM,
    LAGGED_SECANT,
    LINEARIZE,
    MAX_M,
    MAX_SUBDIVIDE,
    METHODS,
    MIN_COARSE_POINTS,
    PIECEWISE_LINEAR_SUBDIVISIONS,
    POINTS_PER_CONTROL_POINT,
    RACE_POINTS_PER_CONTROL_POINT,
    SPLINE_METHODS,
    SUBDIVIDE_ABOVE,
    SUBDIVISIONS,
    WARM_ITER,
)

BATCH_BUDGET = 1 << 30  # bytes of working memory per batch of curves, by default


@dataclass(frozen=True)
class SolverOptions:
    """Validated options of one :func:`fastgeo.geodesics` call (see its docstring)."""

    method: str
    basis: Basis
    n_points: int
    family: str
    warm_iter: int  # 0: no warm start
    max_iter: int
    tol: float
    batch_size: int
    refine: int
    corridors: int
    coarse_points: int
    check_resolution: bool
    lagged: bool  # Levenberg-Marquardt with lagged Gauss-Newton matrices
    secant: bool = True  # ... with the secant model of the curvature Gauss-Newton leaves out
    subdivide: int = 0  # times the knot spans are halved where a finer spline would gain (subdivide.py)
    subdivide_above: float = SUBDIVIDE_ABOVE  # ... where it predicts this relative energy gain
    explore_iter: int = 0  # Adam steps of the explored start (starts.py); 0: none
    tangent_dtype: torch.dtype | None = None  # lagged linearizations' tangents (decoders/low_precision.py)
    fresh_tangent_dtype: torch.dtype | None = None  # every other linearization's (None: the metric's dtype)

    @property
    def m(self) -> int:
        return self.basis.m

    def summary(self) -> dict[str, Any]:
        """The options a result records."""
        return {
            "method": self.method,
            "basis": repr(self.basis),
            "n_points": self.n_points,
            "tol": self.tol,
            "max_iter": self.max_iter,
            "warm_start": self.warm_iter,
            "explore": self.explore_iter,
            "lagged": self.lagged,
            "secant": self.secant,
            "subdivide": self.subdivide,
            "subdivide_above": self.subdivide_above,
            "tangents": _dtype_name(self.tangent_dtype),
            "fresh tangents": _dtype_name(self.fresh_tangent_dtype),
        }


def _dtype_name(dtype: torch.dtype | None) -> str:
    """A dtype tangents are pushed in, as a result records it ("exact": the metric's own)."""
    return str(dtype).removeprefix("torch.") if dtype else "exact"


def working_memory_per_curve(d: int, D: int, n_points: int, p: int, element_size: int) -> int:
    """Bytes of solver working memory per curve: the features and their d Jacobian columns at
    every point (embedding of width 2D), the Gauss-Newton matrix and its copies (p unknowns).

    x10 on the Jacobians: decoder activations, forward-mode temporaries, several starts per curve
    (measured: ~0.85 MB per curve for d = 2, D = 64, 32 points, float32, default solver).
    """
    jacobians = n_points * 2 * D * (d + 3) * element_size
    system = 4 * p * p * element_size
    return 10 * jacobians + system


def _default_m(table: dict[str, Any], n_points: int, least: int) -> int:
    """The default basis size: the table's, but no more than a quarter of the points (the
    defaults' ratio), so that fewer points by choice get a curve they can determine."""
    return max(least, min(table["m"], n_points // POINTS_PER_CONTROL_POINT))


def solver_options(
    dtype: torch.dtype,
    latent_dim: int,
    data_dim: int,
    *,
    method: str = "default",
    m: int | None = None,
    n_points: int | None = None,
    family: str | None = None,
    warm_start: bool | int = True,
    explore: bool | int | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    batch_size: int | None = None,
    refine: int | None = None,
    corridors: int | None = None,
    coarse_points: int | None = None,
    check_resolution: bool = True,
    linearize: str = "auto",
    subdivide: bool | int | None = None,
    piecewise_linear: bool = False,
    convolutional: bool = False,
    device: torch.device | str | None = None,
) -> SolverOptions:
    """Validate the options of a call with curves in ``latent_dim`` dimensions under a metric of
    ``data_dim`` outputs and ``dtype``; fill in the defaults of ``method``. ``piecewise_linear``:
    the decoder mean has piecewise-linear activations (:func:`fastgeo.decoders.piecewise_linear`);
    ``convolutional``: it is a recognized chain with convolutions (float64 solves on the CPU push
    its tangents in float32); ``device``: the metric's (where bfloat16 is fast, lagged
    linearizations push their tangents in it: :mod:`fastgeo.decoders.low_precision`)."""
    method = _checks.choice("method", method, METHODS)
    if method == "dense":
        spline_options = family, warm_start, explore, refine, corridors, coarse_points, linearize, subdivide
        _refuse_spline_options(*spline_options)
    table = DEFAULTS[method]
    if method in SPLINE_METHODS and latent_dim >= HIGH_DIM:
        table = {**table, **(HIGH_DIM_DEFAULTS if method == "default" else FAST_HIGH_DIM_DEFAULTS)}
    family = _checks.choice("family", (table["family"] or "legendre") if family is None else family, FAMILIES)
    # The fewest points a method solves on: the race's coarser grid of a spline method, the two
    # interior control points of the smallest B-spline, the polyline's two interior nodes.
    fewest = 2 if method == "paper" else 4 if method == "dense" or family == "bspline" else 3
    halved = 0  # knot-span halvings a B-spline of the m asked already has over the method's own
    if m is not None and method in SPLINE_METHODS and family == "bspline":
        m = _checks.integer("m", m, 2, MAX_M)
        while (table["m"] - 1) << (halved + 1) <= m - 1:
            halved += 1
        # A finer spline than the method's (a subdivided result's m, passed back with its
        # coefficients as `init`) gets the method's points per control point, not its points
        # (and its race as many per control point: below).
        if n_points is None:
            n_points = max(table["n_points"], POINTS_PER_CONTROL_POINT * m)
    n_points = _checks.integer("n_points", table["n_points"] if n_points is None else n_points, fewest)
    if m is not None and method in SPLINE_METHODS and family == "bspline" and n_points < 2 * m:
        warnings.warn(
            f"n_points={n_points} for m={m} control points: with fewer than two points per control point "
            "a curve is free between its points and its solve wanders (several times the iterations); "
            f"leave n_points out (a finer basis gets {POINTS_PER_CONTROL_POINT} per control point)",
            UserWarning, stacklevel=3,
        )  # fmt: skip
    if method == "dense":
        if m is not None:
            m = _checks.integer("m", m, 1, MAX_M)
            if m != n_points - 2:
                raise ValueError(
                    f"method='dense' solves for the n_points - 2 = {n_points - 2} interior nodes of a "
                    f"polyline, got m={m}: pass n_points (= m + 2) instead"
                )
        basis: Basis = PiecewiseLinearBasis(n_points)
    elif family == "bspline":
        basis = BSplineBasis(
            _checks.integer("m", _default_m(table, n_points, 2) if m is None else m, 2, MAX_M)
        )
    else:
        m = _checks.integer("m", _default_m(table, n_points, 1) if m is None else m, 1, MAX_M)
        basis = PolynomialBasis(m, family)
    max_iter = _checks.integer("max_iter", table["max_iter"] if max_iter is None else max_iter, 1)
    if isinstance(warm_start, bool):
        warm_iter = WARM_ITER if warm_start else 0
    else:
        warm_iter = _checks.integer("warm_start", warm_start, 0)
    warm_iter = 0 if method == "dense" else min(max_iter, warm_iter)
    if explore is None:
        explore_iter = table.get("explore", 0)
    elif isinstance(explore, bool):
        explore_iter = EXPLORE_ITER if explore else 0
    else:
        explore_iter = _checks.integer("explore", explore, 0)
    explore_iter = explore_iter if method in SPLINE_METHODS else 0
    refine = _checks.integer("refine", table["refine"] if refine is None else refine, 1)
    corridors = _checks.integer("corridors", table["corridors"] if corridors is None else corridors, 0)
    if coarse_points is None:  # never fewer points per control point than the defaults race on
        least = RACE_POINTS_PER_CONTROL_POINT * basis.m
        coarse_points = max(table.get("coarse_points", COARSE_POINTS), least)
    coarse_points = _checks.integer("coarse_points", coarse_points, MIN_COARSE_POINTS)
    tols = FAST_TOL if method == "fast" else DEFAULT_TOL
    tol = _checks.positive_float("tol", tols.get(dtype, tols[torch.float32]) if tol is None else tol)
    if tol >= 1:
        raise ValueError(f"tol is a relative change of the energy in a step: it must be < 1, got {tol!r}")
    if batch_size is None:
        per_curve = working_memory_per_curve(
            latent_dim, data_dim, n_points, basis.m * latent_dim, torch.finfo(dtype).bits // 8
        )
        batch_size = max(1, BATCH_BUDGET // per_curve)
    batch_size = _checks.integer("batch_size", batch_size, 1)
    check_resolution = _checks.boolean("check_resolution", check_resolution)
    linearize = _checks.choice("linearize", linearize, LINEARIZE)
    lagged = method in SPLINE_METHODS and (
        linearize == "lagged" or (linearize == "auto" and latent_dim >= LAGGED_MIN_DIM)
    )
    # The secant model of the curvature Gauss-Newton leaves out pays where d is small (d = 5 conv:
    # 10 % faster with it). In calls with lagged matrices (d >= 8) its secant condition
    # (y# = y - H s, H of an earlier point) mixes the matrix's staleness into the model, which
    # turns indefinite (failed factorizations, damped steps); such calls take plain Gauss-Newton
    # steps in every phase, the race's fresh ones included (measured on trained VAEs with d = 12-64:
    # 30-45 % fewer iterations, 1.2-1.5x less time, lengths within 0.004 %; d = 8 conv: 5 % slower,
    # the same lengths; without the model in the race too was faster than only in the refinement).
    # Their steps are corrected along the last step instead (rank one, the system stays banded:
    # solver/last_step.py), and curves still iterating after SECANT_AFTER plain steps finish with
    # the model (solver/secant_finish.py: plain steps creep where that curvature is large).
    # Except for decoders with piecewise-linear activations (ReLU, LeakyReLU): their Jacobians jump
    # where units switch, the curvature Gauss-Newton leaves out sits at those kinks, and plain
    # Gauss-Newton steps crawl (a trained d = 16 ReLU MLP and random ReLU / LeakyReLU decoders at
    # d = 8-16: see bench/RESULTS.md, "Piecewise-linear decoders"); the secant model, stale
    # matrices and all, measures that curvature from gradient differences.
    lagged_secant = piecewise_linear if LAGGED_SECANT is None else LAGGED_SECANT
    # The dense oracle from d = 8 on too: its polylines' systems are block-tridiagonal and plain
    # Gauss-Newton keeps them so (a secant model fills them: a dense (126 d)^3 factorization per
    # step, 2 s per curve at d = 32); mlp32_shapes, 3 pairs: 163 -> 96 s, lengths within 3e-7.
    secant = (lagged_secant or not lagged) and not (method == "dense" and latent_dim >= LAGGED_MIN_DIM)
    splines = method in SPLINE_METHODS and family == "bspline"
    subdivide_above = SUBDIVIDE_ABOVE
    levels = PIECEWISE_LINEAR_SUBDIVISIONS if piecewise_linear and method == "default" else SUBDIVISIONS
    if subdivide is None:
        # ``fast`` subdivides the curves of piecewise-linear decoders as the default does: without
        # the finer spline a trained ReLU MLP's were 0.70 % long on average (1.5 % at worst), with
        # it 0.03 % (0.34 %) at 2.3x the time, still 1.8x faster than the default; others only
        # where the coarse spline leaves a curve clearly long (FAST_SUBDIVIDE_ABOVE), once.
        subdivide = levels if splines else 0
        if method == "fast" and splines and not piecewise_linear:
            subdivide, subdivide_above = 1, FAST_SUBDIVIDE_ABOVE
        # Levels the m asked has taken already (a result's basis passed back: it must not grow 4x
        # a call, 93 -> 369 -> 1,473 control points on the 2-D digits VAE).
        subdivide = max(0, subdivide - halved)
    elif subdivide is True or subdivide is False:
        subdivide = max(0, levels - halved) if subdivide else 0
    else:  # levels counted from the method's own basis, as above: a basis passed back has taken some
        subdivide = max(0, _checks.integer("subdivide", subdivide, 0, MAX_SUBDIVIDE) - halved)
    if subdivide and not splines:
        raise ValueError(
            "subdivide needs method='default' or 'fast' with family='bspline' (halving the knot spans "
            f"of a cubic B-spline), got method={method!r}, family={family!r}"
        )
    # Lagged linearizations only shape the step (gradients and tests stay exact): their tangents
    # in bfloat16 where it is fast (bench/RESULTS.md, "Tangents in bfloat16"). Not through kinks:
    # a unit whose rounded input lands on the other side of its kink switches its derivative
    # (LayerNorm then PReLU: 12 % of the tangents off, smooth chains 0.5-1 %).
    low = lagged and dtype == torch.float32 and not piecewise_linear and device is not None
    low = low and bfloat16_is_fast(torch.device(device))
    # Float64 solves of a convolutional decoder on the CPU (the dense oracle's polylines, a float64
    # user's curves, near codes solved in float64): every linearization's tangents in float32; the
    # values, energies and tests stay float64 (a gradient rounded to ~1e-7 moves the optimum's
    # energy by its square). CPU convolutions have no float64 oneDNN kernels: the oracle's polish of
    # trained conv decoders (d = 5, 8, 12) 1.7-2.4x faster, the default on d = 5 2.3x, the same
    # iterations (a ReLU one: 2 more of 92), lengths within 1.2e-9; MLPs keep float64 tangents
    # (their polish 0.9-1.17x: its time is in the products and solves, not in the decoder's GEMMs;
    # bench/RESULTS.md, "Float64 solves with float32 tangents").
    fresh = (
        dtype == torch.float64 and convolutional and device is not None and torch.device(device).type == "cpu"
    )
    return SolverOptions(
        method,
        basis,
        n_points,
        family,
        warm_iter,
        max_iter,
        tol,
        batch_size,
        refine,
        corridors,
        coarse_points,
        check_resolution,
        lagged,
        secant,
        subdivide,
        subdivide_above,
        explore_iter,
        torch.bfloat16 if low else None,
        torch.float32 if fresh else None,
    )


def _refuse_spline_options(
    family: str | None,
    warm_start: bool | int,
    explore: bool | int | None,
    refine: int | None,
    corridors: int | None,
    coarse_points: int | None,
    linearize: str,
    subdivide: bool | int | None,
) -> None:
    """``method="dense"`` given options of the spline methods, which it would ignore: a ValueError
    naming them (its polylines start from the default's curves, solved with that method's own)."""
    given = {"family": family is not None, "warm_start": warm_start is not True,
             "explore": explore is not None, "refine": refine is not None,
             "corridors": corridors is not None, "coarse_points": coarse_points is not None,
             "linearize": linearize != "auto", "subdivide": subdivide is not None}  # fmt: skip
    names = [name for name, asked in given.items() if asked]
    if names:
        raise ValueError(
            f"method='dense' does not take {', '.join(names)} (options of the spline methods: its free "
            "polylines start from the default's curves); it takes n_points, max_iter, tol, batch_size, "
            "init, graph, latents and check_resolution"
        )


def coarse_points_for(coarse_points: int, n_points: int, asked_n_points: int) -> int:
    """The race's points for a curve solved on ``n_points`` where ``coarse_points`` were asked
    for ``asked_n_points`` (a finer basis of the same call): in proportion, never fewer than
    :data:`MIN_COARSE_POINTS`."""
    return max(MIN_COARSE_POINTS, coarse_points * n_points // asked_n_points)
