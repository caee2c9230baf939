"""Edge cases of ``pairwise_distances`` in every mode: codes in both Z and Y, empty code sets,
refused calls that must leave an existing output file alone, error samples larger than the
matrix, and the report's failed pairs."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import bumpy_metric

import fastgeo

MODES = ("exact", "draft", "graph", "chord")


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric(d=4)


def codes(M, seed):
    return torch.randn(M, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def run(metric, Z, Y=None, mode="exact", **kw):
    if mode != "exact":
        kw.setdefault("error_sample", 20)
    return fastgeo.pairwise_distances(metric, Z, Y, mode=mode, progress=False, return_report=True,
                                      workers=1, method="fast", **kw)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_codes_in_both_sets_are_converged_zeros(metric, mode):
    """Z x Y where two codes of Y are codes of Z: exact zeros with the status of the diagonal
    (converged; iterations -1 where kept per pair), and not counted as solved geodesics."""
    Z = codes(4, 3)
    Y = torch.cat([Z[[0, 2]], codes(2, 8)])
    D, rep = run(metric, Z, Y, mode)
    for i, j in ((0, 0), (2, 1)):
        assert D[i, j] == 0 and rep.status[i, j] == "converged"
        if mode in ("exact", "draft"):
            assert rep.iterations[i, j] == -1
    assert (D[1] > 0).all() and (D[:, 2:] > 0).all()
    assert rep.n_converged + rep.n_failed <= 14  # the 14 pairs of distinct codes at most
    if mode == "exact":
        assert rep.n_converged + rep.n_failed == 14


@pytest.mark.parametrize("mode", MODES)
def test_empty_code_sets(metric, mode):
    """No codes in Z (or in Y) is an empty matrix in every mode, not an internal error."""
    D, rep = run(metric, codes(0, 1), mode=mode)
    assert D.shape == (0, 0) and rep.n_pairs == 0
    D, _ = run(metric, codes(3, 1), codes(0, 2), mode=mode)
    assert D.shape == (3, 0)
    with pytest.raises(ValueError, match="Z holds no codes"):
        fastgeo.nearest_neighbors(metric, codes(0, 1), 1, codes(3, 2), progress=False)


def test_a_refused_call_leaves_the_output_file(metric, tmp_path):
    """Arguments refused after the output's path was checked (graph edges, a checkpoint of other
    codes) must not have overwritten an existing ``out`` file."""
    out, ck = tmp_path / "D.npy", tmp_path / "ck"
    Z = codes(4, 5)
    run(metric, Z, out=out, checkpoint=ck)
    before = np.load(out).copy()
    assert before.shape == (4, 4) and before.sum() > 0
    with pytest.raises(ValueError, match="edges"):
        run(metric, Z, mode="graph", edges="bogus", out=out)
    with pytest.raises(ValueError, match="different inputs"):
        run(metric, codes(3, 6), out=out, checkpoint=ck)
    assert np.array_equal(np.load(out), before)


def test_an_error_sample_larger_than_the_matrix_measures_every_pair(metric):
    """error_sample above the number of pairs samples each pair once (and allocates nothing of
    the size asked)."""
    _, rep = run(metric, codes(5, 7), mode="graph", error_sample=10**9)
    assert rep.graph_error.pairs == 10


@pytest.mark.parametrize("mode", ("draft", "graph", "chord"))
def test_failed_pairs_are_the_counted_failures(metric, mode):
    """Estimates and drafts are not failures: ``failed_pairs()`` lists the ``n_failed`` pairs."""
    _, rep = run(metric, codes(10, 9), mode=mode, error_sample=20)  # 25 of 45 pairs estimated
    assert rep.failed_pairs().shape == (rep.n_failed, 2) and not rep.converged.all()
    _, rep = run(metric, codes(6, 9), max_iter=1)
    assert rep.n_failed > 0 and rep.failed_pairs().shape == (rep.n_failed, 2)


def test_mode_only_arguments_are_refused_elsewhere(metric):
    """chains (either value) is for exact symmetric matrices; a checkpoint must be a path."""
    Z = codes(3, 4)
    for kw in ({"mode": "graph", "chains": False}, {"mode": "chord", "chains": True}):
        with pytest.raises(ValueError, match="chains is for mode='exact'"):
            run(metric, Z, **kw)
    with pytest.raises(ValueError, match="chains is for mode='exact' without Y"):
        run(metric, Z, codes(2, 5), chains=False)
    with pytest.raises(TypeError, match="checkpoint"):
        run(metric, Z, checkpoint=5)


class Interrupted(KeyboardInterrupt):
    pass


def test_an_interrupted_run_leaves_the_output_file(metric, tmp_path, monkeypatch):
    """A run stopped partway (Ctrl-C inside the decoder) leaves an earlier ``out`` file as it was,
    not a file of zeros that would read as distances, and no temporary file beside it."""
    out = tmp_path / "D.npy"
    Z = codes(5, 9)
    run(metric, Z, out=out, chunk_size=3)
    before = np.load(out).copy()
    assert (before + np.eye(5) > 0).all()
    calls = {"n": 0}
    mean = metric.mean

    def stopping(z):
        calls["n"] += 1
        if calls["n"] > 40:
            raise Interrupted
        return mean(z)

    monkeypatch.setattr(metric, "mean", stopping)
    with pytest.raises(Interrupted):
        run(metric, Z, out=out, chunk_size=3)
    assert calls["n"] > 40
    assert np.array_equal(np.load(out), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D.npy"]


@pytest.mark.skipif(os.name == "nt", reason="no flock: abandoned temporaries are left on Windows")
def test_a_killed_runs_out_file_is_removed_and_a_live_runs_kept(metric, tmp_path):
    """A run killed while filling ``out`` leaves a full-size temporary (its time stamp stays old
    under a memory map); the next run with that ``out`` removes it, not one a live run holds, nor
    another file's; a checkpoint in the same folder removes only its own."""
    import fcntl
    import time

    old = time.time() - 3600
    names = [".D.npy.killed1.tmp", ".D.npy.live2.tmp", ".E.npy.other3.tmp", ".thesis.draft.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 64)
        os.utime(tmp_path / name, (old, old))
    live = os.open(tmp_path / ".D.npy.live2.tmp", os.O_RDONLY)
    try:
        fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)
        run(metric, codes(4, 2), checkpoint=tmp_path, chunk_size=3)
        assert all((tmp_path / name).exists() for name in names)
        run(metric, codes(4, 2), out=tmp_path / "D.npy", chunk_size=3)
    finally:
        os.close(live)
    left = sorted(p.name for p in tmp_path.glob(".*.tmp"))
    assert left == sorted(names[1:]) and (tmp_path / "D.npy").exists()


@pytest.mark.parametrize("duplicates", [False, True])
def _no_solves(monkeypatch) -> list:
    import fastgeo.pairwise.chunks as chunks

    calls = []
    monkeypatch.setattr(chunks, "geodesics", lambda *a, **k: calls.append(1))
    return calls


@pytest.mark.parametrize("duplicates", [False, True])
def test_an_out_path_that_is_a_folder_is_refused_before_any_work(metric, tmp_path, duplicates, monkeypatch):
    """``out`` naming a folder is a ValueError before any geodesic is solved, also where duplicate
    codes make the file be written at the end only."""
    (tmp_path / "D.npy").mkdir()
    Z = codes(4, 2)
    if duplicates:
        Z = torch.cat([Z, Z[:1]])
    solves = _no_solves(monkeypatch)
    with pytest.raises(ValueError, match="out: .* is a folder"):
        run(metric, Z, out=tmp_path / "D.npy")
    assert not solves


def test_a_read_only_out_file_is_refused_before_any_work(metric, tmp_path, monkeypatch):
    """Its copy's mode was read-only too: a PermissionError naming a hidden temporary file, after
    the work. (The test runs as root here, whom every mode lets write: access is denied by hand.)"""
    out = tmp_path / "D.npy"
    np.save(out, np.zeros((4, 4), np.float32))
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
    solves = _no_solves(monkeypatch)
    with pytest.raises(ValueError, match="out: .* is read-only"):
        run(metric, codes(4, 2), out=out)
    assert not solves


def test_a_report_prints_in_one_line():
    """Its dataclass repr printed both (M, M) tensors whole."""
    _, report = run(metric=bumpy_metric(d=4), Z=codes(5, 3))
    text = repr(report)
    assert text.startswith("PairwiseReport(5 x 5: 10 geodesics") and "tensor(" not in text
    assert "chunks of up to" in str(report)


@pytest.mark.parametrize("entry", ["pairwise_distances", "nearest_neighbors"])
def test_a_memory_budget_below_one_pair_is_warned(metric, entry):
    """It was floored at one pair per chunk without a word."""
    Z = codes(3, 5)
    call = getattr(fastgeo, entry)
    extra = {"k": 1} if entry == "nearest_neighbors" else {}
    with pytest.warns(UserWarning, match="below the memory model's estimate for one pair") as record:
        call(metric, Z, memory_budget=1024, progress=False, workers=1, method="fast", **extra)
    assert record[0].filename == __file__


@pytest.mark.parametrize("Y", [None, 0])
def test_worker_processes_build_no_graph_where_there_is_no_pair(metric, Y):
    """With workers > 1 the latent graph was built before the fork even with no pair to solve (M =
    1, or Y empty): a second of decoder work for an empty matrix."""
    Z = codes(3, 0)
    Z, Y = (Z[:1], None) if Y is None else (Z, Z[:0])
    D, report = fastgeo.pairwise_distances(metric, Z, Y, workers=2, progress=False, return_report=True)
    assert D.numel() <= 1 and report.decoder_evals == 0
