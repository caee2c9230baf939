"""End-point pairs of a benchmark: indices into a generator's training codes."""

from __future__ import annotations

import torch
from torch import Tensor


def pair_indices(labels: Tensor, n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """n index pairs (i != j) into the codes of ``labels`` (M,): the first n // 3 across classes,
    the rest within one; deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    I, J = [], []
    while len(I) < n:
        i, j = torch.randint(labels.shape[0], (2,), generator=g).tolist()
        if i != j and (len(I) < n // 3) == bool(labels[i] != labels[j]):
            I.append(i)
            J.append(j)
    return I, J
