"""Plain Gauss-Newton steps first, then the secant model for the curves they leave creeping.

Calls without the secant model (the lagged mode of smooth decoders, d >= 8: see
:func:`fastgeo.solver.options.solver_options`) take plain Gauss-Newton steps in a banded system:
on trained VAEs with d = 12-64 1.1-1.9x less time than with the model, the same lengths. But
where the curvature Gauss-Newton leaves out is large along the whole curve (a trained d = 24
three-layer tanh MLP), plain steps creep: 11 of 16 curves at the iteration limit with their
lengths still falling ~6 % per 300 iterations (fresher matrices, a longer memory or plain steps
restarted with fresh damping creep on), where the secant model converges all 16 in half the time
(bench/RESULTS.md, "Creeping curves finish with the secant model"). So a curve still
iterating after SECANT_AFTER plain iterations goes on with the secant model (a dense system, the
left-out curvature measured from gradient differences) for the rest of its iteration limit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .finer_gain import FinerGains
from .levenberg_marquardt import levenberg_marquardt
from .problem import Grid, Parts, PointGradient
from .result import MAX_ITER

SECANT_AFTER = 100  # plain iterations before a curve still iterating switches (at most half its limit)


def plain_then_secant(
    parts: Parts,
    z0: Tensor,
    z1: Tensor,
    coeffs: Tensor,
    grid: Grid,
    max_iter: int,
    tol: float,
    gradient: PointGradient | None = None,
    secant: bool = True,
    finer: FinerGains | None = None,
    rounded: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`.levenberg_marquardt` with the same arguments and results (coeffs, energies, status
    codes, iterations per curve); without ``secant``, the curves that reach ``min(SECANT_AFTER,
    max_iter // 2)`` plain iterations go on with the secant model, within ``max_iter`` in all."""
    plain = min(SECANT_AFTER, max_iter // 2)
    if secant or plain < 1:
        return levenberg_marquardt(
            parts, z0, z1, coeffs, grid, max_iter, tol, gradient, secant, finer, rounded
        )
    coeffs, energies, status, iterations = levenberg_marquardt(
        parts, z0, z1, coeffs, grid, plain, tol, gradient, False, finer, rounded
    )
    creep = (status == MAX_ITER).nonzero().squeeze(1)
    if creep.numel() == 0:
        return coeffs, energies, status, iterations

    # The callbacks are told rows of the whole batch, as in the first call.
    def sub_parts(points: Tensor, idx: Tensor) -> list[tuple[Tensor, Tensor]]:
        return parts(points, creep[idx])

    def sub_gradient(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        assert gradient is not None
        return gradient(points, creep[idx])

    sub_finer = None
    if finer is not None:
        sub_finer = FinerGains(finer.psi, finer.gains.new_full((creep.numel(),), torch.nan), finer.banded)
    c, e, s, it = levenberg_marquardt(
        sub_parts, z0[creep], z1[creep], coeffs[creep], grid, max_iter - plain, tol,
        sub_gradient if gradient is not None else None, True, sub_finer, rounded,
    )  # fmt: skip
    coeffs[creep], energies[creep], status[creep] = c, e, s
    iterations[creep] += it
    if finer is not None and sub_finer is not None:
        finer.gains[creep] = sub_finer.gains
    return coeffs, energies, status, iterations
