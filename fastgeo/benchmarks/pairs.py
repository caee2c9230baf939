"""End-point pairs of a benchmark: indices into a generator's training codes."""

from __future__ import annotations

import torch
from torch import Tensor


def pair_indices(labels: Tensor, n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """n index pairs (i != j) into the codes of ``labels`` (M,): the first n // 3 across classes,
    the rest within one; deterministic for a seed. Where there is no pair of a kind (one class, or
    every code a class of its own: a generator file without classes), pairs of any codes stand in
    for it."""
    M = labels.shape[0]
    if M < 2:
        raise ValueError(f"labels: pairs of distinct codes need at least 2 codes, got {M}")
    counts = torch.unique(labels, return_counts=True)[1]
    exists = {True: counts.numel() > 1, False: bool((counts > 1).any())}  # across, within
    g = torch.Generator(device="cpu").manual_seed(seed)
    I, J = [], []
    while len(I) < n:
        i, j = torch.randint(M, (2,), generator=g, device="cpu").tolist()
        across = len(I) < n // 3
        if i != j and (not exists[across] or across == bool(labels[i] != labels[j])):
            I.append(i)
            J.append(j)
    return I, J
