"""The accuracy oracle (``method="dense"``): free polylines minimized to convergence from
several starts, keeping the shortest per pair."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..curves import straight_line, time_grid
from ..metric import ExpectedMetric
from .options import WARM_ITER, SolverOptions
from .result import INIT_NAMES, GeodesicResult


def exploring_starts(n_points: int) -> tuple[dict[str, Any], ...]:
    """Options of the default solver whose curves start the oracle: the default's own curve, and
    curves from each start alone, with longer warm starts and every start raced at ``n_points``
    (the oracle explores more basins than the default)."""
    return (
        {},
        {"graph": False},
        {"graph": False, "warm_start": False},
        {"graph": False, "warm_start": 4 * WARM_ITER},
        {"refine": len(INIT_NAMES), "coarse_points": n_points, "warm_start": 4 * WARM_ITER},
    )


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
    default solver (``solve`` is :func:`fastgeo.geodesics`), the shortest per pair."""
    n = opts.n_points
    straight = straight_line(z0, z1, time_grid(n, z0))
    inits = []
    evals = jvps = 0
    for explore in exploring_starts(n):
        r = solve(
            metric,
            z0,
            z1,
            method="default",
            batch_size=opts.batch_size,
            latents=latents,
            progress=False,
            **({"graph": graph} | explore),
        )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        inits.append((r.points(n) - straight)[:, 1:-1])
    best = None
    for init in inits:
        r = solve(
            metric,
            z0,
            z1,
            method="dense",
            n_points=n,
            max_iter=opts.max_iter,
            tol=opts.tol,
            batch_size=opts.batch_size,
            init=init,
            progress=False,
        )
        evals, jvps = evals + r.decoder_evals, jvps + r.decoder_jvps
        if best is None:
            best = r
            continue
        better = r.lengths < best.lengths
        best.curves.coeffs = torch.where(better[:, None, None], r.curves.coeffs, best.curves.coeffs)
        for name in (
            "lengths",
            "length_errors",
            "measure_points",
            "energies",
            "status_code",
            "iterations",
            "init",
        ):
            setattr(best, name, torch.where(better, getattr(r, name), getattr(best, name)))
    assert best is not None
    best.decoder_evals, best.decoder_jvps = evals, jvps
    return best
