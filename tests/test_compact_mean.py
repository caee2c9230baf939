"""The compact stand-in of a mean ending in a widening linear layer (``fastgeo.decoders.compact``):
fewer values, the same segment lengths and metric tensor (float64 to 1e-10), recognized through
reshapes after the layer and in saved (exported) generators, never for a mean ending in an
activation or a layer that does not widen; weights changed in place show; autograd (grad mode)
takes the mean itself; geodesics come out the same as with the stand-in switched off."""

from __future__ import annotations

import pytest
import torch
from helpers import randn, rbf_params
from torch import nn

import fastgeo
from fastgeo.decoders import compact

D_LAT, HIDDEN, D = 3, 8, 20


@pytest.fixture(autouse=True)
def _no_grad():
    """The stand-in serves measurements under ``torch.no_grad`` (the solver's); in grad mode the
    metric takes the mean itself (tests below that need grad mode turn it back on)."""
    with torch.no_grad():
        yield


def _mlp(*tail: nn.Module, out: int = D, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_LAT, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, out), *tail).to(dtype).eval()


def _metric(mean: nn.Module, dtype: torch.dtype = torch.float64) -> fastgeo.ExpectedMetric:
    c, g, w, zeta = rbf_params(6, D_LAT, D, dtype=dtype, weights=(0.0, 0.2))
    return fastgeo.ExpectedMetric(mean, fastgeo.RBFPrecision(c, g, w, zeta))


def _curves(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return randn(4, 9, D_LAT, dtype=dtype, seed=3)


def _assert_segments_of_the_mean(metric: fastgeo.ExpectedMetric, pts: torch.Tensor) -> None:
    """The metric's segments (whatever embedding it measures by) are the mean's, to 1e-10."""
    mu = metric.decode(pts)
    expected = (mu[:, 1:] - mu[:, :-1]).pow(2).sum(-1) + metric.precision.segment_sqdist(pts)
    torch.testing.assert_close(metric.segment_sqdist(pts), expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize(
    "tail",
    [(), (nn.Unflatten(1, (4, 5)),), (nn.Unflatten(1, (1, 4, 5)), nn.Flatten())],
    ids=["flat", "unflat", "both"],
)
def test_same_segments_and_metric_tensor(tail):
    metric = _metric(_mlp(*tail))
    pts = _curves()
    e = metric.mean_embedding(pts)
    assert e.shape == (4, 9, HIDDEN)  # the layer's inputs, not its D outputs
    mu = metric.decode(pts)
    seg_e = (e[:, 1:] - e[:, :-1]).pow(2).sum(-1)
    seg_mu = (mu[:, 1:] - mu[:, :-1]).pow(2).sum(-1)
    torch.testing.assert_close(seg_e, seg_mu, rtol=1e-10, atol=0)
    torch.testing.assert_close(
        metric.segment_sqdist(pts), seg_mu + metric.precision.segment_sqdist(pts), rtol=1e-10, atol=0
    )
    z = pts.reshape(-1, D_LAT)
    _, j_e = metric.mean_embedding_jacobian_rows(z)  # (d, P, F)
    _, j_mu = fastgeo.decoders.jacobian_rows(metric.mean, z)
    gram_e = torch.einsum("ipf,jpf->pij", j_e, j_e)
    gram_mu = torch.einsum("ipf,jpf->pij", j_mu, j_mu)
    torch.testing.assert_close(gram_e, gram_mu, rtol=1e-10, atol=1e-12)
    # the embedding's features give the same lengths as the metric's features
    torch.testing.assert_close(
        fastgeo.discrete.length_from_segments(fastgeo.discrete.feature_segments(metric.embedding(pts))),
        metric.length(pts),
        rtol=1e-10,
        atol=0,
    )


@pytest.mark.parametrize(
    "mean",
    [
        lambda: _mlp(nn.Sigmoid()),  # an activation after the last layer
        lambda: _mlp(out=HIDDEN),  # a layer that does not widen
        lambda: _mlp(out=HIDDEN - 2),
    ],
    ids=["sigmoid", "square", "narrowing"],
)
def test_no_stand_in(mean):
    m = mean()
    width = m[2].out_features
    c, g, w, zeta = rbf_params(6, D_LAT, width, dtype=torch.float64)
    metric = fastgeo.ExpectedMetric(m, fastgeo.RBFPrecision(c, g, w, zeta))
    pts = _curves()
    torch.testing.assert_close(metric.mean_embedding(pts), metric.decode(pts), rtol=0, atol=0)
    assert "triangular factor" not in metric.describe()


def test_weights_changed_in_place_show():
    mean = _mlp()
    metric = _metric(mean)
    assert f"its {HIDDEN} x {HIDDEN} triangular factor" in metric.describe()
    pts = _curves()
    before = metric.segment_sqdist(pts)
    with torch.no_grad():
        mean[2].weight.mul_(2.0)
        mean[2].weight[0] += 1.0
    assert not torch.allclose(metric.segment_sqdist(pts), before)
    _assert_segments_of_the_mean(metric, pts)


def test_triangular_factor_by_content():
    w = randn(12, 5, seed=4)
    r = compact.triangular_factor(w)
    assert r.shape == (5, 5) and torch.equal(r, r.triu())
    torch.testing.assert_close(r.T @ r, w.T @ w, rtol=1e-12, atol=1e-12)
    assert compact.triangular_factor(w.clone()) is r  # the same content: kept
    w2 = w.clone()
    w2[3, 1] += 0.5
    r2 = compact.triangular_factor(w2)
    torch.testing.assert_close(r2.T @ r2, w2.T @ w2, rtol=1e-12, atol=1e-12)


def test_autograd_takes_the_mean():
    metric = _metric(_mlp())
    with torch.enable_grad():
        pts = _curves().requires_grad_(True)
        assert metric.mean_embedding(pts).shape[-1] == D  # differentiable: the mean itself
        torch.autograd.gradcheck(lambda p: metric.length(p), (pts,))


def test_grad_mode_takes_the_mean_for_the_decoders_parameters():
    """Points that need no gradient, a decoder whose weights do (a loss on a solved curve's length
    to train the decoder): the mean itself, whose gradient reaches the last layer's weight (the
    stand-in's factor is taken from detached weights)."""
    mean = _mlp()
    metric = _metric(mean)
    pts = _curves()
    with torch.enable_grad():
        assert metric.mean_embedding(pts).shape[-1] == D
        (got,) = torch.autograd.grad(metric.length(pts).sum(), mean[2].weight)
        mu = metric.decode(pts)
        segments = (mu[:, 1:] - mu[:, :-1]).pow(2).sum(-1) + metric.precision.segment_sqdist(pts)
        (want,) = torch.autograd.grad(segments.sqrt().sum(), mean[2].weight)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_saved_generator(tmp_path):
    metric = _metric(_mlp(dtype=torch.float32), dtype=torch.float32)
    path = fastgeo.save_generator(
        tmp_path / "g.safetensors", metric, example_input=randn(4, D_LAT, dtype=torch.float32)
    )
    loaded = fastgeo.load_generator(path)
    pts = _curves(torch.float32)
    assert loaded.mean_embedding(pts).shape[-1] == HIDDEN
    torch.testing.assert_close(loaded.segment_sqdist(pts), metric.segment_sqdist(pts), rtol=1e-5, atol=1e-7)


def test_geodesics_as_without_the_stand_in(monkeypatch):
    metric = _metric(_mlp(dtype=torch.float32), dtype=torch.float32)
    z0, z1 = randn(6, D_LAT, dtype=torch.float32, seed=5), randn(6, D_LAT, dtype=torch.float32, seed=6)
    opts = {"graph": False, "progress": False}
    assert metric.mean_embedding(_curves(torch.float32)).shape[-1] == HIDDEN
    with_it = fastgeo.geodesics(metric, z0, z1, **opts)
    monkeypatch.setattr(compact, "COMPACT", False)
    assert metric.mean_embedding(_curves(torch.float32)).shape[-1] == D
    without = fastgeo.geodesics(metric, z0, z1, **opts)
    assert list(with_it.status) == list(without.status)
    torch.testing.assert_close(with_it.lengths, without.lengths, rtol=2e-5, atol=0)


def test_nearest_neighbors_bound_on_the_stand_in():
    """The feature-space bound of ``nearest_neighbors`` comes from the stand-in's values: the
    same distances, fewer values; the neighbours are the rows of the full matrix."""
    from fastgeo.pairwise import triu_pairs
    from fastgeo.pairwise.feature_bound import decoded_features

    metric = _metric(_mlp(dtype=torch.float32), dtype=torch.float32)
    codes = randn(14, D_LAT, dtype=torch.float32, seed=7)
    f = decoded_features(metric, codes)
    assert f.shape == (14, HIDDEN + D)
    torch.testing.assert_close(
        torch.cdist(f, f), torch.cdist(*(2 * [metric.features(codes)])), rtol=1e-4, atol=1e-4
    )
    opts = {"max_iter": 40, "graph": False}
    res = fastgeo.nearest_neighbors(metric, codes, 2, workers=1, progress=False, **opts)
    i, j = triu_pairs(14, 0, 14 * 13 // 2)
    lengths = fastgeo.geodesics(metric, codes[i], codes[j], progress=False, **opts).lengths.double()
    full = torch.full((14, 14), torch.inf, dtype=torch.float64)
    full[i, j] = full[j, i] = lengths
    assert torch.equal(res.indices, torch.sort(full, dim=1, stable=True)[1][:, :2])


class _DataUnits(nn.Module):
    """A Gaussian decoder whose outputs are put back in data units by buffers, as a single-cell
    model on standardized genes is: ``fc(h) * std + mean``, or with an image reshape between."""

    def __init__(self, image: bool = False) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Linear(D_LAT, HIDDEN), nn.ELU())
        self.fc = nn.Linear(HIDDEN, D)
        self.image = image
        self.register_buffer("std", torch.rand(1, 4, 5) + 0.5 if image else torch.rand(D) + 0.5)
        self.register_buffer("mu", torch.randn(D))

    def forward(self, z):
        x = self.fc(self.body(z))
        if self.image:
            return (x.view(-1, 1, 4, 5) * self.std * 0.5 - 1.0).flatten(1) + self.mu
        return x * self.std + self.mu


@pytest.mark.parametrize("image", [False, True], ids=["genes", "image"])
def test_affine_steps_after_the_last_layer_join_it(image):
    metric = _metric(_DataUnits(image).double().eval())
    pts = _curves()
    assert metric.mean_embedding(pts).shape[-1] == HIDDEN
    _assert_segments_of_the_mean(metric, pts)


def test_a_last_layer_along_an_axis_of_several_is_checked():
    """A Linear applied along the last of two axes per point, then a per-element scale: the
    columns of W do not go through the tail alone (the rows are scaled apart), so the check keeps
    the mean itself."""

    class Rows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.fc1 = nn.Linear(D_LAT, 2 * HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, 10)
            self.register_buffer("scale", torch.rand(2, 10) + 0.5)

        def forward(self, z):
            return (self.fc2(torch.tanh(self.fc1(z)).view(-1, 2, HIDDEN)) * self.scale).flatten(1)

    metric = _metric(Rows().double().eval())
    pts = _curves()
    assert metric.mean_embedding(pts).shape[-1] == D
    _assert_segments_of_the_mean(metric, pts)


@pytest.mark.parametrize("widening", [True, False], ids=["stand-in", "mean"])
def test_length_with_known_ends(widening):
    """``length_with_ends``: end points' embeddings given, inner points decoded flat: the length
    of ``length`` (float64 to 1e-12), by the stand-in or the mean; shapes that disagree refused."""
    metric = _metric(_mlp() if widening else _mlp(nn.Tanh()))
    pts = _curves()
    first, last = metric.mean_embedding(pts[:, 0]), metric.mean_embedding(pts[:, -1])
    assert first.shape[-1] == (HIDDEN if widening else D)
    got = metric.length_with_ends(pts, first, last)
    torch.testing.assert_close(got, metric.length(pts), rtol=1e-12, atol=0)
    two = pts[:, [0, -1]]  # no inner points
    got = metric.length_with_ends(two, first, last)
    torch.testing.assert_close(got, metric.length(two), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="must agree"):
        metric.length_with_ends(pts, first[:3], last[:3])
