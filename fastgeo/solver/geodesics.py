"""``fastgeo.geodesics``: batched geodesics, all curves of a call optimized together, each with
its own step size and convergence test.

The discrete energy ``E = (N-1)/2 sum_n ||f(c_{n+1}) - f(c_n)||^2`` of the embedding
``f = [mu, sigma]`` is a sum of squared residuals: with ``c(t) = line(t) + sum_j a_j psi_j(t)``
the residual Jacobian needs only the (d x d) Gram blocks ``J_n^T J_n`` and ``J_n^T J_{n+1}``
(d forward-mode passes of the decoder per iteration, whatever the number of basis functions m),
and each Levenberg-Marquardt step is a small (m d x m d) solve per curve, with a structured
secant model of the curvature Gauss-Newton leaves out.

The story of a call (``method="default"``; ``"fast"`` tells it on coarser curves with a looser
tolerance), one file per chapter:
  1. options (:mod:`.options`): defaults of the method (:mod:`.defaults`), validation, batch size;
  2. starts (:mod:`.starts`): the straight line, the paper's warm start on the RBF alone, in
     d >= 4 an explored start (Adam steps of the full energy), and shortest paths through
     different corridors of a metric-weighted graph of the latent space (:mod:`.graph`, kept per
     metric by :mod:`.graph_cache`; :mod:`.corridors`);
  3. the race (:mod:`.race`, batch by batch: :mod:`.batches`): the ``refine`` shortest distinct
     starts are optimized on a coarse grid by Levenberg-Marquardt (:mod:`.levenberg_marquardt`),
     every racer to a relative step of ``race.COARSE_TOL``; the winner, and runners-up the coarse
     grid cannot tell from it across a wall, are refined at ``n_points``;
  4. the fallback (:mod:`.fallback`): never longer than the straight line;
  5. the resolution check (:mod:`.resolution`): curves that step over a thin ridge of the
     metric are solved again with more points.
  6. subdivision (:mod:`.subdivide`): curves that a spline with halved knot spans would shorten
     are solved on in it, and those still predicted to gain once more in the next one.
Decoders with piecewise-linear activations (ReLU, ...) are first solved with their kinks rounded
(:mod:`.smoothing`); those curves race as a start. ``method="paper"`` swaps Levenberg-Marquardt
for Adam (:mod:`.first_order`); ``method="dense"``
is the accuracy oracle (:mod:`.dense`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from .._progress import DELAY, call_bar, phase
from ..curves import Basis, BSplineBasis, Curves
from ..decoders.uses import one_use
from ..metric import ExpectedMetric
from . import smoothing
from .arguments import check_ends, check_graph_inputs, check_init
from .batches import solve_at, solve_in_batches
from .call_warnings import warn_nonfinite, warn_unused_graph_inputs
from .defaults import DEFAULTS, POINTS_PER_CONTROL_POINT, SPLINE_METHODS
from .dense import dense_multistart
from .end_gradients import with_end_gradients
from .fallback import never_longer_than_straight
from .graph import LatentGraph
from .graph_cache import cached_graph
from .measure import finite_between, measure
from .options import SolverOptions, coarse_points_for, solver_options
from .resolution import flag_under_resolved, refine_resolution
from .result import CONVERGED, GIVEN, NONFINITE, SMOOTHED, GeodesicResult, Work
from .short_curves import solved_apart
from .smoothing import smoothed_first
from .subdivide import subdivide_curves


def geodesics(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
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
    init: Tensor | None = None,
    graph: bool | LatentGraph = True,
    latents: Tensor | None = None,
    refine: int | None = None,
    coarse_points: int | None = None,
    check_resolution: bool = True,
    corridors: int | None = None,
    linearize: str = "auto",
    subdivide: bool | int | None = None,
    progress: bool | None = None,
) -> GeodesicResult:
    """Geodesics of ``metric`` between ``z0[b]`` and ``z1[b]``, all optimized in one batch.

    Args:
        metric: the :class:`ExpectedMetric` of the decoder.
        z0, z1: (B, d) end points (same dtype and device as the metric).
        method: ``"default"`` (spline curves, warm start, Levenberg-Marquardt), ``"fast"``
            (the same on coarser curves with a looser tolerance, subdivided only where a curve
            stays clearly long: 2-4x less time, curves ~0.01 % (2-D) to 0.01-0.2 % (d >= 4)
            longer on average on our generators, 0.5 % on a decoder with winding geodesics; for
            a first look or a large matrix), ``"paper"`` (the paper's algorithm: quadratic curve
            ``m = 1``, RBF warm start, first-order steps) or ``"dense"`` (free polylines of ``n_points = 128``
            nodes minimized to convergence from the default's curves, with three more draws of
            the latent graph in d >= 4: the accuracy oracle; use a float64 metric for it (its
            starts are then solved by a float32 copy, the polylines in float64); where
            the metric has walls thinner than its segments, polylines that step over them end
            longer, flagged ``under_resolved``: compare with the shortest curve known).
        m: basis functions per latent dimension (default 24 in d <= 3, 12 above; ``fast``: 16
            and 10: the interior control points of a cubic B-spline; ``paper`` uses 1, its
            quadratic; with fewer ``n_points`` than the default, at most ``n_points // 4``).
        n_points: points per curve in the discrete energy (default 96 in d <= 3, 48 above;
            ``fast``: 64 and 40; 32 for ``paper``, 128 for ``dense``).
        family: ``"bspline"`` (default: clamped uniform cubic B-splines), or ``"legendre"`` /
            ``"chebyshev"`` polynomials (``paper``: legendre).
        warm_start: run the RBF warm start (every method but ``dense``): ``True`` for its default
            iterations (5; a start only, the full energy decides the rest), or their number.
        explore: race the explored start too (``default`` and ``fast``): a few Adam steps of the
            full energy from the straight line, which often leave the basin the straight line
            leads Gauss-Newton into where a decoder has several; ``True`` for its default
            steps (20), or their number (default: 20 in d >= 4, none in d <= 3, whose graph
            paths race instead).
        max_iter: iteration limit per phase, >= 1 (default 300 for Levenberg-Marquardt, 2000
            for ``paper``'s first-order steps, 300 for ``dense``).
        tol: a curve converges when a step lowers its energy by less than ``tol`` relative
            (default 1e-10 in float64, 1e-6 in float32; ``fast``: 1e-8 and 1e-4). On the CPU a
            float64 solve pushes a convolutional mean's tangents in float32 (its values,
            energies and tests stay float64: ``options["fresh tangents"]``).
        batch_size: curves optimized at once (default: as many as fit in ~1 GiB of working
            memory, :func:`fastgeo.solver.options.working_memory_per_curve`).
        init: optional (B, m, d) starting coefficients for the basis of ``method`` (a result's
            ``curves.coeffs`` with ``m=res.curves.basis.m``: a B-spline finer than the method's
            gets as many points per control point, and as many levels of subdivision fewer as it
            has halvings, so a result passed back keeps its basis). The given curves race the
            method's other starts; to polish converged curves alone (2-3x less time), pass
            ``refine=1, warm_start=False, explore=False, corridors=0`` too.
        graph: start from shortest paths on a :class:`fastgeo.LatentGraph` too (``default`` and
            ``fast``, where ``corridors > 0``; built on first use and cached for the metric), or a
            graph to use.
        latents: optional (M, d) latent codes of the data, added to the graph's nodes.
        refine: how many of the starts (the shortest, distinct ones) race per curve on the coarse
            grid, keeping the lowest energy (default 5 for ``default`` and ``fast`` in d <= 3:
            every start; in d >= 4 4 for ``default`` (of the straight line, the warm and explored
            starts and two corridors), 1 for ``fast``; 1 otherwise).
        coarse_points: points per curve while the starts are raced (>= 4; ``default`` and ``fast``;
            default 48 in d <= 3, 24 above; ``fast``: 32 and 20), ranked by their energy with the
            midpoints added. Only the winner is then refined at ``n_points``; a value >=
            ``n_points`` races at full resolution.
        check_resolution: measure every curve at the midpoints of its segments too. A curve
            whose length grows there by more than 1 % steps over a ridge of the metric between
            its points, which the optimization then does not see: such curves are solved again
            with twice the points (and twice ``coarse_points``), up to four times ``n_points``,
            and get the status ``under_resolved`` if still so (``dense``: flagged at once, its
            polylines are not solved again).
        corridors: how many graph paths through different corridors start each curve
            (``default`` and ``fast``; default 3 in d <= 3, 2 above for ``default``, 0 for
            ``fast`` in d >= 4: no graph is built; 3 in any d where a ``LatentGraph`` or
            ``latents`` is passed).
        linearize: ``"always"``: Levenberg-Marquardt linearizes the decoder (d tangents per
            point) at every trial point; ``"lagged"``: trial points get the exact gradient by
            reverse mode and the Gauss-Newton matrix is recomputed only where it predicted the
            last step badly, and before convergence is declared; ``"auto"`` (default): lagged
            for d >= 8 (``default`` and ``fast``). A lagged call's refinement takes Gauss-Newton
            steps corrected by a limited-memory BFGS model of its last five trial steps
            (:mod:`.secant_memory`; its race corrects along the last step, :mod:`.last_step`);
            other calls, and lagged calls on ReLU-like decoders, add a full secant model of the
            curvature Gauss-Newton leaves out.
        subdivide: curves whose Gauss-Newton model predicts an energy gain of more than 0.04 %
            (about 0.02 % in length) in the B-spline with every knot span halved (``2 m - 1``
            functions) are solved on in it with twice the points (:mod:`.subdivide`), and so on
            for the curves still predicted to gain (2.5x more per level), up to ``subdivide``
            levels (an int up to 6; True: two levels, three for ReLU-like decoders under ``default``,
            at the default method's threshold, under ``fast`` too; False or 0: none; counted from
            the method's own basis: a finer ``m`` passed back has taken some); every result is
            then given in the finest basis (``4 m - 3`` functions at two levels). Default: two levels with
            ``family="bspline"``, three for ReLU-like decoders (their curves bend at every kink);
            ``fast`` one, solving on only curves predicted to gain more than 0.4 % (about 0.2 % in
            length), two for ReLU-like decoders. Long winding curves
            and d >= 12 gain 0.02-0.3 % at the first level, some decoders' curves 1-3 %; a
            trained tanh conv decoder's curves 0.03-0.06 % more on average (0.28 % at worst) at
            the second.
        progress: a progress bar over the curves (tqdm, if installed), updated batch by batch
            and redrawn with the decoder work done between; default (None): shown once the call
            has run 10 s (``fastgeo._progress.DELAY``); False: none.

    Returns:
        :class:`GeodesicResult`, a status per curve. Every length is the curve's own length,
        measured on a grid fine enough that its estimated error (``length_errors``) is below 1e-4
        relative, or on 4,097 points where it is not (float32 curves so short that rounding would
        add up along a fine grid are measured in float64); no curve is longer than the straight
        line between its ends. float32 curves so short that the decoder's rounding is not small
        against their segments (near neighbours: on a 2-D digits VAE, codes within ~0.1 of each
        other) are solved in float64 at the call's tolerance, the metric converted
        (:mod:`fastgeo.solver.short_curves`; where its mean is an ``nn.Module``, else a warning).
        Where ``z0`` or ``z1`` requires a gradient (and grad mode is on), ``lengths`` is
        differentiable in them: the envelope theorem's gradient, the solved curve's length as its
        ends move (:mod:`fastgeo.solver.end_gradients`; one forward and backward pass of the
        decoder along each curve in ``backward``), zero between equal ends; once (no
        ``create_graph``), by ``torch.autograd`` (not ``torch.func``); not in the decoder's or the
        precision's parameters. It is the distance's gradient where the curve converged (a warning
        counts the curves that did not); ``method="paper"``'s
        single quadratic is not stationary in length, and its gradients were 7-15 % off on the 2-D
        digits VAE (with a warning).

    Decoders with piecewise-linear activations (ReLU, LeakyReLU, PReLU, Hardtanh, ReLU6,
    Hardsigmoid, Hardswish; recognized chains, :func:`fastgeo.decoders.piecewise_linear`) have
    kinks in their energy where the optimization stops short: with ``method="default"`` or
    ``"fast"``, no ``init`` and d >= 4 their curves are first solved under the decoder with its
    kinks rounded (:mod:`fastgeo.solver.smoothing`), which then race against the true decoder's
    own best start in the solve under it, in the subdivided basis where the smoothed curves needed it
    (``options["smoothed_first"]``, start ``"smoothed"``; about twice the time of a smooth
    decoder of the same size).
    """
    with one_use():
        check_ends(metric, z0, z1)
        if progress is not None:
            _checks.boolean("progress", progress)
        # fmt: off
        asked = dict(
            method=method, m=m, n_points=n_points, family=family, warm_start=warm_start, explore=explore,
            max_iter=max_iter, tol=tol, batch_size=batch_size, refine=refine, coarse_points=coarse_points,
            check_resolution=check_resolution, corridors=corridors, linearize=linearize, subdivide=subdivide,
        )
        # fmt: on
        given = isinstance(graph, LatentGraph) or latents is not None
        if corridors is None and given and method in SPLINE_METHODS:
            corridors = DEFAULTS["default"]["corridors"]  # a graph given is a graph to use, in any d
        if isinstance(linearize, str) and linearize == "auto" and getattr(metric, "_nan_gradient", False):
            linearize = "always"  # its reverse-mode gradients are NaN (the metric warned when made)
        # fmt: off
        opts = solver_options(
            metric.dtype, metric.latent_dim, metric.data_dim, method=method, m=m, n_points=n_points,
            family=family, warm_start=warm_start, explore=explore, max_iter=max_iter, tol=tol,
            batch_size=batch_size, refine=refine, corridors=corridors, coarse_points=coarse_points,
            check_resolution=check_resolution, linearize=linearize, subdivide=subdivide,
            piecewise_linear=metric.piecewise_linear_mean, convolutional=metric.convolutional_mean,
            device=metric.device,
        )
        # fmt: on
        init = check_init(metric, init, z0, opts)
        check_graph_inputs(metric, graph, latents)
        warn_unused_graph_inputs(graph, latents, opts)
        ends = z0, z1  # the caller's: the lengths' gradient goes to them
        z0, z1 = z0.detach(), z1.detach()
        # Curves too short for float32 are solved in float64 (from their rows of init, if given).
        res = solved_apart(metric, z0, z1, opts, asked, init, graph, latents, progress, solve=geodesics)
        if res is None:
            delay = 0.0 if progress else DELAY
            with call_bar(z0.shape[0], progress is not False, "geodesics", "curve", delay) as bar:
                if opts.method == "dense" and init is None and z0.shape[0] > 0:
                    res = dense_multistart(metric, z0, z1, opts, graph, latents, solve=geodesics)
                else:
                    res = _solve(metric, z0, z1, opts, init, graph, latents, refine, bar)
                if bar is not None:  # the oracle's curves finish together: its count, at the end
                    bar.update(bar.total - bar.n)
        warn_nonfinite(res)
        return with_end_gradients(metric, res, *ends)


def _solve(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    init: Tensor | None,
    graph: bool | LatentGraph,
    latents: Tensor | None,
    refine: int | None,
    bar: Any,
) -> GeodesicResult:
    """:func:`geodesics` for checked arguments and options (``bar``: the call's progress bar, or
    None), but ``method="dense"``."""
    work = Work()
    lgraph = None
    if opts.method in SPLINE_METHODS and z0.shape[0] > 0 and graph is not False and opts.corridors > 0:
        lgraph = graph if isinstance(graph, LatentGraph) else _graph_of(metric, latents, work)
    smoothed = None
    if init is None and z0.shape[0] > 0:
        smoothed = smoothed_first(metric, z0, z1, opts, lgraph, solve=geodesics)
        if smoothed is not None:
            init = smoothed.curves.coeffs
            opts = _in_basis(opts, smoothed.curves.basis)
            if refine is None:
                opts = dataclasses.replace(opts, refine=smoothing.TRUE_REFINE)
    with torch.no_grad():
        coeffs, energies, status, iterations, start, gains = solve_in_batches(
            metric, z0, z1, opts, init, lgraph, work, bar
        )
        if smoothed is not None:  # the smoothed curves raced as a start: the work of both counts
            iterations += smoothed.iterations
            start = start.masked_fill(start == GIVEN, SMOOTHED)
            work.evals += smoothed.decoder_evals
            work.jvps += smoothed.decoder_jvps
        res = GeodesicResult(
            Curves(z0, z1, coeffs, opts.basis), energies, energies, status, iterations, start, energies,
            opts.n_points, options={**opts.summary(), "smoothed_first": smoothed is not None},
            resolution=torch.full_like(start, opts.n_points),
        )  # fmt: skip
        first = None
        if opts.check_resolution and z0.shape[0]:
            if opts.method == "dense":  # the oracle's polylines are flagged, not solved again
                first = flag_under_resolved(metric, res, work)
            else:
                at = functools.partial(solve_at, metric, z0, z1, opts, lgraph, work)
                with phase("resolution check"):
                    first = refine_resolution(metric, res, at, work)
        if opts.subdivide and z0.shape[0]:
            gains[res.resolution != opts.n_points] = torch.nan  # solved again: predicted anew
            first = subdivide_curves(metric, res, opts, work, first, gains)
        with phase("measuring the lengths"):
            _finish(metric, res, work, first)
    return res


def _finish(
    metric: ExpectedMetric, res: GeodesicResult, work: Work, first: tuple[Tensor, Tensor] | None = None
) -> None:
    """Measure the curves (their lengths on grids fine enough; ``first``: on the first two grids,
    where known), never longer than the straight line, exact zeros between equal ends, and the
    decoder work of the call (in place)."""
    res.lengths, res.length_errors, res.measure_points = measure(
        metric, res.curves, res.resolution, work, first=first
    )
    never_longer_than_straight(metric, res, work)
    # A decoder not finite on the straight line is not finite near it: a curve the solver kept out
    # of such a region at its grid points may bulge into it between them (a finite length, flagged
    # converged, of a curve through NaN). Such curves are looked at between their points.
    suspect = (~torch.isfinite(res.straight_lengths) & torch.isfinite(res.lengths)).nonzero().squeeze(1)
    if suspect.numel():
        crossing = ~finite_between(metric, res.curves, res.measure_points, work, suspect)
        res.lengths[suspect[crossing]] = torch.nan
    # Equal end points: distance exactly 0 (a batched GEMM may round equal rows differently).
    same = (res.curves.z0 == res.curves.z1).all(-1)
    res.lengths = res.lengths.masked_fill(same, 0)
    res.length_errors = res.length_errors.masked_fill(same, 0)
    res.energies = res.energies.masked_fill(same, 0)
    res.status_code = res.status_code.masked_fill(same, CONVERGED)
    finite = torch.isfinite(res.lengths) & torch.isfinite(res.energies)
    res.status_code = res.status_code.masked_fill(~finite, NONFINITE)
    res.decoder_evals, res.decoder_jvps = work.evals, work.jvps


def _in_basis(opts: SolverOptions, basis: Basis) -> SolverOptions:
    """``opts`` in another (finer) basis of its family, with points and race points in proportion
    and, for a B-spline with halved spans, as many levels of subdivision fewer."""
    if type(basis) is type(opts.basis) and basis.m == opts.m:
        return opts
    n = POINTS_PER_CONTROL_POINT * (basis.m + 1)
    halvings = 0
    if isinstance(basis, BSplineBasis):
        while (opts.m - 1) << (halvings + 1) <= basis.m - 1:
            halvings += 1
    return dataclasses.replace(
        opts, basis=basis, n_points=n, coarse_points=coarse_points_for(opts.coarse_points, n, opts.n_points),
        subdivide=max(0, opts.subdivide - halvings),
    )  # fmt: skip


def _graph_of(metric: ExpectedMetric, latents: Tensor | None, work: Work) -> LatentGraph:
    graph, built = cached_graph(metric, latents)
    if built:
        work.evals += graph.edge_evals
    return graph
