"""pairwise_distances(mode="graph") (issue 18): the code graph's edges, graph distances as upper
bounds of the exact ones, the measured error, statuses, Z x Y, duplicates, memory-mapped output,
errors."""

import numpy as np
import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo
from fastgeo.pairwise import graph_mode
from fastgeo.pairwise.code_graph import neighbour_edges
from fastgeo.pairwise.error_sample import draw_sample
from fastgeo.solver.result import CONVERGED, GRAPH_ESTIMATE, STATUSES

OPTS = {"max_iter": 30}
M = 14


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric()


@pytest.fixture(scope="module")
def Z():
    return disc_points(M, 1.5)


@pytest.fixture(scope="module")
def exact(metric, Z):
    return fastgeo.pairwise_distances(metric, Z, progress=False, **OPTS)


@pytest.fixture(scope="module")
def graph_run(metric, Z):
    return fastgeo.pairwise_distances(
        metric, Z, mode="graph", neighbors=4, error_sample=30, edges="exact", progress=False,
        return_report=True, **OPTS,
    )  # fmt: skip


def test_neighbour_edges_connect_and_spread():
    """Edges are unique pairs i < j; two far clusters get a bridge; on a line of codes a code gets
    near neighbours on both sides, not k on one (the direction rule), and far ones."""
    g = torch.Generator().manual_seed(0)
    Z = torch.cat(
        [
            torch.randn(20, 2, generator=g, dtype=torch.float64),
            100 + torch.randn(20, 2, generator=g, dtype=torch.float64),
        ]
    )
    e = neighbour_edges(Z, 3)
    assert (e[:, 0] < e[:, 1]).all() and torch.unique(e, dim=0).shape == e.shape
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adj = coo_matrix((np.ones(len(e)), (e[:, 0].numpy(), e[:, 1].numpy())), shape=(40, 40))
    assert connected_components(adj, directed=False)[0] == 1
    line = torch.stack([torch.arange(9, dtype=torch.float64) ** 1.01, torch.zeros(9, dtype=torch.float64)], 1)
    e = neighbour_edges(line, 2)
    nb4 = {v for v in set(e[(e == 4).any(1)].flatten().tolist()) - {4} if abs(v - 4) < 3}
    assert nb4 == {3, 5}  # near: both sides
    nb0 = set(e[(e == 0).any(1)].flatten().tolist()) - {0}
    assert 1 in nb0 and 2 not in nb0  # code 2 lies behind code 1: skipped by the direction rule
    assert max(nb0) >= 5  # and one far edge, beyond 5 times the nearest distance


def test_neighbour_search_memory_bounded(monkeypatch):
    """A large ``neighbors`` shrinks the search's blocks so that their (block, C, C) cosines stay
    within ``SEARCH_ELEMENTS`` (k = 30 on 160 codes held (128, 159, 159) before), with the same
    edges as unbounded blocks."""
    from fastgeo.pairwise import code_graph

    Z = torch.randn(160, 8, generator=torch.Generator().manual_seed(1))
    free = neighbour_edges(Z, 30)
    shapes = []
    spread = code_graph._spread
    monkeypatch.setattr(code_graph, "_spread", lambda cos, *a: shapes.append(cos.shape) or spread(cos, *a))
    monkeypatch.setattr(code_graph, "SEARCH_ELEMENTS", 4 * 159 * 159)
    assert torch.equal(neighbour_edges(Z, 30), free)
    assert max(s[0] for s in shapes) == 4 and all(s[1] == s[2] == 159 for s in shapes)
    assert neighbour_edges(Z[:10], 0).shape == (9, 2)  # k = 0: the connecting edges alone


def test_graph_distances_are_upper_bounds(graph_run, exact, metric, Z):
    """Every graph distance is at least the exact one (chains of geodesics; up to the solver's
    own tolerance), the matrix is symmetric with a zero diagonal, no entry is NaN."""
    D, rep = graph_run
    assert D.shape == (M, M) and D.dtype == torch.float64
    assert torch.equal(D, D.T) and torch.equal(D.diagonal(), torch.zeros(M, dtype=D.dtype))
    assert torch.isfinite(D).all()
    off = ~torch.eye(M, dtype=torch.bool)
    assert (D[off] >= exact[off] * (1 - 1e-6)).all()
    assert (D[off] <= 3 * exact[off]).all()  # and not absurdly far above


def test_edges_and_sample_hold_geodesics(graph_run, metric, Z):
    """Entries whose chain is the edge itself are that pair's geodesic (its length and status);
    the sampled pairs hold the shorter of graph and exact; everything else is a graph estimate."""
    D, rep = graph_run
    st = rep.status_code
    assert st.dtype == torch.int8 and torch.equal(st, st.T)
    assert (st.diagonal() == CONVERGED).all()
    solved = torch.triu(st != GRAPH_ESTIMATE, 1).nonzero()
    assert len(solved) >= M  # at least the edges of a connected graph
    i, j = solved[:, 0], solved[:, 1]
    res = fastgeo.geodesics(metric, Z[i], Z[j], **OPTS, refine=1, corridors=0)
    res_full = fastgeo.geodesics(metric, Z[i], Z[j], **OPTS)
    # edges are solved with refine=1, corridors=0; sampled pairs with the full default
    close = torch.isclose(D[i, j], res.lengths, rtol=1e-9) | torch.isclose(
        D[i, j], res_full.lengths, rtol=1e-9
    )
    assert close.all()
    assert set(rep.status[i, j].tolist()) <= set(STATUSES) - {"graph_estimate"}
    est = torch.triu(st == GRAPH_ESTIMATE, 1)
    assert rep.n_converged + rep.n_failed == len(solved)
    assert int(est.sum()) == rep.n_pairs - len(solved)


def test_measured_error_matches_exact(graph_run, exact, metric, Z):
    """The report's error is the graph distances' excess over exact geodesics on its sample:
    consistent with the exact matrix (max >= mean >= 0 up to rounding; the largest excess is no
    more than the whole matrix's)."""
    D, rep = graph_run
    e = rep.graph_error
    assert e.pairs == min(30, M * (M - 1) // 2)
    assert e.min >= -1e-6 and e.min <= e.median <= e.p95 <= e.max and e.min <= e.mean <= e.max
    off = ~torch.eye(M, dtype=torch.bool)
    D_graph_only, _ = fastgeo.pairwise_distances(
        metric, Z, mode="graph", neighbors=4, error_sample=0, edges="exact", progress=False,
        return_report=True, **OPTS,
    )  # fmt: skip
    whole = (D_graph_only[off] / exact[off] - 1).max()
    assert e.max <= whole + 1e-6
    # The same sample's excess, measured here against the exact matrix's entries:
    i, j, _, _ = draw_sample(torch.arange(M), torch.arange(M), True, 30)
    excess = (D_graph_only[i, j] / exact[i, j] - 1).double()
    assert e.pairs == len(i) and float(excess.max()) > 1e-3  # (graph chains are longer somewhere)
    assert abs(e.mean - float(excess.mean())) <= 1e-5 and abs(e.max - float(excess.max())) <= 1e-5
    assert "random pairs" in str(rep) and "graph of" in str(rep)


def test_draft_edges_by_default(metric, Z):
    """By default the edges are drafts: entries that are their edge hold the pair's draft
    (geodesics(**DRAFT_OPTIONS)) with the status "draft"; the graph distances lie at or a little
    above the ones with exact edges; edges="exact" or a wrong value outside the graph mode is
    refused."""
    from fastgeo.pairwise.draft_mode import DRAFT_OPTIONS
    from fastgeo.solver.result import DRAFT

    kw = dict(mode="graph", neighbors=4, error_sample=0, progress=False, **OPTS)
    D_exact_edges = fastgeo.pairwise_distances(metric, Z, edges="exact", **kw)
    D, rep = fastgeo.pairwise_distances(metric, Z, return_report=True, **kw)
    i, j = torch.triu(rep.status_code == DRAFT, 1).nonzero(as_tuple=True)
    assert len(i) >= M - 1 and torch.equal(rep.status_code, rep.status_code.T)
    assert set(rep.status[torch.triu_indices(M, M, 1).unbind()].tolist()) <= {"draft", "graph_estimate"}
    drafts = fastgeo.geodesics(metric, Z[i], Z[j], progress=False, **DRAFT_OPTIONS)
    assert torch.allclose(D[i, j], drafts.lengths, rtol=1e-9, atol=0)
    off = ~torch.eye(M, dtype=torch.bool)
    ratio = D[off] / D_exact_edges[off]
    # a draft is never much shorter than a solve to max_iter=30, and never far longer on short edges
    assert (ratio >= 1 - 1e-3).all() and (ratio <= 1.02).all() and float(ratio.max()) > 1
    with pytest.raises(ValueError, match="edges"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", edges="fast", progress=False)
    with pytest.raises(ValueError, match="edges is for mode='graph'"):
        fastgeo.pairwise_distances(metric, Z, mode="draft", edges="exact", progress=False)


def test_more_neighbours_are_not_worse(metric, Z, exact):
    """A denser graph (more neighbours) has no longer chains: distances never grow."""
    kw = dict(mode="graph", error_sample=0, progress=False, **OPTS)
    D4 = fastgeo.pairwise_distances(metric, Z, neighbors=2, **kw)
    D8 = fastgeo.pairwise_distances(metric, Z, neighbors=M, **kw)
    assert (D8 <= D4 * (1 + 1e-9)).all()
    off = ~torch.eye(M, dtype=torch.bool)
    assert (D8[off] / exact[off] - 1).mean() <= (D4[off] / exact[off] - 1).mean() + 1e-12


def test_rectangular_and_duplicates(metric, Z):
    """Z x Y: (M, P) graph distances on the graph of both sets, equal to the symmetric run's block
    for the same codes; duplicated rows give exact zeros and copies."""
    kw = dict(mode="graph", neighbors=4, error_sample=0, progress=False, **OPTS)
    full = fastgeo.pairwise_distances(metric, Z, **kw)
    R = fastgeo.pairwise_distances(metric, Z[:5], Z[5:], **kw)
    assert R.shape == (5, M - 5)
    assert torch.allclose(R, full[:5, 5:], rtol=1e-12)
    Zd = torch.cat([Z[:6], Z[2:3]])
    Dd = fastgeo.pairwise_distances(metric, Zd, **kw)
    assert Dd[2, 6] == 0 and torch.equal(Dd[6, :6], Dd[2, :6])


def _straight_lengths(metric, z0, z1, n=4097):
    """Straight segments' lengths on a fine grid, float64 (independent of fastgeo's measurement)."""
    t = torch.linspace(0, 1, n, dtype=z0.dtype)
    pts = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]
    return metric.length(pts)


def test_straight_segments_shorten_chains(metric, Z, monkeypatch):
    """straight=True: every entry is the shorter of its chain and its pair's straight segment (the
    segment within the measurement's 1e-3 of its length on 4,097 points, never below it by more);
    the report counts the entries a segment shortened, some here; edges keep their geodesic."""
    kw = dict(mode="graph", neighbors=2, error_sample=0, progress=False, return_report=True, **OPTS)
    chains, _ = fastgeo.pairwise_distances(metric, Z, straight=False, **kw)
    D, rep = fastgeo.pairwise_distances(metric, Z, straight=True, **kw)
    i, j = torch.triu_indices(M, M, 1)
    seg = _straight_lengths(metric, Z[i], Z[j])
    took = D[i, j] < chains[i, j]
    assert torch.equal(D, D.T) and (D[i, j] <= chains[i, j]).all()
    assert int(took.sum()) == rep.straight_shortcuts > 0 and "straight segments" in str(rep)
    assert torch.allclose(D[i, j][took], seg[took], rtol=1e-3)
    assert (D[i, j] >= torch.minimum(chains[i, j], seg) * (1 - 1e-4)).all()
    kept = rep.status_code[i, j] != GRAPH_ESTIMATE  # edges whose chain is the edge itself
    assert kept.any() and torch.equal(D[i, j][kept], chains[i, j][kept])
    R, rep_r = fastgeo.pairwise_distances(metric, Z[:5], Z[5:], straight=True, **kw)
    assert torch.allclose(R, D[:5, 5:], rtol=1e-12) and rep_r.straight_shortcuts > 0
    # in blocks of rows (a few pairs each): the same entries (to the rounding of other batch sizes)
    monkeypatch.setattr(graph_mode, "STRAIGHT_BLOCK", 20)
    D_blocks, rep_blocks = fastgeo.pairwise_distances(metric, Z, straight=True, **kw)
    assert torch.allclose(D_blocks, D, rtol=1e-12) and rep_blocks.straight_shortcuts == rep.straight_shortcuts
    R_blocks, _ = fastgeo.pairwise_distances(metric, Z[:5], Z[5:], straight=True, **kw)
    assert torch.allclose(R_blocks, R, rtol=1e-12)


def test_straight_segments_by_default_in_high_dimension():
    """Default: measured in latent d >= 4 (a d = 4 decoder's report counts segments), not in d <= 3
    nor beyond MAX_PAIRS pairs; exact mode refuses the option, a non-bool is a TypeError."""
    from fastgeo.pairwise.straight import MAX_PAIRS, default_on

    assert default_on(4, 10) and not default_on(3, 10) and not default_on(8, MAX_PAIRS + 1)
    metric4 = bumpy_metric(d=4)
    Z4 = torch.randn(7, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = dict(mode="graph", neighbors=2, error_sample=0, progress=False, return_report=True, **OPTS)
    D, rep = fastgeo.pairwise_distances(metric4, Z4, **kw)
    D_off, rep_off = fastgeo.pairwise_distances(metric4, Z4, straight=False, **kw)
    assert rep_off.straight_shortcuts == 0 and (D <= D_off).all()
    assert rep.straight_shortcuts == int(torch.triu(D < D_off, 1).sum()) > 0
    # neighbors=0: no edges, every entry its pair's straight segment
    D0, rep0 = fastgeo.pairwise_distances(metric4, Z4, **{**kw, "neighbors": 0})
    i, j = torch.triu_indices(7, 7, 1)
    assert rep0.graph_edges == 0 and rep0.straight_shortcuts == len(i) and torch.equal(D0, D0.T)
    assert torch.allclose(D0[i, j], _straight_lengths(metric4, Z4[i], Z4[j]), rtol=1e-3)
    with pytest.raises(ValueError, match="straight is for mode='graph'"):
        fastgeo.pairwise_distances(metric4, Z4, straight=True, progress=False)
    with pytest.raises(TypeError, match="straight"):
        fastgeo.pairwise_distances(metric4, Z4, mode="graph", straight="yes", progress=False)


@pytest.mark.parametrize("mode", ["exact", "graph"])
def test_memory_mapped_output(metric, Z, tmp_path, mode):
    """out=path.npy: the matrix is written to the file, which the returned tensor maps."""
    path = tmp_path / "D.npy"
    kw = (
        dict(mode=mode, error_sample=0, progress=False, **OPTS)
        if mode == "graph"
        else dict(progress=False, **OPTS)
    )
    D = fastgeo.pairwise_distances(metric, Z[:6], out=path, **kw)
    ref = fastgeo.pairwise_distances(metric, Z[:6], **kw)
    assert torch.equal(D, ref)
    assert np.array_equal(np.load(path), ref.numpy())
    Zd = torch.cat([Z[:4], Z[1:2]])  # duplicates: expanded into the file
    path2 = tmp_path / "Dd.npy"
    D2 = fastgeo.pairwise_distances(metric, Zd, out=path2, **kw)
    assert np.array_equal(np.load(path2), D2.numpy()) and D2.shape == (5, 5) and D2[1, 4] == 0


def test_invalid_graph_options(metric, Z, tmp_path):
    with pytest.raises(ValueError, match="mode"):
        fastgeo.pairwise_distances(metric, Z, mode="fast", progress=False)
    with pytest.raises(ValueError, match="neighbors"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", neighbors=-1, progress=False)
    with pytest.raises(ValueError, match="neighbors=0 .* needs straight=True"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", neighbors=0, progress=False)
    with pytest.raises(TypeError, match="neighbors"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", neighbors=2.5, progress=False)
    with pytest.raises(ValueError, match="error_sample"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", error_sample=-1, progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        fastgeo.pairwise_distances(metric, Z, mode="graph", checkpoint=tmp_path / "c", progress=False)
    # graph-mode options in exact mode would be silently ignored: refused, named
    for name in ("neighbors", "error_sample"):
        with pytest.raises(ValueError, match=f"{name} is for mode='graph'"):
            fastgeo.pairwise_distances(metric, Z, progress=False, **{name: 5})
    with pytest.raises(ValueError, match="out"):
        fastgeo.pairwise_distances(metric, Z, out=tmp_path / "D.txt", progress=False)
    with pytest.raises(ValueError, match="out"):
        fastgeo.pairwise_distances(metric, Z, out=tmp_path / "missing" / "D.npy", progress=False)
    with pytest.raises(TypeError, match="out"):
        fastgeo.pairwise_distances(metric, Z, out=3, progress=False)


@pytest.mark.parametrize("mode", ["exact", "graph"])
def test_worker_processes_match_one_process(metric, Z, mode, tmp_path):
    """workers=3 (forked processes of one thread each) give the one-process result at one thread
    bit for bit, statuses and decoder work included, with a checkpoint too (exact mode)."""
    kw = dict(mode=mode, chunk_size=7, progress=False, return_report=True, **OPTS)
    if mode == "graph":
        kw.update(neighbors=3, error_sample=10, straight=True)
    # The solver's latent graph is built once per metric and counted by the call that builds it,
    # and it keeps the shortest-path rows of the end points it has seen (the codes joined to the
    # graph, decoder work too): both made here first for these codes, neither call below counts
    # them, whatever ran before this test (alone, the one-process call paid for the rows the
    # forked workers then inherited).
    fastgeo.pairwise_distances(metric, Z[:9], progress=False, **OPTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        D1, r1 = fastgeo.pairwise_distances(metric, Z[:9], workers=1, **kw)
    finally:
        torch.set_num_threads(threads)
    extra = {"checkpoint": tmp_path / "ckpt"} if mode == "exact" else {}
    D3, r3 = fastgeo.pairwise_distances(metric, Z[:9], workers=3, **kw, **extra)
    assert torch.equal(D3, D1) and torch.equal(r3.status_code, r1.status_code)
    assert r3.decoder_evals == r1.decoder_evals and r3.decoder_jvps == r1.decoder_jvps
    assert r3.straight_shortcuts == r1.straight_shortcuts
    if mode == "exact":
        assert torch.equal(r3.iterations, r1.iterations) and r3.chunks_computed == r1.chunks_total
        again, r4 = fastgeo.pairwise_distances(metric, Z[:9], workers=3, **kw, **extra)
        assert torch.equal(again, D1) and r4.chunks_loaded == r1.chunks_total


def test_a_failing_worker_raises_with_its_traceback():
    """A decoder that raises inside a worker process only: the call raises the worker's error type
    (as with workers=1), with its traceback."""
    import os

    base, parent = bumpy_metric(), os.getpid()

    def broken(z):
        if os.getpid() != parent:
            raise ArithmeticError("decoder exploded")
        return base.mean(z)

    metric = fastgeo.ExpectedMetric(broken, base.precision)
    with pytest.raises(ArithmeticError, match="(?s)worker process failed.*ArithmeticError: decoder exploded"):
        fastgeo.pairwise_distances(
            metric, disc_points(8, 1.5), workers=2, chunk_size=4, progress=False, **OPTS
        )


def test_workers_option_is_checked(metric, Z):
    with pytest.raises(ValueError, match="workers"):
        fastgeo.pairwise_distances(metric, Z, workers=0, progress=False)
    with pytest.raises(TypeError, match="workers"):
        fastgeo.pairwise_distances(metric, Z, workers=True, progress=False)


def test_a_graph_much_longer_than_the_geodesics_warns():
    """Few codes in d = 8 (all about equally far apart): the chains zig-zag, the sample says so,
    and the call warns instead of handing out the numbers silently."""
    metric = bumpy_metric(d=8)
    Z = torch.randn(12, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="(?s)above exact geodesics on average.*mode='draft'"):
        D, rep = fastgeo.pairwise_distances(
            metric,
            Z,
            mode="graph",
            neighbors=2,
            error_sample=20,
            progress=False,
            return_report=True,
            max_iter=20,
        )
    assert rep.graph_error.mean > 0.05
