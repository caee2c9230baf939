"""The stacked forward mode: a recognized chain's value and its directional derivatives along
any k directions per point, in one pass.

The solver needs the decoder's value and its ``d`` directional derivatives at thousands of
points per iteration. For chains of layers applied point by point
(:mod:`fastgeo.decoders.recognize`) the value and the k tangents of a layer are stacked into
one (k+1, P, ...) tensor: each linear or convolutional layer is a single GEMM or convolution of
(k+1) P inputs, each activation one pass that also yields its derivative
(:mod:`fastgeo.decoders.layers`). Against ``torch.func.jvp`` under ``vmap``, all d directions
at P = 768 points, float32, one CPU thread: 2.4x for a 28x28 deconvolutional decoder (d = 8),
3.7x for a 64x64x3 one (d = 32), 1.8x for an MLP 16-256-256-784.

The structure is read at every call (cheaply: custom modules are traced once per fingerprint),
so later changes to layers, their settings or hooks are seen; a structure is checked against
the callable itself on a probe when first seen and once in every later use of the library (what
a decoder reads may change unseen between uses), with a fallback to ``torch.func`` on a
mismatch.
An error raised by the decoder itself on the probe is the user's and propagates.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from .. import _mean_checks
from .generic import check_value, generic_value_and_tangents
from .layers import Peak, run
from .recognize import forget, recognize
from .steps import LAYERS, Step, walk
from .uses import current_use, in_one_use

# Bytes of the widest stacked activation of one chunk of points, per device type (others: 1 GiB):
# on CPU, chunks that stay in cache are ~25 % faster than one pass (measured: 4 MiB best, 2-16 MiB
# within 5 %, for MNIST and 64x64x3 conv decoders; MLPs insensitive); elsewhere only memory counts.
CHUNK_BYTES = {"cpu": 1 << 22}
# Rows of a block of the matrix products: a point's result depends on its row's place in a block
# (BLAS kernels round a partial block of rows differently), so chunks of points start at multiples
# of it, where the point would be in one pass: a curve's Jacobians then do not depend on its batch.
ROW_ALIGN = 8


class StackedChain:
    """A decoder recognized as a chain of steps applied point by point: its value, and its
    derivatives along any directions by stacked forward mode. Parameters are read at call
    time, so in-place training shows. ``widest``: elements per point held at once, the widest
    step output or, in a residual block, a branch's stacks with those it waits beside (known
    after a first call): it sizes the chunks of points."""

    def __init__(self, steps: list[Step], widest: int | None = None) -> None:
        self.steps = steps
        self.widest = widest

    def value_and_tangents(
        self, z: Tensor, tangents: Tensor, tangent_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """z (P, d), tangents (k, P, d) -> value (P, F), J(z_p) t_{i,p} (k, P, F), in z's dtype.
        ``tangent_dtype`` (e.g. bfloat16): the tangents are pushed in it, the value apart in z's
        (:mod:`fastgeo.decoders.low_precision`)."""
        k = tangents.shape[0]
        if tangent_dtype is None or tangent_dtype == z.dtype or k == 0:
            return self._by_chunks(torch.cat([z[None], tangents]))  # ours: steps work in place
        value, _ = self._by_chunks(z[None].clone())
        _, out = self._by_chunks(torch.cat([z[None], tangents]).to(tangent_dtype))
        out = out.to(z.dtype)
        if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(value).all()):
            # the lower dtype's range ran out (a float64 decoder's values or constants beyond
            # float32's and bfloat16's ~3e38): the tangents in z's own dtype
            return value, self._by_chunks(torch.cat([z[None], tangents]))[1]
        return value, out

    def _by_chunks(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The steps on the stack x (k+1, P, d), a few points at a time (updated in place):
        value (P, F) and tangents (k, P, F)."""
        k, P = x.shape[0] - 1, x.shape[1]
        rows = P
        if self.widest is not None:
            budget = CHUNK_BYTES.get(x.device.type, 1 << 30)
            rows = budget // ((k + 1) * self.widest * x.element_size())
            rows = max(ROW_ALIGN, rows - rows % ROW_ALIGN)
        if rows >= P:
            y = self._stacked(x)
            return y[0], y[1:]
        value = out = None
        for start in range(0, P, rows):
            y = self._stacked(x[:, start : start + rows].contiguous())
            if value is None:
                value = y.new_empty(P, *y.shape[2:])
                out = y.new_empty(k, P, *y.shape[2:])
            value[start : start + rows] = y[0]
            out[:, start : start + rows] = y[1:]
        return value, out

    def value_and_jacobian_rows(
        self, z: Tensor, tangent_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """z (P, d) -> value (P, F), jacobian (d, P, F) (row i: derivative along z_i)."""
        return self.value_and_tangents(z, _axes(z), tangent_dtype)

    def __call__(self, z: Tensor) -> Tensor:
        """The chain's value alone, by the same steps (k = 0): z (P, d) -> (P, F)."""
        return self._stacked(z[None].clone())[0]

    def _stacked(self, x: Tensor) -> Tensor:
        """The steps on a stack (k+1, P, d) -> (k+1, P, F), value block first; x is updated in
        place (a tensor of the caller's own)."""
        peak = Peak()
        x = run(self.steps, x, peak)
        self.widest = peak.most
        return x


def _axes(z: Tensor) -> Tensor:
    """The d coordinate directions at every point of z (P, d): (d, P, d)."""
    P, d = z.shape
    return torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, P, d)


# fn -> (structure key, widest or _MISMATCH if the structure is not the chain it looks like, the
# last uses (fastgeo.decoders.uses) it was checked in with that outcome, whether a mismatch was of
# steps read afresh)
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MISMATCH = -1
RECENT_USES = 8  # threads solving at once with one decoder: each its use, checked once


def stacked_chain(fn: Callable[[Tensor], Tensor], probe: Tensor) -> StackedChain | None:
    """The :class:`StackedChain` of ``fn`` if it is one, else None.

    A structure is checked against ``fn`` itself on ``probe`` (P, d) when it is first seen, and
    again at its first evaluation in each later use (:mod:`fastgeo.decoders.uses`): errors of
    ``fn`` there (or an output that is not (P, F)) propagate; a chain that fails or disagrees
    is not one (None). Steps that disagree are read afresh once (kept steps may have been read
    before the decoder changed in a way its key does not see); a structure read afresh that
    still disagrees is only checked again in later uses, not read again.
    """
    found = recognize(fn, probe.shape[-1])
    if found is None or not any(isinstance(s, LAYERS) for s in walk(found[0])):
        return None
    steps, key = found
    use = current_use()
    try:
        known, widest, checked_in, read_afresh = _CHECKED[fn]
    except (KeyError, TypeError):
        known, widest, checked_in, read_afresh = None, None, (), None
    if known == key and use in checked_in:
        return None if widest == _MISMATCH else StackedChain(steps, widest)
    with torch.no_grad(), _mean_checks.TRACING:  # (not while another thread traces a decoder)
        expected = check_value(fn(probe), probe)  # the decoder's own errors are the user's
    chain = _agreeing(steps, probe, expected)
    fresh = known == key and widest == _MISMATCH and read_afresh
    if chain is None and not fresh:
        forget(fn)  # read what the decoder is now
        found = recognize(fn, probe.shape[-1])
        if found is not None and any(isinstance(s, LAYERS) for s in walk(found[0])):
            steps, key = found
            chain = _agreeing(steps, probe, expected)
        fresh = True
    outcome = _MISMATCH if chain is None else chain.widest
    same = known == key and widest == outcome
    uses = (*checked_in[1 - RECENT_USES :], use) if same else (use,)
    try:
        _CHECKED[fn] = (key, outcome, uses, fresh)
    except TypeError:  # not weak-referenceable: checked again next time
        pass
    return chain


def _agreeing(steps: list[Step], probe: Tensor, expected: Tensor) -> StackedChain | None:
    """The chain of ``steps`` if its values on ``probe`` are ``expected`` (to 1e-4 of their
    largest magnitude: relative, so that a decoder of small outputs, 1e-4 in its units, is not
    taken for a wrong chain's), else None."""
    chain = StackedChain(steps)
    try:
        with torch.no_grad():
            got = chain(probe)
        tiny = torch.finfo(expected.dtype).tiny
        scale = expected.abs().amax().clamp(min=tiny) if expected.numel() else 1
        ok = got.shape == expected.shape and bool(((got - expected).abs() <= 1e-4 * scale).all())
    except Exception:  # noqa: BLE001 - the steps fail where fn does not: not the chain we thought
        ok = False
    return chain if ok else None


@in_one_use
def value_and_tangents(
    fn: Callable[[Tensor], Tensor], z: Tensor, tangents: Tensor, tangent_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its derivatives along per-point directions: z (P, d), tangents (k, P, d)
    -> value (P, F), out (k, P, F) with ``out[i, p] = J(z_p) tangents[i, p]`` (k may differ from
    d).

    fn maps (P, d) -> (P, F) point by point. Recognized chains take the stacked forward mode;
    anything else :func:`fastgeo.decoders.generic.generic_value_and_tangents`. With P = 0, fn
    is called on one code only (for F). Errors of fn
    itself propagate; ValueError if its output is not (P, F). ``tangent_dtype``: recognized
    chains push the tangents in it (:meth:`StackedChain.value_and_tangents`); ``torch.func``
    ignores it.
    """
    if z.dim() != 2 or tangents.dim() != 3 or tangents.shape[1:] != z.shape:
        shapes = f"{tuple(z.shape)} and {tuple(tangents.shape)}"
        raise ValueError(f"expected z (P, d) and tangents (k, P, d), got {shapes}")
    tangents = tangents.to(z.dtype)
    if z.shape[0] == 0:  # not every decoder takes an empty batch (instance norm raises): F from one code
        with torch.no_grad():
            width = check_value(fn(z.new_zeros(1, z.shape[1])), z.new_zeros(1, z.shape[1])).shape[1]
        return z.new_empty(0, width), z.new_empty(tangents.shape[0], 0, width)
    chain = stacked_chain(fn, z[:4].detach())
    if chain is not None:
        with torch.no_grad():
            return chain.value_and_tangents(z.detach(), tangents.detach(), tangent_dtype)
    return generic_value_and_tangents(fn, z, tangents)


def activation_width(fn: Callable[[Tensor], Tensor], probe: Tensor) -> int | None:
    """Elements per point of the widest activation of ``fn`` where it is a recognized chain
    (checked on ``probe`` (P, d) like :func:`stacked_chain`), else None (unknown)."""
    chain = stacked_chain(fn, probe) if probe.shape[0] > 0 else None
    return None if chain is None else chain.widest


@in_one_use
def jacobian_rows(
    fn: Callable[[Tensor], Tensor], z: Tensor, tangent_dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """``fn(z)`` and its Jacobian, directions first: z (P, d) -> value (P, F), jacobian (d, P, F)
    (row i: the derivative along z_i). :func:`value_and_tangents` along the d axes."""
    if z.dim() != 2:
        raise ValueError(f"expected z (P, d), got {tuple(z.shape)}")
    return value_and_tangents(fn, z, _axes(z), tangent_dtype)


# The names of the MLP-only forward mode this one grew out of.
MLPChain = StackedChain
mlp_chain = stacked_chain
