"""Block-banded Gauss-Newton matrices: the bandwidth a curve basis gives them, and their product
with a vector reading the band alone.

In a basis of local support (cubic B-splines, the dense oracle's polylines) the Gauss-Newton
matrix of a curve couples the coefficients of basis functions ``j`` and ``l`` only where
``|j - l| <= band``: blocks of ``d x d`` around the diagonal. With no secant model (plain
Gauss-Newton, the lagged mode at d >= 8) the damped system keeps that structure, and its step is
``torch.ops.fastgeo.banded_lm_propose`` (a band Cholesky factorization, ``m (1/3 + band +
band^2) d^3`` operations instead of ``(m d)^3 / 3``).
Shapes: ``b`` curves, ``m`` blocks of ``d`` unknowns, ``p = m d``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def block_bandwidth(psi: Tensor) -> int:
    """Largest ``|j - l|`` whose basis functions share a point or a segment of the grid:
    psi (N, m) -> the block half-bandwidth of the Gauss-Newton matrix."""
    nz = psi != 0
    own = nz[:, :, None] & nz[:, None, :]  # psi_nj psi_nl
    cross = nz[:-1, :, None] & nz[1:, None, :]  # psi_nj psi_(n+1)l
    j, l = (own.any(0) | cross.any(0) | cross.any(0).T).nonzero(as_tuple=True)
    return int((j - l).abs().max()) if j.numel() else 0


def banded_matvec(hess: Tensor, x: Tensor, block: int, band: int) -> Tensor:
    """``hess @ x`` (b, p) for hess (b, p, p) block-banded (blocks of ``block`` unknowns, half-
    bandwidth ``band`` blocks; entries outside the band are not read): one block row at a time,
    as per-curve products summed over the last axis (a curve's result must not depend on its
    batch), reading the band only (a full product passes over the whole (p x p) matrix)."""
    b, p = x.shape
    m = p // block
    if 2 * band + 1 >= m:  # the band is the whole matrix: one product
        return (hess * x[:, None, :]).sum(-1)
    out = torch.empty_like(x)
    for j in range(m):
        lo, hi = max(0, j - band) * block, min(m, j + 1 + band) * block
        rows = hess[:, j * block : (j + 1) * block, lo:hi]
        out[:, j * block : (j + 1) * block] = (rows * x[:, None, lo:hi]).sum(-1)
    return out
