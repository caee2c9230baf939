"""A metric as an object users keep and change: its precision replaced (checked, and its smoothed
copies dropped), pickled after use, and every method refused inside ``torch.autocast``."""

import io

import pytest
import torch

import fastgeo


def relu_metric(D=10, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, D)).eval()
    return fastgeo.ExpectedMetric(net, precision(D, seed))


def precision(D=10, seed=0, d=4):
    g = torch.Generator().manual_seed(seed)
    return fastgeo.RBFPrecision(
        torch.randn(6, d, generator=g), torch.ones(6), torch.rand(D, 6, generator=g), 0.1
    )


def test_a_precision_of_another_shape_is_refused_and_a_like_one_taken_whole():
    """A precision of another D made lengths silently wrong (the mean outputs the old D), and a
    replaced precision left the smoothed copies on the old one."""
    metric = relu_metric()
    z0, z1 = torch.zeros(1, 4), torch.ones(1, 4)
    fastgeo.geodesics(metric, z0, z1, method="fast", progress=False)
    assert metric.smoothed() is not None
    for bad in (precision(D=12), precision(d=3), precision().double()):
        with pytest.raises(
            ValueError, match=r"metric.precision must keep the metric's \(d, D, dtype, device\)"
        ):
            metric.precision = bad
    with pytest.raises(TypeError, match="precision must be a fastgeo.RBFPrecision"):
        metric.precision = None
    other = precision(seed=3)
    metric.precision = other
    assert metric.precision is other and metric.smoothed().precision is other
    fresh = fastgeo.ExpectedMetric(metric.mean, other)
    a = fastgeo.geodesics(metric, z0, z1, method="fast", progress=False).lengths
    b = fastgeo.geodesics(fresh, z0, z1, method="fast", progress=False).lengths
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


def test_a_used_metric_pickles():
    """After a solve a ReLU decoder's metric kept smoothed means of local functions: torch.save
    raised "Can't pickle local object"."""
    metric = relu_metric()
    z0, z1 = torch.zeros(1, 4), torch.ones(1, 4)
    before = fastgeo.geodesics(metric, z0, z1, method="fast", progress=False).lengths
    buffer = io.BytesIO()
    torch.save(metric, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    after = fastgeo.geodesics(back, z0, z1, method="fast", progress=False).lengths
    torch.testing.assert_close(after, before, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "method",
    ["metric_tensor", "decode", "mean_embedding", "features", "embedding", "features_and_jacobian", "probe"],
)
def test_every_method_refuses_autocast(method):
    """Some refused autocast, others ran the decoder in bfloat16 and returned bfloat16 (0.3 % off)."""
    metric = relu_metric()
    call = getattr(metric, method)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="autocast"):
        call() if method == "probe" else call(torch.randn(3, 4))


def test_a_decoder_converted_in_place_since_is_named():
    """decoder.double() after the metric was made raised torch's "mat1 and mat2 must have the
    same dtype" from deep in a solve (describe() too)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 10)).eval()
    metric = fastgeo.ExpectedMetric(lambda z: net(z), precision())
    z0, z1 = torch.zeros(1, 4), torch.ones(1, 4)
    net.double()
    with pytest.raises(TypeError, match="converted since the metric was made"):
        fastgeo.geodesics(metric, z0, z1, progress=False)
    net.float()
    assert fastgeo.geodesics(metric, z0, z1, progress=False).converged.all()


@pytest.mark.parametrize(
    "name, value, match",
    [
        ("gammas", -1.0, "gammas must be > 0"), ("weights", -0.5, "weights must be >= 0"),
        ("zeta", 0.0, "zeta must be > 0"), ("centers", float("nan"), "centers contains NaN"),
    ],
)  # fmt: skip
def test_a_precision_broken_since_it_was_made_is_refused_before_a_solve(name, value, match):
    """load_state_dict (or an optimizer step without clamp_weights_) can break what the
    constructor checked: negative gammas gave finite lengths flagged converged."""
    metric = relu_metric()
    state = metric.precision.state_dict()
    state[name] = torch.full_like(state[name], value)
    metric.precision.load_state_dict(state)
    with pytest.raises(ValueError, match="metric.precision: " + match):
        fastgeo.geodesics(metric, torch.zeros(1, 4), torch.ones(1, 4), progress=False)


def test_a_precision_made_under_inference_mode_is_differentiable():
    """Its buffers were inference tensors: metric_tensor in grad mode raised "Inference tensors
    cannot be saved for backward"."""
    with torch.inference_mode():
        prec = precision()
    assert not prec.weights.is_inference() and not prec.centers.is_inference()
    metric = fastgeo.ExpectedMetric(relu_metric().mean, prec)
    z = torch.randn(3, 4, requires_grad=True)
    metric.metric_tensor(z).sum().backward()
    assert z.grad is not None and prec.weights.grad is not None


def test_to_takes_a_device_and_a_dtype_positionally_as_modules_do():
    metric = relu_metric()
    m64 = metric.to("cpu", torch.float64)
    assert m64.dtype == torch.float64 and m64.precision.centers.dtype == torch.float64
    assert metric.to(torch.float64, "cpu").dtype == torch.float64
    with pytest.raises(TypeError, match="dtype twice"):
        metric.to(torch.float64, dtype=torch.float32)
    with pytest.raises(TypeError, match="device twice"):
        metric.to("cpu", device="cpu")
    with pytest.raises(TypeError, match="3 arguments"):
        metric.to("cpu", torch.float64, False)


def test_a_decoder_layer_replaced_by_one_of_another_width_is_refused():
    """The last Linear replaced in place by one of width 1: its outputs broadcast against the
    precision's D = 10, converged lengths of another model."""
    metric = relu_metric()
    z0, z1 = torch.zeros(1, 4), torch.ones(1, 4)
    fastgeo.geodesics(metric, z0, z1, method="fast", progress=False)
    metric.mean[2] = torch.nn.Linear(16, 1)
    for call in (
        lambda: fastgeo.geodesics(metric, z0, z1, progress=False),
        lambda: fastgeo.geodesics(metric, z0, z1, method="fast", progress=False),
        lambda: fastgeo.pairwise_distances(metric, torch.randn(3, 4), progress=False),
        lambda: metric.metric_tensor(z0),
        lambda: metric.features_and_jacobian(z0),
    ):
        with pytest.raises(ValueError, match="returns 1 values per point, the precision models D = 10"):
            call()
