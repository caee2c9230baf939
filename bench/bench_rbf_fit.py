"""One step of ``RBFPrecision.fit``: the gradient of the fit's objective by autograd through
``rbf_nll`` (the reference, and the fit's step before) against ``nll_gradient`` (no (M, D) graph,
the residuals reduced once to ``resid2^T phi``), side by side at image sizes, with the peak extra
memory of one step.

    cd bench && OMP_NUM_THREADS=1 pytest bench_rbf_fit.py --benchmark-only -s
"""

from __future__ import annotations

import os

import pytest
import torch
from workloads import environment_line

from fastgeo.rbf_fit import nll_gradient, rbf_nll

K = 64  # the fit's default number of centers
CASES = {"M5000-D784": (5000, 784), "M5000-D3072": (5000, 3072), "M2000-D12288": (2000, 12288)}
DTYPE = torch.float32
ROUNDS = 5
RESULTS: dict[tuple[str, str], dict] = {}


def _problem(m: int, dims: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    phi = torch.rand(m, K, generator=g, dtype=DTYPE)
    resid2 = torch.rand(m, dims, generator=g, dtype=DTYPE) * 0.01
    log_w = torch.randn(dims, K, generator=g, dtype=DTYPE)
    return phi, resid2, log_w, resid2.T @ phi


def _step(impl: str, phi, resid2, log_w, phi_resid):
    if impl == "autograd":

        def step():
            v = log_w.clone().requires_grad_(True)
            rbf_nll(phi, v, resid2, 1e-3).backward()
            return v.grad

    else:

        def step():
            return nll_gradient(phi, log_w, phi_resid, 1e-3)

    return step


def _peak_extra_mb(step) -> float | None:
    """Peak RSS growth of one call (Linux: the high-water mark reset before it)."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None

    def field(name: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(name + ":"))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = field("VmRSS")
    step()
    return (field("VmHWM") - before) / 1024


@pytest.mark.parametrize("impl", ["autograd", "nll_gradient"])
@pytest.mark.parametrize("case", list(CASES))
def test_fit_step(benchmark, case: str, impl: str) -> None:
    m, dims = CASES[case]
    args = _problem(m, dims)
    step = _step(impl, *args)
    benchmark.group = case
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if impl == "nll_gradient":  # the two agree (float32 rounding of sums over M)
        ref = _step("autograd", *args)()
        assert torch.allclose(step(), ref, rtol=1e-3, atol=1e-6 * float(ref.abs().max()))
    RESULTS[case, impl] = dict(min=benchmark.stats.stats.min, peak=_peak_extra_mb(step))


def teardown_module() -> None:
    if not RESULTS:
        return
    print("\n\nRBFPrecision.fit, one step's gradient (min of rounds; ratio = autograd / nll_gradient)")
    print(environment_line(torch.get_num_threads()) + f", dtype {str(DTYPE).replace('torch.', '')}, K {K}")
    print("| M x D | autograd s | nll_gradient s | ratio | peak extra MiB autograd | nll_gradient |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, (m, dims) in CASES.items():
        a, b = RESULTS.get((case, "autograd")), RESULTS.get((case, "nll_gradient"))
        if a and b:
            print(
                f"| {m} x {dims} | {a['min']:.4f} | {b['min']:.4f} | {a['min'] / b['min']:.2f} "
                f"| {a['peak'] or 0:.0f} | {b['peak'] or 0:.0f} |"
            )
