"""The race of starts: every start of a curve is scored by the full energy, the best ``refine``
of them are optimized on a coarse grid, and the winner (with the runner-up where the race was
too close to call) is refined at full resolution."""

from __future__ import annotations

import torch
from torch import Tensor

from ..metric import ExpectedMetric, energy_from_segments
from .first_order import adam
from .graph import LatentGraph
from .levenberg_marquardt import levenberg_marquardt
from .options import SolverOptions
from .problem import Grid, full_features, full_segments
from .result import Work
from .starts import starts

COARSE_TOL = 1e-3  # the race only ranks basins: a loose relative tolerance
CLOSE_RACE = 0.01  # runner-ups within this relative energy of the winner are refined too
DISTINCT = 0.05  # ... if their curve is this fraction of the chord away from the winner's


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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One batch of curves: returns coeffs (B, m, d), energies, converged, iterations and the
    start code (B,) each result came from.

    With ``coarse_points < n_points`` (``method="default"``) the starts race on that coarser
    grid (every phase costs in proportion to the points per curve), and only the winner of each
    curve is refined at ``n_points``.
    """
    B = z0.shape[0]
    max_iter = opts.max_iter
    fine = Grid.of(opts.basis, opts.n_points, z0)
    coarse_n = opts.coarse_points if opts.method == "default" else opts.n_points
    is_coarse = coarse_n < opts.n_points
    coarse = Grid.of(opts.basis, coarse_n, z0) if is_coarse else fine
    candidates, iterations = starts(
        metric, z0, z1, opts.m, fine, coarse, opts.method, opts.warm_iter, opts.tol, init, graph, work
    )
    features = full_features(metric, work)
    # Rank the starts per curve by full energy; refine the best `refine` of them and keep the
    # lowest final energy (wrong basins, not curve shape, cause the large errors).
    everyone = torch.arange(B, device=z0.device)
    race_segments = full_segments(metric, z0, z1, coarse, work)
    codes = torch.tensor([c for c, _ in candidates], device=z0.device)
    stacked = torch.stack([c for _, c in candidates])  # (C, B, m, d)
    segs = torch.stack([race_segments(c, everyone) for _, c in candidates])  # (C, B, N-1)
    energies = _finite_or_inf(energy_from_segments(segs))  # (C, B)
    refine = min(opts.refine, len(candidates))
    order = energies.argsort(dim=0, stable=True)[:refine]  # (R, B)
    first = stacked.gather(0, order[:, :, None, None].expand(-1, -1, *stacked.shape[2:]))
    first_s = segs.gather(0, order[:, :, None].expand(-1, -1, segs.shape[-1]))
    zz0, zz1 = z0.repeat(refine, 1), z1.repeat(refine, 1)  # (R B, d): racer r of curve b at r B + b

    flat_starts, flat_s = first.reshape(-1, *first.shape[2:]), first_s.reshape(-1, segs.shape[-1])
    # The race only ranks basins when a fine phase follows: a looser tolerance suffices.
    race_tol = max(opts.tol, COARSE_TOL) if is_coarse else opts.tol
    if opts.method == "paper":
        segments = full_segments(metric, zz0, zz1, coarse, work)
        coeffs, energy, converged, it = adam(segments, flat_starts, flat_s, max_iter, race_tol, zz0, zz1)
    else:
        coeffs, energy, converged, it = levenberg_marquardt(
            features, zz0, zz1, flat_starts, coarse, max_iter, race_tol
        )
    energy = _finite_or_inf(energy).reshape(refine, B)
    coeffs = coeffs.reshape(refine, B, *coeffs.shape[1:])
    converged = converged.reshape(refine, B)
    iterations += it.reshape(refine, B).sum(0)
    cols = torch.arange(B, device=z0.device)
    ranked = energy.argsort(dim=0, stable=True)  # (R, B)
    pick = ranked[0]
    if not is_coarse:
        return (
            coeffs[pick, cols],
            energy[pick, cols],
            converged[pick, cols],
            iterations,
            codes[order[pick, cols]],
        )

    # Refine the winner of each curve at n_points, and the runner-up too where the race was too
    # close to call on the coarse grid.
    close = cols[:0]
    if refine > 1:
        e1, e2 = energy[ranked[0], cols], energy[ranked[1], cols]
        # Two starts that reached the same basin have near-equal energies too: only a different
        # curve (some point apart by more than DISTINCT chords) is worth refining.
        gap = torch.einsum("nm,bmd->bnd", coarse.psi, coeffs[ranked[0], cols] - coeffs[ranked[1], cols])
        apart = gap.norm(dim=-1).amax(-1) > DISTINCT * (z1 - z0).norm(dim=-1)
        close = ((e2 - e1 <= CLOSE_RACE * e1) & apart).nonzero().squeeze(1)
    rows_b = torch.cat([cols, close])  # winners first, then the runner-ups of close races
    rows_r = torch.cat([pick, ranked[1 % refine, close]])
    f_coeffs, f_energy, f_conv, f_it = levenberg_marquardt(
        features, z0[rows_b], z1[rows_b], coeffs[rows_r, rows_b], fine, max_iter, opts.tol
    )
    f_energy = _finite_or_inf(f_energy)
    iterations.index_add_(0, rows_b, f_it)
    # Per curve, the better of its (one or two) fine results.
    best = cols.clone()
    runner_up = B + (f_energy[B:] < f_energy[close]).nonzero().squeeze(1)
    best[rows_b[runner_up]] = runner_up
    return f_coeffs[best], f_energy[best], f_conv[best], iterations, codes[order[rows_r[best], cols]]
