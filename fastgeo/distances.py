"""Geodesic distance matrices."""

from __future__ import annotations

import torch
from torch import Tensor

from .metric import ExpectedMetric
from .solve import geodesics


def pairwise_distances(metric: ExpectedMetric, Z: Tensor, **options) -> Tensor:
    """All-pairs geodesic distances between latent codes.

    Only the pairs ``i < j`` are solved (in one batch); the matrix is filled symmetrically with
    an exact zero diagonal.

    Args:
        metric: the :class:`ExpectedMetric`.
        Z: (M, d) latent codes.
        **options: passed to :func:`fastgeo.geodesics` (method, m, n_points, ...).
    Returns:
        (M, M) tensor of geodesic lengths.
    """
    metric.check_points("Z", Z, ndim=2)
    M = Z.shape[0]
    i, j = torch.triu_indices(M, M, offset=1, device=Z.device)
    res = geodesics(metric, Z[i], Z[j], **options)
    out = torch.zeros(M, M, dtype=Z.dtype, device=Z.device)
    out[i, j] = res.lengths
    out[j, i] = res.lengths
    return out
