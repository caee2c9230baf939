"""The modules behind a mean however it is wrapped (attributes, partials, containers, callable
objects): found for the training-mode checks and for a differentiable metric tensor; a refused
decoder's batch norms keep their running statistics."""

import functools
from types import SimpleNamespace

import pytest
import torch
from analytic import constant_precision

import fastgeo
from fastgeo._mean_reach import loose_tensors_of, modules_of

f64 = torch.float64


def decoder(*extra):
    torch.manual_seed(0)
    layers = torch.nn.Linear(2, 8), *extra, torch.nn.Tanh(), torch.nn.Linear(8, 3)
    return torch.nn.Sequential(*layers).double().eval()


class Wrapper:
    def __init__(self, model):
        self.model = model

    def __call__(self, z):
        return self.model(z)


def _run(z, model):
    return model(z)


def wrapped_means(net):
    """The same decoder behind the wrappers users write."""
    cfg = SimpleNamespace(model=net)
    models = {"dec": net}
    return {
        "attribute": lambda z: cfg.model(z),
        "dict": lambda z: models["dec"](z),
        "partial keyword": functools.partial(_run, model=net),
        "partial argument": functools.partial(lambda model, z: model(z), net),
        "callable object": Wrapper(net),
        "bound method of a plain object": Wrapper(net).__call__,
        "closure over a method": (lambda f: lambda z: f(z))(net.forward),
    }


@pytest.mark.parametrize("kind", list(wrapped_means(decoder())))
def test_the_decoder_behind_a_wrapper_is_found(kind):
    net = decoder()
    assert any(m is net for m in modules_of(wrapped_means(net)[kind]))


def test_the_walk_enters_each_object_once(monkeypatch):
    """A mean reaching one list of data through 64 keys: walked into once, not 64 times (the walk
    runs at every metric_tensor call); at most VISITS objects in all; the module still found."""
    from fastgeo import _mean_reach

    net = decoder()
    shared = [SimpleNamespace(x=list(range(64))) for _ in range(64)]
    cfg = SimpleNamespace(model=net, data={i: shared for i in range(64)})
    calls = []
    references = _mean_reach._references
    monkeypatch.setattr(_mean_reach, "_references", lambda obj: calls.append(1) or references(obj))
    assert any(m is net for m in modules_of(lambda z: cfg.model(z)))
    assert len(calls) <= 8  # the lambda, cfg, its dict, the shared list (and no more)


def test_the_walk_stops_at_code_numbers_and_large_containers(monkeypatch):
    """A mean that reaches a list of 10,000 numbers: the walk looks at ITEMS of them at most and
    enters none (numbers are leaves)."""
    from fastgeo import _mean_reach

    data = list(range(10_000))
    entered, looked_at = [], {}
    references = _mean_reach._references

    def spy(obj):
        entered.append(obj)
        found = references(obj)
        looked_at[id(obj)] = len(found)
        return found

    monkeypatch.setattr(_mean_reach, "_references", spy)
    assert modules_of(lambda z: torch.tanh(z) * len(data)) == []
    assert looked_at.get(id(data)) == _mean_reach.ITEMS  # (the walk got there, and no further)
    assert not any(isinstance(obj, int) for obj in entered)
    assert len(entered) <= 4  # the lambda, its closure's cell(s), the list
    assert modules_of(torch.tanh) == [] and modules_of(abs) == []


@pytest.mark.parametrize("kind", ["attribute", "partial keyword", "callable object"])
def test_dropout_switched_on_behind_a_wrapper_is_refused(kind):
    """A decoder reached through cfg.model, a partial or a callable object, set to training mode
    after its metric was made: its dropout made lengths ~570x long and random, silently."""
    net = decoder(torch.nn.Dropout(0.5))
    metric = fastgeo.ExpectedMetric(wrapped_means(net)[kind], constant_precision(2, 3))
    z0, z1 = torch.zeros(1, 2, dtype=f64), torch.ones(1, 2, dtype=f64)
    net.train()
    with pytest.raises(ValueError, match="training mode"):
        fastgeo.geodesics(metric, z0, z1, progress=False)
    net.eval()
    assert fastgeo.geodesics(metric, z0, z1, progress=False).converged.all()


@pytest.mark.parametrize("kind", list(wrapped_means(decoder())))
def test_metric_tensor_is_differentiable_in_the_parameters_behind_a_wrapper(kind):
    net = decoder()
    precision = constant_precision(2, 3).requires_grad_(False)
    metric = fastgeo.ExpectedMetric(wrapped_means(net)[kind], precision)
    G = metric.metric_tensor(torch.randn(3, 2, dtype=f64))
    assert G.requires_grad
    (grad,) = torch.autograd.grad(G.sum(), net[0].weight)
    assert grad.abs().sum() > 0


def test_metric_tensor_is_differentiable_in_a_loose_tensor():
    W = torch.randn(2, 3, dtype=f64, requires_grad=True)

    def mean(z):
        return torch.tanh(z @ W)

    assert loose_tensors_of(mean) == [W]
    metric = fastgeo.ExpectedMetric(mean, constant_precision(2, 3).requires_grad_(False))
    z = torch.randn(4, 2, dtype=f64)
    G = metric.metric_tensor(z)
    (grad,) = torch.autograd.grad(G.diagonal(dim1=-2, dim2=-1).sum(), W)  # trace J^T J = |J|^2
    expected = torch.autograd.grad(torch.func.vmap(torch.func.jacrev(mean))(z).pow(2).sum(), W)[0]
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("kind", ["method", "lambda"])
def test_a_refused_batch_norm_in_training_mode_keeps_its_statistics(kind):
    """Made from a method or a function, a mean whose batch norm is in training mode is refused
    (it depends on its batch) after five probe calls: those moved its running statistics."""

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dec = decoder(torch.nn.BatchNorm1d(8))

        def decode(self, z):
            return self.dec(z)

    vae = VAE().train()
    before = [b.clone() for b in vae.dec[1].buffers()]
    mean = vae.decode if kind == "method" else (lambda z: vae.decode(z))
    with pytest.raises(ValueError):
        fastgeo.ExpectedMetric(mean, constant_precision(2, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, vae.dec[1].buffers(), strict=True))
