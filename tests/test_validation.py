"""Bad input gets a clear ValueError/TypeError naming the argument."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import bumpy_metric, constant_precision
from helpers import rbf_params

import fastgeo

f64 = torch.float64
DATA = Path(__file__).parent / "data"


def rbf(K=3, d=2, D=4):
    """Valid RBF parameters (K = 3, d = 2, D = 4), which each case then spoils in one way."""
    return rbf_params(K, d, D)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        (lambda p: (p[0][:, :1],) + p[1:], ValueError, "centers"),  # only caught via z below
        (lambda p: (p[0], torch.ones(2, dtype=f64)) + p[2:], ValueError, "gammas"),
        (lambda p: p[:2] + (torch.rand(4, 2, dtype=f64), p[3]), ValueError, "weights"),
        (lambda p: p[:3] + (torch.ones(3, dtype=f64),), ValueError, "zeta"),
        (lambda p: (p[0].float(),) + p[1:], TypeError, "dtype"),
        (lambda p: (p[0].long(),) + p[1:], TypeError, "centers"),
        (lambda p: ([[0.0, 0.0]],) + p[1:], TypeError, "centers"),
        (lambda p: p[:3] + (True,), TypeError, r"zeta must be a number or a float tensor"),
    ],
)
def test_ops_reject_bad_rbf_arguments(change, exc, match):
    """fastgeo.ops refuse RBF parameters of the wrong shape, dtype or type, naming the argument."""
    params = change(rbf())
    z = torch.randn(5, 2, dtype=f64)
    with pytest.raises(exc, match=match):
        fastgeo.ops.rbf_precision(z, *params)


def test_ops_reject_bad_points():
    """Curves with N < 2 or of the wrong rank, points of another latent dimension and integer x are
    refused, naming the argument."""
    params = rbf()
    with pytest.raises(ValueError, match="points"):
        fastgeo.ops.rbf_segment_sqdist(torch.randn(2, 1, 2, dtype=f64), *params)  # N < 2
    with pytest.raises(ValueError, match="points"):
        fastgeo.ops.rbf_segment_sqdist(torch.randn(2, 4, 2, 1, dtype=f64), *params)
    with pytest.raises(ValueError, match="latent dimension"):
        fastgeo.ops.rbf_segment_sqdist(torch.randn(2, 4, 3, dtype=f64), *params)
    with pytest.raises(ValueError, match="x"):
        fastgeo.ops.segment_sqdist(torch.randn(2, 1, 3))
    with pytest.raises(TypeError, match="x"):
        fastgeo.ops.segment_sqdist(torch.ones(2, 3, 3, dtype=torch.int64))
    no_axes = (torch.zeros(3, 0, dtype=f64), *params[1:])  # d = 0: a ValueError, not a reshape error
    for op, pts in ((fastgeo.ops.rbf_precision, torch.zeros(4, 0, dtype=f64)),
                    (fastgeo.ops.rbf_segment_sqdist, torch.zeros(2, 4, 0, dtype=f64))):  # fmt: skip
        with pytest.raises(ValueError, match="centers.*d >= 1"):
            op(pts, *no_axes)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"gammas": -torch.ones(3, dtype=f64)}, ValueError, "gammas"),
        ({"gammas": torch.zeros(3, dtype=f64)}, ValueError, "gammas"),
        ({"weights": -torch.ones(4, 3, dtype=f64)}, ValueError, "weights"),
        ({"zeta": 0.0}, ValueError, "zeta"),
        ({"zeta": -1.0}, ValueError, "zeta"),
        ({"centers": torch.full((3, 2), torch.nan, dtype=f64)}, ValueError, "centers"),
        ({"weights": torch.full((4, 3), torch.inf, dtype=f64)}, ValueError, "weights"),
    ],
)
def test_rbf_precision_validates_values(kwargs, exc, match):
    """RBFPrecision refuses non-positive gammas or zeta, negative weights and non-finite values,
    naming the argument."""
    c, g, w, z = rbf()
    args = {"centers": c, "gammas": g, "weights": w, "zeta": z} | kwargs
    with pytest.raises(exc, match=match):
        fastgeo.RBFPrecision(**args)


def test_expected_metric_checks_mean():
    """ExpectedMetric refuses a non-callable mean, a mean of the wrong output size or dtype, and a
    precision that is not one."""
    prec = constant_precision(2, 3)
    with pytest.raises(TypeError, match="mean"):
        fastgeo.ExpectedMetric("not callable", prec)
    with pytest.raises(ValueError, match="D = 3"):
        fastgeo.ExpectedMetric(lambda z: torch.cat([z, z], -1), prec)  # D = 4
    with pytest.raises(TypeError, match="dtype"):
        fastgeo.ExpectedMetric(lambda z: torch.cat([z, z[..., :1]], -1).float(), prec)
    with pytest.raises(TypeError, match="precision"):
        fastgeo.ExpectedMetric(lambda z: z, "prec")
    with pytest.raises(TypeError, match=r"got a tuple \(for a VAE's \(mu, logvar\)"):
        fastgeo.ExpectedMetric(lambda z: (torch.cat([z, z[..., :1]], -1), z), prec)
    with pytest.raises(TypeError, match=r"got a Normal \(pass a function returning its mean"):
        fastgeo.ExpectedMetric(lambda z: torch.distributions.Normal(torch.cat([z, z[..., :1]], -1), 1), prec)
    with pytest.raises(TypeError, match=r"got a dict with keys \['mu', 'logvar'\]"):
        fastgeo.ExpectedMetric(lambda z: {"mu": torch.cat([z, z[..., :1]], -1), "logvar": z}, prec)


@pytest.mark.parametrize(
    "layer", [torch.nn.Dropout(0.1), torch.nn.AlphaDropout(0.1), torch.nn.BatchNorm1d(4)]
)
def test_a_decoder_left_in_training_mode_is_refused(layer):
    """Dropout makes the mean random and batch statistics make it depend on its batch: refused when
    the metric is made and when a solve starts (the decoder set to training mode in between)."""
    torch.manual_seed(0)
    prec = constant_precision(2, 3)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 4), layer, torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"mean is in training mode.*\.eval\(\)"):
        fastgeo.ExpectedMetric(dec, prec)
    metric = fastgeo.ExpectedMetric(dec.eval(), prec)
    z0, z1 = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    dec.train()
    with pytest.raises(ValueError, match="metric.mean is in training mode"):
        fastgeo.geodesics(metric, z0, z1)
    dec.eval()
    assert fastgeo.geodesics(metric, z0, z1).converged.all()


def test_a_vae_set_to_training_mode_after_its_metric_is_refused():
    """A decoder given as a method of its VAE (whose encoder may be in training mode: not refused
    when the metric is made) whose dropout was in eval mode then, set to training mode since: a
    solve refuses it (it returned a random curve 500x long, silently)."""

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.5))
            layers = torch.nn.Linear(2, 8), torch.nn.Dropout(0.2), torch.nn.Linear(8, 3)
            self.dec = torch.nn.Sequential(*layers)

        def decode(self, z):
            return self.dec(z)

    torch.manual_seed(0)
    vae = VAE().double().eval()
    vae.encoder.train()  # the encoder's own mode is not the decoder's business
    metric = fastgeo.ExpectedMetric(vae.decode, constant_precision(2, 3))
    z0, z1 = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    assert fastgeo.geodesics(metric, z0, z1).converged.all()
    vae.encoder.eval()
    metric = fastgeo.ExpectedMetric(vae.decode, constant_precision(2, 3))  # the encoder's dropout found too
    vae.encoder.train()  # off the decoder's path (an encoder trained against a frozen decoder): fine
    assert fastgeo.geodesics(metric, z0, z1).converged.all()
    vae.train()
    with pytest.raises(
        ValueError,
        match=r"in eval mode when the metric was made are in training mode now \(Dropout VAE\.encoder\.1, "
        r"Dropout VAE\.dec\.1; a \.train\(\) since\?\)",
    ):
        fastgeo.geodesics(metric, z0, z1)
    vae.eval()
    assert fastgeo.geodesics(metric, z0, z1).converged.all()


def test_geodesics_rejects_bad_input():
    """geodesics() refuses each bad argument (shapes, dtypes, non-finite points, options out of
    range or of the wrong type), naming it."""
    metric = bumpy_metric()
    z = torch.randn(4, 2, dtype=f64)
    cases = [
        (dict(z0=z, z1=z[:3]), ValueError, "z0 and z1"),
        (dict(z0=z, z1=torch.randn(4, 3, dtype=f64)), ValueError, "z1"),
        (dict(z0=z.float(), z1=z.float()), TypeError, "z0"),
        (dict(z0=z, z1=z.float()), TypeError, "z1"),
        (dict(z0=z[0], z1=z[1]), ValueError, "z0"),
        (dict(z0=z.numpy(), z1=z), TypeError, "z0"),
        (dict(z0=torch.full_like(z, torch.nan), z1=z), ValueError, "z0"),
        (dict(z0=z, z1=z.clone().fill_(torch.inf)), ValueError, "z1"),
        (dict(z0=z, z1=z, n_points=1), ValueError, "n_points"),
        (dict(z0=z, z1=z, m=0), ValueError, "m "),
        (dict(z0=z, z1=z, m=2.5), TypeError, "m "),
        (dict(z0=z, z1=z, method="magic"), ValueError, "method"),
        (dict(z0=z, z1=z, family="hermite"), ValueError, "family"),
        (dict(z0=z, z1=z, tol=0.0), ValueError, "tol"),
        (dict(z0=z, z1=z, max_iter=-1), ValueError, "max_iter"),
        (dict(z0=z, z1=z, coarse_points=2), ValueError, "coarse_points"),
        (dict(z0=z, z1=z, coarse_points=3), ValueError, "coarse_points must be an integer >= 4"),
        (dict(z0=z, z1=z, coarse_points=16.0), TypeError, "coarse_points"),
        (dict(z0=z, z1=z, warm_start=-1), ValueError, "warm_start"),
        (dict(z0=z, z1=z, warm_start=2.5), TypeError, "warm_start"),
        (dict(z0=z, z1=z, init=torch.zeros(4, 3, 2, dtype=f64)), ValueError, "init"),
    ]
    for kwargs, exc, match in cases:
        with pytest.raises(exc, match=match):
            fastgeo.geodesics(metric, **kwargs)
    with pytest.raises(TypeError, match="metric"):
        fastgeo.geodesics("metric", z, z)


def test_device_mismatch_is_named():
    """End points on another device than the metric: the ValueError says where they are."""
    metric = bumpy_metric()
    z = torch.randn(4, 2, dtype=f64, device="meta")
    with pytest.raises(ValueError, match="z0 is on meta"):
        fastgeo.geodesics(metric, z, z)


def test_pairwise_and_points_reject_bad_input():
    """pairwise_distances refuses points of the wrong dimension; res.points refuses n < 2."""
    metric = bumpy_metric()
    with pytest.raises(ValueError, match="Z"):
        fastgeo.pairwise_distances(metric, torch.randn(4, 3, dtype=f64))
    res = fastgeo.geodesics(metric, torch.randn(2, 2, dtype=f64), torch.randn(2, 2, dtype=f64))
    with pytest.raises(ValueError, match="n "):
        res.points(1)


def test_forced_unavailable_backend_raises_clearly(monkeypatch):
    """Forcing a backend this machine lacks raises a RuntimeError naming it and saying why. Which
    backends are missing differs between machines (none, on a GPU machine with everything
    built): here "cuda" is made unavailable, so the test runs everywhere."""
    from fastgeo.ops import registry

    real = registry._availability

    def cuda_missing(name: str) -> tuple[bool, str]:
        return (False, "test: pretend missing") if name == "cuda" else real(name)

    monkeypatch.setattr(registry, "_availability", cuda_missing)
    x = torch.randn(2, 3, 4)
    with fastgeo.use_backend("cuda"), pytest.raises(RuntimeError, match="'cuda' is not available here: test"):
        fastgeo.ops.segment_sqdist(x)


def test_an_unknown_backend_is_refused_where_use_backend_is_called():
    for name in ("bogus", "CPU", None, 1):
        with pytest.raises(ValueError, match="backend must be one of"):
            fastgeo.use_backend(name)  # not entered: the call itself raises
    with fastgeo.use_backend("reference"):
        assert fastgeo.current_backend() == "reference"
    assert fastgeo.current_backend() == "auto"


def test_inference_mode_is_refused_clearly_and_no_grad_works():
    metric = bumpy_metric()
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.2]], dtype=torch.float64)
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match="geodesics needs autograd.*inference_mode"):
            fastgeo.geodesics(metric, z0, z1)
        with pytest.raises(RuntimeError, match="pairwise_distances needs autograd"):
            fastgeo.pairwise_distances(metric, torch.cat([z0, z1]), progress=False)
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1)
    assert res.converged.all() and torch.isfinite(res.lengths).all()


def test_graphs_of_another_dtype_and_dense_m_are_named():
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    graph32 = fastgeo.LatentGraph(bumpy_metric(torch.float32), n_nodes=30, grid=0)
    with pytest.raises(TypeError, match="graph was built for a torch.float32 metric"):
        fastgeo.geodesics(metric, z[:1], z[1:], graph=graph32)
    for bad, exc in (("foo", TypeError), (True, TypeError), (5, ValueError)):
        with pytest.raises(exc, match="m"):
            fastgeo.geodesics(metric, z[:1], z[1:], method="dense", n_points=16, m=bad)
    assert fastgeo.geodesics(metric, z[:1], z[1:], method="dense", n_points=16, m=14).converged.all()


@pytest.mark.parametrize(
    "option",
    [{"family": "chebyshev"}, {"warm_start": 50}, {"explore": 10}, {"refine": 3}, {"corridors": 4},
     {"coarse_points": 8}, {"linearize": "lagged"}, {"subdivide": 2}],
)  # fmt: skip
def test_dense_refuses_the_spline_methods_options(option):
    """method='dense' ignored the spline methods' options silently (subdivide=2 was refused naming
    family='legendre', a value the user never passed): each is named."""
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    (name,) = option
    with pytest.raises(ValueError, match=f"method='dense' does not take {name} "):
        fastgeo.geodesics(metric, z[:1], z[1:], method="dense", n_points=16, **option)


def test_a_graph_of_another_metric_warns():
    """A LatentGraph built for another metric of the same d and dtype was taken silently (its
    corridors start the curves); now warned. The metric's own graph, or one of a metric with the
    same decoder and precision, is taken without a word."""
    metric, other = bumpy_metric(), bumpy_metric(seed=1)
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    foreign = fastgeo.LatentGraph(other, n_nodes=30, grid=0)
    with pytest.warns(UserWarning, match="graph was built for another metric"):
        fastgeo.geodesics(metric, z[:1], z[1:], graph=foreign)
    same = fastgeo.ExpectedMetric(metric.mean, metric.precision)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fastgeo.geodesics(metric, z[:1], z[1:], graph=fastgeo.LatentGraph(same, n_nodes=30, grid=0))


def test_a_graph_whose_decoder_changed_in_place_since_warns():
    """A user's own graph of a decoder trained in place since (its edges stale: a fresh graph's
    are up to 2.8x longer after a weight scaled by 5) was taken silently, from this metric or a
    new one around the same modules; the graph the solver caches is rebuilt instead."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 5)).double()
    metric = fastgeo.ExpectedMetric(net, bumpy_metric(D=5).precision)
    graph = fastgeo.LatentGraph(metric, n_nodes=30, grid=0)
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fastgeo.geodesics(metric, z[:1], z[1:], graph=graph)
    with torch.no_grad():
        net[0].weight.mul_(5.0)
    for now in (metric, fastgeo.ExpectedMetric(net, metric.precision)):
        with pytest.warns(UserWarning, match="before its decoder or precision changed"):
            fastgeo.geodesics(now, z[:1], z[1:], graph=graph)


def test_a_batch_norm_set_to_training_mode_is_refused_untouched():
    """A batch norm of a method mean, in eval mode when the metric was made and in training mode
    now, is refused without calling the decoder (a call in training mode moved its running
    statistics: the user's model changed by a refused call)."""

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = torch.nn.Sequential(
                torch.nn.Linear(2, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
            )

        def decode(self, z):
            return self.dec(z)

    vae = VAE().double().eval()
    metric = fastgeo.ExpectedMetric(vae.decode, constant_precision(2, 3))
    vae.train()
    stats = [t.clone() for t in vae.dec[1].buffers()]
    with pytest.raises(ValueError, match=r"training mode now \(BatchNorm1d VAE\.dec\.1;"):
        fastgeo.geodesics(metric, torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64))
    assert all(torch.equal(a, b) for a, b in zip(stats, vae.dec[1].buffers(), strict=True))


def test_the_smoothed_stage_takes_the_graph_of_an_equal_metric_silently():
    """A ReLU decoder (smoothed first) in d = 4 with the graph of another metric object of the same
    decoder and precision: no warning (the smoothed stage compared the graph with the smoothed
    metric and warned)."""
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).double().eval()
    a, b = (fastgeo.ExpectedMetric(dec, constant_precision(4, 5)) for _ in range(2))
    graph = fastgeo.LatentGraph(a, n_nodes=30, grid=0)
    assert b.piecewise_linear_mean
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fastgeo.geodesics(b, torch.zeros(1, 4, dtype=f64), torch.ones(1, 4, dtype=f64), graph=graph)


def test_dense_takes_a_graph_and_latents():
    """A graph or latents given to method='dense' (its starts use them) are not taken for the
    spline methods' corridors option and refused."""
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    graph = fastgeo.LatentGraph(metric, n_nodes=30, grid=0)
    for given in ({"graph": graph}, {"latents": z}):
        res = fastgeo.geodesics(metric, z[:1], z[1:], method="dense", n_points=16, **given)
        assert torch.isfinite(res.lengths).all()


def test_select_takes_an_empty_list_and_a_0d_index():
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2], [0.5, 0.5]], dtype=torch.float64)
    res = fastgeo.geodesics(metric, z[:2], z[1:], method="fast")
    assert len(res.select([])) == 0
    assert torch.equal(res.select(torch.tensor(1)).lengths, res.lengths[1:])
    assert torch.equal(res.select(slice(1, None)).lengths, res.lengths[1:])
    assert len(res.select(slice(5, 9))) == 0
    assert torch.equal(res.select(slice(None, None, -1)).lengths, res.lengths.flip(0))  # any step
    assert torch.equal(res.select([-1]).lengths, res.lengths[-1:])
    for outside in (5, [0, 7], -3):  # torch's IndexError named no argument nor the curves' count
        with pytest.raises(IndexError, match="idx holds indices outside the 2 curves"):
            res.select(outside)
    with pytest.raises(TypeError, match="idx must be a \\(K,\\) integer index"):
        res.select([[0], [1, 0]])  # ragged


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_select_takes_every_integer_dtype_as_indices(dtype):
    """int8 / int16 index tensors raised torch's IndexError and a uint8 one of length B was taken as
    a mask (the wrong curves, silently); every integer dtype indexes, 0-d too. A selection's
    options are its own."""
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2], [0.5, 0.5]], dtype=torch.float64)
    res = fastgeo.geodesics(metric, z, z.flip(0) + 0.1, method="fast")
    order = [1, 2, 0]
    torch.testing.assert_close(res.select(torch.tensor(order, dtype=dtype)).lengths, res.lengths[order])
    torch.testing.assert_close(res.select(torch.tensor(2, dtype=dtype)).lengths, res.lengths[2:])
    picked = res.select(np.array(order, dtype=np.int8))
    torch.testing.assert_close(picked.curves.coeffs, res.curves.coeffs[order])
    picked.options["tol"] = 123.0
    assert res.options["tol"] != 123.0


def test_autocast_is_refused_clearly():
    """Under torch.autocast a decoder runs in bfloat16: every entry point says so, by name."""
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2]], dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for call, name in (
            (lambda: fastgeo.geodesics(metric, z[:1], z[1:]), "geodesics"),
            (lambda: fastgeo.pairwise_distances(metric, z, progress=False), "pairwise_distances"),
            (lambda: fastgeo.nearest_neighbors(metric, z, 1, progress=False), "nearest_neighbors"),
            (lambda: metric.length(z[None]), "ExpectedMetric"),
            (lambda: fastgeo.ExpectedMetric(metric.mean, metric.precision), "ExpectedMetric"),
        ):
            with pytest.raises(RuntimeError, match=f"{name} cannot run inside torch.autocast"):
                call()
        with torch.autocast("cpu", enabled=False):
            assert torch.isfinite(metric.length(z[None])).all()


def test_latent_graph_arguments_are_checked():
    metric = bumpy_metric()
    for kwargs, exc, match in [
        ({"k": 0}, ValueError, "k must"), ({"n_nodes": -5}, ValueError, "n_nodes"),
        ({"n_nodes": 2.5}, TypeError, "n_nodes"), ({"edge_points": 1}, ValueError, "edge_points"),
        ({"grid": -1}, ValueError, "grid"), ({"seed": 1.5}, TypeError, "seed"),
        ({"latents": torch.full((3, 2), float("nan"), dtype=f64)}, ValueError, "latents"),
        ({"latents": torch.zeros(3, 5, dtype=f64)}, ValueError, "latents"),
    ]:  # fmt: skip
        with pytest.raises(exc, match=match):
            fastgeo.LatentGraph(metric, **kwargs)
    with pytest.raises(TypeError, match="metric"):
        fastgeo.LatentGraph(None)
    other = fastgeo.LatentGraph(bumpy_metric(d=3), n_nodes=20, grid=0)
    with pytest.raises(ValueError, match="latent dimension 3"):
        fastgeo.geodesics(metric, torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64), graph=other)


def test_latent_graph_queries_are_checked():
    graph = fastgeo.LatentGraph(bumpy_metric(), n_nodes=20, grid=0)
    for points, exc, match in [
        (np.zeros((2, 2)), TypeError, "points must be a torch.Tensor"),
        (torch.zeros(2, 3, dtype=f64), ValueError, r"points must be \(Q, 2\)"),
        (torch.zeros(2, dtype=f64), ValueError, "points must have 2 dimensions"),
        (torch.zeros(2, 2), TypeError, "points has dtype torch.float32"),
        (torch.tensor([[0.0, float("nan")]], dtype=f64), ValueError, "points contains NaN"),
    ]:  # fmt: skip
        for query in (graph.attach, graph.end_rows):
            with pytest.raises(exc, match=match):
                query(points)
    dist, pred, _ = graph.end_rows(torch.zeros(2, 2, dtype=f64))
    assert dist.shape == pred.shape == (2, graph.nodes.shape[0]) and np.isfinite(dist).any()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes need Python 3.11")
def test_a_decoder_raising_off_the_codes_in_the_graph_build_is_noted():
    """The latent graph decodes points beyond every code and center: a decoder that raises there
    reached the user bare, with nothing pointing at the graph."""
    metric = bumpy_metric()

    class OffDomain(Exception):
        pass

    def mean(z):
        if z.norm(dim=-1).max() > 4.5:
            raise OffDomain("outside the decoder's domain")
        return metric.mean(z)

    with pytest.raises(OffDomain) as info:
        fastgeo.LatentGraph(fastgeo.ExpectedMetric(mean, metric.precision))
    assert any("latent graph" in note and "graph=False" in note for note in info.value.__notes__)


def test_rbf_precision_refuses_empty_sizes():
    for centers, gammas, weights, match in [
        (torch.zeros(0, 2), torch.zeros(0), torch.zeros(4, 0), "centers"),
        (torch.zeros(3, 0), torch.ones(3), torch.ones(4, 3), "centers"),
        (torch.zeros(3, 2), torch.ones(3), torch.ones(0, 3), "weights"),
    ]:
        with pytest.raises(ValueError, match=match):
            fastgeo.RBFPrecision(centers, gammas, weights, 1e-2)


def test_fit_options_are_checked():
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4)).eval()
    Z = torch.randn(30, 2)
    X = dec(Z).detach() + 0.05 * torch.randn(30, 4)
    fit = fastgeo.RBFPrecision.fit
    for kwargs, exc, match in [
        ({"zeta": torch.full((4,), 1e-3)}, TypeError, "zeta"),
        ({"bandwidth_scale": float("inf")}, ValueError, "bandwidth"),
        ({"bandwidth_scale": "1"}, TypeError, "bandwidth"), ({"lr": "0.1"}, TypeError, "lr"),
        ({"seed": "a"}, TypeError, "seed"), ({"progress": "no"}, TypeError, "progress"),
        ({"steps": True}, TypeError, "steps"), ({"lr": 1e6, "steps": 30}, ValueError, "lr"),
    ]:  # fmt: skip
        with pytest.raises(exc, match=match):
            fit(Z, X, dec, num_centers=4, **{"progress": False, **kwargs})
    with pytest.raises(TypeError, match="float64"):
        fit(Z, X, lambda z: dec(z).double(), num_centers=4, progress=False)
    with pytest.raises(TypeError, match="mean"):
        fit(Z, X, 5, num_centers=4, progress=False)
    with pytest.raises(ValueError, match="latents"):
        fit(Z[:0], X[:0], dec, progress=False)


def test_metric_conversions_and_points_are_checked():
    metric = bumpy_metric(dtype=torch.float32)
    with pytest.raises(TypeError, match="float32 or torch.float64"):
        metric.to(torch.float16)
    for device in ["meta", "gpu"] + ([] if torch.cuda.is_available() else ["cuda:7"]):
        with pytest.raises(ValueError, match="device"):
            metric.to(device)
    with pytest.raises(ValueError, match="device"):
        fastgeo.load_generator(DATA / "digits.safetensors", device="meta")
    with pytest.raises(ValueError, match="latent dimension"):
        metric.decode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="latent dimension"):
        metric.features_and_jacobian(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="dtype"):
        metric.decode(torch.zeros(2, 2, dtype=f64))
    with pytest.raises(ValueError, match="z must be"):
        metric.precision.sigma_and_jacobian(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="n must"):
        metric.probe(-1)
    with pytest.raises(ValueError, match="sharpness"):
        metric.smoothed(float("nan"))


def test_result_rows_and_points_take_integer_likes():
    metric = bumpy_metric()
    z0 = torch.zeros(3, 2, dtype=f64)
    z1 = torch.tensor([[1.0, 0.2], [0.5, -0.4], [-1.0, 0.3]], dtype=f64)
    res = fastgeo.geodesics(metric, z0, z1, method="fast")
    one = res.select(1)
    assert len(one) == 1 and torch.equal(one.points(5), res.points(5)[1:2])
    assert torch.equal(res.select(torch.tensor([True, False, True])).lengths, res.lengths[[0, 2]])
    with pytest.raises(TypeError, match="idx"):
        res.select(torch.tensor([0.5]))
    assert torch.equal(res.points(np.int64(7)), res.points(torch.tensor(7)))
    with pytest.raises(TypeError, match="n "):
        res.points(2.5)


def test_options_that_cannot_work_are_refused():
    metric = bumpy_metric()
    z0, z1 = torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64)
    with pytest.raises(ValueError, match="tol"):
        fastgeo.geodesics(metric, z0, z1, tol=10.0)
    res = fastgeo.geodesics(metric, z0, z1, method="fast", family="legendre")  # no subdivision asked
    assert res.converged.all()


def test_a_matrix_whose_straight_lines_are_not_finite_names_the_codes():
    """A decoder that is NaN on part of the plane: codes inside it have no finite curve at all,
    and the matrix refuses them before any solve, naming them."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(2, 4).double()

    class Holed(torch.nn.Module):
        def forward(self, z):
            out = torch.tanh(lin(z))
            return torch.where(z[:, :1] > 2.0, torch.nan, out)

    ones = torch.ones(4, 3, dtype=f64)
    prec = fastgeo.RBFPrecision(torch.zeros(3, 2, dtype=f64), torch.ones(3, dtype=f64), ones, 0.1)
    metric = fastgeo.ExpectedMetric(Holed().eval(), prec)
    Z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0]], dtype=f64)
    # every pair's straight line crosses x > 2
    named = r"not finite at 2 code\(s\), e\.g\. Z\[1\], Z\[2\] = \[3\.0, 0\.0\]: the decoder mean is NaN"
    with pytest.raises(ValueError, match=named):
        fastgeo.pairwise_distances(metric, Z, progress=False)
    with pytest.raises(ValueError, match=r"Y\[0\], Y\[1\] = \[3\.0, 0\.0\]"):
        fastgeo.pairwise_distances(metric, Z[:1], Z[1:], progress=False)


def test_generator_file_paths_and_contents_are_checked(tmp_path):
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh()).double().eval()
    metric = fastgeo.ExpectedMetric(seq, bumpy_metric().precision)
    with pytest.raises(TypeError, match="path"):
        fastgeo.save_generator(5, metric)
    with pytest.raises(IsADirectoryError, match="folder"):
        fastgeo.save_generator(tmp_path, metric)
    with pytest.raises(IsADirectoryError, match="folder"):
        fastgeo.load_generator(tmp_path)
    with pytest.raises(TypeError, match="path"):
        fastgeo.load_generator(5)
    with pytest.raises(ValueError, match="example_input"):
        nan = torch.full((3, 2), torch.nan, dtype=f64)
        fastgeo.save_generator(tmp_path / "g.safetensors", metric, example_input=nan)
    with pytest.raises(TypeError, match="extra"):
        fastgeo.save_generator(tmp_path / "g.safetensors", metric, extra=[torch.zeros(2)])
    with pytest.raises(ValueError, match="example_input must hold at least one code of d = 2"):
        fastgeo.save_generator(tmp_path / "g.safetensors", metric, example_input=torch.zeros(0, 2, dtype=f64))
    with pytest.raises(TypeError, match="example_input must be a torch.Tensor"):
        fastgeo.save_generator(tmp_path / "g.safetensors", metric, example_input=[[0.0, 1.0]])


def test_latents_without_a_graph_are_named_as_ignored():
    metric = bumpy_metric()
    z0, z1 = torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64)
    with pytest.warns(UserWarning, match="graph=False ignores them"):
        fastgeo.geodesics(metric, z0, z1, graph=False, latents=torch.randn(5, 2, dtype=f64))
    graph = fastgeo.LatentGraph(metric, n_nodes=20, grid=0)
    with pytest.warns(UserWarning, match="a given graph keeps its own nodes"):
        fastgeo.geodesics(metric, z0, z1, graph=graph, latents=torch.randn(5, 2, dtype=f64))
    latents = torch.randn(5, 2, dtype=f64)
    with pytest.warns(
        UserWarning, match="latents feed the latent graph's starts, which method='paper'"
    ) as rec:
        fastgeo.geodesics(metric, z0, z1, method="paper", latents=latents)
    assert rec[0].filename == __file__
    with pytest.warns(UserWarning, match="graph feeds the latent graph's starts, which corridors=0"):
        fastgeo.geodesics(metric, z0, z1, corridors=0, graph=graph)


def test_warnings_point_at_the_callers_line():
    """The library's warnings name the user's line that called it (stacklevel), not a frame of
    fastgeo's own: geodesics, pairwise_distances and nearest_neighbors."""
    metric = bumpy_metric()
    Z = torch.randn(6, 2, dtype=torch.float64)
    calls = {
        "geodesics": lambda: fastgeo.geodesics(metric, Z[:2], Z[2:4], latents=Z, graph=False, progress=False),
        "pairwise_distances": lambda: fastgeo.pairwise_distances(metric, Z, max_iter=1, progress=False),
        "nearest_neighbors": lambda: fastgeo.nearest_neighbors(metric, Z, k=2, max_iter=1, progress=False),
    }
    for name, call in calls.items():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call()
        ours = [w for w in seen if str(w.message).startswith(f"fastgeo.{name}")]
        assert ours, name
        assert all(w.filename == __file__ for w in ours), [(w.filename, str(w.message)[:60]) for w in ours]


def test_sizes_beyond_any_machine_are_refused_by_name():
    """Huge integers passed the checks and overflowed deep inside (int64 shapes, knot lists) with
    errors that named nothing; subdivide=8 and m=2**70 never returned."""
    metric = bumpy_metric()
    z0, z1 = torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64)
    for name, value, words in (
        ("n_points", 2**70, "n_points must be an integer <= 2**62"),
        ("refine", 2**70, "refine must be an integer <= 2**62"),
        ("m", 2**70, "m must be an integer <= 4096"),
        ("subdivide", 8, "subdivide must be an integer <= 6"),
    ):
        with pytest.raises(ValueError, match=words.replace("*", r"\*")):
            fastgeo.geodesics(metric, z0, z1, method="fast", **{name: value})
    with pytest.raises(ValueError, match="neighbors must be an integer <= "):
        fastgeo.pairwise_distances(metric, torch.zeros(3, 2, dtype=f64), mode="graph", neighbors=2**70)
    with pytest.raises(ValueError, match="workers must be an integer <= "):
        fastgeo.pairwise_distances(metric, torch.zeros(3, 2, dtype=f64), workers=2**70)


def test_select_names_idx_and_linearize_takes_no_array():
    metric = bumpy_metric()
    z = torch.tensor([[-1.0, 0.0], [1.0, 0.2], [0.5, 0.5]], dtype=f64)
    res = fastgeo.geodesics(metric, z[:2], z[1:], method="fast")
    for bad in (None, "abc", 1.5, True):
        with pytest.raises(TypeError, match="idx must be"):
            res.select(bad)
    with pytest.raises((TypeError, ValueError), match="linearize"):
        fastgeo.geodesics(metric, z[:2], z[1:], method="fast", linearize=np.array(["auto"]))
