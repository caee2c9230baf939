"""The steps of a recognized decoder chain, as data: what :mod:`fastgeo.decoders.recognize`
reads off a module and :mod:`fastgeo.decoders.forward_mode` differentiates."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Affine:
    """``x W^T + b``. The parameters are read through getters at every call, so in-place
    training shows; ``identity`` (the layer's id, or the graph's attribute names) enters the
    chain's signature."""

    weight: Callable[[], Tensor]
    bias: Callable[[], Tensor | None]
    identity: Hashable


@dataclass(frozen=True)
class Activation:
    """A pointwise activation of :data:`fastgeo.decoders.activations.ACTIVATIONS` with its
    parameters (e.g. the ELU's alpha)."""

    name: str
    params: tuple[float, ...] = ()


Step = Affine | Activation


def signature(steps: list[Step]) -> tuple[Hashable, ...]:
    """What identifies a chain's structure: layer identities and activation settings."""
    return tuple(s.identity if isinstance(s, Affine) else (s.name, s.params) for s in steps)
