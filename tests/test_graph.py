"""Graph starts (``fastgeo.LatentGraph`` and :mod:`fastgeo.solver.corridors`): shortest paths
read from cached Dijkstra rows of the nodes where queries enter the graph, and via-node paths
through other corridors.

On a small graph (``bumpy_metric``, 205 nodes without the 2-D grid, float64) checked:

- the first corridor's path length equals an independent Dijkstra (scipy) on the graph with both
  query end points attached by their k edges (independently rebuilt: Euclidean k nearest nodes,
  metric length of the straight segment), one pair at a time, to 1e-9 relative; the returned path
  is a walk along edges of that graph whose arc lengths add up;
- later corridors: their via node is farther than APART chords from the earlier paths, their
  graph length is within 1 + SLACK of the shortest, and they are walks along edges too;
- the row cache: a repeated query gives identical coefficients and runs no Dijkstra; results
  do not depend on the call history (a fresh graph gives the same as a warm one); swapped end
  points give the same path backwards (coefficients a_j (-1)^(j-1));
- equal end points give zero coefficients; shapes (B, m, d); an empty batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.csgraph
import torch
from analytic import bumpy_metric
from helpers import assert_close_rel, randn
from scipy.sparse import coo_matrix

import fastgeo
from fastgeo.solver import corridors
from fastgeo.solver import graph as graph_module
from fastgeo.solver.corridors import corridor_starts, graph_paths
from fastgeo.solver.graph_cache import cached_graph, forget_graphs, graph_cache

N_POINTS, M = 16, 4


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric()


def make_graph(metric) -> fastgeo.LatentGraph:
    return fastgeo.LatentGraph(metric, n_nodes=200, grid=0)


def starts(graph, z0, z1, psi, t, count=1):
    """(coefficients of the first corridor, evaluations), as the solver gets them."""
    coeffs, evals = corridor_starts(graph, z0, z1, psi, t, count)
    return coeffs[0], evals


@pytest.fixture(scope="module")
def basis():
    t = torch.linspace(0, 1, N_POINTS, dtype=torch.float64)
    return fastgeo.PolynomialBasis(M)(t), t


def end_points(B: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z0, z1 (B, 2) ~ N(0, 4): spread over the data (the RBF centers are ~N(0, 1))."""
    z = randn(2, B, 2, seed=seed, scale=2.0)
    return z[0], z[1]


def augmented_graph(metric, graph: fastgeo.LatentGraph, ends: torch.Tensor):
    """The graph's nodes and edges plus ``ends`` (E, d) as nodes n..n+E-1, each joined to its k
    Euclidean-nearest nodes by an edge of the metric length of the straight segment, measured
    at ``graph.edge_points`` points: a CSR matrix (read as undirected)."""
    n, k = graph.nodes.shape[0], graph.k
    nbr = torch.cdist(ends, graph.nodes).topk(k, largest=False).indices  # (E, k)
    a = ends.repeat_interleave(k, 0)
    b = graph.nodes[nbr.reshape(-1)]
    s = torch.linspace(0, 1, graph.edge_points, dtype=ends.dtype)
    with torch.no_grad():
        w = metric.length(a[:, None, :] + s[None, :, None] * (b - a)[:, None, :])
    rows = np.concatenate([graph.edges[:, 0].numpy(), n + np.repeat(np.arange(ends.shape[0]), k)])
    cols = np.concatenate([graph.edges[:, 1].numpy(), nbr.reshape(-1).numpy()])
    weights = np.concatenate([graph.weights.numpy(), w.numpy()])
    assert (weights > 0).all()
    size = n + ends.shape[0]
    return coo_matrix((weights, (rows, cols)), shape=(size, size)).tocsr()


def _check_walk(csr, p: np.ndarray, arc: np.ndarray) -> None:
    """p runs source (node n) ... target (node n + 1) along edges of csr; arc lengths add up."""
    n = csr.shape[0] - 2
    assert p[0] == n and p[-1] == n + 1 and (p[1:-1] < n).all()
    assert (np.diff(arc) >= -1e-12).all() and arc[0] == 0
    dense = csr.toarray()
    dense = np.maximum(dense, dense.T)
    for i in range(len(p) - 1):
        if p[i] != p[i + 1]:
            w = dense[p[i], p[i + 1]]
            assert w > 0, f"no edge {p[i]} - {p[i + 1]}"
            np.testing.assert_allclose(arc[i + 1] - arc[i], w, rtol=1e-9, atol=1e-12)


def _as_augmented(paths, k: int, n: int, z0: torch.Tensor) -> np.ndarray:
    """Path k's node ids with the source end as node n and the target end as node n + 1."""
    p = paths.nodes[k].copy()
    is_end = p >= n
    source = int((paths.ends == z0).all(-1).nonzero()[0, 0])
    p[is_end] = np.where(p[is_end] - n == source, n, n + 1)
    return p


def test_edge_weights_are_straight_segment_lengths(metric):
    """The build decodes each node once and each edge's inner points alone: its weights are still
    the metric lengths of the straight segments on ``edge_points`` points (1e-12 relative), and
    the decoder evaluations it reports are the ones it made."""
    graph = make_graph(metric)
    a, b = graph.nodes[graph.edges[:, 0]], graph.nodes[graph.edges[:, 1]]
    s = torch.linspace(0, 1, graph.edge_points, dtype=a.dtype)
    with torch.no_grad():
        expected = metric.length(a[:, None, :] + s[None, :, None] * (b - a)[:, None, :])
    torch.testing.assert_close(graph.weights, expected, rtol=1e-12, atol=0)
    E, n = graph.edges.shape[0], graph.nodes.shape[0]
    assert graph.edge_evals == E * (graph.edge_points - 2) + n


def test_path_length_equals_independent_dijkstra(metric, basis):
    """One pair at a time (no other query end point to pass through): the first corridor's arc
    length to the target equals scipy's Dijkstra distance in the augmented graph (1e-9 relative),
    the path runs source ... target along its edges, and consecutive arc lengths differ by edge
    weights."""
    graph = make_graph(metric)
    psi, t = basis
    n = graph.nodes.shape[0]
    z0s, z1s = end_points(12, seed=3)
    for z0, z1 in zip(z0s, z1s, strict=True):
        coeffs, evals = starts(graph, z0[None], z1[None], psi, t)
        assert coeffs.shape == (1, M, 2) and evals == 2 * graph.k * graph.edge_points
        (paths,), _ = graph_paths(graph, z0[None], z1[None], 1)
        csr = augmented_graph(metric, graph, torch.stack([z0, z1]))  # z0 is node n, z1 node n + 1
        dist = scipy.sparse.csgraph.dijkstra(csr, directed=False, indices=[n])[0]
        expected = dist[n + 1]
        assert np.isfinite(expected) and expected > 0
        np.testing.assert_allclose(paths.arc[0, -1], expected, rtol=1e-9, atol=0)
        p = _as_augmented(paths, 0, n, z0[None])
        _check_walk(csr, p, paths.arc[0])
        # The independent distances agree along the path too (it is a shortest path).
        np.testing.assert_allclose(paths.arc[0, 1:-1], dist[p[1:-1]], rtol=1e-9, atol=1e-12)


def test_later_corridors_pass_elsewhere(metric):
    """Corridors 2 and 3: walks along graph edges through a node farther than APART chords from
    every earlier path, within 1 + SLACK of the shortest path's length; at least one pair has a
    second corridor (the test can fail)."""
    graph = make_graph(metric)
    n = graph.nodes.shape[0]
    z0s, z1s = end_points(12, seed=9)
    seen = 0
    for z0, z1 in zip(z0s, z1s, strict=True):
        paths, _ = graph_paths(graph, z0[None], z1[None], 3)
        csr = augmented_graph(metric, graph, torch.stack([z0, z1]))
        chord = float((z1 - z0).norm())
        nodes = graph.nodes.numpy()
        shortest = paths[0].arc[0, -1]
        for k in (1, 2):
            p = _as_augmented(paths[k], 0, n, z0[None])
            if np.array_equal(p, _as_augmented(paths[k - 1], 0, n, z0[None])):
                continue  # no corridor left: the previous one repeated
            seen += 1
            _check_walk(csr, p, paths[k].arc[0])
            assert paths[k].arc[0, -1] <= (1 + corridors.SLACK) * shortest * (1 + 1e-12)
            inner = p[(p < n)]
            earlier = np.concatenate([_as_augmented(paths[j], 0, n, z0[None]) for j in range(k)])
            earlier = earlier[earlier < n]
            # some node of this path is far from every node of the earlier ones: the via node
            far = np.sqrt(((nodes[inner][:, None] - nodes[earlier][None]) ** 2).sum(-1)).min(1)
            assert far.max() > corridors.APART * chord * (1 - 1e-9)
    assert seen > 0


def test_near_path_measures_the_allowed_nodes():
    """``_near_path`` marks exactly the allowed nodes within the pair's radius of its path (a
    brute-force distance from every node to every path point), and no node that is not allowed."""
    g = torch.Generator().manual_seed(3)
    nodes = torch.randn(300, 3, generator=g, dtype=torch.float64)
    pts = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    radius = torch.tensor([0.0, 0.3, 0.6, 1.0, 5.0], dtype=torch.float64)[:, None]
    allowed = torch.rand(5, 300, generator=g).numpy() < 0.4
    allowed[2] = False  # a pair with no candidate left
    near = corridors._near_path(pts, nodes, allowed, radius)
    brute = ((pts[:, :, None, :] - nodes[None, None]) ** 2).sum(-1).sqrt().amin(1) <= radius
    assert np.array_equal(near, brute.numpy() & allowed)
    assert near[3].any() and (allowed[3] & ~near[3]).any()  # the test can fail both ways


def test_repeated_query_uses_cached_rows(metric, basis, monkeypatch):
    """A second call with the same end points gives identical coefficients, adds no rows to the
    cache, runs no Dijkstra at all and spends no decoder evaluation. Swapped end points give the
    same paths backwards: the curve c(1 - t), whose coefficients are a_j (-1)^(j-1)
    (psi_j(1 - t) = (-1)^(j-1) psi_j(t))."""
    graph = make_graph(metric)
    psi, t = basis
    z0, z1 = end_points(6, seed=4)
    first = starts(graph, z0, z1, psi, t)
    rows = len(graph._end_rows)
    assert rows == 12 and first[1] > 0  # one row per distinct end point

    def no_dijkstra(*args, **kwargs):
        raise AssertionError("Dijkstra ran for a cached query")

    monkeypatch.setattr(scipy.sparse.csgraph, "dijkstra", no_dijkstra)
    second = starts(graph, z0, z1, psi, t)
    assert torch.equal(first[0], second[0]) and second[1] == 0
    assert len(graph._end_rows) == rows
    # Swapped end points enter through other nodes, in general: this may need new rows.
    monkeypatch.undo()
    swapped, _ = starts(graph, z1, z0, psi, t)
    signs = torch.tensor([(-1.0) ** j for j in range(M)], dtype=torch.float64)[:, None]
    assert_close_rel(swapped, first[0] * signs, 1e-9)
    assert float(first[0][:, 1::2].abs().max()) > 1e-3  # coefficients that change sign: not trivial


def test_row_cache_is_bounded(metric, basis, monkeypatch):
    """With room for 5 rows, a call of 12 end points keeps the last 5 and gives the same
    coefficients as a graph with room for all; the same query again computes the 7 dropped rows
    again (decoder evaluations spent attaching their points)."""
    psi, t = basis
    z0, z1 = end_points(6, seed=4)
    roomy = make_graph(metric)
    expected, _ = starts(roomy, z0, z1, psi, t)
    small = make_graph(metric)
    monkeypatch.setattr(graph_module, "ROW_CACHE_BYTES", 5 * 12 * small.nodes.shape[0])
    got, _ = starts(small, z0, z1, psi, t)
    assert len(small._end_rows) == 5 and len(roomy._end_rows) == 12
    assert torch.equal(got, expected)
    again, evals = starts(small, z0, z1, psi, t)
    assert evals == 7 * small.k * small.edge_points and len(small._end_rows) == 5
    assert torch.equal(again, expected)


def test_results_do_not_depend_on_call_history(metric, basis):
    """A warm graph (other queries first, batches mixed) gives bit-identical coefficients to a
    fresh one, pair by pair and batched."""
    psi, t = basis
    z0, z1 = end_points(8, seed=5)
    warm = make_graph(metric)
    other0, other1 = end_points(10, seed=6)
    starts(warm, other0, other1, psi, t)
    warm_all, _ = starts(warm, z0, z1, psi, t)
    fresh_all, _ = starts(make_graph(metric), z0, z1, psi, t)
    assert torch.equal(warm_all, fresh_all)
    assert float(warm_all.abs().max()) > 0  # curves leave the straight line: the test can fail
    for i in (0, 5):
        fresh_one, _ = starts(make_graph(metric), z0[i : i + 1], z1[i : i + 1], psi, t)
        torch.testing.assert_close(fresh_one, warm_all[i : i + 1], rtol=1e-12, atol=1e-12)


def test_equal_end_points_give_zero_coefficients(metric, basis):
    """z0 == z1: zero coefficients (alone, in a batch with other pairs, and repeated)."""
    graph = make_graph(metric)
    psi, t = basis
    z0, z1 = end_points(4, seed=7)
    same, _ = starts(graph, z0, z0.clone(), psi, t)
    assert same.shape == (4, M, 2) and torch.equal(same, torch.zeros_like(same))
    mixed0 = torch.cat([z0[:2], z0[2:]])
    mixed1 = torch.cat([z0[:2], z1[2:]])  # pairs 0, 1 equal, 2, 3 distinct
    coeffs, _ = starts(graph, mixed0, mixed1, psi, t)
    assert torch.equal(coeffs[:2], torch.zeros_like(coeffs[:2]))
    assert float(coeffs[2:].abs().amax(dim=(1, 2)).min()) > 0
    alone, _ = starts(make_graph(metric), z0[2:], z1[2:], psi, t)
    torch.testing.assert_close(coeffs[2:], alone, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m,d", [(1, 2), (6, 2)])
def test_output_shape(metric, m, d):
    """Coefficients (B, m, d), float64 like the end points, evals = ends * k * edge_points."""
    graph = make_graph(metric)
    t = torch.linspace(0, 1, 12, dtype=torch.float64)
    psi = fastgeo.PolynomialBasis(m)(t)
    z0, z1 = end_points(3, seed=8)
    coeffs, evals = starts(graph, z0, z1, psi, t)
    assert coeffs.shape == (3, m, d) and coeffs.dtype == torch.float64
    assert evals == 6 * graph.k * graph.edge_points
    assert bool(torch.isfinite(coeffs).all())


def test_empty_batch(metric, basis):
    """B = 0: coefficients (0, m, d)."""
    graph = make_graph(metric)
    psi, t = basis
    empty = torch.zeros(0, 2, dtype=torch.float64)
    coeffs, _ = starts(graph, empty, empty, psi, t)
    assert coeffs.shape == (0, M, 2)


def test_cached_graph_follows_the_latents_by_value():
    """The metric's cached graph is rebuilt when the codes change in place behind the tensor (a
    numpy buffer shared with it), and reused for an equal copy of the same codes."""
    metric = bumpy_metric(d=4)
    buf = np.random.default_rng(0).normal(size=(40, 4))
    latents = torch.from_numpy(buf)
    first, built = cached_graph(metric, latents)
    assert built
    assert not cached_graph(metric, latents.clone())[1]  # equal codes: the same graph
    buf[:] = np.random.default_rng(1).normal(size=(40, 4)) + 3.0  # same address, same version
    second, built = cached_graph(metric, latents)
    assert built and second is not first
    assert any(torch.equal(n, latents[0]) for n in second.nodes)


def test_forgotten_graphs_are_built_again():
    """``forget_graphs`` drops every draw's graph of the metric (a benchmark times a first call
    with it), and the next query builds one again."""
    metric = bumpy_metric(d=4)
    first, built = cached_graph(metric, None)
    assert built and cached_graph(metric, None, seed=1)[1]
    forget_graphs(metric)
    assert graph_cache(metric) is None and graph_cache(metric, seed=1) is None
    second, built = cached_graph(metric, None)
    assert built and second is not first


def test_the_graph_follows_precision_changes_the_probe_cannot_see():
    """Narrow RBFs on a ring: the probe decodes near a few centers, where the others' features
    underflow to 0; weights zeroed at those others changed the metric but not the probe, and the
    cached graph (and a user's graph passed back) stayed that of the old precision."""
    angles = torch.linspace(0, 2 * torch.pi, 25, dtype=torch.float64)[:-1]
    centers = 3.0 * torch.stack([angles.cos(), angles.sin()], 1)
    weights = torch.rand(5, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10 + 1
    prec = fastgeo.RBFPrecision(centers, torch.full((24,), 60.0, dtype=torch.float64), weights, 1e-2)
    lin = torch.randn(2, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    metric = fastgeo.ExpectedMetric(lambda z: torch.tanh(z @ lin), prec)
    first, built = cached_graph(metric, None)
    probe = metric.probe()
    unseen = []
    with torch.no_grad():
        for k in range(24):  # the centers whose weights the probe does not see
            prec.weights[:, k] = 0.0
            if torch.equal(metric.probe(), probe):
                unseen.append(k)
            prec.weights.copy_(weights)
        prec.weights[:, unseen] = 0.0
    assert built and len(unseen) >= 12 and torch.equal(metric.probe(), probe)
    second, built = cached_graph(metric, None)
    assert built and second is not first
    with pytest.warns(UserWarning, match="another metric|changed"):
        fastgeo.geodesics(metric, centers[:1], centers[1:2], graph=first, progress=False)


def test_a_graph_shared_by_threads_keeps_the_rows_a_call_found(metric, monkeypatch):
    """A row found in the cache could be dropped by another thread's call before it was read
    (KeyError in 4 of 143 calls of two threads on a small cache); the Dijkstra runs here are
    slowed to make the window wide."""
    import threading
    import time

    graph = make_graph(metric)
    monkeypatch.setattr(graph_module, "ROW_CACHE_BYTES", 3 * 12 * graph.nodes.shape[0])
    dijkstra = graph._dijkstra_from

    def slow(*args):
        time.sleep(0.002)
        return dijkstra(*args)

    monkeypatch.setattr(graph, "_dijkstra_from", slow)
    old = end_points(2, seed=1)[0]
    errors: list[BaseException] = []

    def queries(seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(25):
            new = torch.randn(2, 2, generator=g, dtype=torch.float64)
            try:
                graph.end_rows(torch.cat([old, new]))  # two seen before, two new: evictions
            except BaseException as e:  # noqa: BLE001 - any failure of the other thread counts
                errors.append(e)

    threads = [threading.Thread(target=queries, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:2]
