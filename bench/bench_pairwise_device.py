"""All-pairs distances of the digits generator on one device, and against another run (issue 17):
for each M, the whole matrix with ``pairwise_distances`` on ``--device`` tensors (on the CPU:
worker processes of one thread), its time, pairs per second and time per geodesic; with
``--against`` the matrices another run saved, how far the two differ (relative length
difference over all pairs; pairs whose status differs).

    python bench/bench_pairwise_device.py --device cuda --save gpu.pt         # M = 128, 512, 2000
    python bench/bench_pairwise_device.py --device cpu --ms 128,512 --against gpu.pt

The M codes are the generator's training codes (1,797); past that, codes jittered by 2 % of the
codes' spread around random training codes. A run whose time, extrapolated from the smaller M
(cost per pair), would pass ``--budget-s`` is skipped and the estimate printed instead, so the
script ends inside a device lease. The CPU and the device runs are separate processes: the
CPU workers are forked, which a process that has initialized CUDA should not do. With
``--against`` only the M that run saved are solved. ``--save`` and ``--json`` (every row) are
rewritten after each M, so a run stopped by a time limit keeps what it measured.
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


def extrapolate(done: list[tuple[int, float]], pairs: int) -> float:
    """Seconds a run of ``pairs`` pairs should take: a line through the last two runs (a fixed
    cost plus a cost per pair), or through the origin and the one run so far; 0 with none."""
    if not done:
        return 0.0
    if len(done) == 1:
        return done[0][1] * pairs / done[0][0]
    (p1, s1), (p2, s2) = done[-2:]
    return s2 + max(s2 - s1, 0.0) / max(p2 - p1, 1) * (pairs - p2)


def write(path: str, save) -> None:
    """``save(tmp)``, then the file replaced at once: a run killed mid-write leaves the last whole one."""
    tmp = f"{path}.tmp"
    save(tmp)
    os.replace(tmp, path)


def dump_json(rows: list, path: str) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(rows, f, indent=1)

    write(path, save)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ms", default="128,512,2000", help="comma-separated M values, smallest first")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip a run estimated longer")
    parser.add_argument("--workers", type=int, default=None, help="CPU worker processes (default: cores)")
    parser.add_argument("--save", default=None, help="write the matrices to this file (torch.save)")
    parser.add_argument("--against", default=None, help="compare with the matrices another run saved")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    other, other_device = {}, "other"
    if args.against:  # read first: a missing file is an error now, not after the measurements
        if not os.path.isfile(args.against):
            parser.error(f"--against: no such file: {args.against}")
        other = torch.load(args.against)
        other_device = next((o["row"]["device"] for o in other.values()), other_device)
    workers = (args.workers or os.cpu_count()) if device.type == "cpu" else 1
    metric, Z_all, _ = generator("digits")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{environment_line(1)}; device {device} ({name}), workers {workers}; digits, float32")
    rows, runs, done, compared = [], {}, [], {}  # done: (pairs, seconds) of the runs so far
    for M in [int(m) for m in args.ms.split(",")]:
        pairs = M * (M - 1) // 2
        if args.against and M not in other:
            print(f"M={M}: skipped, not in {args.against}")
            continue
        estimate = extrapolate(done, pairs)
        if estimate > args.budget_s:
            print(f"M={M}: skipped, estimated {estimate:.0f} s > budget {args.budget_s:.0f} s")
            rows.append({"device": str(device), "M": M, "skipped_estimate_s": estimate})
            continue
        runs[M] = solve(metric, codes(Z_all, M), device, workers)
        runs[M]["row"]["workers"] = workers
        done.append((pairs, runs[M]["row"]["seconds"]))
        rows.append(runs[M]["row"])
        print(json.dumps(runs[M]["row"]), flush=True)
        if M in other:
            compared[M] = compare(runs[M], other[M])
            rows.append({"M": M, "against": args.against, **compared[M]})
            print(json.dumps(rows[-1]), flush=True)
        if args.save:
            write(args.save, lambda tmp: torch.save(runs, tmp))
        if args.json:
            dump_json(rows, args.json)
    if args.json:  # the skipped M's estimates too
        dump_json(rows, args.json)
    if compared:
        mine_dev = device.type
        print(
            f"| M | pairs | {mine_dev} s | {other_device} s | {mine_dev} / {other_device} | "
            "max rel. diff | median rel. diff | pairs > 1e-3 | status differs |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for M, c in compared.items():
            mine, theirs = runs[M]["row"], other[M]["row"]
            print(
                f"| {M} | {mine['pairs']} | {mine['seconds']:.1f} | {theirs['seconds']:.1f} | "
                f"{mine['seconds'] / theirs['seconds']:.2f} | {c['rel_diff_max']:.2e} | "
                f"{c['rel_diff_median']:.2e} | {c['pairs_over_1e-3']} | {c['status_differs']} |"
            )


if __name__ == "__main__":
    main()
