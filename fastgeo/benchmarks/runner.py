"""Run the benchmark layers, print the tables, write ``results.json`` and plots."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .report import format_tables, write_json, write_plots
from .timing import environment

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
    solver_methods: tuple[str, ...] = ("default", "paper")
    solver_rounds: int = 3
    pairwise_ms: tuple[int, ...] = (16, 32, 64)
    pairwise_rounds: int = 2
    # Threads per layer (None: torch's current setting). The solver layers default to one, as in
    # bench/RESULTS.md: their many small batched ops gain little from more, and on a shared
    # machine OpenMP barriers stall them (100x seen on the 2-core VM under load).
    layer_threads: dict[str, int | None] = field(
        default_factory=lambda: {"ops": None, "solver": 1, "pairwise": 1}
    )


def settings_for(quick: bool = False, tiny: bool = False) -> Settings:
    """Default (minutes), ``quick`` (about a minute on 2 cores) or ``tiny`` (a smoke test, s)."""
    if tiny:
        return Settings("tiny", ops_batches=(16, 32), ops_N=8, ops_D=16, ops_rounds=2, ops_min_total_s=0.0,
                        solver_pairs=6, solver_rounds=1, pairwise_ms=(4, 6), pairwise_rounds=1)  # fmt: skip
    if quick:
        return Settings("quick", ops_batches=(256, 1024), ops_D=64, ops_rounds=3, ops_min_total_s=0.25,
                        solver_pairs=24, solver_rounds=2, pairwise_ms=(8, 16), pairwise_rounds=1)  # fmt: skip
    return Settings("default")


def run(
    layers: Sequence[str] = LAYERS,
    settings: Settings | None = None,
    out_dir: str | None = None,
    device: str | torch.device = "cpu",
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``layers`` and return {"environment", "settings", "results", "skipped", "wall_s"}.

    Every result row also carries the environment (versions, commit, device, CPU, threads), so a
    row copied out of the file still says where it was measured. With ``out_dir``, writes
    ``results.json`` and (matplotlib permitting) ``ops.png``, ``solver.png``, ``pairwise.png``.
    """
    from .ops import run_ops
    from .pairwise import run_pairwise
    from .solver import run_solver

    settings = settings or settings_for()
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    unknown = set(layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown layers {sorted(unknown)}; choose from {LAYERS}")
    dev = torch.device(device)
    env = environment(dev)
    runners = {"ops": run_ops, "solver": run_solver, "pairwise": run_pairwise}
    rows: list[dict] = []
    skipped: list[dict] = []
    start = time.perf_counter()
    for layer in LAYERS:  # fixed order, whatever the order asked
        if layer not in layers:
            continue
        log(f"[{layer}]")
        before = torch.get_num_threads()
        threads = settings.layer_threads.get(layer)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            r, s = runners[layer](settings, dev, log)
            rows += [{**env, "threads": torch.get_num_threads(), **row} for row in r]
        finally:
            torch.set_num_threads(before)
        skipped += s
    sett = {k: (str(v).replace("torch.", "") if isinstance(v, torch.dtype) else v)
            for k, v in asdict(settings).items()}  # fmt: skip
    results = {
        "environment": env,
        "settings": {**sett, "layers": [x for x in LAYERS if x in layers]},
        "results": rows,
        "skipped": skipped,
        "wall_s": time.perf_counter() - start,
    }
    if out_dir is not None:
        if plots:
            try:
                results["plots"] = write_plots(results, out_dir)
            except ImportError:
                log("matplotlib is not installed: no plots (pip install matplotlib)")
                results["plots"] = []
        results["json"] = write_json(results, out_dir)
    return results


def main(
    layers: Sequence[str] | None,
    quick: bool,
    out_dir: str,
    device: str = "cpu",
    threads: int | None = None,
    tiny: bool = False,
) -> int:
    """The ``fastgeo bench`` command: run, print the tables to stdout, write the files."""
    settings = settings_for(quick=quick, tiny=tiny)
    if threads is not None:  # an explicit count applies to every layer
        settings.layer_threads = dict.fromkeys(LAYERS, threads)
        settings.ops_one_thread_too = False
    results = run(layers or LAYERS, settings, out_dir, device=device)
    print(format_tables(results))
    print(f"\nwrote {results['json']}" + "".join(f", {p}" for p in results.get("plots", []))
          + f" ({results['wall_s']:.1f} s)")  # fmt: skip
    return 0
