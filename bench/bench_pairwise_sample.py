"""All-pairs accuracy against the dense oracle on a random sample of pairs (issue 18): how far
the exact mode's entries (per-pair :func:`fastgeo.geodesics`, which ``pairwise_distances``
equals entry for entry: ``tests/test_pairwise*.py``), the graph mode's estimates and StochMan's
default geodesics (batched) are from ``method="dense"`` in float64, on the same pairs.

    OMP_NUM_THREADS=1 python bench/bench_pairwise_sample.py                    # digits, M = 1000
    OMP_NUM_THREADS=1 python bench/bench_pairwise_sample.py --generator two_moons --m 256

The M codes are those of ``bench_pairwise_graph.py`` (``codes``), the sample ``--sample`` pairs
i < j drawn uniformly (seed ``--seed``). The graph mode runs on all M codes with
``error_sample=0``, so that its sampled entries are its chains, not exact solves. Every curve is
measured on 1,024 points in float64 (``fastgeo.benchmarks.accuracy``); graph entries are numbers,
compared as they are. Times are one call each on the sample (the graph mode: the whole matrix).
The dense oracle takes ~1-2 minutes per 48 pairs here on the 2-D generators, minutes per pair at
d >= 8. Written to ``bench/results/pairwise_sample_<generator>_<M>.md``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from bench_pairwise_graph import codes
from workloads import environment_line, generator, results_dir

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from fastgeo.benchmarks.stochman_peer import stochman_geodesics


def sample_pairs(M: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n distinct pairs (i < j) of M codes, uniformly."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randperm(M * (M - 1) // 2, generator=g)[:n]
    iu = torch.triu_indices(M, M, 1)
    return iu[0, k], iu[1, k]


def stats(excess: torch.Tensor) -> str:
    e = 100 * excess.double()
    q = torch.quantile(e, torch.tensor([0.5, 0.95], dtype=e.dtype))
    return f"{e.mean():.4f} | {q[0]:.4f} | {q[1]:.4f} | {e.max():.4f} | {e.min():.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", default="digits")
    ap.add_argument("--m", type=int, default=1000, help="codes of the matrix")
    ap.add_argument("--sample", type=int, default=200, help="pairs of the sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    metric, Zall, _ = generator(args.generator)
    m64 = metric.to(torch.float64)
    Z = codes(Zall, args.m)
    I, J = sample_pairs(args.m, args.sample, args.seed)
    z0, z1 = Z[I], Z[J]
    rows = []
    with torch.no_grad():
        t = time.perf_counter()
        dense = fastgeo.geodesics(m64, z0.double(), z1.double(), method="dense")
        dense_s = time.perf_counter() - t
        ref = oracle_lengths(m64, dense)
        print(f"dense: {dense_s:.0f} s", flush=True)

        fastgeo.geodesics(metric, z0[:2], z1[:2])  # the latent graph, built once (not timed)
        t = time.perf_counter()
        res = fastgeo.geodesics(metric, z0, z1, progress=False)
        exact_s = time.perf_counter() - t
        L = measured_lengths(m64, res.points(MEASURE_POINTS))
        per_pair = f"{exact_s / len(I) * 1e3:.1f} ms/pair"
        rows.append(("exact mode (per-pair geodesics)", L / ref - 1, exact_s, per_pair))
        gap = (res.lengths.double() / L - 1).abs().max()
        print(f"exact: {exact_s:.1f} s, reported vs measured length max gap {100 * gap:.4f} %", flush=True)

        t = time.perf_counter()
        D, rep = fastgeo.pairwise_distances(
            metric, Z, mode="graph", error_sample=0, progress=False, return_report=True
        )
        graph_s = time.perf_counter() - t
        G = D[I, J].double()
        note = f"whole matrix, {rep.graph_edges} edges"
        rows.append(("graph mode (chains of edges)", G / ref - 1, graph_s, note))
        print(f"graph: {graph_s:.1f} s", flush=True)

    sm = stochman_geodesics(metric, MEASURE_POINTS)
    if sm is not None:
        run, label = sm
        t = time.perf_counter()
        pts = run(z0, z1)
        sm_s = time.perf_counter() - t
        Ls = measured_lengths(m64, pts.detach())
        rows.append((f"{label} defaults, batched", Ls / ref - 1, sm_s, f"{sm_s / len(I) * 1e3:.1f} ms/pair"))

    omp = os.environ.get("OMP_NUM_THREADS")
    head = (
        f"# All pairs of {args.m} {args.generator} codes: {len(I)} pairs against the dense oracle\n\n"
        f"{environment_line(args.threads)}, float32 (dense oracle: float64, {dense_s:.0f} s)\n"
        f"command: `{f'OMP_NUM_THREADS={omp} ' if omp else ''}python bench/bench_pairwise_sample.py "
        f"--generator {args.generator} --m {args.m} --sample {args.sample} --seed {args.seed} "
        f"--threads {args.threads}`\n\n"
        "| what | excess over dense: mean % | median % | p95 % | max % | min % | time (s) | note |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [f"| {name} | {stats(e)} | {s:.1f} | {note} |" for name, e, s, note in rows]
    text = head + "\n" + "\n".join(lines) + "\n"
    print("\n" + text)
    out = results_dir() / f"pairwise_sample_{args.generator}_{args.m}.md"
    out.write_text(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
