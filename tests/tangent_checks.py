"""Checks shared by the tests of the stacked forward mode: forward-mode oracles that share no
code with it (dual tensors one direction at a time, ``torch.func.jvp`` under ``vmap``,
``torch.func.jacrev`` point by point), seeded float64 layers and decoders, and ``check`` /
``check_forms`` (float64 to 1e-10 and float32 to ``F32_TOL`` of the largest entry)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
from helpers import assert_close_rel, randn
from torch import nn

from fastgeo.decoders import (
    generic_value_and_tangents,
    stacked_chain,
    value_and_tangents,
)

F64 = torch.float64

F32_TOL = 1e-5
C, H = 4, 6  # channels and side of the feature map every single-layer case starts from


# Pointwise activations every forward-mode test runs through (MLP chains and conv layers alike).
POINTWISE = {
    "elu": lambda: nn.ELU(),
    "elu_alpha0.5": lambda: nn.ELU(alpha=0.5),
    "relu": lambda: nn.ReLU(),
    "leaky_relu0.1": lambda: nn.LeakyReLU(0.1),
    "tanh": lambda: nn.Tanh(),
    "sigmoid": lambda: nn.Sigmoid(),
    "softplus_b2_t1": lambda: nn.Softplus(beta=2, threshold=1),
    "softplus_b2_t5": lambda: nn.Softplus(beta=2, threshold=5),
    "silu": lambda: nn.SiLU(),
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "hardtanh": lambda: nn.Hardtanh(-0.3, 0.5),
    "hardtanh_wide": lambda: nn.Hardtanh(-0.5, 0.8),
    "relu6": lambda: nn.ReLU6(),
}


def init_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Seeded N(0, scale^2) parameters (norm weights 1 + N(0, scale^2)) and non-trivial running
    statistics; eval mode, float64."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=F64))
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                m.weight.add_(1.0)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=F64))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g, dtype=F64))
    return module.double().eval()


def reference(fn, z: torch.Tensor, tangents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value (P, F) and directional derivatives (k, P, F) by forward-mode AD with dual tensors
    (``torch.autograd.forward_ad``), one direction at a time."""
    with torch.no_grad():
        value = fn(z)
    outs = []
    with fwAD.dual_level():
        for t in tangents:
            outs.append(fwAD.unpack_dual(fn(fwAD.make_dual(z, t))).tangent)
    return value, torch.stack(outs) if outs else value.new_empty(0, *value.shape)


def jacrev_rows(fn, z: torch.Tensor) -> torch.Tensor:
    """Jacobian rows (d, P, F) by reverse mode (torch.func.jacrev), point by point."""
    rows = [torch.func.jacrev(lambda x: fn(x[None])[0])(z[p]) for p in range(z.shape[0])]  # (F, d) each
    return torch.stack(rows).permute(2, 0, 1)


def axes(z: torch.Tensor) -> torch.Tensor:
    P, d = z.shape
    return torch.eye(d, dtype=z.dtype)[:, None, :].expand(d, P, d)


def check(fn, z: torch.Tensor, tangents: torch.Tensor | None = None, recognized: bool = True,
          rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """value_and_tangents(fn, z, tangents) (default: the d axes) equals forward-mode AD to
    ``rtol`` of the largest entry (dual tensors, one direction at a time, for k <= 3; else
    torch.func.jvp vectorized by vmap: float64 convolutions under forward-mode AD take a slow
    path), and fn is (or is not) recognized; returns the fast result."""
    tangents = axes(z) if tangents is None else tangents
    assert (stacked_chain(fn, z[:4]) is not None) == recognized
    value, out = value_and_tangents(fn, z, tangents)
    oracle = reference if tangents.shape[0] <= 3 else generic_value_and_tangents
    value_ref, out_ref = oracle(fn, z, tangents)
    assert value.shape == value_ref.shape and out.shape == (tangents.shape[0], *value_ref.shape)
    assert value.dtype == out.dtype == z.dtype
    assert_close_rel(value, value_ref, rtol)
    assert_close_rel(out, out_ref, rtol)
    return value, out


def running(norm: nn.Module) -> nn.Module:
    """A norm layer with non-trivial running statistics (used in eval mode)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=g))
        norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape, generator=g))
    return norm


def around(layer: nn.Module, d: int = 3) -> nn.Sequential:
    """Linear(d, C H H) - ELU - Unflatten - layer - Tanh - Flatten: the layer sees points that
    vary nonlinearly with z."""
    head = [nn.Linear(d, C * H * H), nn.ELU(), nn.Unflatten(1, (C, H, H))]
    return init_(nn.Sequential(*head, layer, nn.Tanh(), nn.Flatten()), scale=1.0)


def exported(model: nn.Module, d: int) -> nn.Module:
    batch = ({0: torch.export.Dim("P", min=0)},)
    return torch.export.export(model, (randn(3, d),), dynamic_shapes=batch).module()


def check_forms(model: nn.Module, d: int, found: Callable[[nn.Module, torch.Tensor], object]) -> None:
    """A float64 decoder traced and exported: recognized, with ``found(fn, z)`` true (the steps
    the case is about), values and directional derivatives equal forward-mode AD to 1e-10; a
    float32 copy to F32_TOL."""
    z = randn(7, d, seed=1, scale=1.5)
    assert found(model, z)
    check(model, z)
    gm = exported(model, d).double()
    z = randn(6, d, seed=2, scale=1.5)
    assert found(gm, z)
    check(gm, z)
    check(copy.deepcopy(model).float(), randn(9, d, dtype=torch.float32, seed=3), rtol=F32_TOL)
