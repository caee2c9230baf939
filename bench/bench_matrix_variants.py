"""Whole distance matrices by ``pairwise_distances`` variants, side by side in one process: every
pair of M random training codes of a generator, each variant's matrix with its chain check (the
exact mode's default), CPU time, what the check did, and every entry against the shorter of the
variants' entries (each entry is a curve's or a chain's length, an upper bound of the distance)::

    OMP_NUM_THREADS=1 python bench/bench_matrix_variants.py --generator digits --m 80 --seed 0 \\
        '{}' '{"method": "fast"}'

Each variant is a JSON object of ``pairwise_distances`` keyword arguments (solver options
included); ``workers=1`` and ``progress=False`` are set here.
"""

from __future__ import annotations

import json
import time
import warnings

import torch
from bench_random_pairs import codes_parser, random_codes
from workloads import environment_line, generator

import fastgeo
from fastgeo.solver.result import CHAIN


def main() -> None:
    p = codes_parser(__doc__, 80)
    p.add_argument("variants", nargs="+", help="JSON objects of pairwise_distances options")
    args = p.parse_args()
    variants = [json.loads(v) for v in args.variants]
    metric = generator(args.generator)[0]
    z = random_codes(args.generator, args.m, args.seed)
    i, j = torch.triu_indices(args.m, args.m, 1)
    print(f"{args.generator}, M = {args.m} (seed {args.seed}, {i.numel()} pairs), {environment_line()}")
    fastgeo.pairwise_distances(metric, z[:2], progress=False, workers=1)  # the latent graph, built once
    runs = []
    for options in variants:
        t = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            D, rep = fastgeo.pairwise_distances(
                metric, z, progress=False, workers=1, return_report=True, **options
            )
        runs.append((D[i, j].double(), time.process_time() - t, rep))
    best = torch.stack([r[0] for r in runs]).amin(0)
    base = runs[0][1]
    print("| variant | CPU s | time / first | entries beaten by a chain | holding a chain's length |"
          " mean excess % | worst % | entries > 0.1 % | > 0.5 % |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for options, (lengths, cpu, rep) in zip(variants, runs, strict=True):
        rel = lengths / best - 1
        check = rep.chain_check
        beaten = "-" if check is None else check.beaten
        held = int((rep.status_code[i, j] == CHAIN).sum())
        print(
            f"| `{json.dumps(options)}` | {cpu:.1f} | {cpu / base:.2f} | {beaten} | {held} | "
            f"{100 * rel.mean():.4f} | {100 * rel.max():.3f} | {int((rel > 1e-3).sum())} | "
            f"{int((rel > 5e-3).sum())} |"
        )


if __name__ == "__main__":
    main()
