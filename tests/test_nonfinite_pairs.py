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
    alone = fastgeo.geodesics(metric, Z[[0, 0]], Z[[1, 2]], method="fast", progress=False)
    assert alone.status.tolist() == ["nonfinite", "converged"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        D, report = fastgeo.pairwise_distances(
            metric, Z[:2], method="fast", progress=False, return_report=True
        )
    ours = [w for w in seen if "entries are inf (status nonfinite)" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__
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
