"""Backend registry and selection: which implementation runs each op.

A backend is a module exposing ``name``, ``devices`` (tuple of device types it runs on, or
``None`` for any), ``is_available() -> (bool, reason)`` and the three op functions
``rbf_precision(z2d, centers, gammas, weights, zeta1d)``, ``segment_sqdist(x)``,
``rbf_segment_sqdist(points, centers, gammas, weights, zeta1d)`` taking validated arguments
(see :mod:`fastgeo.reference`, the template and the oracle).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import warnings
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("reference", "cpu", "triton", "cuda")
_MODULES = {
    "reference": "fastgeo.reference",
    "cpu": "fastgeo.backends.cpu",
    "triton": "fastgeo.triton",
    "cuda": "fastgeo.backends.cuda",
}
OPS = ("rbf_precision", "segment_sqdist", "rbf_segment_sqdist")
# The solver's own kernels: C++ on CPU tensors (see use_cpu_kernel), their references elsewhere.
SOLVER_OPS = ("rbf_sigma_jacobian", "gauss_newton_system", "lm_propose", "lm_update")

# "auto" tries these in order, per device type and op. The GPU kernels pass the interpreter and
# compile checks but have not yet run on a GPU (bench/gpu_check.sh does that): until they have,
# "auto" keeps CUDA tensors on the reference and the GPU kernels are opt-in with use_backend.
AUTO_ORDER: dict[str, dict[str, tuple[str, ...]]] = {
    "cpu": {op: ("cpu", "reference") for op in OPS},
    "cuda": {op: ("reference",) for op in OPS},
}

_current: contextvars.ContextVar[str] = contextvars.ContextVar("fastgeo_backend", default="auto")
_loaded: dict[str, ModuleType | None] = {}
_reasons: dict[str, str] = {}
_warned: set[str] = set()


def _load(name: str) -> ModuleType | None:
    """The backend's module if it imports and reports itself available, else None."""
    if name not in _loaded:
        module = None
        try:
            module = importlib.import_module(_MODULES[name])
            ok, reason = module.is_available()
        except ImportError as exc:  # the backend's package or extension is absent
            ok, reason = False, f"import failed: {exc}"
        _loaded[name] = module if ok else None
        _reasons[name] = reason
    return _loaded[name]


def availability() -> dict[str, tuple[bool, str]]:
    """{backend: (available, reason)} for every backend, importing each once."""
    return {name: (_load(name) is not None, _reasons[name]) for name in BACKENDS}


def current_backend() -> str:
    """The backend name forced by the innermost :func:`use_backend`, or ``"auto"``."""
    return _current.get()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force the backend of ``fastgeo.ops.*`` (and everything built on them) inside a block.

    ``name``: ``"reference"`` (pure PyTorch), ``"cpu"`` (C++ kernels), ``"triton"``,
    ``"cuda"`` (CUDA C++ kernels) or ``"auto"`` (the fastest available for the tensors' device).
    Forcing a backend that is unavailable, or that does not run on the tensors' device, raises.

    Example::

        with fastgeo.use_backend("reference"):
            d = fastgeo.ops.segment_sqdist(x)
    """
    if not isinstance(name, str) or name not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {BACKENDS + ('auto',)}, got {name!r}")
    token = _current.set(name)
    try:
        yield
    finally:
        _current.reset(token)


def _runs_on(module: ModuleType, device: torch.device) -> bool:
    return module.devices is None or device.type in module.devices


def resolve(op: str, device: torch.device) -> ModuleType:
    """The backend module that runs ``op`` for tensors on ``device`` under the current choice."""
    name = _current.get()
    if name != "auto":
        module = _load(name)
        if module is None:
            raise RuntimeError(
                f"fastgeo backend {name!r} is not available here: {_reasons[name]}. "
                f"`fastgeo info` lists the backends available."
            )
        if not _runs_on(module, device):
            raise ValueError(f"fastgeo backend {name!r} runs on {module.devices} tensors, got {device.type}")
        return module
    for candidate in AUTO_ORDER.get(device.type, {}).get(op, ("reference",)):
        module = _load(candidate)
        if module is not None and _runs_on(module, device):
            if candidate == "reference" and device.type not in _warned:
                _warned.add(device.type)
                skipped = [c for c in AUTO_ORDER.get(device.type, {}).get(op, ()) if c != candidate]
                why = "; ".join(f"{c}: {_reasons.get(c, '')}" for c in skipped)
                if skipped:
                    warnings.warn(
                        f"fastgeo: no compiled kernels for {device.type} tensors ({why}); "
                        "using the pure-PyTorch reference (correct, slower).",
                        RuntimeWarning,
                        stacklevel=3,
                    )
            return module
    return _load("reference")


def use_cpu_kernel(op: str, device: torch.device) -> bool:
    """Whether a solver-internal op (``rbf_sigma_jacobian``, ``gauss_newton_system``,
    ``lm_propose`` / ``lm_update``) runs its C++ kernel: tensors on the CPU, backend ``"auto"`` or
    ``"cpu"``, and the extension built with the op. Elsewhere its PyTorch reference runs."""
    return device.type == "cpu" and _current.get() in ("auto", "cpu") and _has_cpu_kernel(op)


@functools.cache
def _has_cpu_kernel(op: str) -> bool:
    registered = torch._C._dispatch_has_kernel_for_dispatch_key
    return _load("cpu") is not None and registered(f"fastgeo::{op}", "CPU")
