"""Fused ``rbf_segment_sqdist`` in Triton, flash-attention style: never a (B, N, D) tensor.

Forward: a program owns BLOCK_M consecutive segments (flattened over (b, n), n < N-1). It forms
phi for their start and end points on chip, and for each chunk of BLOCK_D outputs multiplies phi
by a W^T chunk (``tl.dot``), takes sigma = beta^-1/2 and accumulates the squared differences.

Backward: a program owns BLOCK_M points; it recomputes sigma at each point and its two
neighbours, forms grad_beta = -1/2 sigma^3 grad_sigma per D chunk and a second product
grad_phi = grad_beta @ W, then grad_points = sum_k grad_phi phi (-2 gamma) (z - c). Gradients for
weights (gbeta^T @ phi) and zeta (sum of gbeta) are reduced with atomics when requested.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._common import (
    DOT_PRECISION,
    accum_grad_z,
    atomic_grad_w,
    inv_sqrt,
    launch_fitting,
    load_w,
    load_wt,
    next_pow2,
    phi_tile,
)

BLOCK_M = 32
BLOCK_D = 64


@triton.jit
def _sigma_chunk(phi, z_ptr, row_off, row_mask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                 w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                 BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                 SINGLE_K: tl.constexpr, PREC: tl.constexpr):
    """sigma (BLOCK_M, BLOCK_D) for one D chunk; ``phi`` is the resident tile when SINGLE_K."""
    if SINGLE_K:
        wt = load_wt(w_ptr, s_wd, s_wk, offs_d, dmask, 0, K, BLOCK_K)
        beta = tl.dot(phi, wt, input_precision=PREC)
    else:
        beta = tl.zeros((BLOCK_M, BLOCK_D), dtype=c_ptr.dtype.element_ty)
        for k0 in range(0, K, BLOCK_K):
            ph = phi_tile(z_ptr, row_off, row_mask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g, k0, K, d,
                          BLOCK_M, BLOCK_K)
            wt = load_wt(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K)
            beta = tl.dot(ph, wt, beta, input_precision=PREC, out_dtype=beta.dtype)
    beta = beta + zeta[None, :]
    return inv_sqrt(beta)


@triton.jit
def _fwd_kernel(p_ptr, c_ptr, g_ptr, w_ptr, zeta_ptr, out_ptr, S, N, d, K, D,
                s_pb, s_pn, s_pd, s_ck, s_cd, s_g, s_wd, s_wk, s_zeta,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                SINGLE_K: tl.constexpr, PREC: tl.constexpr):
    offs_s = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    smask = offs_s < S
    b = (offs_s // (N - 1)).to(tl.int64)
    n = (offs_s % (N - 1)).to(tl.int64)
    row_a = b * s_pb + n * s_pn
    row_b = row_a + s_pn
    phi_a = None
    phi_b = None
    if SINGLE_K:
        phi_a = phi_tile(p_ptr, row_a, smask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                         BLOCK_M, BLOCK_K)
        phi_b = phi_tile(p_ptr, row_b, smask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                         BLOCK_M, BLOCK_K)
    acc = tl.zeros((BLOCK_M,), dtype=c_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        # Padded columns get zeta = 1 and W = 0: equal sigmas, zero contribution.
        zeta = tl.load(zeta_ptr + offs_d * s_zeta, mask=dmask, other=1.0)
        sig_a = _sigma_chunk(phi_a, p_ptr, row_a, smask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                             w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                             BLOCK_M, BLOCK_K, BLOCK_D, SINGLE_K, PREC)
        sig_b = _sigma_chunk(phi_b, p_ptr, row_b, smask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                             w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                             BLOCK_M, BLOCK_K, BLOCK_D, SINGLE_K, PREC)
        diff = sig_b - sig_a
        acc += tl.sum(diff * diff, axis=1)
    tl.store(out_ptr + offs_s, acc, mask=smask)


@triton.jit
def _bwd_kernel(p_ptr, c_ptr, g_ptr, w_ptr, zeta_ptr, go_ptr, gp_ptr, gw_ptr, gzeta_ptr,
                P, N, d, K, D,
                s_pb, s_pn, s_pd, s_ck, s_cd, s_g, s_wd, s_wk, s_zeta, s_gob, s_gon,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                DL: tl.constexpr, SINGLE_K: tl.constexpr, NEED_W: tl.constexpr,
                NEED_ZETA: tl.constexpr, PREC: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = offs_m < P
    b = (offs_m // N).to(tl.int64)
    n = (offs_m % N).to(tl.int64)
    has_prev = mmask & (n > 0)
    has_next = mmask & (n < N - 1)
    row_c = b * s_pb + n * s_pn
    # Boundary points read themselves as the missing neighbour; their upstream grad is 0.
    row_p = tl.where(has_prev, row_c - s_pn, row_c)
    row_n = tl.where(has_next, row_c + s_pn, row_c)
    g_prev = tl.load(go_ptr + b * s_gob + (n - 1) * s_gon, mask=has_prev, other=0.0)
    g_next = tl.load(go_ptr + b * s_gob + n * s_gon, mask=has_next, other=0.0)
    phi_p = None
    phi_c = None
    phi_n = None
    if SINGLE_K:
        phi_p = phi_tile(p_ptr, row_p, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                         BLOCK_M, BLOCK_K)
        phi_c = phi_tile(p_ptr, row_c, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                         BLOCK_M, BLOCK_K)
        phi_n = phi_tile(p_ptr, row_n, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, 0, K, d,
                         BLOCK_M, BLOCK_K)
        gphi = tl.zeros((BLOCK_M, BLOCK_K), dtype=c_ptr.dtype.element_ty)
    gz = tl.zeros((BLOCK_M, DL), dtype=c_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d < D
        zeta = tl.load(zeta_ptr + offs_d * s_zeta, mask=dmask, other=1.0)
        sig_p = _sigma_chunk(phi_p, p_ptr, row_p, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                             w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                             BLOCK_M, BLOCK_K, BLOCK_D, SINGLE_K, PREC)
        sig_c = _sigma_chunk(phi_c, p_ptr, row_c, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                             w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                             BLOCK_M, BLOCK_K, BLOCK_D, SINGLE_K, PREC)
        sig_n = _sigma_chunk(phi_n, p_ptr, row_n, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                             w_ptr, s_wd, s_wk, zeta, offs_d, dmask, K, d,
                             BLOCK_M, BLOCK_K, BLOCK_D, SINGLE_K, PREC)
        gsig = 2.0 * (sig_c - sig_p) * g_prev[:, None] - 2.0 * (sig_n - sig_c) * g_next[:, None]
        # d sigma / d beta = -1/2 beta^-3/2 = -1/2 sigma^3
        gbeta = tl.where(dmask[None, :] & mmask[:, None], -0.5 * gsig * sig_c * sig_c * sig_c, 0.0)
        if NEED_ZETA:
            tl.atomic_add(gzeta_ptr + offs_d, tl.sum(gbeta, axis=0), mask=dmask)
        if SINGLE_K:
            w = load_w(w_ptr, s_wd, s_wk, offs_d, dmask, 0, K, BLOCK_K)
            gphi = tl.dot(gbeta, w, gphi, input_precision=PREC, out_dtype=gphi.dtype)
            if NEED_W:
                atomic_grad_w(gw_ptr, gbeta, phi_c, offs_d, dmask, 0, K, BLOCK_K, PREC)
        else:
            for k0 in range(0, K, BLOCK_K):
                ph = phi_tile(p_ptr, row_c, mmask, s_pd, c_ptr, s_ck, s_cd, g_ptr, s_g, k0, K, d,
                              BLOCK_M, BLOCK_K)
                w = load_w(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K)
                gph = tl.dot(gbeta, w, input_precision=PREC)
                gz = accum_grad_z(gz, gph, ph, p_ptr, row_c, mmask, s_pd, c_ptr, s_ck, s_cd,
                                  g_ptr, s_g, k0, K, d, BLOCK_K, DL)
                if NEED_W:
                    atomic_grad_w(gw_ptr, gbeta, ph, offs_d, dmask, k0, K, BLOCK_K, PREC)
    if SINGLE_K:
        gz = accum_grad_z(gz, gphi, phi_c, p_ptr, row_c, mmask, s_pd, c_ptr, s_ck, s_cd,
                          g_ptr, s_g, 0, K, d, BLOCK_K, DL)
    offs_j = tl.arange(0, DL)
    ptrs = gp_ptr + offs_m[:, None].to(tl.int64) * d + offs_j[None, :]
    tl.store(ptrs, gz, mask=mmask[:, None] & (offs_j[None, :] < d))


def forward(points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor,
            block_k: int | None = None) -> Tensor:
    """points (B, N, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> (B, N-1)."""
    B, N, d = points.shape
    K, D = centers.shape[0], weights.shape[0]
    out = points.new_empty((B, N - 1))
    S = B * (N - 1)
    if S == 0:
        return out
    launch_fitting("rbf_segment_sqdist.forward", points, K, block_k, lambda bk, single: _fwd_kernel[
        (triton.cdiv(S, BLOCK_M),)](
        points, centers, gammas, weights, zeta, out, S, N, d, K, D,
        *points.stride(), *centers.stride(), gammas.stride(0), *weights.stride(), zeta.stride(0),
        BLOCK_M=BLOCK_M, BLOCK_K=bk, BLOCK_D=BLOCK_D, SINGLE_K=single, PREC=DOT_PRECISION,
    ))
    return out


def backward(grad: Tensor, points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
             zeta: Tensor, need_weights: bool, need_zeta: bool,
             block_k: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """grad (B, N-1) -> (grad_points (B, N, d), grad_weights (D, K), grad_zeta (D,)).

    grad_weights / grad_zeta are zeros unless requested (they cost atomics over all programs).
    """
    B, N, d = points.shape
    K, D = centers.shape[0], weights.shape[0]
    gp = torch.empty((B, N, d), dtype=points.dtype, device=points.device)
    gw = torch.zeros((D, K), dtype=points.dtype, device=points.device)
    gzeta = torch.zeros((D,), dtype=points.dtype, device=points.device)
    P = B * N
    if P == 0:
        return gp, gw, gzeta
    # A launch that failed for shared memory wrote nothing: the atomics start from zero again.
    launch_fitting("rbf_segment_sqdist.backward", points, K, block_k, lambda bk, single: _bwd_kernel[
        (triton.cdiv(P, BLOCK_M),)](
        points, centers, gammas, weights, zeta, grad, gp, gw, gzeta, P, N, d, K, D,
        *points.stride(), *centers.stride(), gammas.stride(0), *weights.stride(), zeta.stride(0),
        *grad.stride(),
        BLOCK_M=BLOCK_M, BLOCK_K=bk, BLOCK_D=BLOCK_D, DL=next_pow2(d, 1), SINGLE_K=single,
        NEED_W=need_weights, NEED_ZETA=need_zeta, PREC=DOT_PRECISION,
    ))
    return gp, gw, gzeta
