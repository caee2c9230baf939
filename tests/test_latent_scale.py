"""Geodesic lengths do not depend on the units of the latent space. Rescaling it, ``z' = s z`` with
the mean read at ``z' / s`` and the RBF centers at ``s c`` (bandwidths ``gamma / s^2``), is a
reparametrization: every curve keeps its length. VAEs come with codes of every scale (a KL weight,
an unregularized autoencoder), so the solver must hold no absolute length anywhere (graph radii,
step floors, tolerances)."""

from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices

DATA = Path(__file__).parent / "data"
pytestmark = pytest.mark.usefixtures("one_thread")


class _Rescaled(torch.nn.Module):
    def __init__(self, mean, s: float) -> None:
        super().__init__()
        self.mean, self.s = mean, s

    def forward(self, z):
        return self.mean(z * (1.0 / self.s))


def rescaled(metric: fastgeo.ExpectedMetric, s: float) -> fastgeo.ExpectedMetric:
    p = metric.precision
    precision = fastgeo.RBFPrecision(p.centers * s, p.gammas / s**2, p.weights, p.zeta)
    return fastgeo.ExpectedMetric(_Rescaled(metric.mean, s), precision)


def _check(metric, z0, z1, scales, rtol):
    with torch.no_grad():
        base = fastgeo.geodesics(metric, z0, z1, progress=False)
        assert bool(base.converged.all())
        for s in scales:
            res = fastgeo.geodesics(rescaled(metric, s), s * z0, s * z1, progress=False)
            assert res.status.tolist() == base.status.tolist(), s
            rel = (res.lengths.double() / base.lengths.double() - 1).abs()
            assert float(rel.max()) < rtol, (s, rel)


def test_two_dimensional_lengths_do_not_depend_on_the_latent_scale():
    metric = bumpy_metric()
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    z1 = torch.randn(6, 2, generator=g, dtype=torch.float64)
    _check(metric, z0, z1, (1e-3, 1e3), 1e-8)


def test_a_trained_d12_vaes_lengths_do_not_depend_on_the_latent_scale():
    """mlp12_small (float32; d >= 4: graph corridors, explored start, lagged steps from d = 8)."""
    path = DATA / "mlp12_small.safetensors"
    extra = fastgeo.load_extra(path)
    I, J = pair_indices(extra["labels"], 48, 0)
    Z = extra["latents"]
    _check(fastgeo.load_generator(path), Z[I[:3]], Z[J[:3]], (0.01, 100.0), 2e-5)
