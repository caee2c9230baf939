"""pairwise_distances' check against chains through a third code (fastgeo.pairwise.chains)."""

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo
from fastgeo.pairwise import chains
from fastgeo.pairwise.setup import solver_options_of as _solver_options
from fastgeo.solver.result import CHAIN, CONVERGED, UNDER_RESOLVED

OPTS = {"max_iter": 60}


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric()


@pytest.mark.parametrize("M", [1, 2, 5, 13])
def test_shortest_stop_matches_brute_force(M, monkeypatch):
    """Blocks of any size (here 2-3 rows and codes at a time) give min_k D[i, k] + D[k, j] and a k
    that attains it."""
    g = torch.Generator().manual_seed(M)
    X = torch.rand(M, 3, generator=g, dtype=torch.float64)
    D = torch.cdist(X, X) ** 1.5  # not a metric: chains beat some entries
    monkeypatch.setattr(chains, "BLOCK", 2 * M * M // 5 + 1)
    best, via = chains.shortest_stop(D)
    brute = (D[:, :, None] + D[None]).min(1).values
    assert torch.equal(best, brute)
    i, j = torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")
    assert torch.equal(D[i, via] + D[via, j], best)
    if M >= 5:
        assert (best < D).any()  # the check has something to find here


def _matrix(metric, Z):
    D, rep = fastgeo.pairwise_distances(metric, Z, progress=False, return_report=True, workers=1,
                                        chains=False, **OPTS)  # fmt: skip
    return D, rep.status_code.clone(), rep.iterations.clone()


def test_entry_too_long_is_solved_again_from_the_chain(metric):
    """An entry made 10 % too long (a basin missed) is beaten by a chain; solved again from it,
    it is a converged curve's length again, within the check's tolerance of the true one, and
    no chain beats any entry afterwards."""
    Z = disc_points(6, 1.5, seed=2)
    D, status, its = _matrix(metric, Z)
    assert status.eq(CONVERGED).all()
    truth = D[0, 3].clone()
    D[0, 3] = D[3, 0] = 1.1 * truth
    found = chains.check_chains(metric, Z, D, status, its, OPTS, _solver_options(metric, OPTS))
    assert found.beaten >= 1 and found.solved_shorter == found.beaten and found.chain_entries == 0
    assert found.remaining == 0 and found.geodesics >= 3 and found.decoder_evals > 0
    assert abs(float(D[0, 3] / truth) - 1) < 1e-3 and D[3, 0] == D[0, 3]
    assert status[0, 3] == status[3, 0] == CONVERGED
    best, _ = chains.shortest_stop(D)
    assert (best >= (1 - chains.TOL) * D).all()


def test_under_resolved_entries_are_checked_but_never_legs(metric):
    """An ``under_resolved`` entry's length may fall short of its curve's (the curve steps over a
    feature of the metric between its points): no upper bound, so no chain is built through it;
    the same entry made too long is still beaten by a chain of resolved legs."""
    Z = disc_points(6, 1.5, seed=2)
    D, status, its = _matrix(metric, Z)
    D[0, 1] = D[1, 0] = 0.01 * D[0, 1]  # a short under-resolved leg 0 -> 1 ...
    status[0, 1] = status[1, 0] = UNDER_RESOLVED
    before = D.clone()
    found = chains.check_chains(metric, Z, D, status, its, OPTS, _solver_options(metric, OPTS))
    assert found.beaten == 0 and torch.equal(D, before)  # ... makes no chain 1 -> 0 -> j
    D[0, 1] = D[1, 0] = 300 * before[0, 1]  # the entry itself 3x too long: beaten by resolved legs
    found = chains.check_chains(metric, Z, D, status, its, OPTS, _solver_options(metric, OPTS))
    assert found.beaten >= 1 and D[0, 1] < 200 * before[0, 1]


def test_chain_shorter_than_any_curve_keeps_its_length(metric):
    """Where the chain stays shorter than the curve solved from it (here two entries made too
    short, so no curve can reach their sum), the entry takes the chain's length with the
    status ``chain``, on both triangles."""
    Z = disc_points(5, 1.5, seed=4)
    D, status, its = _matrix(metric, Z)
    D[0, 2] = D[2, 0] = 0.3 * D[0, 2]
    D[2, 1] = D[1, 2] = 0.3 * D[2, 1]
    chain = D[0, 2] + D[2, 1]
    assert chain < D[0, 1]
    found = chains.check_chains(metric, Z, D, status, its, OPTS, _solver_options(metric, OPTS))
    assert found.chain_entries >= 1
    assert status[0, 1] == status[1, 0] == CHAIN
    assert D[0, 1] == D[1, 0] <= chain
    assert its[0, 1] > 0  # the solve from the chain counts


def test_pairwise_report_counts_the_check(metric):
    """A matrix of converged curves: the check runs by default (exact mode, no Y) and reports;
    chain entries count as neither converged nor failed."""
    Z = disc_points(6, 1.5, seed=5)
    D, rep = fastgeo.pairwise_distances(metric, Z, progress=False, return_report=True, **OPTS)
    assert isinstance(rep.chain_check, chains.ChainCheck)
    n_chain = int(torch.triu(rep.status_code == CHAIN, 1).sum())
    assert n_chain == rep.chain_check.chain_entries
    assert rep.n_converged + rep.n_failed + n_chain == rep.n_pairs == 15
    assert "chains:" in str(rep)
    best, _ = chains.shortest_stop(D.double())
    assert (best >= (1 - chains.TOL) * D).all()
    _, off = fastgeo.pairwise_distances(metric, Z, progress=False, return_report=True, chains=False, **OPTS)
    assert off.chain_check is None


def test_chains_option_is_checked(metric):
    """chains=True where it cannot apply (Y given, graph mode) and non-bool values are refused."""
    Z = disc_points(3, 1.0)
    with pytest.raises(ValueError, match="chains"):
        fastgeo.pairwise_distances(metric, Z, Z, chains=True, progress=False)
    with pytest.raises(ValueError, match="chains"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", chains=True, progress=False)
    with pytest.raises(TypeError, match="chains"):
        fastgeo.pairwise_distances(metric, Z, chains=1, progress=False)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_long_entry_is_repaired_in_the_file_and_with_workers(metric, monkeypatch, tmp_path, workers):
    """A chunk's solve that returns one pair 5 % longer than its best chain (a missed basin):
    the check repairs it in the memory-mapped output too, with worker processes or without, to
    the untouched run's length."""
    import numpy as np

    from fastgeo.pairwise import solve_all

    Z = disc_points(5, 1.5, seed=7)
    clean = fastgeo.pairwise_distances(metric, Z, progress=False, workers=1, chains=False, **OPTS)
    sums = clean[:, :, None] + clean[None]  # (i, k, j): D[i, k] + D[k, j]
    k = torch.arange(5)
    sums[k, k, :] = sums[:, k, k] = torch.inf  # chains through a third code only
    ratio = sums.min(1).values / clean
    ratio.fill_diagonal_(torch.inf)
    a, b = divmod(int(ratio.argmin()), 5)
    factor = 1.05 * float(ratio[a, b])  # the entry made 5 % longer than its best chain
    solve = solve_all.solve_chunk

    def one_long(metric, z0, z1, options):
        rec = solve(metric, z0, z1, options)
        hit = ((z0 == Z[a]) & (z1 == Z[b])).all(-1) | ((z0 == Z[b]) & (z1 == Z[a])).all(-1)
        rec["lengths"] = torch.where(hit, factor * rec["lengths"], rec["lengths"])
        return rec

    monkeypatch.setattr(solve_all, "solve_chunk", one_long)
    out = tmp_path / "D.npy"
    D, rep = fastgeo.pairwise_distances(metric, Z, progress=False, workers=workers, out=out, chunk_size=4,
                                        return_report=True, **OPTS)  # fmt: skip
    assert rep.chain_check.beaten >= 1 and rep.chain_check.remaining == 0
    assert abs(float(D[a, b] / clean[a, b]) - 1) < 1e-3 and D[b, a] == D[a, b]
    assert np.array_equal(np.load(out), D.numpy())
    others = torch.ones(5, 5, dtype=torch.bool)
    others[a, b] = others[b, a] = False
    torch.testing.assert_close(D[others], clean[others], rtol=1e-3, atol=0)
