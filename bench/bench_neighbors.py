"""Geodesic nearest neighbours at the sizes users cluster (issue 18): ``fastgeo.nearest_neighbors``
on M codes, time, geodesics solved per code, rounds, peak RSS, and how many of the k geodesic
neighbours the k nearest codes in the latent space's own Euclidean distance find.

    python bench/bench_neighbors.py                                   # digits, M = 256, 1000, 1797
    python bench/bench_neighbors.py --generator mlp16_shapes --ms 256,1000 --k 5
    python bench/bench_neighbors.py --ms 256 --check 10               # 10 rows against all pairs

Each M runs in a fresh subprocess (peak RSS its own; ``--workers`` worker processes of one thread);
the codes are a random subset (seed 1) of the generator's training codes (``workloads.py``; beyond
their number, more drawn around them as in ``bench_pairwise_graph.py``). ``--check S``: S random
rows solved against every other code by :func:`fastgeo.geodesics` (the defaults), their k nearest
compared with the call's (a brute-force check of the certificate; costs S (M - 1) geodesics). The
table is printed and written to ``bench/results/neighbors_<generator>.md``
(``$FASTGEO_BENCH_OUT`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from bench_pairwise_graph import codes
from workloads import environment_line, generator, results_dir

import fastgeo


def worker(name: str, M: int, k: int, workers: int, check: int) -> dict:
    torch.set_num_threads(1)
    metric, Zall, _ = generator(name)
    Z = codes(Zall, M)
    t0 = time.perf_counter()
    res = fastgeo.nearest_neighbors(metric, Z, k, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    euclid = torch.cdist(Z, Z).fill_diagonal_(float("inf")).topk(k, dim=1, largest=False).indices
    shared = sum(len(set(a) & set(b)) for a, b in zip(res.indices.tolist(), euclid.tolist(), strict=True))
    row = {
        "M": M,
        "k": k,
        "workers": workers,
        "wall_s": wall,
        "pairs": res.pairs_solved,
        "per_code": res.pairs_solved / M,
        "share": 100 * res.pairs_solved / (M * (M - 1) / 2),
        "rounds": res.rounds,
        "certified": int(res.certified.sum()),
        "converged": int(res.converged.sum()),
        "euclid": 100 * shared / (M * k),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if check:
        rows = torch.randperm(M, generator=torch.Generator().manual_seed(2))[:check]
        i = rows.repeat_interleave(M)
        j = torch.arange(M).repeat(check)
        keep = i != j
        lengths = fastgeo.geodesics(metric, Z[i[keep]], Z[j[keep]], progress=False).lengths.detach()
        full = torch.full((check, M), float("inf"))
        full[keep.reshape(check, M)] = lengths.float()
        brute = full.topk(k, dim=1, largest=False)
        got = res.distances[rows].float()
        row["check_rows"] = check
        same = brute.indices.sort(1).values == res.indices[rows].sort(1).values
        row["check_same"] = int(same.all(1).sum())
        row["check_gap"] = 100 * float(((got - brute.values) / brute.values).abs().max())
    return row


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--generator", default="digits")
    ap.add_argument("--ms", default="256,1000,1797")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--check", type=int, default=0, help="rows checked against all pairs")
    ap.add_argument("--worker", nargs=4, type=int, help=argparse.SUPPRESS)  # M, k, workers, check
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.generator, *args.worker)))
        return
    head = (
        f"# nearest_neighbors on {args.generator}, k = {args.k}, {args.workers} worker(s)\n\n"
        f"{environment_line(1)}\n\n"
        "| M | time (s) | geodesics | per code | of all pairs % | rounds | rows certified | neighbours "
        "converged | shared with Euclidean kNN % | peak RSS (MB): run / largest worker | check: rows equal, "
        "max distance gap % |\n|" + " --- |" * 11
    )
    print(head, flush=True)
    rows = []
    for M in (int(x) for x in args.ms.split(",")):
        cmd = [sys.executable, __file__, "--generator", args.generator, "--worker"]
        cmd += [str(M), str(args.k), str(args.workers), str(args.check)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        check = f"{r['check_same']} / {r['check_rows']}, {r['check_gap']:.4f}" if "check_rows" in r else "-"
        line = (
            f"| {M} | {r['wall_s']:.1f} | {r['pairs']} | {r['per_code']:.1f} | {r['share']:.2f} | "
            f"{r['rounds']} | "
            f"{r['certified']} / {M} | {r['converged']} / {M * args.k} | {r['euclid']:.1f} | "
            f"{r['rss_mb']:.0f} / {r['worker_rss_mb']:.0f} | {check} |"
        )
        rows.append(line)
        print(line, flush=True)
        (results_dir() / f"neighbors_{args.generator}.md").write_text(head + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
