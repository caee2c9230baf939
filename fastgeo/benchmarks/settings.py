"""Sizes of a benchmark run: default (minutes), quick (two to four minutes on 2 CPU cores), tiny (a
smoke test)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

LAYERS = ("ops", "solver", "pairwise")


@dataclass
class Settings:
    """Sizes of one benchmark run. ``ops_D``: decoder output size of the op shapes; op batch
    sizes are curves (B) of ``ops_N`` points; rbf_precision gets P = B * N points."""

    mode: str
    dtype: torch.dtype = torch.float32
    ops_batches: tuple[int, ...] = (256, 1024, 4096)
    ops_N: int = 32
    ops_D: int = 784
    ops_rounds: int = 5
    ops_min_total_s: float = 0.5  # more rounds for fast calls (see timing.time_fn)
    ops_one_thread_too: bool = True  # also time the ops at one thread (unless --threads is given)
    solver_pairs: int = 48
    solver_methods: tuple[str, ...] = ("default", "fast", "paper")
    solver_rounds: int = 3
    pairwise_ms: tuple[int, ...] = (16, 32, 64)
    pairwise_rounds: int = 2
    pairwise_graph_ms: tuple[int, ...] = (64, 256)  # the graph mode (chains of geodesics)
    pairwise_graph_sample: int = 100  # pairs solved exactly to measure the graph mode's error
    # Threads per layer (None: torch's current setting). The solver layers default to one, as in
    # bench/RESULTS.md: their many small batched ops gain little from more, and on a shared
    # machine OpenMP barriers stall them (100x seen on the 2-core VM under load).
    layer_threads: dict[str, int | None] = field(
        default_factory=lambda: {"ops": None, "solver": 1, "pairwise": 1}
    )


def settings_for(quick: bool = False, tiny: bool = False) -> Settings:
    """Default (minutes), ``quick`` (two to four minutes on 2 CPU cores) or ``tiny`` (a smoke test, s)."""
    if tiny:
        return Settings("tiny", ops_batches=(16, 32), ops_N=8, ops_D=16, ops_rounds=2, ops_min_total_s=0.0,
                        solver_pairs=6, solver_rounds=1, pairwise_ms=(4,), pairwise_rounds=1,
                        pairwise_graph_ms=(12,), pairwise_graph_sample=8)  # fmt: skip
    if quick:
        return Settings("quick", ops_batches=(256, 1024), ops_D=64, ops_rounds=3, ops_min_total_s=0.25,
                        solver_pairs=24, solver_rounds=2, pairwise_ms=(8, 16), pairwise_rounds=1,
                        pairwise_graph_ms=(48,), pairwise_graph_sample=40)  # fmt: skip
    return Settings("default")
