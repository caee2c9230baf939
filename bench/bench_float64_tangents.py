"""Float64 solves with a convolutional decoder's tangents in float32 against exact float64
tangents: time, iterations and the largest length change, alternated in one process. With
``--method dense`` (issue 15's oracles) the polylines are polished from the same starts (the
default's curves, float32, sampled at the oracle's nodes); with ``default`` or ``fast`` the pairs
are solved from scratch in float64.

    OMP_NUM_THREADS=1 python bench/bench_float64_tangents.py --generator conv8_shapes --pairs 2 --rounds 1
    OMP_NUM_THREADS=1 python bench/bench_float64_tangents.py --generator conv5_small --method default

The rule is the solver's (``solver_options``: float64, the CPU, a convolutional mean); "exact"
turns it off by reading the mean as not convolutional.
"""

from __future__ import annotations

import argparse
import time

import torch
from workloads import environment_line, generator, pair_indices

import fastgeo
from fastgeo.curves import straight_line, time_grid


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="conv5_small", help="a generator of bench/workloads.py or a file")
    p.add_argument("--pairs", type=int, default=4, help="pairs of training codes (a third across classes)")
    p.add_argument("--first", type=int, default=0, help="the first pair of the 48-pair sample")
    p.add_argument("--seed", type=int, default=0, help="sample of pairs")
    p.add_argument("--rounds", type=int, default=2, help="polishes per setting, alternated")
    p.add_argument("--nodes", type=int, default=128, help="the dense method's polylines' nodes")
    p.add_argument("--method", default="dense", choices=("dense", "default", "fast"))
    args = p.parse_args()
    torch.set_num_threads(1)
    metric, Z, labels = generator(args.generator)
    m64 = metric.to(torch.float64)
    I, J = pair_indices(labels, 48, args.seed)
    pick = slice(args.first, args.first + args.pairs)
    z0, z1 = Z[I][pick], Z[J][pick]
    last = args.first + args.pairs - 1
    print(
        environment_line(),
        f"| {args.generator}, d = {Z.shape[1]}, pairs {args.first}-{last} of seed {args.seed}, "
        f"method {args.method}; convolutional mean: {m64.convolutional_mean}",
    )
    e0, e1 = z0.double(), z1.double()
    options: dict = {"method": args.method, "progress": False}
    if args.method == "dense":
        start = fastgeo.geodesics(metric, z0, z1, progress=False).points(args.nodes).double()
        init = (start - straight_line(e0, e1, time_grid(args.nodes, e0)))[:, 1:-1]
        options |= {"n_points": args.nodes, "init": init}
    else:
        fastgeo.geodesics(m64, e0[:1], e1[:1], **options)  # warm-up: the latent graph, once per metric
    cls = fastgeo.ExpectedMetric
    rule = cls.convolutional_mean
    times: dict[str, list[float]] = {"exact": [], "float32": []}
    results = {}
    for _ in range(args.rounds):
        for name in times:
            cls.convolutional_mean = rule if name == "float32" else property(lambda self: False)
            try:
                t = time.perf_counter()
                res = fastgeo.geodesics(m64, e0, e1, **options)
                times[name].append(time.perf_counter() - t)
            finally:
                cls.convolutional_mean = rule
            results[name] = res
            print(
                f"  {name}: {times[name][-1]:.1f} s, fresh tangents {res.options['fresh tangents']}, "
                f"iterations {res.iterations.tolist()}, statuses {sorted(set(res.status))}",
                flush=True,
            )
    a, b = results["exact"].lengths, results["float32"].lengths
    change = float(((b - a) / a).abs().max())
    ratio = min(times["exact"]) / min(times["float32"])
    print(
        f"exact / float32 tangents: {ratio:.2f}x (min of {args.rounds}); "
        f"largest relative length change {change:.1e}"
    )


if __name__ == "__main__":
    main()
