"""The default solver on another device against the CPU, in one run: the 48 solver pairs of both
shipped generators (``workloads.py``), float32, the same call on CPU tensors (C++ kernels, 1
thread) and on ``--device`` tensors (there the solver's kernels are their PyTorch references,
and the decoder's Jacobian the stacked forward mode). Prints the device, times (min over rounds
after a warm-up that builds the graph) and the largest relative difference of the lengths.

    python bench/bench_solver_device.py                 # --device cuda
    python bench/bench_solver_device.py --device cpu    # a dry run of the script on a CPU machine

``bench/gpu_check.sh`` runs it on a GPU machine.
"""

from __future__ import annotations

import argparse
import time

import torch
from workloads import GENERATORS, PAIRS, environment_line, generator, solver_pairs

import fastgeo


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(metric, z0, z1, device: torch.device, rounds: int) -> tuple[float, fastgeo.GeodesicResult]:
    """Min seconds of one batched call over ``rounds``, after a warm-up (graph build)."""
    with torch.no_grad():
        result = fastgeo.geodesics(metric, z0, z1)
        sync(device)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            result = fastgeo.geodesics(metric, z0, z1)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--order", action="append", default=[], metavar="OP=B1,B2",
                        help="auto's backends for OP on the device, e.g. segment_sqdist=triton,reference")
    args = parser.parse_args()
    from fastgeo.ops import registry

    for item in args.order:  # a candidate order, measured before it becomes auto's
        op, backends = item.split("=")
        registry.AUTO_ORDER[torch.device(args.device).type][op] = tuple(backends.split(","))
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    torch.set_num_threads(1)
    print(f"{environment_line(1)}; device {device} ({name}), float32, {PAIRS} pairs per generator; "
          f"auto on {device.type}: {registry.AUTO_ORDER.get(device.type)}")
    print("| generator | cpu s | device s | cpu / device | max rel. length diff. | converged cpu / device |")
    print("| --- | --- | --- | --- | --- | --- |")
    for gen in GENERATORS:
        metric = generator(gen)[0]
        z0, z1 = solver_pairs(gen)
        cpu_s, cpu = timed(metric, z0, z1, torch.device("cpu"), args.rounds)
        on_device = metric.to(device=device)
        dev_s, dev = timed(on_device, z0.to(device), z1.to(device), device, args.rounds)
        diff = float(((dev.lengths.cpu() - cpu.lengths) / cpu.lengths.clamp(min=1e-12)).abs().max())
        print(
            f"| {gen} | {cpu_s:.3f} | {dev_s:.3f} | {cpu_s / dev_s:.2f} | {diff:.2e} | "
            f"{int(cpu.converged.sum())} / {int(dev.converged.sum())} |"
        )


if __name__ == "__main__":
    main()
