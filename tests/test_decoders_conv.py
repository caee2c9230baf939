"""The stacked forward mode of whole convolutional decoders (``fastgeo.decoders``).

``value_and_tangents(fn, z, tangents)`` gives ``fn(z)`` (P, F) and ``J(z_p) t_{i,p}`` (k, P, F)
for any k directions per point; ``jacobian_rows`` is its case of the d coordinate axes. Whole
decoders (28x28 and 64x64x3 outputs, d = 5, 16, 32) as an ``nn.Sequential``, a ``torch.export``
graph (decomposed too), a custom ``nn.Module`` (``torch.fx`` tracing), and saved generator files;
arbitrary directions (k != d, k = 0); P = 0 and P = 1; large P in chunks; against the oracles of
``tangent_checks`` (single layers: ``test_conv_layers.py``; what falls back:
``test_decoder_fallbacks.py``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conv_decoders import MnistDecoder, Rgb64Decoder, mnist_sequential, rgb64_sequential
from helpers import assert_close_rel, randn
from tangent_checks import F32_TOL, C, H, around, axes, check, exported, init_, running
from torch import nn

import fastgeo
from fastgeo.decoders import (
    forward_mode,
    jacobian_rows,
    stacked_chain,
    value_and_tangents,
)

F64 = torch.float64


class LayerNormGeluDecoder(nn.Module):
    """A custom MLP decoder with LayerNorm and functional GELU (tanh), ReLU6 and Hardtanh."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.norm, self.fc2 = nn.Linear(d, 24), nn.LayerNorm(24), nn.Linear(24, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, z):
        h = F.gelu(self.norm(self.fc(z)), approximate="tanh")
        h = F.relu6(self.fc2(h))
        return F.hardtanh(self.fc3(h), -1.5, 1.5)


class ShuffleSoftmaxDecoder(nn.Module):
    """A custom decoder of categorical images: functional Mish, SELU, Hardswish, pixel shuffle,
    average pooling and a log-softmax over the classes (channels), as torch.export keeps them."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 8 * 16)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.prelu = nn.PReLU(4)
        self.out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, z):
        h = F.mish(self.fc(z)).view(-1, 8, 4, 4)
        h = F.selu(F.pixel_shuffle(self.conv(h), 2))  # (4, 8, 8)
        h = F.hardswish(self.prelu(F.avg_pool2d(h, 2)))  # (4, 4, 4)
        h = F.pixel_unshuffle(F.celu(h, 0.5), 2)  # (16, 2, 2)
        h = F.pixel_shuffle(torch.special.expit(h), 2)
        return torch.log_softmax(self.out(h), dim=1).flatten(1)


class SequenceDecoder(nn.Module):
    """A custom decoder of sequences (a protein-like 21-letter alphabet over 12 positions): Conv1d
    with InstanceNorm1d, functional soft activations and a softmax over the letters (method)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 6 * 12)
        self.norm = nn.InstanceNorm1d(6, affine=True)
        self.conv = nn.Conv1d(6, 21, 3, padding=1)

    def forward(self, z):
        h = self.norm(self.fc(z).reshape(z.shape[0], 6, 12))
        h = F.tanhshrink(F.softsign(F.logsigmoid(h) + 1.0))
        return self.conv(h).softmax(1).flatten(1)


def instance_norms(d: int) -> nn.Module:
    """InstanceNorm2d with its instance statistics and with running ones (eval mode), side by side."""
    return nn.Sequential(
        nn.Linear(d, C * 16), nn.Unflatten(1, (C, 4, 4)), nn.InstanceNorm2d(C, affine=True), nn.Tanh(),
        nn.Conv2d(C, 2 * C, 3, padding=1), running(nn.InstanceNorm2d(2 * C, track_running_stats=True)),
        nn.Flatten(),
    )  # fmt: skip


class ResBlock(nn.Module):
    """``x + conv(silu(norm(conv(x))))``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.norm = nn.GroupNorm(2, c)

    def forward(self, x):
        return x + self.c2(F.silu(self.norm(self.c1(x))))


class UpBlock(nn.Module):
    """A projection shortcut: ``elu(convT(x)) + conv1x1(upsample(x))``."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(a, b, 4, 2, 1)
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 1))

    def forward(self, x):
        return F.elu(self.up(x)) + self.shortcut(x)


class ResNetDecoder(nn.Module):
    """A residual decoder (P, d) -> (P, 784): a residual MLP on the code, residual conv blocks
    (nested: a block inside a block), a projection shortcut, ``torch.add`` and ``+``."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lift = nn.Linear(d, d)
        self.fc = nn.Linear(d, 8 * 7 * 7)
        self.block1 = ResBlock(8)
        self.up1, self.up2 = UpBlock(8, 4), UpBlock(4, 4)
        self.inner = nn.Sequential(ResBlock(4), nn.Tanh())
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, z):
        z = torch.add(z, torch.tanh(self.lift(z)))
        h = self.block1(self.fc(z).view(z.size(0), 8, 7, 7))
        h = self.up1(h)
        h = h + self.inner(h)  # a block whose residual branch holds a block
        return torch.sigmoid(self.out(self.up2(h))).flatten(1)


class ClampDecoder(nn.Module):
    """Clamps by constants: both sides (a method), one side (``torch.clamp(min=)``, ``clamp_max``),
    ``torch.clip``: Hardtanh steps with an infinite side."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.fc2, self.fc3 = nn.Linear(d, 24), nn.Linear(24, 16), nn.Linear(16, 10)

    def forward(self, z):
        h = self.fc2(self.fc(z).clamp(-0.5, 0.8))
        h = self.fc3(torch.clamp(h, min=-0.2).clamp_max(0.9))
        return torch.clip(h, 0.0, 1.0)


class HeadsDecoder(nn.Module):
    """Output heads side by side (a mixed-type decoder: intensities, a categorical part and a
    linear one), and a channel concatenation: ``torch.cat`` joins of two and of three chains."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * 3 * 3)
        self.conv = nn.Conv2d(4, 2, 3, padding=1)
        self.a, self.b, self.c = nn.Linear(54, 5), nn.Linear(54, 7), nn.Linear(54, 3)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, 4, 3, 3)
        h = torch.cat([h, F.elu(self.conv(h))], dim=1).flatten(1)  # (P, 6 * 3 * 3)
        return torch.cat((torch.sigmoid(self.a(h)), torch.softmax(self.b(h), -1), self.c(h)), -1)


class AxesDecoder(nn.Module):
    """The point's axes rearranged: a (P, 5, 8) sequence permuted for a Conv1d and back
    (``permute``, ``transpose``, ``torch.transpose`` with negative axes), a Linear over its last
    axis, and a map given a channel axis for a Conv2d (``unsqueeze``; ``squeeze`` of a size-1
    axis)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.conv1 = nn.Linear(d, 40), nn.Conv1d(8, 4, 3, padding=1)
        self.per, self.conv2 = nn.Linear(5, 6), nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, 5, 8).permute(0, 2, 1)
        h = torch.transpose(self.conv1(h).transpose(1, 2), -1, -2)  # (P, 4, 5)
        h = torch.sigmoid(self.per(h)).unsqueeze(1)  # (P, 1, 4, 6)
        return torch.unsqueeze(self.conv2(h).flatten(1), -1).squeeze(-1)


class GatedDecoder(nn.Module):
    """Gates (P, d) -> (P, 784): swish written out (``h * sigmoid(h)``), a gate per pixel
    (``h * sigmoid(conv(h))``), a gate per channel (squeeze-excitation: broadcast over the map)
    and a product of two chains (``tanh(conv(x)) * sigmoid(conv(x))``, a GLU-like gate)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * 7 * 7)
        self.gate = nn.Conv2d(4, 4, 3, padding=1)
        self.squeeze = nn.Sequential(nn.AvgPool2d(7), nn.Conv2d(4, 4, 1))
        self.up = nn.ConvTranspose2d(4, 4, 4, 2, 1)
        self.value, self.weight = nn.Conv2d(4, 2, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)
        self.out = nn.ConvTranspose2d(2, 1, 4, 2, 1)

    def forward(self, z):
        h = self.fc(z)
        h = (h * torch.sigmoid(h)).view(-1, 4, 7, 7)
        h = h * torch.sigmoid(self.gate(h))
        h = h * torch.sigmoid(self.squeeze(h))
        h = F.elu(self.up(h))
        h = torch.tanh(self.value(h)) * torch.sigmoid(self.weight(h))
        return torch.sigmoid(self.out(h)).flatten(1)


class Residual(nn.Module):
    """``h + conv(h)``: a residual block (recognized: the forks the others make are not)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, C * H * H)
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return (h + self.conv(h)).flatten(1)


class Gated(Residual):
    """A fork joined by a product (a gate), not a sum: recognized too."""

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return (h * torch.sigmoid(self.conv(h))).flatten(1)


class Concatenated(Residual):
    """A fork joined by concatenating the channels: recognized too."""

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        return torch.cat([h, self.conv(h)], dim=1).flatten(1)


class Differenced(Residual):
    """Forks joined by a difference, ``h - conv(h)`` and ``tanh(h) - h``: recognized too."""

    def forward(self, z):
        h = torch.tanh(self.fc(z)).view(-1, C, H, H)
        h = h - self.conv(h)
        return (torch.tanh(h) - h).flatten(1)


DECODERS = {
    "mnist_sequential_d5": (lambda: mnist_sequential(5), 5, 784),
    "mnist_exported_d16": (lambda: exported(mnist_sequential(16), 16), 16, 784),
    "mnist_custom_d8": (lambda: init_(MnistDecoder(8)), 8, 784),
    "mnist_custom_exported_d5": (lambda: exported(init_(MnistDecoder(5)), 5), 5, 784),
    "rgb64_sequential_d32": (lambda: rgb64_sequential(32), 32, 12288),
    "rgb64_custom_d32": (lambda: init_(Rgb64Decoder(32)), 32, 12288),
    "rgb64_exported_d6": (lambda: exported(init_(Rgb64Decoder(6)), 6), 6, 12288),
    "layernorm_gelu_custom_d7": (lambda: init_(LayerNormGeluDecoder(7)), 7, 10),
    "layernorm_gelu_exported_d4": (lambda: exported(init_(LayerNormGeluDecoder(4)), 4), 4, 10),
    "shuffle_softmax_custom_d6": (lambda: init_(ShuffleSoftmaxDecoder(6)), 6, 48),
    "shuffle_softmax_exported_d5": (lambda: exported(init_(ShuffleSoftmaxDecoder(5)), 5), 5, 48),
    "sequence_custom_d8": (lambda: init_(SequenceDecoder(8)), 8, 21 * 12),
    "instancenorm_running_exported_d4": (lambda: exported(init_(instance_norms(4)), 4), 4, 2 * C * 16),
    "resnet_custom_d6": (lambda: init_(ResNetDecoder(6)), 6, 784),
    "resnet_exported_d5": (lambda: exported(init_(ResNetDecoder(5)), 5), 5, 784),
    "residual_custom_d3": (lambda: init_(Residual()), 3, C * H * H),
    "gated_custom_d5": (lambda: init_(GatedDecoder(5)), 5, 784),
    "clamp_custom_d4": (lambda: init_(ClampDecoder(4), scale=1.0), 4, 10),
    "clamp_exported_d3": (lambda: exported(init_(ClampDecoder(3), scale=1.0), 3), 3, 10),
    "gated_exported_d4": (lambda: exported(init_(GatedDecoder(4)), 4), 4, 784),
    "gate_custom_d3": (lambda: init_(Gated()), 3, C * H * H),
    "concatenated_custom_d3": (lambda: init_(Concatenated()), 3, 2 * C * H * H),
    "differenced_custom_d3": (lambda: init_(Differenced()), 3, C * H * H),
    "differenced_exported_d3": (lambda: exported(init_(Differenced()), 3), 3, C * H * H),
    "heads_custom_d4": (lambda: init_(HeadsDecoder(4), scale=1.0), 4, 15),
    "axes_custom_d3": (lambda: init_(AxesDecoder(3), scale=1.0), 3, 48),
    "axes_exported_d4": (lambda: exported(init_(AxesDecoder(4), scale=1.0), 4), 4, 48),
    "heads_exported_d3": (lambda: exported(init_(HeadsDecoder(3), scale=1.0), 3), 3, 15),
}


@pytest.mark.parametrize("name", list(DECODERS))
def test_decoder_jacobian_and_arbitrary_directions(name):
    """Whole decoders in every form: recognized; Jacobian rows and k = 2 (!= d) random
    directions per point equal forward-mode AD to 1e-10; k = 0 directions give (0, P, F);
    P = 1 works."""
    make, d, D = DECODERS[name]
    model = make()
    z = randn(3, d, scale=1.5)
    value, jac = check(model, z)
    assert value.shape == (3, D) and jac.shape == (d, 3, D)
    check(model, z, randn(2, 3, d, seed=5))
    value0, out0 = value_and_tangents(model, z, z.new_empty(0, 3, d))
    assert out0.shape == (0, 3, D)
    assert_close_rel(value0, value, 1e-12)
    check(model, z[:1], randn(1, 1, d, seed=6))


class HardsigmoidDecoder(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.fc2 = nn.Linear(d, 16), nn.Linear(16, 10)

    def forward(self, z):
        return F.hardsigmoid(self.fc2(F.celu(self.fc(z), 0.7)) * 3.0)


@pytest.mark.parametrize("form", ["custom", "exported"])
def test_functional_hardsigmoid_and_celu(form):
    """F.hardsigmoid (a Hardtanh of x / 6 + 1/2) and F.celu with any alpha, traced and exported:
    recognized, and equal to torch's derivatives to 1e-7 (torch's own take 1/6 and 1/alpha in
    float32)."""
    model = init_(HardsigmoidDecoder(4), scale=1.0)
    model = exported(model, 4) if form == "exported" else model
    _, jac = check(model, randn(6, 4, scale=1.5), rtol=1e-7)
    assert float(jac.abs().max()) > 1e-3


DECOMPOSED = {
    "mnist_sequential": lambda: mnist_sequential(5),
    "mnist_custom": lambda: init_(MnistDecoder(5)),
    "groupnorm_upsample": lambda: around(nn.Sequential(nn.GroupNorm(2, C), nn.Upsample(scale_factor=2))),
    "layernorm_gelu": lambda: init_(LayerNormGeluDecoder(5)),
    "residual": lambda: init_(Residual()),
    "resnet": lambda: init_(ResNetDecoder(5)),  # SiLU decomposes into x * sigmoid(x): a gate
    "gated": lambda: init_(GatedDecoder(5)),
    "heads": lambda: init_(HeadsDecoder(5)),
}


@pytest.mark.parametrize("name", list(DECOMPOSED))
def test_decomposed_export_graph(name):
    """torch.export graphs after run_decompositions() (addmm of a permuted weight, convolution,
    _native_batch_norm_legit_no_training and native_group_norm with getitem) are chains too."""
    model = DECOMPOSED[name]()
    d = model[0].in_features if isinstance(model, nn.Sequential) else model.fc.in_features
    d = model.lift.in_features if isinstance(model, ResNetDecoder) else d
    batch = ({0: torch.export.Dim("P", min=0)},)
    gm = torch.export.export(model, (randn(3, d),), dynamic_shapes=batch).run_decompositions().module()
    targets = {n.target for n in gm.graph.nodes}
    assert torch.ops.aten.addmm.default in targets and torch.ops.aten.linear.default not in targets
    check(gm, randn(4, d, scale=1.5))


@pytest.mark.parametrize("name", ["mnist_sequential_d5", "mnist_exported_d16", "mnist_custom_d8"])
def test_decoder_float32(name):
    make, d, _ = DECODERS[name]
    check(make().float(), randn(4, d, scale=1.5, dtype=torch.float32), rtol=F32_TOL)


@pytest.mark.parametrize("name", ["mnist_sequential_d5", "mnist_exported_d16", "mnist_custom_d8"])
def test_empty_batch(name):
    """P = 0: value (0, F) and derivatives (k, 0, F), before and after the chain is cached."""
    make, d, D = DECODERS[name]
    model = make()
    for _ in range(2):
        value, out = value_and_tangents(model, randn(0, d), randn(2, 0, d))
        assert value.shape == (0, D) and out.shape == (2, 0, D)
        value, jac = jacobian_rows(model, randn(0, d))
        assert value.shape == (0, D) and jac.shape == (d, 0, D)
        jacobian_rows(model, randn(4, d))  # caches the chain


@pytest.mark.parametrize("recognized", [True, False])
def test_decoder_that_refuses_an_empty_batch(recognized):
    """InstanceNorm raises on an empty batch (torch's own IndexError): fastgeo never hands the
    decoder one (the solver decodes empty sets of curves, e.g. when no race is close), in the
    stacked forward mode or not; decode of no points is still a function of them."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, C * 16), nn.Unflatten(1, (C, 4, 4)), nn.InstanceNorm2d(C, affine=True),
                        nn.ELU(), nn.Flatten()).eval()  # fmt: skip
    with pytest.raises(IndexError):
        net(torch.zeros(0, 4))
    mean = net if recognized else (lambda z: net(z))
    z = torch.randn(40, 4)
    with torch.no_grad():
        x = net(z) + 0.01 * torch.randn(40, C * 16)
    prec = fastgeo.RBFPrecision.fit(z, x, net, num_centers=6, steps=10, progress=False)
    metric = fastgeo.ExpectedMetric(mean, prec)
    none = torch.zeros(0, 4, requires_grad=True)
    assert metric.decode(none).shape == (0, C * 16)
    assert torch.autograd.grad(metric.decode(none).sum(), none)[0].shape == (0, 4)
    features, jac_t = metric.features_and_jacobian_t(none.detach())
    assert features.shape == (0, 2 * C * 16) and jac_t.shape == (0, 4, 2 * C * 16)
    value, out = value_and_tangents(mean, none.detach(), torch.zeros(3, 0, 4))
    assert value.shape == (0, C * 16) and out.shape == (3, 0, C * 16)
    res = fastgeo.geodesics(metric, z[:3], z[3:6], method="fast")
    assert bool(torch.isfinite(res.lengths).all())


def test_large_batches_in_chunks(monkeypatch):
    """Points are taken in chunks when the stack would be large: same result to rounding."""
    model = mnist_sequential(5)
    z = randn(11, 5)
    whole = value_and_tangents(model, z, axes(z))
    monkeypatch.setitem(forward_mode.CHUNK_BYTES, "cpu", 1)  # one point per chunk
    chunked = value_and_tangents(model, z, axes(z))
    for a, b in zip(whole, chunked, strict=True):
        assert_close_rel(b, a, 1e-14)


class WideBranch(nn.Module):
    """``h + W2 tanh(W1 h)`` with W1 widening 10 -> 96: the widest stack is inside the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.wide = nn.Linear(10, 96)
        self.back = nn.Linear(96, 10)

    def forward(self, z):
        h = torch.tanh(self.fc(z))
        return h + self.back(torch.tanh(self.wide(h)))


def test_chunks_count_what_a_residual_branch_holds(monkeypatch):
    """The chunks of points are sized by the elements per point held at once, the stacks inside
    a residual branch and the input it waits beside included (a branch wider than the chain's
    outputs once went uncounted); chunked values equal the whole batch's."""
    model = init_(WideBranch())
    z = randn(40, 3)
    chain = stacked_chain(model, z[:4])
    assert chain is not None
    whole = chain.value_and_tangents(z, axes(z))
    assert chain.widest == 10 + 96  # the branch's widest stack beside its input h
    # 16 points (chunks are whole blocks of forward_mode.ROW_ALIGN = 8 points)
    monkeypatch.setitem(forward_mode.CHUNK_BYTES, "cpu", 4 * 106 * z.element_size() * 16)
    rows: list[int] = []
    real = forward_mode.StackedChain._stacked

    def counted(self, x):
        rows.append(x.shape[1])
        return real(self, x)

    monkeypatch.setattr(forward_mode.StackedChain, "_stacked", counted)
    chunked = chain.value_and_tangents(z, axes(z))
    assert max(rows) == 16 and rows[-1] == 8
    for a, b in zip(whole, chunked, strict=True):
        assert_close_rel(b, a, 1e-14)


@pytest.mark.parametrize("recognized", [True, False])
def test_metric_decodes_long_inputs_in_chunks(monkeypatch, recognized):
    """ExpectedMetric.decode (and so length, energy, features) calls the mean on chunks whose
    widest activation fits DECODE_BYTES (conv activations are many times D; 32 x 1024 points
    of an MNIST conv decoder once asked for 29 GB): same values, no call over the chunk size."""
    import fastgeo.decoders.rows as metric_module

    d = 5
    model = mnist_sequential(d)
    calls: list[int] = []

    def mean(z: torch.Tensor) -> torch.Tensor:
        calls.append(z.shape[0])
        return model(z)

    prec = fastgeo.RBFPrecision(randn(7, d), torch.ones(7, dtype=torch.float64), randn(784, 7).abs(), 0.1)
    metric = fastgeo.ExpectedMetric(model if recognized else mean, prec)
    z = randn(3, 100, d)
    whole = metric.decode(z)
    width = forward_mode.activation_width(model, z[0, :4]) if recognized else None
    assert (width is not None) == recognized and (width is None or width >= 784)
    monkeypatch.setattr(metric_module, "DECODE_BYTES", 1)
    monkeypatch.setattr(metric_module, "MIN_DECODE_ROWS", 64)
    if recognized:  # the module itself is the mean: its calls counted by a hook
        model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    calls.clear()
    chunked = metric.decode(z)
    assert_close_rel(chunked, whole, 1e-14)
    # each curve's 100 points padded to whole blocks of ROW_ALIGN rows, decoded 64 at a time
    padded = 3 * -(-100 // metric_module.ROW_ALIGN) * metric_module.ROW_ALIGN
    chunks = calls[calls.index(64) :]  # (after the metric's own checks: a point, the chain's probe)
    assert max(calls) == 64 and sum(chunks) == padded and sum(calls) - sum(chunks) <= 8, calls
    assert_close_rel(metric.length(z), fastgeo.ExpectedMetric(mean, prec).length(z), 1e-14)


@pytest.mark.parametrize("fmt", ["safe", "export"])
def test_saved_conv_generator_is_recognized(tmp_path, fmt):
    """A conv decoder saved with save_generator and loaded back (an nn.Sequential rebuilt from
    the safe format, or a FlatMean around an exported graph) takes the stacked forward mode."""
    mean = mnist_sequential(3)
    g = torch.Generator().manual_seed(0)
    precision = fastgeo.RBFPrecision(torch.randn(4, 3, generator=g, dtype=F64), torch.ones(4, dtype=F64),
                                     torch.rand(784, 4, generator=g, dtype=F64), 0.1)  # fmt: skip
    path = fastgeo.save_generator(tmp_path / f"g.{fmt}", (mean, precision), format=fmt)
    if fmt == "export":
        with pytest.warns(UserWarning, match="trusted code"):
            loaded = fastgeo.load_generator(path, trust=True)
    else:
        loaded = fastgeo.load_generator(path)
    z = randn(4, 3)
    _, jac = check(loaded.mean, z)
    assert_close_rel(jac, jacobian_rows(mean, z)[1], 1e-12)
