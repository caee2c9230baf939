"""The one registry of fastgeo's operators: which implementation runs an op, per device.

Backends:

- ``"reference"``: the pure-PyTorch oracle (:mod:`fastgeo.reference`), any device;
- ``"cpu"``: the operators ``torch.ops.fastgeo.*`` with their C++ CPU kernels;
- ``"cuda"`` / ``"triton"``: the same operators on CUDA tensors, their CUDA kernels running the
  CUDA C++ or the Triton implementation (:mod:`fastgeo.ops.library`).

Every op resolves through :func:`resolve`: the backend forced by :func:`use_backend`, or under
``"auto"`` the first available one of :data:`AUTO_ORDER` for the tensors' device. A compiled
backend runs the ops it has kernels for; the others (e.g. the solver's ops on CUDA), and calls
the kernels cannot take (gradients through a solver kernel, systems too large for it), run the
reference.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd import forward_ad

from .. import reference
from .. import triton as triton_kernels
from . import library

BACKENDS = ("reference", "cpu", "triton", "cuda")
PUBLIC_OPS = ("rbf_precision", "segment_sqdist", "rbf_segment_sqdist")
SOLVER_OPS = ("rbf_sigma_jacobian", "gauss_newton_system", "lm_propose", "banded_lm_propose", "lm_update")
OPS = PUBLIC_OPS + SOLVER_OPS

# "auto" tries these in order, per device type and op. On CUDA tensors it keeps the reference,
# measured on an H200 (bench/RESULTS.md, "On an H200"): rbf_segment_sqdist and rbf_precision
# forward+backward are slower in both GPU backends than the reference's cuBLAS products (Triton
# 0.03-0.08x, CUDA C++ 0.6-0.9x on rbf_segment_sqdist). Triton's segment_sqdist is 7.5x the
# reference forward+backward; it becomes auto's once the solver has run with it on a GPU
# (bench_solver_device.py --order). The GPU kernels stay opt-in with use_backend.
AUTO_ORDER: dict[str, dict[str, tuple[str, ...]]] = {
    "cpu": dict.fromkeys(OPS, ("cpu", "reference")),
    "cuda": dict.fromkeys(OPS, ("reference",)),
}
_DEVICES: dict[str, tuple[str, ...] | None] = {
    "reference": None,
    "cpu": ("cpu",),
    "triton": ("cuda",),
    "cuda": ("cuda",),
}

_current: contextvars.ContextVar[str] = contextvars.ContextVar("fastgeo_backend", default="auto")
# The innermost use_backend of the process, mirrored in a plain global: torch.compile guards the
# globals a graph read when it was traced (not context variables), so a graph traced under one
# backend is traced again under another instead of running the backend it was traced with.
_compiled_backend = "auto"
_warned: set[str] = set()


@functools.cache
def _availability(name: str) -> tuple[bool, str]:
    if name == "reference":
        return True, "pure PyTorch"
    if not library.LOADED:
        return False, (
            f"extension fastgeo._C not built ({library.LOAD_ERROR}); build it with "
            "`pip install --no-build-isolation -e .`"
        )
    if name == "cpu":
        if not library.has_kernel("rbf_segment_sqdist", "CPU"):
            return False, "fastgeo._C loaded but has no CPU kernels"
        return True, "C++ kernels (fastgeo._C: OpenMP, BLAS tiles; float32/float64)"
    if name == "triton":
        ok, why = triton_kernels.is_available()
        return (ok and "triton" in library.CUDA_IMPLEMENTATIONS), why
    if "cuda" in library.CUDA_IMPLEMENTATIONS:
        return True, "CUDA C++ kernels (fastgeo._C_cuda; float32/float64)"
    if not torch.cuda.is_available():
        return False, "no CUDA device"
    return False, "fastgeo._C_cuda not built (rebuild with FASTGEO_CUDA=1 on a CUDA torch)"


def availability() -> dict[str, tuple[bool, str]]:
    """{backend: (available, reason)} for every backend."""
    return {name: _availability(name) for name in BACKENDS}


def current_backend() -> str:
    """The backend name forced by the innermost :func:`use_backend`, or ``"auto"``."""
    return _current.get()


def use_backend(name: str) -> contextlib.AbstractContextManager[None]:
    """Force the backend of ``fastgeo.ops.*`` (and everything built on them) inside a block.

    ``name``: ``"reference"`` (pure PyTorch), ``"cpu"`` (C++ kernels), ``"triton"``,
    ``"cuda"`` (CUDA C++ kernels) or ``"auto"`` (the fastest available for the tensors' device).
    Forcing a backend that is unavailable, or that does not run on the tensors' device, raises.
    Inside ``torch.func`` transforms (``jvp``, ``jacfwd``, ``grad``, ``vmap``) the ops run the
    reference whatever the backend (the kernels have no forward-mode or functorch rules).

    Example::

        with fastgeo.use_backend("reference"):
            d = fastgeo.ops.segment_sqdist(x)
    """
    # Checked here, not when the block is entered: a misspelt name fails where it is written.
    if not isinstance(name, str) or name not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {name!r}")
    return _forced_backend(name)


@contextlib.contextmanager
def _forced_backend(name: str) -> Iterator[None]:
    global _compiled_backend
    token = _current.set(name)
    _compiled_backend = name
    # The ops' CUDA kernels read this when they run, also from a graph torch.compile made.
    kernel = library.CUDA_KERNEL.set(name if name in library.CUDA_IMPLEMENTATIONS else None)
    try:
        yield
    finally:
        library.CUDA_KERNEL.reset(kernel)
        _current.reset(token)
        # This thread's backend again (restoring `before` left another thread's block in the
        # mirror where two threads' blocks overlapped).
        _compiled_backend = _current.get()


@functools.cache
def implementation(name: str, op: str) -> Callable[..., Any] | None:
    """The callable of backend ``name`` for ``op`` (the operator's schema), or None if it has none."""
    if not _availability(name)[0]:
        return None
    if name == "reference":
        return getattr(reference, op)
    if name == "cpu":
        return getattr(torch.ops.fastgeo, op) if library.has_kernel(op, "CPU") else None
    if not library.has_kernel(op, "CUDA") or not hasattr(library.CUDA_IMPLEMENTATIONS[name], op):
        return None
    operator = getattr(torch.ops.fastgeo, op)

    def call(*args: Any) -> Any:
        with library.cuda_kernel(name):
            return operator(*args)

    return call


def _runs_on(name: str, device: torch.device) -> bool:
    devices = _DEVICES[name]
    return devices is None or device.type in devices


def resolve(op: str, device: torch.device, compiled: bool = True) -> tuple[str, Callable[..., Any]]:
    """(backend name, callable) that runs ``op`` for tensors on ``device`` under the current
    choice. ``compiled=False``: the call is one the kernels cannot take; the reference runs."""
    name = _current.get()
    if name != "auto":
        ok, why = _availability(name)
        if not ok:
            raise RuntimeError(
                f"fastgeo backend {name!r} is not available here: {why}. "
                "`fastgeo info` lists the backends available."
            )
        if not _runs_on(name, device):
            raise ValueError(f"fastgeo backend {name!r} runs on {_DEVICES[name]} tensors, got {device.type}")
        impl = implementation(name, op) if compiled else None
        return (name, impl) if impl is not None else ("reference", implementation("reference", op))
    order = AUTO_ORDER.get(device.type, {}).get(op, ("reference",))
    for candidate in order if compiled else ("reference",):
        impl = implementation(candidate, op)
        if impl is not None and _runs_on(candidate, device):
            if candidate == "reference" and compiled and op in PUBLIC_OPS:
                _warn_reference(device, order)
            return candidate, impl
    return "reference", implementation("reference", op)


def _warn_reference(device: torch.device, order: tuple[str, ...]) -> None:
    skipped = [c for c in order if c != "reference"]
    if skipped and device.type not in _warned:
        _warned.add(device.type)
        why = "; ".join(f"{c}: {_availability(c)[1]}" for c in skipped)
        warnings.warn(
            f"fastgeo: no compiled kernels for {device.type} tensors ({why}); "
            "using the pure-PyTorch reference (correct, slower).",
            RuntimeWarning,
            stacklevel=4,
        )


@torch.compiler.assume_constant_result
def _backend_when_traced(op: str, device_type: str, compiled: bool, forced: str) -> str:
    return resolve(op, torch.device(device_type), compiled)[0]  # (forced: what the graph is guarded on)


def _dual(args: tuple[Any, ...]) -> bool:
    """Whether an argument carries a tangent of torch.autograd.forward_ad (its level is one for
    the whole process: another thread's jvp must not move this thread's calls to the reference)."""
    if forward_ad._current_level < 0:
        return False
    return any(isinstance(a, torch.Tensor) and forward_ad.unpack_dual(a).tangent is not None for a in args)


def call(op: str, device: torch.device, *args: Any, compiled: bool = True) -> Any:
    """Run ``op`` on validated ``args`` (the operator's schema) with the resolved backend.

    Under ``torch.compile`` the backend is resolved once, when the graph is traced (dynamo
    cannot trace the context variables of :func:`use_backend`), and the graph calls the
    reference or the operator itself; an operator's CUDA kernel reads the backend that
    :func:`use_backend` set when the graph runs."""
    if torch.compiler.is_compiling():
        name = _backend_when_traced(op, device.type, compiled, _compiled_backend)
        return (getattr(reference, op) if name == "reference" else getattr(torch.ops.fastgeo, op))(*args)
    if torch._C._functorch.maybe_current_level() is not None or _dual(args):
        # Inside torch.func transforms (jvp, jacfwd, grad, vmap) or a forward-mode level of
        # torch.autograd.forward_ad: the kernels have backward formulas only, and forward mode
        # through them dropped the tangent, silently; the reference is plain PyTorch, which every
        # transform differentiates.
        return getattr(reference, op)(*args)
    return resolve(op, device, compiled)[1](*args)
