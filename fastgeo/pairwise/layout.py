"""The chunk layout of an all-pairs run: pairs numbered in a fixed order (row-major strict upper
triangle over the distinct rows of ``Z``, or row-major ``Z x Y``) and cut into consecutive chunks.

The layout depends only on the inputs and the chunk size, never on resume state or the number of
processes, so a resumed or distributed run solves exactly the same batches as a plain one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def triu_pairs(n: int, start: int, stop: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Pairs ``k = start..stop-1`` of the row-major strict upper triangle of an (n, n) matrix.

    Closed form, so no (n^2,) index tensor is ever held: returns rows, cols (stop - start,) int64.
    """
    return triu_index(n, torch.arange(start, stop, dtype=torch.int64, device=device))


def triu_index(n: int, k: Tensor) -> tuple[Tensor, Tensor]:
    """Rows and columns of pairs ``k`` (int64, any shape) of the row-major strict upper triangle
    of an (n, n) matrix."""
    total = n * (n - 1) // 2
    # Row i holds pairs [off(i), off(i + 1)) with off(i) = i n - i (i + 1) / 2. Solve off(i) <= k.
    r = total - 1 - k  # index counted from the end: row n-2-i' of a reversed triangle
    ip = ((torch.sqrt(8 * r.double() + 1) - 1) / 2).floor().to(torch.int64)
    # fix rounding: ip is the largest integer with ip (ip + 1) / 2 <= r
    ip = ip - (ip * (ip + 1) // 2 > r).to(torch.int64)
    ip = ip + ((ip + 1) * (ip + 2) // 2 <= r).to(torch.int64)
    i = n - 2 - ip
    off = i * n - i * (i + 1) // 2
    j = k - off + i + 1
    return i, j


@dataclass(frozen=True)
class Layout:
    """``n_pairs`` pairs in chunks of ``chunk_size``: the strict upper triangle of ``rows``
    distinct points (``symmetric``), or all ``rows x cols`` pairs."""

    symmetric: bool
    rows: int
    cols: int
    chunk_size: int

    @property
    def n_pairs(self) -> int:
        return self.rows * (self.rows - 1) // 2 if self.symmetric else self.rows * self.cols

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_pairs / self.chunk_size) if self.n_pairs else 0

    def pairs(self, chunk: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Row and column indices (k,) of the pairs of ``chunk``."""
        start = chunk * self.chunk_size
        stop = min(self.n_pairs, start + self.chunk_size)
        if self.symmetric:
            return triu_pairs(self.rows, start, stop, device)
        k = torch.arange(start, stop, dtype=torch.int64, device=device)
        return k // self.cols, k % self.cols

    def describe(self) -> str:
        return f"symmetric={self.symmetric} rows={self.rows} cols={self.cols} chunk_size={self.chunk_size}"


def distinct_rows(Z: Tensor) -> tuple[Tensor, Tensor | None]:
    """The distinct rows of ``Z`` (M, d) in order of first appearance, and for each row the index
    of its first copy (M,) (None when all rows are distinct)."""
    M = Z.shape[0]
    if M < 2:
        return Z, None
    _, inverse = torch.unique(Z, dim=0, return_inverse=True)
    n_distinct = int(inverse.max()) + 1
    if n_distinct == M:
        return Z, None
    first = torch.full((n_distinct,), M, dtype=torch.int64, device=Z.device)
    first = first.scatter_reduce(0, inverse, torch.arange(M, device=Z.device), "amin")
    rep = first[inverse]  # (M,) first row equal to each row
    keep = (rep == torch.arange(M, device=Z.device)).nonzero().squeeze(1)
    return Z[keep], rep


def equal_pairs(Z: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    """Indices ``(i, j)`` (k,) of the pairs with ``Z[i] == Y[j]`` (Z (M, d), Y (P, d))."""
    M = Z.shape[0]
    if M == 0 or Y.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=Z.device)
        return empty, empty
    _, inverse = torch.unique(torch.cat([Z, Y]), dim=0, return_inverse=True)
    rows, cols = inverse[:M], inverse[M:]
    shared = torch.isin(rows, cols).nonzero().squeeze(1)  # the rows equal to some column
    hit = (rows[shared][:, None] == cols[None]).nonzero()
    return shared[hit[:, 0]], hit[:, 1]


def duplicate_index(rep: Tensor) -> Tensor:
    """For each of the M rows, its row among the distinct ones (M,), from ``rep`` (see
    :func:`distinct_rows`)."""
    M = rep.shape[0]
    compact = torch.cumsum(rep == torch.arange(M, device=rep.device), 0) - 1  # row -> distinct row
    return compact[rep]


def expand_duplicates(matrix: Tensor, rep: Tensor) -> Tensor:
    """An (n, n) matrix over distinct rows, expanded to (M, M) over all rows (copies of their
    first row; exact zeros between equal rows when the diagonal is zero)."""
    idx = duplicate_index(rep).to(matrix.device)
    return matrix[idx][:, idx]
