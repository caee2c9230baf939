"""Shared Triton pieces: the on-chip RBF feature tile, the phi-gradient step, block choices.

Imported only when a Triton op first runs (``TRITON_INTERPRET`` is read when ``@triton.jit``
decorates, so tests must be able to set it before this module is imported).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

# Full-precision products. Neighbouring sigma rows differ by ~1/N of sigma itself, so TF32 inputs
# (10-bit mantissa, relative error ~5e-4) would drown the differences at N = 128. "ieee" is the
# verified choice; "tf32x3" (a 3-pass split scheme on tensor cores) is the faster candidate to
# measure on a GPU (the interpreter ignores input_precision, so only a GPU can validate it).
# On an H200 the "ieee" dots ran at 0.3-0.5 TFLOP/s (FMA, no tensor cores), 25-30x slower than
# the reference's cuBLAS products: FASTGEO_TRITON_DOT=tf32x3 lets a GPU run measure the candidate
# (bench/gpu_check.sh does) before it becomes the default.
DOT_PRECISIONS = ("ieee", "tf32x3")
DOT_PRECISION = os.environ.get("FASTGEO_TRITON_DOT", "ieee")
if DOT_PRECISION not in DOT_PRECISIONS:
    raise ValueError(f"FASTGEO_TRITON_DOT must be one of {DOT_PRECISIONS}, got {DOT_PRECISION!r}")


def next_pow2(n: int, minimum: int = 16) -> int:
    """The smallest power of two >= max(n, minimum) (tl.dot needs dimensions >= 16)."""
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


def k_block(K: int, block_k: int | None) -> tuple[int, bool]:
    """(BLOCK_K, SINGLE_K): all K centers in one on-chip tile when K <= 128, else chunks of 64."""
    if block_k is None:
        block_k = next_pow2(K) if K <= 128 else 64
    return block_k, block_k >= K


# BLOCK_K that fitted, per (kernel, dtype, device, BLOCK_K asked): a failed launch costs a compile.
_FITTED: dict[tuple, int] = {}
MIN_BLOCK_K = 16


def launch_fitting(kernel_name: str, like: Any, K: int, block_k: int | None,
                   launch: Callable[[int, bool], None]) -> None:
    """``launch(BLOCK_K, SINGLE_K)`` with the block of :func:`k_block`, halved while the GPU has
    too little shared memory for it. The kernels' shared memory grows with BLOCK_K and the
    element size: on an H200, a float64 backward with all 128 centers in one tile asks 376 KB
    of the 227 KB a block may have; smaller GPUs (99 KB on sm_86/89) refuse smaller tiles."""
    asked, _ = k_block(K, block_k)
    key = (kernel_name, like.dtype, str(like.device), asked)
    bk = _FITTED.get(key, asked)
    while True:
        try:
            launch(bk, bk >= K)
        except OutOfResources:
            if bk // 2 < MIN_BLOCK_K:
                raise
            bk //= 2
            continue
        _FITTED[key] = bk
        return


@triton.jit
def phi_tile(z_ptr, row_off, row_mask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g, k0, K, d,
             BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """phi (BLOCK_M, BLOCK_K) for the rows at ``z_ptr + row_off`` and centers k0..k0+BLOCK_K.

    Distances are formed as sums of squared coordinate differences (never ||z||^2 - 2 z.c +
    ||c||^2, which cancels); padded centers give phi = 0.
    """
    offs_k = k0 + tl.arange(0, BLOCK_K)
    kmask = offs_k < K
    sq = tl.zeros((BLOCK_M, BLOCK_K), dtype=c_ptr.dtype.element_ty)
    for j in range(d):
        zj = tl.load(z_ptr + row_off + j * s_zd, mask=row_mask, other=0.0)
        cj = tl.load(c_ptr + offs_k * s_ck + j * s_cd, mask=kmask, other=0.0)
        diff = zj[:, None] - cj[None, :]
        sq += diff * diff
    gam = tl.load(g_ptr + offs_k * s_g, mask=kmask, other=0.0)
    phi = tl.exp(-gam[None, :] * sq)
    if c_ptr.dtype.element_ty == tl.float32:  # no subnormal features, as the reference
        normal = phi >= 1.1754943508222875e-38
    else:
        normal = phi >= 2.2250738585072014e-308
    return tl.where(kmask[None, :] & normal, phi, 0.0)


@triton.jit
def inv_sqrt(x):
    """x^-1/2 with an IEEE-rounded sqrt (tl.rsqrt / float32 tl.sqrt may lower to approximations)."""
    if x.dtype == tl.float32:
        return 1.0 / tl.sqrt_rn(x)
    else:
        return 1.0 / tl.sqrt(x)


@triton.jit
def load_wt(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K: tl.constexpr):
    """W^T tile (BLOCK_K, BLOCK_D) = weights[offs_d, k0:k0+BLOCK_K].T, zero-padded."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    ptrs = w_ptr + offs_k[:, None] * s_wk + offs_d[None, :] * s_wd
    return tl.load(ptrs, mask=(offs_k[:, None] < K) & dmask[None, :], other=0.0)


@triton.jit
def load_w(w_ptr, s_wd, s_wk, offs_d, dmask, k0, K, BLOCK_K: tl.constexpr):
    """W tile (BLOCK_D, BLOCK_K) = weights[offs_d, k0:k0+BLOCK_K], zero-padded."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    ptrs = w_ptr + offs_d[:, None] * s_wd + offs_k[None, :] * s_wk
    return tl.load(ptrs, mask=dmask[:, None] & (offs_k[None, :] < K), other=0.0)


@triton.jit
def accum_grad_z(gz, gphi, phi, z_ptr, row_off, row_mask, s_zd, c_ptr, s_ck, s_cd, g_ptr, s_g,
                 k0, K, d, BLOCK_K: tl.constexpr, DL: tl.constexpr):
    """gz (BLOCK_M, DL) += d/dz of sum(gphi * phi) for centers k0..k0+BLOCK_K.

    grad_z[m, j] = sum_k gphi[m,k] phi[m,k] (-2 gamma_k) (z[m,j] - c[k,j]); the difference is
    formed per coordinate (no z * sum - A @ C cancellation). grad_z is linear in gphi, so
    chunks over D and K may be added in any order.
    """
    offs_k = k0 + tl.arange(0, BLOCK_K)
    kmask = offs_k < K
    gam = tl.load(g_ptr + offs_k * s_g, mask=kmask, other=0.0)
    a = gphi * phi * (-2.0 * gam[None, :])
    offs_j = tl.arange(0, DL)
    for j in range(d):
        zj = tl.load(z_ptr + row_off + j * s_zd, mask=row_mask, other=0.0)
        cj = tl.load(c_ptr + offs_k * s_ck + j * s_cd, mask=kmask, other=0.0)
        contrib = tl.sum(a * (zj[:, None] - cj[None, :]), axis=1)
        gz += tl.where(offs_j[None, :] == j, contrib[:, None], 0.0)
    return gz


@triton.jit
def atomic_grad_w(gw_ptr, gbeta, phi, offs_d, dmask, k0, K, BLOCK_K: tl.constexpr,
                  PREC: tl.constexpr):
    """grad_weights[offs_d, k0:k0+BLOCK_K] += gbeta^T @ phi (a reduction over all programs)."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    part = tl.dot(tl.trans(gbeta), phi, input_precision=PREC)
    ptrs = gw_ptr + offs_d[:, None] * K + offs_k[None, :]
    tl.atomic_add(ptrs, part, mask=dmask[:, None] & (offs_k[None, :] < K))
