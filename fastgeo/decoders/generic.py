"""Jacobians of any differentiable decoder mean by ``torch.func``: the fallback of the stacked
forward mode, and the reference it is tested against."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..ops import use_backend


def generic_jacobian_rows(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its Jacobian, directions first: z (P, d) -> value (P, F), jacobian (d, P, F).

    ``torch.func.jvp`` vectorized over the d directions (the RBF ops run on the reference backend
    here: it supports forward-mode AD), or, for a ``fn`` without forward-mode support, the
    double-backward trick (two reverse passes).
    """
    d = z.shape[-1]
    tangents = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, *z.shape)
    with use_backend("reference"):
        try:  # all directions in one vectorized pass: the primal is computed once
            value, jac = torch.func.vmap(lambda v: torch.func.jvp(fn, (z,), (v,)), out_dims=(None, 0))(
                tangents
            )
        except Exception:  # noqa: BLE001 - fn is not vmappable (or returns per-direction primals)
            pairs = [_jvp(fn, z, tangents[i]) for i in range(d)]
            value, jac = pairs[0][0], torch.stack([p[1] for p in pairs])
    return value.detach(), jac.detach()


def _jvp(fn: Callable[[Tensor], Tensor], z: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    try:
        return torch.func.jvp(fn, (z,), (tangent,))
    except (RuntimeError, NotImplementedError):
        # J v = d/du <J^T u, v>: exact, for callables whose ops lack forward-mode formulas.
        with torch.enable_grad():
            x = z.detach().requires_grad_(True)
            y = fn(x)
            u = torch.zeros_like(y, requires_grad=True)
            (vjp,) = torch.autograd.grad(y, x, u, create_graph=True)
            (jv,) = torch.autograd.grad(vjp, u, tangent)
        return y, jv
