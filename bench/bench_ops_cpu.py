"""CPU benchmark of the three ops: the C++ kernels (backend "cpu") against the pure-PyTorch
reference, in the same run, forward and forward+backward, with 1 and 2 threads; plus a bare
``torch.mm`` of rbf_precision's (P x K) @ (K x D) product, the GEMM limit it should approach:
as called (``torch.mm``, allocating its output; fwd+bwd through autograd: the three products of
a training step) and into a preallocated output (``torch.mm out=``, forward only: the GEMM alone).

    pytest bench/bench_ops_cpu.py --benchmark-only [--benchmark-columns=min,median,rounds]

Prints, at the end, a table with shape, dtype, threads, times, ratios and peak extra memory.
Peak extra memory: growth of the process's peak resident set (``VmHWM``, reset just before the
call through /proc/self/clear_refs) during a single call, in a fresh subprocess after the inputs
exist and a small warm-up call has initialised the thread pools and BLAS. It counts every byte
the call touches (temporaries, outputs and input gradients), torch's allocations included
(which tracemalloc would miss). Measured at 2
threads. Forward+backward passes ``grad_outputs`` as a fixed contiguous tensor (not ``.sum()``),
so neither side pays for an expanded gradient.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import workloads

import fastgeo
from fastgeo.benchmarks.timing import environment

DTYPE = workloads.DTYPE
THREADS = (1, 2)
CASES = dict(workloads.OPS_CASES)  # the shapes every layer shares (see workloads.py)
# Rounds per timing: the reference at these sizes takes seconds per call.
ROUNDS = {"reference": 3, "cpu": 5, "torch.mm": 5, "torch.mm out=": 5}


def shape_str(case: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in case.items() if k != "op")


def make_step(name: str, impl: str, mode: str) -> Callable[[], None]:
    """A zero-argument callable running one forward (no grad) or forward+backward of a case."""
    c = CASES[name]
    g = torch.Generator().manual_seed(0)
    kw = {"dtype": DTYPE}
    source = c.get("generator")
    if c["op"] == "segment_sqdist":
        if source:  # the decoder's outputs along curves between the generator's codes
            metric = workloads.generator(source)[0]
            with torch.no_grad():
                x = metric.mean(workloads.curve_points(source, c["B"], c["N"]))
            x.requires_grad_(mode != "fwd")
        else:
            x = torch.randn(c["B"], c["N"], c["D"], generator=g, **kw).requires_grad_(mode != "fwd")
        args, wrt = (x,), (x,)
        gout = torch.randn(c["B"], c["N"] - 1, generator=g, **kw)
    else:
        K, d, D = c["K"], c["d"], c["D"]
        centers = torch.randn(K, d, generator=g, **kw)
        gammas = 0.5 + torch.rand(K, generator=g, **kw)
        weights = torch.rand(D, K, generator=g, **kw)
        zeta = 0.05 + 0.1 * torch.rand(D, generator=g, **kw)
        if source:  # the generator's own RBF precision
            prec = workloads.generator(source)[0].precision
            centers, gammas, weights, zeta = (p.detach().clone() for p in prec.params())
            zeta = zeta.expand(D).contiguous() if zeta.dim() == 0 else zeta
        if c["op"] == "rbf_precision":
            # The training use case: gradients for z and weights.
            z = torch.randn(c["P"], d, generator=g, **kw)
            if source:
                z = workloads.curve_points(source, -(-c["P"] // 32), 32).reshape(-1, d)[: c["P"]]
            weights.requires_grad_(mode != "fwd")
            z.requires_grad_(mode != "fwd")
            args, wrt = (z, centers, gammas, weights, zeta), (z, weights)
            gout = torch.randn(c["P"], D, generator=g, **kw)
            if impl.startswith("torch.mm"):
                phi = torch.rand(c["P"], K, generator=g, **kw).requires_grad_(mode != "fwd")
                args, wrt = (phi, weights), (phi, weights)
        else:
            # The geodesic use case: gradients for the curve points only.
            points = torch.randn(c["B"], c["N"], d, generator=g, **kw)
            if source:
                points = workloads.curve_points(source, c["B"], c["N"])
            points.requires_grad_(mode != "fwd")
            args, wrt = (points, centers, gammas, weights, zeta), (points,)
            gout = torch.randn(c["B"], c["N"] - 1, generator=g, **kw)

    if impl == "torch.mm":

        def call():
            return torch.mm(args[0], args[1].t())
    elif impl == "torch.mm out=":
        # The pure GEMM: into a preallocated, already touched output (no allocation, no page faults).
        out = torch.zeros(args[0].shape[0], args[1].shape[0], dtype=DTYPE)

        def call():
            return torch.mm(args[0], args[1].t(), out=out)
    else:
        fn = getattr(fastgeo.ops, c["op"])

        def call():
            with fastgeo.use_backend(impl):
                return fn(*args)

    if mode == "fwd":

        def step():
            with torch.no_grad():
                call()
    else:

        def step():
            torch.autograd.grad(call(), wrt, grad_outputs=gout)

    return step


def _status_bytes(field: str) -> int:
    """A memory field (VmRSS, VmHWM) of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _peak_child(name: str, impl: str, mode: str) -> None:
    """Subprocess body: print the peak RSS growth (bytes) of one call as JSON."""
    torch.set_num_threads(2)
    # Warm-up on a small problem: thread pools, BLAS buffers, dispatcher caches.
    small = dict(CASES[name])
    for k in ("B", "P"):
        if k in small:
            small[k] = 8
    CASES["_small"] = small
    make_step("_small", impl, mode)()
    step = make_step(name, impl, mode)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
    before = _status_bytes("VmRSS")
    step()
    print(json.dumps({"extra": _status_bytes("VmHWM") - before}))


def peak_extra_mb(name: str, impl: str, mode: str) -> float | None:
    """Peak extra memory (MiB) of one call, measured in a fresh subprocess (Linux only)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    out = subprocess.run(
        [sys.executable, __file__, "--peak", name, impl, mode], capture_output=True, text=True, check=True
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["extra"] / 2**20


def _impls(name: str, mode: str) -> list[str]:
    if CASES[name]["op"] != "rbf_precision":
        return ["reference", "cpu"]
    return ["reference", "cpu", "torch.mm"] + (["torch.mm out="] if mode == "fwd" else [])


PARAMS = [
    pytest.param(name, mode, impl, threads, id=f"{name}-{mode}-{impl.replace(' out=', '-out')}-{threads}t")
    for name in CASES
    for mode in ("fwd", "fwd+bwd")
    for threads in THREADS
    for impl in _impls(name, mode)
]


@pytest.fixture(scope="module", autouse=True)
def _cpu_backend_built():
    ok, why = fastgeo.availability()["cpu"]
    if not ok:
        pytest.skip(f"fastgeo._C is not built: {why}")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name,mode,impl,threads", PARAMS)
def test_op(benchmark, cpu_results, name: str, mode: str, impl: str, threads: int) -> None:
    torch.set_num_threads(threads)
    step = make_step(name, impl, mode)
    benchmark.group = f"{name} {mode} {threads}t"
    benchmark.pedantic(step, rounds=ROUNDS[impl], warmup_rounds=1, iterations=1)
    stats = benchmark.stats.stats if benchmark.stats else None
    peak = peak_extra_mb(name, impl, mode) if threads == 2 else None
    cpu_results.append(
        dict(
            case=name,
            op=CASES[name]["op"],
            shape=shape_str(CASES[name]),
            dtype=str(DTYPE).replace("torch.", ""),
            mode=mode,
            impl=impl,
            threads=threads,
            min=stats.min if stats else None,
            median=stats.median if stats else None,
            peak_mb=peak,
        )
    )
    benchmark.extra_info.update(environment("cpu"))
    benchmark.extra_info.update(
        threads=threads, dtype=str(DTYPE), peak_extra_mb=peak, impl=impl, shape=shape_str(CASES[name])
    )


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--peak":
        _peak_child(*sys.argv[2:])
    else:
        sys.exit(pytest.main([__file__, "--benchmark-only", *sys.argv[1:]]))
