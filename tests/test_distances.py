"""pairwise_distances (issue 6): symmetric fill, duplicates, chunking, Z x Y, per-pair status."""

import warnings

import pytest
import torch
from analytic import bumpy_metric, disc_points, sphere_metric

import fastgeo
from fastgeo.curves import straight_line, time_grid
from fastgeo.pairwise import PairwiseReport, triu_pairs
from fastgeo.solver.result import STATUSES

OPTS = {"max_iter": 30}


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 40])
def test_triu_pairs_matches_triu_indices(n):
    """triu_pairs(n, start, stop) enumerates the strict upper triangle in torch.triu_indices order,
    whole or any window of it."""
    total = n * (n - 1) // 2
    i, j = triu_pairs(n, 0, total)
    ii, jj = torch.triu_indices(n, n, offset=1)
    assert torch.equal(i, ii) and torch.equal(j, jj)
    if total > 3:  # any window of the order
        i, j = triu_pairs(n, 2, total - 1)
        assert torch.equal(i, ii[2:-1]) and torch.equal(j, jj[2:-1])


def test_triu_pairs_large_n_closed_form():
    """n = 200,003 (2e10 pairs): the closed form k -> (i, j) is exact at both ends and inside the
    order."""
    n = 200_003
    total = n * (n - 1) // 2
    for k in [0, 1, n - 2, n - 1, total // 3, total - 2, total - 1]:
        i, j = triu_pairs(n, k, k + 1)
        i, j = int(i), int(j)
        assert 0 <= i < j < n and i * n - i * (i + 1) // 2 + (j - i - 1) == k


def test_matches_geodesics_symmetric_zero_diagonal(metric):
    """One chunk: the upper triangle is the geodesics() batch's lengths bit for bit, the matrix
    symmetric with a zero diagonal; the report mirrors the batch (converged, iterations, work)."""
    Z = disc_points(7, 1.5)
    # workers=1: in this process, at its threads, like the geodesics() call it is compared with
    D, report = fastgeo.pairwise_distances(metric, Z, progress=False, return_report=True, workers=1, **OPTS)
    i, j = torch.triu_indices(7, 7, offset=1)
    res = fastgeo.geodesics(metric, Z[i], Z[j], batch_size=len(i), **OPTS)
    assert D.shape == (7, 7) and D.dtype == torch.float64
    assert torch.equal(D[i, j], res.lengths)  # one chunk: the very same batch
    assert torch.equal(D, D.T)
    assert torch.equal(D.diagonal(), torch.zeros(7, dtype=D.dtype))
    assert torch.isfinite(D).all() and (D[i, j] > 0).all()
    assert isinstance(report, PairwiseReport)
    assert report.n_pairs == 21 and report.chunks_total == 1 and report.chunks_computed == 1
    assert torch.equal(report.converged[i, j], res.converged)
    assert torch.equal(report.iterations[i, j], res.iterations.to(torch.int32))
    assert report.decoder_evals > 0 and report.decoder_jvps > 0 and report.wall_time > 0


@pytest.mark.slow  # ~20 s; chunked runs are also checked in test_checkpoint, test_distributed, test_io
def test_chunking_gives_same_distances(metric):
    """28 pairs in one chunk and in six chunks of five give the same matrix (1e-7)."""
    Z = disc_points(8, 1.5, seed=3)
    D1 = fastgeo.pairwise_distances(metric, Z, progress=False, **OPTS)
    D2, rep = fastgeo.pairwise_distances(metric, Z, chunk_size=5, progress=False, return_report=True, **OPTS)
    assert rep.chunk_size == 5 and rep.chunks_total == 6 and rep.chunks_computed == 6  # 28 pairs
    torch.testing.assert_close(D1, D2, rtol=1e-7, atol=1e-9)


def test_memory_budget_sets_the_chunk_size(metric):
    """A memory budget bounds the pairs per chunk (bounded memory whatever M): a small one splits
    6 pairs into several chunks; a budget that is not a positive number is refused."""
    Z = disc_points(4, 1.5, seed=3)
    _, rep = fastgeo.pairwise_distances(metric, Z, memory_budget=500_000, progress=False,
                                        return_report=True, **OPTS)  # fmt: skip
    assert 1 <= rep.chunk_size < 6 and rep.chunks_total == -(-6 // rep.chunk_size) == rep.chunks_computed
    for bad in (0, -1, 0.5, float("inf")):
        with pytest.raises(ValueError, match="memory_budget"):
            fastgeo.pairwise_distances(metric, Z, memory_budget=bad, progress=False)
    for bad in (True, "1GB"):
        with pytest.raises(TypeError, match="memory_budget"):
            fastgeo.pairwise_distances(metric, Z, memory_budget=bad, progress=False)


def test_duplicates_are_exact_zeros_and_copies(metric):
    """Repeated points: only distinct pairs are solved, equal points are exactly 0 apart, and the
    matrix is the distinct points' matrix, indexed."""
    Z = disc_points(6, 1.5, seed=1)
    Zd = torch.cat([Z, Z[[1, 4, 1]]])  # rows 6, 8 equal row 1; row 7 equals row 4
    D, report = fastgeo.pairwise_distances(metric, Zd, progress=False, return_report=True, **OPTS)
    D0 = fastgeo.pairwise_distances(metric, Z, progress=False, **OPTS)
    assert report.n_pairs == 15  # only the distinct pairs are solved
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 1, 4, 1])
    assert torch.equal(D, D0[idx][:, idx])
    assert D[1, 6] == 0 and D[6, 8] == 0 and D[4, 7] == 0
    assert torch.equal(D, D.T) and report.converged.shape == (9, 9)


def test_rectangular_all_pairs(metric):
    """Z x Y: the (3, 4) matrix is the lengths of the 12 geodesics; a point of Y equal to one of Z
    is at distance 0."""
    Z, Y = disc_points(3, 1.5, seed=4), disc_points(4, 1.5, seed=5)
    Y[2] = Z[1]
    D, report = fastgeo.pairwise_distances(metric, Z, Y, progress=False, return_report=True, workers=1,
                                           **OPTS)  # in this process, like the geodesics() call below
    a, b = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    res = fastgeo.geodesics(metric, Z[a.reshape(-1)], Y[b.reshape(-1)], batch_size=12, **OPTS)
    assert D.shape == (3, 4) and torch.equal(D.reshape(-1), res.lengths)
    assert D[1, 2] == 0 and report.n_pairs == 12


def test_sphere_distances_are_great_circles():
    """On the sphere metric the distances are great-circle distances (1e-4 relative; measured
    ~5e-6)."""
    metric = sphere_metric()
    Z = disc_points(5, 0.8, seed=2)
    D = fastgeo.pairwise_distances(metric, Z, progress=False)
    from analytic import great_circle

    i, j = torch.triu_indices(5, 5, offset=1)
    torch.testing.assert_close(D[i, j], great_circle(Z[i], Z[j]), rtol=1e-4, atol=0)


def test_non_converged_pairs_are_reported_not_hidden(metric):
    """max_iter = 1: unconverged pairs are warned about, flagged in the report and listed by
    failed_pairs(); their distances are finite and never longer than the straight line."""
    Z = disc_points(6, 1.5, seed=6)
    with pytest.warns(RuntimeWarning, match=r"(\d+) of 15 geodesics did not converge") as seen:
        D, report = fastgeo.pairwise_distances(
            metric, Z, max_iter=1, warm_start=False, progress=False, return_report=True
        )
    assert report.n_failed > 0 and report.n_failed + report.n_converged == 15
    # ... by status, counted (a straight_fallback pair was told to raise max_iter, as if at it)
    i, j = torch.triu_indices(6, 6, offset=1)
    failed_statuses = [s for s in report.status[i, j].tolist() if s != "converged"]
    told = ", ".join(f"{k} {failed_statuses.count(k)}" for k in STATUSES if k in failed_statuses)
    assert any(f"did not converge ({told})" in str(w.message) for w in seen), told
    failed = report.failed_pairs()
    assert failed.shape == (report.n_failed, 2) and (failed[:, 0] < failed[:, 1]).all()
    assert not report.converged[failed[:, 0], failed[:, 1]].any()
    assert torch.isfinite(D).all()
    # Best length found: never longer than the straight line.
    i, j = torch.triu_indices(6, 6, offset=1)
    straight = metric.length(straight_line(Z[i], Z[j], time_grid(32, Z)))
    assert (D[i, j] <= straight).all()
    assert str(report).startswith("15 geodesics")


def test_report_counts_pairs_of_equal_codes(metric):
    """Z x Y with codes in both: the report's counts add up to its pairs ("25 geodesics, 23
    converged, 0 not" left two pairs unaccounted for)."""
    Z = disc_points(5, 1.5)
    Y = torch.cat([Z[:2], disc_points(3, 0.7)])
    _, report = fastgeo.pairwise_distances(metric, Z, Y, progress=False, return_report=True, max_iter=30)
    assert (report.n_pairs, report.n_converged + report.n_failed) == (25, 23)
    counts = f"{report.n_converged} converged, {report.n_failed} not"
    assert str(report).startswith(f"25 geodesics, {counts}, 2 between equal codes (0);")


def test_converged_run_does_not_warn(metric):
    """A run whose pairs all converge emits no RuntimeWarning."""
    Z = disc_points(4, 1.0, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fastgeo.pairwise_distances(metric, Z, progress=False)


def test_progress_bar_reports_pairs(metric, capsys):
    """progress=True draws a bar (tqdm, in the test extra) counting pairs on stderr (None, the
    default of ``geodesics``, as True); False, nothing."""
    for progress in (True, None):
        fastgeo.pairwise_distances(metric, disc_points(4, 1.0), progress=progress, **OPTS)
        assert "pair" in capsys.readouterr().err
    fastgeo.pairwise_distances(metric, disc_points(4, 1.0), progress=False, **OPTS)
    assert capsys.readouterr().err == ""


def test_a_resumed_runs_bar_starts_at_the_pairs_read_back(metric, tmp_path, monkeypatch):
    """Pairs read back from a checkpoint are the bar's start (tqdm's ``initial``), out of its
    rate and time left: counted as updates, a resume showed 105 pairs/s for 4.5 solved."""
    tqdm = pytest.importorskip("tqdm").tqdm
    from fastgeo import _progress

    bars = []

    class Recorded(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append((kwargs.get("initial", 0), kwargs.get("total")))

    monkeypatch.setattr(_progress, "_tqdm", lambda: Recorded)
    Z = disc_points(5, 1.0)  # 10 pairs in chunks of 3: four chunks
    options = {"checkpoint": str(tmp_path / "ck"), "chunk_size": 3, **OPTS}
    first = fastgeo.pairwise_distances(metric, Z, progress=False, **options)
    (tmp_path / "ck" / "chunk_00000001.safetensors").unlink()
    again = fastgeo.pairwise_distances(metric, Z, progress=True, **options)
    assert torch.equal(first, again)
    # The pairs' bar is the first of 10 pairs (with two workers the latent graph's build, before
    # them, may show one of its own; a later bar: the check against chains through a third code).
    assert [bar for bar in bars if bar[1] == 10][:1] == [(7, 10)]


def test_latent_graph_built_before_the_workers_shows_a_bar(capsys, monkeypatch):
    """With several workers the latent graph is built before they fork, outside the pairs' bar:
    a build that runs past the delay gets a bar of its own, named; none without ``progress``."""
    pytest.importorskip("tqdm")
    from fastgeo.pairwise import setup

    monkeypatch.setattr(setup, "DELAY", 0.0)
    fresh = bumpy_metric()
    assert setup.build_latent_graph(fresh, {}, True) > 0
    assert "building the latent graph" in capsys.readouterr().err
    assert setup.build_latent_graph(fresh, {}, True) == 0  # cached: nothing built
    capsys.readouterr()
    assert setup.build_latent_graph(bumpy_metric(), {}, False) > 0
    assert capsys.readouterr().err == ""


def test_tiny_and_invalid_inputs(metric):
    """M = 0 and M = 1 give empty and zero matrices; a per-pair init, NaN points, chunk_size 0 and
    float32 points for a float64 metric are refused."""
    for M in (0, 1):
        D = fastgeo.pairwise_distances(metric, disc_points(M, 1.0), progress=False)
        assert D.shape == (M, M) and not D.any()
    Z = disc_points(3, 1.0)
    with pytest.raises(TypeError, match="init"):
        fastgeo.pairwise_distances(metric, Z, init=torch.zeros(3, 8, 2, dtype=torch.float64))
    with pytest.raises(ValueError):
        fastgeo.pairwise_distances(metric, torch.full((3, 2), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError):
        fastgeo.pairwise_distances(metric, Z, chunk_size=0)
    with pytest.raises(TypeError):
        fastgeo.pairwise_distances(metric, Z.float())
