"""Batched geodesic solver: all curves of a call are optimized together, each with its own
step size and convergence test.

The discrete energy ``E = (N-1)/2 sum_n ||f(c_{n+1}) - f(c_n)||^2`` of the embedding
``f = [mu, sigma]`` is a sum of squared residuals, linear in nothing but cheap to linearize: with
``c(t) = line(t) + sum_j a_j psi_j(t)`` the residual Jacobian is
``dr_n / da_{j,i} = psi_j(t_{n+1}) J_f(c_{n+1})[:, i] - psi_j(t_n) J_f(c_n)[:, i]``.
So the Gauss-Newton matrix needs only the (d x d) Gram blocks ``J_n^T J_n`` and
``J_n^T J_{n+1}`` (d forward-mode passes of the decoder per iteration, whatever the number of
basis functions m), and each Levenberg-Marquardt step is a small (m d x m d) solve per curve.
Geodesic residuals do not vanish at the optimum, so Gauss-Newton alone converges slowly; a
structured secant model of the missing curvature (Dennis, Gay & Welsch) restores fast
convergence at no extra decoder cost. The pieces of an iteration live beside this file: the
decoder's Jacobian (:mod:`fastgeo.jacobian`: a stacked forward mode for MLP chains), and, as C++
kernels on CPU tensors with their PyTorch references beside them, sigma's Jacobian
(:meth:`fastgeo.RBFPrecision.sigma_and_jacobian_t`), the Gauss-Newton system
(:mod:`fastgeo.gauss_newton`) and the damped step and its acceptance
(:mod:`fastgeo.levenberg_marquardt`).

Phases (``method="default"``):
  1. starts: the straight line; the paper's warm start, the curve minimizing the energy of the
     RBF part of the metric plus a Euclidean term, ``f_w = [sqrt(kappa) z, sigma(z)]``, which
     never touches the decoder's Jacobian and pulls the curve onto the ridges of the precision
     (``kappa`` = the decoder's stretch along the straight line); and the shortest path on a
     metric-weighted neighbourhood graph (:mod:`fastgeo.graph`);
  2. a race on a coarse grid (``coarse_points``, default 24 points per curve; every phase costs
     in proportion to the points): the two starts of lowest full energy are refined per curve by
     Levenberg-Marquardt to a loose tolerance (converged curves leave the batch);
  3. the winner is refined at ``n_points`` to ``tol`` (and the runner-up too, where the race
     ended within 1 % of energy on a visibly different curve), and the better result is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import _checks
from . import levenberg_marquardt as lm
from .curves import Curves, PiecewiseLinearBasis, PolynomialBasis, evaluate, time_grid
from .gauss_newton import gauss_newton_system
from .graph import LatentGraph
from .metric import ExpectedMetric

METHODS = ("default", "paper", "dense")
INIT_NAMES = ("straight", "warm", "given", "graph")
RESOLUTION_TOL = 0.01  # a length that grows more than this at the midpoints is under-resolved
RESOLUTION_DOUBLINGS = 2  # re-solve under-resolved curves with up to 2**this times the points
COARSE_POINTS = 24  # default points per curve of the race between starts
COARSE_TOL = 1e-3  # the race only ranks basins: a loose relative tolerance
CLOSE_RACE = 0.01  # runner-ups within this relative energy of the winner are refined too
DISTINCT = 0.05  # ... if their curve is this fraction of the chord away from the winner's
WARM_ITER = 5  # iterations of the warm start (a start only: the full energy decides the rest)
LENGTH_TOL_FACTOR = 30.0  # see _levenberg_marquardt: the length test's looser energy tolerance


@dataclass
class GeodesicResult:
    """Geodesics for a batch of B end-point pairs.

    Attributes:
        curves: the optimized :class:`fastgeo.curves.Curves`.
        lengths: (B,) discrete length ``sum_n sqrt(s_n)`` at ``n_points`` (the distances).
        energies: (B,) discrete energy at ``n_points``.
        converged: (B,) bool; False when the iteration limit was hit or the energy was not finite.
        iterations: (B,) int, optimizer iterations spent on each curve (all phases).
        init: (B,) int, index into :data:`INIT_NAMES` of the start each curve was taken from.
        straight_lengths: (B,) length of the straight line between the end points.
        n_points: points per curve used for the energy (the requested resolution).
        resolution: (B,) int, points per curve of each curve's energy and length: ``n_points``,
            or more where the resolution check re-solved an under-resolved curve.
        decoder_evals: latent points passed through the decoder mean (forward calls).
        decoder_jvps: latent points times directions pushed through the decoder in forward mode.
    """

    curves: Curves
    lengths: Tensor
    energies: Tensor
    converged: Tensor
    iterations: Tensor
    init: Tensor
    straight_lengths: Tensor
    n_points: int
    decoder_evals: int = 0
    decoder_jvps: int = 0
    options: dict = field(default_factory=dict)
    resolution: Tensor | None = None

    def points(self, n: int | None = None) -> Tensor:
        """The curves sampled at ``t = linspace(0, 1, n)`` (default ``n_points``): (B, n, d)."""
        return self.curves.points(self.n_points if n is None else n)

    @property
    def init_names(self) -> list[str]:
        """Per-curve name of the start the solution came from."""
        return [INIT_NAMES[i] for i in self.init.tolist()]

    def __len__(self) -> int:
        return self.lengths.shape[0]


class _Counter:
    """Decoder work done by one call (points through the mean, and through its forward-mode JVP)."""

    def __init__(self) -> None:
        self.evals = 0
        self.jvps = 0


def geodesics(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    *,
    method: str = "default",
    m: int | None = None,
    n_points: int | None = None,
    family: str = "legendre",
    warm_start: bool | int = True,
    max_iter: int | None = None,
    tol: float | None = None,
    batch_size: int | None = None,
    init: Tensor | None = None,
    graph: bool | LatentGraph = True,
    latents: Tensor | None = None,
    refine: int | None = None,
    coarse_points: int | None = None,
    check_resolution: bool = True,
) -> GeodesicResult:
    """Geodesics of ``metric`` between ``z0[b]`` and ``z1[b]``, all optimized in one batch.

    Args:
        metric: the :class:`ExpectedMetric` of the decoder.
        z0, z1: (B, d) end points (same dtype and device as the metric).
        method: ``"default"`` (polynomial curves, warm start, Levenberg-Marquardt),
            ``"paper"`` (the paper's algorithm: quadratic curve ``m = 1``, RBF warm start,
            first-order steps) or ``"dense"`` (free polylines of ``n_points = 128`` nodes
            minimized to convergence: the accuracy oracle; use a float64 metric for it).
        m: basis functions per latent dimension (default 12; ``paper`` uses 1).
        n_points: points per curve in the discrete energy (default 48; 32 for ``paper``, 128
            for ``dense``).
        family: ``"legendre"`` or ``"chebyshev"`` polynomials.
        warm_start: run the RBF warm start (``default`` and ``paper``): ``True`` for its default
            iterations (5; a start only, the full energy decides the rest), or their number.
        max_iter: iteration limit per phase (default 100 for Levenberg-Marquardt, 2000 for
            ``paper``'s first-order steps, 300 for ``dense``).
        tol: a curve converges when a step lowers its energy by less than ``tol`` relative
            (default 1e-10 in float64, 1e-5 in float32).
        batch_size: curves optimized at once (default: as many as fit in ~512 MB of Jacobians).
        init: optional (B, m, d) starting coefficients for the basis of ``method``.
        graph: start from shortest paths on a :class:`fastgeo.graph.LatentGraph` too (``default``
            only; built on first use and cached on the metric), or a graph to use.
        latents: optional (M, d) latent codes of the data, added to the graph's nodes.
        refine: how many of the best starts (by energy) are optimized per curve, keeping the
            shortest result (default 2 for ``default``, 1 otherwise).
        coarse_points: points per curve while the starts are raced (``default`` only; default
            24). Only the winner is then refined at ``n_points``; a value >= ``n_points`` races
            at full resolution.
        check_resolution: measure every curve at the midpoints of its segments too (``default``
            and ``paper``). A curve whose length grows there by more than 1 % steps over a ridge
            of the metric between its points, and its discrete length underestimates it: such
            curves are solved again with twice the points (and twice ``coarse_points``), up to
            four times ``n_points``, and flagged unconverged if still under-resolved.

    Returns:
        :class:`GeodesicResult`; no curve is longer than the straight line between its ends.
    """
    if not isinstance(metric, ExpectedMetric):
        raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
    metric.check_points("z0", z0, ndim=2)
    metric.check_points("z1", z1, ndim=2)
    if z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must have the same shape (B, d), got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    _checks.finite("z0", z0)
    _checks.finite("z1", z1)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    dense = method == "dense"
    if n_points is None:
        n_points = {"default": 48, "paper": 32, "dense": 128}[method]
    if not isinstance(n_points, int) or isinstance(n_points, bool) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    if dense:
        if n_points < 3:
            raise ValueError(f"method='dense' needs n_points >= 3, got {n_points}")
        basis = PiecewiseLinearBasis(n_points)
    else:
        basis = PolynomialBasis((1 if method == "paper" else 12) if m is None else m, family)
    if max_iter is None:
        max_iter = {"default": 100, "paper": 2000, "dense": 300}[method]
    if not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if not isinstance(warm_start, (bool, int)) or warm_start < 0:
        raise ValueError(f"warm_start must be a bool or an integer >= 0 (iterations), got {warm_start!r}")
    if refine is None:
        refine = 2 if method == "default" else 1
    if not isinstance(refine, int) or refine < 1:
        raise ValueError(f"refine must be an integer >= 1, got {refine!r}")
    if coarse_points is None:
        coarse_points = COARSE_POINTS
    if not isinstance(coarse_points, int) or isinstance(coarse_points, bool) or coarse_points < 3:
        raise ValueError(f"coarse_points must be an integer >= 3, got {coarse_points!r}")
    if tol is None:
        tol = 1e-10 if metric.dtype == torch.float64 else 1e-5
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    B, d = z0.shape
    if init is not None:
        metric.check_points("init", init, ndim=3)
        if init.shape != (B, basis.m, d):
            raise ValueError(f"init must have shape (B, m, d) = {(B, basis.m, d)}, got {tuple(init.shape)}")
        _checks.finite("init", init)
    if batch_size is None:
        per_curve = n_points * 2 * metric.data_dim * (d + 3) * z0.element_size()
        batch_size = max(1, (512 << 20) // per_curve)

    z0, z1 = z0.detach(), z1.detach()
    counter = _Counter()
    lgraph = None
    if method == "default" and B > 0 and graph is not False:
        lgraph = graph if isinstance(graph, LatentGraph) else _cached_graph(metric, latents, counter)
    if dense and init is None and B > 0:
        return _dense_multistart(metric, z0, z1, n_points, max_iter, tol, batch_size, graph, latents)
    parts = []
    with torch.no_grad():
        for start in range(0, B, batch_size):
            sl = slice(start, start + batch_size)
            parts.append(
                _solve_batch(
                    metric, z0[sl], z1[sl], basis, n_points, method, warm_start, max_iter, tol,
                    None if init is None else init[sl].detach(), lgraph, refine, counter,
                    coarse_points if method == "default" else None,
                )
            )
    if not parts:  # empty batch
        parts.append(
            _solve_batch(metric, z0, z1, basis, n_points, method, warm_start, 0, tol, None, None, 1, counter)
        )
    coeffs, energies, converged, iterations, init_idx = (torch.cat(x) for x in zip(*parts, strict=True))
    curves = Curves(z0, z1, coeffs, basis)
    with torch.no_grad():
        lengths, midpoint_lengths = _lengths_and_midpoint_lengths(metric, curves, n_points)
        straight = metric.length(curves_straight(z0, z1, n_points))
    counter.evals += B * (3 * n_points - 1)
    # Never worse than the straight line: fall back to it where the optimum is longer.
    worse = lengths > straight
    if bool(worse.any()):
        coeffs = torch.where(worse[:, None, None], torch.zeros_like(coeffs), coeffs)
        curves = Curves(z0, z1, coeffs, basis)
        lengths = torch.where(worse, straight, lengths)
        with torch.no_grad():  # the straight line's own midpoint lengths, for the resolution check
            idx = worse.nonzero().squeeze(1)
            line = Curves(z0[idx], z1[idx], torch.zeros_like(coeffs[idx]), basis)
            midpoint_lengths[idx] = _lengths_and_midpoint_lengths(metric, line, n_points)[1]
        counter.evals += idx.numel() * (2 * n_points - 1)
        with torch.no_grad():
            energies = torch.where(worse, metric.energy(curves_straight(z0, z1, n_points)), energies)
        init_idx = torch.where(worse, torch.zeros_like(init_idx), init_idx)
    # Equal end points: distance exactly 0 (a batched GEMM may round equal rows differently).
    same = (z0 == z1).all(-1)
    lengths = lengths.masked_fill(same, 0)
    energies = energies.masked_fill(same, 0)
    converged = (converged & torch.isfinite(lengths) & torch.isfinite(energies)) | same
    resolution = torch.full((B,), n_points, dtype=torch.long, device=z0.device)
    result = GeodesicResult(
        curves=curves,
        lengths=lengths,
        energies=energies,
        converged=converged,
        iterations=iterations,
        init=init_idx,
        straight_lengths=straight,
        n_points=n_points,
        decoder_evals=counter.evals,
        decoder_jvps=counter.jvps,
        options={"method": method, "basis": repr(basis), "n_points": n_points, "tol": tol,
                 "max_iter": max_iter, "warm_start": warm_start},
        resolution=resolution,
    )
    if not check_resolution or dense or B == 0:
        return result

    def solve_finer(idx: Tensor, n: int, init_coeffs: Tensor) -> GeodesicResult:
        return geodesics(
            metric, z0[idx], z1[idx], method=method, m=basis.m, n_points=n, family=family,
            warm_start=warm_start, max_iter=max_iter, tol=tol, init=init_coeffs,
            graph=lgraph if lgraph is not None else graph, latents=latents, refine=refine,
            coarse_points=max(3, coarse_points * n // n_points), check_resolution=False,
        )

    return _refine_resolution(metric, result, midpoint_lengths, same, solve_finer)


def _lengths_and_midpoint_lengths(metric: ExpectedMetric, curves: Curves, n: int) -> tuple[Tensor, Tensor]:
    """Discrete lengths (B,) of the curves at ``n`` points and at ``2n - 1`` (the midpoints of
    the segments added), from one pass of the decoder over the finer points."""
    f = metric.features(curves.points(2 * n - 1))  # (B, 2n-1, F); every other point is the n-grid
    fine = (f[:, 1:] - f[:, :-1]).pow(2).sum(-1).sqrt().sum(-1)
    coarse = (f[:, 2::2] - f[:, :-2:2]).pow(2).sum(-1).sqrt().sum(-1)
    return coarse, fine


def _refine_resolution(
    metric: ExpectedMetric,
    res: GeodesicResult,
    midpoint_lengths: Tensor,
    same: Tensor,
    solve_finer: Callable[[Tensor, int, Tensor], GeodesicResult],
) -> GeodesicResult:
    """Re-solve, with twice the points, the curves whose length grows by more than
    RESOLUTION_TOL at the midpoints of their segments (up to RESOLUTION_DOUBLINGS times); flag
    those still under-resolved as not converged."""
    n = res.n_points
    for level in range(RESOLUTION_DOUBLINGS + 1):
        under = (midpoint_lengths > res.lengths * (1 + RESOLUTION_TOL)) & (res.resolution == n) & ~same
        if not bool(under.any()):
            break
        idx = under.nonzero().squeeze(1)
        if level == RESOLUTION_DOUBLINGS:
            res.converged[idx] = False
            break
        n *= 2
        sub = solve_finer(idx, n, res.curves.coeffs[idx])
        res.curves.coeffs[idx] = sub.curves.coeffs
        for name in ("lengths", "energies", "converged", "straight_lengths"):
            getattr(res, name)[idx] = getattr(sub, name)
        # A start "given" here is the coarser solution: keep naming the start that one came from.
        res.init[idx] = torch.where(sub.init == INIT_NAMES.index("given"), res.init[idx], sub.init)
        res.iterations[idx] += sub.iterations
        res.resolution[idx] = n
        res.decoder_evals += sub.decoder_evals
        res.decoder_jvps += sub.decoder_jvps
        with torch.no_grad():
            _, mid = _lengths_and_midpoint_lengths(metric, sub.curves, n)
        res.decoder_evals += idx.numel() * (2 * n - 1)
        midpoint_lengths = midpoint_lengths.clone()
        midpoint_lengths[idx] = mid
    return res


def _energy(segments: Tensor) -> Tensor:
    """Discrete energy ``(N-1)/2 sum_n s_n`` from segments (..., N-1) -> (...)."""
    return 0.5 * segments.shape[-1] * segments.sum(-1)


def curves_straight(z0: Tensor, z1: Tensor, n: int) -> Tensor:
    """Straight lines sampled at ``n`` points: (B, d) x 2 -> (B, n, d)."""
    t = time_grid(n, z0)
    return z0[:, None, :] + t[None, :, None] * (z1 - z0)[:, None, :]


def _solve_batch(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    basis,
    n_points: int,
    method: str,
    warm_start: bool | int,
    max_iter: int,
    tol: float,
    init: Tensor | None,
    lgraph: LatentGraph | None,
    refine: int,
    counter: _Counter,
    coarse_points: int | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One batch of curves: returns coeffs (B, m, d), energies, converged, iterations, init index.

    With ``coarse_points`` (< n_points), the starts are ranked and raced on that coarser
    discretization (cheap: the cost of every phase is proportional to the points per curve), and
    only the winner of each curve is refined at ``n_points``.
    """
    B, d = z0.shape
    t = time_grid(n_points, z0)
    psi = basis(t)
    coarse = coarse_points is not None and coarse_points < n_points
    t_c = time_grid(coarse_points, z0) if coarse else t
    psi_c = basis(t_c) if coarse else psi
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)

    def segments_between(
        za: Tensor, zb: Tensor, psi: Tensor, t: Tensor
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """Squared segment lengths ``s_n`` (b, N-1) of the full metric, curves ``idx`` (rows of za, zb)
        with coefficients (b, m, d)."""

        def segments(coeffs: Tensor, idx: Tensor) -> Tensor:
            counter.evals += idx.numel() * t.shape[0]
            return metric.segment_sqdist(evaluate(za[idx], zb[idx], coeffs, psi, t))

        return segments

    def full_features(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        counter.jvps += points.shape[0] * points.shape[1] * d
        return metric.features_and_jacobian_t(points.reshape(-1, d))

    everyone = torch.arange(B, device=z0.device)
    straight = torch.zeros(B, basis.m, d, dtype=z0.dtype, device=z0.device)
    candidates = [(0, straight)]
    if init is not None:
        candidates.append((2, init))
    if warm_start and method != "dense" and B > 0:
        warm_iter = min(max_iter, WARM_ITER if warm_start is True else int(warm_start))
        warm, warm_it = _warm_start(metric, z0, z1, psi_c, t_c, method, warm_iter, tol, counter)
        iterations += warm_it
        candidates.append((1, warm))
    if lgraph is not None and B > 0:
        from_graph, evals = lgraph.initial_coeffs(z0, z1, psi, t)
        counter.evals += evals
        candidates.append((3, from_graph))
    # Rank the starts per curve by full energy; refine the best `refine` of them and keep the
    # lowest final energy (wrong basins, not curve shape, cause the large errors).
    race_segments = segments_between(z0, z1, psi_c, t_c)
    codes = torch.tensor([c for c, _ in candidates], device=z0.device)
    stacked = torch.stack([c for _, c in candidates])  # (C, B, m, d)
    segs = torch.stack([race_segments(c, everyone) for _, c in candidates])  # (C, B, N-1)
    energies = _energy(segs)  # (C, B)
    energies = torch.where(torch.isnan(energies), torch.inf, energies)
    refine = min(refine, len(candidates))
    order = energies.argsort(dim=0, stable=True)[:refine]  # (R, B)
    starts = stacked.gather(0, order[:, :, None, None].expand(-1, -1, *stacked.shape[2:]))
    start_s = segs.gather(0, order[:, :, None].expand(-1, -1, segs.shape[-1]))
    many = lambda x: x.repeat(refine, *([1] * (x.dim() - 1)))  # noqa: E731 - (B, ...) -> (R B, ...)
    zz0, zz1 = many(z0), many(z1)
    stacked_segments = segments_between(zz0, zz1, psi_c, t_c)

    flat_starts, flat_s = starts.reshape(-1, *starts.shape[2:]), start_s.reshape(-1, segs.shape[-1])
    # The race only ranks basins when a fine phase follows: a looser tolerance suffices.
    race_tol = max(tol, COARSE_TOL) if coarse else tol
    if method == "paper":
        coeffs, energy, converged, it = _first_order(
            stacked_segments, flat_starts, flat_s, max_iter, race_tol, zz0, zz1
        )
    else:
        coeffs, energy, converged, it = _levenberg_marquardt(
            full_features, zz0, zz1, flat_starts, psi_c, t_c, max_iter, race_tol
        )
    energy = torch.where(torch.isnan(energy), torch.inf, energy).reshape(refine, B)
    coeffs = coeffs.reshape(refine, B, *coeffs.shape[1:])
    converged = converged.reshape(refine, B)
    iterations += it.reshape(refine, B).sum(0)
    cols = torch.arange(B, device=z0.device)
    ranked = energy.argsort(dim=0, stable=True)  # (R, B)
    pick = ranked[0]
    if coarse:
        # Refine the winner of each curve at n_points, and the runner-up too where the race was
        # too close to call on the coarse grid.
        close = cols[:0]
        if refine > 1:
            e1, e2 = energy[ranked[0], cols], energy[ranked[1], cols]
            # Two starts that reached the same basin have near-equal energies too: only a
            # different curve (some point apart by more than DISTINCT chords) is worth refining.
            gap = torch.einsum("nm,bmd->bnd", psi_c, coeffs[ranked[0], cols] - coeffs[ranked[1], cols])
            apart = gap.norm(dim=-1).amax(-1) > DISTINCT * (z1 - z0).norm(dim=-1)
            close = ((e2 - e1 <= CLOSE_RACE * e1) & apart).nonzero().squeeze(1)
        rows_b = torch.cat([cols, close])  # winners first, then the runner-ups of close races
        rows_r = torch.cat([pick, ranked[1 % refine, close]])
        f_coeffs, f_energy, f_conv, f_it = _levenberg_marquardt(
            full_features, z0[rows_b], z1[rows_b], coeffs[rows_r, rows_b], psi, t, max_iter, tol
        )
        f_energy = torch.where(torch.isnan(f_energy), torch.inf, f_energy)
        iterations.index_add_(0, rows_b, f_it)
        # Per curve, the better of its (one or two) fine results.
        best = cols.clone()
        runner_up = B + (f_energy[B:] < f_energy[close]).nonzero().squeeze(1)
        best[rows_b[runner_up]] = runner_up
        return f_coeffs[best], f_energy[best], f_conv[best], iterations, codes[order[rows_r[best], cols]]
    coeffs, energy, converged = coeffs[pick, cols], energy[pick, cols], converged[pick, cols]
    return coeffs, energy, converged, iterations, codes[order[pick, cols]]


def _warm_start(metric, z0, z1, psi, t, method, max_iter, tol, counter) -> tuple[Tensor, Tensor]:
    """The paper's warm start: the curve optimized against the RBF precision alone.

    Energy of the embedding ``[sqrt(kappa) z, sigma(z)]``: sigma is flat and small on the data and
    changes fast at its edges, so minimizers stay on the ridges of the precision; the Euclidean
    term (kappa: squared decoder stretch of the straight line, per curve) keeps the problem
    well posed where sigma is constant.
    """
    B, d = z0.shape
    N = t.shape[0]
    with torch.no_grad():
        dmu = metric.mean(z1) - metric.mean(z0)
    counter.evals += 2 * B
    dz2 = (z1 - z0).pow(2).sum(-1)
    kappa = torch.where(dz2 > 0, dmu.pow(2).sum(-1) / dz2.clamp(min=torch.finfo(dz2.dtype).tiny), 1.0)
    kappa = torch.where(kappa > 0, kappa, 1.0)
    prec = metric.precision
    sqrt_kappa = kappa.sqrt()

    def segments(coeffs: Tensor, idx: Tensor) -> Tensor:
        pts = evaluate(z0[idx], z1[idx], coeffs, psi, t)
        return kappa[idx, None] * (pts[:, 1:] - pts[:, :-1]).pow(2).sum(-1) + prec.segment_sqdist(pts)

    def features_jac(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        b = idx.numel()
        flat = points.reshape(b * N, d)
        sk = sqrt_kappa[idx].repeat_interleave(N)[:, None]
        sigma, j_sigma = prec.sigma_and_jacobian_t(flat)
        eye = torch.eye(d, dtype=flat.dtype, device=flat.device)
        return torch.cat([sk * flat, sigma], -1), torch.cat([sk[:, :, None] * eye, j_sigma], -1)

    start = torch.zeros(B, psi.shape[1], d, dtype=z0.dtype, device=z0.device)
    everyone = torch.arange(B, device=z0.device)
    s0 = segments(start, everyone)
    # Only a start: a loose tolerance and few iterations, the full energy decides the rest.
    tol = max(tol, 1e-4)
    if method == "paper":
        coeffs, _, _, it = _first_order(segments, start, s0, max_iter, tol, z0, z1)
    else:
        coeffs, _, _, it = _levenberg_marquardt(features_jac, z0, z1, start, psi, t, max_iter, tol)
    return coeffs, it


def _levenberg_marquardt(
    features_jac: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    z0: Tensor,
    z1: Tensor,
    coeffs: Tensor,
    psi: Tensor,
    t: Tensor,
    max_iter: int,
    tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batched Levenberg-Marquardt on ``E(a) = (N-1)/2 sum_n ||f(c_{n+1}) - f(c_n)||^2``.

    features_jac(points (b, N, d), idx) -> f (b*N, F), J^T (b*N, d, F). Every trial point is
    linearized as it is evaluated (speculatively: the features come with the Jacobian at about
    the cost of the Jacobian alone, and most steps are accepted), so one decoder pass per
    iteration serves both the acceptance test and the next step.
    Returns coeffs, energies, converged, iterations (per curve).

    A curve converges when a step changes its energy, or its length ``sum sqrt(s_n)`` while the
    energy changes by less than ``LENGTH_TOL_FACTOR * tol``, by less than ``tol`` relative: near
    the optimum the energy keeps creeping down only by evening out the speed along the curve,
    ill-conditioned in a polynomial basis and irrelevant to the length (the distance).
    """
    B, m, d = coeffs.shape
    N = psi.shape[0]
    coeffs = coeffs.clone()
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    if B == 0:
        return coeffs, coeffs.new_zeros(0), iterations.bool(), iterations

    def linearize(c: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Segments (b, N-1), features (b, N, F) and transposed Jacobians (b, N, d, F)."""
        f, jac = features_jac(evaluate(z0[idx], z1[idx], c, psi, t), idx)
        f, jac = f.reshape(idx.numel(), N, -1), jac.reshape(idx.numel(), N, d, -1)
        return (f[:, 1:] - f[:, :-1]).pow(2).sum(-1), f, jac

    everyone = torch.arange(B, device=z0.device)
    s, f, jac = linearize(coeffs, everyone)
    e, length = _energy(s), s.sqrt().sum(-1)
    grad, hess = gauss_newton_system(f, jac, psi)
    energies = e.clone()
    converged = e == 0  # z0 == z1, or already optimal
    # A non-finite energy or Jacobian (e.g. a decoder returning NaN) ends the curve: not converged.
    finite = torch.isfinite(e) & torch.isfinite(grad).all(-1) & torch.isfinite(hess).flatten(1).all(-1)
    # The state of the curves still iterating, compacted: rows of `active` (curve indices). A
    # curve that finishes writes its results out and leaves, so the work shrinks with the batch.
    active = (~converged & finite).nonzero().squeeze(1)
    c, e, length, grad, hess, jac = (x[active] for x in (coeffs, e, length, grad, hess, jac))
    lam = torch.full_like(e, 1e-3)
    nu = torch.full_like(e, 2.0)
    # Structured secant model of the curvature Gauss-Newton leaves out (sum_n r_n . d2 r_n, large:
    # geodesic residuals do not vanish at the optimum), updated from Jacobian changes.
    curv = torch.zeros_like(hess)

    for _ in range(max_iter):
        if active.numel() == 0:
            break
        step, predicted, solved = lm.propose(grad, hess, curv, lam, N - 1)
        trial = c + step.reshape(-1, m, d)
        s_new, f_new, jac_new = linearize(trial, active)
        e_new, l_new = _energy(s_new), s_new.sqrt().sum(-1)
        iterations[active] += 1
        # The new system at every trial point (rejected ones are dropped by lm.update): one
        # batched kernel call costs less than picking the accepted rows out first.
        g_new, h_new = gauss_newton_system(f_new, jac_new, psi)
        g_old_jac, _ = gauss_newton_system(f_new, jac, psi, grad_only=True)
        accept, done, ok, e, length, grad, hess, curv, lam, nu = lm.update(
            e, length, e_new, l_new, grad, g_new, g_old_jac, hess, h_new, curv, step, predicted, solved,
            lam, nu, tol=tol, length_tol_factor=LENGTH_TOL_FACTOR,
        )  # fmt: skip
        rejected = (~accept).nonzero().squeeze(1)
        if rejected.numel():  # keep their points (rare: most steps are accepted)
            trial[rejected], jac_new[rejected] = c[rejected], jac[rejected]
        c, jac = trial, jac_new
        leave = done | ~ok
        if bool(leave.any()):
            out = leave.nonzero().squeeze(1)
            rows = active[out]
            coeffs[rows], energies[rows] = c[out], e[out]
            converged[rows], finite[rows] = done[out], ok[out]
            stay = (~leave).nonzero().squeeze(1)
            active = active[stay]
            c, e, length, grad, hess, jac, curv, lam, nu = (
                x[stay] for x in (c, e, length, grad, hess, jac, curv, lam, nu)
            )
    coeffs[active], energies[active] = c, e  # curves that hit the iteration limit
    return coeffs, energies, converged & finite, iterations


def _first_order(
    segments: Callable[[Tensor, Tensor], Tensor],
    coeffs: Tensor,
    s: Tensor,
    max_iter: int,
    tol: float,
    z0: Tensor,
    z1: Tensor,
    lr: float = 0.05,
    window: int = 20,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The paper's gradient-based optimization: batched Adam, per-curve convergence.

    Coefficients are optimized in units of ``||z1 - z0||`` so one learning rate fits all curves;
    a curve converges when its best energy improved by less than ``tol`` (relative) over the
    last ``window`` iterations. The best iterate per curve is returned.
    """
    B = coeffs.shape[0]
    e = _energy(s)
    unit = (z1 - z0).norm(dim=-1).clamp(min=torch.finfo(z0.dtype).eps)[:, None, None]
    x = (coeffs / unit).clone()
    best_x, best_e = x.clone(), e.clone()
    ref_e = e.clone()
    m1 = torch.zeros_like(x)
    m2 = torch.zeros_like(x)
    converged = (e == 0) | ~torch.isfinite(e)
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    beta1, beta2, eps = 0.9, 0.999, 1e-12
    for step in range(1, max_iter + 1):
        active = (~converged).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        with torch.enable_grad():
            xa = x[active].requires_grad_(True)
            ea = _energy(segments(xa * unit[active], active))
            (g,) = torch.autograd.grad(ea.sum(), xa)
        ea = ea.detach()
        improved = ea < best_e[active]
        best_e[active] = torch.where(improved, ea, best_e[active])
        best_x[active] = torch.where(improved[:, None, None], x[active], best_x[active])
        m1[active] = beta1 * m1[active] + (1 - beta1) * g
        m2[active] = beta2 * m2[active] + (1 - beta2) * g * g
        iterations[active] += 1
        it = iterations[active, None, None].to(x.dtype)
        update = (m1[active] / (1 - beta1**it)) / ((m2[active] / (1 - beta2**it)).sqrt() + eps)
        x[active] = x[active] - lr * update
        if step % window == 0:
            gain = (ref_e[active] - best_e[active]) / ref_e[active]
            converged[active[gain < tol * window]] = True
            ref_e[active] = best_e[active]
    return best_x * unit, best_e, converged & torch.isfinite(best_e), iterations


def _cached_graph(metric: ExpectedMetric, latents: Tensor | None, counter: _Counter) -> LatentGraph:
    """The metric's graph for these latents, built on first use (keyed so that changed RBF
    weights or latents give a new graph)."""
    key = (
        metric.precision.weights._version,
        None if latents is None else (latents.data_ptr(), tuple(latents.shape), latents._version),
    )
    cache = metric.__dict__.setdefault("_graph_cache", {})
    if key not in cache:
        cache.clear()
        cache[key] = LatentGraph(metric, latents)
        counter.evals += cache[key].edge_evals
    return cache[key]


def _dense_multistart(metric, z0, z1, n_points, max_iter, tol, batch_size, graph, latents) -> GeodesicResult:
    """The accuracy oracle: free polylines minimized to convergence from several starts (the
    default solver's curve and the curves of its straight, warm and graph starts), keeping the
    shortest per pair."""
    straight = curves_straight(z0, z1, n_points)
    starts = []
    evals = jvps = 0
    # The default solver's curve, and curves from each start alone, with longer warm starts and
    # every start refined at full resolution: the oracle explores more basins than the default.
    explore = {"graph": False, "warm_start": 4 * WARM_ITER}
    every_start = {"refine": len(INIT_NAMES), "coarse_points": n_points, "warm_start": 4 * WARM_ITER}
    for start_opts in ({}, {"graph": False}, {"graph": False, "warm_start": False}, explore, every_start):
        r = geodesics(
            metric, z0, z1, method="default", batch_size=batch_size, latents=latents,
            **({"graph": graph} | start_opts),
        )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        starts.append((r.points(n_points) - straight)[:, 1:-1])
    best = None
    for init in starts:
        r = geodesics(
            metric, z0, z1, method="dense", n_points=n_points, max_iter=max_iter, tol=tol,
            batch_size=batch_size, init=init,
        )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        if best is None:
            best = r
            continue
        better = r.lengths < best.lengths
        best.curves.coeffs = torch.where(better[:, None, None], r.curves.coeffs, best.curves.coeffs)
        for name in ("lengths", "energies", "converged", "iterations", "init"):
            setattr(best, name, torch.where(better, getattr(r, name), getattr(best, name)))
    assert best is not None
    best.decoder_evals, best.decoder_jvps = evals, jvps
    return best
