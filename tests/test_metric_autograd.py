"""Gradients through the metric's user-facing measurements: the metric tensor differentiable in
the codes and in the decoder's and the precision's parameters (its values-only Jacobians detached,
never half a graph), lengths with zero-length segments, and the checks of ``length_with_ends``
and ``Curves.at``."""

from __future__ import annotations

import pytest
import torch

import fastgeo
from fastgeo.curves import BSplineBasis, Curves


def _metric(dtype=torch.float64, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, D)).to(dtype)
    with torch.no_grad():
        for p in mean.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    centers = torch.randn(6, 2, generator=g, dtype=dtype)
    prec = fastgeo.RBFPrecision(
        centers, torch.full((6,), 0.7, dtype=dtype), torch.rand(D, 6, generator=g, dtype=dtype) * 5, 1e-2
    )
    return fastgeo.ExpectedMetric(mean, prec), mean


def _reference_metric_tensor(metric, z):
    """J^T J with J by torch.func.jacrev of the features, point by point (differentiable)."""
    with fastgeo.ops.use_backend("reference"):  # the RBF ops' kernels have no functorch rules
        J = torch.func.vmap(torch.func.jacrev(lambda x: metric.features(x[None])[0]))(z)  # (P, 2D, d)
    return J.transpose(-1, -2) @ J


def test_the_metric_tensor_is_differentiable_in_the_codes_and_the_parameters():
    """d logdet M / dz and / d(decoder weights, precision weights) agree with autograd through a
    reverse-mode Jacobian; the decoder's part of M had no gradient before (half a graph)."""
    metric, mean = _metric()
    z = torch.tensor([[0.3, -0.2], [1.1, 0.4], [-0.7, 0.9]], dtype=torch.float64, requires_grad=True)
    wanted = [z, mean[0].weight, mean[2].weight, metric.precision.weights]
    got = torch.autograd.grad(torch.logdet(metric.metric_tensor(z)).sum(), wanted)
    expected = torch.autograd.grad(torch.logdet(_reference_metric_tensor(metric, z)).sum(), wanted)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12)
    # finite differences in z, as an independent check
    h, i = 1e-6, 0
    step = torch.zeros_like(z)
    step[i, 0] = h
    with torch.no_grad():
        up, down = torch.logdet(metric.metric_tensor(z + step)), torch.logdet(metric.metric_tensor(z - step))
    fd = (up - down)[i] / (2 * h)
    assert float(got[0][i, 0]) == pytest.approx(float(fd), rel=1e-6)


def test_the_values_only_jacobian_carries_no_graph_and_no_grad_mode_takes_it():
    metric, _ = _metric()
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    features, jac = metric.features_and_jacobian(z)
    assert not features.requires_grad and not jac.requires_grad
    with torch.no_grad():
        fast = metric.metric_tensor(z)
    torch.testing.assert_close(fast, metric.metric_tensor(z).detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(fast, _reference_metric_tensor(metric, z).detach(), rtol=1e-12, atol=1e-14)


def test_lengths_of_curves_with_zero_length_segments_have_finite_gradients():
    """A curve from a code to itself, and a curve with one point repeated: sqrt's infinite slope at
    0 made every parameter's gradient NaN; the length's gradient there is 0."""
    metric, mean = _metric(torch.float32, D=40)
    z0 = torch.tensor([[0.2, -0.3]])
    still = z0.expand(2, 16, 2).clone().requires_grad_()
    length = metric.length(still)
    assert float(length.abs().max()) == 0.0
    length.sum().backward()
    assert bool(torch.isfinite(still.grad).all()) and float(still.grad.abs().max()) == 0.0
    assert all(bool(torch.isfinite(p.grad).all()) for p in mean.parameters() if p.grad is not None)
    t = torch.linspace(0, 1, 9)[:, None]
    pts = (z0 + t * torch.tensor([[1.0, 0.5]]))[None].repeat(1, 1, 1)
    pts = torch.cat([pts[:, :4], pts[:, 3:]], 1).requires_grad_()  # point 3 twice
    metric.length(pts).sum().backward()
    assert bool(torch.isfinite(pts.grad).all())
    # NaN still shows as NaN (a non-finite curve is never measured as 0)
    assert bool(torch.isnan(fastgeo.discrete.length_from_segments(torch.tensor([[1.0, float("nan")]]))).all())


def test_length_with_ends_checks_its_end_embeddings():
    metric, _ = _metric()
    pts = torch.randn(2, 5, 2, dtype=torch.float64)
    with torch.no_grad():
        first, last = metric.mean_embedding(pts[:, 0]), metric.mean_embedding(pts[:, -1])
        torch.testing.assert_close(metric.length_with_ends(pts, first, last), metric.length(pts))
        with pytest.raises(ValueError, match="first, last"):
            metric.length_with_ends(pts, first[:, :3], last[:, :3])
        with pytest.raises(ValueError, match="first must have 2 dimensions"):
            metric.length_with_ends(pts, first[:, None], last[:, None])
        with pytest.raises(TypeError, match="first must be a torch.Tensor"):
            metric.length_with_ends(pts, first.tolist(), last)
        with pytest.raises(TypeError, match="first"):
            metric.length_with_ends(pts, first.float(), last)


def test_curves_at_checks_and_converts_its_times():
    z0, z1 = torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    curves = Curves(z0, z1, torch.zeros(1, 4, 2, dtype=torch.float64), BSplineBasis(4))
    pts = curves.at(torch.tensor([0.0, 0.5, 1.0]))  # float32 times on float64 curves
    assert pts.dtype == torch.float64
    torch.testing.assert_close(pts[0, 1], torch.full((2,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="t must have 1 dimensions"):
        curves.at(torch.tensor(0.5))
    with pytest.raises(TypeError, match="t must be a torch.Tensor"):
        curves.at([0.0, 1.0])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        curves.at(torch.tensor([0.0, 1.5]))


def test_torch_func_transforms_through_the_ops_match_autograd():
    """jvp / jacfwd / grad / vmap of the metric's features and energy under the default backend
    (the C++ kernels): forward mode through them gave exact zeros, reverse mode raised."""
    metric, _ = _metric()
    z = torch.tensor([[0.3, -0.2], [1.1, 0.4]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)
    curve = torch.stack([z[0], 0.5 * (z[0] + z[1]) + 0.2, z[1]])[None]  # (1, 3, d)

    def features(x):
        return metric.features(x[None])[0]

    def energy(c):
        return metric.energy(c).sum()

    got = [
        torch.func.jvp(metric.precision.sigma, (z,), (v,))[1],
        torch.func.jacfwd(features)(z[0]),
        torch.func.grad(energy)(curve),
        torch.func.vmap(metric.precision.sigma)(z[:, None])[:, 0],
    ]
    with fastgeo.use_backend("reference"):  # autograd.functional's jvp is a double backward
        expected = [
            torch.autograd.functional.jvp(metric.precision.sigma, z, v)[1],
            torch.autograd.functional.jacobian(features, z[0]),
            torch.autograd.functional.jacobian(energy, curve),
            metric.precision.sigma(z),
        ]
    assert expected[0].abs().max() > 0.1 and expected[1][metric.data_dim :].abs().max() > 0.1
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    assert fastgeo.current_backend() == "auto"


def test_forward_ad_dual_tensors_through_the_ops_keep_their_tangents():
    """torch.autograd.forward_ad (dual tensors, no torch.func): the kernels have no forward
    formula and the ops' tangent was dropped, silently (counted as zero)."""
    import torch.autograd.forward_ad as fwAD

    metric, _ = _metric()
    z = torch.tensor([[0.3, -0.2], [1.1, 0.4]], dtype=torch.float64)
    v = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)
    x = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.randn_like(x)

    def tangents():
        with fwAD.dual_level():
            sigma = fwAD.unpack_dual(metric.precision.sigma(fwAD.make_dual(z, v))).tangent
            seg = fwAD.unpack_dual(fastgeo.ops.segment_sqdist(fwAD.make_dual(x, t))).tangent
        return sigma, seg

    got = tangents()
    with fastgeo.use_backend("reference"):
        expected = tangents()
    assert all(e is not None and e.abs().max() > 0.1 for e in expected)
    for a, b in zip(got, expected, strict=True):
        assert a is not None
        torch.testing.assert_close(a, b)


def test_a_compiled_function_follows_the_backend_of_each_call(tmp_path, monkeypatch):
    """A function compiled under one backend ran that backend under every later use_backend (the
    choice was baked into the graph): the reference's double backward failed in a
    use_backend("reference") block, and a graph traced under the reference ignored "cpu"."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    f = torch.compile(lambda x: fastgeo.ops.segment_sqdist(x).sum(), backend="eager", fullgraph=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    f(x)  # traced under "auto": the C++ kernel
    with fastgeo.use_backend("reference"):
        (g,) = torch.autograd.grad(f(x), x, create_graph=True)
        assert torch.autograd.grad(g.sum(), x)[0].shape == x.shape  # double backward: the reference
    torch._dynamo.reset()
    with fastgeo.use_backend("reference"):
        f(x)
    with fastgeo.use_backend("cpu"):
        (g,) = torch.autograd.grad(f(x), x, create_graph=True)
        with pytest.raises(RuntimeError, match="no derivative"):
            torch.autograd.grad(g.sum(), x)  # the C++ kernel ran, as asked
    torch._dynamo.reset()


def test_a_forward_mode_level_open_elsewhere_leaves_plain_calls_on_the_kernels():
    """torch.autograd.forward_ad's level is one for the whole process: while any thread was
    inside a jvp, every thread's ops ran the reference (results of the same pair changed by up
    to 5e-4 with another thread's torch.func work). Plain tensors keep the kernels."""
    import torch.autograd.forward_ad as fwAD

    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    with fwAD.dual_level():
        (g,) = torch.autograd.grad(fastgeo.ops.segment_sqdist(x).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="no derivative"):
            torch.autograd.grad(g.sum(), x)  # the C++ kernel ran (no double backward)


def test_overlapping_backend_blocks_of_two_threads_leave_no_backend_behind():
    """Each block restored the backend it found: where two threads' blocks overlapped, the mirror
    torch.compile reads stayed at the other thread's backend after both ended."""
    import threading

    from fastgeo.ops import registry

    entered, leave = threading.Event(), threading.Event()

    def other():
        with fastgeo.use_backend("reference"):
            entered.set()
            leave.wait(10)

    with fastgeo.use_backend("cpu"):
        t = threading.Thread(target=other)
        t.start()
        entered.wait(10)
    leave.set()
    t.join(10)
    assert registry._compiled_backend == "auto" and fastgeo.current_backend() == "auto"
