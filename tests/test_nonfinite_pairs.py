"""Pairs with no finite path found: a decoder mean that is NaN inside a hole of latent space
(every code outside it), pairs whose straight line crosses it and whose solve ends non-finite.
Such an entry is inf with status ``nonfinite``, the others are solved as usual: one bad pair
does not cost a whole matrix, and ``nearest_neighbors`` ends (it took inf for 'not solved')."""

from __future__ import annotations

import warnings

import torch

import fastgeo


class HoleDecoder(torch.nn.Module):
    """NaN inside the ball |z| < 0.5 (the square root of a negative number)."""

    def __init__(self, d: int, D: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(d + 1, D)

    def forward(self, z):
        inside = torch.sqrt(z.pow(2).sum(-1, keepdim=True) - 0.25)
        return torch.tanh(self.layer(torch.cat([z, inside], -1)))


def _metric(d: int) -> fastgeo.ExpectedMetric:
    g = torch.Generator().manual_seed(1)
    centers = (torch.rand(20, d, generator=g) * 2 - 1) * 2
    return fastgeo.ExpectedMetric(
        HoleDecoder(d).eval(), fastgeo.RBFPrecision(centers, torch.ones(20), torch.ones(10, 20), 1e-3)
    )


def test_a_pair_without_a_finite_path_is_inf_and_the_rest_solved():
    metric = _metric(4)
    Z = torch.zeros(3, 4)
    Z[0, 0], Z[1, 0], Z[2, 1] = -2.0, 2.0, 2.0  # 0 -> 1 crosses the hole
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        alone = fastgeo.geodesics(metric, Z[[0, 0]], Z[[1, 2]], method="fast", progress=False)
    assert alone.status.tolist() == ["nonfinite", "converged"] and torch.isnan(alone.lengths[0])
    said = [w for w in seen if "have no finite length" in str(w.message)]  # once, not per inner call
    assert len(said) == 1 and said[0].filename == __file__ and "1 of 2 curves" in str(said[0].message)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        D, report = fastgeo.pairwise_distances(
            metric, Z[:2], method="fast", progress=False, return_report=True
        )
    ours = [w for w in seen if "entries are inf (status nonfinite)" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__
    assert not [w for w in seen if "have no finite length" in str(w.message)]  # the run's own, alone
    assert D[0, 1] == D[1, 0] == torch.inf and report.status[0, 1] == "nonfinite"
    near = fastgeo.nearest_neighbors(metric, Z[:2], k=1, method="fast", progress=False)
    assert near.distances.flatten().tolist() == [torch.inf, torch.inf]
    assert near.status.flatten().tolist() == ["nonfinite", "nonfinite"]
    near = fastgeo.nearest_neighbors(metric, Z, k=1, method="fast", progress=False)
    assert near.indices[0].tolist() == [2] and near.indices[1].tolist() == [2]


def test_approximate_modes_keep_their_matrix():
    metric = _metric(2)
    Z = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, -2.0], [1.5, 1.5]])
    for mode in ("graph", "draft"):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            D = fastgeo.pairwise_distances(metric, Z, mode=mode, chunk_size=2, progress=False)
        assert D.shape == (5, 5) and not bool(torch.isnan(D).any()), mode
        inf = int(torch.isinf(D).sum())  # chains of finite edges: none here
        assert sum("status nonfinite" in str(w.message) for w in seen) == (inf > 0), mode


class _Disk(torch.nn.Module):
    """A mean that is NaN inside the disk |z| < r."""

    def __init__(self, net: torch.nn.Module, r: float) -> None:
        super().__init__()
        self.net, self.r = net, r

    def forward(self, z):
        return torch.where(z.pow(2).sum(-1, keepdim=True) < self.r**2, torch.nan, self.net(z))


def test_a_curve_through_a_nan_region_between_its_points_is_not_given_a_length():
    """The solver keeps a curve's grid points out of a NaN disk, and the spline bulged into it
    between them: a finite length flagged converged for a curve through NaN (r = 0.3, the first
    pair; r = 0.5, the third). Every returned length is now of a curve finite on a grid 500x
    finer, or NaN with status nonfinite."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 64)).eval()
    Z = torch.randn(200, 2)
    with torch.no_grad():
        X = net(Z) + 0.05 * torch.randn(200, 64)
    prec = fastgeo.RBFPrecision.fit(Z, X, net, num_centers=16, steps=100, progress=False)
    z0 = torch.tensor([[-1.0, 0.0], [-1.0, 0.05], [-1.0, -0.5], [-1.0, 1.5]])
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.7], [1.0, 1.5]])  # the last far from the disk
    for r in (0.3, 0.5):
        metric = fastgeo.ExpectedMetric(_Disk(net, r).eval(), prec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = fastgeo.geodesics(metric, z0, z1, progress=False)
        with torch.no_grad():
            inside = (res.points(100_001).norm(dim=-1) < r).any(-1)
        ok = torch.isfinite(res.lengths)
        assert not bool((ok & inside).any()), (r, res.lengths, res.status)
        assert all(s == "nonfinite" for s in res.status[~ok.numpy()])
        assert bool(ok[3]) and res.status[3] == "converged"  # (a length is given where it is one)


def test_a_checkpoint_chunk_holding_a_pair_without_a_finite_path_is_loaded(tmp_path):
    """Its inf entry (status nonfinite: a result) made the chunk 'damaged': solved again, with a
    warning, on every resume."""
    metric = _metric(4)
    Z = torch.zeros(2, 4)
    Z[0, 0], Z[1, 0] = -2.0, 2.0  # crosses the hole
    kw = dict(method="fast", progress=False, return_report=True, checkpoint=tmp_path / "ck")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first, _ = fastgeo.pairwise_distances(metric, Z, **kw)
    assert first[0, 1] == torch.inf
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        again, report = fastgeo.pairwise_distances(metric, Z, **kw)
    assert not [w for w in seen if "damaged" in str(w.message)]
    assert report.chunks_loaded == report.chunks_total and report.chunks_computed == 0
    assert torch.equal(again, first)
