"""``pairwise_distances``' check against chains through a third code, on every pair of M random
training codes of a generator: the matrix without the check and with it (side by side, one
process), the entries it changed, and (``--dense``) those entries against ``method="dense"`` in
float64, the oracle::

    OMP_NUM_THREADS=1 python bench/bench_chain_check.py --generator digits --m 80 --seed 3 --dense

Prints a markdown table per run (time, entries beaten, solved shorter, holding the chain) and one
row per changed entry (lengths before, after, dense oracle; excess over the oracle in %).
"""

from __future__ import annotations

import time
import warnings

import torch
from bench_random_pairs import codes_parser, random_codes
from workloads import environment_line, generator

import fastgeo
from fastgeo.benchmarks.accuracy import oracle_lengths
from fastgeo.solver.result import STATUSES


def main() -> None:
    p = codes_parser(__doc__, 80)
    p.add_argument("--dense", action="store_true", help="the changed entries against method='dense'")
    args = p.parse_args()
    metric = generator(args.generator)[0]
    z = random_codes(args.generator, args.m, args.seed)
    print(f"{args.generator}, M = {args.m} (seed {args.seed}), {environment_line()}, float32")
    fastgeo.pairwise_distances(metric, z[:2], progress=False, workers=1)  # the latent graph, built once
    runs = {}
    print("| chains | s | entries beaten | solved shorter | hold the chain | left | geodesics added |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for chains in (False, True):
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            D, rep = fastgeo.pairwise_distances(
                metric, z, progress=False, workers=1, return_report=True, chains=chains
            )
        s = time.perf_counter() - t
        runs[chains] = (D, rep)
        c = rep.chain_check
        cells = (
            ["-"] * 5
            if c is None
            else [c.beaten, c.solved_shorter, c.chain_entries, c.remaining, c.geodesics]
        )
        print(f"| {chains} | {s:.1f} | " + " | ".join(map(str, cells)) + " |")
    (D0, _), (D1, rep1) = runs[False], runs[True]
    i, j = torch.triu(D1 != D0, 1).nonzero(as_tuple=True)
    if i.numel() == 0:
        print("no entry changed")
        return
    dense = None
    if args.dense:
        m64 = metric.to(torch.float64)
        res = fastgeo.geodesics(m64, z[i].double(), z[j].double(), method="dense", progress=False)
        dense = oracle_lengths(m64, res)
    print("\n| pair | before | after | status after | dense | before - dense % | after - dense % |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, (a, b) in enumerate(zip(i.tolist(), j.tolist(), strict=True)):
        before, after = float(D0[a, b]), float(D1[a, b])
        ref = "" if dense is None else f"{float(dense[n]):.5f}"
        ex = (
            ["", ""]
            if dense is None
            else [f"{100 * (v / float(dense[n]) - 1):+.3f}" for v in (before, after)]
        )
        status = STATUSES[int(rep1.status_code[a, b])]
        print(f"| ({a}, {b}) | {before:.5f} | {after:.5f} | {status} | {ref} | {ex[0]} | {ex[1]} |")


if __name__ == "__main__":
    main()
