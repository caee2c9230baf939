"""The ``"cpu"`` backend: fused C++ kernels (OpenMP, BLAS) behind ``torch.ops.fastgeo.*``.

Follows the backend protocol of :mod:`fastgeo._backend`; the functions take validated arguments
(``z`` 2-D, ``zeta`` of shape (D,)) and are differentiable through the ops' registered autograd.
"""

from __future__ import annotations

import torch

from .registered_ops import rbf_precision, rbf_segment_sqdist, segment_sqdist

__all__ = ["devices", "is_available", "name", "rbf_precision", "rbf_segment_sqdist", "segment_sqdist"]

name = "cpu"
devices = ("cpu",)


def is_available() -> tuple[bool, str]:
    """(True, description) when ``fastgeo._C`` imports and has CPU kernels, else (False, why)."""
    try:
        from .. import _ops  # noqa: F401  (loads fastgeo._C and registers autograd / fake kernels)
    except ImportError as exc:
        return False, (
            f"extension fastgeo._C not built ({exc}); build it with `pip install --no-build-isolation -e .`"
        )
    if not torch._C._dispatch_has_kernel_for_dispatch_key("fastgeo::rbf_segment_sqdist", "CPU"):
        return False, "fastgeo._C loaded but has no CPU kernels"
    return True, "C++ kernels (fastgeo._C: OpenMP, BLAS tiles; float32/float64)"
