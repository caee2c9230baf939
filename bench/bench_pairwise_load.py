"""All-pairs runs on a shared machine (issue 18): threads against worker processes, with and
without a competing process.

    python bench/bench_pairwise_load.py                 # digits, M = 40 codes (780 geodesics)
    python bench/bench_pairwise_load.py --m 60 --mode graph

For each way of using the cores (one thread; two threads in one process; two worker processes
of one thread each, ``workers=2``, the default on a 2-core Linux machine) ``pairwise_distances``
runs in a fresh subprocess, alone and then beside a busy process that keeps one core spinning.
The codes are a random subset (seed 1) of the digits generator's training codes
(``workloads.py``). The table is printed and written to ``bench/results/pairwise_load.md``
(``$FASTGEO_BENCH_OUT`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from workloads import environment_line, generator, results_dir

import fastgeo

WAYS = {"1 thread": (1, 1), "2 threads": (2, 1), "2 workers": (2, 2)}  # (torch threads, workers)


def worker(M: int, mode: str, threads: int, workers: int) -> dict:
    torch.set_num_threads(threads)
    metric, Zall, _ = generator("digits")
    g = torch.Generator().manual_seed(1)
    Z = Zall[torch.randperm(Zall.shape[0], generator=g)[:M]]
    fastgeo.geodesics(metric, Z[:2], Z[2:4])  # the latent graph, built once, outside the timing
    t0 = time.perf_counter()
    D = fastgeo.pairwise_distances(metric, Z, mode=mode, workers=workers, chunk_size=64, progress=False)
    return {"wall_s": time.perf_counter() - t0, "pairs": M * (M - 1) // 2, "sum": float(D.double().sum())}


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--m", type=int, default=40)
    ap.add_argument("--mode", default="exact", choices=("exact", "graph"))
    ap.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)  # threads, workers
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.m, args.mode, *args.worker)))
        return
    head = (
        f"# pairwise_distances(mode={args.mode!r}) on {args.m} digits codes, alone and beside a busy process"
        f"\n\n{environment_line()}\n\n| way | alone (s) | beside a busy process (s) | slowdown |\n"
        "| --- | --- | --- | --- |"
    )
    print(head, flush=True)
    rows = []
    for name, (threads, workers) in WAYS.items():
        times = []
        for load in (False, True):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load else None
            try:
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                way = ["--worker", str(threads), str(workers)]
                cmd = [sys.executable, __file__, "--m", str(args.m), "--mode", args.mode, *way]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            times.append(json.loads(out.strip().splitlines()[-1])["wall_s"])
        rows.append(f"| {name} | {times[0]:.1f} | {times[1]:.1f} | {times[1] / times[0]:.2f}x |")
        print(rows[-1], flush=True)
        (results_dir() / f"pairwise_load_{args.mode}.md").write_text(head + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
