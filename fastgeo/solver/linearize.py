"""The Gauss-Newton linearization of the discrete energy of a batch of curves in a basis.

For curves ``c(t) = line(t) + sum_j a_j psi_j(t)`` sampled at ``N`` points, with an embedding made of
parts (the decoder mean, sigma, ...: features ``f_n`` (F_i) and transposed Jacobians ``J_n``
(d x F_i) per part), the residuals ``r_n = f_{n+1} - f_n`` give

    grad[j, i]          = sum_p psi_pj v_p[i],       v_p = J_p (r_{p-1} - r_p)       (missing r = 0)
    hess[(j,i), (l,k)]  = sum_p w_p psi_pj psi_pl G_p[i,k] - sum_n psi_nj psi_(n+1)l C_n[i,k] - (sym.)
    G_p = J_p J_p^T,  C_n = J_n J_(n+1)^T,  w_p = segments point p belongs to,

summed over the parts: each part's products are batched GEMMs over the points (no (P, d, sum F_i)
concatenation), and the sums over the points GEMMs with the basis products: in a B-spline basis
only over the block diagonals that are not zero (7 of the m blocks of a block row: 2-3x faster
at m = 23-24, d = 2-64). The oracle is :func:`fastgeo.reference.gauss_newton_system` on the
concatenated parts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Part = tuple[Tensor, Tensor]  # features (b, N, F), transposed Jacobians (b, N, d, F)
Products = tuple[Tensor, Tensor, Tensor, Tensor]  # s, v, G, C of point_products

# Bytes of the transposed Jacobians of one chunk of curves (all parts) in products_by_chunks, on
# the CPU (cache-sized); on other devices only memory counts, and small launches cost.
CHUNK_BYTES = 4 << 20
CHUNK_BYTES_ELSEWHERE = 1 << 30


def point_products(parts: list[Part]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Squared segment lengths s (b, N-1) and the per-point products v (b, N, d), G (b, N, d, d),
    C (b, N-1, d, d), summed over the parts."""
    s = v = G = C = None
    for f, J in parts:
        b, N, d, F = J.shape
        r = f[:, 1:] - f[:, :-1]  # (b, N-1, F)
        a = torch.zeros_like(f)  # r_{p-1} - r_p
        a[:, 1:] += r
        a[:, :-1] -= r
        # Products over a flat batch of b N points: CPU kernels are several times slower on a
        # batch of sliced 4-d views (C, below, pairs point p with p + 1 and drops the pairs that
        # straddle two curves), and a row vector times J^T beats J times a column vector.
        flat = J.reshape(b * N, d, F).contiguous()
        flat_t = flat.transpose(1, 2)
        # G_p and C_p in one product per point: the rows of J_p and J_(p+1) are consecutive in
        # memory, so the (2d x F) window starting at J_p is a strided view (no copy), and one
        # product of 2d columns is faster than two of d (1 thread, the two parts of a D = 784
        # decoder: point_products 5-11 % faster at d = 16-64, 30 % at d = 8).
        windows = flat.as_strided((max(b * N - 1, 0), 2 * d, F), (d * F, F, 1), flat.storage_offset())
        both = torch.matmul(flat[:-1], windows.transpose(1, 2))  # (b N - 1, d, 2d): [G_p, C_p]
        own = torch.cat([both[..., :d], torch.matmul(flat[-1:], flat_t[-1:])]).reshape(b, N, d, d)
        pairs = torch.cat([both[..., d:], both[:1, :, d:]]).reshape(b, N, d, d)[:, :-1]
        terms = (
            r.pow(2).sum(-1),
            torch.matmul(a.reshape(b * N, 1, F), flat_t).reshape(b, N, d),
            own,
            pairs,
        )
        if s is None:
            s, v, G, C = terms
        else:
            s, v, G, C = s + terms[0], v + terms[1], G + terms[2], C + terms[3]
    assert s is not None and v is not None and G is not None and C is not None, "at least one part"
    return s, v, G, C


def products_by_chunks(
    parts: Callable[[Tensor, Tensor], list[Part]], points: Tensor, idx: Tensor
) -> Products:
    """:func:`point_products` of ``parts(points, idx)`` (points (b, N, d), curves idx (b,)),
    computed a few curves at a time: the Jacobians of a chunk take about CHUNK_BYTES.

    A whole batch's Jacobians are (b, N, d, F) per part (77 MB at b N = 768 points, d = 32,
    F = 784): written once, read three times, and, above glibc's mmap threshold, mapped afresh
    (page faults) on every call. Chunks stay in cache and in the reused heap, at the same
    arithmetic. The first curve goes alone and sizes the chunks."""
    b = points.shape[0]
    if b == 0:
        return point_products(parts(points, idx))
    chunks: list[Products] = []
    start, step = 0, 1
    while start < b:
        stop = min(b, start + step)
        parts_here = parts(points[start:stop], idx[start:stop])
        chunks.append(point_products(parts_here))
        if start == 0:
            per_curve = sum(J.numel() * J.element_size() for _, J in parts_here) // (stop - start)
            budget = CHUNK_BYTES if points.device.type == "cpu" else CHUNK_BYTES_ELSEWHERE
            step = max(1, budget // max(1, per_curve))
        start = stop
    if len(chunks) == 1:
        return chunks[0]
    s, v, G, C = (torch.cat(x) for x in zip(*chunks, strict=True))
    return s, v, G, C


def point_weights(N: int, like: Tensor) -> Tensor:
    """w_p: the number of segments point p belongs to, (N,)."""
    w = torch.full((N,), 2.0, dtype=like.dtype, device=like.device)
    w[0] = w[-1] = 1.0
    return w


def assemble(
    v: Tensor, G: Tensor, C: Tensor, psi: Tensor, own_extra: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Gradient (b, m d) and Gauss-Newton matrix (b, m d, m d) from the per-point products;
    coefficients ordered (j, i): basis function j, latent axis i. ``own_extra`` (b, N, d, d) adds
    ``sum_p psi_pj psi_pl S_p`` (a per-point model of the curvature Gauss-Newton leaves out).

    In a basis of local support (B-splines: each point in the support of 4 of the m functions)
    only the blocks ``(j, l)`` whose functions share a point or a segment are summed, diagonal of
    blocks by diagonal (:func:`_band_sums`); a global basis sums every block."""
    b, N, d = v.shape
    m = psi.shape[1]
    grad = torch.matmul(psi.T, v).reshape(b, m * d)
    w = point_weights(N, psi)
    own_points = w[:, None, None] * G if own_extra is None else w[:, None, None] * G + own_extra
    own_terms, cross_terms = _block_diagonals(psi)
    if own_terms is None or cross_terms is None:
        return grad, _dense_sums(own_points, C, psi)
    # Every diagonal of blocks as (blocks (b, k, d, d), their first block row, diagonal offset).
    diagonals = []
    for offset, blocks in _band_sums(own_terms, own_points):
        diagonals.append((blocks, 0, offset))  # (j, j + o) and (j + o, j): sum_p psi_pj psi_p(j+o) G_p
        if offset:
            diagonals.append((blocks, offset, -offset))
    for offset, blocks in _band_sums(cross_terms, C):
        first = max(0, -offset)  # (j, j + o): -sum_n psi_nj psi_(n+1)(j+o) C_n, and its transpose
        diagonals.append((-blocks, first, offset))
        diagonals.append((-blocks.transpose(-1, -2), first + offset, -offset))
    if d < DIAGONAL_ADD_MIN_DIM:  # small blocks: added into (b, m m, d d) by block index, one pass
        index = [
            (torch.arange(v.shape[1], device=psi.device) + row) * (m + 1) + offset
            for v, row, offset in diagonals
        ]
        hess = own_points.new_zeros(b, m * m, d, d)
        hess.index_add_(1, torch.cat(index), torch.cat([v for v, _, _ in diagonals], dim=1))
        return grad, hess.reshape(b, m, m, d, d).permute(0, 1, 3, 2, 4).reshape(b, m * d, m * d)
    hess = own_points.new_zeros(b, m, d, m, d)
    for blocks, _, offset in diagonals:  # large blocks: along strided views of the diagonals
        hess.diagonal(offset=offset, dim1=1, dim2=3).add_(blocks.permute(0, 2, 3, 1))
    return grad, hess.reshape(b, m * d, m * d)


def _dense_sums(own_points: Tensor, C: Tensor, psi: Tensor) -> Tensor:
    """The Gauss-Newton matrix (b, m d, m d), every block summed (any basis)."""
    b, N, d, _ = own_points.shape
    m = psi.shape[1]
    pp = (psi[:, :, None] * psi[:, None, :]).reshape(N, m * m)  # psi_pj psi_pl
    own = torch.matmul(pp.T, own_points.reshape(b, N, d * d))  # (b, m m, d d)
    cross = (psi[:-1, :, None] * psi[1:, None, :]).reshape(N - 1, m * m)  # psi_nj psi_(n+1)l
    mixed = torch.matmul(cross.T, C.reshape(b, N - 1, d * d))  # (b, m m, d d): [j, l, i, k]
    own = own.reshape(b, m, m, d, d)
    mixed = mixed.reshape(b, m, m, d, d)
    hess = own - mixed - mixed.permute(0, 2, 1, 4, 3)  # [j, l, i, k]
    return hess.permute(0, 1, 3, 2, 4).reshape(b, m * d, m * d)


# A basis whose block diagonals would need more than this share of all m^2 blocks is summed densely.
BANDED_SHARE = 0.5
DIAGONAL_ADD_MIN_DIM = 8


def _block_diagonals(psi: Tensor) -> tuple[list[tuple[int, Tensor]] | None, list[tuple[int, Tensor]] | None]:
    """Per diagonal of blocks ``o = l - j`` that is not zero, the weights of the points in its
    blocks: own ``psi_pj psi_p(j+o)`` (N, m - o) for o >= 0, cross ``psi_nj psi_(n+1)(j+o)``
    (N-1, m - |o|) for any sign; (None, None) where the basis is not local enough to pay."""
    N, m = psi.shape
    nz = (psi != 0).to(psi.dtype)
    own_o = (nz.T @ nz).nonzero()  # (j, l) sharing a point
    cross_o = (nz[:-1].T @ nz[1:]).nonzero()  # (j, l) at the two ends of a segment
    own_offsets = sorted({int(o) for o in (own_o[:, 1] - own_o[:, 0]).tolist() if o >= 0})
    cross_offsets = sorted({int(o) for o in (cross_o[:, 1] - cross_o[:, 0]).tolist()})
    blocks = sum(2 * (m - o) for o in own_offsets) + sum(m - abs(o) for o in cross_offsets)
    if blocks > BANDED_SHARE * 3 * m * m:
        return None, None
    own = [(o, psi[:, : m - o] * psi[:, o:]) for o in own_offsets]
    cross = []
    for o in cross_offsets:
        lo, hi = max(0, -o), min(m, m - o)  # j with 0 <= j, j + o < m
        cross.append((o, psi[:-1, lo:hi] * psi[1:, lo + o : hi + o]))
    return own, cross


def _band_sums(terms: list[tuple[int, Tensor]], points: Tensor) -> list[tuple[int, Tensor]]:
    """For each diagonal ``(o, weights (n, k))`` the blocks ``sum_p weights[p, j] points[p]``
    (b, k, d, d), all diagonals in one batched product (per curve: a curve's result must not depend
    on its batch). Returns (o, blocks) per diagonal."""
    b, n, d, _ = points.shape
    weights = torch.cat([t for _, t in terms], dim=1)  # (n, sum k)
    sums = torch.matmul(weights.T, points.reshape(b, n, d * d))  # (b, sum k, d d)
    out, at = [], 0
    for o, t in terms:
        k = t.shape[1]
        out.append((o, sums[:, at : at + k].reshape(b, k, d, d)))
        at += k
    return out


def linearize(parts: list[Part], psi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Squared segment lengths (b, N-1), gradient (b, m d) and Gauss-Newton matrix (b, m d, m d)
    of ``sum_n ||r_n||^2 / 2`` in the curve coefficients."""
    s, v, G, C = point_products(parts)
    grad, hess = assemble(v, G, C, psi)
    return s, grad, hess
