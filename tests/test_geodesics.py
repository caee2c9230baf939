"""Analytic geodesics (DESIGN §1, foundation issue): linear decoder, sphere, invariants."""

import pytest
import torch
from analytic import (
    Linear,
    bumpy_metric,
    constant_precision,
    disc_points,
    great_circle,
    sphere_metric,
)
from helpers import randn

import fastgeo
from fastgeo.solver.measure import measure
from fastgeo.solver.result import Work


def test_linear_decoder_gives_straight_line_of_length_A_dz():
    """Linear decoder, constant sigma: geodesics are the straight lines, of length ||A (z1 - z0)||
    (1e-6), converged."""
    g = torch.Generator().manual_seed(1)
    A = torch.randn(5, 3, generator=g, dtype=torch.float64)
    metric = fastgeo.ExpectedMetric(Linear(A, torch.randn(5, dtype=torch.float64)), constant_precision(3, 5))
    z0 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    z1 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z0, z1)
    expected = ((z1 - z0) @ A.T).norm(dim=-1)
    torch.testing.assert_close(res.lengths, expected, rtol=1e-6, atol=0)
    assert bool(res.converged.all())
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    line = z0[:, None] + t[None, :, None] * (z1 - z0)[:, None]
    torch.testing.assert_close(res.points(9), line, rtol=0, atol=1e-8)
    times = torch.tensor([0.0, 0.3, 1.0])  # chosen times (float32 given, the curves' dtype used)
    at = res.points(times)
    assert at.dtype == torch.float64 and torch.equal(at[:, 0], z0) and torch.equal(at[:, -1], z1)
    torch.testing.assert_close(at[:, 1], z0 + 0.3 * (z1 - z0), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        res.points(torch.tensor([0.5, 1.5]))
    text = repr(res)  # a summary, not 16 curves' tensors
    assert text.startswith("GeodesicResult(16 curves, d=3, method='default': converged 16, lengths ")
    assert len(text) < 200 and "tensor" not in text
    assert repr(res.select(torch.tensor([], dtype=torch.long))).endswith(": none)")


@pytest.mark.parametrize(
    "family,m,bound",
    [
        ("legendre", 1, 5e-3),
        ("legendre", 4, 5e-4),
        ("legendre", 8, 5e-4),
        ("bspline", 4, 5e-4),
        ("bspline", 8, 5e-4),
    ],
)
def test_sphere_lengths_approach_great_circle(family, m, bound):
    """On the sphere (a stereographic chart) lengths approach great-circle distances as the basis
    grows (quadratic: 5e-3; 4 and 8 basis functions, polynomials or B-splines: 5e-4), converged."""
    metric = sphere_metric()
    z0, z1 = disc_points(64, 0.95, seed=1), disc_points(64, 0.95, seed=2)
    res = fastgeo.geodesics(metric, z0, z1, m=m, n_points=32, family=family)
    rel = res.lengths / great_circle(z0, z1) - 1
    assert bool(res.converged.all())
    assert float(rel.abs().max()) < bound, f"max relative error {float(rel.abs().max()):.2e}"


def test_paper_method_on_sphere_within_half_percent():
    """method="paper" (quadratic curve, first-order steps) is within 0.5 % of great circles on the
    sphere."""
    metric = sphere_metric()
    z0, z1 = disc_points(64, 0.95, seed=3), disc_points(64, 0.95, seed=4)
    res = fastgeo.geodesics(metric, z0, z1, method="paper")
    rel = res.lengths / great_circle(z0, z1) - 1
    assert float(rel.abs().max()) < 5e-3


def test_dense_method_on_sphere():
    """method="dense" (free polylines, here of 64 nodes) is within 2e-4 of great circles on the
    sphere, converged."""
    metric = sphere_metric()
    z0, z1 = disc_points(8, 0.9, seed=5), disc_points(8, 0.9, seed=6)
    res = fastgeo.geodesics(metric, z0, z1, method="dense", n_points=64)
    rel = res.lengths / great_circle(z0, z1) - 1
    assert bool(res.converged.all())
    assert float(rel.abs().max()) < 2e-4


def test_dense_polishes_each_distinct_start_once(monkeypatch):
    """The oracle solves a start only if it is not within SAME_START chords of an earlier start of
    its pair, and returns the shortest per pair, pairs in their order."""
    from fastgeo.solver import dense

    chord = torch.tensor([1.0, 2.0], dtype=torch.float64)
    inits = torch.zeros(3, 2, 5, 2, dtype=torch.float64)
    inits[1, 0] += 0.5e-4  # pair 0: start 1 is start 0 (within 1e-4 chords), start 2 another
    inits[2, 0, 2] = 0.3
    inits[1, 1, 1] = 0.01  # pair 1: three distinct starts
    inits[2, 1, 3] = -0.01
    start, pair = dense.distinct_inits(inits, chord)
    assert pair.tolist() == [0, 0, 1, 1, 1] and start.tolist() == [0, 2, 0, 1, 2]
    # On the sphere: the default's curves all reach one basin, so fewer solves than starts, and
    # the result equals the shortest of every start solved alone.
    metric = sphere_metric()
    z0, z1 = disc_points(3, 0.9, seed=7), disc_points(3, 0.9, seed=8)
    seen = []
    original = dense.distinct_inits
    monkeypatch.setattr(dense, "distinct_inits", lambda *a: seen.append(original(*a)) or seen[-1])
    res = fastgeo.geodesics(metric, z0, z1, method="dense", n_points=32)
    start, pair = seen[0]
    assert pair.tolist() == sorted(pair.tolist()) and set(pair.tolist()) == {0, 1, 2}
    assert start.numel() < len(dense.exploring_starts(32)) * 3
    assert bool(res.converged.all()) and len(res) == 3
    assert torch.equal(res.curves.z0, z0) and torch.equal(res.curves.z1, z1)
    rel = res.lengths / great_circle(z0, z1) - 1
    assert float(rel.abs().max()) < 1e-3


def test_the_oracles_starts_are_solved_by_a_float32_copy_kept_with_the_metric(monkeypatch):
    """A float64 metric whose mean is a module explores in float32 (the copy kept, made again when
    the decoder is trained in place); a plain callable, a float32 metric and a given graph explore
    in the metric itself. The polylines stay float64, at the lengths float64 starts give."""
    from fastgeo.solver import dense

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6)).double()
    metric = fastgeo.ExpectedMetric(net, bumpy_metric().precision)
    starts = dense.explorer(metric, True)
    assert starts.dtype == torch.float32 and dense.explorer(metric, None) is starts
    with torch.no_grad():
        net[0].weight.mul_(1.5)
    again = dense.explorer(metric, True)
    assert again is not starts and again.dtype == torch.float32
    torch.testing.assert_close(again.probe(4).double(), metric.probe(4), rtol=1e-5, atol=1e-6)
    assert dense.explorer(bumpy_metric(), True).dtype == torch.float64  # a plain callable mean

    class Float64Alone(torch.nn.Module):  # casts its input: its float32 copy fails
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6))

        def forward(self, z):
            return self.net(z.double())

    cast = fastgeo.ExpectedMetric(Float64Alone().double(), bumpy_metric().precision)
    assert dense.explorer(cast, True) is cast and dense.explorer(cast, True) is cast
    res = fastgeo.geodesics(cast, randn(2, 2, seed=3), randn(2, 2, seed=4), method="dense")
    assert bool(res.converged.all())
    m32 = metric.to(torch.float32)
    assert dense.explorer(m32, True) is m32
    graph = fastgeo.LatentGraph(metric)
    assert dense.explorer(metric, graph) is metric
    z0, z1 = randn(3, 2, seed=21), randn(3, 2, seed=22)
    res = fastgeo.geodesics(metric, z0, z1, method="dense", n_points=32)
    assert res.lengths.dtype == torch.float64
    monkeypatch.setattr(dense, "explorer", lambda metric, graph: metric)
    ref = fastgeo.geodesics(metric, z0, z1, method="dense", n_points=32)
    assert res.status.tolist() == ref.status.tolist()
    assert float((res.lengths / ref.lengths - 1).abs().max()) < 1e-8, (res.lengths, ref.lengths)


def test_a_results_rows_select_every_field():
    metric = bumpy_metric()
    z0, z1 = randn(4, 2, seed=11), randn(4, 2, seed=12)
    res = fastgeo.geodesics(metric, z0, z1, progress=False)
    idx = torch.tensor([2, 0])
    sub = res.select(idx)
    assert len(sub) == 2 and torch.equal(sub.points(16), res.points(16)[idx])
    names = ("lengths", "energies", "status_code", "iterations", "init", "straight_lengths", "resolution")
    for name in names:
        assert torch.equal(getattr(sub, name), getattr(res, name)[idx]), name
    assert sub.decoder_evals == res.decoder_evals and sub.options == res.options


@pytest.mark.parametrize("method", ["default", "paper", "dense"])
def test_a_saved_result_loads_with_torchs_default_weights_only(tmp_path, method):
    metric = bumpy_metric()
    z0, z1 = randn(3, 2, seed=13), randn(3, 2, seed=14)
    res = fastgeo.geodesics(metric, z0, z1, method=method, progress=False)
    torch.save(res, tmp_path / "res.pt")
    back = torch.load(tmp_path / "res.pt", weights_only=True)
    assert type(back) is type(res) and type(back.curves.basis) is type(res.curves.basis)
    assert torch.equal(back.lengths, res.lengths) and torch.equal(back.points(), res.points())
    assert back.options == res.options and list(back.status) == list(res.status)


@pytest.mark.parametrize("method", ["default", "paper"])
def test_invariants_on_a_nonlinear_generator(method):
    """On a nonlinear generator: L <= sqrt(2 E) at any sampling, exact end points, never longer than
    the straight line, converged (the paper's quadratic may fall back to the straight line), and
    shorter than it somewhere (the solver did something)."""
    metric = bumpy_metric()
    g = torch.Generator().manual_seed(7)
    z0 = torch.randn(12, 2, generator=g, dtype=torch.float64)
    z1 = torch.randn(12, 2, generator=g, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z0, z1, method=method)
    # (c) L <= sqrt(2 E), at any sampling (the energies are at the curves' own resolution)
    n = int(res.resolution.max())
    assert bool((res.resolution == n).all())
    at_n = metric.length(res.points(n))
    assert bool((at_n <= (2 * res.energies).sqrt() * (1 + 1e-12)).all())
    pts = res.points(50)
    assert bool((metric.length(pts) <= (2 * metric.energy(pts)).sqrt() * (1 + 1e-12)).all())
    # (d) end points exactly
    assert torch.equal(pts[:, 0], z0) and torch.equal(pts[:, -1], z1)
    # (e) never longer than the straight line
    assert bool((res.lengths <= res.straight_lengths).all())
    allowed = ("converged",) if method == "default" else ("converged", "straight_fallback")
    assert set(res.status) <= set(allowed), res.status
    # the optimization did something on this curved metric
    assert float((res.lengths / res.straight_lengths).min()) < 0.99


def test_same_end_points_give_zero_length():
    """Equal end points give a length of exactly 0, converged."""
    metric = bumpy_metric()
    z = torch.randn(3, 2, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z, z.clone())
    assert torch.equal(res.lengths, torch.zeros(3, dtype=torch.float64))
    assert bool(res.converged.all())


def test_empty_batch():
    """An empty batch gives empty lengths, flags, points and distance matrix."""
    metric = bumpy_metric()
    z = torch.zeros(0, 2, dtype=torch.float64)
    res = fastgeo.geodesics(metric, z, z)
    assert res.lengths.shape == (0,) and res.converged.shape == (0,)
    assert res.points(5).shape == (0, 5, 2)
    assert fastgeo.pairwise_distances(metric, z).shape == (0, 0)


def test_float32_generator():
    """A float32 generator gives float32 lengths within 1e-4 of the float64 generator's (they
    differ by ~2e-6: the float32 tolerance, not a looser solve)."""
    metric = bumpy_metric(dtype=torch.float32)
    g = torch.Generator().manual_seed(8)
    z0, z1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    res32 = fastgeo.geodesics(metric, z0, z1)
    res64 = fastgeo.geodesics(bumpy_metric(), z0.double(), z1.double())
    assert res32.lengths.dtype == torch.float32
    torch.testing.assert_close(res32.lengths.double(), res64.lengths, rtol=1e-4, atol=1e-6)


def test_nonfinite_decoder_is_reported_not_converged():
    """A decoder that is NaN on part of the plane: the curve that must cross it is flagged not
    converged, the other converges with a finite length."""
    prec = constant_precision(2, 3)

    def mean(z):  # NaN in the right half-plane
        out = torch.cat([z, z[..., :1]], -1)
        return torch.where(z[..., :1] > 0.5, torch.nan, out)

    metric = fastgeo.ExpectedMetric(mean, prec)
    z0 = torch.tensor([[-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="1 of 2 curves have no finite length"):
        res = fastgeo.geodesics(metric, z0, z1)
    assert res.converged.tolist() == [False, True]
    assert torch.isfinite(res.lengths[1])


def test_pairwise_distances_equal_per_pair_results():
    """pairwise_distances is symmetric with a zero diagonal, and an entry equals the single-pair
    geodesic's length (1e-6)."""
    metric = bumpy_metric()
    Z = randn(5, 2, seed=9)
    D = fastgeo.pairwise_distances(metric, Z)
    assert D.shape == (5, 5)
    assert torch.equal(D, D.T)
    assert torch.equal(torch.diagonal(D), torch.zeros(5, dtype=torch.float64))
    i, j = 1, 3
    single = fastgeo.geodesics(metric, Z[i : i + 1], Z[j : j + 1])
    torch.testing.assert_close(D[i, j], single.lengths[0], rtol=1e-6, atol=0)


def test_metric_tensor_matches_autograd_jacobians():
    """metric_tensor(z) is J^T J of the features' autograd Jacobian, for any leading shape."""
    metric = bumpy_metric()
    z = torch.randn(4, 2, dtype=torch.float64)
    M = metric.metric_tensor(z)
    for p in range(4):
        J = torch.autograd.functional.jacobian(lambda x: metric.features(x[None])[0], z[p])
        torch.testing.assert_close(M[p], J.T @ J)
    assert metric.metric_tensor(z.reshape(2, 2, 2)).shape == (2, 2, 2, 2)


def test_energy_and_length_definitions():
    """energy = (N - 1)/2 sum s_n and length = sum sqrt(s_n) of the segment costs s_n (N = 7)."""
    metric = bumpy_metric()
    pts = torch.randn(3, 7, 2, dtype=torch.float64)
    s = metric.segment_sqdist(pts)
    torch.testing.assert_close(metric.energy(pts), 3 * s.sum(-1))
    torch.testing.assert_close(metric.length(pts), s.sqrt().sum(-1))


def mountain_metric(height: float = 6.0):
    """The plane lifted over a tall Gaussian mountain at the origin: the straight line between
    (-2, 0) and (2, 0) crosses its top (a saddle of the energy: symmetric starts stay on it);
    geodesics go around it. The RBF centers tile the plane, weights 0 (sigma constant)."""
    grid = torch.linspace(-3, 3, 7, dtype=torch.float64)
    centers = torch.cartesian_prod(grid, grid)
    prec = fastgeo.RBFPrecision(
        centers, torch.ones(49, dtype=torch.float64), torch.zeros(3, 49, dtype=torch.float64), 1.0
    )

    def mean(z):
        h = height * torch.exp(-(z * z).sum(-1, keepdim=True) / 0.5)
        return torch.cat([z, h], -1)

    return fastgeo.ExpectedMetric(mean, prec)


def test_two_basins_default_finds_the_way_around():
    """Around a tall mountain: from the straight line the solver stays on the ridge (a saddle); the
    default starts (graph or warm start) go around it, at least 20 % shorter."""
    metric = mountain_metric()
    z0 = torch.tensor([[-2.0, 0.0], [-2.0, 0.05]], dtype=torch.float64)
    z1 = torch.tensor([[2.0, 0.0], [2.0, -0.05]], dtype=torch.float64)
    naive = fastgeo.geodesics(metric, z0, z1, warm_start=False, graph=False)
    best = fastgeo.geodesics(metric, z0, z1)
    # From the straight line the solver stays on the ridge over the mountain ...
    assert float(naive.points(33)[0, 16].abs().max()) < 1e-6
    # ... the default starts elsewhere and goes around, much shorter.
    assert bool((best.lengths < 0.8 * naive.lengths[0]).all()), (best.lengths, naive.lengths)
    assert float(best.points(33)[:, 16, 1].abs().min()) > 0.5
    assert best.init_names[0] in ("graph", "warm")


def test_latents_join_the_graph_and_large_sets_are_subsampled():
    """Latents join the initialization graph, a large set subsampled to n_nodes; geodesics started
    from that graph converge, no longer than straight lines."""
    metric = bumpy_metric()
    Z = randn(2000, 2, seed=11)
    graph = fastgeo.LatentGraph(metric, latents=Z, n_nodes=300)
    # 300 sampled around the 5 centers (rounded up per center), the centers, the grid, 300 latents
    assert graph.nodes.shape[0] == 5 + 300 + 3600 + 300  # and a 60 x 60 grid in 2-D
    res = fastgeo.geodesics(metric, Z[:6], Z[6:12], graph=graph)
    assert bool((res.lengths <= res.straight_lengths).all()) and bool(res.converged.all())


def _wall_metric(width: float) -> fastgeo.ExpectedMetric:
    """mu(z) = [z, exp(-(z_1 / width)^2)]: every path from z_1 < 0 to z_1 > 0 climbs a wall of
    height 1 and down again, so geodesics across are at least 2 longer than in the plane."""

    def mean(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, torch.exp(-((z[..., :1] / width) ** 2))], -1)

    return fastgeo.ExpectedMetric(mean, constant_precision(2, 3))


def test_resolution_check_resolves_or_flags_curves_that_step_over_a_wall():
    """The resolution check on a wall: a wide one needs nothing; a narrow one hidden between the
    points is re-solved with doubled points and flagged while still under-resolved; 128 points see
    it. Whatever the optimizer saw, the length reported is the curve's, measured finely."""
    z0 = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    opts = dict(n_points=8, coarse_points=5, graph=False, family="legendre", m=12)
    # A wide wall is resolved by 8 points: nothing to do.
    wide = fastgeo.geodesics(_wall_metric(1.0), z0, z1, **opts)
    assert wide.resolution.tolist() == [8] and bool(wide.converged.all())
    # A narrow one hides between 8 points: unchecked, the optimizer misses the whole wall (the true
    # length is about 3.8) and claims convergence; the reported length still counts the wall.
    metric = _wall_metric(0.05)
    blind = fastgeo.geodesics(metric, z0, z1, check_resolution=False, **opts)
    assert float(metric.length(blind.points(8))[0]) < 2.1 and bool(blind.converged.all())
    assert float(blind.lengths[0]) > 3.5 and int(blind.measure_points[0]) > 8
    # Checked: re-solved with 16 points, then 32, still under-resolved there: flagged.
    checked = fastgeo.geodesics(metric, z0, z1, **opts)
    assert checked.resolution.tolist() == [32] and checked.status.tolist() == ["under_resolved"]
    # Its length, measured from the resolution check's last two grids, is the re-solved curve's:
    # the same as measured from scratch.
    plain = measure(metric, checked.curves, checked.resolution, Work())
    assert torch.equal(plain[0], checked.lengths) and torch.equal(plain[2], checked.measure_points)
    # 128 points see the wall (the length grows by < 1 % at their midpoints): converged, not
    # solved again by the resolution check (256, 512: the subdivided curve at each level).
    fine = fastgeo.geodesics(metric, z0, z1, n_points=128, graph=False)
    assert fine.resolution.tolist() in ([128], [256], [512]) and bool(fine.converged.all())
    assert float(fine.lengths[0]) > 3.5
    # From 16 points: whatever happens (here the curve that hides the wall between its points is
    # longer than the straight line once measured, which is returned), the reported length is
    # the returned curve's own, on a fine grid.
    mid = fastgeo.geodesics(
        metric, z0, z1, n_points=16, coarse_points=9, graph=False, family="legendre", m=12
    )
    assert mid.status.tolist()[0] in ("converged", "under_resolved", "straight_fallback")
    with torch.no_grad():
        torch.testing.assert_close(metric.length(mid.points(4097)), mid.lengths, rtol=1e-3, atol=0)


def test_fewest_coarse_points_in_finer_bases():
    """``coarse_points=4`` (the fewest allowed) is scaled down with the finer bases a call
    solves in (the true decoder's stage after the smoothed one, subdivision, the resolution
    check) but never below 4: on a ReLU decoder with ``n_points=200`` it fell to 3 there and the
    warm start crashed in its banded system (``torch.cat`` of no terms)."""
    g = torch.Generator().manual_seed(0)
    d = 4
    net = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    Z = torch.randn(12, d, generator=g)
    weights = torch.rand(16, 6, generator=g)
    precision = fastgeo.RBFPrecision(Z[:6], torch.full((6,), 0.5), weights, zeta=1e-2)
    metric = fastgeo.ExpectedMetric(net, precision)
    assert metric.piecewise_linear_mean  # the smoothed stage runs first
    res = fastgeo.geodesics(metric, Z[6:8], Z[8:10], n_points=200, coarse_points=4, progress=False)
    assert res.options["smoothed_first"] and torch.isfinite(res.lengths).all()
