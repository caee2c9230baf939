"""Forward-mode Jacobians of decoder means (``fastgeo.jacobian``).

``jacobian_rows`` takes the stacked forward mode for decoders that ``mlp_chain`` recognizes as
chains of linear layers and pointwise activations, and ``generic_jacobian_rows``
(``torch.func.jvp`` under ``vmap``) otherwise; the generic path is the reference. Checked:

- recognition of ``nn.Sequential`` (every supported activation, nested, bias-free layers), bare
  ``nn.Linear``, and ``torch.export`` graphs (a generator saved and loaded with
  ``fastgeo.save_generator(format='export')`` / ``load_generator(trust=True)``, and the shipped
  ``tests/data/digits.safetensors``);
- values and Jacobians equal the generic path: float64 to 1e-12 relative, float32 to 2e-6 of
  the largest entry (a few float32 eps: both paths round differently, see ``F32_TOL``), on edge
  shapes (P = 0, P = 1, d = 1, d = 3, F = 1), and equal an independent reverse-mode oracle
  (``torch.autograd.functional.jacobian``);
- decoders that are not plain chains (unsupported layers, hooks, ``forward`` overrides, plain
  functions) are not recognized and still get correct values; symbolically traced graphs are
  (convolutional decoders, custom modules and arbitrary directions: ``test_decoders_conv.py``);
- in-place changes of the parameters after the first call are seen;
- ``ExpectedMetric.metric_tensor`` equals ``J^T J`` of ``metric.features`` by reverse mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric
from helpers import assert_close_rel, randn
from tangent_checks import POINTWISE
from torch import nn

import fastgeo
from fastgeo.decoders import FlatMean, generic_jacobian_rows, jacobian_rows, mlp_chain
from fastgeo.decoders.steps import Activation, Affine

DATA = Path(__file__).parent / "data"

# float32: the stacked GEMMs and the activation derivatives taken from their own outputs round
# differently from torch.func.jvp; measured differences: up to ~6 float32 eps (the digits generator).
F32_TOL = 2e-6

ACTIVATIONS = {**POINTWISE, "identity": lambda: nn.Identity()}

# (P, d, F): a generic case and the edge cases P = 1, d = 1, d = 3, F = 1.
SHAPES = [(7, 2, 4), (1, 2, 4), (6, 1, 3), (5, 3, 4), (5, 2, 1)]
SHAPE_IDS = ["generic", "P=1", "d=1", "d=3", "F=1"]


def init_(module: nn.Module, seed: int = 0, scale: float = 1.0) -> nn.Module:
    """Overwrite every parameter with seeded N(0, scale^2) values (independent of the global RNG;
    unit-scale weights drive the pre-activations through both regimes of every activation)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64))
    return module


def mlp(act: str, d: int, F: int, dtype=torch.float64, width: int = 8, seed: int = 0) -> nn.Sequential:
    """Linear(d, w) - act - Linear(w, w) - act - Linear(w, F)."""
    layers = [nn.Linear(d, width), ACTIVATIONS[act](), nn.Linear(width, width), ACTIVATIONS[act](),
              nn.Linear(width, F)]  # fmt: skip
    return init_(nn.Sequential(*layers), seed).to(dtype)


def latents(P: int, d: int, dtype=torch.float64, seed: int = 1, scale: float = 2.0) -> torch.Tensor:
    """P latent points (P, d) ~ N(0, scale^2): scale 2 reaches the activations' far regimes."""
    return randn(P, d, dtype=dtype, seed=seed, scale=scale)


def assert_rows_equal(fn, z: torch.Tensor, rtol: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """jacobian_rows(fn, z) == generic_jacobian_rows(fn, z) to ``rtol`` of the largest entry;
    returns the fast result."""
    value, jac = jacobian_rows(fn, z)
    value_ref, jac_ref = generic_jacobian_rows(fn, z)
    P, d = z.shape
    assert value.shape == value_ref.shape and value.shape[0] == P
    assert jac.shape == (d, P, value.shape[1])
    assert value.dtype == jac.dtype == z.dtype
    assert_close_rel(value, value_ref, rtol)
    assert_close_rel(jac, jac_ref, rtol)
    return value, jac


def reverse_mode_rows(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value (P, F) and Jacobian rows (d, P, F) by ``torch.autograd.functional.jacobian``
    (reverse mode, the full (P, F, P, d) Jacobian, whose off-diagonal blocks must vanish)."""
    full = torch.autograd.functional.jacobian(fn, z)  # (P, F, P, d)
    P = z.shape[0]
    blocks = full.diagonal(dim1=0, dim2=2)  # (F, d, P)
    off = full * (1 - torch.eye(P, dtype=z.dtype))[:, None, :, None]
    assert float(off.abs().max()) == 0.0, "fn is not pointwise"
    with torch.no_grad():
        return fn(z), blocks.permute(1, 2, 0)


# ----------------------------------------------------------------------------- recognized chains


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_sequential_float64_equals_generic(act, shape):
    """Every supported activation: recognized, and value and Jacobian equal the jvp reference to
    1e-12 relative in float64, pre-activations covering both sides of each activation's kinks."""
    P, d, F = shape
    model = mlp(act, d, F)
    z = latents(P, d)
    assert mlp_chain(model, z[:4]) is not None
    assert_rows_equal(model, z)
    if P > 1:  # the pre-activations cross 0 and the softplus threshold (5 / beta = 2.5)
        with torch.no_grad():
            pre = torch.cat([model[:i](z).flatten() for i in (1, 3)])
        assert bool((pre > 2.5).any()) and bool((pre < 0).any())


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_sequential_float32_equals_generic(act, shape):
    """float32: both paths agree to F32_TOL of the largest entry, and the fast path is within
    F32_TOL of the float64 result too (measured: ~4 float32 eps)."""
    P, d, F = shape
    model = mlp(act, d, F, dtype=torch.float32)
    z = latents(P, d, dtype=torch.float32)
    assert mlp_chain(model, z[:4]) is not None
    value, jac = assert_rows_equal(model, z, rtol=F32_TOL)
    value64, jac64 = generic_jacobian_rows(mlp(act, d, F), z.double())
    for got, ref in ((value, value64), (jac, jac64)):
        assert_close_rel(got.double(), ref, 0.0, atol_rel=F32_TOL)


def test_empty_batch_gives_empty_rows():
    """P = 0: value (0, F) and Jacobian (d, 0, F), before and after the chain is cached."""
    model = mlp("elu", 3, 5)
    for _ in range(2):
        value, jac = jacobian_rows(model, latents(0, 3))
        assert value.shape == (0, 5) and jac.shape == (3, 0, 5)
        jacobian_rows(model, latents(4, 3))  # caches the chain: the next round is the warm path


def test_nested_sequential_bias_free_and_inplace_activations():
    """Nested Sequentials, Linear without bias, inplace activations and Identity flatten to one
    chain."""
    model = init_(nn.Sequential(
        nn.Sequential(nn.Linear(3, 6, bias=False), nn.ELU(inplace=True)),
        nn.Identity(),
        nn.Sequential(nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True)), nn.Linear(5, 4)),
        nn.Tanh(),
    )).double()  # fmt: skip
    z = latents(9, 3)
    chain = mlp_chain(model, z[:4])
    assert chain is not None and sum(isinstance(s, Affine) for s in chain.steps) == 3
    assert_rows_equal(model, z)


@pytest.mark.parametrize("P,d,F", [(6, 2, 5), (1, 1, 1)], ids=["generic", "P=d=F=1"])
def test_bare_linear(P, d, F):
    """A bare nn.Linear is a chain of one affine layer: Jacobian rows are W^T, value W z + b."""
    model = init_(nn.Linear(d, F)).double()
    z = latents(P, d)
    assert mlp_chain(model, z[:4]) is not None
    value, jac = assert_rows_equal(model, z)
    torch.testing.assert_close(jac, model.weight.T[:, None, :].expand(d, P, F), rtol=0, atol=0)


def test_every_activation_in_one_chain_against_reverse_mode():
    """Independent oracle: torch.autograd.functional.jacobian (reverse mode) of a chain through
    every supported activation, float64, to 1e-12 relative."""
    acts = [a for a in ACTIVATIONS if a != "identity"]
    layers: list[nn.Module] = [nn.Linear(3, 8)]
    for a in acts:
        layers += [ACTIVATIONS[a](), nn.Linear(8, 8)]
    model = init_(nn.Sequential(*layers, nn.Identity(), nn.Linear(8, 5)), scale=0.8).double()
    z = latents(6, 3)
    assert mlp_chain(model, z[:4]) is not None
    value, jac = jacobian_rows(model, z)
    value_rev, jac_rev = reverse_mode_rows(model, z)
    assert_close_rel(value, value_rev, 1e-12)
    assert_close_rel(jac, jac_rev, 1e-12)
    assert float(jac_rev.abs().max()) > 1e-3  # the oracle is not trivially zero


# ----------------------------------------------------------------------------- exported graphs


@pytest.fixture(scope="module")
def saved_generator(tmp_path_factory):
    """A Linear-ELU-Linear-ELU-Linear mean (d = 2, D = 6, float64) saved with torch.export and
    loaded back: (original mean, loaded ExpectedMetric)."""
    mean = init_(nn.Sequential(nn.Linear(2, 16), nn.ELU(), nn.Linear(16, 16), nn.ELU(),
                               nn.Linear(16, 6)), scale=0.7).double()  # fmt: skip
    precision = bumpy_metric().precision
    path = tmp_path_factory.mktemp("gen") / "mlp.pt2"
    fastgeo.save_generator(path, (mean, precision), format="export")
    with pytest.warns(UserWarning, match="trusted code"):
        return mean, fastgeo.load_generator(path, trust=True)


def test_loaded_exported_generator_is_recognized(saved_generator):
    """The loaded mean (FlatMean around an exported GraphModule) is a chain; its rows equal the
    generic path and the original module's."""
    mean, loaded = saved_generator
    assert type(loaded.mean) is FlatMean and isinstance(loaded.mean.flat, torch.fx.GraphModule)
    z = latents(11, 2)
    assert mlp_chain(loaded.mean, z[:4]) is not None
    value, jac = assert_rows_equal(loaded.mean, z)
    value_orig, jac_orig = generic_jacobian_rows(mean, z)
    torch.testing.assert_close(value, value_orig, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(jac, jac_orig, rtol=1e-12, atol=1e-14)
    for P in (1, 0):
        value, jac = jacobian_rows(loaded.mean, latents(P, 2))
        assert value.shape == (P, 6) and jac.shape == (2, P, 6)


def test_loaded_exported_generator_sees_inplace_weight_changes(saved_generator):
    """The graph's parameters are read at call time: an in-place change after the first call
    shows in the fast path (restored afterwards: the fixture is shared)."""
    _, loaded = saved_generator
    z = latents(5, 2, seed=4)
    before = assert_rows_equal(loaded.mean, z)
    name, weight = next((n, p) for n, p in loaded.mean.flat.named_parameters() if n.endswith("weight"))
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.mul_(-1.5)
        after = assert_rows_equal(loaded.mean, z)
        assert not torch.allclose(after[1], before[1]), name
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    torch.testing.assert_close(jacobian_rows(loaded.mean, z)[1], before[1], rtol=0, atol=0)


def test_exported_graph_with_every_activation():
    """torch.export of a chain through every supported activation (ELU alpha, LeakyReLU slope and
    Softplus beta / threshold as graph arguments, a bias-free last layer) is recognized."""
    layers: list[nn.Module] = [nn.Linear(2, 8)]
    for a in ACTIVATIONS:
        layers += [ACTIVATIONS[a](), nn.Linear(8, 8)]
    model = init_(nn.Sequential(*layers, nn.Linear(8, 3, bias=False)), scale=0.8).double()
    z = latents(6, 2)
    gm = torch.export.export(model, (z,), dynamic_shapes=({0: torch.export.Dim("P", min=0)},)).module()
    chain = mlp_chain(gm, z[:4])
    assert chain is not None
    acts = [(s.name, s.params) for s in chain.steps if isinstance(s, Activation)]
    assert acts == [("elu", (1.0,)), ("elu", (0.5,)), ("relu", ()), ("leaky_relu", (0.1,)), ("tanh", ()),
                    ("sigmoid", ()), ("softplus", (2.0, 1.0)), ("softplus", (2.0, 5.0)), ("silu", ()),
                    ("gelu", ()), ("gelu_tanh", ()), ("hardtanh", (-0.3, 0.5)), ("hardtanh", (-0.5, 0.8)),
                    ("hardtanh", (0.0, 6.0))]  # fmt: skip
    assert_rows_equal(gm, z)
    value, jac = assert_rows_equal(model, z)
    torch.testing.assert_close(jacobian_rows(gm, z)[1], jac, rtol=1e-12, atol=1e-14)


def test_shipped_digits_generator_is_recognized():
    """tests/data/digits.safetensors (float32): recognized, rows equal the generic path to F32_TOL."""
    metric = fastgeo.load_generator(DATA / "digits.safetensors")
    z = latents(10, metric.latent_dim, dtype=metric.dtype)
    assert mlp_chain(metric.mean, z[:4]) is not None
    assert_rows_equal(metric.mean, z, rtol=F32_TOL)


# ----------------------------------------------------------------------------- not recognized


class PlusOne(nn.Sequential):
    """A Sequential subclass whose forward adds a constant to the chain of its children: traced,
    the constant is a step of its own (recognized, exactly)."""

    offset = 1.0

    def forward(self, z):
        return super().forward(z) + self.offset


class PlusTiny(PlusOne):
    """Adds less than the probe check's tolerance (1e-4): recognized with the offset all the same."""

    offset = 1e-7


class PlusInput(nn.Sequential):
    """A Sequential subclass whose forward adds a cumulative sum of its input back: not a chain
    (``cumsum`` is no known step; ``+ z[:, :1]`` alone would be a residual chain)."""

    def forward(self, z):
        return super().forward(z) + torch.cumsum(z, 1)[:, 1:]


def _with_softshrink():
    return init_(nn.Sequential(nn.Linear(2, 6), nn.Softshrink(0.1), nn.Tanh(), nn.Linear(6, 3))).double()


def _hooked(where: str):
    model = mlp("tanh", 2, 3)
    if where == "sequential":
        model.register_forward_hook(lambda mod, inp, out: out + 1)
    elif where == "tiny":  # below the probe check's tolerance: only the hook check refuses it
        model.register_forward_hook(lambda mod, inp, out: out * (1 + 1e-7))
    elif where == "child":
        model[2].register_forward_hook(lambda mod, inp, out: 2 * out)
    else:  # a pre-hook rescaling the input
        model.register_forward_pre_hook(lambda mod, inp: (0.5 * inp[0],))
    return model


def _subclass(cls):
    return init_(cls(nn.Linear(2, 6), nn.ELU(), nn.Linear(6, 3))).double()


def _lambda():
    model = mlp("silu", 2, 3)
    return lambda z: torch.cumsum(model(z), 1)  # around a module, but cumsum is no known step


def _function():
    return bumpy_metric().mean  # tanh(z W1^T) W2^T as plain torch code


def _hooked_flat_mean():
    flat = FlatMean(mlp("relu", 2, 3), 2, 3)
    flat.register_forward_hook(lambda mod, inp, out: out - 3)
    return flat


NOT_CHAINS = {
    "softshrink": _with_softshrink,
    "forward_hook": lambda: _hooked("sequential"),
    "child_forward_hook": lambda: _hooked("child"),
    "forward_pre_hook": lambda: _hooked("pre"),
    "tiny_forward_hook": lambda: _hooked("tiny"),
    "subclass_skip": lambda: _subclass(PlusInput),
    "lambda": _lambda,
    "function": _function,
    "flatmean_hook": _hooked_flat_mean,
}


@pytest.mark.parametrize("make", list(NOT_CHAINS.values()), ids=list(NOT_CHAINS))
def test_non_chains_fall_back_to_generic(make):
    """Not recognized (mlp_chain is None), and jacobian_rows still equals the generic path, with
    the value of fn itself (hooks and overrides included) and its reverse-mode Jacobian."""
    fn = make()
    z = latents(6, 2)
    assert mlp_chain(fn, z[:4]) is None
    value, jac = assert_rows_equal(fn, z)
    value_rev, jac_rev = reverse_mode_rows(fn, z)
    torch.testing.assert_close(value, value_rev, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jac, jac_rev, rtol=1e-12, atol=1e-12)


def test_symbolically_traced_graph_is_recognized():
    """A torch.fx.symbolic_trace GraphModule (call_module nodes, not aten ops) is a chain too."""
    fn = torch.fx.symbolic_trace(mlp("elu", 2, 3))
    z = latents(6, 2)
    assert mlp_chain(fn, z[:4]) is not None
    assert_rows_equal(fn, z)


def test_lambda_around_sequential_is_recognized():
    """A function around a module (``lambda z: model(z)``) is traced with the module as its
    submodule: a chain, with the generic path's values and Jacobians."""
    model = mlp("silu", 2, 3)
    fn = lambda z: model(z)  # noqa: E731
    z = latents(6, 2)
    assert mlp_chain(fn, z[:4]) is not None
    assert_rows_equal(fn, z)


def test_flatmean_around_sequential_is_recognized():
    """Control for the hooked FlatMean above: without the hook the wrapped Sequential is a chain."""
    fn = FlatMean(mlp("relu", 2, 3), 2, 3)
    z = latents(6, 2)
    assert mlp_chain(fn, z[:4]) is not None
    assert_rows_equal(fn, z)


# ----------------------------------------------------------------------------- changes after caching


def test_inplace_weight_and_bias_changes_are_seen():
    """The chain reads the parameters at call time: in-place changes (and a re-assigned
    Parameter) after the first call show in the fast path."""
    model = mlp("elu", 2, 3)
    z = latents(5, 2)
    _, jac0 = assert_rows_equal(model, z)
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[2].bias.add_(0.5)
    value1, jac1 = assert_rows_equal(model, z)
    assert not torch.allclose(jac1, jac0)
    model[4].weight = nn.Parameter(init_(nn.Linear(8, 3), seed=9).weight.double())
    _, jac2 = assert_rows_equal(model, z)
    assert not torch.allclose(jac2, jac1)


def _add_hook(model):
    model.register_forward_hook(lambda mod, inp, out: out + 1)


def _replace_activation(model):
    model[1] = nn.Tanh()


def _change_alpha(model):
    model[1].alpha = 0.3


def _append_layer(model):
    model.append(nn.Sigmoid())


STRUCTURAL = {
    "forward_hook_added": _add_hook,
    "activation_replaced": _replace_activation,
    "elu_alpha_changed": _change_alpha,
    "layer_appended": _append_layer,
}


@pytest.mark.parametrize("change", list(STRUCTURAL.values()), ids=list(STRUCTURAL))
def test_structural_changes_after_first_call_are_seen(change):
    """Hooks, replaced or appended layers and activation attributes changed after a first call
    (which cached the recognized chain) are seen."""
    model = mlp("elu", 2, 3)
    z = latents(5, 2)
    jacobian_rows(model, z)  # caches the chain
    change(model)
    assert_rows_equal(model, z)


# ----------------------------------------------------------------------------- metric tensor


def test_metric_tensor_equals_reverse_mode_of_features():
    """ExpectedMetric(MLP mean, RBF precision).metric_tensor(z) == J^T J with J the reverse-mode
    Jacobian of metric.features (float64, 1e-12 relative), for any leading shape: by the chain's
    stacked forward mode under no_grad, by torch.func (differentiable) in grad mode."""
    mean = mlp("softplus_b2_t5", 2, 6)
    metric = fastgeo.ExpectedMetric(mean, bumpy_metric().precision)
    z = latents(8, 2, scale=1.0)
    assert mlp_chain(metric.mean, z[:4]) is not None
    with torch.no_grad():
        M = metric.metric_tensor(z)
    full = torch.autograd.functional.jacobian(metric.features, z)  # (P, 2D, P, d)
    J = full.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (P, 2D, d)
    expected = J.transpose(-1, -2) @ J
    assert_close_rel(M, expected, 1e-12)
    differentiable = metric.metric_tensor(z)
    assert differentiable.requires_grad and not M.requires_grad
    assert_close_rel(differentiable.detach(), expected, 1e-12)
    torch.testing.assert_close(M, M.transpose(-1, -2), rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(metric.metric_tensor(z.reshape(2, 4, 2)), M.reshape(2, 4, 2, 2),
                                   rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("cls", [PlusOne, PlusTiny], ids=["offset", "tiny_offset"])
def test_a_subclass_adding_a_constant_is_traced_with_it(cls):
    """A Sequential subclass whose forward adds a constant: the traced chain includes the constant
    (the type check does not take the children for the whole), values and Jacobians exact."""
    fn = _subclass(cls)
    z = latents(6, 2)
    assert mlp_chain(fn, z[:4]) is not None
    value, jac = assert_rows_equal(fn, z)
    torch.testing.assert_close(value, fn(z), rtol=1e-12, atol=1e-12)
    value_rev, jac_rev = reverse_mode_rows(fn, z)
    torch.testing.assert_close(jac, jac_rev, rtol=1e-10, atol=1e-12)
