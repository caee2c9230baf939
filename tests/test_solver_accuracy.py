"""The default solver against the dense oracle on a small trained generator (two moons, D = 10),
in float32, on pairs within and across the moons (tests/data/make_generators.py made it)."""

from pathlib import Path

import pytest
import torch

import fastgeo
from fastgeo.benchmarks import accuracy
from fastgeo.io import load_extra
from fastgeo.solver.graph_cache import graph_cache

DATA = Path(__file__).parent / "data" / "two_moons.safetensors"


@pytest.fixture(scope="module")
def moons():
    metric = fastgeo.load_generator(DATA)
    extra = load_extra(DATA)
    Z, labels = extra["latents"], extra["labels"]
    g = torch.Generator().manual_seed(3)
    I, J = [], []
    while len(I) < 12:  # 8 within a moon, 4 across
        i, j = torch.randint(Z.shape[0], (2,), generator=g).tolist()
        if i != j and (len(I) < 8) == bool(labels[i] == labels[j]):
            I.append(i)
            J.append(j)
    return metric, Z[I], Z[J]


@pytest.fixture(scope="module")
def dense(moons):
    metric, z0, z1 = moons
    with torch.no_grad():
        return fastgeo.geodesics(metric.to(torch.float64), z0.double(), z1.double(), method="dense")


def excess(metric, result, dense_result):
    with torch.no_grad():
        return accuracy.excess(metric.to(torch.float64), result.points(accuracy.MEASURE_POINTS), dense_result)


def test_default_matches_dense_oracle_in_float32(moons, dense):
    """The default solver in float32 against the dense oracle (float64): mean excess length <= 5e-4,
    worst <= 5e-3, never noticeably shorter than the oracle; some geodesics are far shorter than
    straight lines."""
    metric, z0, z1 = moons
    res = fastgeo.geodesics(metric, z0, z1)
    assert res.lengths.dtype == torch.float32
    assert bool(res.converged.all()) and bool(dense.converged.all())
    ex = excess(metric, res, dense)
    assert float(ex.mean()) <= 5e-4, ex
    assert float(ex.max()) <= 5e-3, ex
    # the oracle is a minimum: nothing we return is much shorter than it (float32 rounding only)
    assert float(ex.min()) > -1e-4, ex
    # the geometry is not trivial: some geodesics are far shorter than straight lines
    assert float((res.lengths / res.straight_lengths).min()) < 0.75


def test_coarse_race_matches_a_full_resolution_race(moons, dense):
    """Racing the starts on half the points (the default) and on all of them reach the same
    lengths: the coarse grid ranks the basins as the full one does."""
    metric, z0, z1 = moons
    fastgeo.geodesics(metric, z0[:1], z1[:1])  # builds the latent graph (its work is the first call's)
    coarse = fastgeo.geodesics(metric, z0, z1)
    full = fastgeo.geodesics(metric, z0, z1, coarse_points=coarse.n_points)
    assert bool(coarse.converged.all()) and bool(full.converged.all())
    torch.testing.assert_close(coarse.lengths, full.lengths, rtol=1e-3, atol=0)
    # the race on fewer points spends less decoder work
    assert coarse.decoder_evals + coarse.decoder_jvps < full.decoder_evals + full.decoder_jvps
    assert float(excess(metric, full, dense).mean()) <= 5e-4


def test_paper_method_is_the_quadratic_and_less_accurate(moons, dense):
    """method="paper" fits the quadratic curve (m = 1) and is less accurate than the default."""
    metric, z0, z1 = moons
    res = fastgeo.geodesics(metric, z0, z1, method="paper")
    assert res.curves.coeffs.shape == (12, 1, 2)
    assert res.options["basis"].startswith("PolynomialBasis(m=1")
    default = fastgeo.geodesics(metric, z0, z1)
    assert float(excess(metric, res, dense).mean()) > float(excess(metric, default, dense).mean())


def test_result_reports_work_and_starts(moons):
    """The result reports iterations, the winning starts and decoder work; the graph is built once
    per metric and reused."""
    metric, z0, z1 = moons
    res = fastgeo.geodesics(metric, z0, z1)
    assert res.iterations.shape == (12,) and bool((res.iterations > 0).all())
    assert set(res.init_names) <= {"straight", "warm", "graph"}
    assert res.decoder_evals > 0 and res.decoder_jvps > 0
    # the graph is built once per metric and reused
    graph = graph_cache(metric).graph
    assert graph is not None
    fastgeo.geodesics(metric, z0[:2], z1[:2])
    assert graph_cache(metric).graph is graph


def test_a_metric_that_built_a_latent_graph_is_freed(moons):
    """The graph caches, weakly keyed by the metric, held it alive through the graph's reference
    back to it: every metric that built a graph stayed in memory with its decoder (~5 MB per
    metric of the digits VAE over 20 create/solve/delete cycles)."""
    import gc
    import weakref

    metric, z0, z1 = moons
    again = fastgeo.ExpectedMetric(metric.mean, metric.precision)
    fastgeo.geodesics(again, z0[:2], z1[:2], method="fast", progress=False)
    assert graph_cache(again) is not None and graph_cache(again).graph is not None
    gone = weakref.ref(again)
    del again
    gc.collect()
    assert gone() is None
