"""The Triton kernels as ``torch.ops.fastgeo_triton.*`` operators (custom_op + fake + autograd).

``torch.library.custom_op`` around the launches is what passes ``opcheck`` and compiles
correctly under ``TRITON_INTERPRET=1`` (``triton_op``/``wrap_triton`` do not there; they await
verification on a GPU). Backward ops are operators too, with fake implementations, so
``torch.compile`` traces through training steps. Gradients for ``centers``/``gammas`` are not
implemented by these kernels and raise a clear error when autograd asks for them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _rbf_precision as _rp
from . import _rbf_segment_sqdist as _rss
from . import _segment_sqdist as _ss

NAMESPACE = "fastgeo_triton"


def _no_param_grad(ctx, op: str) -> None:
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        raise NotImplementedError(
            f"fastgeo triton backend: {op} has no gradient for centers/gammas; "
            "use fastgeo.use_backend('reference') to differentiate them"
        )


# --- segment_sqdist -------------------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::segment_sqdist", mutates_args=())
def segment_sqdist(x: Tensor) -> Tensor:
    """x (B, N, D) -> (B, N-1)."""
    return _ss.forward(x)


@segment_sqdist.register_fake
def _(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], x.shape[1] - 1))


@torch.library.custom_op(f"{NAMESPACE}::segment_sqdist_backward", mutates_args=())
def segment_sqdist_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad (B, N-1), x (B, N, D) -> grad_x (B, N, D)."""
    return _ss.backward(grad, x)


@segment_sqdist_backward.register_fake
def _(grad: Tensor, x: Tensor) -> Tensor:
    return x.new_empty(x.shape)


def _ss_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _ss_backward(ctx, grad: Tensor):
    (x,) = ctx.saved_tensors
    return segment_sqdist_backward(grad, x)


segment_sqdist.register_autograd(_ss_backward, setup_context=_ss_setup)


# --- rbf_precision --------------------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::rbf_precision", mutates_args=())
def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> beta (P, D)."""
    return _rp.forward(z, centers, gammas, weights, zeta)


@rbf_precision.register_fake
def _(z, centers, gammas, weights, zeta):
    return z.new_empty((z.shape[0], weights.shape[0]))


@torch.library.custom_op(f"{NAMESPACE}::rbf_precision_backward", mutates_args=())
def rbf_precision_backward(
    grad: Tensor, z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
    need_z: bool, need_weights: bool,
) -> tuple[Tensor, Tensor]:
    """grad (P, D) -> (grad_z (P, d), grad_weights (D, K)); unrequested ones are zeros."""
    return _rp.backward(grad, z, centers, gammas, weights, need_z, need_weights)


@rbf_precision_backward.register_fake
def _(grad, z, centers, gammas, weights, need_z, need_weights):
    return z.new_empty(z.shape), weights.new_empty(weights.shape)


def _rp_setup(ctx, inputs, output) -> None:
    z, centers, gammas, weights, _ = inputs
    ctx.save_for_backward(z, centers, gammas, weights)


def _rp_backward(ctx, grad: Tensor):
    _no_param_grad(ctx, "rbf_precision")
    z, centers, gammas, weights = ctx.saved_tensors
    need_z, need_w, need_zeta = ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4]
    gz, gw = rbf_precision_backward(grad, z, centers, gammas, weights, need_z, need_w)
    gzeta = grad.sum(0) if need_zeta else None
    return (gz if need_z else None), None, None, (gw if need_w else None), gzeta


rbf_precision.register_autograd(_rp_backward, setup_context=_rp_setup)


# --- rbf_segment_sqdist ---------------------------------------------------------------------


@torch.library.custom_op(f"{NAMESPACE}::rbf_segment_sqdist", mutates_args=())
def rbf_segment_sqdist(points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
                       zeta: Tensor) -> Tensor:
    """points (B, N, d) -> (B, N-1), fused (no (B, N, D) tensor)."""
    return _rss.forward(points, centers, gammas, weights, zeta)


@rbf_segment_sqdist.register_fake
def _(points, centers, gammas, weights, zeta):
    return points.new_empty((points.shape[0], points.shape[1] - 1))


@torch.library.custom_op(f"{NAMESPACE}::rbf_segment_sqdist_backward", mutates_args=())
def rbf_segment_sqdist_backward(
    grad: Tensor, points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor,
    need_weights: bool, need_zeta: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """grad (B, N-1) -> (grad_points (B, N, d), grad_weights (D, K), grad_zeta (D,))."""
    return _rss.backward(grad, points, centers, gammas, weights, zeta, need_weights, need_zeta)


@rbf_segment_sqdist_backward.register_fake
def _(grad, points, centers, gammas, weights, zeta, need_weights, need_zeta):
    return points.new_empty(points.shape), weights.new_empty(weights.shape), zeta.new_empty(zeta.shape)


def _rss_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _rss_backward(ctx, grad: Tensor):
    _no_param_grad(ctx, "rbf_segment_sqdist")
    points, centers, gammas, weights, zeta = ctx.saved_tensors
    need = ctx.needs_input_grad
    gp, gw, gzeta = rbf_segment_sqdist_backward(grad, points, centers, gammas, weights, zeta,
                                                need[3], need[4])
    return (gp if need[0] else None), None, None, (gw if need[3] else None), (gzeta if need[4] else None)


rbf_segment_sqdist.register_autograd(_rss_backward, setup_context=_rss_setup)
