"""The RBF precision network and the decoder's standard deviation, written plainly from DESIGN
§1 (differentiable by ordinary autograd and forward-mode AD in every input):

    phi_k(z)  = exp(-gamma_k * ||z - c_k||^2)              k = 1..K
    beta(z)   = W phi(z) + zeta                             precision, (D,)
    sigma(z)  = beta(z) ** -1/2                             standard deviation, (D,)

A feature below the dtype's smallest normal number is 0 (every backend alike): a subnormal one
changes beta only beyond rounding where weights exceed ~1e30 or zeta is below ~1e-30, and every
matrix product that reads subnormals runs many times slower on x86 CPUs (2-D VAEs: 2-25 % of the
features on curves between codes; the kernels 3.4x slower, a fit 25x).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .segments import segment_sqdist


def rbf_features(z: Tensor, centers: Tensor, gammas: Tensor) -> Tensor:
    """phi: (P, d) -> (P, K), ``phi[p, k] = exp(-gammas[k] * ||z[p] - centers[k]||^2)``.

    Distances are sums of squared coordinate differences, never ``|z|^2 - 2 z.c + |c|^2``,
    which cancels catastrophically for points near a far-away center.
    """
    sqdist = (z[:, None, :] - centers[None, :, :]).pow(2).sum(-1)  # (P, K)
    phi = (-gammas * sqdist).exp()
    return phi.masked_fill(phi < torch.finfo(phi.dtype).tiny, 0.0)  # no subnormals (module doc)


def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """beta: z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> (P, D)."""
    return rbf_features(z, centers, gammas) @ weights.T + zeta


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
