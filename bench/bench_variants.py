"""Solver settings side by side: per variant, time and LM iterations per pair, statuses, and mean /
worst excess length per seed over a reference.

    OMP_NUM_THREADS=1 python bench/bench_variants.py --generator mlp12_small --seeds 0,1,2,3,4 \\
        '{}' '{"tol": 1e-5, "max_iter": 100}'
    OMP_NUM_THREADS=1 python bench/bench_variants.py --generator mlp32_shapes --pairs 16 \\
        --reference best '{"subdivide": False}' '{}'

Each variant is a Python dict of ``fastgeo.geodesics`` keyword arguments; a key naming a module
constant (``"fastgeo.solver.last_step.FLOOR": 1.0``: the last-step correction off) sets it for
that variant's calls only:

    OMP_NUM_THREADS=1 python bench/bench_variants.py --generator conv8_shapes --seeds 0,1 --pairs 16 \
        --reference best '{"fastgeo.solver.last_step.FLOOR": 1.0}' '{}'

The reference is the
dense oracle of the basins benchmark (``--reference dense``, the default: its lengths come from
``bench_basins.py``'s cache, ``bench/oracle/``, computed and kept on first use, 12-15
minutes per seed at d = 12, ~40 at d = 16 with D = 784), or the shortest of the variants' own
curves per pair (``--reference best``: for generators without a dense oracle; every length is an
upper bound of the distance, measured alike, so the best is the tightest). Same pairs,
measurement and float32 / float64 split as ``bench_basins.py``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import time
from collections import Counter
from collections.abc import Iterator

import torch
from oracles import dense_oracle
from workloads import PAIRS, environment_line, generator, generator_path, solver_pairs

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths


@contextlib.contextmanager
def constants(overrides: dict) -> Iterator[None]:
    """Module constants set for the duration (``{"fastgeo.solver.last_step.FLOOR": 1.0}``)."""
    saved = []
    try:
        for key, value in overrides.items():
            module_name, _, attr = key.rpartition(".")
            module = importlib.import_module(module_name)
            if not hasattr(module, attr):
                raise AttributeError(f"{module_name} has no constant {attr}")
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)
        yield
    finally:
        for module, attr, value in reversed(saved):
            setattr(module, attr, value)


def split_variant(variant: dict) -> tuple[dict, dict]:
    """(module constants by dotted name, keyword arguments of ``fastgeo.geodesics``) of a variant."""
    overrides = {k: v for k, v in variant.items() if k.startswith("fastgeo.")}
    return overrides, {k: v for k, v in variant.items() if k not in overrides}


def add_options_argument(parser: argparse.ArgumentParser) -> None:
    """``--options``: a variant as a Python dict literal (read with :func:`options_of`)."""
    parser.add_argument(
        "--options",
        default="{}",
        help="a dict of geodesics keyword arguments and module constants by dotted name (see bench_variants)",
    )


def options_of(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """(the variant, its module constants, its keyword arguments) from ``--options``."""
    options = ast.literal_eval(args.options)
    return options, *split_variant(options)


def run(name: str, seeds: list[int], pairs: int, variant: dict) -> dict:
    """Time, iterations, statuses and measured lengths per seed of one variant, on its own copy of
    the generator (the latent graph caches its shortest-path rows per metric: a variant sharing the
    metric would reuse another's queries)."""
    overrides, kwargs = split_variant(variant)
    metric = fastgeo.load_generator(generator_path(name))
    m64 = metric.to(torch.float64)
    seconds, iterations, statuses, lengths = 0.0, 0, Counter(), []
    for seed in seeds:
        z0, z1 = solver_pairs(name, pairs, seed)
        t = time.process_time()
        with torch.no_grad(), constants(overrides):
            res = fastgeo.geodesics(metric, z0, z1, progress=False, **kwargs)
        seconds += time.process_time() - t
        iterations += int(res.iterations.sum())
        statuses.update(res.status.tolist())
        lengths.append(measured_lengths(m64, res.points(MEASURE_POINTS)))
    return {"seconds": seconds, "iterations": iterations, "statuses": statuses, "lengths": lengths}


def row(variant: dict, result: dict, references: list[torch.Tensor], n: int) -> str:
    cells = []
    for lengths, ref in zip(result["lengths"], references, strict=True):
        excess = 100 * (lengths / ref - 1)
        cells.append(f"{excess.mean():.3f} / {excess.max():.3f} ({int(excess.argmax())})")
    status = ", ".join(f"{s} {c}" for s, c in result["statuses"].most_common())
    head = f"| `{variant}` | {1e3 * result['seconds'] / n:.1f} | {result['iterations'] / n:.1f} | {status} | "
    return head + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="mlp12_small")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="pairs per seed")
    parser.add_argument("--reference", choices=("dense", "best"), default="dense")
    parser.add_argument("variants", nargs="*", default=["{}"], help="dicts of geodesics() arguments")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [ast.literal_eval(v) for v in args.variants]
    for v in variants:
        if not isinstance(v, dict):
            raise TypeError(f"a variant must be a dict of geodesics() arguments, got {v!r}")
    # One untimed run of the first seed first: the first variant must not pay the process's
    # one-time costs.
    metric, _, _ = generator(args.generator)
    run(args.generator, seeds[:1], args.pairs, variants[0])
    results = [run(args.generator, seeds, args.pairs, v) for v in variants]
    if args.reference == "dense":
        m64 = metric.to(torch.float64)
        references = [
            dense_oracle(
                args.generator, seed, args.pairs, m64, *solver_pairs(args.generator, args.pairs, seed)
            )[0]
            for seed in seeds
        ]
        against = "the dense oracle (float64)"
    else:
        references = [torch.stack([r["lengths"][k] for r in results]).amin(0) for k in range(len(seeds))]
        against = "the shortest of the variants' curves per pair"
    print(f"{environment_line(torch.get_num_threads())}, float32, {args.generator}, excess over {against}")
    print(
        "| variant | ms / pair (CPU) | LM iterations / pair | statuses | "
        + " | ".join(f"seed {s}: mean / worst % (pair)" for s in seeds)
        + " |"
    )
    print("| --- | --- | --- | --- |" + " --- |" * len(seeds))
    n = args.pairs * len(seeds)
    for v, result in zip(variants, results, strict=True):
        print(row(v, result, references, n), flush=True)


if __name__ == "__main__":
    main()
