"""``method="fast"``: the default's algorithm on coarser curves with a looser tolerance. Its
options per latent dimension, its accuracy against the dense oracle on a trained 2-D generator
(float32), less decoder work than the default's, and the same honesty (statuses, batch
independence, never longer than the straight line)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.benchmarks import accuracy
from fastgeo.benchmarks.generator import synthetic_generator
from fastgeo.io import load_extra
from fastgeo.solver.defaults import (
    FAST_SUBDIVIDE_ABOVE,
    PIECEWISE_LINEAR_SUBDIVISIONS,
    SUBDIVIDE_ABOVE,
    SUBDIVISIONS,
)
from fastgeo.solver.options import solver_options

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "d,m,n,coarse,lagged",
    [(2, 16, 64, 32, False), (5, 10, 40, 20, False), (12, 10, 40, 20, True)],
)
def test_fast_options_per_latent_dimension(d, m, n, coarse, lagged):
    """Coarser curves than the default's, tolerance 1e-4 (float32) / 1e-8 (float64), subdivided
    only where a curve is predicted to gain 10x more than the default asks (or as the default, if
    asked); the same starts and linearization rules as the default, but in
    d >= 4 only the shortest start races and no graph corridor (the default races four starts, two
    of them corridors)."""
    fast = solver_options(torch.float32, d, 784, method="fast")
    default = solver_options(torch.float32, d, 784)
    assert (fast.m, fast.n_points, fast.coarse_points) == (m, n, coarse)
    assert fast.m < default.m and fast.n_points < default.n_points
    assert (fast.corridors, default.corridors) == ((3, 3) if d < 4 else (0, 2))
    assert fast.lagged == default.lagged == lagged
    assert fast.explore_iter == default.explore_iter == (0 if d < 4 else 20)
    assert (fast.refine, default.refine) == ((5, 5) if d < 4 else (1, 4))
    assert fast.tol == 1e-4 and solver_options(torch.float64, d, 784, method="fast").tol == 1e-8
    assert (fast.subdivide, default.subdivide) == (1, SUBDIVISIONS)
    assert fast.subdivide_above == FAST_SUBDIVIDE_ABOVE == 10 * default.subdivide_above
    asked = solver_options(torch.float32, d, 784, method="fast", subdivide=True)
    assert asked.subdivide == SUBDIVISIONS and asked.subdivide_above == SUBDIVIDE_ABOVE
    assert solver_options(torch.float32, d, 784, method="fast", subdivide=False).subdivide == 0
    # ReLU-like decoders need the finer spline (their curves bend at kinks): subdivided as the default
    relu = solver_options(torch.float32, d, 784, method="fast", piecewise_linear=True)
    assert relu.subdivide == SUBDIVISIONS and relu.subdivide_above == SUBDIVIDE_ABOVE
    # ... and the default's one level more (a kink per span: 0.04 -> -0.05 % against dense oracles)
    relu_default = solver_options(torch.float32, d, 784, piecewise_linear=True)
    assert relu_default.subdivide == PIECEWISE_LINEAR_SUBDIVISIONS == SUBDIVISIONS + 1
    assert solver_options(torch.float32, d, 784, piecewise_linear=True, subdivide=True).subdivide == 3
    explicit = solver_options(torch.float32, d, 784, method="fast", m=7, n_points=30, tol=1e-3)
    assert (explicit.m, explicit.n_points, explicit.tol) == (7, 30, 1e-3)


def test_unknown_method_names_the_choices():
    z = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="method.*fast"):
        fastgeo.geodesics(bumpy_metric(), z, z + 1, method="quick")


@pytest.fixture(scope="module")
def moons():
    """12 pairs of the two-moons generator (8 within a moon, 4 across), its float64 copy and the
    dense oracle's curves."""
    metric = fastgeo.load_generator(DATA / "two_moons.safetensors")
    extra = load_extra(DATA / "two_moons.safetensors")
    Z, labels = extra["latents"], extra["labels"]
    g = torch.Generator().manual_seed(5)
    I, J = [], []
    while len(I) < 12:
        i, j = torch.randint(Z.shape[0], (2,), generator=g).tolist()
        if i != j and (len(I) < 8) == bool(labels[i] == labels[j]):
            I.append(i)
            J.append(j)
    m64 = metric.to(torch.float64)
    with torch.no_grad():
        dense = fastgeo.geodesics(m64, Z[I].double(), Z[J].double(), method="dense")
    return metric, m64, Z[I], Z[J], dense


def test_fast_is_close_to_the_oracle_for_less_work(moons):
    """Float32, against the dense oracle (float64): mean excess <= 0.1 %, worst <= 1 %, every
    curve converged; less decoder work than the default's on the same pairs, and its curves no
    shorter than the default's beyond float32 rounding (the default is the more exact)."""
    metric, m64, z0, z1, dense = moons
    fastgeo.geodesics(metric, z0[:1], z1[:1])  # the latent graph, built once for both calls
    with torch.no_grad():
        fast = fastgeo.geodesics(metric, z0, z1, method="fast")
        default = fastgeo.geodesics(metric, z0, z1)
        ex = accuracy.excess(m64, fast.points(accuracy.MEASURE_POINTS), dense)
        ex_default = accuracy.excess(m64, default.points(accuracy.MEASURE_POINTS), dense)
    assert set(fast.status) == {"converged"}, fast.status
    assert fast.options["method"] == "fast" and fast.options["basis"] == "BSplineBasis(m=16)"
    assert float(ex.mean()) <= 1e-3 and float(ex.max()) <= 1e-2, ex
    assert float(ex.min()) > -1e-4, ex
    assert fast.decoder_evals + fast.decoder_jvps < default.decoder_evals + default.decoder_jvps
    assert float((ex - ex_default).min()) > -2e-4, (ex, ex_default)
    # lengths are the returned curves' own (measured to their error estimate), as the default's
    with torch.no_grad():
        fine = m64.length(fast.points(4096).double())
    assert float(((fast.lengths.double() - fine).abs() / fine).max()) <= 1e-3


def test_fast_results_do_not_depend_on_the_batch(moons):
    """Each pair solved alone gives the length (float32 rounding) and status it gets in the batch."""
    metric, _, z0, z1, _ = moons
    with torch.no_grad():
        batch = fastgeo.geodesics(metric, z0, z1, method="fast")
        for i in (0, 5, 11):
            alone = fastgeo.geodesics(metric, z0[i : i + 1], z1[i : i + 1], method="fast")
            torch.testing.assert_close(alone.lengths[0], batch.lengths[i], rtol=1e-5, atol=0)
            assert alone.status[0] == batch.status[i]


def test_fast_in_higher_dimension_is_never_longer_than_the_straight_line():
    """A random d = 12 MLP decoder (lagged linearization): converged or honestly flagged, never
    longer than the straight line, and shorter than it somewhere."""
    metric, centres = synthetic_generator(d=12, D=64, seed=3)
    z0, z1 = centres[:3].repeat(2, 1), centres[3:6].flip(0).repeat(2, 1)
    z1[3:] += 0.5 * torch.randn(3, 12, generator=torch.Generator().manual_seed(1), dtype=z1.dtype)
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1, method="fast")
    assert res.options["lagged"] is True and res.options["subdivide_above"] == FAST_SUBDIVIDE_ABOVE
    assert set(res.status) <= {"converged", "max_iter", "straight_fallback", "under_resolved"}, res.status
    assert bool((res.lengths <= res.straight_lengths).all())
    assert float((res.lengths / res.straight_lengths).min()) < 0.999


def test_fast_distance_matrix_equals_per_pair_results(moons):
    """pairwise_distances(method="fast") equals per-pair fast geodesics, whatever the chunk size."""
    metric, _, z0, _, _ = moons
    Z = z0[:6]
    with torch.no_grad():
        D2 = fastgeo.pairwise_distances(metric, Z, method="fast", chunk_size=2, workers=1, progress=False)
        D7 = fastgeo.pairwise_distances(metric, Z, method="fast", chunk_size=7, workers=1, progress=False)
        single = fastgeo.geodesics(metric, Z[1:2], Z[4:5], method="fast")
    torch.testing.assert_close(D2, D7, rtol=1e-5, atol=0)
    torch.testing.assert_close(D2[1, 4], single.lengths[0], rtol=1e-5, atol=0)
