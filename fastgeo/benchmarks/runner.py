"""Run the benchmark layers, print the tables, write ``results.json`` and plots."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch

from .ops import run_ops
from .pairwise import run_pairwise
from .report import format_tables, write_json, write_plots
from .settings import LAYERS, Settings, settings_for
from .solver import run_solver
from .timing import environment


def run(
    layers: Sequence[str] = LAYERS,
    settings: Settings | None = None,
    out_dir: str | None = None,
    device: str | torch.device = "cpu",
    plots: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``layers`` and return {"environment", "settings", "results", "skipped", "wall_s"}
    (and "interrupted": the layer a Ctrl-C stopped, whose rows are left out).

    Every result row also carries the environment (versions, commit, device, CPU, threads), so a
    row copied out of the file still says where it was measured. With ``out_dir``, writes
    ``results.json`` and (matplotlib permitting) ``ops.png``, ``solver.png``, ``pairwise.png``.
    """
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
    interrupted = None
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
        except KeyboardInterrupt:  # Ctrl-C: the layers done so far are still written
            interrupted = layer
            break
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
    if interrupted is not None:
        results["interrupted"] = interrupted
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
    if "interrupted" in results:
        print(f"fastgeo: interrupted during [{results['interrupted']}]: the layers before it are written",
              file=sys.stderr)  # fmt: skip
        return 130
    return 0
