"""What a curve would gain in a finer basis, predicted by the Gauss-Newton model of its energy there.

The per-point products of a linearization (:func:`fastgeo.solver.linearize.point_products`) do
not depend on the basis: assembled with a finer basis sampled on the same grid they give the
gradient and Gauss-Newton matrix of the finer curve problem, and Levenberg-Marquardt's first step
there predicts the decrease. The solver's last linearization of a curve thus tells, with no
decoder work, whether subdivision (:mod:`.subdivide`) would pay.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..curves import BSplineBasis
from ..ops.band import block_bandwidth
from ..ops.solver_ops import lm_propose
from .linearize import assemble
from .options import SolverOptions
from .problem import Grid

DAMPING = 1e-3  # of the predicting step (Levenberg-Marquardt's initial damping)
LIFT_GRID = 256  # the lift's coefficients are exact multiples of 1 / LIFT_GRID


def finer_basis(basis: BSplineBasis) -> BSplineBasis:
    """The B-spline with every knot span of ``basis`` halved (``2 m - 1`` interior functions)."""
    return BSplineBasis(2 * basis.m - 1)


def lift_matrix(basis: BSplineBasis, finer: BSplineBasis, like: Tensor) -> Tensor:
    """R (m', m) with ``finer(t) @ R == basis(t)``: coefficients in ``basis`` to the same curve's
    in ``finer`` (``finer``'s knots must contain ``basis``'s). Solved in float64 and rounded to
    LIFT_GRID: halving uniform spans gives multiples of 1/16 exactly, and LAPACK's last bits vary
    from call to call (with memory alignment), which made results differ between identical calls."""
    t = torch.linspace(0, 1, 4 * finer.m + 7, dtype=torch.float64, device="cpu")
    fine, coarse = finer(t), basis(t)
    lift = torch.linalg.lstsq(fine, coarse).solution
    lift = torch.round(lift * LIFT_GRID) / LIFT_GRID
    if not torch.allclose(fine @ lift, coarse, atol=1e-10):
        raise ValueError(f"{finer!r} does not contain {basis!r}")
    return lift.to(dtype=like.dtype, device=like.device)


def predicted_gain(
    grad: Tensor, hess: Tensor, energy: Tensor, segments: int, banded: tuple[int, int] | None
) -> Tensor:
    """Relative energy decrease (b,) that the damped Gauss-Newton step predicts: ``grad`` (b, p),
    ``hess`` (b, p, p) of ``sum ||r||^2 / 2`` over ``segments`` segments, ``energy`` (b,); ``banded``
    as for :func:`fastgeo.ops.solver_ops.lm_propose`. NaN or inf where not finite."""
    _, predicted, _ = lm_propose(
        grad, hess, torch.zeros_like(hess), torch.full_like(energy, DAMPING), segments, banded
    )
    return predicted / energy


@dataclass
class FinerGains:
    """Where Levenberg-Marquardt records, for each curve that converges, its predicted relative
    gain in a finer basis ``psi`` (N, m') on its grid (``gains`` (B,), NaN for the others)."""

    psi: Tensor
    gains: Tensor
    banded: bool  # the finer systems solved block by block (plain Gauss-Newton calls)

    def record(self, rows: Tensor, products: tuple[Tensor, Tensor, Tensor], energy: Tensor) -> None:
        """Predict for curves ``rows`` from their point products (v, G, C) and energies."""
        if rows.numel() == 0:
            return
        v, G, C = products
        grad, hess = assemble(v, G, C, self.psi)
        banded = (v.shape[-1], block_bandwidth(self.psi)) if self.banded else None
        self.gains[rows] = predicted_gain(grad, hess, energy, self.psi.shape[0] - 1, banded)


def finer_gains(opts: SolverOptions, grid: Grid, B: int, like: Tensor) -> FinerGains | None:
    """Where a call's final Levenberg-Marquardt phase on ``grid`` records the predicted gains of
    its ``B`` curves in the subdivided basis; None without subdivision."""
    if not opts.subdivide:
        return None
    assert isinstance(opts.basis, BSplineBasis), "subdivision halves the spans of a B-spline"
    psi = finer_basis(opts.basis)(grid.t)
    return FinerGains(psi, like.new_full((B,), torch.nan), banded=not opts.secant)
