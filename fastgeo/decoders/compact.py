"""A chain's compact stand-in for distances: a decoder mean whose last layer is linear and
widens (a Gaussian decoder's output layer, 256 -> 784 or -> 2,000 genes) enters the metric only
through differences of its values, ``||W (h_a - h_b)||``, and ``||W v|| = ||R v||`` for the
triangular factor R (in, in) of ``W = Q R``. The stand-in ends with R instead of W (its bias
dropped: it cancels in differences): the same segment lengths to rounding, the tangents of its
last layer out / in times cheaper, and every Gauss-Newton product over in values instead of out.

The last :class:`~fastgeo.decoders.steps.Affine` step may be followed by steps affine per point
(reshapes, rearranged axes, constant or per-output scales and shifts: ``x * self.std +
self.mean`` back to data units); their linear part L joins W (R factors ``L W``: W's columns
pushed through them as tangents), their shifts cancel. The stand-in's values are flat, and it is
checked once per structure against the mean's differences. A mean ending in an activation (a
sigmoid over pixels) has no stand-in.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable

import torch
from torch import Tensor

from .forward_mode import StackedChain
from .layers import run
from .steps import Affine, Axes, ByTensor, Flatten, Reshape, Scale, Step, Unflatten, signature

# False: every mean as it is (benchmarks compare the two; the stand-in changes no result beyond
# rounding).
COMPACT = True
# Steps after the last layer that are affine per point.
TAIL = (Flatten, Unflatten, Reshape, Axes, Scale, ByTensor)
# Triangular factors kept (by weight content); a decoder has one last layer, a process a few.
KEPT = 4
# The check of a stand-in: squared differences of its values within this of the mean's.
CHECK_RTOL = 1e-4

_factors: list[tuple[Tensor, Tensor]] = []  # (weight copy, R), most recent first
_lock = threading.Lock()


def triangular_factor(weight: Tensor) -> Tensor:
    """R (in, in), upper triangular with ``R^T R = W^T W``, for ``weight`` (out, in), in its dtype
    (computed in float64 from the weight, so no worse than the products with W it stands for).
    Kept by content: a weight changed in place, or computed afresh by a hook, gets its own."""
    w = weight.detach()
    with _lock:
        for i, (kept, r) in enumerate(_factors):
            same_kind = kept.shape == w.shape and kept.dtype == w.dtype and kept.device == w.device
            if same_kind and torch.equal(kept, w):
                _factors.insert(0, _factors.pop(i))
                return r
    r = torch.linalg.qr(w.to(torch.float64), mode="r")[1].to(w.dtype)
    with _lock:
        _factors.insert(0, (w.clone(), r))
        del _factors[KEPT:]
    return r


def compact_steps(steps: list[Step]) -> list[Step] | None:
    """``steps`` with a widening last affine step (and the affine steps after it) replaced by the
    triangular factor (see the module), or None where the chain does not end so (or with COMPACT
    off)."""
    if not COMPACT:
        return None
    last = len(steps) - 1
    while last >= 0 and isinstance(steps[last], TAIL):
        last -= 1
    if last < 0 or not isinstance(steps[last], Affine):
        return None
    step, tail = steps[last], steps[last + 1 :]
    weight = step.weight()
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] <= weight.shape[1]:
        return None

    def factor() -> Tensor:
        return triangular_factor(_through(tail, step.weight()))

    return [*steps[:last], Affine(factor, lambda: None, ("compact", step.identity)), Flatten(1, -1)]


def _through(tail: list[Step], weight: Tensor) -> Tensor:
    """The linear part of ``tail`` applied to the columns of ``weight`` (out, in): (out', in). The
    columns go through as the tangents of one point whose value is zero (shifts reach the value
    block alone)."""
    if not tail:
        return weight
    out, n = weight.shape
    stack = torch.cat([weight.new_zeros(1, out), weight.detach().T]).reshape(n + 1, 1, out)
    return run(tail, stack)[1:].reshape(n, -1).T


# mean -> {structure: whether its stand-in passed the check}
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compact_chain(
    chain: StackedChain, mean: Callable[[Tensor], Tensor] | None = None, probe: Tensor | None = None
) -> StackedChain | None:
    """The compact stand-in of a recognized chain (its values (P, F') with F' < F, isometric in
    differences), or None where there is none. With ``mean`` (the decoder the chain was
    recognized from) and ``probe`` (P >= 2, d), the stand-in is checked once per structure: the
    squared differences of its values between the probe's points equal the mean's (within
    CHECK_RTOL); one that fails, or whose tail does not take W's columns (a last layer applied
    along an axis of several), is not used."""
    steps = compact_steps(chain.steps)
    if steps is None:
        return None
    compact = StackedChain(steps, chain.widest)
    if mean is None or probe is None:
        return compact
    key: Hashable = signature(chain.steps)
    try:
        known = _CHECKED.get(mean, {})
    except TypeError:  # not weak-referenceable: checked every time
        known = {}
    if key not in known:
        known[key] = _isometric(compact, mean, probe)
        try:
            _CHECKED.setdefault(mean, {})[key] = known[key]
        except TypeError:
            pass
    return compact if known[key] else None


def _isometric(compact: StackedChain, mean: Callable[[Tensor], Tensor], probe: Tensor) -> bool:
    """Whether the stand-in's differences between the points of ``probe`` have the mean's
    lengths (and it runs at all)."""
    with torch.no_grad():
        try:
            e = compact(probe)
        except (RuntimeError, ValueError, IndexError):
            return False
        mu = mean(probe).reshape(probe.shape[0], -1)
    if e.dim() != 2 or e.shape[0] != probe.shape[0]:
        return False
    de = torch.cdist(e.double(), e.double()).pow(2)
    dmu = torch.cdist(mu.double(), mu.double()).pow(2)
    return bool(
        ((de - dmu).abs() <= CHECK_RTOL * dmu.amax().clamp(min=torch.finfo(torch.float64).tiny)).all()
    )
