"""The chord mode's paths through the codes (fastgeo.pairwise.chord_paths): neighbour edges
against brute force, joined components, codes that are not finite left apart, path lengths
against Floyd-Warshall."""

import numpy as np
import torch

from fastgeo.pairwise.chord_paths import nearest_edges, path_graphs, path_lengths, path_rows


def _shortest(n, edges, weights):
    """Floyd-Warshall on an undirected graph of n nodes: (n, n) float64, inf where unjoined."""
    D = torch.full((n, n), torch.inf, dtype=torch.float64)
    D[edges[:, 0], edges[:, 1]] = weights
    D[edges[:, 1], edges[:, 0]] = weights
    D.fill_diagonal_(0)
    for k in range(n):
        D = torch.minimum(D, D[:, k : k + 1] + D[k : k + 1])
    return D


def test_nearest_edges_are_the_k_nearest_and_join_every_code():
    """Two clusters far apart: each code's 3 nearest are edges (i < j, unique, their lengths the
    distances), and one more edge joins the clusters (the shortest between them); a row that is
    not finite gets no edge."""
    g = torch.Generator().manual_seed(0)
    X = torch.cat([torch.randn(12, 3, generator=g), torch.randn(10, 3, generator=g) + 50]).double()
    X[5, 1] = torch.nan
    e, length = nearest_edges(X, k=3)
    assert (e[:, 0] < e[:, 1]).all() and len(torch.unique(e, dim=0)) == len(e)
    assert not (e == 5).any()
    D = torch.cdist(X, X).fill_diagonal_(torch.inf)
    D[5], D[:, 5] = torch.inf, torch.inf
    assert torch.allclose(length, D[e[:, 0], e[:, 1]], rtol=1e-12)
    have = {tuple(p) for p in e.tolist()}
    for i in range(22):
        if i == 5:
            continue
        for j in D[i].topk(3, largest=False).indices.tolist():
            assert (min(i, j), max(i, j)) in have
    across = [(i, j) for i, j in have if (i < 12) != (j < 12)]
    inside, outside = [i for i in range(12) if i != 5], list(range(12, 22))
    best = D[inside][:, outside].min()
    assert len(across) == 1 and torch.isclose(D[across[0]], best)
    # Bridged in another space: the shortest edge there, its length still in X.
    W = X.clone()
    W[:12, 0] += 1000.0
    e, length = nearest_edges(X, k=3, near=W)
    across = [(i, j) for i, j in e.tolist() if (i < 12) != (j < 12)]
    DW = torch.cdist(W, W)
    assert len(across) == 1 and torch.isclose(DW[across[0]], DW[inside][:, outside].min())
    assert torch.allclose(length, torch.cdist(X, X)[e[:, 0], e[:, 1]], rtol=1e-12)


def test_path_lengths_are_shortest_paths():
    """Both graphs' path lengths equal Floyd-Warshall on their edges: the feature graph's edges
    are chords, the latent graph's the longer of the chord and sqrt(a0 a1); a code whose metric
    tensor is not finite is in neither graph (inf to every other code)."""
    g = torch.Generator().manual_seed(1)
    n, d = 30, 3
    Z = torch.randn(n, d, generator=g, dtype=torch.float64)
    F = torch.cat([Z, Z.sin()], 1) * 2
    A = torch.randn(n, d, d, generator=g, dtype=torch.float64)
    G = A @ A.transpose(1, 2) + torch.eye(d, dtype=torch.float64)
    G[7, 0, 0] = torch.inf
    feature, latent = path_graphs(F, G, Z, k=4)
    for graph in (feature, latent):
        assert not (graph.edges == 7).any()
        i, j = torch.from_numpy(graph.edges).T
        chord = (F[i] - F[j]).norm(dim=1)
        v = Z[j] - Z[i]
        a0 = torch.einsum("ei,eij,ej->e", v, G[i], v).sqrt()
        a1 = torch.einsum("ei,eij,ej->e", v, G[j], v).sqrt()
        want = chord if graph is feature else torch.maximum(chord, (a0 * a1).sqrt())
        assert torch.allclose(torch.from_numpy(graph.lengths), want, rtol=1e-12)
    sources = torch.tensor([0, 7, 29, 3])
    P = path_lengths((feature, latent), sources)
    assert P.shape == (2, 4, n)
    for q, graph in enumerate((feature, latent)):
        ref = _shortest(n, torch.from_numpy(graph.edges), torch.from_numpy(graph.lengths))
        assert torch.allclose(P[q], ref[sources], rtol=1e-12)
        others = np.r_[0:7, 8:n]
        assert torch.isinf(P[q, 1, others]).all() and torch.isfinite(P[q, [0, 2, 3]][:, others]).all()


def test_path_rows_split_over_workers_are_the_same():
    """Sources split over two forked processes give the same path lengths as one process."""
    g = torch.Generator().manual_seed(2)
    Z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    G = torch.eye(3, dtype=torch.float64).expand(40, 3, 3).clone()
    graphs = path_graphs(Z * 2, G, Z, k=3)
    sources = torch.tensor([5, 0, 39, 17, 3])
    assert torch.equal(path_rows(graphs, sources, 2), path_lengths(graphs, sources))
