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
    work = hess.clone()
    work.diagonal(dim1=-2, dim2=-1).add_(damping)
    rhs = -grad
    if d != block:
        pad = d - block
        work = torch.nn.functional.pad(work.reshape(b, m, block, m, block), (0, pad, 0, 0, 0, pad))
        work = work.reshape(b, m * d, m * d)
        rhs = torch.nn.functional.pad(rhs.reshape(b, m, block), (0, pad)).reshape(b, m * d)
        padding = torch.arange(m * d, device=grad.device) % d >= block
        work.diagonal(dim1=-2, dim2=-1).add_(padding.to(work.dtype))
    else:
        rhs = rhs.clone()
    # Right-looking block Cholesky on a copy of the band: block column j is factored, its panel
    # (the `band` blocks below) solved, and the trailing window updated.
    solved = torch.ones(b, dtype=torch.bool, device=grad.device)
    eye = torch.eye(d, dtype=grad.dtype, device=grad.device)
    diag_factors, panels = [], []
    for j in range(m):
        lo, hi, end = j * d, (j + 1) * d, min(m, j + 1 + band) * d
        chol, info = torch.linalg.cholesky_ex(work[:, lo:hi, lo:hi])
        failed = info != 0
        if bool(failed.any()):
            solved &= ~failed
            chol = torch.where(failed[:, None, None], eye, chol)
        diag_factors.append(chol)
        if end > hi:
            # panel L_ij = A_ij L_jj^-T, as L_jj^-1 A_ji (the symmetric block above the diagonal)
            panel_t = torch.linalg.solve_triangular(chol, work[:, lo:hi, hi:end], upper=False)
            work[:, hi:end, hi:end] -= panel_t.transpose(1, 2) @ panel_t
            panels.append(panel_t)
    # L y = -g, then L^T x = y, block by block; the matrix-vector products as per-curve products
    # and sums over the last axis: a batch of one takes another BLAS path (gemv) and rounds
    # differently, and a curve's result must not depend on its batch.
    for j in range(m):
        lo, hi, end = j * d, (j + 1) * d, min(m, j + 1 + band) * d
        y = torch.linalg.solve_triangular(diag_factors[j], rhs[:, lo:hi, None].contiguous(), upper=False)
        rhs[:, lo:hi] = y[..., 0]
        if end > hi:
            below = panels[j].transpose(1, 2).contiguous()  # L_ij, (b, K d, d)
            rhs[:, hi:end] -= (below * y[:, None, :, 0]).sum(-1)
    for j in reversed(range(m)):
        lo, hi, end = j * d, (j + 1) * d, min(m, j + 1 + band) * d
        y = rhs[:, lo:hi, None].contiguous()
        if end > hi:
            y = y - (panels[j] * rhs[:, None, hi:end]).sum(-1, keepdim=True)
        upper = diag_factors[j].transpose(1, 2).contiguous()  # a transposed view: another path
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        rhs[:, lo:hi] = x[..., 0]
    step = rhs if d == block else rhs.reshape(b, m, d)[:, :, :block].reshape(b, p)
    solved = solved & torch.isfinite(step).all(-1)
    step = torch.where(solved[:, None], step, 0.0)
    # H step, as a per-curve product: a curve's result must not depend on its batch.
    h_step = (hess * step[:, None, :]).sum(-1)
    return step, predicted_decrease(grad, h_step, step, segments), solved
