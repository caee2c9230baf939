"""The pure-PyTorch reference of fastgeo's three ops: the oracle every kernel is tested against.

Written plainly from DESIGN §1-2, for any dtype and device, differentiable through ordinary
autograd (and forward-mode AD) with respect to every input:

    phi_k(z)  = exp(-gamma_k * ||z - c_k||^2)              k = 1..K
    beta(z)   = W phi(z) + zeta                             precision, (D,)
    sigma(z)  = beta(z) ** -1/2                             standard deviation, (D,)
    segment_sqdist(x)[b, n]          = ||x[b, n+1] - x[b, n]||^2
    rbf_segment_sqdist(z, ...)[b, n] = ||sigma(z[b, n+1]) - sigma(z[b, n])||^2

and, for the solver, sigma with its Jacobian in closed form (``rbf_sigma_jacobian``).

The functions here take already-validated arguments (``fastgeo.ops`` checks them): ``zeta`` is a
tensor of shape (D,). They form the ``"reference"`` backend of :func:`fastgeo.use_backend`.
"""

from __future__ import annotations

import torch
from torch import Tensor

name = "reference"
devices = None  # any device


def is_available() -> tuple[bool, str]:
    """The reference runs wherever torch runs."""
    return True, "pure PyTorch"


def rbf_features(z: Tensor, centers: Tensor, gammas: Tensor) -> Tensor:
    """phi: (P, d) -> (P, K), ``phi[p, k] = exp(-gammas[k] * ||z[p] - centers[k]||^2)``."""
    sqdist = (z[:, None, :] - centers[None, :, :]).pow(2).sum(-1)  # (P, K)
    return torch.exp(-gammas * sqdist)


def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """beta: z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> (P, D)."""
    return rbf_features(z, centers, gammas) @ weights.T + zeta


def segment_sqdist(x: Tensor) -> Tensor:
    """Squared distances between consecutive points: x (B, N, D) -> (B, N-1)."""
    return (x[:, 1:, :] - x[:, :-1, :]).pow(2).sum(-1)


def rbf_segment_sqdist(
    points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> Tensor:
    """||sigma(z_{n+1}) - sigma(z_n)||^2: points (B, N, d) -> (B, N-1).

    Materializes sigma for all B*N points (B, N, D): this is the memory the fused kernels avoid.
    """
    B, N, d = points.shape
    beta = rbf_precision(points.reshape(B * N, d), centers, gammas, weights, zeta)
    sigma = beta.rsqrt().reshape(B, N, weights.shape[0])
    return segment_sqdist(sigma)


def rbf_sigma_jacobian(
    z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> tuple[Tensor, Tensor]:
    """sigma (P, D) and its transposed Jacobian (P, d, D) in closed form, z (P, d):

    ``d sigma / d z_i = -1/2 beta^-3/2 W (phi * -2 gamma (z_i - c_i))``: d + 1 products with W, far
    cheaper than forward-mode AD through the network.
    """
    P, d = z.shape
    phi = rbf_features(z, centers, gammas)  # (P, K)
    beta = phi @ weights.T + zeta
    sigma = beta.rsqrt()
    scale = -0.5 * sigma / beta  # d sigma / d beta = -1/2 beta^-3/2
    diff = z[:, :, None] - centers.T[None, :, :]  # (P, d, K)
    dphi = (-2 * gammas) * phi[:, None, :] * diff  # (P, d, K)
    K, D = weights.shape[1], weights.shape[0]
    dbeta = (dphi.reshape(P * d, K) @ weights.T).reshape(P, d, D)  # one GEMM
    return sigma, scale[:, None, :] * dbeta
