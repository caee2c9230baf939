"""A chain's compact stand-in for distances: a decoder mean whose last layer is linear and
widens (a Gaussian decoder's output layer, 256 -> 784 or -> 2,000 genes) enters the metric only
through differences of its values, ``||W (h_a - h_b)||``, and ``||W v|| = ||R v||`` for the
triangular factor R (in, in) of ``W = Q R``. The stand-in ends with R instead of W (its bias
dropped: it cancels in differences): the same segment lengths to rounding, the tangents of its
last layer out / in times cheaper, and every Gauss-Newton product over in values instead of out.

Only a last :class:`~fastgeo.decoders.steps.Affine` step, followed by nothing but reshapes or
rearranged axes (which keep a point's norm; the stand-in's values are flat instead), is replaced;
a mean ending in an activation (a sigmoid over pixels) has no such stand-in.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from .forward_mode import StackedChain
from .steps import Affine, Axes, Flatten, Reshape, Step, Unflatten

# False: every mean as it is (benchmarks compare the two; the stand-in changes no result beyond
# rounding).
COMPACT = True
# Steps after the last layer that keep every point's Euclidean norm.
NORM_KEEPING = (Flatten, Unflatten, Reshape, Axes)
# Triangular factors kept (by weight content); a decoder has one last layer, a session a few.
KEPT = 4

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
    """``steps`` with a widening last affine step replaced by its triangular factor (see the
    module), or None where the chain does not end so (or with COMPACT off)."""
    if not COMPACT:
        return None
    last = len(steps) - 1
    while last >= 0 and isinstance(steps[last], NORM_KEEPING):
        last -= 1
    if last < 0 or not isinstance(steps[last], Affine):
        return None
    step = steps[last]
    weight = step.weight()
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] <= weight.shape[1]:
        return None
    factor = Affine(lambda: triangular_factor(step.weight()), lambda: None, ("compact", step.identity))
    # The reshapes after it expect out values per row: the stand-in's values stay flat instead.
    return [*steps[:last], factor, Flatten(1, -1)]


def compact_chain(chain: StackedChain) -> StackedChain | None:
    """The compact stand-in of a recognized chain (its values (P, F') with F' < F, isometric in
    differences), or None where there is none."""
    steps = compact_steps(chain.steps)
    return None if steps is None else StackedChain(steps, chain.widest)
