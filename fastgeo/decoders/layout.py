"""Channels-last images for the plain forward (and backward) pass of a decoder mean on CPU.

oneDNN convolves channels-last images 2-3x faster on CPU than contiguous ones (the stacked
forward mode, :mod:`.layers`, converts its own), and the layout then carries through pointwise
layers and later convolutions. A decoder's own ``forward`` is called on contiguous images from
its first reshape on; :func:`channels_last` converts the input of each 2-D convolution for the
duration of a call, through forward pre-hooks removed afterwards (the user's module is left as
it was); the hooks convert in the thread that placed them only, so that a call of another thread
on the same module (the user's own, or another solve's plain call) is not changed by them (589 of
600 such calls were converted). Values are the same up to rounding, and gradients flow through
the conversion.

A decoder that handles a channels-last image differently (``view`` on it raises; custom code
may branch on strides) is not converted: whether it can is checked once per module, on a few
points, against the plain call.
"""

from __future__ import annotations

import contextlib
import threading
import types
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .flat import FlatOutput

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
# How close the converted call must come to the plain one on the check's points.
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5

_verdicts: weakref.WeakKeyDictionary[Callable[[Tensor], Tensor], bool] = weakref.WeakKeyDictionary()
_converting = threading.local()  # .depth: channels-last blocks open in this thread


def _to_channels_last(module: nn.Module, args: tuple) -> tuple | None:
    if not getattr(_converting, "depth", 0):
        return None  # another thread's hook
    x = args[0] if args else None
    if isinstance(x, Tensor) and x.dim() == 4 and x.device.type == "cpu":
        return (x.contiguous(memory_format=torch.channels_last), *args[1:])
    return None


@contextlib.contextmanager
def _hooked(convolutions: list[nn.Module]) -> Iterator[None]:
    handles = [conv.register_forward_pre_hook(_to_channels_last) for conv in convolutions]
    _converting.depth = getattr(_converting, "depth", 0) + 1
    try:
        yield
    finally:
        _converting.depth -= 1
        for handle in handles:
            handle.remove()


def _convolutions(mean: object) -> list[nn.Module]:
    """The 2-D convolutions of ``mean``: a module, or a method of one (``vae.decode``), maybe
    returning images (:class:`FlatOutput`)."""
    if type(mean) is FlatOutput:
        mean = mean.mean
    if isinstance(mean, types.MethodType):
        mean = mean.__self__
    if not isinstance(mean, nn.Module):
        return []
    return [m for m in mean.modules() if isinstance(m, CONVOLUTIONS)]


def _converts(mean: Callable[[Tensor], Tensor], convolutions: list[nn.Module], z: Tensor) -> bool:
    """Whether the mean gives the same values with channels-last convolutions on a few points."""
    probe = z[:4].detach()
    with torch.no_grad():
        plain = mean(probe)  # a decoder that raises raises here, to the caller
        try:
            with _hooked(convolutions):
                converted = mean(probe)
        except RuntimeError:
            return False
    return (
        isinstance(plain, Tensor)
        and isinstance(converted, Tensor)
        and plain.shape == converted.shape
        and bool(torch.allclose(converted, plain, rtol=CHECK_RTOL, atol=CHECK_ATOL, equal_nan=True))
    )


@contextlib.contextmanager
def channels_last(mean: object, z: Tensor) -> Iterator[None]:
    """Within the block, the 2-D convolutions of ``mean`` (an ``nn.Module`` or a method of one)
    take channels-last inputs when called on CPU points like ``z`` (P, d), if the mean allows it
    (checked once)."""
    convolutions = _convolutions(mean) if z.device.type == "cpu" and z.shape[0] > 0 else []
    if not convolutions:
        yield
        return
    verdict = _verdicts.get(mean)
    if verdict is None:
        verdict = _verdicts[mean] = _converts(mean, convolutions, z)
    if not verdict:
        yield
        return
    with _hooked(convolutions):
        yield
