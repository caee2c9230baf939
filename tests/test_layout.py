"""Channels-last convolutions in the plain forward of a decoder mean (fastgeo.decoders.layout):
the same values and gradients as the decoder's own call, the user's module left as it was, and
decoders that cannot take the layout (or raise) handled."""

from __future__ import annotations

import pytest
import torch
from helpers import randn
from torch import nn

import fastgeo
from fastgeo.decoders.layout import _convolutions, _hooked, _verdicts, channels_last

D_LATENT = 5


def conv_decoder() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(D_LATENT, 16 * 7 * 7),
        nn.ELU(),
        nn.Unflatten(1, (16, 7, 7)),
        nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1),
        nn.ELU(),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        nn.ELU(),
        nn.Conv2d(4, 1, 3, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
    ).double()


class Spy(nn.Module):
    """Records whether the images reaching it are channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        self.batches.append(x.shape[0])
        return x

    def clear(self) -> None:
        self.seen.clear()
        self.batches.clear()

    def seen_on_curves(self) -> list[bool]:
        """:attr:`seen` of the calls on more than a probe's four points (each use of the library
        checks the recognized chain against a plain call on a few points first)."""
        return [s for s, b in zip(self.seen, self.batches, strict=True) if b > 4]


class ViewsItsOutput(nn.Module):
    """A decoder whose own code calls ``view`` on a convolution's 8-channel output (fails on
    channels-last)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = conv_decoder()[:5]  # ... ConvTranspose2d(16, 8), ELU: (P, 8, 14, 14)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z).view(z.shape[0], -1)


def _metric(mean, data_dim: int = 784) -> fastgeo.ExpectedMetric:
    ones = torch.ones(7, dtype=torch.float64)
    prec = fastgeo.RBFPrecision(randn(7, D_LATENT), ones, randn(data_dim, 7).abs(), 0.1)
    return fastgeo.ExpectedMetric(mean, prec)


def test_values_and_gradients_equal_the_plain_call_and_the_module_is_left_as_it_was():
    model = conv_decoder()
    spy = Spy()
    model.insert(4, spy)  # after the first transposed convolution
    metric = _metric(model)
    z = randn(3, 40, D_LATENT, seed=2).requires_grad_(True)
    metric.decode(z[0])  # the first call checks the layout once (and the plain call with it)
    metric.length(z.detach())  # and the chain read by torch.export (which calls the spy) once
    spy.clear()
    length = metric.length(z).sum()
    (grad,) = torch.autograd.grad(length, z)
    assert spy.seen_on_curves() and all(spy.seen_on_curves())  # the convolutions ran channels-last
    spy.clear()
    plain = _metric(lambda x: model(x))  # a function: called as it is
    z2 = z.detach().clone().requires_grad_(True)
    plain_length = plain.length(z2).sum()
    (plain_grad,) = torch.autograd.grad(plain_length, z2)
    assert spy.seen and not any(spy.seen)
    torch.testing.assert_close(length, plain_length, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-10, atol=1e-12)
    # No hook stays on the user's modules, and their own calls are untouched.
    assert all(not m._forward_pre_hooks for m in model.modules())
    spy.clear()
    model(randn(2, D_LATENT))
    assert not any(spy.seen)


def test_a_decoder_that_cannot_take_the_layout_keeps_its_own():
    model = ViewsItsOutput()
    z = randn(2, 30, D_LATENT, seed=3)
    with pytest.raises(RuntimeError):  # what the layout would do to it
        with channels_last(model, z[0]), _hooked(_convolutions(model)):
            model(z[0])
    metric = _metric(model, 8 * 14 * 14)
    torch.testing.assert_close(metric.decode(z), model(z.reshape(-1, D_LATENT)).reshape(2, 30, -1))
    assert _verdicts[model] is False


def test_a_decoder_that_raises_raises_to_the_caller():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("the user's decoder failed")

    with pytest.raises(RuntimeError, match="the user's decoder failed"):
        _metric(Broken()).decode(randn(4, D_LATENT))


def test_another_threads_conversion_leaves_this_threads_calls_as_they_are():
    """The hooks are on the user's module while a thread of the library converts: another thread's
    own call of the decoder meanwhile (the user's, or another solve's plain call) took
    channels-last images too (589 of 600 calls of a conv decoder)."""
    import threading

    model = conv_decoder()
    spy = Spy()
    model.insert(4, spy)
    z = randn(6, D_LATENT)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with channels_last(model, z):
            inside.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert inside.wait(60)
        spy.clear()
        with torch.no_grad():
            model(z)
        assert spy.seen == [False]  # this thread opened no block: its call is the plain one
        with channels_last(model, z), torch.no_grad():
            spy.clear()
            model(z)
        assert spy.seen == [True]
    finally:
        release.set()
        thread.join(60)
