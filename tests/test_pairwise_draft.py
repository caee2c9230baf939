"""pairwise_distances(mode="draft") (issue 18): every pair as a coarse curve, entries equal to the
drafts solved pair by pair, upper bounds of the exact distances, the measured error, statuses,
Z x Y, checkpoints, worker processes, refused options, the command line."""

import numpy as np
import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.pairwise.draft_mode import DRAFT_OPTIONS, close_chains
from fastgeo.pairwise.error_sample import draw_sample
from fastgeo.pairwise.solve_all import CODES, split_record
from fastgeo.solver.result import CONVERGED, DRAFT, STATUSES

M = 9


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric(d=4)


@pytest.fixture(scope="module")
def Z():
    return torch.randn(M, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.fixture(scope="module")
def draft_run(metric, Z):
    return fastgeo.pairwise_distances(
        metric, Z, mode="draft", error_sample=6, progress=False, return_report=True
    )


def test_status_codes_fit_the_record():
    """Every status code ("draft" the ninth, "chord_estimate" the tenth) survives the per-pair
    record with its iterations."""
    assert STATUSES[DRAFT] == "draft" and len(STATUSES) <= CODES
    codes = torch.arange(len(STATUSES), dtype=torch.int32)
    iterations = torch.tensor([0, 1, 7, 300, 2, 9, 40, 3, 10, 5000, 4, 6, 8, 11, 12, 13], dtype=torch.int32)
    iterations = iterations[: len(STATUSES)]
    status, its = split_record((iterations + 1) * CODES + codes)
    assert torch.equal(status.long(), codes.long()) and torch.equal(its, iterations)


def test_entries_are_the_drafts_pair_by_pair(draft_run, metric, Z):
    """Unsampled entries are the drafts of their pairs solved alone (geodesics(**DRAFT_OPTIONS),
    batch_size=1), then closed over chains of drafts; status "draft" with the draft's iterations;
    the matrix is symmetric with a zero, converged diagonal."""
    D, rep = draft_run
    assert torch.equal(D, D.T) and (D.diagonal() == 0).all()
    assert (rep.status_code.diagonal() == CONVERGED).all()
    i, j = torch.triu_indices(M, M, 1)
    alone = fastgeo.geodesics(metric, Z[i], Z[j], batch_size=1, progress=False, **DRAFT_OPTIONS)
    drafts = torch.zeros(M, M, dtype=D.dtype)
    drafts[i, j] = drafts[j, i] = alone.lengths
    closed, status = drafts.clone(), torch.full((M, M), DRAFT, dtype=torch.int8)
    assert close_chains(closed, status, False) == rep.draft_chains
    kept = torch.triu(rep.status_code == DRAFT, 1)
    assert int(kept.sum()) >= len(i) - 6 and rep.n_converged + rep.n_failed == len(i) - int(kept.sum())
    assert torch.allclose(D[kept], closed[kept], rtol=1e-9, atol=0)
    assert (D <= drafts * (1 + 1e-9)).all()
    k = kept[i, j] & (closed[i, j] == drafts[i, j])  # not shortened by a chain: the pair's own draft
    assert k.any() and torch.equal(rep.iterations[i[k], j[k]], alone.iterations[k].to(torch.int32))
    assert set(rep.status[i, j].tolist()) <= {"draft", "converged"}


def test_chains_of_drafts_shorten_entries():
    """Entries longer than a chain of entries through other codes take the chain's length, chains
    of more than two entries in further rounds; an entry a chain beats by less than TOL is kept."""
    x = torch.arange(5, dtype=torch.float64)
    true = (x[:, None] - x[None]).abs()
    D = torch.where(true > 1, torch.full_like(true, 100.0), true)  # only neighbours right
    status = torch.full((5, 5), DRAFT, dtype=torch.int8)
    assert close_chains(D, status, False) == 6  # the pairs two or more apart
    assert torch.equal(D, true) and (status == DRAFT).all()  # 0 -> 4: a chain of four entries
    D = torch.tensor([[0.0, 1.0, 2.0001], [1.0, 0.0, 1.0], [2.0001, 1.0, 0.0]], dtype=torch.float64)
    assert close_chains(D, status[:3, :3], False) == 0 and D[0, 2] == 2.0001  # 5e-5 < TOL


def test_drafts_bound_the_distances_and_the_sample_says_how_far(draft_run, metric, Z):
    """Entries lie between the exact geodesics and the straight segments; the report's error is
    the sampled entries' excess over their exact geodesics."""
    D, rep = draft_run
    exact = fastgeo.pairwise_distances(metric, Z, progress=False, chains=False)
    i, j = torch.triu_indices(M, M, 1)
    assert (D[i, j] >= exact[i, j] * (1 - 1e-6)).all()
    straight = fastgeo.geodesics(metric, Z[i], Z[j], progress=False, **DRAFT_OPTIONS).straight_lengths
    assert (D[i, j] <= straight * (1 + 2e-3)).all()
    err = rep.draft_error
    assert err.pairs == 6 and rep.graph_error is None and "draft distances" in str(err)
    drafts = fastgeo.pairwise_distances(metric, Z, mode="draft", error_sample=0, progress=False)
    excess = drafts[i, j] / exact[i, j] - 1
    assert -1e-6 <= err.min and err.max <= float(excess.max()) + 1e-9 and err.mean <= err.max
    si, sj, _, _ = draw_sample(torch.arange(M), torch.arange(M), True, 6)  # the report's sample
    sampled = (drafts[si, sj] / exact[si, sj] - 1).double()
    assert abs(err.mean - float(sampled.mean())) <= 1e-5 and abs(err.max - float(sampled.max())) <= 1e-5
    assert float(excess.mean()) > 0  # drafts are coarse: above the geodesics somewhere
    assert "drafts" in str(rep)


def test_rectangular_duplicates_and_memory_mapped_output(metric, Z, tmp_path):
    """Z x Y: every pair drafted, equal codes exactly 0; duplicates in Z expanded; out= maps."""
    Y = torch.cat([Z[:2], Z[5:6]])
    D, rep = fastgeo.pairwise_distances(
        metric, Z[:5], Y, mode="draft", error_sample=3, progress=False, return_report=True
    )
    assert D.shape == (5, 3) and D[0, 0] == 0 and D[1, 1] == 0 and (D[2:, :] > 0).all()
    assert rep.draft_error.pairs == 3
    Zd = torch.cat([Z[:4], Z[1:2]])
    path = tmp_path / "D.npy"
    D2 = fastgeo.pairwise_distances(metric, Zd, mode="draft", error_sample=0, out=path, progress=False)
    assert D2.shape == (5, 5) and D2[1, 4] == 0 and np.array_equal(np.load(path), D2.numpy())


def test_checkpoint_and_workers(metric, Z, tmp_path, one_thread):
    """A draft run resumes from its checkpoint (every chunk loaded, the same matrix), and worker
    processes give the one-process matrix (at one thread, the workers' count: BLAS may round
    otherwise at two, on AVX-512 machines in the last bits)."""
    kw = dict(mode="draft", error_sample=4, chunk_size=5, progress=False, return_report=True)
    D1, r1 = fastgeo.pairwise_distances(metric, Z, workers=1, checkpoint=tmp_path / "c", **kw)
    D2, r2 = fastgeo.pairwise_distances(metric, Z, workers=1, checkpoint=tmp_path / "c", **kw)
    assert torch.equal(D1, D2) and r2.chunks_loaded == r1.chunks_total == r1.chunks_computed
    D3, r3 = fastgeo.pairwise_distances(metric, Z, workers=2, **kw)
    assert torch.equal(D3, D1) and torch.equal(r3.status_code, r1.status_code)


def test_options_of_other_modes_are_refused(metric, Z):
    for name, value in (("neighbors", 3), ("straight", True)):
        with pytest.raises(ValueError, match=f"{name} is for mode='graph'; it has no effect in mode='draft'"):
            fastgeo.pairwise_distances(metric, Z, mode="draft", progress=False, **{name: value})
    with pytest.raises(ValueError, match="chains is for mode='exact'"):
        fastgeo.pairwise_distances(metric, Z, mode="draft", chains=True, progress=False)
    with pytest.raises(ValueError, match="error_sample is for mode='graph' or 'draft'"):
        fastgeo.pairwise_distances(metric, Z, error_sample=3, progress=False)
    with pytest.raises(ValueError, match="error_sample"):
        fastgeo.pairwise_distances(metric, Z, mode="draft", error_sample=-1, progress=False)


def test_command_line_draft_mode(metric, tmp_path):
    """fastgeo distances --mode draft writes the matrix and the per-pair statuses; graph-mode
    flags are refused there."""
    from analytic import saved_generator_and_codes

    from fastgeo.cli import main

    gen, codes = saved_generator_and_codes(tmp_path, 6), tmp_path / "Z.npy"
    out, report = tmp_path / "D.npy", tmp_path / "r.npz"
    base = ["distances", str(gen), str(codes), "-o", str(out), "--no-progress", "--mode", "draft"]
    assert main([*base, "--error-sample", "2", "--report", str(report)]) == 0
    D, rep = np.load(out), np.load(report)
    names = rep["status_names"][rep["status"]]
    assert D.shape == (6, 6) and (np.triu(names, 1) == "draft").sum() >= 15 - 2
    assert main([*base, "--neighbors", "3"]) != 0


def test_drafts_far_above_the_sample_warn(metric, Z, monkeypatch):
    """Drafts whose sample finds them more than GRAPH_WARN above the geodesics on average: the call
    warns, naming the drafts (the threshold lowered here, as these drafts are close)."""
    from fastgeo.pairwise import report

    monkeypatch.setattr(report, "GRAPH_WARN", -1.0)
    with pytest.warns(RuntimeWarning, match="the draft distances are .* above exact geodesics"):
        fastgeo.pairwise_distances(metric, Z[:5], mode="draft", error_sample=3, progress=False)


def test_sample_with_y_equal_to_z_solves_each_pair_once_and_stays_symmetric(metric, Z):
    """With ``Y = Z`` the entries (i, j) and (j, i) join the same two codes: the error sample
    draws each pair of codes once and both entries take its exact length."""
    Zs = Z[:5]
    D, rep = fastgeo.pairwise_distances(
        metric, Zs, Zs, mode="draft", error_sample=100, progress=False, return_report=True
    )
    assert rep.draft_error.pairs == 10 and rep.draft_error.every_pair
    assert (D - D.T).abs().max() < 1e-10
    D4, rep4 = fastgeo.pairwise_distances(
        metric, Zs, Zs, mode="draft", error_sample=4, progress=False, return_report=True
    )
    assert rep4.draft_error.pairs == 4 and not rep4.draft_error.every_pair
    assert (D4 - D4.T).abs().max() < 1e-10  # the drafts of (i, j) and (j, i) differ by rounding


def test_drawn_sample_holds_one_entry_per_pair_of_codes():
    from fastgeo.pairwise.error_sample import draw_sample, entries_of_pairs

    rows = torch.tensor([0, 1, 2, 3, 1])  # code 1 repeated
    cols = torch.tensor([2, 0, 1, 3])
    i, j, a, b = draw_sample(rows, cols, False, 100)
    pairs = {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}
    assert len(pairs) == a.numel() == 6 and (a != b).all()  # every pair of distinct codes, once
    ei, ej, s = entries_of_pairs(rows, cols, a, b)
    joined = {(min(x, y), max(x, y)) for x, y in zip(rows[ei].tolist(), cols[ej].tolist(), strict=True)}
    assert joined == pairs
    expected = [(r, c) for r in range(5) for c in range(4) if rows[r] != cols[c]]  # every entry
    assert sorted(zip(ei.tolist(), ej.tolist(), strict=True)) == expected
    assert all(
        (min(rows[x], cols[y]), max(rows[x], cols[y])) == (min(a[k], b[k]), max(a[k], b[k]))
        for x, y, k in zip(ei.tolist(), ej.tolist(), s.tolist(), strict=True)
    )
