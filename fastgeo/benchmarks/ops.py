"""Ops layer: each op forward and forward+backward, every compiled backend that runs on the
device against the pure-PyTorch reference, at a few batch sizes, measured side by side."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import ops
from ..ops import availability, use_backend
from .generator import synthetic_generator
from .timing import time_fn

if TYPE_CHECKING:
    from .settings import Settings

# Compiled backends worth timing per device type. Triton on CPU tensors is its interpreter (a
# correctness tool, orders of magnitude slow), so it is never timed there.
COMPILED = {"cpu": ("cpu",), "cuda": ("triton", "cuda")}


def _cases(B: int, N: int, D: int, prec_params: tuple[Tensor, ...], device: torch.device, dtype: torch.dtype):
    """(op, shape label, shape dict, inputs needing grad, call) per op at batch size B."""
    c, gam, W, zeta = (t.detach().clone() for t in prec_params)
    K, d = c.shape
    g = torch.Generator(device="cpu").manual_seed(B)

    def rnd(*shape: int, scale: float = 1.0) -> Tensor:
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device=device, dtype=dtype)

    x = rnd(B, N, D)
    pts = rnd(B, N, d, scale=2.0)
    z = rnd(B * N, d, scale=2.0)
    Wg = W.clone()
    return [
        ("segment_sqdist", f"B={B}, N={N}, D={D}", {"B": B, "N": N, "D": D}, [x],
         lambda: ops.segment_sqdist(x)),
        ("rbf_segment_sqdist", f"B={B}, N={N}, d={d}, K={K}, D={D}",
         {"B": B, "N": N, "d": d, "K": K, "D": D}, [pts],
         lambda: ops.rbf_segment_sqdist(pts, c, gam, W, zeta)),
        # P = B N latent points, the solver's per-iteration load; grads for z and the weights
        # (the training use case)
        ("rbf_precision", f"P={B * N}, d={d}, K={K}, D={D}", {"P": B * N, "d": d, "K": K, "D": D},
         [z, Wg], lambda: ops.rbf_precision(z, c, gam, Wg, zeta)),
    ]  # fmt: skip


def _timed(call: Callable[[], Tensor], inputs: list[Tensor], mode: str) -> Callable[[], Any]:
    if mode == "fwd":

        def fwd() -> Tensor:
            with torch.no_grad():
                return call()

        return fwd
    leaves = [t.requires_grad_(True) for t in inputs]
    with torch.no_grad():
        grad_out = torch.ones_like(call())  # fixed contiguous upstream gradient

    def fwd_bwd() -> tuple[Tensor, ...]:
        return torch.autograd.grad(call(), leaves, grad_out)

    return fwd_bwd


def backends_for(device: torch.device) -> tuple[list[str], list[dict[str, str]]]:
    """Backends to time on ``device`` (compiled ones first, then "reference") and the skipped."""
    avail = availability()
    chosen, skipped = [], []
    for name in COMPILED.get(device.type, ()):
        ok, reason = avail[name]
        (chosen.append(name) if ok else skipped.append({"layer": "ops", "what": f"backend {name}",
                                                         "reason": reason}))  # fmt: skip
    return chosen + ["reference"], skipped


def run_ops(
    settings: Settings, device: torch.device, log: Callable[[str], None]
) -> tuple[list[dict], list[dict]]:
    """Result rows (one per op, batch, mode, backend) and skipped entries."""
    dtype = settings.dtype
    metric, _ = synthetic_generator(dtype=dtype, device=device, D=settings.ops_D)
    params = metric.precision.params()
    backends, skipped = backends_for(device)
    # One thread and the current count, side by side: on a shared machine the multi-threaded
    # rows pay OpenMP stalls (whole scheduler slices) that the one-thread rows do not.
    current = torch.get_num_threads()
    thread_counts = sorted({1, current}) if settings.ops_one_thread_too else [current]
    rows: list[dict] = []
    for nt in thread_counts:
        torch.set_num_threads(nt)
        try:
            for B in settings.ops_batches:
                cases = _cases(B, settings.ops_N, settings.ops_D, params, device, dtype)
                for op, label, shape, inputs, call in cases:
                    for mode in ("fwd", "fwd+bwd"):
                        group = []
                        for backend in backends:
                            with use_backend(backend):
                                fn = _timed(call, inputs, mode)
                                t = time_fn(
                                    fn,
                                    rounds=settings.ops_rounds,
                                    warmup=1,
                                    device=device,
                                    min_total_s=settings.ops_min_total_s,
                                )
                            row = {
                                "layer": "ops", "op": op, "backend": backend, "mode": mode,
                                "batch": B, "threads": nt, "shape": label, "shapes": shape,
                                "dtype": str(dtype).replace("torch.", ""), "time_s": t,
                            }  # fmt: skip
                            group.append(row)
                            log(f"  ops {op:18s} {mode:7s} B={B:<6d} {nt}t {backend:9s} {t['min']:.3e} s")
                        ref = group[-1]["time_s"]["min"]
                        for row in group:
                            # > 1: this backend is that many times faster than the reference, same run
                            row["ratio_vs_reference"] = ref / row["time_s"]["min"]
                        rows += group
        finally:
            torch.set_num_threads(current)
    return rows, skipped
