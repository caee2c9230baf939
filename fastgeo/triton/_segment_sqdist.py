"""``segment_sqdist`` in Triton: out[b, n] = ||x[b, n+1] - x[b, n]||^2 and its backward.

Memory bound: a program owns BLOCK_R segments (flattened over (b, n)) and streams D in chunks.
The backward gives each point its own gradient from its two neighbours (no atomics):
grad_x[n] = 2 (x_n - x_{n-1}) g_{n-1} - 2 (x_{n+1} - x_n) g_n.
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

BLOCK_R = 16
BLOCK_D = 128


@triton.jit
def _fwd_kernel(x_ptr, out_ptr, S, N, D, s_xb, s_xn, s_xd,
                BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_s = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    smask = offs_s < S
    b = (offs_s // (N - 1)).to(tl.int64)
    n = (offs_s % (N - 1)).to(tl.int64)
    row = b * s_xb + n * s_xn
    acc = tl.zeros((BLOCK_R,), dtype=x_ptr.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask = smask[:, None] & (offs_d[None, :] < D)
        ptrs = x_ptr + row[:, None] + offs_d[None, :] * s_xd
        a = tl.load(ptrs, mask=mask, other=0.0)
        c = tl.load(ptrs + s_xn, mask=mask, other=0.0)
        diff = c - a
        acc += tl.sum(diff * diff, axis=1)
    tl.store(out_ptr + offs_s, acc, mask=smask)


@triton.jit
def _bwd_kernel(x_ptr, go_ptr, gx_ptr, P, N, D, s_xb, s_xn, s_xd, s_gob, s_gon,
                BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mmask = offs_m < P
    b = (offs_m // N).to(tl.int64)
    n = (offs_m % N).to(tl.int64)
    has_prev = mmask & (n > 0)
    has_next = mmask & (n < N - 1)
    g_prev = tl.load(go_ptr + b * s_gob + (n - 1) * s_gon, mask=has_prev, other=0.0)
    g_next = tl.load(go_ptr + b * s_gob + n * s_gon, mask=has_next, other=0.0)
    row = b * s_xb + n * s_xn
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dmask = offs_d[None, :] < D
        ptrs = x_ptr + row[:, None] + offs_d[None, :] * s_xd
        xc = tl.load(ptrs, mask=mmask[:, None] & dmask, other=0.0)
        xp = tl.load(ptrs - s_xn, mask=has_prev[:, None] & dmask, other=0.0)
        xn = tl.load(ptrs + s_xn, mask=has_next[:, None] & dmask, other=0.0)
        # Missing neighbours load as 0 but their g is 0 too, so the term vanishes.
        g = 2.0 * (xc - xp) * g_prev[:, None] - 2.0 * (xn - xc) * g_next[:, None]
        out = gx_ptr + offs_m[:, None].to(tl.int64) * D + offs_d[None, :]
        tl.store(out, g, mask=mmask[:, None] & dmask)


def forward(x: Tensor) -> Tensor:
    """x (B, N, D) -> (B, N-1)."""
    B, N, D = x.shape
    out = x.new_empty((B, N - 1))
    S = B * (N - 1)
    if S == 0:
        return out
    if D == 0:
        return out.zero_()
    _fwd_kernel[(triton.cdiv(S, BLOCK_R),)](x, out, S, N, D, *x.stride(),
                                            BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return out


def backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad (B, N-1) -> grad_x (B, N, D)."""
    B, N, D = x.shape
    gx = x.new_empty((B, N, D))
    P = B * N
    if P == 0 or D == 0:
        return gx
    _bwd_kernel[(triton.cdiv(P, BLOCK_R),)](x, grad, gx, P, N, D, *x.stride(), *grad.stride(),
                                            BLOCK_R=BLOCK_R, BLOCK_D=BLOCK_D)
    return gx
