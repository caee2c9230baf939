"""The discrete energy and length of curves sampled at N points, from their squared segment
lengths ``s_n`` under the metric (DESIGN §2): every backend's and solver phase's one formula."""

from __future__ import annotations

import torch
from torch import Tensor


def energy_from_segments(segments: Tensor) -> Tensor:
    """Discrete energy ``(N-1)/2 sum_n s_n`` of curves with squared segment lengths (..., N-1)."""
    return 0.5 * segments.shape[-1] * segments.sum(-1)


def length_from_segments(segments: Tensor) -> Tensor:
    """Discrete length ``sum_n sqrt(s_n)`` of curves with squared segment lengths (..., N-1); its
    gradient is 0 at segments of length 0 (sqrt's is infinite there: NaN through the decoder)."""
    if not segments.requires_grad:  # the solver's measurements: one pass, the same values
        return segments.sqrt().sum(-1)
    zero = segments == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, segments).sqrt()).sum(-1)


def feature_segments(features: Tensor) -> Tensor:
    """Squared segment lengths ``||f_{n+1} - f_n||^2`` (..., N-1) of embedded curves (..., N, F)."""
    return (features[..., 1:, :] - features[..., :-1, :]).pow(2).sum(-1)
