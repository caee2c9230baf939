"""Pairwise layer: :func:`fastgeo.pairwise_distances` on M latent codes (all M (M-1) / 2 pairs),
time and time per geodesic against M, in the exact mode (every pair a geodesic), in the draft
mode (every pair a coarse curve, at the exact mode's sizes) and in the graph mode (chains of
geodesics between near codes); the approximate modes with their measured error on a sample of
pairs solved exactly."""

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
    Z_all = latent_codes(max(settings.pairwise_ms + settings.pairwise_graph_ms), clusters)
    d = int(Z_all.shape[1])
    D = int(metric.precision.weights.shape[0])
    rows = []
    runs = [(mode, M) for M in settings.pairwise_ms for mode in ("exact", "draft")]
    runs += [("graph", M) for M in settings.pairwise_graph_ms]
    for mode, M in runs:
        Z = Z_all[:M]
        reports: list[PairwiseReport] = []

        def call(Z: torch.Tensor = Z, reports: list[PairwiseReport] = reports, mode: str = mode) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # unconverged pairs: counted below
                sample = {"error_sample": settings.pairwise_graph_sample} if mode != "exact" else {}
                _, report = pairwise_distances(
                    metric, Z, mode=mode, progress=False, return_report=True, **sample
                )
            reports.append(report)

        # the warm-up call also builds the solver's graph, cached on the metric
        t = time_fn(call, rounds=settings.pairwise_rounds, warmup=1, device=device)
        report = reports[-1]
        err = report.graph_error if mode == "graph" else report.draft_error
        row = {
            "layer": "pairwise", "mode": mode, "M": M, "geodesics": report.n_pairs,
            "shape": f"M={M}, d={d}, D={D}", "shapes": {"M": M, "d": d, "D": D},
            "dtype": str(settings.dtype).replace("torch.", ""), "time_s": t,
            "time_per_geodesic_s": t["min"] / max(report.n_pairs, 1),
            "not_converged": report.n_failed, "chunk_size": report.chunk_size,
            "graph_edges": report.graph_edges if mode == "graph" else None,
            "error_mean_pct": None if err is None else 100 * err.mean,
            "error_max_pct": None if err is None else 100 * err.max,
            "error_pairs": None if err is None else err.pairs,
        }  # fmt: skip
        rows.append(row)
        extra = "" if err is None else f"  {mode} error mean {100 * err.mean:.2f} % max {100 * err.max:.2f} %"
        log(f"  pairwise {mode:5s} M={M:<5d} {report.n_pairs:6d} pairs  {t['min']:.3f} s  "
            f"{1e3 * row['time_per_geodesic_s']:.2f} ms/pair{extra}")  # fmt: skip
    return rows, []
