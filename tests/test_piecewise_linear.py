"""Decoders with piecewise-linear activations (ReLU, LeakyReLU, Hardtanh, ReLU6) are recognized
as such: calls with lagged Gauss-Newton matrices (d >= 8) keep the secant model for them
(smooth decoders take plain Gauss-Newton steps), and their curves are solved first under the
decoder with its kinks rounded (bench/RESULTS.md, "Piecewise-linear decoders")."""

import importlib
import warnings

import pytest
import torch
from torch import nn

import fastgeo
from fastgeo.decoders import piecewise_linear
from fastgeo.solver import options

D = 12


def mlp(d: int, act: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 16), act, nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, D)).double()


@pytest.mark.parametrize(
    "act,expected",
    [
        (nn.ReLU(), True),
        (nn.LeakyReLU(0.2), True),
        (nn.ReLU6(), True),
        (nn.Hardtanh(-2.0, 2.0), True),
        (nn.PReLU(16), True),
        (nn.Hardswish(), True),
        (nn.Hardsigmoid(), True),
        (nn.Mish(), False),
        (nn.SELU(), False),
        (nn.ELU(), False),
        (nn.GELU(), False),
        (nn.Softplus(), False),
    ],
)
def test_piecewise_linear_chains(act, expected):
    assert piecewise_linear(mlp(3, act)) is expected


def test_kinks_inside_residual_branches_count():
    assert piecewise_linear(residual_relu(3)) and piecewise_linear(gated_relu(3))


def test_unrecognized_decoders_are_not_called_piecewise_linear():
    model = mlp(3, nn.ReLU())
    assert piecewise_linear(lambda z: torch.cumsum(model(z), 1)) is False  # not a chain: structure unknown
    assert piecewise_linear(lambda z: model(z)) is True  # a function around the chain is traced
    hooked = mlp(3, nn.ReLU())
    hooked.register_forward_hook(lambda mod, inp, out: out)
    assert piecewise_linear(hooked) is False


def metric(d: int, act: nn.Module) -> fastgeo.ExpectedMetric:
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(6, d, generator=g, dtype=torch.float64)
    prec = fastgeo.RBFPrecision(centers, torch.full((6,), 0.5, dtype=torch.float64),
                                torch.rand(D, 6, generator=g, dtype=torch.float64) * 20, 0.05)  # fmt: skip
    return fastgeo.ExpectedMetric(mlp(d, act), prec)


@pytest.mark.parametrize("act,secant", [(nn.ReLU(), True), (nn.ELU(), False)])
def test_lagged_calls_keep_the_secant_model_for_piecewise_linear_decoders(act, secant):
    """d = 8: lagged matrices; the result records which steps were taken; the curves converge;
    no warning."""
    m = metric(8, act)
    assert m.piecewise_linear_mean is secant
    z = m.precision.centers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fastgeo.geodesics(m, z[:3], z[3:], tol=1e-6)
    assert res.options["lagged"] is True and res.options["secant"] is secant
    assert res.converged.all()


def test_the_benchmark_override_forces_either_way(monkeypatch):
    m = metric(8, nn.ReLU())
    z = m.precision.centers
    monkeypatch.setattr(options, "LAGGED_SECANT", False)
    res = fastgeo.geodesics(m, z[:2], z[3:5], max_iter=3)
    assert res.options["secant"] is False
    monkeypatch.setattr(options, "LAGGED_SECANT", True)
    assert fastgeo.geodesics(metric(8, nn.ELU()), z[:2], z[3:5], max_iter=3).options["secant"] is True


# --- smoothed first: the decoder with its kinks rounded (fastgeo.decoders.smoothing) ---------


def conv_decoder(d: int) -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Linear(d, 32), nn.ReLU(), nn.Unflatten(1, (2, 4, 4)), nn.ConvTranspose2d(2, 4, 4, 2, 1),
        nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), nn.GroupNorm(2, 4),
        nn.Conv2d(4, 3, 3, padding=1), nn.Hardtanh(-0.5, 0.5), nn.Flatten(),
    ).double().eval()  # fmt: skip


def relu6_mlp(d: int) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Linear(d, 16), nn.ReLU6(), nn.Linear(16, 16), nn.LayerNorm(16), nn.LeakyReLU(0.1), nn.Linear(16, D)
    ).double()


def prelu_hardswish_mlp(d: int) -> nn.Sequential:
    torch.manual_seed(5)
    net = nn.Sequential(
        nn.Linear(d, 16), nn.PReLU(16), nn.Linear(16, 16), nn.Hardswish(), nn.Linear(16, 16), nn.PReLU(),
        nn.Linear(16, D), nn.Hardsigmoid(), nn.Unflatten(1, (3, D // 3)), nn.Softmax(dim=1), nn.Flatten(),
    ).double()  # fmt: skip
    with torch.no_grad():
        net[1].weight.uniform_(-0.3, 0.5)  # slopes of either sign
        net[2].weight.mul_(6.0)  # Hardswish's kinks at +-3 within reach
    return net


class ResidualReLU(nn.Module):
    """A residual MLP with ReLU inside its blocks (the kinks sit in branches)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.out = nn.Linear(d, 16), nn.Linear(16, D)
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, z):
        h = torch.tanh(self.fc(z))
        h = h + self.b(torch.relu(self.a(h)))
        return self.out(h + torch.nn.functional.leaky_relu(self.b(h), 0.1))


def residual_relu(d: int) -> nn.Module:
    torch.manual_seed(6)
    return ResidualReLU(d).double()


class GatedReLU(nn.Module):
    """A gate whose branches hold ReLUs, ``relu(a(h)) * sigmoid(b(relu(h)))``; with ``cat``, the
    two branches concatenated instead."""

    def __init__(self, d: int, cat: bool = False) -> None:
        super().__init__()
        self.cat = cat
        self.fc, self.out = nn.Linear(d, 16), nn.Linear(32 if cat else 16, D)
        self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, z):
        h = self.fc(z)
        a, b = torch.relu(self.a(h)), torch.sigmoid(self.b(torch.relu(h)))
        return self.out(torch.cat([a, b], 1) if self.cat else a * b)


def gated_relu(d: int) -> nn.Module:
    torch.manual_seed(7)
    return GatedReLU(d).double()


def concatenated_relu(d: int) -> nn.Module:
    torch.manual_seed(9)
    return GatedReLU(d, cat=True).double()


class ClampMLP(nn.Module):
    """Clamps open on one side (``clamp(min=)``, ``clamp_max``) and on none (``clamp(a, b)``)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.fc2, self.out = nn.Linear(d, 16), nn.Linear(16, 16), nn.Linear(16, D)

    def forward(self, z):
        h = self.fc2(torch.clamp(self.fc(z), min=-0.1))
        return self.out(h.clamp_max(0.2).clamp(-0.5, 0.1))


def clamp_mlp(d: int) -> nn.Module:
    torch.manual_seed(8)
    return ClampMLP(d).double()


class InPlaceAfterActivations(nn.Module):
    """Steps that update their input in place (a BatchNorm, a shift by a tensor, a scale by a
    number) right after activations whose backward reads their output (ELU, tanh, sigmoid)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc, self.bn = nn.Linear(d, 16), nn.BatchNorm1d(16)
        self.fc2, self.out = nn.Linear(16, 16), nn.Linear(16, D)
        self.shift = nn.Parameter(torch.randn(16))

    def forward(self, z):
        h = self.bn(torch.nn.functional.elu(torch.nn.functional.leaky_relu(self.fc(z), 0.1)))
        h = torch.tanh(self.fc2(h)) + self.shift
        return torch.sigmoid(self.out(h)) * 0.5 + 0.5


def in_place_after_activations(d: int) -> nn.Module:
    torch.manual_seed(10)
    return InPlaceAfterActivations(d).double().eval()


@pytest.mark.parametrize(
    "make",
    [conv_decoder, relu6_mlp, prelu_hardswish_mlp, residual_relu, gated_relu, concatenated_relu, clamp_mlp,
     in_place_after_activations],
)  # fmt: skip
def test_smoothed_chain_is_smooth_and_differentiated_exactly(make):
    """Every piecewise-linear activation is replaced; the stacked forward mode of the smoothed
    chain matches torch.func; autograd through it passes gradcheck; it is close to the decoder
    and tends to it as the rounding sharpens."""
    from fastgeo.decoders import SmoothedChain, generic_jacobian_rows, jacobian_rows, smoothed
    from fastgeo.decoders.activations import PIECEWISE_LINEAR
    from fastgeo.decoders.recognize import recognize
    from fastgeo.decoders.smoothing import smooth_steps
    from fastgeo.decoders.steps import walk

    net = make(3)
    g = torch.Generator().manual_seed(4)
    probe = torch.randn(32, 3, generator=g, dtype=torch.float64)
    smooth = smoothed(net, probe)
    names = [s.name for s in walk(smooth.steps) if type(s).__name__ == "Activation"]
    assert names and not set(names) & PIECEWISE_LINEAR
    assert all(s.beta is not None for s in walk(smooth.steps) if type(s).__name__ == "PReLU")
    assert not piecewise_linear(smooth)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(smooth, (z[:2],), fast_mode=True)
    value, J = jacobian_rows(smooth, z.detach())
    value_ref, J_ref = generic_jacobian_rows(smooth, z.detach())
    torch.testing.assert_close(value, value_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(J, J_ref, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        scale = net(z).abs().max()
        gap = (smooth(z) - net(z)).abs().max() / scale
        sharp = SmoothedChain(smooth_steps(recognize(net)[0], probe, sharpness=1e6))
        sharp_gap = (sharp(z) - net(z)).abs().max() / scale
    assert 1e-4 < gap < 0.3
    assert sharp_gap < 1e-5


def test_rounding_is_relative_to_the_pre_activations():
    """A ReLU layer whose inputs are 10x larger (and its outputs scaled back) is the same function,
    and its smoothed stand-in is the same too."""
    from fastgeo.decoders import smoothed

    torch.manual_seed(5)
    small = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, D)).double()
    large = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, D)).double()
    with torch.no_grad():
        large[0].weight.copy_(10 * small[0].weight)
        large[0].bias.copy_(10 * small[0].bias)
        large[2].weight.copy_(small[2].weight / 10)
        large[2].bias.copy_(small[2].bias)
    probe = torch.randn(32, 3, dtype=torch.float64)
    z = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(large(z), small(z))
        torch.testing.assert_close(smoothed(large, probe)(z), smoothed(small, probe)(z))
        assert not torch.allclose(smoothed(small, probe)(z), small(z), atol=1e-6)


def test_smoothed_metric_only_for_piecewise_linear_means():
    relu, elu = metric(3, nn.ReLU()), metric(3, nn.ELU())
    assert elu.smoothed() is None
    smooth = relu.smoothed()
    assert smooth is not None and relu.smoothed() is smooth  # kept per structure
    assert smooth.precision is relu.precision and not smooth.piecewise_linear_mean


@pytest.mark.parametrize("d", [4, 8])
def test_piecewise_linear_decoders_are_solved_smoothed_first(d, monkeypatch):
    """The smoothed curves race as a start (their work and iterations counted); off, the same
    call starts from the true decoder's starts alone. Smooth decoders are not smoothed."""
    from fastgeo.solver import smoothing

    m = metric(d, nn.ReLU())
    z = m.precision.centers
    res = fastgeo.geodesics(m, z[:3], z[3:], tol=1e-6)
    monkeypatch.setattr(smoothing, "SMOOTH_FIRST", False)
    plain = fastgeo.geodesics(m, z[:3], z[3:], tol=1e-6)
    assert res.options["smoothed_first"] is True and plain.options["smoothed_first"] is False
    assert res.converged.all()
    assert res.decoder_evals > plain.decoder_evals
    assert (res.lengths <= plain.lengths * (1 + 1e-3)).all()
    monkeypatch.setattr(smoothing, "SMOOTH_FIRST", True)
    smooth_res = fastgeo.geodesics(metric(d, nn.ELU()), z[:3], z[3:], max_iter=3)
    assert smooth_res.options["smoothed_first"] is False
    assert "smoothed" not in smooth_res.init_names


@pytest.mark.parametrize("refine", [None, 1, 3])
def test_the_true_decoders_own_start_races_the_smoothed_curves(refine, monkeypatch):
    """Under the true decoder the smoothed curves race against the best of its own starts
    (smoothing.TRUE_REFINE racers in all), unless the call sets ``refine``; the smoothed stage
    keeps the method's refine (four racers in d >= 4: of the straight line, the warm and explored
    starts and two graph corridors)."""
    batches = importlib.import_module("fastgeo.solver.batches")  # where each batch is solved
    seen = []
    original = batches.solve_batch

    def spy(metric, z0, z1, opts, init, *args, **kwargs):
        seen.append((init is not None, opts.refine))
        return original(metric, z0, z1, opts, init, *args, **kwargs)

    monkeypatch.setattr(batches, "solve_batch", spy)
    m = metric(4, nn.ReLU())
    z = m.precision.centers
    res = fastgeo.geodesics(m, z[:2], z[3:5], max_iter=20, **({} if refine is None else {"refine": refine}))
    assert res.options["smoothed_first"] is True
    smoothed_stage = [r for given, r in seen if not given]
    true_stage = [r for given, r in seen if given]
    assert smoothed_stage and true_stage
    assert set(smoothed_stage) == {4 if refine is None else refine}
    assert set(true_stage) == {2 if refine is None else refine}


@pytest.mark.parametrize("kwargs", [{"family": "legendre"}, {"subdivide": False}, {"m": 5, "n_points": 30}])
def test_smoothed_first_keeps_the_calls_options(kwargs):
    """The smoothed stage takes the call's family, basis and subdivision: results come in the
    basis the call asked for (here never subdivided)."""
    m = metric(4, nn.ReLU())
    z = m.precision.centers
    res = fastgeo.geodesics(m, z[:2], z[3:5], max_iter=20, **kwargs)
    assert res.options["smoothed_first"] is True
    expected = {"family": "legendre", "m": 12} if "family" in kwargs else {"family": "bspline"}
    assert res.curves.basis.family == expected["family"]
    if "subdivide" in kwargs or "family" in kwargs:
        assert res.curves.basis.m == 12
    assert torch.isfinite(res.lengths).all()


@pytest.mark.parametrize("levels", [1, 2])
def test_smoothed_first_halves_the_spans_as_often_as_a_plain_call(levels):
    """The smoothed stage subdivides once and the true decoder's solve, started in that finer
    basis, as many times fewer: results in the basis a plain call's ``subdivide`` gives."""
    m = metric(4, nn.ReLU())
    z = m.precision.centers
    res = fastgeo.geodesics(m, z[:2], z[3:5], max_iter=20, subdivide=levels)
    assert res.options["smoothed_first"] is True
    assert res.curves.basis.m - 1 == (12 - 1) * 2**levels
    assert res.options["subdivide"] == levels - 1  # the true decoder's solve


def test_not_smoothed_in_two_dimensions():
    """d < 4: the graph's corridors and the race of every start already found the curves."""
    res = fastgeo.geodesics(
        metric(2, nn.ReLU()), *metric(2, nn.ReLU()).precision.centers[:4].split(2), max_iter=3
    )
    assert res.options["smoothed_first"] is False and "smoothed" not in res.init_names


def test_smoothed_first_does_not_depend_on_the_batch():
    m = metric(8, nn.LeakyReLU(0.1))
    z = m.precision.centers
    together = fastgeo.geodesics(m, z[:2], z[3:5], tol=1e-7)
    alone = [fastgeo.geodesics(m, z[i : i + 1], z[3 + i : 4 + i], tol=1e-7) for i in range(2)]
    for i, r in enumerate(alone):
        torch.testing.assert_close(r.lengths[0], together.lengths[i], rtol=1e-9, atol=0)
        assert r.status[0] == together.status[i]
