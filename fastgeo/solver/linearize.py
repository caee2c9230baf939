"""The Gauss-Newton linearization of the discrete energy of a batch of curves in a basis.

For curves ``c(t) = line(t) + sum_j a_j psi_j(t)`` sampled at ``N`` points, with an embedding made of
parts (the decoder mean, sigma, ...: features ``f_n`` (F_i) and transposed Jacobians ``J_n``
(d x F_i) per part), the residuals ``r_n = f_{n+1} - f_n`` give

    grad[j, i]          = sum_p psi_pj v_p[i],       v_p = J_p (r_{p-1} - r_p)       (missing r = 0)
    hess[(j,i), (l,k)]  = sum_p w_p psi_pj psi_pl G_p[i,k] - sum_n psi_nj psi_(n+1)l C_n[i,k] - (sym.)
    G_p = J_p J_p^T,  C_n = J_n J_(n+1)^T,  w_p = segments point p belongs to,

summed over the parts: each part's products are batched GEMMs over the points (no (P, d, sum F_i)
concatenation), and the sums over the points two GEMMs with the basis products. The oracle is
:func:`fastgeo.reference.gauss_newton_system` on the concatenated parts.
"""

from __future__ import annotations

import torch
from torch import Tensor

Part = tuple[Tensor, Tensor]  # features (b, N, F), transposed Jacobians (b, N, d, F)


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
        flat = J.reshape(b * N, d, F)
        flat_t = flat.transpose(1, 2)
        pairs = torch.matmul(flat[:-1], flat_t[1:])  # (b N - 1, d, d)
        pairs = torch.cat([pairs, pairs[:1]]).reshape(b, N, d, d)[:, :-1]
        terms = (
            r.pow(2).sum(-1),
            torch.matmul(a.reshape(b * N, 1, F), flat_t).reshape(b, N, d),
            torch.matmul(flat, flat_t).reshape(b, N, d, d),
            pairs,
        )
        if s is None:
            s, v, G, C = terms
        else:
            s, v, G, C = s + terms[0], v + terms[1], G + terms[2], C + terms[3]
    assert s is not None and v is not None and G is not None and C is not None, "at least one part"
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
    ``sum_p psi_pj psi_pl S_p`` (a per-point model of the curvature Gauss-Newton leaves out)."""
    b, N, d = v.shape
    m = psi.shape[1]
    grad = torch.matmul(psi.T, v).reshape(b, m * d)
    w = point_weights(N, psi)
    pp = (psi[:, :, None] * psi[:, None, :]).reshape(N, m * m)  # psi_pj psi_pl
    own_points = w[:, None, None] * G if own_extra is None else w[:, None, None] * G + own_extra
    own = torch.matmul(pp.T, own_points.reshape(b, N, d * d))  # (b, m m, d d)
    cross = (psi[:-1, :, None] * psi[1:, None, :]).reshape(N - 1, m * m)  # psi_nj psi_(n+1)l
    mixed = torch.matmul(cross.T, C.reshape(b, N - 1, d * d))  # (b, m m, d d): [j, l, i, k]
    own = own.reshape(b, m, m, d, d)
    mixed = mixed.reshape(b, m, m, d, d)
    hess = own - mixed - mixed.permute(0, 2, 1, 4, 3)  # [j, l, i, k]
    return grad, hess.permute(0, 1, 3, 2, 4).reshape(b, m * d, m * d)


def linearize(parts: list[Part], psi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Squared segment lengths (b, N-1), gradient (b, m d) and Gauss-Newton matrix (b, m d, m d)
    of ``sum_n ||r_n||^2 / 2`` in the curve coefficients."""
    s, v, G, C = point_products(parts)
    grad, hess = assemble(v, G, C, psi)
    return s, grad, hess
