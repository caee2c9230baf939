"""Squared lengths of the segments of a batch of polylines (DESIGN §2)."""

from __future__ import annotations

from torch import Tensor


def segment_sqdist(x: Tensor) -> Tensor:
    """Squared distances between consecutive points: x (B, N, D) -> (B, N-1)."""
    return (x[:, 1:, :] - x[:, :-1, :]).pow(2).sum(-1)
