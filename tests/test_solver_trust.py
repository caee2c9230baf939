"""Geodesics you can trust (the solver's promises, on the shipped generators):

- a curve's result does not depend on which other curves share its batch: random batches of
  1-64 pairs give, pair by pair, the same length (bit for bit here) and the same status as the
  pair solved in another batch; pairwise_distances equals per-pair geodesics for any chunk size;
- every reported length is the curve's own, within 0.1 % of its length on 4096 points (on random
  pairs and on the benchmarks' samples of pairs; the demo's pairs are checked in test_demo);
- statuses are honest: max_iter, nonfinite, stalled and straight_fallback where they happen.
"""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from helpers import randn

import fastgeo
from fastgeo.benchmarks.accuracy import length_gaps
from fastgeo.curves import Curves
from fastgeo.solver.levenberg_marquardt import levenberg_marquardt
from fastgeo.solver.measure import measure
from fastgeo.solver.problem import Grid
from fastgeo.solver.resolution import midpoint_lengths
from fastgeo.solver.result import STALLED, Work

DATA = Path(__file__).parent / "data"
BENCH = Path(__file__).resolve().parent.parent / "bench"
pytestmark = pytest.mark.filterwarnings("ignore:fastgeo.pairwise_distances")


@pytest.fixture(scope="module", params=["two_moons", "digits"])
def generator(request):
    path = DATA / f"{request.param}.safetensors"
    Z = fastgeo.load_extra(path)["latents"]
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(Z.shape[0], (2, 64), generator=g)
    return request.param, fastgeo.load_generator(path), Z[i], Z[j]


@pytest.fixture(scope="module")
def solved(generator):
    """The 64 pairs in one batch, at one thread like the tests that compare with it (results are
    batch-independent at any fixed thread count; across thread counts the last bits may differ)."""
    name, metric, z0, z1 = generator
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fastgeo.geodesics(metric, z0, z1)
    finally:
        torch.set_num_threads(threads)


def test_results_do_not_depend_on_the_batch(generator, solved, one_thread):
    """Random batches (sizes 1-64, random members) reproduce the 64-pair batch's length and status
    for every pair."""
    name, metric, z0, z1 = generator
    g = torch.Generator().manual_seed(1)
    for size in (1, 1, 2, 7, 23, 64):
        idx = torch.randperm(64, generator=g)[:size]
        res = fastgeo.geodesics(metric, z0[idx], z1[idx])
        assert torch.equal(res.lengths, solved.lengths[idx]), (name, size)
        assert (res.status == solved.status[idx.numpy()]).all(), (name, size)


def test_lengths_are_the_curves_own(solved, generator):
    """Every reported length is within 0.1 % of the returned curve's length on 4096 points,
    measured in float64 (in float32, 4096 segments of a short curve add up visible rounding
    noise), and its error estimate is below 0.1 % too."""
    name, metric, _, _ = generator
    rel = length_gaps(metric.to(torch.float64), solved)
    assert float(rel.abs().max()) < 1e-3, (name, float(rel.abs().max()))
    assert bool((solved.length_errors <= 1e-3 * solved.lengths).all())


def test_the_resolution_checks_lengths_are_the_measurements_first_grids(solved, generator, one_thread):
    """measure() seeded with the resolution check's two grids gives the same lengths, errors and
    grids as measuring from scratch, with those two grids' decoder evaluations saved."""
    name, metric, _, _ = generator
    curves, n = solved.curves, solved.resolution
    work_check, work_plain, work_seeded = Work(), Work(), Work()
    first = (curves.z0.new_zeros(len(curves)), curves.z0.new_zeros(len(curves)))
    for points in n.unique().tolist():  # subdivided curves: twice the points
        idx = (n == points).nonzero().squeeze(1)
        sub = Curves(curves.z0[idx], curves.z1[idx], curves.coeffs[idx], curves.basis)
        first[0][idx], first[1][idx] = midpoint_lengths(metric, sub, points, work_check)
    plain = measure(metric, curves, n, work_plain)
    seeded = measure(metric, curves, n, work_seeded, first=first)
    for a, b in zip(plain, seeded, strict=True):
        assert torch.equal(a, b), name
    assert work_seeded.evals == work_plain.evals - work_check.evals


def _workloads():
    """bench/workloads.py: the generators and samples of pairs the benchmarks measure."""
    spec = importlib.util.spec_from_file_location("fastgeo_bench_workloads", BENCH / "workloads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["two_moons", "digits"])
def test_lengths_are_the_curves_own_on_the_benchmark_pairs(name, seed, one_thread):
    """On the benchmarks' samples of 48 pairs (``workloads.solver_pairs``, a third across classes:
    seed 0, the pairs of every benchmark table, and the other four samples of
    ``bench/bench_basins.py``), every reported length is within 0.1 % of its curve's length on
    4096 points."""
    workloads = _workloads()
    metric = workloads.generator(name)[0]
    z0, z1 = workloads.solver_pairs(name, seed=seed)
    assert z0.shape == (workloads.PAIRS, 2)
    with torch.no_grad():
        res = fastgeo.geodesics(metric, z0, z1)
    rel = length_gaps(metric.to(torch.float64), res)
    worst = int(rel.abs().argmax())
    assert float(rel.abs().max()) < 1e-3, (name, seed, worst, float(rel[worst]), res.status[worst])


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
def test_pairwise_equals_per_pair_geodesics_for_any_chunk_size(generator, chunk_size, one_thread):
    """pairwise_distances on 9 codes (36 pairs) gives, for chunk sizes 1, 7 and 64, exactly the
    per-pair geodesic lengths."""
    name, metric, z0, _ = generator
    Z = z0[:9]
    D, report = fastgeo.pairwise_distances(
        metric, Z, chunk_size=chunk_size, progress=False, return_report=True
    )
    i, j = torch.triu_indices(9, 9, 1)
    alone = fastgeo.geodesics(metric, Z[i], Z[j])
    assert torch.equal(D[i, j], alone.lengths) and torch.equal(D, D.T)
    assert (report.status[i.numpy(), j.numpy()] == alone.status).all()


def test_statuses_are_honest():
    """max_iter when the iterations run out; nonfinite for a decoder returning NaN; converged
    otherwise; the messages say what each means."""
    from analytic import bumpy_metric

    metric = bumpy_metric()
    z0, z1 = randn(2, 4, 2, seed=3)
    short = fastgeo.geodesics(metric, z0, z1, max_iter=1, graph=False, warm_start=False)
    assert set(short.status) <= {"max_iter", "straight_fallback"} and "max_iter" in set(short.status)
    limited = [msg for msg, s in zip(short.message, short.status, strict=True) if s == "max_iter"]
    assert all("iteration limit" in msg for msg in limited)

    def nan_mean(z):
        out = metric.mean(z)
        return torch.where(z[..., :1] > 0.5, torch.nan, out)

    bad = fastgeo.ExpectedMetric(nan_mean, metric.precision)
    a = torch.tensor([[0.0, 0.0], [-1.0, -1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)  # the first crosses z_1 > 0.5
    with pytest.warns(RuntimeWarning, match="1 of 2 curves have no finite length"):
        res = fastgeo.geodesics(bad, a, b, graph=False)
    assert res.status.tolist()[0] == "nonfinite" and not bool(res.converged[0])
    assert res.status.tolist()[1] == "converged"
    full = fastgeo.geodesics(metric, z0, z1)
    assert torch.equal(full.converged, torch.as_tensor(full.status == "converged"))
    # d >= 4 (graph corridors): an end where the decoder is NaN, and no numpy warning on the way
    bumpy4 = bumpy_metric(d=4)
    bad4 = fastgeo.ExpectedMetric(
        lambda z: torch.where(z[..., :1] > 1.5, torch.nan, bumpy4.mean(z)), bumpy4.precision
    )
    ends = torch.zeros(2, 1, 4, dtype=torch.float64)
    ends[0, 0, 0], ends[1, 0, 0] = 1.0, 2.0
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = fastgeo.geodesics(bad4, ends[0], ends[1])
    assert res.status.tolist() == ["nonfinite"]
    assert [str(w.message)[:45] for w in seen if w.category is RuntimeWarning] == [
        "fastgeo.geodesics: 1 of 1 curves have no fini"
    ]  # the library's own, and no numpy warning


def test_a_step_that_keeps_failing_is_stalled_not_converged():
    """Levenberg-Marquardt on an embedding whose energy does not change with the curve, while its
    linear model promises a gain: the steps keep failing and the curve ends stalled."""
    z0 = torch.zeros(2, 2, dtype=torch.float64)
    z1 = torch.ones(2, 2, dtype=torch.float64)
    grid = Grid.of(fastgeo.PolynomialBasis(3), 8, z0)
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 8, 5, generator=g, dtype=torch.float64)
    J = torch.randn(2, 8, 2, 5, generator=g, dtype=torch.float64)

    def parts(points, idx):  # the same features wherever the points are
        return [(f[idx], J[idx])]

    coeffs = torch.zeros(2, 3, 2, dtype=torch.float64)
    _, _, status, iterations = levenberg_marquardt(parts, z0, z1, coeffs, grid, 100, 1e-10)
    assert status.tolist() == [STALLED, STALLED] and bool((iterations < 100).all())


def test_cli_matrices_do_not_depend_on_the_chunk_size(tmp_path, capsys, one_thread):
    """``fastgeo distances`` gives identical matrices (bit for bit) for chunk sizes 1, 7 and 64."""
    import numpy as np

    from fastgeo.cli import main

    path = DATA / "two_moons.safetensors"
    Z = fastgeo.load_extra(path)["latents"][:8]
    np.save(tmp_path / "Z.npy", Z.numpy())
    out = []
    for chunk in (1, 7, 64):
        target = tmp_path / f"D{chunk}.npy"
        argv = ["distances", str(path), str(tmp_path / "Z.npy"), "-o", str(target)]
        assert main([*argv, "--chunk-size", str(chunk), "--no-progress"]) == 0
        out.append(np.load(target))
    capsys.readouterr()
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
