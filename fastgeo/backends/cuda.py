"""The ``"cuda"`` backend: CUDA C++ kernels (csrc/cuda/) behind ``torch.ops.fastgeo.*``.

Follows the backend protocol of :mod:`fastgeo._backend`. Available only when ``fastgeo._C`` was
built with CUDA (``FASTGEO_CUDA=1``) and a GPU is visible; autograd and fake kernels are the
device-agnostic ones of :mod:`fastgeo._ops`. Gradients for ``centers``/``gammas`` are not computed
by the CUDA kernels (a clear error); ``z``/``points``, ``weights`` and ``zeta`` are.
"""

from __future__ import annotations

import torch

from .registered_ops import rbf_precision, rbf_segment_sqdist, segment_sqdist

__all__ = ["devices", "is_available", "name", "rbf_precision", "rbf_segment_sqdist", "segment_sqdist"]

name = "cuda"
devices = ("cuda",)


def is_available() -> tuple[bool, str]:
    """(True, description) when the CUDA kernels are registered and a GPU is visible."""
    try:
        from .. import _ops  # noqa: F401  (loads fastgeo._C and the autograd / fake registrations)
    except ImportError as exc:
        return False, f"extension fastgeo._C not built ({exc})"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgeo::rbf_segment_sqdist", "CUDA"):
        return False, "fastgeo._C has no CUDA kernels (rebuild with FASTGEO_CUDA=1 on a CUDA torch)"
    if not torch.cuda.is_available():
        return False, "CUDA kernels built but no GPU is visible"
    return True, "CUDA C++ kernels (fastgeo._C; float32/float64)"
