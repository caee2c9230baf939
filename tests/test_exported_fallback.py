"""Decoders that ``torch.fx`` cannot trace but ``torch.export`` can, read from their exported
``aten`` graph when the codes' latent dimension is known: a branch on ``z.dim()``, an ``assert``
on ``z.shape``, a range or a check of the batch size, and the mean of a ``torch.distributions``
object (``Bernoulli(logits=x).mean``, ``Independent(Normal(mu, 1.0), 1).mean``, ``Normal(mu,
log_sigma.exp()).mean``). Values and directional derivatives equal forward-mode AD; a distribution
whose parameters widen the mean, and a decoder that branches on values, are left to torch.func,
silently; the distributions' argument checks are put back."""

from __future__ import annotations

import copy
import logging
import sys

import pytest
import torch
from helpers import randn
from tangent_checks import F32_TOL, check
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal

import fastgeo
from fastgeo.decoders import stacked_chain
from fastgeo.decoders.recognize import describe, recognize
from fastgeo.decoders.steps import Conv, walk

D_LAT = 4


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.latent_dim = D_LAT
        self.net = nn.Sequential(nn.Linear(D_LAT, 16), nn.ELU(), nn.Linear(16, 12))
        self.log_sigma = nn.Parameter(torch.linspace(-1.0, 0.5, 12))


class OneCode(Decoder):
    """Accepts one code (d,) as well as a batch."""

    def forward(self, z):
        if z.dim() == 1:
            z = z.unsqueeze(0)
        return torch.tanh(self.net(z))


class Asserted(Decoder):
    def forward(self, z):
        assert z.shape[-1] == self.latent_dim, "codes of the wrong width"
        return self.net(z)


class BatchChecked(Decoder):
    """A loop over the codes' width and a bound on the batch size: guards on shapes."""

    def forward(self, z):
        h = z
        for _ in range(z.shape[-1] // D_LAT):
            h = h * 1.0
        if z.shape[0] > 1_000_000:
            raise ValueError("too many codes")
        return torch.sigmoid(self.net(h))


class BernoulliMean(Decoder):
    def forward(self, z):
        return Bernoulli(logits=self.net(z)).mean


class OneCodeBernoulli(Decoder):
    def forward(self, z):
        if z.dim() == 1:
            z = z.unsqueeze(0)
        return Bernoulli(logits=self.net(z)).mean


class NormalMean(Decoder):
    def forward(self, z):
        return Independent(Normal(self.net(z), 1.0), 1).mean


class LearnedScale(Decoder):
    def forward(self, z):
        return Normal(torch.sigmoid(self.net(z)), self.log_sigma.exp()).mean


class WidenedMean(Decoder):
    """The mean (P, 1) broadcast to the scale's (12,): not the chain it reads as."""

    def forward(self, z):
        return Normal(self.net(z)[:, :1], self.log_sigma.exp()).mean


class ValueBranch(Decoder):
    def forward(self, z):
        h = self.net(z)
        return h if h.sum() > 0 else -h


class ConvMethod(nn.Module):
    """A conv VAE whose ``decode`` takes single codes too and reshapes with ``view(-1, ...)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, 8 * 4 * 4)
        self.up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def decode(self, z):
        if z.ndim == 1:
            z = z[None]
        h = self.fc(z).view(-1, 8, 4, 4)
        return torch.sigmoid(self.out(nn.functional.elu(self.up(h)))).flatten(1)


# form -> whether torch.fx reads it alone (with the distributions' checks off while it traces)
FORMS = {OneCode: False, Asserted: False, BatchChecked: False, NormalMean: False, BernoulliMean: True,
         LearnedScale: True}  # fmt: skip


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_read_from_the_exported_graph(form):
    torch.manual_seed(0)
    model = form().double().eval()
    assert (recognize(model) is not None) == FORMS[form]  # else the latent dimension is needed
    z = randn(7, D_LAT, seed=1, scale=1.5)
    assert recognize(model, D_LAT) is not None
    check(model, z)
    check(copy.deepcopy(model).float(), randn(9, D_LAT, dtype=torch.float32, seed=3), rtol=F32_TOL)


def test_read_under_no_grad():
    """Recognized as first seen inside ``torch.no_grad()`` (as the solver sees it), where the
    distribution's mean turns grad on for itself."""
    model = OneCodeBernoulli().eval()
    with torch.no_grad():
        assert recognize(model) is None and recognize(model, D_LAT) is not None
    check(model.double(), randn(5, D_LAT, seed=8))


def test_a_conv_method_read_from_the_exported_graph():
    torch.manual_seed(0)
    vae = ConvMethod().double().eval()
    z = randn(6, D_LAT, seed=2)
    found = recognize(vae.decode, D_LAT)
    assert found is not None and sum(isinstance(s, Conv) for s in walk(found[0])) == 2
    check(vae.decode, z)


@pytest.mark.parametrize("form", [WidenedMean, ValueBranch], ids=lambda f: f.__name__)
def test_not_chains_are_left_to_torch_func_silently(form, capsys):
    torch.manual_seed(0)
    model = form().double().eval()
    z = randn(5, D_LAT, seed=4)
    assert stacked_chain(model, z) is None
    check(model, z, recognized=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_describe_says_what_failed():
    text = describe(ValueBranch().eval(), D_LAT)
    assert text.startswith("not a recognized chain") and "torch.export" in text


class PooledBranch(nn.Module):
    """torch.fx stops at the branch on z.dim(); torch.export reads it, and stops at the pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, 32)

    def forward(self, z):
        if z.dim() == 1:
            z = z[None]
        return nn.functional.max_pool2d(self.fc(z).view(-1, 2, 4, 4), 2).flatten(1)


def test_describe_names_where_the_exported_graph_stops():
    text = describe(PooledBranch().eval(), D_LAT)
    assert "torch.fx cannot trace it" in text and "torch.export graph stops" in text and "max_pool2d" in text


@pytest.mark.parametrize("validate", [True, False])
def test_the_distributions_checks_are_put_back(validate):
    """And the logging level and stderr, which a failed export would print to."""
    before, quiet, stderr = Distribution._validate_args, logging.root.manager.disable, sys.stderr
    Distribution.set_default_validate_args(validate)
    try:
        for form in (BernoulliMean, ValueBranch):
            recognize(form().eval(), D_LAT)
            assert Distribution._validate_args is validate
            assert logging.root.manager.disable == quiet and sys.stderr is stderr
    finally:
        Distribution.set_default_validate_args(before)


def test_a_metric_takes_the_exported_chain():
    """The metric passes its latent dimension: its description names the chain, and its
    geodesics equal those of the same decoder hidden from the recognition (torch.func)."""
    torch.manual_seed(0)
    model = OneCode().double().eval()
    centers = randn(10, D_LAT, seed=5)
    precision = fastgeo.RBFPrecision(centers, torch.full((10,), 0.5, dtype=torch.float64),
                                     torch.rand(12, 10, dtype=torch.float64), zeta=1e-2)  # fmt: skip
    metric = fastgeo.ExpectedMetric(model, precision)
    assert "a chain of 4 steps" in metric.describe() and "torch.export graph" in metric.describe()
    hidden = fastgeo.ExpectedMetric(lambda z: model(z + 0.0 * z.sum()), precision)
    assert "not a recognized chain" in hidden.describe()
    z0, z1 = randn(3, D_LAT, seed=6), randn(3, D_LAT, seed=7)
    fast = fastgeo.geodesics(metric, z0, z1, method="fast", progress=False)
    slow = fastgeo.geodesics(hidden, z0, z1, method="fast", progress=False)
    assert list(fast.status) == list(slow.status)
    torch.testing.assert_close(fast.lengths, slow.lengths, rtol=1e-6, atol=0)


class Rearranged(nn.Module):
    """einops in forward (``rearrange`` to images and back, ``repeat`` of the codes over a grid):
    torch.fx cannot trace it, torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_LAT, 4 * 3 * 3)
        self.up = nn.ConvTranspose2d(4 + D_LAT, 2, 4, stride=2, padding=1)

    def forward(self, z):
        import einops

        h = einops.rearrange(self.fc(z), "b (c h w) -> b c h w", c=4, h=3)
        h = torch.cat([h, einops.repeat(z, "b d -> b d h w", h=3, w=3)], dim=1)
        return einops.rearrange(torch.sigmoid(self.up(h)), "b c h w -> b (c h w)")


def test_einops_decoders():
    pytest.importorskip("einops")  # a test dependency (fastgeo[test]): CI runs this
    torch.manual_seed(0)
    model = Rearranged().double().eval()
    assert recognize(model) is None and recognize(model, D_LAT) is not None
    check(model, randn(5, D_LAT, seed=9))


class MuLogvarHead(Decoder):
    """A VAE decoder returning (mu, logvar) from one trunk; the mean is ``[0]``."""

    def __init__(self) -> None:
        super().__init__()
        self.logvar = nn.Linear(16, 12)

    def forward(self, z):
        h = torch.tanh(self.net[0](z))
        return self.net[2](h).sigmoid(), self.logvar(h)


def test_an_exported_graph_with_an_unused_head_is_a_chain():
    """``torch.export`` of ``decode(z)[0]`` keeps the logvar head's linear layer, used by nothing
    (a file saved with format='export' then read as "not a chain": torch.func, ~2x slower); it
    is skipped as the distributions' other parameters are."""
    torch.manual_seed(0)
    model = MuLogvarHead().double().eval()
    z = randn(3, D_LAT, seed=4)
    program = torch.export.export(_First(model), (z,), dynamic_shapes=({0: torch.export.Dim("P", min=0)},))
    exported = program.module()
    found = recognize(exported, D_LAT)
    assert found is not None, describe(exported, D_LAT)
    check(exported, randn(5, D_LAT, seed=5))


class _First(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, z):
        return self.inner(z)[0]


class _FloorDivided(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 8)

    def forward(self, z):
        return torch.tanh(torch.div(self.fc(z) * 1e6, 2, rounding_mode="floor") * 1e-6)


def test_a_division_with_a_rounding_mode_is_no_scaling():
    """``torch.div(h, 2, rounding_mode="floor")`` was read from the exported graph as a scaling
    by 0.5 (a derivative of 0.5 where the true one is 0; its values within the chain check's
    tolerance on outputs of ~1e6)."""
    torch.manual_seed(0)
    assert recognize(_FloorDivided().double().eval(), 2) is None


class _Asserting(nn.Module):
    """torch.fx cannot trace the assert: read from torch.export's graph."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 6))

    def forward(self, z):
        assert z.dim() == 2
        return self.net(z)


def test_metrics_read_by_two_threads_at_once_leave_the_process_as_it_was():
    """torch.export patches stderr, warning filters, logging and distributions' checks while it
    runs: two threads exporting at once put back each other's, leaving stderr a StringIO and an
    'ignore' filter installed for good (2 runs in 3), and some decoders off the stacked chain."""
    import concurrent.futures
    import warnings

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    prec = fastgeo.RBFPrecision(
        torch.randn(5, 2, generator=g), torch.ones(5), torch.rand(6, 5, generator=g), 0.1
    )
    before = (sys.stderr, list(warnings.filters), logging.root.manager.disable)
    validate = Distribution._validate_args

    def job(_):
        return "stacked forward mode" in fastgeo.ExpectedMetric(_Asserting().eval(), prec).describe()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        read = list(pool.map(job, range(8)))
    assert all(read)
    assert sys.stderr is before[0] and warnings.filters == before[1]
    assert logging.root.manager.disable == before[2] and Distribution._validate_args == validate
