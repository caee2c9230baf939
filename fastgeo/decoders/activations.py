"""Pointwise activations with their derivatives, for the stacked forward mode: each maps x to
(value, derivative), both shaped like x, in one pass."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# torch.nn.Softplus' default: linear where beta x exceeds it (exp(-20) ~ 2e-9 off).
SOFT_THRESHOLD = 20.0


def _elu(x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    y = torch.nn.functional.elu(x, alpha)
    # The derivative is alpha e^x = y + alpha below 0 and 1 above, where y + alpha > alpha.
    if alpha == 1.0:
        return y, (y + 1).clamp_(max=1)
    return y, torch.where(x > 0, torch.ones_like(x), y + alpha)


def _softplus(x: Tensor, beta: float, threshold: float) -> tuple[Tensor, Tensor]:
    bx = beta * x
    linear = bx > threshold
    y = torch.where(linear, x, torch.nn.functional.softplus(x, beta, threshold))
    return y, torch.where(linear, torch.ones_like(x), torch.sigmoid(bx))


def _silu(x: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(x)
    return x * s, s * (1 + x * (1 - s))


def _sigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.sigmoid(x)
    return y, y * (1 - y)


def _tanh(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.tanh(x)
    return y, 1 - y * y


def _exp(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.exp(x)
    return y, y


def _relu(x: Tensor) -> tuple[Tensor, Tensor]:
    return x.clamp(min=0), (x > 0).to(x.dtype)


def _leaky_relu(x: Tensor, slope: float) -> tuple[Tensor, Tensor]:
    positive = x > 0
    return torch.where(positive, x, slope * x), torch.where(
        positive, torch.ones_like(x), torch.full_like(x, slope)
    )


def _gelu(x: Tensor) -> tuple[Tensor, Tensor]:
    cdf = 0.5 * (1 + torch.erf(x * math.sqrt(0.5)))
    pdf = torch.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return x * cdf, cdf + x * pdf


def _gelu_tanh(x: Tensor) -> tuple[Tensor, Tensor]:
    """GELU's tanh approximation, ``0.5 x (1 + tanh(u))`` with ``u = k (x + 0.044715 x^3)``."""
    k = math.sqrt(2 / math.pi)
    t = torch.tanh(k * (x + 0.044715 * x**3))
    half = 0.5 * (1 + t)
    return x * half, half + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)


def _scaled_elu(x: Tensor, alpha: float, scale: float, input_scale: float) -> tuple[Tensor, Tensor]:
    """``scale * (x if x > 0 else alpha (exp(input_scale x) - 1))``: SELU and CELU."""
    e = torch.exp(input_scale * x.clamp(max=0))
    positive = x > 0
    y = scale * torch.where(positive, x, alpha * (e - 1))
    return y, scale * torch.where(positive, torch.ones_like(x), alpha * input_scale * e)


def _mish(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x tanh(softplus(x))``; its derivative ``tanh(sp) + x sigmoid(x) (1 - tanh(sp)^2)``."""
    t = torch.tanh(torch.nn.functional.softplus(x))
    return x * t, t + x * torch.sigmoid(x) * (1 - t * t)


def _hardswish(x: Tensor) -> tuple[Tensor, Tensor]:
    """``x relu6(x + 3) / 6``; torch's derivative: 0 below -3, ``x / 3 + 1/2`` up to 3, then 1."""
    dy = torch.where(x < -3, torch.zeros_like(x), torch.where(x <= 3, x / 3 + 0.5, torch.ones_like(x)))
    return torch.nn.functional.hardswish(x), dy


def _softsign(x: Tensor) -> tuple[Tensor, Tensor]:
    r = 1 / (1 + x.abs())
    return x * r, r * r


def _logsigmoid(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.nn.functional.logsigmoid(x), torch.sigmoid(-x)


def _tanhshrink(x: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(x)
    return x - t, t * t


def _hardtanh(x: Tensor, low: float, high: float) -> tuple[Tensor, Tensor]:
    # torch's derivative: 1 strictly inside (low, high), 0 at and beyond the bounds
    return x.clamp(low, high), ((x > low) & (x < high)).to(x.dtype)


def _soft_leaky_relu(x: Tensor, slope: float, beta: float) -> tuple[Tensor, Tensor]:
    """LeakyReLU with its kink smoothed: ``slope x + (1 - slope) softplus_beta(x)``."""
    y, dy = _softplus(x, beta, SOFT_THRESHOLD)
    return slope * x + (1 - slope) * y, slope + (1 - slope) * dy


def _soft_hardtanh(x: Tensor, low: float, high: float, beta: float) -> tuple[Tensor, Tensor]:
    """Hardtanh with its two kinks smoothed: ``low + softplus_beta(x - low) - softplus_beta(x - high)``
    (an infinite bound, a clamp open on that side, has no kink: ``x`` there)."""
    if math.isfinite(low):
        y, dy = _softplus(x - low, beta, SOFT_THRESHOLD)
        y = y + low
    else:
        y, dy = x.clone(), torch.ones_like(x)
    if math.isfinite(high):
        y_high, dy_high = _softplus(x - high, beta, SOFT_THRESHOLD)
        y, dy = y - y_high, dy - dy_high
    return y, dy


def _soft_hardswish(x: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Hardswish with its two kinks smoothed: ``x h(x)``, ``h`` the smoothed Hardtanh of
    ``x / 6 + 1/2`` between 0 and 1 (rounded over the same width of x as ``beta`` rounds a ReLU)."""
    h, dh = _soft_hardtanh(x / 6 + 0.5, 0.0, 1.0, 6 * beta)
    return x * h, h + x * dh / 6


# Activations that are piecewise linear (or, Hardswish, piecewise quadratic): a decoder made of them
# and affine layers has a Jacobian that jumps where a unit switches, and curvature Gauss-Newton
# leaves out concentrated there. Each has a smooth stand-in (fastgeo.decoders.smoothing).
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu", "hardtanh", "hardswish"})

def _power(x: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """``x ** p`` for a whole ``p >= 1`` (``x * x``, ``torch.square``, a squared ReLU)."""
    below = x.pow(p - 1)
    return below * x, p * below


# Smooth functions of one value (sine activations of implicit decoders, an output's log or square
# root): name -> (x -> (value, derivative)).
def _sin(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.sin(x), torch.cos(x)


def _cos(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.cos(x), -torch.sin(x)


def _log(x: Tensor) -> tuple[Tensor, Tensor]:
    return torch.log(x), torch.reciprocal(x)


def _sqrt(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.sqrt(x)
    return y, 0.5 / y


def _rsqrt(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.rsqrt(x)
    return y, -0.5 * y * y * y


def _reciprocal(x: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.reciprocal(x)
    return y, -y * y


SMOOTH_POINTWISE: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]] = {
    "sin": _sin,
    "cos": _cos,
    "atan": lambda x: (torch.atan(x), 1 / (1 + x * x)),
    "erf": lambda x: (torch.erf(x), (2 / math.sqrt(math.pi)) * torch.exp(-x * x)),
    "sinh": lambda x: (torch.sinh(x), torch.cosh(x)),
    "cosh": lambda x: (torch.cosh(x), torch.sinh(x)),
    "asinh": lambda x: (torch.asinh(x), torch.rsqrt(1 + x * x)),
    "log": _log,
    "log1p": lambda x: (torch.log1p(x), 1 / (1 + x)),
    "expm1": lambda x: (torch.expm1(x), torch.exp(x)),
    "sqrt": _sqrt,
    "rsqrt": _rsqrt,
    "reciprocal": _reciprocal,
}

# name -> (x, *params) -> (value, derivative)
ACTIVATIONS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "elu": _elu,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "exp": _exp,
    "softplus": _softplus,
    "silu": _silu,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "hardtanh": _hardtanh,
    "scaled_elu": _scaled_elu,
    "mish": _mish,
    "hardswish": _hardswish,
    "softsign": _softsign,
    "logsigmoid": _logsigmoid,
    "tanhshrink": _tanhshrink,
    "power": _power,
    **SMOOTH_POINTWISE,
    # the smooth stand-ins of piecewise-linear ones (fastgeo.decoders.smoothing)
    "soft_leaky_relu": _soft_leaky_relu,
    "soft_hardtanh": _soft_hardtanh,
    "soft_hardswish": _soft_hardswish,
}
