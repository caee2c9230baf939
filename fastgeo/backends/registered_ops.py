"""The three ops as the registered ``torch.ops.fastgeo`` operators, shared by the compiled
backends ("cpu", "cuda"): the dispatcher picks the kernel from the tensors' device."""

from __future__ import annotations

import torch
from torch import Tensor


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
