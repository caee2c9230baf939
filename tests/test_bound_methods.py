"""A decoder passed as a method of the user's VAE (``vae.decode``) takes the stacked forward mode
when its body traces into a chain, with the same values and Jacobians as ``torch.func`` gives;
``metric.to`` converts its module; a method with control flow falls back to ``torch.func``."""

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
    plain = fastgeo.ExpectedMetric(lambda z: vae.decode(z), prec)
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
    f_flat, j_flat = fastgeo.ExpectedMetric(lambda z: vae.decode(z), prec).features_and_jacobian(z)
    f_images, j_images = images.features_and_jacobian(z)
    torch.testing.assert_close(f_images, f_flat)
    torch.testing.assert_close(j_images, j_flat)


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
    assert "operator mul" in describe(_Output(lambda x: x * x))
    assert "Softshrink (layer '1')" in describe(nn.Sequential(nn.Linear(5, 8), nn.Softshrink()))
    assert "torch.nn.functional.softmin" in describe(_Output(lambda x: torch.nn.functional.softmin(x, 1)))
    pooled = _Output(lambda x: torch.nn.functional.max_pool1d(x.view(-1, 4, 5), 2).flatten(1))
    exported = torch.export.export(pooled, (torch.randn(3, 5),)).module()
    assert "max_pool1d" in describe(exported)  # torch.export's own hooks are no reason
    assert "plain function" in describe(lambda z: vae.decode(z))
    assert "torch.fx cannot trace it" in describe(vae.decode_branchy)
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
    f_ref, j_ref = fastgeo.ExpectedMetric(lambda z: decoder(z), prec).features_and_jacobian(z)
    torch.testing.assert_close(f, f_ref)
    torch.testing.assert_close(j, j_ref)
