"""The solver's operators: entry points of ``torch.ops.fastgeo.rbf_sigma_jacobian``,
``gauss_newton_system``, ``lm_propose`` and ``lm_update``, resolved by the registry like the
public ops (C++ kernels on CPU tensors, the reference elsewhere).

The kernels have no derivative: where autograd needs one, the differentiable reference runs.
Their arguments come from the solver and are not validated here (the kernels check shapes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from . import registry

# The C++ Levenberg-Marquardt kernels keep a curve's system in the thread's cache; larger
# systems run the reference (batched LAPACK), or the banded kernel where their band allows.
MAX_KERNEL_UNKNOWNS = 64
# Batched LAPACK rounds a matrix by its memory alignment: the reference's systems are padded to a
# multiple of this many unknowns on CPU (see _aligned_lm_propose).
ALIGN = 4


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def rbf_sigma_jacobian(
    z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> tuple[Tensor, Tensor]:
    """sigma (P, D) and its transposed Jacobian (P, d, D) in closed form: z (P, d); see
    :func:`fastgeo.reference.rbf_sigma_jacobian`."""
    compiled = not _needs_grad(z, centers, gammas, weights, zeta)
    return registry.call("rbf_sigma_jacobian", z.device, z, centers, gammas, weights, zeta, compiled=compiled)


def gauss_newton_system(
    f: Tensor, jac: Tensor, psi: Tensor, grad_only: bool = False
) -> tuple[Tensor, Tensor]:
    """Gradient (b, m d) and Gauss-Newton matrix (b, m d, m d) of ``sum_n ||f_{n+1} - f_n||^2 / 2``
    in the curve coefficients: f (b, N, F), jac (b, N, d, F), psi (N, m); see
    :func:`fastgeo.reference.gauss_newton_system`."""
    compiled = not _needs_grad(f, jac, psi)
    return registry.call("gauss_newton_system", f.device, f, jac, psi, grad_only, compiled=compiled)


@dataclass
class LMState:
    """What Levenberg-Marquardt keeps per curve: energy, length, gradient (b, p), Gauss-Newton
    matrix (b, p, p), secant curvature model (b, p, p; None: plain Gauss-Newton, no model), damping
    and its growth factor (b,)."""

    e: Tensor
    length: Tensor
    grad: Tensor
    hess: Tensor
    curv: Tensor | None
    lam: Tensor
    nu: Tensor

    def rows(self, idx: Tensor) -> LMState:
        """The state of curves ``idx``."""
        return LMState(*(_rows(getattr(self, f.name), idx) for f in fields(self)))


def _rows(x: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if x is None else x[idx]


@dataclass
class LMTrial:
    """A proposed step and what was measured at its trial point: energy, length, Gauss-Newton
    system there, the gradient there with the current Jacobians (for the secant update), the
    step (b, p), its predicted energy decrease and whether its system was solved (b,)."""

    e: Tensor
    length: Tensor
    grad: Tensor
    grad_old_jacobian: Tensor
    hess: Tensor
    step: Tensor
    predicted: Tensor
    solved: Tensor


def lm_propose(
    grad: Tensor,
    hess: Tensor,
    curv: Tensor | None,
    lam: Tensor,
    segments: int,
    banded: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Damped step (b, p), predicted decrease (b,), solved (b,) bool; see
    :func:`fastgeo.reference.lm_propose`. ``curv`` None: no secant model (zero).

    banded: (block, band) where ``curv`` is zero and ``hess`` block-banded (blocks of ``block``
    unknowns, half-bandwidth ``band`` blocks): systems too large for the dense kernels are then
    solved by ``banded_lm_propose`` (``curv`` is not read there)."""
    p = grad.shape[-1]
    if banded is not None and _takes_banded(p, grad.device, *banded):
        block, band = banded
        return registry.call("banded_lm_propose", grad.device, grad, hess, lam, segments, block, band)
    if curv is None:
        curv = torch.zeros_like(hess)
    compiled = p <= MAX_KERNEL_UNKNOWNS
    if not compiled and p % ALIGN and grad.device.type == "cpu":
        return _aligned_lm_propose(grad, hess, curv, lam, segments)
    return registry.call("lm_propose", grad.device, grad, hess, curv, lam, segments, compiled=compiled)


def _aligned_lm_propose(
    grad: Tensor, hess: Tensor, curv: Tensor, lam: Tensor, segments: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The reference's step with the systems padded to a multiple of ALIGN unknowns: batched
    LAPACK rounds a matrix by its memory alignment, so (b, p, p) systems with p % ALIGN != 0 gave
    a curve steps that depended on its place in the batch. The padding is decoupled (zero gradient,
    a diagonal equal to the system's largest, which keeps the damping's floor): its step is zero."""
    b, p = grad.shape
    q = -p % ALIGN
    grad_a = torch.nn.functional.pad(grad, (0, q))
    hess_a = torch.nn.functional.pad(hess, (0, q, 0, q))
    diag = torch.diagonal(hess, dim1=-2, dim2=-1).amax(-1, keepdim=True)
    torch.diagonal(hess_a, dim1=-2, dim2=-1)[:, p:] = torch.where(diag > 0, diag, 1.0)
    curv_a = torch.nn.functional.pad(curv, (0, q, 0, q))
    step, predicted, solved = registry.call(
        "lm_propose", grad.device, grad_a, hess_a, curv_a, lam, segments, compiled=False
    )
    return step[:, :p], predicted, solved


def _takes_banded(p: int, device: torch.device, block: int, band: int) -> bool:
    """The banded step where it pays: CPU systems too large for the dense kernels, whose band is
    narrower than the matrix."""
    return device.type == "cpu" and p > MAX_KERNEL_UNKNOWNS and p % block == 0 and 2 * band + 1 < p // block


def lm_update(
    state: LMState, trial: LMTrial, tol: float, length_tol_factor: float
) -> tuple[Tensor, Tensor, Tensor, LMState]:
    """Accept or reject each trial point and update the state: accept (b,) bool, status (b,) int8
    (0 iterating, 1 converged, 2 stalled), ok (b,) bool, and the new :class:`LMState`; see
    :func:`fastgeo.reference.lm_update`. A state without a secant model (``curv`` None) needs
    trials without one (``grad_old_jacobian`` is ``grad``: nothing to learn) and stays without."""
    s, t = state, trial
    plain = s.curv is None
    if plain and t.grad_old_jacobian is not t.grad:
        raise ValueError("a state without a secant model needs trials with grad_old_jacobian = grad")
    compiled = s.grad.shape[-1] <= MAX_KERNEL_UNKNOWNS
    # The kernels take a matrix (zero: the update keeps it zero); the reference takes None.
    curv = torch.zeros_like(s.hess) if plain and compiled else s.curv
    args = (
        s.e,
        s.length,
        t.e,
        t.length,
        s.grad,
        t.grad,
        t.grad_old_jacobian,
        s.hess,
        t.hess,
        curv,
        t.step,
        t.predicted,
        t.solved,
        s.lam,
        s.nu,
        tol,
        length_tol_factor,
    )
    accept, status, ok, *new = registry.call("lm_update", s.e.device, *args, compiled=compiled)
    state = LMState(*new)
    if plain:
        state.curv = None
    return accept, status, ok, state
