"""pairwise_distances(shared_starts=True) (issue 18): pairs started from chains of the code
graph's geodesics. The chains are Dijkstra's paths, the starts follow them, the matrix does not
depend on chunks or workers, entries are never longer than the default's by more than rounding,
and bad arguments are refused."""

import numpy as np
import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.curves import Curves
from fastgeo.pairwise.shared_starts import build_chain_starts
from fastgeo.solver.result import CONVERGED

M, NEIGHBORS = 16, 3  # few edges per code: most pairs are solved from chains of several edges
OPTS = {"neighbors": NEIGHBORS, "progress": False}


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric(d=4, D=8, K=6)


@pytest.fixture(scope="module")
def Z():
    return torch.randn(M, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def starts(metric, Z):
    return build_chain_starts(metric, Z, {}, NEIGHBORS, 64, False, 1)


def test_paths_are_shortest_chains_of_edges(starts, Z):
    i, j = torch.triu_indices(M, M, 1)
    paths = starts.paths(i, j)
    lengths = {tuple(e): w for e, w in zip(starts.graph.edges.tolist(), starts.graph.lengths, strict=True)}
    dist = np.concatenate([d for _, d in starts.graph.distance_rows(np.arange(M))])
    several = 0
    for a, b, path in zip(i.tolist(), j.tolist(), paths, strict=True):
        assert path[0] == a and path[-1] == b and len(set(path)) == len(path)
        total = sum(lengths[(min(u, v), max(u, v))] for u, v in zip(path[:-1], path[1:], strict=True))
        assert total == pytest.approx(dist[a, b], rel=1e-12)
        several += len(path) > 2
    assert several >= len(paths) // 2  # the test exercises chains, not only edges


def test_a_chain_start_follows_its_codes(starts, Z):
    """The fitted start of a chain through a third code passes by that code (the straight line
    between the ends does not), and ends exactly at the pair's codes."""
    i, j = torch.triu_indices(M, M, 1)
    paths = starts.paths(i, j)
    k = max(range(len(paths)), key=lambda q: (len(paths[q]) == 3) * float((Z[i[q]] - Z[j[q]]).norm()))
    a, mid, b = paths[k]
    coeffs = starts.starts(i[k : k + 1], j[k : k + 1], [paths[k]])
    curve = Curves(Z[a : a + 1], Z[b : b + 1], coeffs, starts.basis_options.basis).points(200)[0]
    span = float((Z[a] - Z[b]).norm())
    assert float((curve - Z[mid]).norm(dim=1).min()) < 0.05 * span
    line = Z[a] + torch.linspace(0, 1, 200, dtype=Z.dtype)[:, None] * (Z[b] - Z[a])
    assert float((line - Z[mid]).norm(dim=1).min()) > 0.1 * span
    assert torch.equal(curve[0], Z[a]) and torch.equal(curve[-1], Z[b])


def test_entries_are_curves_no_longer_than_the_default(metric, Z):
    """The chain races with the default's own starts: no entry is longer than the default's (a
    chain raced with the straight line alone was 11.6 % longer on one pair of these 120)."""
    D, rep = fastgeo.pairwise_distances(metric, Z, shared_starts=True, return_report=True, **OPTS)
    D0 = fastgeo.pairwise_distances(metric, Z, progress=False)
    assert torch.equal(D, D.T) and torch.equal(D.diagonal(), torch.zeros(M, dtype=D.dtype))
    off = ~torch.eye(M, dtype=torch.bool)
    assert bool((D[off] <= D0[off] * (1 + 1e-6)).all()), float((D[off] / D0[off]).max())
    assert bool((rep.status_code == CONVERGED).all()) and rep.n_converged == rep.n_pairs
    assert rep.graph_edges > 0 and rep.decoder_jvps > 0


def test_chunks_and_workers_give_the_same_matrix(metric, Z, tmp_path):
    """Chunks of 5 and 45 pairs, two worker processes (one thread each), a resumed checkpoint:
    the same matrix bit for bit (the starts depend on the graph, not on the batch)."""
    Z, kw = Z[:10], dict(shared_starts=True, return_report=True, **OPTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' one thread
    try:
        D1, r1 = fastgeo.pairwise_distances(metric, Z, workers=1, chunk_size=64, **kw)
        D5, _ = fastgeo.pairwise_distances(metric, Z, workers=1, chunk_size=5, **kw)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(D5, D1)
    ckpt = tmp_path / "ckpt"
    D2, r2 = fastgeo.pairwise_distances(metric, Z, workers=2, chunk_size=9, checkpoint=ckpt, **kw)
    assert torch.equal(D2, D1) and torch.equal(r2.status_code, r1.status_code)
    again, r3 = fastgeo.pairwise_distances(metric, Z, workers=2, chunk_size=9, checkpoint=ckpt, **kw)
    assert torch.equal(again, D1) and r3.chunks_loaded == r3.chunks_total
    with pytest.raises(ValueError, match="different inputs.*options"):  # another run's checkpoint
        fastgeo.pairwise_distances(metric, Z, workers=1, chunk_size=9, checkpoint=ckpt, progress=False)


def test_bad_arguments_are_refused(metric, Z):
    with pytest.raises(TypeError, match="shared_starts"):
        fastgeo.pairwise_distances(metric, Z, shared_starts="yes", progress=False)
    with pytest.raises(ValueError, match="shared_starts=True is for mode='exact' without Y"):
        fastgeo.pairwise_distances(metric, Z, Z[:3], shared_starts=True, progress=False)
    with pytest.raises(ValueError, match="shared_starts=True is for mode='exact' without Y"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", shared_starts=True, progress=False)
    with pytest.raises(ValueError, match="neighbors is for mode='graph' or shared_starts=True"):
        fastgeo.pairwise_distances(metric, Z, neighbors=3, progress=False)
    with pytest.raises(ValueError, match="neighbors"):
        fastgeo.pairwise_distances(metric, Z, neighbors=0, shared_starts=True, progress=False)
