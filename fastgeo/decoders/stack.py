"""The layout of a stacked value and its tangents, ``x`` (k+1, P, *shape): block 0 the value at P
points, blocks 1..k the tangents; helpers every step of :mod:`fastgeo.decoders.layers` uses."""

from __future__ import annotations

from torch import Tensor


def like(p: Tensor | None, x: Tensor) -> Tensor | None:
    """A parameter in the stack's dtype (tangents may be pushed in bfloat16)."""
    return p if p is None or p.dtype == x.dtype else p.to(x.dtype)


def batch(x: Tensor) -> Tensor:
    """(k+1, P, *shape) -> ((k+1) P, *shape), a view."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def unbatch(y: Tensor, x: Tensor) -> Tensor:
    """((k+1) P, *shape') -> (k+1, P, *shape'), with the blocks of x."""
    return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


def channels(v: Tensor, x: Tensor) -> Tensor:
    """A per-channel vector (C,) shaped to broadcast over the (C, *spatial) points of x."""
    return v.reshape(-1, *(1,) * (x.dim() - 3))


def stack_dim(dim: int) -> int:
    """A dim of the batch (P, ...) as a dim of the stack (k+1, P, ...)."""
    return dim + 1 if dim >= 0 else dim
