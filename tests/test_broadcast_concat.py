"""Codes spread over an image and tensors of the decoder's own beside them: a spatial broadcast
decoder (``z.view(-1, d, 1, 1).expand(-1, -1, H, W)`` with coordinate channels, a buffer expanded
along the batch and concatenated), a code tiled by ``repeat``, a fixed condition held by the
decoder (``torch.cat([z, self.y.expand(len(z), -1)], 1)``, before or after the code). Traced and
exported, each is recognized as a chain whose values and directional derivatives equal
forward-mode AD; in-place changes of the operand show; copies that are not along the batch alone
are not a chain.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import randn
from tangent_checks import F32_TOL, check, check_forms, init_
from torch import nn

from fastgeo.decoders.recognize import recognize
from fastgeo.decoders.steps import Broadcast, Concat, walk

D_LAT = 3


class SpatialBroadcast(nn.Module):
    """The code copied to every position of a 6x6 grid, two coordinate channels beside it."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.linspace(-1, 1, 6)
        gy, gx = torch.meshgrid(g, g, indexing="ij")
        self.register_buffer("coords", torch.stack([gx, gy])[None])
        self.conv1, self.conv2 = nn.Conv2d(D_LAT + 2, 4, 3, padding=1), nn.Conv2d(4, 1, 3)

    def forward(self, z):
        h = z.view(-1, D_LAT, 1, 1).expand(-1, -1, 6, 6)
        h = torch.cat([h, self.coords.expand(z.shape[0], -1, -1, -1)], dim=1)
        return self.conv2(F.elu(self.conv1(h))).flatten(1)


class Tiled(nn.Module):
    """The code as a 1x1 image tiled to 4x4 by ``repeat``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(D_LAT, 2, 3)

    def forward(self, z):
        return torch.tanh(self.conv(z[:, :, None, None].repeat(1, 1, 4, 4))).flatten(1)


class Conditioned(nn.Module):
    """A conditional decoder held at one class: its one-hot condition a buffer, copied along
    the batch by ``expand(len(z), -1)`` (after the code) or ``repeat(z.size(0), 1)`` (before)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.register_buffer("y", F.one_hot(torch.tensor([1]), 4).float())
        self.fc, self.out = nn.Linear(D_LAT + 4, 8), nn.Linear(8, 5)
        self.how = how

    def forward(self, z):
        if self.how == "expand":
            zy = torch.cat([z, self.y.expand(len(z), -1)], 1)
        else:
            zy = torch.cat((self.y.repeat(z.size(0), 1), z), dim=-1)
        return self.out(torch.tanh(self.fc(zy)))


DECODERS = {
    "spatial_broadcast": SpatialBroadcast, "tiled": Tiled,
    "condition_expand": lambda: Conditioned("expand"), "condition_repeat": lambda: Conditioned("repeat"),
}  # fmt: skip


def _found(fn, z) -> bool:
    found = recognize(fn)
    return found is not None and any(isinstance(s, (Broadcast, Concat)) for s in walk(found[0]))


@pytest.mark.parametrize("name", list(DECODERS))
def test_traced_exported_and_float32(name):
    torch.manual_seed(0)
    model = init_(DECODERS[name]())
    if name == "condition_expand":  # torch.export specializes len(z): traced only
        z = randn(7, D_LAT, seed=1, scale=1.5)
        assert _found(model, z)
        check(model, z)
        check(copy.deepcopy(model).float(), randn(9, D_LAT, dtype=torch.float32, seed=3), rtol=F32_TOL)
        return
    check_forms(model, D_LAT, _found)


def test_the_operand_changed_in_place_shows():
    torch.manual_seed(0)
    model = init_(Conditioned("repeat"))
    z = randn(5, D_LAT, seed=2)
    check(model, z)
    with torch.no_grad():
        model.y.copy_(F.one_hot(torch.tensor([3]), 4).double())
    check(model, z)


class NotAlongTheBatch(nn.Module):
    """A buffer tiled along its own axis too, or expanded to a fixed batch size."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.register_buffer("y", torch.ones(1, 2))
        self.fc, self.how = nn.Linear(D_LAT + 4, 5), how

    def forward(self, z):
        c = self.y.repeat(len(z), 2) if self.how == "tiled" else self.y.expand(7, 4)
        return self.fc(torch.cat([z, c], 1))


@pytest.mark.parametrize("how", ["tiled", "fixed"])
def test_copies_not_along_the_batch_alone_are_not_a_chain(how):
    model = init_(NotAlongTheBatch(how))
    assert recognize(model) is None
    if how == "tiled":
        check(model, randn(7, D_LAT, seed=3), recognized=False)


CONDITION = F.one_hot(torch.tensor([2]), 4).double()  # a global a traced function reads


class CVAE(nn.Module):
    """A conditional decoder: ``decode(z, y)`` with a one-hot class y beside the code."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(D_LAT + 4, 8), nn.Linear(8, 5)

    def decode(self, z, y):
        return self.out(torch.tanh(self.fc(torch.cat([z, y], 1))))


def test_a_conditional_decoder_at_a_condition_read_by_name():
    """``lambda z: cvae.decode(z, y.expand(len(z), -1))`` with y a global or a closure's tensor
    (torch.fx alone cannot call a plain tensor's method with the traced batch size): the chain;
    rebinding y traces again, an in-place change shows, and the names hold their tensors after
    the trace."""
    global CONDITION
    torch.manual_seed(0)
    cvae = init_(CVAE())

    def at(y):
        return lambda z: cvae.decode(z, y.repeat(z.shape[0], 1))

    z = randn(6, D_LAT, seed=5)
    by_global = lambda z: cvae.decode(z, CONDITION.expand(len(z), -1))  # noqa: E731
    original = CONDITION
    for fn in (by_global, at(F.one_hot(torch.tensor([0]), 4).double())):
        assert _found(fn, z)
        check(fn, z)
    assert CONDITION is original and type(CONDITION) is torch.Tensor
    CONDITION = F.one_hot(torch.tensor([3]), 4).double()
    check(by_global, z)
    with torch.no_grad():
        CONDITION[0, 1] = 0.5
    check(by_global, z)


def test_a_buffer_that_steers_control_flow_is_traced_as_a_plain_tensor():
    """A decoder branching on a buffer (an ``initialized`` flag) is traced with its buffers as
    plain tensors when tracing them as attributes fails: still a chain."""

    class Flagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(D_LAT, 5)
            self.register_buffer("initialized", torch.tensor(True))

        def forward(self, z):
            return torch.tanh(self.fc(z)) if self.initialized else self.fc(z)

    model = init_(Flagged())
    check(model, randn(6, D_LAT, seed=6))
