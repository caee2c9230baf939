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
``detach``). For those, the solved curve measured again in grad mode,
``metric.length(res.points(n))``, has the distance's gradient by the same theorem.

The theorem needs a stationary curve: lengths of curves that stopped short (``max_iter``,
``stalled``) get the same formula with a warning (stopped after one iteration on a 2-D VAE:
19-63 % off the converged curve's gradient), as do ``method="paper"``'s single quadratics (not
stationary in length: 7-15 % off on the 2-D digits VAE). Lengths are differentiable once: a second
derivative (``create_graph=True``) raises.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from ..curves import Basis, Curves
from ..metric import ExpectedMetric
from .result import CONVERGED, GeodesicResult
from .short_curves import NOISE_ABOVE, float64_metric, rounding_ratios

BACKWARD_BYTES = 1 << 28  # decoder activations held by one chunk of curves in the backward pass
ACTIVATION_FACTOR = 8  # activations per output value of a decoder, guessed (a point's autograd graph)


def with_end_gradients(metric: ExpectedMetric, res: GeodesicResult, z0: Tensor, z1: Tensor) -> GeodesicResult:
    """``res`` with lengths that carry the envelope gradient to ``z0`` and ``z1`` (B, d), the
    caller's tensors, where grad mode is on and either requires a gradient (in place; an empty
    batch too: a loop's last, empty batch still has a graph to run backward through)."""
    if not (torch.is_grad_enabled() and (z0.requires_grad or z1.requires_grad)):
        return res
    doubtful = res.status_code != CONVERGED
    if bool(doubtful.any()):
        which = sorted({res.status[i] for i in doubtful.nonzero().squeeze(1).tolist()})
        warnings.warn(
            f"fastgeo.geodesics: {int(doubtful.sum())} of {res.lengths.numel()} curves are not "
            f"converged geodesics (status {', '.join(which)}): their lengths' gradients in the end "
            "points assume a geodesic and may be far off (NaN where the length is); raise max_iter, "
            "or leave those pairs out of the loss",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    if res.options.get("method") == "paper":
        warnings.warn(
            "fastgeo.geodesics: method='paper' curves (one quadratic each) are not stationary in length: "
            "their lengths' gradients in the end points are the envelope formula's, 7-15 % off the "
            "distance's on a 2-D VAE; use method='default' (or 'fast') for gradients",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
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
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: the gradient would silently be a constant
            raise RuntimeError(
                "fastgeo: geodesic lengths are differentiable once in their end points (the envelope "
                "theorem's gradient); second derivatives (create_graph=True: a Hessian, a gradient "
                "penalty) are not supported"
            )
        z0, z1 = ctx.saved_tensors
        g0, g1 = end_gradients(ctx.metric, z0, z1, ctx.coeffs, ctx.basis, ctx.grid, grad)
        return None, g0, g1, None, None, None, None


def end_gradients(
    metric: ExpectedMetric, z0: Tensor, z1: Tensor, coeffs: Tensor, basis: Basis, grid: Tensor, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """``grad`` (B,) times the derivatives of the lengths of the curves ``z0``, ``z1`` (B, d),
    ``coeffs`` (B, m, d) in ``basis`` with respect to their end points, the coefficients held
    fixed, each curve on the grid it was solved on (``grid`` (B,) points, a result's
    ``resolution``): (B, d) each. Zero between equal ends (a distance has no derivative there).
    Curves too short for float32 (:mod:`.short_curves`: their segments' differences would be
    mostly the decoder's rounding, the derivative of codes 1e-3 apart on a 2-D VAE 6 % off) are
    differentiated in float64 by a copy of the metric, where one can be made."""
    g0, g1 = torch.zeros_like(z0), torch.zeros_like(z1)
    grid = grid.to(torch.long)
    moving = ~(z0 == z1).all(-1) & (grad != 0)
    short = torch.zeros_like(moving)
    metric64 = None
    if metric.dtype == torch.float32 and bool(moving.any()):
        short = moving & (rounding_ratios(metric, z0, z1, 2) * (grid - 1) > NOISE_ABOVE)
        metric64 = float64_metric(metric) if bool(short.any()) else None
        short &= metric64 is not None
    for m, rows in ((metric, moving & ~short), (metric64, short)):
        for n in torch.unique(grid[rows]).tolist():
            idx = (rows & (grid == n)).nonzero().squeeze(1)
            ga, gb = _derivatives(m, z0[idx], z1[idx], coeffs[idx], basis, int(n), grad[idx])
            g0[idx], g1[idx] = ga.to(g0.dtype), gb.to(g1.dtype)
    return g0, g1


def _derivatives(
    metric: ExpectedMetric, z0: Tensor, z1: Tensor, coeffs: Tensor, basis: Basis, n: int, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """``grad`` times the lengths' derivatives in ``z0``, ``z1`` (B, d) of curves of ``n`` points,
    in the metric's dtype, chunk by chunk: (B, d) each."""
    dtype = metric.dtype
    per_point = ACTIVATION_FACTOR * 2 * metric.data_dim * torch.finfo(dtype).bits // 8
    parts = []
    for rows in torch.arange(z0.shape[0], device=z0.device).split(max(1, BACKWARD_BYTES // (per_point * n))):
        with torch.enable_grad():
            a = z0[rows].detach().to(dtype).requires_grad_()
            b = z1[rows].detach().to(dtype).requires_grad_()
            lengths = metric.length(Curves(a, b, coeffs[rows].to(dtype), basis).points(n))
            parts.append(torch.autograd.grad(lengths, (a, b), grad[rows].to(dtype)))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
