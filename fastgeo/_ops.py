"""torch.library glue of the ``torch.ops.fastgeo`` operators: fake (meta) kernels, for
torch.compile and shape propagation, and the autograd formulas tying each op to its backward op.

Device-agnostic: it serves every dispatch key that has a kernel (CPU here; CUDA kernels register
under the same schemas). Importing this module loads ``fastgeo._C``, which defines the schemas
and the CPU kernels; it raises ImportError when the extension is not built.

The solver's kernels (``rbf_sigma_jacobian``, ``gauss_newton_system``, ``lm_propose``,
``lm_update``) have no derivative: backpropagating through them raises.

Backward ops take ``output_mask`` (which gradients to compute, in input order) and return an
empty (0,) tensor for each gradient not asked for. Their own derivative (double backward) is
not implemented: asking for it raises a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading the library registers the schemas and CPU kernels)

ops = torch.ops.fastgeo


def _masked_like(mask: Sequence[bool], like: Sequence[Tensor], dims: Sequence[Sequence[int]]):
    """Fake outputs of a backward op: shape ``dims[i]`` where ``mask[i]``, else (0,)."""
    return tuple(like[0].new_empty(tuple(s) if m else (0,)) for m, s in zip(mask, dims, strict=True))


# ----------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("fastgeo::rbf_precision")
def _rbf_precision_fake(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    return z.new_empty((z.shape[0], weights.shape[0]))


@torch.library.register_fake("fastgeo::rbf_precision_backward")
def _rbf_precision_backward_fake(
    grad: Tensor, z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, output_mask: Sequence[bool]
) -> tuple[Tensor, ...]:
    dims = (z.shape, centers.shape, gammas.shape, weights.shape, (weights.shape[0],))
    return _masked_like(output_mask, (z,), dims)


@torch.library.register_fake("fastgeo::segment_sqdist")
def _segment_sqdist_fake(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], x.shape[1] - 1))


@torch.library.register_fake("fastgeo::segment_sqdist_backward")
def _segment_sqdist_backward_fake(grad: Tensor, x: Tensor) -> Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastgeo::rbf_segment_sqdist")
def _rbf_segment_sqdist_fake(
    points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> Tensor:
    return points.new_empty((points.shape[0], points.shape[1] - 1))


@torch.library.register_fake("fastgeo::rbf_segment_sqdist_backward")
def _rbf_segment_sqdist_backward_fake(
    grad: Tensor,
    points: Tensor,
    centers: Tensor,
    gammas: Tensor,
    weights: Tensor,
    zeta: Tensor,
    output_mask: Sequence[bool],
) -> tuple[Tensor, ...]:
    dims = (points.shape, centers.shape, gammas.shape, weights.shape, zeta.shape)
    return _masked_like(output_mask, (points,), dims)


@torch.library.register_fake("fastgeo::rbf_sigma_jacobian")
def _rbf_sigma_jacobian_fake(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor):
    P, d, D = z.shape[0], z.shape[1], weights.shape[0]
    return z.new_empty((P, D)), z.new_empty((P, d, D))


@torch.library.register_fake("fastgeo::gauss_newton_system")
def _gauss_newton_system_fake(f: Tensor, jac: Tensor, psi: Tensor, grad_only: bool) -> tuple[Tensor, Tensor]:
    b, p = f.shape[0], jac.shape[2] * psi.shape[1]
    return f.new_empty((b, p)), f.new_empty((0,) if grad_only else (b, p, p))


@torch.library.register_fake("fastgeo::lm_propose")
def _lm_propose_fake(grad: Tensor, hess: Tensor, curv: Tensor, lam: Tensor, segments: int):
    return torch.empty_like(grad), lam.new_empty(lam.shape), lam.new_empty(lam.shape, dtype=torch.bool)


@torch.library.register_fake("fastgeo::lm_update")
def _lm_update_fake(e, length, e_new, l_new, grad, g_new, g_old, hess, h_new, curv, *rest) -> list[Tensor]:
    flags = [e.new_empty(e.shape, dtype=torch.bool) for _ in range(3)]  # accept, done, ok
    lam, nu = rest[3], rest[4]
    return flags + [torch.empty_like(x) for x in (e, length, grad, hess, curv, lam, nu)]


# ----------------------------------------------------------------------------- autograd


def _save_inputs(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)


def _rbf_precision_bwd(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    z, centers, gammas, weights, _ = ctx.saved_tensors
    mask = [bool(m) for m in ctx.needs_input_grad]
    grads = ops.rbf_precision_backward(grad, z, centers, gammas, weights, mask)
    return tuple(g if m else None for g, m in zip(grads, mask, strict=True))


def _segment_sqdist_bwd(ctx: Any, grad: Tensor) -> Tensor:
    (x,) = ctx.saved_tensors
    return ops.segment_sqdist_backward(grad, x)


def _rbf_segment_sqdist_bwd(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    mask = [bool(m) for m in ctx.needs_input_grad]
    grads = ops.rbf_segment_sqdist_backward(grad, *ctx.saved_tensors, mask)
    return tuple(g if m else None for g, m in zip(grads, mask, strict=True))


def _no_double_backward(op: str):
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(
            f"fastgeo::{op} has no derivative: double backward through the compiled fastgeo kernels "
            "is not implemented. Use `with fastgeo.use_backend('reference'):` for higher-order derivatives."
        )

    return backward


def _no_save(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    pass


torch.library.register_autograd("fastgeo::rbf_precision", _rbf_precision_bwd, setup_context=_save_inputs)
torch.library.register_autograd("fastgeo::segment_sqdist", _segment_sqdist_bwd, setup_context=_save_inputs)
torch.library.register_autograd(
    "fastgeo::rbf_segment_sqdist", _rbf_segment_sqdist_bwd, setup_context=_save_inputs
)
for _op in ("rbf_precision_backward", "segment_sqdist_backward", "rbf_segment_sqdist_backward"):
    torch.library.register_autograd(f"fastgeo::{_op}", _no_double_backward(_op), setup_context=_no_save)


def _solver_only(op: str):
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(
            f"fastgeo::{op} is a solver kernel without a derivative; its differentiable PyTorch "
            "reference runs when gradients are needed (fastgeo.reference, fastgeo.gauss_newton, "
            "fastgeo.levenberg_marquardt)."
        )

    return backward


for _op in ("rbf_sigma_jacobian", "gauss_newton_system", "lm_propose", "lm_update"):
    torch.library.register_autograd(f"fastgeo::{_op}", _solver_only(_op), setup_context=_no_save)
