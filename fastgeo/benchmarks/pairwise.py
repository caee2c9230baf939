"""Pairwise layer: :func:`fastgeo.pairwise_distances` on M latent codes (all M (M-1) / 2 pairs),
time and time per geodesic against M."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..pairwise import PairwiseReport, pairwise_distances
from .generator import latent_codes, synthetic_generator
from .timing import time_fn

if TYPE_CHECKING:
    from .settings import Settings


def run_pairwise(
    settings: Settings, device: torch.device, log: Callable[[str], None]
) -> tuple[list[dict], list[dict]]:
    """One row per M, and skipped entries (none)."""
    metric, clusters = synthetic_generator(dtype=settings.dtype, device=device)
    Z_all = latent_codes(max(settings.pairwise_ms), clusters)
    d = int(Z_all.shape[1])
    D = int(metric.precision.weights.shape[0])
    rows = []
    for M in settings.pairwise_ms:
        Z = Z_all[:M]
        reports: list[PairwiseReport] = []

        def call(Z: torch.Tensor = Z, reports: list[PairwiseReport] = reports) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # unconverged pairs: counted below
                _, report = pairwise_distances(metric, Z, progress=False, return_report=True)
            reports.append(report)

        # the warm-up call also builds the solver's graph, cached on the metric
        t = time_fn(call, rounds=settings.pairwise_rounds, warmup=1, device=device)
        report = reports[-1]
        row = {
            "layer": "pairwise", "M": M, "geodesics": report.n_pairs,
            "shape": f"M={M}, d={d}, D={D}", "shapes": {"M": M, "d": d, "D": D},
            "dtype": str(settings.dtype).replace("torch.", ""), "time_s": t,
            "time_per_geodesic_s": t["min"] / max(report.n_pairs, 1),
            "not_converged": report.n_failed, "chunk_size": report.chunk_size,
        }  # fmt: skip
        rows.append(row)
        log(f"  pairwise M={M:<5d} {report.n_pairs:6d} geodesics  {t['min']:.3f} s  "
            f"{1e3 * row['time_per_geodesic_s']:.2f} ms/geodesic")  # fmt: skip
    return rows, []
