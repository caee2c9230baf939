"""The metric's own methods (length, features, metric_tensor, ...) called by a user: the metric
checked as the solvers check it (training mode aside: a loss while the decoder trains), and inputs
the solvers take taken here too."""

import pytest
import torch
from torch import nn

import fastgeo

F64 = torch.float64


def precision(d=3, D=20, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return fastgeo.RBFPrecision(
        torch.randn(6, d, generator=g), torch.ones(6), torch.rand(D, 6, generator=g), 0.1
    ).to(dtype)


def net(*layers):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), *layers, nn.Tanh(), nn.Linear(16, 20)).eval()


CURVES = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(2))


def methods(metric):
    z = CURVES[0]
    return {
        "length": lambda: metric.length(CURVES),
        "energy": lambda: metric.energy(CURVES),
        "features": lambda: metric.features(z),
        "decode": lambda: metric.decode(z),
        "metric_tensor": lambda: metric.metric_tensor(z),
        "features_and_jacobian": lambda: metric.features_and_jacobian(z),
        "embedding": lambda: metric.embedding(z),
    }


def test_a_decoder_in_training_mode_is_the_users_own_business_in_direct_calls():
    """A loss of the metric's methods while the decoder trains (dropout, batch statistics) runs as
    the user asks; the solvers, whose curves must not depend on their batch, refuse it. The
    checks decode no point in training mode (a BatchNorm would take its statistics)."""
    decoder = net(nn.BatchNorm1d(16), nn.Dropout(0.1))
    metric = fastgeo.ExpectedMetric(decoder, precision())
    decoder.train()
    stats = decoder[1].running_mean.clone()
    assert metric.length(CURVES).shape == (2,)
    assert decoder[1].num_batches_tracked == 1  # the call's own batch, no probe of the checks
    assert not torch.equal(decoder[1].running_mean, stats)
    G = metric.metric_tensor(CURVES[0].clone().requires_grad_())  # a curvature penalty while training
    assert G.requires_grad
    with pytest.raises(ValueError, match="training mode"):
        fastgeo.geodesics(metric, CURVES[0, :1], CURVES[0, 1:2], progress=False)


def test_negative_weights_are_refused_not_nan():
    metric = fastgeo.ExpectedMetric(net(), precision())
    with torch.no_grad():
        metric.precision.weights[0, 0] = -1.0  # an optimizer step without clamp_weights_()
    for call in methods(metric).values():
        with pytest.raises(ValueError, match="weights must be >= 0"):
            call()


def test_a_last_layer_replaced_by_one_of_another_width_is_refused():
    """A Linear(16, 10) put in place of the last layer broadcast silently against D = 20."""
    decoder = net()
    metric = fastgeo.ExpectedMetric(decoder, precision())
    decoder[-1] = nn.Linear(16, 10)
    for call in methods(metric).values():
        with pytest.raises(ValueError, match="returns 10 values per point"):
            call()


def test_a_decoder_converted_in_place_is_refused_by_name():
    decoder = net()
    metric = fastgeo.ExpectedMetric(decoder, precision())
    decoder.double()
    for call in methods(metric).values():
        with pytest.raises(TypeError, match="converted since the metric was made"):
            call()


def test_the_metric_tensor_of_codes_expanded_from_one_row():
    metric = fastgeo.ExpectedMetric(net(), precision())
    z = torch.randn(1, 3)
    G = metric.metric_tensor(z.expand(4, 3))
    torch.testing.assert_close(G, metric.metric_tensor(z.repeat(4, 1)))


class _OldTanh(torch.autograd.Function):
    """An autograd.Function of the old style (forward takes ctx): no forward mode under torch.func."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


def test_the_metric_tensor_of_a_decoder_without_forward_mode_is_differentiable():
    """Solvers and features_and_jacobian took such a decoder (double backward); metric_tensor
    raised torch.func's error about setup_context."""
    torch.manual_seed(0)
    first, last = nn.Linear(3, 16).double(), nn.Linear(16, 20).double()
    old = fastgeo.ExpectedMetric(lambda z: last(_OldTanh.apply(first(z))), precision(dtype=F64))
    plain = fastgeo.ExpectedMetric(lambda z: last(torch.tanh(first(z))), precision(dtype=F64))
    z = torch.randn(5, 3, dtype=F64, requires_grad=True)
    G_old, G = old.metric_tensor(z), plain.metric_tensor(z)
    torch.testing.assert_close(G_old, G)
    grads = [torch.autograd.grad(g.sum(), (z, last.weight)) for g in (G_old, G)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_transforms_over_the_precisions_parameters_still_run():
    """The checks branch on the precision's values, which a vmap over stacked weights cannot:
    inside torch.func transforms they are left out (the metric is checked at the user's own
    calls outside them)."""
    metric = fastgeo.ExpectedMetric(net(), precision())
    W = torch.stack([metric.precision.weights.detach() * s for s in (1.0, 1.5, 2.0)])

    def length(w):
        with torch.nn.utils.stateless._reparametrize_module(metric.precision, {"weights": w}):
            return metric.length(CURVES)

    lengths = torch.func.vmap(length)(W)
    for k in range(3):
        torch.testing.assert_close(lengths[k], length(W[k]))
