"""The ``"cuda"`` backend: CUDA C++ kernels (csrc/cuda/) behind ``torch.ops.fastgeo.*``.

Follows the backend protocol of :mod:`fastgeo._backend`. Available only when ``fastgeo._C`` was
built with CUDA (``FASTGEO_CUDA=1``) and a GPU is visible; autograd and fake kernels are the
device-agnostic ones of :mod:`fastgeo._ops`. Gradients for ``centers``/``gammas`` are not computed
by the CUDA kernels (a clear error); ``z``/``points``, ``weights`` and ``zeta`` are.
"""

from __future__ import annotations

import torch
from torch import Tensor

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


def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """beta: z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> (P, D)."""
    return torch.ops.fastgeo.rbf_precision(z, centers, gammas, weights, zeta)


def segment_sqdist(x: Tensor) -> Tensor:
    """x (B, N, D) -> (B, N-1), ``||x[b, n+1] - x[b, n]||^2``."""
    return torch.ops.fastgeo.segment_sqdist(x)


def rbf_segment_sqdist(
    points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> Tensor:
    """points (B, N, d) -> (B, N-1), ``||sigma(z_{n+1}) - sigma(z_n)||^2``, fused."""
    return torch.ops.fastgeo.rbf_segment_sqdist(points, centers, gammas, weights, zeta)
