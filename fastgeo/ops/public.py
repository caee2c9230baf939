"""The three public ops of fastgeo (DESIGN §2): validated entry points of the operators
``torch.ops.fastgeo.*``, resolved per device by the registry (:mod:`fastgeo.ops.registry`:
compiled kernels when built, else the pure-PyTorch reference, or what :func:`fastgeo.use_backend`
forces). All are batched, float32/float64, differentiable.

These entry points check shapes, dtypes and devices (cheap, no host sync); the values of the RBF
parameters (gammas > 0, weights >= 0, zeta > 0, finite) are checked once by
:class:`fastgeo.RBFPrecision`, which is the way to call them with trusted parameters.
"""

from __future__ import annotations

from torch import Tensor

from .. import _checks
from . import registry


def _rbf_args(name: str, z: Tensor, centers, gammas, weights, zeta):
    _checks.tensor(name, z, min_ndim=1)
    centers, gammas, weights, zeta = _checks.rbf_params(centers, gammas, weights, zeta)
    _checks.same_dtype_device([(name, z), ("centers", centers)])
    if z.shape[-1] != centers.shape[1]:
        raise ValueError(
            f"{name} has latent dimension {z.shape[-1]} (last axis) but centers have d = {centers.shape[1]}"
        )
    if centers.shape[1] == 0:
        raise ValueError(f"centers must have a latent dimension d >= 1, got shape {tuple(centers.shape)}")
    return centers, gammas, weights, zeta


def rbf_precision(
    z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor | float
) -> Tensor:
    """Precision of the RBF network, ``beta(z) = W phi(z) + zeta``.

    Args:
        z: (..., d) latent points.
        centers: (K, d); gammas: (K,) bandwidths; weights: (D, K); zeta: scalar or (D,).
    Returns:
        (..., D) precision ``1 / sigma^2``.
    """
    centers, gammas, weights, zeta = _rbf_args("z", z, centers, gammas, weights, zeta)
    lead, d = z.shape[:-1], z.shape[-1]
    beta = registry.call("rbf_precision", z.device, z.reshape(-1, d), centers, gammas, weights, zeta)
    return beta.reshape(*lead, weights.shape[0])


def segment_sqdist(x: Tensor) -> Tensor:
    """Squared Euclidean length of each segment of a batch of polylines.

    Args:
        x: (B, N, D) points, N >= 2.
    Returns:
        (B, N-1) with ``out[b, n] = ||x[b, n+1] - x[b, n]||^2``.
    """
    _checks.tensor("x", x, ndim=3)
    if x.shape[1] < 2:
        raise ValueError(f"x must have N >= 2 points per curve (axis 1), got shape {tuple(x.shape)}")
    return registry.call("segment_sqdist", x.device, x)


def rbf_segment_sqdist(
    points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor | float
) -> Tensor:
    """Squared change of the RBF standard deviation along each segment, fused.

    Args:
        points: (B, N, d) latent curve points, N >= 2.
        centers, gammas, weights, zeta: as in :func:`rbf_precision`.
    Returns:
        (B, N-1) with ``out[b, n] = ||sigma(points[b, n+1]) - sigma(points[b, n])||^2`` where
        ``sigma = rbf_precision ** -1/2``. Compiled backends never hold a (B, N, D) tensor.
    """
    _checks.tensor("points", points, ndim=3)
    if points.shape[1] < 2:
        raise ValueError(
            f"points must have N >= 2 points per curve (axis 1), got shape {tuple(points.shape)}"
        )
    centers, gammas, weights, zeta = _rbf_args("points", points, centers, gammas, weights, zeta)
    return registry.call("rbf_segment_sqdist", points.device, points, centers, gammas, weights, zeta)
