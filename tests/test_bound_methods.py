"""A decoder passed as a method of the user's VAE (``vae.decode``), or as a function around it
(``lambda z: vae.decode(z)[0]``), takes the stacked forward mode when its body traces into a
chain, with the same values and Jacobians as ``torch.func`` gives; ``metric.to`` converts its
module; a method with control flow falls back to ``torch.func``."""

import pytest
import torch
from torch import nn

import fastgeo
from fastgeo.decoders import stacked_chain

f64 = torch.float64


class ConvVAE(nn.Module):
    def __init__(self, d: int = 5) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(144, 2 * d))
        self.fc = nn.Linear(d, 8 * 3 * 3)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1, output_padding=0), nn.ELU(),
            nn.ConvTranspose2d(4, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.elu(self.fc(z))
        return self.up(h.view(-1, 8, 3, 3)).flatten(1)

    def decode_images(self, z: torch.Tensor) -> torch.Tensor:
        """(P, 1, 12, 12) images: the metric flattens them."""
        return self.decode(z).view(-1, 1, 12, 12)

    def decode_branchy(self, z: torch.Tensor) -> torch.Tensor:
        if bool(z.sum() > 1e9):  # control flow on values: torch.fx cannot trace it
            return self.decode(-z)
        return self.decode(z)


class ByTorchFunc:
    """A callable that is neither a module, a method nor a function: never recognized, its
    Jacobians come from torch.func (the reference)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


class TwoHeadVAE(nn.Module):
    """A decoder returning (mu, logvar) from one trunk, as many VAEs do."""

    def __init__(self, d: int = 4, D: int = 30) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d, 32), nn.ELU())
        self.mu, self.logvar = nn.Linear(32, D), nn.Linear(32, D)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(z)
        return torch.sigmoid(self.mu(h)), self.logvar(h)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)[0]


def _precision(d: int, D: int) -> fastgeo.RBFPrecision:
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, d, generator=g, dtype=f64)
    weights = torch.rand(D, 6, generator=g, dtype=f64)
    return fastgeo.RBFPrecision(centers, torch.full((6,), 0.5, dtype=f64), weights, 0.1)


def test_a_method_of_a_vae_takes_the_stacked_forward_mode():
    torch.manual_seed(0)
    vae = ConvVAE().double().eval()
    prec = _precision(5, 144)
    method = fastgeo.ExpectedMetric(vae.decode, prec)
    plain = fastgeo.ExpectedMetric(ByTorchFunc(vae.decode), prec)
    assert "stacked forward mode" in method.describe() and "ConvTranspose2d" in method.describe()
    assert "torch.func" in plain.describe()
    z = torch.randn(7, 5, dtype=f64)
    assert stacked_chain(method.mean, z) is not None  # recognized and checked against the call
    f_method, j_method = method.features_and_jacobian(z)
    f_plain, j_plain = plain.features_and_jacobian(z)
    torch.testing.assert_close(f_method, f_plain)
    torch.testing.assert_close(j_method, j_plain)
    branchy = fastgeo.ExpectedMetric(vae.decode_branchy, prec)
    assert "torch.func" in branchy.describe()
    torch.testing.assert_close(branchy.features_and_jacobian(z)[1], j_plain)


def test_a_method_returning_images_takes_the_stacked_forward_mode():
    """A method whose images the metric flattens is recognized through the flattening wrapper,
    with the Jacobians of the flat method."""
    torch.manual_seed(0)
    vae = ConvVAE().double().eval()
    prec = _precision(5, 144)
    images = fastgeo.ExpectedMetric(vae.decode_images, prec)
    assert "stacked forward mode" in images.describe() and "Flatten" in images.describe()
    z = torch.randn(7, 5, dtype=f64)
    assert stacked_chain(images.mean, z) is not None
    f_flat, j_flat = fastgeo.ExpectedMetric(ByTorchFunc(vae.decode), prec).features_and_jacobian(z)
    f_images, j_images = images.features_and_jacobian(z)
    torch.testing.assert_close(f_images, f_flat)
    torch.testing.assert_close(j_images, j_flat)


def _closure_over(vae: TwoHeadVAE):
    def mean(z: torch.Tensor) -> torch.Tensor:
        mu, _ = vae.decode(z)
        return mu

    return mean


@pytest.mark.parametrize("form", ["lambda", "closure", "method", "method of a lambda"])
def test_a_function_around_a_vae_that_returns_mu_and_logvar(form):
    """``lambda z: vae.decode(z)[0]`` (or a closure, or a method doing the same) on a decoder
    whose trunk feeds a mean head and a logvar head: the unused head is dropped, the mean is a
    chain, with torch.func's values and Jacobians; a float32 copy too."""
    torch.manual_seed(0)
    vae = TwoHeadVAE().double().eval()
    means = {
        "lambda": lambda z: vae.decode(z)[0],
        "closure": _closure_over(vae),
        "method": vae.decode_mean,
        "method of a lambda": lambda z: vae.decode_mean(z),
    }
    metric = fastgeo.ExpectedMetric(means[form], _precision(4, 30))
    assert "a chain of 4 steps (Affine -> elu -> Affine -> sigmoid)" in metric.describe()
    z = torch.randn(7, 4, dtype=f64)
    assert stacked_chain(metric.mean, z) is not None
    f, j = metric.features_and_jacobian(z)
    reference = fastgeo.ExpectedMetric(ByTorchFunc(vae.decode_mean), metric.precision)
    f_ref, j_ref = reference.features_and_jacobian(z)
    torch.testing.assert_close(f, f_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(j, j_ref, rtol=1e-10, atol=1e-12)
    res = fastgeo.geodesics(metric, z[:2], z[2:4])
    assert res.converged.all()


def test_a_function_around_modules_is_held_weakly():
    """The module a function is traced as does not keep the function (nor the VAE) alive."""
    import gc
    import weakref

    from fastgeo.decoders.recognize import chain_module

    vae = TwoHeadVAE().eval()
    fn = lambda z: vae.decode(z)[0]  # noqa: E731
    assert chain_module(fn) is chain_module(fn)  # one wrapper per function
    gone = weakref.ref(fn)
    del fn
    gc.collect()
    assert gone() is None


def test_metric_to_converts_a_method_s_module_and_takes_a_positional_dtype_or_device():
    torch.manual_seed(0)
    vae = ConvVAE().double().eval()
    metric = fastgeo.ExpectedMetric(vae.decode, _precision(5, 144))
    single = metric.to(torch.float32)
    assert single.dtype == torch.float32 and next(vae.parameters()).dtype == f64  # a copy
    assert metric.to("cpu").device == torch.device("cpu")
    assert metric.to(torch.device("cpu"), dtype=torch.float32).dtype == torch.float32
    z = torch.randn(3, 5, dtype=f64)
    torch.testing.assert_close(single.decode(z.float()), metric.decode(z).float(), atol=1e-5, rtol=1e-4)


def test_metric_to_converts_a_method_that_returns_images():
    """A method returning (P, 1, H, W) images (the metric flattens it): converted to float64 like a
    method returning rows (it said "needs ... an nn.Module or a method of one, got a plain
    callable")."""
    torch.manual_seed(0)
    vae = ConvVAE().eval()
    metric = fastgeo.ExpectedMetric(vae.decode_images, _precision(5, 144).to(torch.float32))
    double = metric.to(torch.float64)
    assert double.dtype == f64 and next(vae.parameters()).dtype == torch.float32  # a copy
    z = torch.randn(3, 5)
    torch.testing.assert_close(double.mean(z.double()).float(), metric.mean(z), atol=1e-6, rtol=1e-5)


class _MaxPooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 64)
        self.up = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.MaxPool2d(2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(self.fc(z).view(-1, 4, 4, 4)))


class _Output(nn.Module):
    """A linear layer, then ``out`` applied to its value."""

    def __init__(self, out) -> None:
        super().__init__()
        self.fc = nn.Linear(5, 20)
        self.out = out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc(z))


def test_describe_names_where_a_decoder_leaves_the_fast_path():
    """A decoder that falls back to torch.func is told which layer or op makes it (or that it is
    a plain function, or untraceable): a user can fix that one place."""
    from fastgeo.decoders.recognize import describe

    vae = ConvVAE().eval()
    assert "MaxPool2d (layer 'up.1')" in describe(_MaxPooled())
    assert "tensor method .cumsum()" in describe(_Output(lambda x: x.cumsum(1)))
    assert "Softshrink (layer '1')" in describe(nn.Sequential(nn.Linear(5, 8), nn.Softshrink()))
    assert "torch.nn.functional.softmin" in describe(_Output(lambda x: torch.nn.functional.softmin(x, 1)))
    pooled = _Output(lambda x: torch.nn.functional.max_pool1d(x.view(-1, 4, 5), 2).flatten(1))
    exported = torch.export.export(pooled, (torch.randn(3, 5),)).module()
    assert "max_pool1d" in describe(exported)  # torch.export's own hooks are no reason
    assert "function around no module" in describe(lambda z: torch.sigmoid(z))
    assert "torch.fx cannot trace it" in describe(vae.decode_branchy)
    scripted = torch.jit.script(nn.Sequential(nn.Linear(5, 8), nn.Tanh()))
    assert "TorchScript module" in describe(scripted, 5)
    assert "stacked forward mode" in describe(vae.decode)


@pytest.mark.parametrize(
    "out",
    [lambda x: torch.tanh(x) * 0.5 + 0.5, lambda x: 2 * torch.sigmoid(x) - 1, lambda x: 1 - torch.sigmoid(x),
     lambda x: -x / 3, lambda x: (x + 1) / 2],
)  # fmt: skip
def test_outputs_scaled_by_constants_take_the_stacked_forward_mode(out):
    """``tanh(x) * 0.5 + 0.5``, ``2 sigmoid(x) - 1``...: scaled and shifted by constants, pointwise
    and affine: recognized, with torch.func's values and Jacobians."""
    torch.manual_seed(0)
    decoder = _Output(out).double().eval()
    prec = _precision(5, 20)
    metric = fastgeo.ExpectedMetric(decoder, prec)
    assert "stacked forward mode" in metric.describe() and "Scale" in metric.describe()
    z = torch.randn(7, 5, dtype=f64)
    assert stacked_chain(metric.mean, z) is not None
    f, j = metric.features_and_jacobian(z)
    f_ref, j_ref = fastgeo.ExpectedMetric(ByTorchFunc(decoder), prec).features_and_jacobian(z)
    torch.testing.assert_close(f, f_ref)
    torch.testing.assert_close(j, j_ref)
