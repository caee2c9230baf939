"""Solver settings side by side against the dense oracle of the basins benchmark: per variant,
time and LM iterations per pair, statuses, and mean / worst excess length per seed.

    OMP_NUM_THREADS=1 python bench/bench_variants.py --generator mlp12_small --seeds 0,1,2,3,4 \\
        '{}' '{"tol": 1e-5, "max_iter": 100}'

Each variant is a Python dict of ``fastgeo.geodesics`` keyword arguments. The oracle's lengths
come from ``bench_basins.py``'s cache (``results/basins_oracle/``; computed and kept on first use,
12-15 minutes per seed at d = 12). Same pairs, measurement and float32 / float64 split as there.
"""

from __future__ import annotations

import argparse
import ast
import time
from collections import Counter

import torch
from bench_basins import dense_oracle
from workloads import PAIRS, environment_line, generator, solver_pairs

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths


def run(name: str, seeds: list[int], variant: dict) -> str:
    metric, _, _ = generator(name)
    m64 = metric.to(torch.float64)
    seconds, iterations, statuses, cells = 0.0, 0, Counter(), []
    for seed in seeds:
        z0, z1 = solver_pairs(name, PAIRS, seed)
        oracle, _, _ = dense_oracle(name, seed, PAIRS, m64, z0, z1)
        t = time.process_time()
        with torch.no_grad():
            res = fastgeo.geodesics(metric, z0, z1, progress=False, **variant)
        seconds += time.process_time() - t
        iterations += int(res.iterations.sum())
        statuses.update(res.status.tolist())
        excess = 100 * (measured_lengths(m64, res.points(MEASURE_POINTS)) / oracle - 1)
        cells.append(f"{excess.mean():.3f} / {excess.max():.3f} ({int(excess.argmax())})")
    n = PAIRS * len(seeds)
    status = ", ".join(f"{s} {c}" for s, c in statuses.most_common())
    head = f"| `{variant}` | {1e3 * seconds / n:.1f} | {iterations / n:.1f} | {status} | "
    return head + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="mlp12_small")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("variants", nargs="*", default=["{}"], help="dicts of geodesics() arguments")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [ast.literal_eval(v) for v in args.variants]
    for v in variants:
        if not isinstance(v, dict):
            raise TypeError(f"a variant must be a dict of geodesics() arguments, got {v!r}")
    # One untimed call first: the first variant must not pay the process's one-time costs (the
    # 2-D tables of an earlier version had it 20-40 % slower for that alone).
    metric, _, _ = generator(args.generator)
    z0, z1 = solver_pairs(args.generator, PAIRS, seeds[0])
    with torch.no_grad():
        fastgeo.geodesics(metric, z0[:4], z1[:4], progress=False, **variants[0])
    print(f"{environment_line(torch.get_num_threads())}, float32 (dense oracle: float64), {args.generator}")
    print(
        "| variant | ms / pair (CPU) | LM iterations / pair | statuses | "
        + " | ".join(f"seed {s}: mean / worst % (pair)" for s in seeds)
        + " |"
    )
    print("| --- | --- | --- | --- |" + " --- |" * len(seeds))
    for v in variants:
        print(run(args.generator, seeds, v), flush=True)


if __name__ == "__main__":
    main()
