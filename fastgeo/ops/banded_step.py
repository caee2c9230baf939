"""The damped Gauss-Newton step of :func:`fastgeo.reference.lm_propose` for block-banded systems.

In a basis of local support (cubic B-splines) the Gauss-Newton matrix of a curve couples the
coefficients of basis functions ``j`` and ``l`` only where ``|j - l| <= band`` (a few blocks of
``d x d``); with no secant model (plain Gauss-Newton, the lagged mode at d >= 8) the damped system
keeps that structure. Its block Cholesky factorization costs ``m (1/3 + band + band^2) d^3``
operations instead of ``(m d)^3 / 3``: at m = 16, d = 64 about 4x fewer, and it is the largest cost
of an iteration there (the dense factorization of a 1,024-unknown system per curve).

Same mathematics as the reference (its Marquardt scaling, its prediction, ``solved = False`` with a
zero step where a factorization fails or the step is not finite); tested against it.
Shapes: ``b`` curves, ``m`` blocks of ``d`` unknowns, ``p = m d``; grad (b, p), hess (b, p, p).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..reference.levenberg_marquardt import marquardt_damping, predicted_decrease

ALIGN = 4  # unknowns per block, rounded up to a multiple of this (see banded_lm_propose)


def block_bandwidth(psi: Tensor) -> int:
    """Largest ``|j - l|`` whose basis functions share a point or a segment of the grid:
    psi (N, m) -> the block half-bandwidth of the Gauss-Newton matrix."""
    nz = psi != 0
    own = nz[:, :, None] & nz[:, None, :]  # psi_nj psi_nl
    cross = nz[:-1, :, None] & nz[1:, None, :]  # psi_nj psi_(n+1)l
    j, l = (own.any(0) | cross.any(0) | cross.any(0).T).nonzero(as_tuple=True)
    return int((j - l).abs().max()) if j.numel() else 0


def _block_diagonal(hess: Tensor, block: int, k: int) -> Tensor:
    """The blocks (j, j + k) of hess (b, p, p) contiguous, j < m - k: a strided view
    (b, m - k, block, block)."""
    b, p, _ = hess.shape
    m = p // block
    return hess.as_strided(
        (b, m - k, block, block), (p * p, block * (p + 1), p, 1), hess.storage_offset() + k * block
    )


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


def banded_lm_propose(
    grad: Tensor, hess: Tensor, lam: Tensor, segments: int, block: int, band: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Step (b, p), predicted decrease (b,) and solved (b,) bool of
    ``(H + lam diag(scale)) step = -g`` for H block-banded (blocks of ``block`` unknowns, half-
    bandwidth ``band`` blocks; entries outside the band are not read)."""
    b, p = grad.shape
    if block < 1 or p % block:
        raise ValueError(f"block must divide the {p} unknowns, got {block}")
    m = p // block
    damping = marquardt_damping(hess, lam)
    # Blocks padded to a multiple of ALIGN unknowns (identity on the padding, decoupled, zero
    # right-hand side: exact zeros in the step): MKL's results depend on where a matrix starts
    # in memory, and odd blocks put a batch's matrices at other alignments than a curve alone.
    d = -(-block // ALIGN) * ALIGN
    pad = d - block
    eye = torch.eye(d, dtype=grad.dtype, device=grad.device)
    padding = (torch.arange(d, device=grad.device) >= block).to(grad.dtype)
    rhs = torch.nn.functional.pad(-grad.reshape(b, m, block), (0, pad)).reshape(b, m * d)
    # The band in block storage, read once from hess: A[:, j, k] = block (j, j + k) of the damped,
    # padded system (zero past the last block row). Right-looking block Cholesky in place: block
    # column j is factored, its panel solved, and the panel's Gram matrix subtracted from the
    # block rows below, each a contiguous run of blocks in this storage.
    w = min(band, m - 1) + 1  # blocks per stored row: the diagonal block and band to its right
    A = grad.new_zeros(b, m, w, d, d)
    dense = hess.contiguous()  # once: the block diagonals are strided views of it
    for k in range(w):
        A[:, : m - k, k, :block, :block] = _block_diagonal(dense, block, k)
    A[:, :, 0].diagonal(dim1=-2, dim2=-1).add_(
        torch.nn.functional.pad(damping.reshape(b, m, block), (0, pad)) + padding
    )
    solved = torch.ones(b, dtype=torch.bool, device=grad.device)
    diag_factors, panels = [], []
    for j in range(m):
        chol, info = torch.linalg.cholesky_ex(A[:, j, 0])
        failed = info != 0
        if bool(failed.any()):
            solved &= ~failed
            chol = torch.where(failed[:, None, None], eye, chol)
        diag_factors.append(chol)
        right = min(w - 1, m - 1 - j)  # blocks of the panel
        if right == 0:
            continue
        # panel L_jj^-1 [A_(j,j+1) ... A_(j,j+right)]: (b, d, right d), the transpose of L's
        # block column below the diagonal
        panel_t = torch.linalg.solve_triangular(
            chol, A[:, j, 1 : right + 1].transpose(1, 2).reshape(b, d, right * d), upper=False
        )
        panels.append(panel_t)
        gram = (panel_t.transpose(1, 2) @ panel_t).reshape(b, right, d, right, d)
        for a in range(1, right + 1):  # block row j + a, blocks j + a .. j + right
            A[:, j + a, : right - a + 1] -= gram[:, a - 1, :, a - 1 :].transpose(1, 2)
    # L y = -g, then L^T x = y, block by block; the matrix-vector products as per-curve products
    # and sums over the last axis: a batch of one takes another BLAS path (gemv) and rounds
    # differently, and a curve's result must not depend on its batch.
    for j in range(m):
        lo, hi = j * d, (j + 1) * d
        y = torch.linalg.solve_triangular(diag_factors[j], rhs[:, lo:hi, None].contiguous(), upper=False)
        rhs[:, lo:hi] = y[..., 0]
        if j < len(panels) and panels[j].shape[-1]:
            end = hi + panels[j].shape[-1]
            below = panels[j].transpose(1, 2).contiguous()  # L_ij, (b, K d, d)
            rhs[:, hi:end] -= (below * y[:, None, :, 0]).sum(-1)
    for j in reversed(range(m)):
        lo, hi = j * d, (j + 1) * d
        y = rhs[:, lo:hi, None].contiguous()
        if j < len(panels) and panels[j].shape[-1]:
            end = hi + panels[j].shape[-1]
            y = y - (panels[j] * rhs[:, None, hi:end]).sum(-1, keepdim=True)
        upper = diag_factors[j].transpose(1, 2).contiguous()  # a transposed view: another path
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        rhs[:, lo:hi] = x[..., 0]
    step = rhs if d == block else rhs.reshape(b, m, d)[:, :, :block].reshape(b, p)
    solved = solved & torch.isfinite(step).all(-1)
    step = torch.where(solved[:, None], step, 0.0)
    h_step = banded_matvec(hess, step, block, band)
    return step, predicted_decrease(grad, h_step, step, segments), solved
