"""Solver layer: ``method="default"``, ``"fast"`` and ``"paper"`` (and StochMan's default
``connecting_geodesic`` if importable) on the same pairs, in the same run, on a synthetic
generator (:mod:`.generator`: a random 2-D MLP decoder whose RBF precision raises thin walls
between clusters, not a trained VAE): time of one batched call and excess length ``L / L_best - 1``
over the shortest curve known for each pair, ``method="dense"``'s (float64) or any method's,
every curve measured alike (:mod:`fastgeo.benchmarks.accuracy`). The dense oracle is not always
the shortest: on this generator's thin walls its 128-node polylines end longer on some pairs
(``under_resolved`` or ``straight_fallback``), so an excess over it alone would be negative."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..solver import geodesics
from ..solver.graph_cache import forget_graphs
from .accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from .generator import pairs, synthetic_generator
from .stochman_peer import stochman_geodesics
from .timing import sync, time_fn

if TYPE_CHECKING:
    from .settings import Settings

GRID = MEASURE_POINTS  # every curve is measured on the same grid, in float64


def run_solver(
    settings: Settings, device: torch.device, log: Callable[[str], None]
) -> tuple[list[dict], list[dict]]:
    """One row per method, and skipped entries."""
    metric, clusters = synthetic_generator(dtype=settings.dtype, device=device)
    z0, z1 = pairs(settings.solver_pairs, clusters)
    B = z0.shape[0]
    D = int(metric.precision.weights.shape[0])
    m64 = metric.to(torch.float64)
    # The oracle is not a measurement: one thread, because its many small float64 steps gain
    # nothing from two and stall on OpenMP barriers when the machine is shared (10x and more).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # unconverged curves are counted below
            dense = geodesics(m64, z0.double(), z1.double(), method="dense")
    finally:
        torch.set_num_threads(threads)
    dense_s = time.perf_counter() - start
    log(f"  solver dense oracle (float64): {dense_s:.1f} s, converged {int(dense.converged.sum())}/{B}")

    runs: list[tuple[str, str, Callable[[], Tensor], float | None]] = []
    for method in settings.solver_methods:

        def call(method: str = method) -> Tensor:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return geodesics(metric, z0, z1, method=method).points(GRID)

        # the first call builds the initialization graph (cached on the metric): timed apart
        forget_graphs(metric)
        start = time.perf_counter()
        call()
        sync(device)
        runs.append((f"fastgeo {method}", method, call, time.perf_counter() - start))
    skipped = []
    sm = stochman_geodesics(metric, GRID)
    if sm is None:
        skipped.append({"layer": "solver", "what": "StochMan", "reason": "stochman is not importable"})
    else:
        run_sm = sm[0]
        runs.append((sm[1], "stochman", lambda: run_sm(z0, z1), None))

    rows, lengths = [], []
    for label, method, call, first in runs:
        t = time_fn(call, rounds=settings.solver_rounds, warmup=1, device=device)
        with torch.no_grad():
            lengths.append(measured_lengths(m64, call().detach()))
        row = {
            "layer": "solver", "method": label, "key": method, "pairs": B,
            "shape": f"B={B}, d={z0.shape[1]}, D={D}", "shapes": {"B": B, "d": int(z0.shape[1]), "D": D},
            "dtype": str(settings.dtype).replace("torch.", ""),
            "time_s": t, "first_call_s": first, "time_per_geodesic_s": t["min"] / B,
            "dense_converged": int(dense.converged.sum()), "dense_s": dense_s,
        }  # fmt: skip
        rows.append(row)
    oracle = oracle_lengths(m64, dense)
    known = torch.stack([oracle, *lengths])
    best = torch.where(torch.isnan(known), torch.inf, known).min(0).values  # a method's NaN is no curve
    longer = int((oracle > best * (1 + 1e-6)).sum())
    log(f"  solver reference: the shortest known curve per pair (the dense oracle's longer on {longer}/{B})")
    for row, measured in zip(rows, lengths, strict=True):
        ex = measured / best - 1
        row.update(mean_excess_pct=100 * float(ex.mean()), worst_excess_pct=100 * float(ex.max()),
                   dense_longer=longer)  # fmt: skip
        log(f"  solver {row['method']:18s} {row['time_s']['min']:.3f} s  mean excess "
            f"{row['mean_excess_pct']:.3f} %  worst {row['worst_excess_pct']:.3f} %")  # fmt: skip
    sm_rows = [r for r in rows if r["key"] == "stochman"]
    for row in rows:
        # > 1: that many times faster than StochMan on the same pairs, same run
        row["ratio_vs_stochman"] = sm_rows[0]["time_s"]["min"] / row["time_s"]["min"] if sm_rows else None
    return rows, skipped
