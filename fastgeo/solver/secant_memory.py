"""Gauss-Newton corrected along the last few steps: a limited-memory BFGS model on top of the
(lagged, damped) Gauss-Newton matrix.

The last-step correction (:mod:`.last_step`) fixes the model's curvature along one direction. In
the lagged mode at d >= 32 several directions are flat at once and the damping climbs and falls
step after step; this model keeps the last ``MEMORY`` secant pairs ``(s_k, y_k)`` of a curve
(steps and exact gradient changes, from accepted and rejected trials) and takes the step of the
L-BFGS model whose initial matrix is the damped Gauss-Newton matrix ``A = H + lam D``:
``B s_k = y_k + lam D s_k`` for the pairs kept. One solve with ``A`` per step (the two-loop
recursion), as the plain step; the system stays banded.

Pairs are Powell-damped when stored (``s.y >= FLOOR s^T H s`` with H the Gauss-Newton matrix of
the step's start), so the model stays positive definite and lowers a direction's curvature to
at most ``1 / FLOOR`` of Gauss-Newton's, as the last-step correction does.

Shapes: ``b`` curves, ``p`` unknowns, ``k = MEMORY`` pairs; grad, step (b, p), hess (b, p, p),
pairs (b, k, p), valid (b, k) bool, the rest (b,).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.band import banded_matvec
from ..ops.solver_ops import lm_propose
from ..reference.levenberg_marquardt import marquardt_damping

MEMORY = 5  # pairs kept per curve (3-10 measured alike at d = 32); 0: the last-step correction
FLOOR = 0.2  # least curvature kept along a stored step, relative to Gauss-Newton's
REJECTED = True  # rejected trials give pairs too (their gradients are exact)


def _matvec(hess: Tensor, x: Tensor, banded: tuple[int, int] | None) -> Tensor:
    return banded_matvec(hess, x, *banded) if banded else (hess * x[:, None, :]).sum(-1)


def store(
    S: Tensor,
    Y: Tensor,
    valid: Tensor,
    add: Tensor,
    step: Tensor,
    dg: Tensor,
    hess: Tensor,
    banded: tuple[int, int] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs with ``(step, dg)`` appended (oldest dropped) where ``add``; ``dg`` is the exact
    gradient change along ``step`` and ``hess`` the Gauss-Newton matrix of the step's start."""
    h_s = _matvec(hess, step, banded)
    s_h_s = (step * h_s).sum(-1)
    s_y = (step * dg).sum(-1)
    low = s_y < FLOOR * s_h_s
    theta = torch.where(low, (1 - FLOOR) * s_h_s / (s_h_s - s_y).clamp(min=torch.finfo(s_y.dtype).tiny), 1.0)
    y = theta[:, None] * dg + (1 - theta)[:, None] * h_s
    add = add & (s_h_s > 0) & torch.isfinite(y).all(-1) & torch.isfinite(step).all(-1)
    sel = add[:, None, None]
    S = torch.where(sel, torch.cat([S[:, 1:], step[:, None]], 1), S)
    Y = torch.where(sel, torch.cat([Y[:, 1:], y[:, None]], 1), Y)
    valid = torch.where(add[:, None], torch.cat([valid[:, 1:], torch.ones_like(valid[:, :1])], 1), valid)
    return S, Y, valid


def multi_secant_step(
    grad: Tensor,
    hess: Tensor,
    lam: Tensor,
    S: Tensor,
    Y: Tensor,
    valid: Tensor,
    segments: int,
    banded: tuple[int, int] | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Step (b, p), predicted decrease of the undamped model (b,) and solved (b,) of the L-BFGS
    model on ``A = H + lam D`` with the stored pairs (damped alike: ``y + lam D s``)."""
    damping = marquardt_damping(hess, lam)
    k = S.shape[1]
    Yd = Y + damping[:, None, :] * S
    sy = (S * Yd).sum(-1)
    ok = valid & (sy > 0) & torch.isfinite(sy)
    rho = torch.where(ok, 1.0 / torch.where(ok, sy, 1.0), 0.0)
    q = grad.clone()
    alpha = torch.zeros_like(rho)
    for i in reversed(range(k)):
        alpha[:, i] = rho[:, i] * (S[:, i] * q).sum(-1)
        q = q - alpha[:, i, None] * Yd[:, i]
    neg_r, _, solved = lm_propose(q, hess, None, lam, segments, banded)
    r = -neg_r
    for i in range(k):
        beta = rho[:, i] * (Yd[:, i] * r).sum(-1)
        r = r + (alpha[:, i] - beta)[:, None] * S[:, i]
    x = -r
    predicted = 0.5 * segments * (-(grad * x).sum(-1) + (damping * x * x).sum(-1))
    good = solved & torch.isfinite(x).all(-1) & torch.isfinite(predicted) & (predicted > 0)
    return torch.where(good[:, None], x, 0.0), torch.where(good, predicted, 0.0), good
