"""The ``"cpu"`` backend: fused C++ kernels (OpenMP, BLAS) behind ``torch.ops.fastgeo.*``.

Follows the backend protocol of :mod:`fastgeo._backend`; the functions take validated arguments
(``z`` 2-D, ``zeta`` of shape (D,)) and are differentiable through the ops' registered autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
