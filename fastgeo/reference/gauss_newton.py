"""The solver's linear system: gradient and Gauss-Newton matrix of the discrete energy in the
coefficients of a curve basis.

For curves ``c(t) = line(t) + sum_j a_j psi_j(t)`` sampled at ``N`` points with features
``f_n = f(c_n)`` (the embedding ``[mu, sigma]``) and transposed Jacobians ``J_n`` (d x F), the
residuals ``r_n = f_{n+1} - f_n`` have ``dr_n / da_{j,i} = psi_j(t_{n+1}) J_{n+1}[i] -
psi_j(t_n) J_n[i]``, so both the gradient and the Gauss-Newton matrix of ``sum_n ||r_n||^2 / 2``
need only the (d x d) blocks ``J_n J_n^T`` and ``J_n J_{n+1}^T`` and the products
``J_n (r_{n-1} - r_n)``.

This is the oracle of the operator ``torch.ops.fastgeo.gauss_newton_system``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gauss_newton_system(
    f: Tensor, jac: Tensor, psi: Tensor, grad_only: bool = False
) -> tuple[Tensor, Tensor]:
    """Gradient and Gauss-Newton matrix of ``sum_n ||r_n||^2 / 2``, ``r_n = f_{n+1} - f_n``.

    f (b, N, F), jac (b, N, d, F) (transposed Jacobians), psi (N, m) -> grad (b, m d),
    hess (b, m d, m d) (an empty (0,) tensor when ``grad_only``). Coefficients are ordered
    ``(j, i)``: basis function j, latent axis i.
    """
    b, N, d, _ = jac.shape
    m = psi.shape[1]
    r = f[:, 1:] - f[:, :-1]  # (b, N-1, F)
    # Point n gets J_n^T (r_{n-1} - r_n): it ends segment n-1 and starts segment n.
    u_next = (jac[:, 1:] @ r[..., None])[..., 0]  # (b, N-1, d)
    u_prev = (jac[:, :-1] @ r[..., None])[..., 0]
    grad = psi[1:].T @ u_next - psi[:-1].T @ u_prev  # (b, m, d)
    if grad_only:
        return grad.reshape(b, m * d), grad.new_zeros(0)
    gram = jac @ jac.transpose(-1, -2)  # (b, N, d, d): J_n^T J_n
    cross = jac[:, :-1] @ jac[:, 1:].transpose(-1, -2)  # J_n^T J_{n+1}
    # Each point enters the segments on both sides of it (psi vanishes at the fixed end points).
    own = torch.einsum("nj,nl,bnik->bjilk", psi[1:], psi[1:], gram[:, 1:]) + torch.einsum(
        "nj,nl,bnik->bjilk", psi[:-1], psi[:-1], gram[:, :-1]
    )
    mixed = torch.einsum("nj,nl,bnik->bjilk", psi[:-1], psi[1:], cross)
    hess = own - mixed - mixed.permute(0, 3, 4, 1, 2)
    return grad.reshape(b, m * d), hess.reshape(b, m * d, m * d)
