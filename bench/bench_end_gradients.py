"""What the distances' gradient costs beside the solve: ``geodesics`` on pairs whose ``z1`` requires
a gradient, then ``lengths.sum().backward()`` (the envelope theorem's gradient,
``fastgeo/solver/end_gradients.py``), CPU time of each per pair, median of ``--rounds`` rounds.

    OMP_NUM_THREADS=1 python bench/bench_end_gradients.py --generators digits,mlp16_shapes,conv8_shapes \\
        --pairs 8 --rounds 3
"""

from __future__ import annotations

import statistics
import time

import torch
from workloads import generator, generator_table, solver_pairs

import fastgeo


def measure(name: str, pairs: int, rounds: int, seed: int) -> str:
    metric, _, _ = generator(name)
    z0, z1 = solver_pairs(name, pairs, seed=seed)
    fastgeo.geodesics(metric, z0[:1], z1[:1], progress=False)  # warm-up: traces, checks, the graph
    solves, backwards = [], []
    for _ in range(rounds):
        ends = z1.clone().requires_grad_()
        start = time.process_time()
        res = fastgeo.geodesics(metric, z0, ends, progress=False)
        middle = time.process_time()
        res.lengths.sum().backward()
        solves.append((middle - start) / pairs * 1e3)
        backwards.append((time.process_time() - middle) / pairs * 1e3)
        assert ends.grad is not None and bool(torch.isfinite(ends.grad).all())
    solve, backward = statistics.median(solves), statistics.median(backwards)
    grids = sorted(set(res.resolution.tolist()))
    return (
        f"| {name} (d = {metric.latent_dim}, D = {metric.data_dim}) | {pairs} | {grids} | {solve:.1f} | "
        f"{backward:.2f} | {100 * backward / solve:.2f} % |"
    )


def main() -> None:
    generator_table(
        __doc__,
        "digits,mlp16_shapes,conv8_shapes",
        "| generator | pairs | solve grids (points) | solve ms / pair | backward ms / pair "
        "| backward / solve |",
        measure,
        pairs=8,
    )


if __name__ == "__main__":
    main()
