"""CPU benchmark of the solver's compiled pieces against their PyTorch references, on the shapes
the solver really uses with the shipped digits generator (latent d = 2, D = 64, RBF K = 64,
features F = 2D = 128; curves of m = 12 basis functions, so p = m d = 24 unknowns; N = 24 points
in the coarse race, 48 in the fine phase; batches of 48 and 96 curves, and 2 curves, where the
per-call overhead dominates):

1. decoder Jacobian: ``fastgeo.decoders.jacobian_rows`` (stacked forward mode through the MLP
   chain) vs ``generic_jacobian_rows`` (``torch.func.jvp`` under ``vmap``), P = b N points on
   straight lines between the generator's codes;
2. sigma and its Jacobian: ``torch.ops.fastgeo.rbf_sigma_jacobian`` vs
   ``fastgeo.reference.rbf_sigma_jacobian``, same points;
3. Gauss-Newton system: ``torch.ops.fastgeo.gauss_newton_system`` vs
   ``fastgeo.reference.gauss_newton_system``, f (b, N, F) and J^T (b, N, d, F) of
   the metric's features on curve points, psi the 12 Legendre-based basis functions;
4. one Levenberg-Marquardt iteration's bookkeeping: ``lm_propose`` + ``lm_update`` vs
   ``fastgeo.reference.lm_propose`` + ``lm_update``, on a real solver state: the 48 solver pairs'
   end points (``workloads.solver_pairs``), coefficients perturbed from the straight line, after
   one reference iteration (so the secant model is not zero), and its real trial point;
5. the banded step (plain Gauss-Newton in the B-spline basis, d >= 8): ``banded_lm_propose`` vs
   ``fastgeo.reference.banded_lm_propose``, at d = 8-128 (``BANDED_SHAPES``);
6. the decoder Jacobian of a seeded MLP d-256-256-784 with LayerNorm and GELU (d = 16, 32; P = 480
   random points), of a conv decoder with PixelShuffle, Mish and Hardswish (d = 8, 32; P = 240) and
   of a sequence decoder with InstanceNorm1d, PReLU and a softmax over 21 letters (d = 8, 32;
   P = 480) and of a conv decoder with residual blocks (d = 8, 32; P = 240), stacked forward mode
   vs ``torch.func``.

    OMP_NUM_THREADS=1 pytest bench/bench_solver_kernels.py --benchmark-only -q -p no:cacheprovider -s

float32 (the solver's dtype), one thread (``torch.set_num_threads(1)`` around each timing), under
``torch.no_grad()``. Before a pair is timed, the kernel's outputs are checked against the
reference's (float32 tolerances, decisions identical), so a wrong kernel is never timed. Each
call is timed by pytest-benchmark's own calibration (many rounds for these microsecond calls),
after a few warm-up calls. Prints, at the end, a table (min over rounds, median in parentheses,
ratio = reference min / kernel min), also written to ``$FASTGEO_BENCH_OUT/solver_kernels.md``
(default ``bench/results``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pytest
import torch
import workloads
from workloads import environment_line, results_dir

import fastgeo
from fastgeo import reference
from fastgeo.benchmarks.timing import environment
from fastgeo.curves import BSplineBasis, evaluate, time_grid
from fastgeo.decoders import generic_jacobian_rows, jacobian_rows, mlp_chain
from fastgeo.decoders.recognize import recognize
from fastgeo.ops.band import block_bandwidth
from fastgeo.reference import gauss_newton_system as reference_gauss_newton_system
from fastgeo.solver.levenberg_marquardt import LENGTH_TOL_FACTOR
from fastgeo.solver.linearize import assemble

GENERATOR = "digits"
DTYPE = torch.float32
THREADS = 1
M = 12  # basis functions per latent axis: p = M d unknowns
TOL = 1e-5  # the solver's float32 tolerance
WARMUP = 3  # calls before timing (allocator, dispatcher caches, the chain's recognition)
# Largest error allowed, relative to the reference output's largest magnitude (float32):
# sums of a few hundred products; the LM step is a Cholesky solve of a damped system.
RTOL = {"jacobian": 1e-4, "sigma": 1e-4, "gauss_newton": 1e-4, "lm": 1e-3}
IMPLS = ("reference", "kernel")

ROWS: dict[tuple[str, str], dict[str, dict]] = {}


@dataclass
class Pair:
    """A reference and a kernel call on the same inputs, and the check that they agree."""

    reference: Callable[[], object]
    kernel: Callable[[], object]
    check: Callable[[], None]


def _assert_agree(name: str, got, want, rtol: float) -> None:
    """Every output of the kernel equals the reference's: booleans exactly, floats within
    ``rtol`` of the reference's largest magnitude, same shapes and dtypes."""
    for i, (x, y) in enumerate(zip(got, want, strict=True)):
        assert x.shape == y.shape and x.dtype == y.dtype, f"{name}[{i}]: {x.shape} {x.dtype} vs {y.shape}"
        if y.dtype == torch.bool:
            assert torch.equal(x, y), f"{name}[{i}]: decisions differ from the reference"
        else:
            scale = float(y.abs().amax()) if y.numel() else 0.0
            err = float((x - y).abs().amax()) if y.numel() else 0.0
            assert err <= rtol * max(scale, 1e-30), f"{name}[{i}]: max error {err:.3g} (scale {scale:.3g})"


def _features(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f (P, F) and J^T (P, d, F) of the generator's metric, as the solver computes them."""
    with torch.no_grad():
        return workloads.generator(GENERATOR)[0].features_and_jacobian_t(z)


def _jacobian(b: int, N: int) -> Pair:
    mean = workloads.generator(GENERATOR)[0].mean
    z = workloads.curve_points(GENERATOR, b, N).reshape(b * N, -1)
    # Otherwise jacobian_rows would fall back to the generic path: reference against itself.
    assert mlp_chain(mean, z[:4]) is not None, "the digits decoder is not recognized as an MLP chain"
    ref, ker = (lambda: generic_jacobian_rows(mean, z)), (lambda: jacobian_rows(mean, z))
    return Pair(ref, ker, lambda: _assert_agree("jacobian", ker(), ref(), RTOL["jacobian"]))


def _norm_gelu_builder(d: int) -> Callable[[int, int], Pair]:
    """The decoder Jacobian of a seeded MLP d-256-256-784 with LayerNorm and GELU after each
    hidden layer (decoders that took the generic path before these layers were recognized), at
    P = b N random points."""

    def build(b: int, N: int) -> Pair:
        torch.manual_seed(0)
        nn = torch.nn
        mean = nn.Sequential(nn.Linear(d, 256), nn.LayerNorm(256), nn.GELU(), nn.Linear(256, 256),
                             nn.LayerNorm(256), nn.GELU(), nn.Linear(256, 784)).eval()  # fmt: skip
        z = torch.randn(b * N, d, dtype=DTYPE)
        assert recognize(mean) is not None, "the LayerNorm / GELU MLP is not recognized as a chain"
        ref, ker = (lambda: generic_jacobian_rows(mean, z)), (lambda: jacobian_rows(mean, z))
        return Pair(ref, ker, lambda: _assert_agree("jacobian", ker(), ref(), RTOL["jacobian"]))

    build.__name__ = f"_norm_gelu_d{d}"
    return build


def _shuffle_mish_conv(d: int) -> torch.nn.Module:
    """(P, d) -> (P, 784): Linear - 7x7 maps - Conv2d - PixelShuffle (14x14) - Mish - Conv2d -
    PixelShuffle (28x28) - Hardswish - Conv2d - Sigmoid (layers taken by torch.func before)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(d, 32 * 49), nn.Unflatten(1, (32, 7, 7)), nn.Conv2d(32, 64, 3, padding=1),
        nn.PixelShuffle(2), nn.Mish(), nn.Conv2d(16, 32, 3, padding=1), nn.PixelShuffle(2), nn.Hardswish(),
        nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(), nn.Flatten(),
    ).eval()  # fmt: skip


def _sequence_softmax(d: int) -> torch.nn.Module:
    """(P, d) -> (P, 21 x 50): a sequence decoder (21 letters, 50 positions): Linear -
    ConvTranspose1d - InstanceNorm1d - PReLU - Conv1d - Softmax over the letters."""
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(d, 64 * 25), nn.Unflatten(1, (64, 25)), nn.ConvTranspose1d(64, 32, 4, 2, 1),
        nn.InstanceNorm1d(32, affine=True), nn.PReLU(32), nn.Conv1d(32, 21, 3, padding=1), nn.Softmax(dim=1),
        nn.Flatten(),
    ).eval()  # fmt: skip


class _ResBlock(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, padding=1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _ResidualConv(torch.nn.Module):
    """(P, d) -> (P, 784): Linear - 7x7 maps - residual block - ConvTranspose2d (14x14) -
    residual block - ConvTranspose2d (28x28) - Conv2d - Sigmoid (skip connections)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc = nn.Linear(d, 32 * 49)
        self.net = nn.Sequential(
            _ResBlock(32), nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.SiLU(), _ResBlock(16),
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 32, 7, 7)).flatten(1)


def _residual_conv(d: int) -> torch.nn.Module:
    return _ResidualConv(d).eval()


class _GatedConv(torch.nn.Module):
    """(P, d) -> (P, 784): Linear - swish written out (x * sigmoid(x)) - 7x7 maps - a gate per
    pixel - ConvTranspose2d (14x14) - a gate per channel (squeeze-excitation) - ConvTranspose2d
    (28x28) - a GLU-like product of two convolutions - Conv2d - Sigmoid."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc = nn.Linear(d, 32 * 49)
        self.gate = nn.Conv2d(32, 32, 3, padding=1)
        self.up1, self.up2 = nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ConvTranspose2d(16, 16, 4, 2, 1)
        self.squeeze = nn.Sequential(nn.AvgPool2d(14), nn.Conv2d(16, 16, 1))
        self.value, self.weight = nn.Conv2d(16, 8, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z)
        h = (h * torch.sigmoid(h)).view(-1, 32, 7, 7)
        h = h * torch.sigmoid(self.gate(h))
        h = torch.nn.functional.elu(self.up1(h))
        h = h * torch.sigmoid(self.squeeze(h))
        h = torch.nn.functional.elu(self.up2(h))
        h = torch.tanh(self.value(h)) * torch.sigmoid(self.weight(h))
        return torch.sigmoid(self.out(h)).flatten(1)


def _gated_conv(d: int) -> torch.nn.Module:
    return _GatedConv(d).eval()


class _MeanLogVar(torch.nn.Module):
    """(P, d) -> (P, 784): MLP d-256-256-1568 with ELU, one head for the mean and the
    log-variance (``chunk``), the mean through a sigmoid; its weights as hand-written matrices
    (``h @ W + b``) in the middle layer."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc, self.out = nn.Linear(d, 256), nn.Linear(256, 2 * 784)
        self.w, self.b = nn.Parameter(torch.randn(256, 256) / 16), nn.Parameter(torch.zeros(256))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.elu(torch.nn.functional.elu(self.fc(z)) @ self.w + self.b)
        mu, logvar = self.out(h).chunk(2, dim=-1)
        return torch.sigmoid(mu)


def _mean_logvar_mlp(d: int) -> torch.nn.Module:
    return _MeanLogVar(d).eval()


class _FromOnePixel(torch.nn.Module):
    """(P, d) -> (P, 784), DCGAN-style: the code as a 1x1 image (``z[:, :, None, None]``), three
    transposed convolutions (7x7, 14x14, 28x28) with ELU, a sigmoid."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(
            nn.ConvTranspose2d(d, 64, 7), nn.ELU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ELU(),
            nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None]).flatten(1)


def _from_one_pixel(d: int) -> torch.nn.Module:
    return _FromOnePixel(d).eval()


class _Moved(torch.nn.Module):
    """(P, d) -> (P, 784): the codes moved to the decoder's device and cast with ``.float()``
    (``forward`` as a decoder called with codes from elsewhere writes it), then ConvTranspose2d
    from 7x7 as in the conv VAEs (ELU, sigmoid)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc = nn.Linear(d, 32 * 7 * 7)
        self.net = nn.Sequential(
            nn.ELU(), nn.Unflatten(1, (32, 7, 7)), nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ELU(),
            nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Sigmoid(), nn.Flatten(),
        )  # fmt: skip

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z.to(self.device).float()))


def _moved(d: int) -> torch.nn.Module:
    return _Moved(d).eval()


class _SpatialBroadcast(torch.nn.Module):
    """(P, d) -> (P, 784): a spatial broadcast decoder, the code copied to every position of a
    28x28 grid with two coordinate channels (a buffer) beside it, two convolutions (ELU,
    sigmoid)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        g = torch.linspace(-1, 1, 28)
        gy, gx = torch.meshgrid(g, g, indexing="ij")
        self.register_buffer("coords", torch.stack([gx, gy])[None])
        self.conv1, self.conv2 = nn.Conv2d(d + 2, 16, 3, padding=1), nn.Conv2d(16, 1, 3, padding=1)
        self.d = d

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z.view(-1, self.d, 1, 1).expand(-1, -1, 28, 28)
        h = torch.cat([h, self.coords.expand(z.shape[0], -1, -1, -1)], dim=1)
        return torch.sigmoid(self.conv2(torch.nn.functional.elu(self.conv1(h)))).flatten(1)


def _spatial_broadcast(d: int) -> torch.nn.Module:
    return _SpatialBroadcast(d).eval()


class _Probabilistic(torch.nn.Module):
    """(P, d) -> (P, 784): a conv decoder written to take one code too (``if z.dim() == 1``) and
    to return a distribution's mean (``Bernoulli(logits=...).mean``): torch.fx cannot trace it,
    torch.export can."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc = nn.Linear(d, 32 * 7 * 7)
        self.up1, self.up2 = nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ConvTranspose2d(16, 1, 4, 2, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 1:
            z = z.unsqueeze(0)
        h = torch.nn.functional.elu(self.fc(z)).view(-1, 32, 7, 7)
        logits = self.up2(torch.nn.functional.elu(self.up1(h))).flatten(1)
        return torch.distributions.Bernoulli(logits=logits).mean


def _probabilistic(d: int) -> torch.nn.Module:
    return _Probabilistic(d).eval()


class _SineMLP(torch.nn.Module):
    """(P, d) -> (P, 784): an MLP d-256-256-784 with sine activations (``torch.sin(w0 * x)``, as
    implicit decoders write them) and a sigmoid output."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, 256), nn.Linear(256, 256), nn.Linear(256, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.sin(3.0 * self.fc1(z))
        return torch.sigmoid(self.fc3(torch.sin(self.fc2(h))))


def _sine_mlp(d: int) -> torch.nn.Module:
    return _SineMLP(d).eval()


class _UnitOutputs(torch.nn.Module):
    """(P, d) -> (P, 784): an MLP d-256-256-784 (SiLU) whose hidden layer and output are
    L2-normalized (``F.normalize``), as embedding decoders write them."""

    def __init__(self, d: int) -> None:
        super().__init__()
        nn = torch.nn
        self.fc1, self.fc2, self.fc3 = nn.Linear(d, 256), nn.Linear(256, 256), nn.Linear(256, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.normalize(torch.nn.functional.silu(self.fc2(torch.tanh(self.fc1(z)))), dim=-1)
        return torch.nn.functional.normalize(self.fc3(h), dim=-1)


def _unit_outputs(d: int) -> torch.nn.Module:
    return _UnitOutputs(d).eval()


def _layers_builder(make: Callable[[int], torch.nn.Module], d: int) -> Callable[[int, int], Pair]:
    """The decoder Jacobian of a seeded ``make(d)`` at P = b N random points."""

    def build(b: int, N: int) -> Pair:
        torch.manual_seed(0)
        mean = make(d)
        z = torch.randn(b * N, d, dtype=DTYPE)
        assert recognize(mean, d) is not None, f"{make.__name__} is not recognized as a chain"
        ref, ker = (lambda: generic_jacobian_rows(mean, z)), (lambda: jacobian_rows(mean, z))
        return Pair(ref, ker, lambda: _assert_agree("jacobian", ker(), ref(), RTOL["jacobian"]))

    build.__name__ = f"{make.__name__}_d{d}"
    return build


def _sigma(b: int, N: int) -> Pair:
    prec = workloads.generator(GENERATOR)[0].precision
    params = [x.detach() for x in prec.params()]
    z = workloads.curve_points(GENERATOR, b, N).reshape(b * N, -1)
    ref = lambda: reference.rbf_sigma_jacobian(z, *params)  # noqa: E731
    ker = lambda: torch.ops.fastgeo.rbf_sigma_jacobian(z, *params)  # noqa: E731
    return Pair(ref, ker, lambda: _assert_agree("sigma", ker(), ref(), RTOL["sigma"]))


def _gauss_newton(b: int, N: int) -> Pair:
    f, jac = _features(workloads.curve_points(GENERATOR, b, N).reshape(b * N, -1))
    f, jac = f.reshape(b, N, -1), jac.reshape(b, N, jac.shape[1], -1)
    psi = fastgeo.PolynomialBasis(M)(torch.linspace(0, 1, N, dtype=DTYPE))
    ref = lambda: reference_gauss_newton_system(f, jac, psi)  # noqa: E731
    ker = lambda: torch.ops.fastgeo.gauss_newton_system(f, jac, psi, False)  # noqa: E731
    return Pair(ref, ker, lambda: _assert_agree("gauss_newton", ker(), ref(), RTOL["gauss_newton"]))


def _lm_state(b: int, N: int) -> tuple[tuple, tuple]:
    """(propose args, update args) of a real solver state: b of the solver's pairs, curves
    perturbed from the straight line, after one reference LM iteration, and its trial point."""
    z0, z1 = workloads.solver_pairs(GENERATOR, b)
    d = z0.shape[1]
    t = torch.linspace(0, 1, N, dtype=DTYPE)
    psi = fastgeo.PolynomialBasis(M)(t)
    c = 0.05 * torch.randn(b, M, d, generator=torch.Generator().manual_seed(0), dtype=DTYPE)

    def linearize(coeffs):
        f, jac = _features(evaluate(z0, z1, coeffs, psi, t).reshape(b * N, d))
        f, jac = f.reshape(b, N, -1), jac.reshape(b, N, d, -1)
        s = (f[:, 1:] - f[:, :-1]).pow(2).sum(-1)
        return 0.5 * (N - 1) * s.sum(-1), s.sqrt().sum(-1), f, jac

    e, length, f, jac = linearize(c)
    grad, hess = reference_gauss_newton_system(f, jac, psi)
    curv, lam, nu = torch.zeros_like(hess), torch.full_like(e, 1e-3), torch.full_like(e, 2.0)
    for it in range(2):  # iteration 0 moves the state on; iteration 1's inputs are the ones timed
        propose_args = (grad, hess, curv, lam, N - 1)
        step, predicted, solved = reference.lm_propose(*propose_args)
        trial = c + step.reshape(b, M, d)
        e_new, l_new, f_new, jac_new = linearize(trial)
        g_new, h_new = reference_gauss_newton_system(f_new, jac_new, psi)
        g_old_jac, _ = reference_gauss_newton_system(f_new, jac, psi, grad_only=True)
        update_args = (
            e, length, e_new, l_new, grad, g_new, g_old_jac, hess, h_new, curv, step, predicted, solved,
            lam, nu, TOL, LENGTH_TOL_FACTOR,
        )  # fmt: skip
        if it == 1:
            return propose_args, update_args
        accept, _, _, e, length, grad, hess, curv, lam, nu = reference.lm_update(*update_args)
        c = torch.where(accept[:, None, None], trial, c)
        jac = torch.where(accept[:, None, None, None], jac_new, jac)
    raise AssertionError("unreachable")


def _lm(b: int, N: int) -> Pair:
    propose_args, update_args = _lm_state(b, N)
    ops = torch.ops.fastgeo

    def ref():
        return reference.lm_propose(*propose_args), reference.lm_update(*update_args)

    def ker():
        return ops.lm_propose(*propose_args), ops.lm_update(*update_args)

    def check():
        (kp, ku), (rp, ru) = ker(), ref()
        _assert_agree("lm_propose", kp, rp, RTOL["lm"])
        _assert_agree("lm_update", ku, ru, RTOL["lm"])

    return Pair(ref, ker, check)


def _banded_builder(d: int, m: int):
    """The builder of a banded-step case: b curves of the default basis (m cubic B-splines on N
    points) at latent dimension d, the Gauss-Newton matrices of random Jacobians assembled as the
    solver does (so the band is the solver's), damping 1e-3."""

    def build(b: int, N: int) -> Pair:
        g = torch.Generator().manual_seed(d)
        psi = BSplineBasis(m)(time_grid(N, torch.zeros(1, dtype=DTYPE)))
        J = torch.randn(b, N, d, d + 3, generator=g, dtype=DTYPE)
        v = torch.randn(b, N, d, generator=g, dtype=DTYPE)
        grad, hess = assemble(v, J @ J.transpose(-1, -2), J[:, :-1] @ J[:, 1:].transpose(-1, -2), psi)
        args = (grad, hess, torch.full((b,), 1e-3, dtype=DTYPE), N - 1, d, block_bandwidth(psi))

        def ref():
            return reference.banded_lm_propose(*args)

        def ker():
            return torch.ops.fastgeo.banded_lm_propose(*args)

        return Pair(ref, ker, lambda: _assert_agree("banded_lm_propose", ker(), ref(), RTOL["lm"]))

    build.__name__ = f"_banded_d{d}"
    return build


# The banded step (plain Gauss-Newton at d >= 8, p > 64): (d, m, b, N) as in the solver's fine
# phase (m = 12 on 48 points) and after a subdivision (m = 23 on 96 points).
BANDED_SHAPES = [(8, 23, 48, 96), (16, 12, 48, 48), (32, 12, 16, 48), (64, 12, 16, 48), (128, 12, 4, 48)]
# (piece, shape label, builder, b, N). The LM bookkeeping does not depend on N (only p = M d).
P_SHAPES = [(2, 48), (48, 24), (48, 48)]  # P = 96, 1152, 2304 points
BN_SHAPES = [(b, N) for b in (2, 48, 96) for N in (24, 48)]
CASES = (
    [("decoder Jacobian", f"P={b * N} (b={b}, N={N}), d=2, D=64", _jacobian, b, N) for b, N in P_SHAPES]
    + [("decoder Jacobian, LayerNorm + GELU MLP", f"P=480 (b=10, N=48), d={d}, D=784", _norm_gelu_builder(d),
        10, 48) for d in (16, 32)]
    + [("decoder Jacobian, PixelShuffle + Mish conv", f"P=240 (b=5, N=48), d={d}, D=784",
        _layers_builder(_shuffle_mish_conv, d), 5, 48) for d in (8, 32)]
    + [("decoder Jacobian, residual conv", f"P=240 (b=5, N=48), d={d}, D=784",
        _layers_builder(_residual_conv, d), 5, 48) for d in (8, 32)]
    + [("decoder Jacobian, gated conv", f"P=240 (b=5, N=48), d={d}, D=784",
        _layers_builder(_gated_conv, d), 5, 48) for d in (8, 32)]
    + [("decoder Jacobian, mean and log-variance MLP", f"P=240 (b=5, N=48), d={d}, D=784",
        _layers_builder(_mean_logvar_mlp, d), 5, 48) for d in (8, 32)]
    + [("decoder Jacobian, conv from one pixel", f"P=96 (b=2, N=48), d={d}, D=784",
        _layers_builder(_from_one_pixel, d), 2, 48) for d in (8, 16)]
    + [("decoder Jacobian, codes moved and cast in forward", f"P=96 (b=2, N=48), d={d}, D=784",
        _layers_builder(_moved, d), 2, 48) for d in (8, 16)]
    + [("decoder Jacobian, spatial broadcast conv", f"P=96 (b=2, N=48), d={d}, D=784",
        _layers_builder(_spatial_broadcast, d), 2, 48) for d in (8, 16)]
    + [("decoder Jacobian, one code or many, a Bernoulli's mean", f"P=96 (b=2, N=48), d={d}, D=784",
        _layers_builder(_probabilistic, d), 2, 48) for d in (8, 16)]
    + [("decoder Jacobian, sine MLP", f"P=480 (b=10, N=48), d={d}, D=784",
        _layers_builder(_sine_mlp, d), 10, 48) for d in (16, 32)]
    + [("decoder Jacobian, L2-normalized MLP", f"P=480 (b=10, N=48), d={d}, D=784",
        _layers_builder(_unit_outputs, d), 10, 48) for d in (16, 32)]
    + [("decoder Jacobian, sequences with softmax", f"P=480 (b=10, N=48), d={d}, D=1050",
        _layers_builder(_sequence_softmax, d), 10, 48) for d in (8, 32)]
    + [("sigma + Jacobian", f"P={b * N} (b={b}, N={N}), d=2, K=64, D=64", _sigma, b, N) for b, N in P_SHAPES]
    + [("Gauss-Newton system", f"b={b}, N={N}, d=2, F=128, p={2 * M}", _gauss_newton, b, N)
       for b, N in BN_SHAPES]
    + [("LM propose + update", f"b={b}, p={2 * M}", _lm, b, 24) for b in (2, 48, 96)]
    + [("banded LM step", f"b={b}, m={m}, d={d}, p={m * d}", _banded_builder(d, m), b, N)
       for d, m, b, N in BANDED_SHAPES]
)  # fmt: skip

PIECES = {
    "decoder Jacobian": "jacobian_rows (stacked forward mode) vs generic_jacobian_rows (vmap of jvp)",
    "decoder Jacobian, LayerNorm + GELU MLP": "the same, MLP d-256-256-784 with LayerNorm and GELU",
    "decoder Jacobian, PixelShuffle + Mish conv": "the same, conv decoder with PixelShuffle, Mish, Hardswish",
    "decoder Jacobian, sequences with softmax": "the same, Conv1d, InstanceNorm1d, PReLU, softmax",
    "decoder Jacobian, residual conv": "the same, a conv decoder with two residual blocks",
    "decoder Jacobian, gated conv": "the same, a conv decoder with gates (swish, pixel, channel, GLU)",
    "decoder Jacobian, mean and log-variance MLP": "the same, an MLP whose one head is chunked into "
    "mean and log-variance, a hand-written layer",
    "decoder Jacobian, conv from one pixel": "the same, DCGAN-style transposed convolutions from "
    "z[:, :, None, None]",
    "decoder Jacobian, one code or many, a Bernoulli's mean": "the same, a conv decoder read from "
    "torch.export's graph (torch.fx cannot trace it)",
    "decoder Jacobian, L2-normalized MLP": "the same, an MLP d-256-256-784 with F.normalize",
    "decoder Jacobian, sine MLP": "the same, an MLP d-256-256-784 with sine activations",
    "sigma + Jacobian": "torch.ops.fastgeo.rbf_sigma_jacobian vs fastgeo.reference.rbf_sigma_jacobian",
    "Gauss-Newton system": "torch.ops.fastgeo.gauss_newton_system vs fastgeo.reference.gauss_newton_system",
    "LM propose + update": "lm_propose + lm_update (C++) vs fastgeo.reference.lm_propose + lm_update",
    "banded LM step": "torch.ops.fastgeo.banded_lm_propose (band Cholesky, C++) vs "
    "fastgeo.reference.banded_lm_propose (the band masked, batched LAPACK)",
}


@cache
def pair(index: int) -> Pair:
    """The case's calls, built once and checked once (before either side is timed)."""
    _, _, build, b, N = CASES[index]
    with torch.no_grad():
        p = build(b, N)
        p.check()
    return p


PARAMS = [  # ids usable with -k, e.g. -k "gauss_newton and b48"
    pytest.param(i, impl, id=f"{build.__name__.lstrip('_')}-b{b}-N{N}-{impl}")
    for i, (_, _, build, b, N) in enumerate(CASES)
    for impl in IMPLS
]


@pytest.fixture(scope="module", autouse=True)
def _cpu_kernels_built():
    ok, why = fastgeo.availability()["cpu"]  # also loads fastgeo._C, registering torch.ops.fastgeo
    if not ok:
        pytest.skip(f"fastgeo._C is not built: {why}")
    for op in ("rbf_sigma_jacobian", "gauss_newton_system", "lm_propose", "lm_update", "banded_lm_propose"):
        if not hasattr(torch.ops.fastgeo, op):
            pytest.skip(f"fastgeo._C was built without torch.ops.fastgeo.{op}")


@pytest.mark.parametrize("index,impl", PARAMS)
def test_solver_kernel(benchmark, index: int, impl: str) -> None:
    piece, shape, *_ = CASES[index]
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        fn = getattr(pair(index), impl)

        def step():
            with torch.no_grad():
                fn()

        for _ in range(WARMUP):
            step()
        benchmark.group = f"{piece}: {shape}"
        benchmark(step)
        env = environment("cpu")  # while the benchmark's thread count is set
    finally:
        torch.set_num_threads(threads)
    stats = benchmark.stats.stats if benchmark.stats else None
    ROWS.setdefault((piece, shape), {})[impl] = dict(
        min=stats.min if stats else None,
        median=stats.median if stats else None,
        rounds=stats.rounds if stats else None,
        iterations=benchmark.stats.iterations if stats else None,
    )
    benchmark.extra_info.update(env)
    benchmark.extra_info.update(
        piece=piece, impl=impl, shape=shape, dtype=str(DTYPE), threads=THREADS, generator=GENERATOR
    )


def _time(row: dict | None) -> str:
    if not row or row["min"] is None:
        return "-"
    return f"{1e6 * row['min']:.1f} ({1e6 * row['median']:.1f})"


def solver_kernels_table() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"{environment_line(THREADS)}, {str(DTYPE).replace('torch.', '')}, generator {GENERATOR}, "
        f"load average (1 min) {load:.2f} at the end",
        "",
        "Times in microseconds per call: min over rounds (median in parentheses); ratio = reference min "
        "/ kernel min.",
        "",
        "| piece | shape | dtype | threads | reference µs | kernel µs | ratio ref/kernel "
        "| rounds x calls ref / kernel |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (piece, shape), impls in ROWS.items():
        ref, ker = impls.get("reference"), impls.get("kernel")
        timed = ref and ker and ref["min"] is not None and ker["min"] is not None
        ratio = f"{ref['min'] / ker['min']:.2f}" if timed else "-"
        rounds = " / ".join(
            "-" if not r or r["rounds"] is None else f"{r['rounds']} x {r['iterations']}" for r in (ref, ker)
        )
        dtype = str(DTYPE).replace("torch.", "")
        lines.append(
            f"| {piece} | {shape} | {dtype} | {THREADS} | {_time(ref)} | {_time(ker)} | {ratio} | {rounds} |"
        )
    lines += ["", "Pieces (kernel vs reference):", ""]
    lines += [f"- {piece}: {what}" for piece, what in PIECES.items()]
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if ROWS:
        table = solver_kernels_table()
        out = results_dir()
        (out / "solver_kernels.md").write_text(table + "\n")
        print("\n" + table)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "--benchmark-only", "-s", *sys.argv[1:]]))
