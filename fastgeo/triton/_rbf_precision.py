"""``rbf_precision`` in Triton: beta = W phi(z) + zeta, and its backward.

Forward: a program owns a (BLOCK_M rows, BLOCK_D outputs) tile; phi for its rows is formed on
chip and multiplied by W^T (``tl.dot``, full precision). Backward: a program owns BLOCK_M rows
and walks D in chunks: grad_phi = grad_beta @ W, then grad_z = sum_k grad_phi phi (-2 gamma)
(z - c). grad_weights = grad_beta^T @ phi uses the features kernel here plus one matmul.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import DOT_PRECISION, accum_grad_z, launch_fitting, load_w, load_wt, next_pow2, phi_tile

BLOCK_M = 32
BLOCK_D = 64


@triton.jit
def _fwd_kernel(z_ptr, c_ptr, g_ptr, w_ptr, zeta_ptr, out_ptr, P, d, K, D,
                s_zp, s_zd, s_ck, s_cd, s_g, s_wd, s_wk, s_zeta,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                PREC: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mmask = offs_m < P
    dmask = offs_d < D
    row = offs_m.to(tl.int64) * s_zp
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=c_ptr.dtype.element_ty)
    for k0 in range(0, K, BLOCK_K):
        phi = phi_tile(z_ptr, row, mmask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g, k0, K, d,
                       BLOCK_M, BLOCK_K)
        wt = load_wt(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K)
        acc = tl.dot(phi, wt, acc, input_precision=PREC, out_dtype=acc.dtype)
    zeta = tl.load(zeta_ptr + offs_d * s_zeta, mask=dmask, other=0.0)
    acc = acc + zeta[None, :]
    ptrs = out_ptr + offs_m[:, None].to(tl.int64) * D + offs_d[None, :]
    tl.store(ptrs, acc, mask=mmask[:, None] & dmask[None, :])


@triton.jit
def _features_kernel(z_ptr, c_ptr, g_ptr, out_ptr, P, d, K, s_zp, s_zd, s_ck, s_cd, s_g,
                     BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mmask = offs_m < P
    phi = phi_tile(z_ptr, offs_m.to(tl.int64) * s_zp, mmask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                   tl.program_id(1) * BLOCK_K, K, d, BLOCK_M, BLOCK_K)
    ptrs = out_ptr + offs_m[:, None].to(tl.int64) * K + offs_k[None, :]
    tl.store(ptrs, phi, mask=mmask[:, None] & (offs_k[None, :] < K))


@triton.jit
def _bwd_z_kernel(z_ptr, c_ptr, g_ptr, w_ptr, go_ptr, gz_ptr, P, d, K, D,
                  s_zp, s_zd, s_ck, s_cd, s_g, s_wd, s_wk, s_gop, s_god,
                  BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                  DL: tl.constexpr, SINGLE_K: tl.constexpr, PREC: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < P
    row = offs_m.to(tl.int64) * s_zp
    gz = tl.zeros((BLOCK_M, DL), dtype=c_ptr.dtype.element_ty)
    if SINGLE_K:
        gphi = tl.zeros((BLOCK_M, BLOCK_K), dtype=c_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        gptrs = go_ptr + offs_m[:, None].to(tl.int64) * s_gop + offs_d[None, :] * s_god
        gbeta = tl.load(gptrs, mask=mmask[:, None] & dmask[None, :], other=0.0)
        if SINGLE_K:
            w = load_w(w_ptr, s_wd, s_wk, offs_d, dmask, 0, K, BLOCK_K)
            gphi = tl.dot(gbeta, w, gphi, input_precision=PREC, out_dtype=gphi.dtype)
        else:
            # grad_z is linear in grad_phi: add each (D chunk, K chunk) contribution directly.
            for k0 in range(0, K, BLOCK_K):
                phi = phi_tile(z_ptr, row, mmask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g, k0, K, d,
                               BLOCK_M, BLOCK_K)
                w = load_w(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K)
                gph = tl.dot(gbeta, w, input_precision=PREC)
                gz = accum_grad_z(gz, gph, phi, z_ptr, row, mmask, s_zd, c_ptr, s_ck, s_cd,
                                  g_ptr, s_g, k0, K, d, BLOCK_K, DL)
    if SINGLE_K:
        phi = phi_tile(z_ptr, row, mmask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                       BLOCK_M, BLOCK_K)
        gz = accum_grad_z(gz, gphi, phi, z_ptr, row, mmask, s_zd, c_ptr, s_ck, s_cd,
                          g_ptr, s_g, 0, K, d, BLOCK_K, DL)
    offs_j = tl.arange(0, DL)
    ptrs = gz_ptr + offs_m[:, None].to(tl.int64) * d + offs_j[None, :]
    tl.store(ptrs, gz, mask=mmask[:, None] & (offs_j[None, :] < d))


def _row_strides(z: Tensor) -> tuple[int, int]:
    # A (P, d) view with P == 1 or d == 1 may carry any stride on the size-1 axis.
    return z.stride(0), z.stride(1)


def forward(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor,
            block_k: int | None = None) -> Tensor:
    """z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> beta (P, D)."""
    P, d = z.shape
    K, D = centers.shape[0], weights.shape[0]
    out = z.new_empty((P, D))
    if P == 0 or D == 0:
        return out
    grid = (triton.cdiv(P, BLOCK_M), triton.cdiv(D, BLOCK_D))
    launch_fitting("rbf_precision.forward", z, K, block_k, lambda bk, _: _fwd_kernel[grid](
        z, centers, gammas, weights, zeta, out, P, d, K, D,
        *_row_strides(z), *centers.stride(), gammas.stride(0), *weights.stride(), zeta.stride(0),
        BLOCK_M=BLOCK_M, BLOCK_K=bk, BLOCK_D=BLOCK_D, PREC=DOT_PRECISION,
    ))
    return out


def features(z: Tensor, centers: Tensor, gammas: Tensor) -> Tensor:
    """phi (P, K) for z (P, d): the (P, K) tensor the weights gradient needs."""
    P, d = z.shape
    K = centers.shape[0]
    out = z.new_empty((P, K))
    if P == 0:
        return out
    bk = next_pow2(min(K, 64))
    _features_kernel[(triton.cdiv(P, BLOCK_M), triton.cdiv(K, bk))](
        z, centers, gammas, out, P, d, K, *_row_strides(z), *centers.stride(), gammas.stride(0),
        BLOCK_M=BLOCK_M, BLOCK_K=bk,
    )
    return out


def backward_z(grad: Tensor, z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
               block_k: int | None = None) -> Tensor:
    """grad (P, D) -> grad_z (P, d)."""
    P, d = z.shape
    K, D = centers.shape[0], weights.shape[0]
    gz = z.new_empty((P, d))
    if P == 0:
        return gz
    launch_fitting("rbf_precision.backward_z", z, K, block_k, lambda bk, single: _bwd_z_kernel[
        (triton.cdiv(P, BLOCK_M),)](
        z, centers, gammas, weights, grad, gz, P, d, K, D,
        *_row_strides(z), *centers.stride(), gammas.stride(0), *weights.stride(), *grad.stride(),
        BLOCK_M=BLOCK_M, BLOCK_K=bk, BLOCK_D=BLOCK_D, DL=next_pow2(d, 1), SINGLE_K=single,
        PREC=DOT_PRECISION,
    ))
    return gz


def backward(grad: Tensor, z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
             need_z: bool, need_weights: bool) -> tuple[Tensor, Tensor]:
    """grad (P, D) -> (grad_z (P, d), grad_weights (D, K)); unrequested ones are zeros."""
    gz = backward_z(grad, z, centers, gammas, weights) if need_z else torch.zeros_like(z)
    if need_weights:
        gw = grad.transpose(0, 1) @ features(z, centers, gammas)
    else:
        gw = torch.zeros_like(weights)
    return gz, gw
