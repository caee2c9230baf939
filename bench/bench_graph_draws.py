"""The default solver with other random draws of its latent graph.

    OMP_NUM_THREADS=1 python bench/bench_graph_draws.py --generator mlp12_small --seed 2 --draws 4
    OMP_NUM_THREADS=1 python bench/bench_graph_draws.py --generator conv5_small --draws 4 --nodes 1500,3000
    OMP_NUM_THREADS=1 python bench/bench_graph_draws.py --file my_generator.safetensors --draws 4
    OMP_NUM_THREADS=1 python bench/bench_graph_draws.py --generator conv12_upsample_glyphs --seed 3 \
        --only 18,5,6

``--only``: some pairs of the sample alone (the solver is batch independent: the same curves as in
the whole sample), e.g. the long ones of ``bench_basins.py``, to see which draws reach their basins
(minutes instead of an hour on a conv decoder at d = 12; pairs named by their index in the sample).

The latent graph (:class:`fastgeo.LatentGraph`) samples its nodes around the RBF centers with a
fixed seed; another seed is another, equally good, graph. Its corridors are the starts that put
curves in the right basin, so where the draws disagree the default's basin was a matter of which
nodes it drew, and at most one draw found the shortest. The kept dense oracles start from the
default's curves (``bench_basins.py``) and share such misses, so the best of all draws is the
honest reference: per draw, the excess over the dense oracle and over the best of the draws and
the oracle (every curve measured on the grid of ``fastgeo.benchmarks.accuracy``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_latent_frames import _count
from bench_variants import add_options_argument, constants, options_of
from oracles import oracle_path
from workloads import PAIRS, environment_line, generator, pair_indices, solver_pairs

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="mlp12_small")
    p.add_argument(
        "--file",
        default=None,
        help="a generator file of your own (fastgeo.save_generator with extras latents and labels) "
        "instead of --generator",
    )
    p.add_argument("--seed", type=int, default=0, help="sample of pairs (workloads.pair_indices)")
    p.add_argument("--pairs", type=int, default=PAIRS)
    p.add_argument("--only", default=None, help="comma-separated pairs of the sample to solve alone")
    p.add_argument("--draws", type=int, default=4, help="graph seeds 0 .. draws - 1")
    p.add_argument("--nodes", default="1500", help="comma-separated n_nodes (each with every seed)")
    add_options_argument(p)
    args = p.parse_args()
    options, overrides, kwargs = options_of(args)
    torch.set_num_threads(1)
    oracle = None
    if args.file is None:
        name = args.generator
        metric = generator(name)[0]
        z0, z1 = solver_pairs(name, args.pairs, args.seed)
        kept = oracle_path(name, args.seed, args.pairs, z0, z1)[0]
        if kept.exists():
            oracle = torch.tensor(json.loads(kept.read_text())["lengths"], dtype=torch.float64)
    else:
        name = Path(args.file).name
        metric, extra = fastgeo.load_generator(args.file), fastgeo.load_extra(args.file)
        I, J = pair_indices(extra["labels"], args.pairs, args.seed)
        z0, z1 = extra["latents"][I], extra["latents"][J]
    only = None if args.only is None else [int(i) for i in args.only.split(",")]
    ids = torch.arange(args.pairs) if only is None else torch.tensor(only)
    z0, z1 = z0[ids], z1[ids]
    oracle = None if oracle is None else oracle[ids]
    only_note = "" if only is None else f" (solved: {args.only})"
    m64 = metric.to(torch.float64)
    sample = f"{name}, seed {args.seed}, {args.pairs} pairs{only_note}"
    print(environment_line(1) + f", float32; {sample}, options {options}")
    rows = []
    for n in [int(x) for x in args.nodes.split(",")]:
        for draw in range(args.draws):
            t = time.process_time()
            graph = fastgeo.LatentGraph(metric, n_nodes=n, seed=draw)
            build = time.process_time() - t
            t = time.process_time()
            with torch.no_grad(), constants(overrides):
                res = fastgeo.geodesics(metric, z0, z1, graph=graph, progress=False, **kwargs)
            ms = 1000 * (time.process_time() - t) / len(ids)
            with torch.no_grad():
                lengths = measured_lengths(m64, res.points(MEASURE_POINTS).double())
            rows.append((n, draw, build, ms, res.status.tolist(), lengths))
            print(f"graph of {n} nodes, seed {draw}: built in {build:.1f} s, {ms:.0f} ms / pair", flush=True)
    best = torch.stack([r[-1] for r in rows]).amin(0)
    if oracle is not None:
        best = torch.minimum(best, oracle)
    columns = (
        "nodes", "graph seed", "build s", "ms / pair (CPU)", "statuses",
        "excess over the dense oracle: mean / worst % (pair)",
        "excess over the best of all: mean / worst % (pair)", "pairs > 0.1 % / > 0.5 % over the best",
    )  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for n, draw, build, ms, status, lengths in rows:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(_count(status).items()))
        vs_oracle = "-"
        if oracle is not None:
            ex = 100 * (lengths / oracle - 1)
            vs_oracle = f"{float(ex.mean()):.4f} / {float(ex.max()):.4f} ({int(ids[ex.argmax()])})"
        ex = 100 * (lengths / best - 1)
        print(
            f"| {n} | {draw} | {build:.1f} | {ms:.0f} | {statuses} | {vs_oracle} | "
            f"{float(ex.mean()):.4f} / {float(ex.max()):.4f} ({int(ids[ex.argmax()])}) | "
            f"{int((ex > 0.1).sum())} / {int((ex > 0.5).sum())} |",
            flush=True,
        )
    if oracle is not None:
        below = 100 * (best / oracle - 1)
        print(
            f"the best of all below the dense oracle by > 0.01 % on {int((below < -0.01).sum())} pairs "
            f"(by up to {float(-below.min()):.3f} %, pair {int(ids[below.argmin()])})"
        )


if __name__ == "__main__":
    main()
