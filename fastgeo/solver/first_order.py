"""The paper's gradient-based optimization (``method="paper"``): batched Adam on the curve
coefficients, per-curve convergence."""

from __future__ import annotations

import torch
from torch import Tensor

from ..discrete import energy_from_segments
from .problem import Segments
from .result import CONVERGED, MAX_ITER, NONFINITE


def adam(
    segments: Segments,
    coeffs: Tensor,
    s: Tensor,
    max_iter: int,
    tol: float,
    z0: Tensor,
    z1: Tensor,
    lr: float = 0.05,
    window: int = 20,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimize the energy of ``segments(coeffs, idx)`` from ``coeffs`` (B, m, d), whose squared
    segment lengths are ``s`` (B, N-1). Returns coeffs, energies, converged, iterations.

    Coefficients are optimized in units of ``||z1 - z0||`` so one learning rate fits all curves;
    a curve converges when its best energy improved by less than ``tol`` (relative) over the
    last ``window`` iterations. The best iterate per curve is returned, with its status (codes of
    :data:`STATUSES`: converged, max_iter, nonfinite) and iterations.
    """
    B = coeffs.shape[0]
    e = energy_from_segments(s)
    unit = (z1 - z0).norm(dim=-1).clamp(min=torch.finfo(z0.dtype).eps)[:, None, None]
    x = (coeffs / unit).clone()
    best_x, best_e = x.clone(), e.clone()
    ref_e = e.clone()
    m1 = torch.zeros_like(x)
    m2 = torch.zeros_like(x)
    converged = (e == 0) | ~torch.isfinite(e)
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    beta1, beta2, eps = 0.9, 0.999, 1e-12
    for step in range(1, max_iter + 1):
        active = (~converged).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        with torch.enable_grad():
            xa = x[active].requires_grad_(True)
            ea = energy_from_segments(segments(xa * unit[active], active))
            (g,) = torch.autograd.grad(ea.sum(), xa)
        ea = ea.detach()
        improved = ea < best_e[active]
        best_e[active] = torch.where(improved, ea, best_e[active])
        best_x[active] = torch.where(improved[:, None, None], x[active], best_x[active])
        m1[active] = beta1 * m1[active] + (1 - beta1) * g
        m2[active] = beta2 * m2[active] + (1 - beta2) * g * g
        iterations[active] += 1
        it = iterations[active, None, None].to(x.dtype)
        update = (m1[active] / (1 - beta1**it)) / ((m2[active] / (1 - beta2**it)).sqrt() + eps)
        x[active] = x[active] - lr * update
        if step % window == 0:
            gain = (ref_e[active] - best_e[active]) / ref_e[active]
            converged[active[gain < tol * window]] = True
            ref_e[active] = best_e[active]
    status = torch.where(converged, CONVERGED, MAX_ITER).to(torch.int8)
    status = torch.where(torch.isfinite(best_e), status, torch.full_like(status, NONFINITE))
    return best_x * unit, best_e, status, iterations
