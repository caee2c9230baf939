"""torch.library glue of the ``torch.ops.fastgeo`` operators.

The compiled library ``fastgeo._C`` is loaded here, when fastgeo is imported: it defines every
operator's schema (``csrc/ops.cpp``) and the CPU kernels (``csrc/cpu/``). This module registers
the rest, once per operator, for every device:

- fake (meta) kernels, for ``torch.compile`` and shape propagation;
- the autograd formulas tying each differentiable op to its backward op; backward ops take
  ``output_mask`` (which gradients to compute, in input order) and return an empty (0,) tensor
  for each gradient not asked for; double backward and the solver's ops raise a clear error;
- the CUDA kernels: one router per op that runs the CUDA C++ kernel (``fastgeo._C_cuda``) or the
  Triton one (:mod:`fastgeo.triton`), whichever the registry chose for the call
  (:data:`CUDA_KERNEL`); registered only when a GPU and one of them are present.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import warnings
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from .. import triton as triton_kernels


def _load_extension() -> str:
    """Import ``fastgeo._C`` (its library registers the schemas and CPU kernels); "" or why not."""
    try:
        importlib.import_module("fastgeo._C")
    except ImportError as exc:
        return str(exc)
    return ""


LOAD_ERROR = _load_extension()
LOADED = not LOAD_ERROR
if not LOADED:
    warnings.warn(
        f"fastgeo: the compiled extension fastgeo._C is not built ({LOAD_ERROR}); every operator "
        "runs its pure-PyTorch reference (correct, slower). Build it with "
        "`pip install --no-build-isolation -e .` after installing torch.",
        RuntimeWarning,
        stacklevel=2,
    )

ops = torch.ops.fastgeo
DIFFERENTIABLE = ("rbf_precision", "segment_sqdist", "rbf_segment_sqdist")
BACKWARD = tuple(f"{op}_backward" for op in DIFFERENTIABLE)
SOLVER = ("rbf_sigma_jacobian", "gauss_newton_system", "lm_propose", "banded_lm_propose", "lm_update")


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``fastgeo::op`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return LOADED and torch._C._dispatch_has_kernel_for_dispatch_key(f"fastgeo::{op}", dispatch_key)


# ----------------------------------------------------------------------------- CUDA kernels

# The implementation the CUDA kernel of an op runs: "cuda" or "triton" (None: the first one found).
CUDA_KERNEL: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastgeo_cuda_kernel", default=None)


def _cuda_implementations() -> dict[str, ModuleType]:
    """{"cuda": fastgeo._C_cuda, "triton": fastgeo.triton}, those that can run here."""
    found: dict[str, ModuleType] = {}
    if not (LOADED and torch.cuda.is_available()):
        return found
    try:
        found["cuda"] = importlib.import_module("fastgeo._C_cuda")
    except ImportError:
        pass
    if triton_kernels.is_available()[0]:
        found["triton"] = triton_kernels
    return found


CUDA_IMPLEMENTATIONS = _cuda_implementations()


@contextlib.contextmanager
def cuda_kernel(name: str | None) -> Iterator[None]:
    """Run the ops' CUDA kernels as ``name`` ("cuda" or "triton") inside the block."""
    token = CUDA_KERNEL.set(name)
    try:
        yield
    finally:
        CUDA_KERNEL.reset(token)


def _cuda_router(op: str):
    def kernel(*args: Any) -> Any:
        name = CUDA_KERNEL.get() or next(iter(CUDA_IMPLEMENTATIONS))
        return getattr(CUDA_IMPLEMENTATIONS[name], op)(*args)

    return kernel


_CUDA_LIBRARY = None
if CUDA_IMPLEMENTATIONS:
    _CUDA_LIBRARY = torch.library.Library("fastgeo", "IMPL")
    for _op in DIFFERENTIABLE + BACKWARD:
        _CUDA_LIBRARY.impl(_op, _cuda_router(_op), "CUDA")


# ----------------------------------------------------------------------------- fake kernels


def _masked_like(mask: Sequence[bool], like: Tensor, dims: Sequence[Sequence[int]]) -> tuple[Tensor, ...]:
    """Fake outputs of a backward op: shape ``dims[i]`` where ``mask[i]``, else (0,)."""
    return tuple(like.new_empty(tuple(s) if m else (0,)) for m, s in zip(mask, dims, strict=True))


def _register_fakes() -> None:
    fake = torch.library.register_fake

    @fake("fastgeo::rbf_precision")
    def _(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
        return z.new_empty((z.shape[0], weights.shape[0]))

    @fake("fastgeo::rbf_precision_backward")
    def _(grad, z, centers, gammas, weights, output_mask):
        dims = (z.shape, centers.shape, gammas.shape, weights.shape, (weights.shape[0],))
        return _masked_like(output_mask, z, dims)

    @fake("fastgeo::segment_sqdist")
    def _(x: Tensor) -> Tensor:
        return x.new_empty((x.shape[0], x.shape[1] - 1))

    @fake("fastgeo::segment_sqdist_backward")
    def _(grad: Tensor, x: Tensor) -> Tensor:
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @fake("fastgeo::rbf_segment_sqdist")
    def _(points, centers, gammas, weights, zeta):
        return points.new_empty((points.shape[0], points.shape[1] - 1))

    @fake("fastgeo::rbf_segment_sqdist_backward")
    def _(grad, points, centers, gammas, weights, zeta, output_mask):
        dims = (points.shape, centers.shape, gammas.shape, weights.shape, zeta.shape)
        return _masked_like(output_mask, points, dims)

    @fake("fastgeo::rbf_sigma_jacobian")
    def _(z, centers, gammas, weights, zeta):
        P, d, D = z.shape[0], z.shape[1], weights.shape[0]
        return z.new_empty((P, D)), z.new_empty((P, d, D))

    @fake("fastgeo::gauss_newton_system")
    def _(f, jac, psi, grad_only):
        b, p = f.shape[0], jac.shape[2] * psi.shape[1]
        return f.new_empty((b, p)), f.new_empty((0,) if grad_only else (b, p, p))

    @fake("fastgeo::lm_propose")
    def _(grad, hess, curv, lam, segments):
        return torch.empty_like(grad), lam.new_empty(lam.shape), lam.new_empty(lam.shape, dtype=torch.bool)

    @fake("fastgeo::banded_lm_propose")
    def _(grad, hess, lam, segments, block, band):
        return torch.empty_like(grad), lam.new_empty(lam.shape), lam.new_empty(lam.shape, dtype=torch.bool)

    @fake("fastgeo::lm_update")
    def _(
        e,
        length,
        e_new,
        l_new,
        grad,
        g_new,
        g_old_jac,
        hess,
        h_new,
        curv,
        step,
        predicted,
        solved,
        lam,
        nu,
        tol,
        length_tol_factor,
    ):
        flags = [
            e.new_empty(e.shape, dtype=dt) for dt in (torch.bool, torch.int8, torch.bool)
        ]  # accept, status, ok
        return flags + [torch.empty_like(x) for x in (e, length, grad, hess, curv, lam, nu)]


# ----------------------------------------------------------------------------- autograd


def _save_inputs(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    ctx.save_for_backward(*inputs)
    ctx.cuda_kernel = CUDA_KERNEL.get()  # the backward runs the same CUDA implementation


def _masked_grads(ctx: Any, backward_op: Any, grad: Tensor, *extra: Any) -> tuple[Tensor | None, ...]:
    mask = [bool(m) for m in ctx.needs_input_grad]
    with cuda_kernel(ctx.cuda_kernel):
        grads = backward_op(grad, *extra, mask)
    return tuple(g if m else None for g, m in zip(grads, mask, strict=True))


def _rbf_precision_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    z, centers, gammas, weights, _ = ctx.saved_tensors
    return _masked_grads(ctx, ops.rbf_precision_backward, grad, z, centers, gammas, weights)


def _segment_sqdist_backward(ctx: Any, grad: Tensor) -> Tensor:
    (x,) = ctx.saved_tensors
    with cuda_kernel(ctx.cuda_kernel):
        return ops.segment_sqdist_backward(grad, x)


def _rbf_segment_sqdist_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    return _masked_grads(ctx, ops.rbf_segment_sqdist_backward, grad, *ctx.saved_tensors)


def _raises(message: str):
    def backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(message)

    return backward


def _no_save(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    pass


def _register_autograd() -> None:
    register = torch.library.register_autograd
    register("fastgeo::rbf_precision", _rbf_precision_backward, setup_context=_save_inputs)
    register("fastgeo::segment_sqdist", _segment_sqdist_backward, setup_context=_save_inputs)
    register("fastgeo::rbf_segment_sqdist", _rbf_segment_sqdist_backward, setup_context=_save_inputs)
    for op in BACKWARD:
        message = (
            f"fastgeo::{op} has no derivative: double backward through the compiled fastgeo kernels is "
            "not implemented. Use `with fastgeo.use_backend('reference'):` for higher-order derivatives."
        )
        register(f"fastgeo::{op}", _raises(message), setup_context=_no_save)
    for op in SOLVER:
        message = (
            f"fastgeo::{op} is a solver kernel without a derivative; its PyTorch reference "
            f"(fastgeo.reference.{op}) runs when gradients are needed."
        )
        register(f"fastgeo::{op}", _raises(message), setup_context=_no_save)


if LOADED:
    _register_fakes()
    _register_autograd()
