"""The race with racers that join a better one's basin against the race without (issue 14):
time, iterations and decoder work of ``fastgeo.geodesics`` with ``race.JOIN_RADIUS`` at its
value and at 0 (no racer stops early), alternated in one process, and the largest length change.

    OMP_NUM_THREADS=1 python bench/bench_joined_racers.py --generator mlp16_glyphs --pairs 16 --seed 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from workloads import environment_line, generator, pair_indices

import fastgeo
from fastgeo.solver import race


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="mlp16_shapes", help="a generator of bench/workloads.py or a file")
    p.add_argument("--pairs", type=int, default=16, help="pairs of training codes (a third across classes)")
    p.add_argument("--seed", type=int, default=0, help="sample of pairs")
    p.add_argument("--rounds", type=int, default=3, help="timed calls per setting, alternated")
    args = p.parse_args()
    torch.set_num_threads(1)
    metric, Z, labels = generator(args.generator)
    I, J = pair_indices(labels, args.pairs, args.seed)
    z0, z1 = Z[I], Z[J]
    print(environment_line(), f"| {args.generator}, d = {Z.shape[1]}, {args.pairs} pairs, seed {args.seed}")
    radii = {"without joining": 0.0, "joining": race.JOIN_RADIUS}
    fastgeo.geodesics(metric, z0[:2], z1[:2], progress=False)  # warm-up (and the latent graph)
    times: dict[str, list[float]] = {k: [] for k in radii}
    results = {}
    for _ in range(args.rounds):
        for name, radius in radii.items():
            race.JOIN_RADIUS = radius
            t = time.perf_counter()
            results[name] = fastgeo.geodesics(metric, z0, z1, progress=False)
            times[name].append((time.perf_counter() - t) / args.pairs)
    race.JOIN_RADIUS = radii["joining"]
    for name, res in results.items():
        print(
            f"{name}: {statistics.median(times[name]) * 1e3:.0f} ms per geodesic (median of {args.rounds}), "
            f"iterations {res.iterations.float().mean():.1f} per curve, decoder jvps "
            f"{res.decoder_jvps / args.pairs:,.0f} and evals {res.decoder_evals / args.pairs:,.0f} per "
            f"curve, statuses {sorted(set(res.status))}"
        )
    a, b = results["without joining"].lengths, results["joining"].lengths
    ratio = statistics.median(times["without joining"]) / statistics.median(times["joining"])
    change = float((b / a - 1).abs().max())
    print(f"time without / with joining {ratio:.2f}x; largest relative length change {change:.1e}")


if __name__ == "__main__":
    main()
