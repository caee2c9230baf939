"""Decoders returning a ``torch.distributions`` object whose scale comes from the same head as
its mean (``mu, raw = net(z).chunk(2, -1)``; ``Normal(mu, exp(0.5 * raw))``), passed as
``lambda z: dec(z).mean``: the scale's branch reaches the output only through
``broadcast_tensors(mu, scale)``'s unused outputs, so the mean is a chain (read from the
``torch.fx`` trace or the ``torch.export`` graph). Values and directional derivatives equal
forward-mode AD (dual tensors) to 1e-10 in float64; a scale that does feed the mean, a scale
that widens the mean, or a branch that writes in place stays correct (recognized or not)."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from helpers import assert_close_rel, randn
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Independent, Normal

from fastgeo.decoders import stacked_chain, value_and_tangents
from fastgeo.decoders.graph_dead import dead_nodes
from fastgeo.decoders.graphs import read_graph
from fastgeo.decoders.recognize import describe
from fastgeo.decoders.tracing import ClosureModule, exported_graph, traced_graph

F64 = torch.float64
d, D = 3, 5


def reference(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value (P, F) and derivatives along the d axes (d, P, F) by dual tensors, one at a time."""
    with torch.no_grad():
        value = fn(z)
    outs = []
    with fwAD.dual_level():
        for t in torch.eye(d, dtype=z.dtype)[:, None, :].expand(d, *z.shape):
            outs.append(fwAD.unpack_dual(fn(fwAD.make_dual(z, t))).tangent)
    return value, torch.stack(outs)


def check(fn, recognized: bool | None = True, seed: int = 1) -> None:
    """``fn`` is (or is not; None: either) a stacked chain, and its values and derivatives equal
    forward-mode AD to 1e-10 of the largest entry."""
    z = randn(7, d, seed=seed, scale=1.5)
    if recognized is not None:
        assert (stacked_chain(fn, z[:4]) is not None) == recognized
    tangents = torch.eye(d, dtype=F64)[:, None, :].expand(d, *z.shape)
    value, out = value_and_tangents(fn, z, tangents)
    value_ref, out_ref = reference(fn, z)
    assert value.shape == value_ref.shape and out.shape == out_ref.shape
    assert_close_rel(value, value_ref, 1e-10)
    assert_close_rel(out, out_ref, 1e-10)


class Head(nn.Module):
    """An MLP whose last layer gives 2 D numbers per point, split in two by ``head(mu, raw)``."""

    def __init__(self, head, width: int = 2 * D) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, 16), nn.ELU(), nn.Linear(16, width))
        self.head = head
        torch.manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape))
        self.double().eval()

    def forward(self, z: torch.Tensor):
        mu, raw = self.net(z).chunk(2, dim=-1)
        return self.head(mu, raw)


def _asserted(mu: torch.Tensor, raw: torch.Tensor) -> Normal:
    scale = F.softplus(raw) + 1e-3
    torch._assert((scale > 0).all(), "a positive scale")
    return Normal(mu, scale)


HEADS = {
    "normal_logvar": lambda mu, raw: Normal(mu, torch.exp(0.5 * raw)),
    "normal_scalar_mul": lambda mu, raw: Normal(mu, (raw * 0.5).exp()),
    "independent_softplus": lambda mu, raw: Independent(Normal(mu, F.softplus(raw) + 1e-3), 1),
    "normal_scale_of_mu": lambda mu, raw: Normal(mu, mu.exp()),
    "scale_checked": _asserted,
}


@pytest.mark.parametrize("name", list(HEADS))
def test_mean_of_a_distribution_head_is_a_chain(name: str) -> None:
    dec = Head(HEADS[name])
    check(lambda z: dec(z).mean)  # as the README says to pass it
    assert "stacked forward mode" in describe(lambda z: dec(z).mean, d)


@pytest.mark.parametrize("name", ["normal_logvar", "independent_softplus"])
def test_exported_graph_of_a_distribution_head(name: str) -> None:
    """The ``aten`` graph (shapes recorded: compared) of a module returning the mean."""
    head = HEADS[name]
    dec = Head(lambda mu, raw: head(mu, raw).mean)
    check(dec)
    check(exported_graph(dec, d), seed=2)


def test_validate_args_default_and_explicit() -> None:
    """Argument checks on by default (torch's default outside ``python -O``; torch._dynamo turns
    the default off for the process once it is first used, so it is set here): read without them,
    the chain checked against the decoder with them. Asked for explicitly, they branch on values
    (no tracer follows them): torch.func, correct."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    try:
        dec = Head(lambda mu, raw: Normal(mu, torch.exp(0.5 * raw)))
        check(lambda z: dec(z).mean)
        dec = Head(lambda mu, raw: Normal(mu, torch.exp(0.5 * raw), validate_args=True))
        check(lambda z: dec(z).mean, recognized=None)
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)


def test_bernoulli_logits() -> None:
    dec = Head(lambda mu, raw: Bernoulli(logits=torch.cat([mu, raw], -1)))
    check(lambda z: dec(z).mean)


def test_continuous_bernoulli_falls_back_correctly() -> None:
    dec = Head(lambda mu, raw: ContinuousBernoulli(logits=mu))
    check(lambda z: dec(z).mean, recognized=None)


FEEDING = {
    "mean_times_scale": lambda mu, raw: Normal(mu * torch.exp(raw), torch.exp(raw)).mean,
    "mean_plus_scale": lambda mu, raw: (lambda s: Normal(mu + s, s).mean)(F.softplus(raw)),
    "mean_widened": lambda mu, raw: Normal(mu[:, :1], torch.exp(raw)).mean,
    "scale_read_too": lambda mu, raw: (lambda n: n.mean + n.stddev)(Normal(mu, torch.exp(raw))),
}


@pytest.mark.parametrize("name", list(FEEDING))
def test_a_scale_that_feeds_the_output_stays_correct(name: str) -> None:
    """Not dead: recognized as a fork and join, or not recognized; never wrong numbers."""
    dec = Head(FEEDING[name])
    check(dec, recognized=None)
    check(lambda z: dec(z), recognized=None, seed=3)
    if name == "mean_widened":  # the chain would give (P, 1): rejected, by the check or the shapes
        assert stacked_chain(dec, randn(4, d)) is None
        assert stacked_chain(exported_graph(dec, d), randn(4, d)) is None


def test_a_scale_written_in_place_is_not_dead() -> None:
    """``mu.exp_()`` beside the broadcast changes the mean: its branch is not skipped."""

    def head(mu: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        mu = mu.clone()
        return Normal(mu, mu.exp_()).mean

    dec = Head(head)
    check(dec, recognized=False)
    graph = traced_graph(dec)
    assert not dead_nodes(graph, dec) and read_graph(graph, dec) is None  # not just the check's catch
    plain = Head(HEADS["normal_logvar"])
    mean = lambda z: plain(z).mean  # noqa: E731 - the wrapper holds it weakly
    graph = traced_graph(ClosureModule(mean, [plain]))
    assert {n.target for n in dead_nodes(graph, plain)} == {operator.getitem, operator.mul, torch.exp}
