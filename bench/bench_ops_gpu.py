"""GPU benchmark of the three ops: each backend ("triton", "cuda") against the reference, forward
and forward+backward, timed with CUDA events in one run. Prints device, shapes, times, ratios,
achieved GB/s (compulsory traffic: inputs read once, outputs written once) and TFLOP/s (the
products W phi, plus grad_phi = grad_beta W in the backward). ``--json`` is rewritten after each
case, and a backend that fails is reported and left out, so one failure or a time limit keeps the
other rows.

    python bench/bench_ops_gpu.py [--quick] [--dtype float32|float64] [--batches 65536,1024]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

import fastgeo

BACKENDS = ("reference", "triton", "cuda")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0]


def write_json(results: list, path: str) -> None:
    """Written whole, then renamed: a run stopped mid-write keeps the last complete file."""
    with open(f"{path}.tmp", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(f"{path}.tmp", path)


def timeit(fn, reps: int) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs after 2 warm-ups."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def make_case(op: str, B: int, N: int, d: int, K: int, D: int, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    kw = {"dtype": dtype, "device": "cuda"}
    centers = torch.randn(K, d, generator=g, **kw)
    gammas = 0.5 + torch.rand(K, generator=g, **kw)
    weights = torch.rand(D, K, generator=g, **kw)
    zeta = 0.05 + 0.1 * torch.rand(D, generator=g, **kw)
    size = dtype.itemsize
    if op == "segment_sqdist":
        x = torch.randn(B, N, D, generator=g, **kw).requires_grad_()
        return (x,), (B * N * D + B * (N - 1)) * size, 3 * B * (N - 1) * D
    points = torch.randn(B, N, d, generator=g, **kw).requires_grad_()
    params = (centers, gammas, weights, zeta)
    if op == "rbf_precision":
        z = points.detach().reshape(-1, d).requires_grad_()
        return (z, *params), (B * N * (d + D) + D * K) * size, 2 * B * N * K * D
    return (points, *params), (B * N * d + B * (N - 1) + D * K) * size, 2 * B * N * K * D


def run_case(op, shape, dtype, reps, results):
    B, N, d, K, D = shape
    row = {"op": op, "shape": shape, "dtype": str(dtype)}
    try:
        args, nbytes, flops = make_case(op, B, N, d, K, D, dtype)
    except Exception as e:  # out of memory included
        error = f"{type(e).__name__}: {first_line(e)}"
        print(f"  inputs failed: {error}")
        results.append({**row, "error": f"inputs: {error}"})
        if isinstance(e, torch.OutOfMemoryError):  # after another error the device may not answer
            torch.cuda.empty_cache()
        return
    fn = getattr(fastgeo.ops, op)
    avail = fastgeo.availability()
    base = {}
    for backend in BACKENDS:
        if not avail[backend][0]:
            print(f"  {backend:9s} unavailable: {avail[backend][1]}")
            continue
        for mode in ("fwd", "fwd+bwd"):

            def step(backend=backend, mode=mode):
                with fastgeo.use_backend(backend):
                    if mode == "fwd":
                        with torch.no_grad():
                            fn(*args)
                    else:
                        out = fn(*args)
                        torch.autograd.grad(out.sum(), args[0])

            try:
                torch.cuda.reset_peak_memory_stats()
                ms = timeit(step, reps)
                peak = torch.cuda.max_memory_allocated() / 2**20
            except torch.OutOfMemoryError:
                print(f"  {backend:9s} {mode:8s} out of memory")
                results.append({**row, "backend": backend, "mode": mode, "error": "out of memory"})
                torch.cuda.empty_cache()
                continue
            except Exception as e:  # a kernel that fails to compile or launch: the other backends still run
                error = f"{type(e).__name__}: {first_line(e)}"
                print(f"  {backend:9s} {mode:8s} failed: {error}")
                results.append({**row, "backend": backend, "mode": mode, "error": error})
                continue
            if backend == "reference":
                base[mode] = ms
            ratio = base[mode] / ms if mode in base else float("nan")
            f = flops * (2 if mode == "fwd+bwd" else 1)  # backward adds the grad_phi product
            print(
                f"  {backend:9s} {mode:8s} {ms:9.3f} ms  x{ratio:6.2f} vs reference  "
                f"{nbytes / ms / 1e6:8.1f} GB/s  {f / ms / 1e9:7.2f} TFLOP/s  peak {peak:8.1f} MiB"
            )
            results.append({**row, "backend": backend, "mode": mode, "ms": ms, "speedup_vs_reference": ratio})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", default=None, help="write every row to this file")
    ap.add_argument("--ops", default="segment_sqdist,rbf_precision,rbf_segment_sqdist")
    ap.add_argument("--batches", default="1024,16384,65536", help="curves B per case, in this order")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 1
    dtype = getattr(torch, a.dtype)
    print(
        f"device: {torch.cuda.get_device_name()} | torch {torch.__version__} | CUDA {torch.version.cuda} "
        f"| dtype {a.dtype} | TF32 matmul {torch.backends.cuda.matmul.allow_tf32} "
        f"| Triton dots {os.environ.get('FASTGEO_TRITON_DOT', 'ieee')} "
        f"| CPU threads {torch.get_num_threads()}"
    )
    print("backends:", {k: v[0] for k, v in fastgeo.availability().items()})
    Bs = [1024] if a.quick else [int(b) for b in a.batches.split(",")]
    shapes = [(B, 32, d, 128, 784) for B in Bs for d in (2, 16)]
    results: list = []
    for op in a.ops.split(","):
        for shape in shapes:
            print(f"{op}  (B, N, d, K, D) = {shape}")
            run_case(op, shape, dtype, a.reps, results)
            if a.json:
                write_json(results, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
