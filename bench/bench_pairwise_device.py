"""All-pairs distances of the digits generator on another device against the CPU, in one run
(issue 17): for each M, the whole matrix with ``pairwise_distances`` on the CPU (worker
processes, one thread each) and on ``--device`` tensors, the time, pairs per second and time per
geodesic of each, and how far the two matrices differ (relative length difference over all
pairs; pairs whose status differs).

    python bench/bench_pairwise_device.py                              # --device cuda, M = 512, 2000
    python bench/bench_pairwise_device.py --device cpu --ms 48 --budget-s 60   # a dry run

The M codes are the generator's training codes (1,797); past that, codes jittered by 2 % of the
codes' spread around random training codes. A run whose time, extrapolated from the smaller M
(cost per pair), would pass ``--budget-s`` is skipped and the estimate printed instead, so the
script ends inside a device lease. The CPU runs go first, before CUDA is initialized, since
their workers are forked. ``--json`` writes every row.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from workloads import environment_line, generator

import fastgeo
from fastgeo.solver.result import STATUSES

CONVERGED = STATUSES.index("converged")


def codes(Z: torch.Tensor, M: int, seed: int = 0) -> torch.Tensor:
    """M codes: the first min(M, len(Z)) of a fixed permutation, then jittered copies."""
    g = torch.Generator().manual_seed(seed)
    Z = Z[torch.randperm(Z.shape[0], generator=g)]
    if M <= Z.shape[0]:
        return Z[:M].clone()
    extra = Z[torch.randint(Z.shape[0], (M - Z.shape[0],), generator=g)]
    extra = extra + 0.02 * Z.std(0) * torch.randn(extra.shape, generator=g)
    return torch.cat([Z, extra])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def solve(metric, Z: torch.Tensor, device: torch.device, workers: int | None) -> dict:
    """One whole matrix on ``device``: seconds, the matrix (CPU), the report's status."""
    metric = metric.to(device=device)
    Z = Z.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        D, report = fastgeo.pairwise_distances(metric, Z, workers=workers, progress=False, return_report=True)
    sync(device)
    seconds = time.perf_counter() - start
    pairs = Z.shape[0] * (Z.shape[0] - 1) // 2
    upper = torch.triu(torch.ones(Z.shape[0], Z.shape[0], dtype=torch.bool), diagonal=1)
    status = report.status_code.cpu()[upper]
    row = {
        "device": str(device),
        "M": Z.shape[0],
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_s": pairs / seconds,
        "ms_per_geodesic": 1e3 * seconds / pairs,
        "converged": float((status == CONVERGED).float().mean()),
    }
    if device.type == "cuda":
        row["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {"row": row, "D": D.cpu()[upper], "status": status}


def compare(cpu: dict, dev: dict) -> dict:
    rel = ((dev["D"] - cpu["D"]) / cpu["D"].clamp(min=1e-12)).abs().double()
    out = {
        "rel_diff_max": float(rel.max()),
        "rel_diff_median": float(rel.median()),
        "rel_diff_p99": float(torch.quantile(rel[:1_000_000], 0.99)),
        "pairs_over_1e-3": int((rel > 1e-3).sum()),
    }
    out["status_differs"] = int((cpu["status"] != dev["status"]).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ms", default="512,2000", help="comma-separated M values")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip a run estimated longer")
    parser.add_argument("--cpu-workers", type=int, default=os.cpu_count())
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    metric, Z_all, _ = generator("digits")
    Ms = [int(m) for m in args.ms.split(",")]
    print(f"{environment_line(1)}; cpu workers {args.cpu_workers}; device {device}; digits, float32")
    rows, runs = [], {}
    for where, dev, workers in (("cpu", torch.device("cpu"), args.cpu_workers), ("device", device, 1)):
        per_pair = None
        for M in Ms:
            pairs = M * (M - 1) // 2
            if per_pair is not None and per_pair * pairs > args.budget_s:
                estimate = per_pair * pairs
                print(f"{where} M={M}: skipped, estimated {estimate:.0f} s > budget {args.budget_s:.0f} s")
                rows.append({"device": str(dev), "M": M, "skipped_estimate_s": estimate})
                continue
            run = solve(metric, codes(Z_all, M), dev, workers)
            per_pair = run["row"]["seconds"] / pairs
            runs[where, M] = run
            rows.append(run["row"])
            print(json.dumps(run["row"]), flush=True)
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    print("| M | pairs | cpu s | device s | cpu / device | device ms per geodesic | max rel. diff | "
          "median rel. diff | pairs > 1e-3 | status differs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for M in Ms:
        cpu, dev = runs.get(("cpu", M)), runs.get(("device", M))
        if cpu is None or dev is None:
            continue
        c = compare(cpu, dev)
        rows.append({"M": M, **c})
        print(f"| {M} | {cpu['row']['pairs']} | {cpu['row']['seconds']:.1f} | {dev['row']['seconds']:.1f} | "
              f"{cpu['row']['seconds'] / dev['row']['seconds']:.2f} | {dev['row']['ms_per_geodesic']:.4f} | "
              f"{c['rel_diff_max']:.2e} | {c['rel_diff_median']:.2e} | {c['pairs_over_1e-3']} | "
              f"{c['status_differs']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
