"""Smooth stand-ins of decoders with piecewise-linear activations.

A chain of affine layers and ReLU / LeakyReLU / PReLU / Hardtanh / ReLU6 is piecewise linear: its
Jacobian jumps wherever a unit switches, and the discrete energy of a curve has kinks there.
Levenberg-Marquardt started from the straight line stops in such kinks, short of the shortest
curve. The same chain with every kink rounded (``softplus_beta`` in place of ``max(0, x)``) is
smooth (Hardswish's two kinks alike); the solver first optimizes the curve under it and then
under the true decoder (:mod:`fastgeo.solver.smoothing`).

The rounding is relative to each activation's input: ``beta = SHARPNESS / rms`` with ``rms`` the
root mean square of that layer's pre-activations at probe points (the data), so a decoder whose
pre-activations are ten times larger is rounded alike.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .activations import ACTIVATIONS, PIECEWISE_LINEAR, SOFT_THRESHOLD
from .layers import IN_PLACE, apply, prelu
from .stack import stack_dim
from .steps import Activation, Branches, PReLU, Step

# beta times the pre-activations' RMS: 20 rounds each kink over ~5 % of a unit's typical input.
# The solver's stages choose their own (fastgeo.solver.smoothing.STAGES; 20, 40 and 80 compared in
# bench/RESULTS.md, "Piecewise-linear decoders, smoothed first"); this is the default of a call.
SHARPNESS = 20.0


def smooth_activation(step: Activation, beta: float) -> Activation:
    """The smooth stand-in of a piecewise-linear activation, its kinks rounded by ``beta``."""
    if step.name == "relu":
        return Activation("softplus", (beta, SOFT_THRESHOLD))
    if step.name == "leaky_relu":
        return Activation("soft_leaky_relu", (step.params[0], beta))
    if step.name == "hardtanh":
        return Activation("soft_hardtanh", (*step.params, beta))
    if step.name == "hardswish":
        return Activation("soft_hardswish", (beta,))
    raise ValueError(f"{step.name!r} is not a piecewise-linear activation")


def smooth_steps(steps: list[Step], probe: Tensor, sharpness: float | None = None) -> list[Step]:
    """``steps`` with each piecewise-linear activation replaced by its smooth stand-in, rounded
    relative to the RMS of its input at ``probe`` (P, d) points (read on the true chain);
    ``sharpness``: default :data:`SHARPNESS`."""
    sharpness = SHARPNESS if sharpness is None else sharpness
    with torch.no_grad():
        return list(_smooth(tuple(steps), probe.detach()[None].clone(), sharpness))


def _smooth(steps: tuple[Step, ...], x: Tensor, sharpness: float) -> tuple[Step, ...]:
    """The steps smoothed, their inputs read from the stack x (1, P, ...) (updated in place)."""
    smooth: list[Step] = []
    for step in steps:
        kinked = isinstance(step, Activation) and step.name in PIECEWISE_LINEAR
        if kinked or isinstance(step, PReLU) and step.beta is None:
            rms = float(x[0].pow(2).mean().sqrt())
            beta = sharpness / rms if rms > 0 and rms < float("inf") else sharpness
            smooth.append(smooth_activation(step, beta) if kinked else dataclasses.replace(step, beta=beta))
        elif isinstance(step, Branches):
            first, second = (_smooth(chain, x.clone(), sharpness) for chain in (step.first, step.second))
            smooth.append(dataclasses.replace(step, first=first, second=second))
        else:
            smooth.append(step)
        x = apply(step, x)
    return tuple(smooth)


class SmoothedChain(nn.Module):
    """A chain of steps as a module: (P, d) -> (P, F), differentiable by autograd. The steps
    read the original decoder's parameters at every call (no copies)."""

    def __init__(self, steps: list[Step]) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, z: Tensor) -> Tensor:
        return _value(self.steps, z[None].clone())[0]  # a stack (1, P, d) of the value alone


def _value(steps: list[Step] | tuple[Step, ...], x: Tensor) -> Tensor:
    """The steps on the value stack x (1, P, ...), differentiably: activations out of place
    (autograd keeps their input), each branch on its own copy, steps that work in place on a copy
    (autograd may keep their input: the output of a sigmoid, tanh or ELU)."""
    for step in steps:
        if isinstance(step, Activation):
            x = ACTIVATIONS[step.name](x, *step.params)[0]
        elif isinstance(step, PReLU):
            x = prelu(step, x[0])[0][None]
        elif isinstance(step, Branches):
            a, b = _value(step.first, x.clone()), _value(step.second, x.clone())
            if step.join == "cat":
                x = torch.cat([a, b], stack_dim(step.dim))
            else:
                x = a * b if step.join == "product" else a + b
        else:
            x = apply(step, x.clone() if isinstance(step, IN_PLACE) else x)
    return x
