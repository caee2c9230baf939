"""The race of starts: every start of a curve is scored by the full energy, the best ``refine``
of them are optimized to convergence on a coarse grid, and the winner (with every racer too
close to it to call, where a wall separates the two) is refined at full resolution."""

from __future__ import annotations

import torch
from torch import Tensor

from .._progress import phase
from ..discrete import energy_from_segments, length_from_segments
from ..metric import ExpectedMetric
from .defaults import SPLINE_METHODS
from .finer_gain import finer_gains
from .first_order import adam
from .graph import LatentGraph
from .levenberg_marquardt import levenberg_marquardt
from .options import SolverOptions
from .problem import Grid, Parts, full_gradient, full_parts, full_segments
from .result import Work
from .secant_finish import plain_then_secant
from .starts import starts

# The race only ranks basins, but racers stopped at 1e-3 stood on plateaus of the energy and were
# ranked there: a racer 3.7 % behind on the coarse grid went on to the shorter basin (a trained
# d = 5 conv decoder: the default 3.6 % long on one of 48 pairs; a d = 12 MLP in a rotated frame of
# its latent space 1.2 %, on random pairs 0.9 %). 1e-4: those found, 4-18 % more time
# (bench/RESULTS.md, "Other frames of one latent space").
COARSE_TOL = 1e-4
CLOSE_RACE = 0.01  # racers within this relative energy of their curve's winner are refined too
DISTINCT = 0.05  # ... if their curve is this fraction of the chord away from the winner's
SAME_BASIN = 1e-3  # ... and if the curve halfway between the two is this much above both in energy
STEPPED_OVER = 0.02  # relative energy a racer gains at its grid's midpoints to count as under-resolved


def _finite_or_inf(energy: Tensor) -> Tensor:
    return torch.where(torch.isnan(energy), torch.inf, energy)


def solve_batch(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    init: Tensor | None,
    graph: LatentGraph | None,
    work: Work,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One batch of curves: returns coeffs (B, m, d), energies, status codes, iterations, the
    start code (B,) each result came from, and each converged curve's predicted relative gain in
    the subdivided basis (B,; NaN where not predicted, or without ``opts.subdivide``).

    With ``coarse_points < n_points`` (``method="default"`` or ``"fast"``) the starts race on that coarser
    grid (every phase costs in proportion to the points per curve), and only the winner of each
    curve is refined at ``n_points``.
    """
    B = z0.shape[0]
    max_iter = opts.max_iter
    fine = Grid.of(opts.basis, opts.n_points, z0)
    coarse_n = opts.coarse_points if opts.method in SPLINE_METHODS else opts.n_points
    is_coarse = coarse_n < opts.n_points
    coarse = Grid.of(opts.basis, coarse_n, z0) if is_coarse else fine
    with phase("starts"):
        candidates, iterations = starts(
            metric,
            z0,
            z1,
            opts.m,
            fine,
            coarse,
            opts.method,
            opts.warm_iter,
            opts.tol,
            init,
            graph,
            opts.corridors,
            work,
            opts.secant,
            opts.explore_iter,
        )
    features = full_parts(metric, work, opts.fresh_tangent_dtype)
    # The race decides the basin from fresh matrices and their gradients: exact tangents. The
    # refinement's matrices only shape its steps (exact gradients): tangents maybe rounded.
    refining = full_parts(metric, work, opts.tangent_dtype) if opts.tangent_dtype is not None else features
    gradient = full_gradient(metric, work) if opts.lagged else None
    codes = torch.tensor([c for c, _ in candidates], device=z0.device)
    stacked = torch.stack([c for _, c in candidates])  # (C, B, m, d)
    # Race the distinct starts of each curve (by length: it does not depend on how a start is
    # parametrized, which the optimization fixes anyway); keep the lowest final energy (wrong
    # basins, not curve shape, cause the large errors).
    start_idx, curve_idx = _distinct_starts(metric, z0, z1, stacked, coarse, opts.refine, work)
    rtol = max(opts.tol, COARSE_TOL) if is_coarse else opts.tol
    racers = stacked[start_idx, curve_idx]
    # The race decides the basin: Gauss-Newton matrices fresh at every step (lagged ones, even
    # after 4 fresh steps, let racers of a trained d = 12 VAE drift into other basins, 0.3-0.7 %
    # longer); the refinement may lag them.
    with phase(f"race: {racers.shape[0]} starts on {coarse_n} points"):
        raced = _race(metric, features, z0, z1, racers, curve_idx, coarse, opts, rtol, work)
    coeffs, energy, status, it = raced
    iterations.index_add_(0, curve_idx, it)
    energy = _finite_or_inf(energy)
    if is_coarse:
        # A racer that steps over a thin wall between its points looks short on the grid it was
        # optimized on, and the refinement cannot leave the basin it won (trained 2-D VAEs: 13-18 %
        # long): where the grid's midpoints raise its energy by more than STEPPED_OVER, it is
        # ranked by that energy. Others keep their own (racers that reached one basin have
        # near-equal energies, and a re-measured one could order them by rounding).
        checked = _checked_energy(metric, z0[curve_idx], z1[curve_idx], coeffs, opts, coarse, work)
        energy = torch.where(checked > (1 + STEPPED_OVER) * energy, _finite_or_inf(checked), energy)
    pick = _per_curve_best(energy, curve_idx, B)  # the winning racer of each curve
    if not is_coarse:
        unknown = torch.full_like(energy[pick], torch.nan)
        return coeffs[pick], energy[pick], status[pick], iterations, codes[start_idx[pick]], unknown

    # Refine the winner of each curve at n_points, and every other racer the coarse grid cannot
    # tell from it (within CLOSE_RACE in energy).
    cols = torch.arange(B, device=z0.device)
    e_win = energy[pick][curve_idx]
    others = torch.ones_like(curve_idx, dtype=torch.bool)
    others[pick] = False
    close = (others & (energy - e_win <= CLOSE_RACE * e_win)).nonzero().squeeze(1)
    owner = curve_idx[close]
    # Two starts that reached the same basin have near-equal energies too: only a different curve
    # (some point apart by more than DISTINCT chords) is worth refining.
    gap = torch.einsum("nm,bmd->bnd", coarse.psi, coeffs[pick[owner]] - coeffs[close])
    apart = gap.norm(dim=-1).amax(-1) > DISTINCT * (z1 - z0)[owner].norm(dim=-1)
    close, owner = close[apart], owner[apart]
    # ... and only where a wall separates it from the winner: refined, racers of one flat valley
    # reach one curve.
    walled = _separated(metric, z0[owner], z1[owner], coeffs[pick[owner]], coeffs[close], fine, work)
    close, owner = close[walled], owner[walled]
    rows_b = torch.cat([cols, owner])  # winners first, then the close racers
    rows_r = torch.cat([pick, close])
    finer = finer_gains(opts, fine, rows_b.numel(), z0)
    with phase(f"refinement on {opts.n_points} points"):
        f_coeffs, f_energy, f_status, f_it = plain_then_secant(
            refining, z0[rows_b], z1[rows_b], coeffs[rows_r], fine, max_iter, opts.tol, gradient, opts.secant,
            finer=finer, rounded=opts.tangent_dtype is not None,
        )  # fmt: skip
    f_energy = _finite_or_inf(f_energy)
    iterations.index_add_(0, rows_b, f_it)
    # Per curve, the best of its fine results (the winner's where energies tie).
    best = _per_curve_best(f_energy, rows_b, B)
    gains = finer.gains[best] if finer is not None else torch.full_like(f_energy[best], torch.nan)
    return f_coeffs[best], f_energy[best], f_status[best], iterations, codes[start_idx[rows_r[best]]], gains


def _distinct_starts(
    metric: ExpectedMetric, z0: Tensor, z1: Tensor, stacked: Tensor, grid: Grid, refine: int, work: Work
) -> tuple[Tensor, Tensor]:
    """The racers: for each curve its ``refine`` shortest starts, leaving out a start whose curve
    is within DISTINCT chords of a shorter one (it would race into the same basin). Returns the
    start index and the curve index of each racer (R,), curves in order."""
    C, B = stacked.shape[:2]
    everyone = torch.arange(B, device=z0.device)
    segments = full_segments(metric, z0, z1, grid, work)
    lengths = _finite_or_inf(torch.stack([length_from_segments(segments(c, everyone)) for c in stacked]))
    order = lengths.argsort(dim=0, stable=True)  # (C, B)
    pts = torch.einsum("nm,cbmd->cbnd", grid.psi, stacked)  # deviations from the straight line
    chord = (z1 - z0).norm(dim=-1)
    keep = torch.zeros(C, B, dtype=torch.bool, device=z0.device)
    for rank in range(C):
        s = order[rank]
        dev = pts[s, everyone]  # (B, N, d)
        chosen = pts[order[:rank], everyone] if rank else dev[None]
        far = (
            (chosen - dev).norm(dim=-1).amax(-1) > DISTINCT * chord
            if rank
            else torch.ones_like(chord, dtype=torch.bool)
        )
        kept_before = keep[order[:rank], everyone] if rank else far[None]
        distinct = (far | ~kept_before).all(0) if rank else far
        keep[s, everyone] = distinct & (keep.sum(0) < refine)
    curve_idx, start_idx = keep.T.nonzero(as_tuple=True)
    return start_idx, curve_idx


def _separated(
    metric: ExpectedMetric, a: Tensor, b: Tensor, c1: Tensor, c2: Tensor, grid: Grid, work: Work
) -> Tensor:
    """(R,) bool: whether racers c1 and c2 (R, m, d) lie in different basins, judged on ``grid``:
    the curve halfway between them is more than SAME_BASIN above both in energy. Racers that
    stopped apart in one flat valley (d = 32: 0.1-0.5 chords apart, within 0.2 % in energy) have
    a lower or equal curve between them, and refined they reach the same curve; two curves on
    either side of a wall have the wall between them."""
    R = a.shape[0]
    everyone = torch.arange(R, device=a.device).repeat(3)
    segments = full_segments(metric, a, b, grid, work)
    energy = energy_from_segments(segments(torch.cat([c1, c2, 0.5 * (c1 + c2)]), everyone)).reshape(3, R)
    return ~(energy[2] <= (1 + SAME_BASIN) * energy[:2].amax(0))


def _checked_energy(
    metric: ExpectedMetric, a: Tensor, b: Tensor, coeffs: Tensor, opts: SolverOptions, grid: Grid, work: Work
) -> Tensor:
    """Discrete energy (R,) of racers (R, m, d) on their grid with its midpoints added."""
    finer = Grid.of(opts.basis, 2 * grid.n - 1, a)
    everyone = torch.arange(a.shape[0], device=a.device)
    return energy_from_segments(full_segments(metric, a, b, finer, work)(coeffs, everyone))


def _per_curve_best(energy: Tensor, curve_idx: Tensor, B: int) -> Tensor:
    """(B,): per curve the row of lowest energy (the first such row where energies tie; -1 if
    the curve has none)."""
    out = torch.full((B,), -1, dtype=torch.long, device=energy.device)
    order = torch.argsort(energy, stable=True)
    order = order[torch.argsort(curve_idx[order], stable=True)]  # by curve, then energy
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = curve_idx[order[1:]] != curve_idx[order[:-1]]
    out[curve_idx[order[first]]] = order[first]
    return out


def _race(
    metric: ExpectedMetric,
    features: Parts,
    z0: Tensor,
    z1: Tensor,
    starts: Tensor,
    curve_idx: Tensor,
    grid: Grid,
    opts: SolverOptions,
    tol: float,
    work: Work,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Optimize every racer (R, m, d) on the grid to convergence: however far behind its curve's
    best after a few iterations, a racer can end first. (Racers more than 5 % behind after 4
    iterations used to stop there: pairs of random codes of the two-moons and digits VAEs came
    out up to 4.8 % long, a LeakyReLU conv decoder's 4.9 %; bench/RESULTS.md, "Racers stopped too
    early" and "Every racer to convergence".)
    Returns coeffs, energies, status codes and iterations per racer."""
    a, b = z0[curve_idx], z1[curve_idx]
    if opts.method == "paper":
        segments = full_segments(metric, a, b, grid, work)
        everyone = torch.arange(len(curve_idx), device=z0.device)
        return adam(segments, starts, segments(starts, everyone), opts.max_iter, tol, a, b)
    return levenberg_marquardt(features, a, b, starts, grid, opts.max_iter, tol, secant=opts.secant)
