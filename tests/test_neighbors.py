"""fastgeo.nearest_neighbors: the k nearest codes by geodesic distance, certified by the
feature-space lower bound, equal to the rows of the full matrix of per-pair geodesics."""

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo
from fastgeo.pairwise import neighbors, triu_pairs
from fastgeo.pairwise.feature_bound import FeatureBounds

OPTS = {"max_iter": 40}


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric(dtype=torch.float32)


@pytest.fixture(scope="module")
def codes():
    return disc_points(40, 1.5, dtype=torch.float32, seed=3)


@pytest.fixture(scope="module")
def full(metric, codes):
    """Every pair i < j solved by geodesics alone: the (M, M) matrix (inf on the diagonal)."""
    M = codes.shape[0]
    i, j = triu_pairs(M, 0, M * (M - 1) // 2)
    res = fastgeo.geodesics(metric, codes[i], codes[j], progress=False, **OPTS)
    D = torch.full((M, M), torch.inf, dtype=torch.float64)
    D[i, j] = D[j, i] = res.lengths.detach().double()
    return D


def _brute(D: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, order = torch.sort(D, dim=1, stable=True)
    return values[:, :k], order[:, :k]


@pytest.mark.parametrize("k", [1, 4])
def test_equals_the_rows_of_the_full_matrix(metric, codes, full, k):
    """The neighbours and their distances are the first k of each row of the matrix of per-pair
    geodesics (the same solves: batch independence), with fewer geodesics than all pairs."""
    res = fastgeo.nearest_neighbors(metric, codes, k, workers=1, progress=False, **OPTS)
    values, order = _brute(full, k)
    assert torch.equal(res.indices, order)
    torch.testing.assert_close(res.distances.double(), values, rtol=1e-6, atol=0)  # batch rounding
    assert res.certified.all() and res.converged.all()
    M = codes.shape[0]
    assert res.pairs_solved < M * (M - 1) // 2
    dist, idx = res  # unpacks as scikit-learn's (distances, indices)
    assert dist is res.distances and idx is res.indices
    assert res.status.shape == (M, k) and (res.status == "converged").all()
    assert "certified" in str(res)


def test_short_candidate_lists_grow(metric, codes, full, monkeypatch):
    """Lists that run out before the bound passes the k-th length are grown: the same result
    from lists of one candidate."""
    monkeypatch.setattr(neighbors, "CANDIDATES", 1)
    monkeypatch.setattr(neighbors, "MIN_CANDIDATES", 1)
    res = fastgeo.nearest_neighbors(metric, codes, 3, workers=1, progress=False, **OPTS)
    values, order = _brute(full, 3)
    assert torch.equal(res.indices, order)
    assert res.candidates > 3 and res.certified.all()


@pytest.mark.parametrize("limit", [2**63, 10**23])
def test_a_limit_beyond_the_codes_means_all_of_them(metric, codes, full, limit):
    """max_candidates above int64 wrapped round (a negative quota: KeyError) or overflowed."""
    res = fastgeo.nearest_neighbors(metric, codes, 3, max_candidates=limit, workers=1, progress=False, **OPTS)
    assert torch.equal(res.indices, _brute(full, 3)[1]) and res.certified.all()


def test_max_candidates_stops_and_flags(metric, codes, full):
    """With a limit of k geodesics per code, codes whose bound has not ruled out the rest are
    flagged (and warned of); the certified ones are still exact."""
    with pytest.warns(RuntimeWarning, match="not certified"):
        res = fastgeo.nearest_neighbors(metric, codes, 3, max_candidates=3, workers=1, progress=False, **OPTS)
    values, order = _brute(full, 3)
    assert 0 < int(res.certified.sum()) < codes.shape[0]
    ok = res.certified
    assert torch.equal(res.indices[ok], order[ok])
    assert (res.distances.double() >= values * (1 - 1e-6)).all()  # never below the true k nearest
    assert res.pairs_solved <= 3 * codes.shape[0]


def test_queries_against_references(metric, codes, full):
    """With Y: each query's k nearest references (a query equal to a reference: distance 0)."""
    Z, Y = codes[:7], codes[10:]
    res = fastgeo.nearest_neighbors(metric, Z, 3, Y, workers=1, progress=False, **OPTS)
    # Brute force with Z's own solves (the pairs are solved from query to reference here).
    i = torch.arange(7).repeat_interleave(Y.shape[0])
    j = torch.arange(Y.shape[0]).repeat(7)
    lengths = fastgeo.geodesics(metric, Z[i], Y[j], progress=False, **OPTS).lengths.detach().double()
    values, order = _brute(lengths.reshape(7, -1), 3)
    assert torch.equal(res.indices, order)
    torch.testing.assert_close(res.distances.double(), values, rtol=1e-6, atol=0)  # batch rounding
    same = fastgeo.nearest_neighbors(metric, Y[4:6], 1, Y, workers=1, progress=False, **OPTS)
    assert same.indices.flatten().tolist() == [4, 5] and (same.distances == 0).all()


def test_equal_codes_are_neighbours_at_distance_zero(metric, codes):
    """A code repeated at another index is its copy's nearest neighbour, at distance 0, without a
    solve."""
    Z = torch.cat([codes[:6], codes[2:3]])
    res = fastgeo.nearest_neighbors(metric, Z, 1, workers=1, progress=False, **OPTS)
    assert res.indices[2, 0] == 6 and res.indices[6, 0] == 2
    assert res.distances[2, 0] == 0 and res.distances[6, 0] == 0


def test_repeated_codes_share_one_solve_and_rank_as_the_matrix(metric, codes):
    """Copies of codes were solved again (4x the geodesics for every code twice) and a pair's two
    directions differ by rounding, so a copy ranked strictly nearer than the code itself: the
    neighbours disagreed with the matrix's rows."""
    A = codes[:6]
    once = fastgeo.nearest_neighbors(metric, A, 3, workers=1, progress=False, **OPTS)
    twice = fastgeo.nearest_neighbors(metric, torch.cat([A, A]), 3, workers=1, progress=False, **OPTS)
    assert twice.pairs_solved <= once.pairs_solved  # (its neighbours: the copy, then two others)
    Z = torch.cat([codes[0:1], codes[5:6], codes[0:1]])
    res = fastgeo.nearest_neighbors(metric, Z, 2, workers=1, progress=False, **OPTS)
    D = fastgeo.pairwise_distances(metric, Z, workers=1, progress=False, **OPTS)
    assert res.indices[1].tolist() == [0, 2]  # equal lengths, in the order of index
    assert torch.equal(res.distances[1], D[1, [0, 2]])


def test_the_bound_is_below_every_geodesic(metric, full, codes):
    """The feature-space distance bounds every solved geodesic from below, and the margin keeps
    it below in float32 too."""
    F = metric.features(codes).double()
    lb = torch.cdist(F, F)
    off = ~torch.eye(codes.shape[0], dtype=torch.bool)
    assert (lb[off] <= full[off] * (1 + 1e-6)).all()
    bounds = FeatureBounds(metric, codes, codes.shape[0], True)
    idx, low, beyond = bounds.candidates(5)
    assert (low <= lb.gather(1, idx)).all() and (low[:, -1] <= beyond).all()
    assert not (idx == torch.arange(codes.shape[0])[:, None]).any()  # never itself


def test_worker_processes_give_the_same_neighbours(metric, codes):
    res1 = fastgeo.nearest_neighbors(metric, codes[:24], 2, workers=1, progress=False, **OPTS)
    res2 = fastgeo.nearest_neighbors(metric, codes[:24], 2, workers=2, progress=False, **OPTS)
    assert torch.equal(res1.indices, res2.indices)
    # workers solve at one thread, this process at torch's thread count: last bits may differ
    torch.testing.assert_close(res1.distances, res2.distances, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k must be"),
        ({"k": True}, TypeError, "k must be an integer"),
        ({"k": torch.tensor(1.0)}, TypeError, "k must be an integer"),
        ({"k": 40}, ValueError, "k must be at most 39"),
        ({"progress": "yes"}, TypeError, "progress must be"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"neighbours": 3}, TypeError, "unknown option"),
        ({"max_candidates": 1}, ValueError, "max_candidates"),
    ],
)
def test_bad_arguments_name_themselves(metric, codes, kwargs, error, match):
    with pytest.raises(error, match=match):
        fastgeo.nearest_neighbors(metric, codes, **{"k": 2, **kwargs})


def test_bad_codes_name_themselves(metric, codes):
    with pytest.raises(ValueError, match="Z"):
        fastgeo.nearest_neighbors(metric, codes[:, :1], 2)
    with pytest.raises(TypeError, match="Y"):
        fastgeo.nearest_neighbors(metric, codes, 2, codes.double())
    with pytest.raises(ValueError, match="k must be at most 3"):
        fastgeo.nearest_neighbors(metric, codes, 4, codes[:3])
    bad = codes.clone()
    bad[1, 0] = torch.nan
    with pytest.raises(ValueError, match="Z"):
        fastgeo.nearest_neighbors(metric, bad, 2)


def test_ties_are_broken_by_index_as_in_the_matrix(metric, codes):
    """Copies of one code at several indices, at distance exactly 0 from each other: where k cuts
    through the tie, the lower indices are the neighbours, as in the stable-sorted rows of the
    full matrix. (Equal lengths of other pairs, b -> a_i solved in either direction, are equal
    only to rounding, which depends on the threads: their neighbours are checked by distance.)"""
    a, b, c = codes[0], codes[1], codes[2]
    Z = torch.stack([a, b, a, c, a])
    res = fastgeo.nearest_neighbors(metric, Z, 2, workers=1, progress=False, **OPTS)
    D = fastgeo.pairwise_distances(metric, Z, workers=1, progress=False, **OPTS).double()
    D.fill_diagonal_(torch.inf)
    values, order = _brute(D, 2)
    copies = [0, 2, 4]
    assert torch.equal(res.indices[copies], order[copies])
    assert res.indices[copies].tolist() == [[2, 4], [0, 4], [0, 2]] and not res.distances[copies].any()
    torch.testing.assert_close(res.distances.double(), values, rtol=1e-5, atol=0)
    same = fastgeo.nearest_neighbors(metric, torch.stack([a, a, a, a]), 3, workers=1, progress=False)
    assert same.indices.tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]


@pytest.mark.parametrize("where", ["Z", "Y"])
def test_codes_where_the_decoder_overflows_are_named(where):
    """A mean that is inf at one (finite) code: its bounds would be NaN, rule out nothing and
    certify rows never solved; the call names the code instead."""
    lin = torch.nn.Linear(2, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[60.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        lin.bias.zero_()
    mean = torch.nn.Sequential(lin, torch.nn.Softplus(threshold=1e9))  # exp(240) overflows float32
    prec = fastgeo.RBFPrecision(torch.zeros(1, 2), torch.ones(1), torch.ones(3, 1), 0.1)
    metric = fastgeo.ExpectedMetric(mean, prec)
    Z = disc_points(5, 0.5, dtype=torch.float32, seed=1)
    far = torch.tensor([[4.0, 0.0]])
    Z, Y = (torch.cat([Z, far]), None) if where == "Z" else (Z, torch.cat([Z[:2], far]))
    name = "Z\\[5\\]" if where == "Z" else "Y\\[2\\]"
    with pytest.raises(ValueError, match=f"not finite at 1 code.*{name}"):
        fastgeo.nearest_neighbors(metric, Z, 2, Y, workers=1, progress=False)
