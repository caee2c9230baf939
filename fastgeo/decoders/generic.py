"""Directional derivatives of any differentiable decoder mean by ``torch.func``: the fallback of
the stacked forward mode, and the reference it is tested against."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._quiet import quiet
from ..ops import use_backend


def check_value(value: object, z: Tensor) -> Tensor:
    """A decoder's output at z (P, d), which must be a tensor (P, F): ValueError otherwise."""
    if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[0] != z.shape[0]:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"the decoder mean must map points (P, d) = {tuple(z.shape)} to (P, F), got {got}")
    return value


def generic_value_and_tangents(
    fn: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor
) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its derivatives along per-point directions: z (P, d), tangents (k, P, d)
    -> value (P, F), out (k, P, F) with ``out[i] = J tangents[i]``; ValueError if fn's output is
    not (P, F).

    ``torch.func.jvp`` vectorized over the k directions (the RBF ops run on the reference
    backend here, attention on PyTorch's math kernel: both support forward-mode AD). If that
    fails, ``fn`` is called plainly: an error of its own propagates; otherwise (an op vmap or
    forward mode does not support) the directions are taken one by one, by ``jvp`` or, for a
    ``fn`` without forward-mode support, the double-backward trick (two reverse passes).
    """
    k = tangents.shape[0]
    # vmap's notes on ops it loops over are about its speed, which is this fallback's anyway
    with use_backend("reference"), sdpa_kernel([SDPBackend.MATH]), quiet("There is a performance drop"):
        if k == 0:
            with torch.no_grad():
                value = check_value(fn(z), z)
            return value.detach(), value.new_empty(0, *value.shape)
        try:  # all directions in one vectorized pass: the primal is computed once
            along = torch.func.vmap(lambda v: torch.func.jvp(fn, (z,), (v,)), out_dims=(None, 0))
            value, out = along(tangents)
            vectorized = True
        except Exception:  # noqa: BLE001 - told apart below: fn's own error, or vmap's
            vectorized = False
        if not vectorized:
            with torch.no_grad():
                check_value(fn(z), z)  # raises fn's own error, if it is one, from a plain call
            pairs = [_jvp(fn, z, tangents[i]) for i in range(k)]
            value, out = pairs[0][0], torch.stack([p[1] for p in pairs])
    return check_value(value, z).detach(), out.detach()


def generic_jacobian_rows(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its Jacobian, directions first: z (P, d) -> value (P, F), jacobian (d, P, F):
    :func:`generic_value_and_tangents` along the d coordinate axes."""
    d = z.shape[-1]
    tangents = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, *z.shape)
    return generic_value_and_tangents(fn, z, tangents)


def differentiable_jacobian_rows(fn: Callable[[Tensor], Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`generic_jacobian_rows` with autograd through the result, into ``z`` and whatever
    ``fn`` reads (its parameters): one ``torch.func.jvp`` per latent axis, in the caller's grad
    mode. For users who differentiate the metric; the solver's Jacobians are values only."""
    eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
    value, rows = None, []
    with use_backend("reference"), sdpa_kernel([SDPBackend.MATH]):
        for e in eye:
            value, row = _jvp(fn, z, e.expand_as(z), keep_graph=True)
            rows.append(row)
    return check_value(value, z), torch.stack(rows)


def _jvp(
    fn: Callable[[Tensor], Tensor], z: Tensor, tangent: Tensor, keep_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and ``J tangent``; ``keep_graph``: both differentiable further (in ``z`` and
    ``fn``'s parameters), also by the double-backward fallback (an old-style
    ``autograd.Function`` without ``setup_context`` has no forward mode under torch.func)."""
    try:
        return torch.func.jvp(fn, (z,), (tangent,))
    except (RuntimeError, NotImplementedError) as forward_error:
        # J v = d/du <J^T u, v>: exact, for callables whose ops lack forward-mode formulas.
        try:
            with torch.enable_grad():
                x = z if keep_graph and z.requires_grad else z.detach().requires_grad_(True)
                y = fn(x)
                u = torch.zeros_like(y, requires_grad=True)
                (vjp,) = torch.autograd.grad(y, x, u, create_graph=True)
                (jv,) = torch.autograd.grad(vjp, u, tangent, create_graph=keep_graph)
        except (RuntimeError, NotImplementedError) as e:
            raise RuntimeError(
                "the decoder mean cannot be differentiated along directions: an op in it has neither a "
                f"forward-mode derivative ({forward_error}) nor a double backward ({e})"
            ) from e
        return y, jv
