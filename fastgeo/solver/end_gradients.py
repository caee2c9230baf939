"""Gradients of geodesic distances with respect to their end points.

A distance is a minimum over curves, ``L*(z0, z1) = min_a L(z0, z1, a)``; at the minimizer the
curve's coefficients ``a`` are stationary, so (envelope theorem) ``dL*/dz0 = dL/dz0`` with ``a``
held fixed: the derivative of the solved curve's own length as its ends move with the straight
part of ``c(t) = z0 + t (z1 - z0) + sum_j a_j psi_j(t)``. No derivative of the solver is needed,
and the backward pass is one forward and one backward pass of the decoder along each curve. For a
curve that is a geodesic this is the metric's unit tangent at the end, ``-G(z0) u / |u|_G``
(``u`` the curve's velocity leaving z0); the discrete curve, stationary on its own grid, gives
it to the grid's accuracy.

Lengths get this gradient where ``z0`` or ``z1`` requires one (a Frechet mean, k-means or an
encoder trained with geodesic distances); not with respect to the decoder's or the precision's
parameters (their curves are held fixed as well, but a distance that would require a gradient
whenever a decoder's weights do would be a tensor users could not turn into numbers without
``detach``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..curves import Basis, Curves
from ..metric import ExpectedMetric
from .result import GeodesicResult

BACKWARD_BYTES = 1 << 28  # decoder activations held by one chunk of curves in the backward pass
ACTIVATION_FACTOR = 8  # activations per output value of a decoder, guessed (a point's autograd graph)


def with_end_gradients(metric: ExpectedMetric, res: GeodesicResult, z0: Tensor, z1: Tensor) -> GeodesicResult:
    """``res`` with lengths that carry the envelope gradient to ``z0`` and ``z1`` (B, d), the
    caller's tensors, where grad mode is on and either requires a gradient (in place)."""
    if not (torch.is_grad_enabled() and (z0.requires_grad or z1.requires_grad)) or res.lengths.numel() == 0:
        return res
    # The backward pass holds the curves, not the result (which will hold the lengths: no cycle).
    curves = res.curves
    grid = res.resolution if res.resolution is not None else torch.full_like(res.iterations, res.n_points)
    res.lengths = _EndGradient.apply(res.lengths.detach(), z0, z1, metric, curves.coeffs, curves.basis, grid)
    return res


class _EndGradient(torch.autograd.Function):
    """lengths (B,) as given, their gradient in z0, z1 (B, d) from :func:`end_gradients`."""

    @staticmethod
    def forward(
        ctx: Any, lengths: Tensor, z0: Tensor, z1: Tensor, metric: ExpectedMetric, coeffs: Tensor,
        basis: Basis, grid: Tensor,
    ) -> Tensor:  # fmt: skip
        ctx.save_for_backward(z0.detach(), z1.detach())
        ctx.metric, ctx.coeffs, ctx.basis, ctx.grid = metric, coeffs, basis, grid
        return lengths.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z0, z1 = ctx.saved_tensors
        g0, g1 = end_gradients(ctx.metric, z0, z1, ctx.coeffs, ctx.basis, ctx.grid, grad)
        return None, g0, g1, None, None, None, None


def end_gradients(
    metric: ExpectedMetric, z0: Tensor, z1: Tensor, coeffs: Tensor, basis: Basis, grid: Tensor, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """``grad`` (B,) times the derivatives of the lengths of the curves ``z0``, ``z1`` (B, d),
    ``coeffs`` (B, m, d) in ``basis`` with respect to their end points, the coefficients held
    fixed, each curve on the grid it was solved on (``grid`` (B,) points, a result's
    ``resolution``): (B, d) each. Zero between equal ends (a distance has no derivative there)."""
    coeffs = coeffs.to(z0.dtype)
    g0, g1 = torch.zeros_like(z0), torch.zeros_like(z1)
    grid = grid.to(torch.long)
    moving = ~(z0 == z1).all(-1) & (grad != 0)
    per_point = ACTIVATION_FACTOR * 2 * metric.data_dim * z0.element_size()
    for n in torch.unique(grid[moving]).tolist():
        idx = (moving & (grid == n)).nonzero().squeeze(1)
        for part in idx.split(max(1, BACKWARD_BYTES // (per_point * n))):
            with torch.enable_grad():
                a = z0[part].detach().requires_grad_()
                b = z1[part].detach().requires_grad_()
                lengths = metric.length(Curves(a, b, coeffs[part], basis).points(int(n)))
                ga, gb = torch.autograd.grad(lengths, (a, b), grad[part].to(lengths.dtype))
            g0[part], g1[part] = ga.to(g0.dtype), gb.to(g1.dtype)
    return g0, g1
