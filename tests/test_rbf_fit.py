import numpy as np
import pytest
import torch

import fastgeo
from fastgeo import rbf_fit
from fastgeo.rbf_fit import DEFAULT_CENTERS, kmeans, nll_gradient, rbf_nll

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs(seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]], dtype=torch.float64)
    x = torch.cat([m + 0.2 * torch.randn(50, 2, generator=g, dtype=torch.float64) for m in means])
    return x, means


def test_kmeans_recovers_separated_clusters_deterministically():
    """kmeans on three separated blobs: each blob is one cluster, centred at its mean; the same seed
    gives the same result."""
    x, means = _blobs()
    c, assign = kmeans(x, 3, seed=0)
    assert c.shape == (3, 2) and assign.shape == (150,)
    # Each true blob is one cluster, and its center is the blob mean.
    for b in range(3):
        ids = assign[50 * b : 50 * (b + 1)]
        assert bool((ids == ids[0]).all())
        assert torch.allclose(c[ids[0]], x[50 * b : 50 * (b + 1)].mean(0))
    c2, assign2 = kmeans(x, 3, seed=0)
    assert torch.equal(c, c2) and torch.equal(assign, assign2)


def test_kmeans_errors():
    """Fewer points than clusters and k < 1 are refused."""
    x, _ = _blobs()
    with pytest.raises(ValueError, match="at least"):
        kmeans(x[:2], 3)
    with pytest.raises(ValueError, match="k must"):
        kmeans(x, 0)


def _problem():
    """Latents on a circle, data = a smooth map of them plus known noise."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(300, generator=g, dtype=torch.float64) * 6.28
    z = torch.stack([t.cos(), t.sin()], 1) * 2
    lin = torch.randn(2, 4, generator=g, dtype=torch.float64)

    def mean(u):
        return torch.tanh(u @ lin)

    x = mean(z) + 0.05 * torch.randn(300, 4, generator=g, dtype=torch.float64)
    return z, x, mean


def test_fit_small_sigma_on_data_large_sigma_far_away():
    """The fit has the centers asked for (RBFPrecision itself refuses parameters that are not
    finite, negative weights and gammas <= 0); sigma on the data is near the true noise (0.05) and
    over 10x larger far from it."""
    z, x, mean = _problem()
    prec = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=16, zeta=1e-3, steps=300, progress=False)
    assert prec.centers.shape == (16, 2) and prec.weights.shape == (4, 16)
    with torch.no_grad():
        on = prec.sigma(z).mean()
        far = prec.sigma(torch.tensor([[0.0, 0.0], [6.0, 6.0], [-8.0, 1.0]], dtype=torch.float64)).min()
    assert far > 10 * on
    # The fitted sigma on the data is close to the true noise level 0.05 (within 10 %: 1,200
    # residuals estimate it to ~2 %; the fit gives 0.0502).
    assert abs(float(on) - 0.05) < 0.005, float(on)


def test_fit_maximizes_the_likelihood_and_is_deterministic():
    """Training lowers the Gaussian negative log-likelihood of the data under the fixed mean, and
    repeats bit for bit."""
    z, x, mean = _problem()

    @torch.no_grad()
    def nll(prec):
        beta = prec(z)
        return float((0.5 * beta * (x - mean(z)) ** 2 - 0.5 * beta.log()).sum(-1).mean())

    untrained = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=0, progress=False)
    trained = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=200, progress=False)
    again = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=200, progress=False)
    assert nll(trained) < nll(untrained) - 1e-3
    assert torch.equal(trained.weights, again.weights)


def test_bandwidth_follows_cluster_spread():
    """gamma_k = 0.5 / (bandwidth_scale * mean distance to the center)^2 for each k-means cluster."""
    x, _ = _blobs()
    prec = fastgeo.RBFPrecision.fit(
        x, x, lambda u: u, num_centers=3, bandwidth_scale=2.0, steps=0, progress=False
    )
    _, assign = kmeans(x, 3, seed=0)
    for k in range(3):
        pts = x[assign == k]
        spread = (pts - pts.mean(0)).norm(dim=1).mean()
        assert torch.allclose(prec.gammas[k], 0.5 / (2.0 * spread) ** 2)


def test_dimensions_the_decoder_reproduces_exactly_get_finite_weights():
    """Border pixels that are 0 in every image and every decoded one: their likelihood has no
    maximum (the weights overflowed to inf). Their residuals are floored; the other dimensions'
    weights are those of a fit without the exact ones (to the rounding of another matrix width)."""
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12))
    z = torch.randn(120, 3)
    with torch.no_grad():
        x = dec(z) + 0.05 * torch.randn(120, 12)
        dec[2].weight[:4] = 0.0
        dec[2].bias[:4] = 0.0
    x[:, :4] = 0.0
    prec = fastgeo.RBFPrecision.fit(z, x, dec, num_centers=8, steps=300, progress=False)
    assert bool(torch.isfinite(prec.weights).all())
    assert float(prec.weights[:4].min()) > float(prec.weights[4:].max())  # certain where exact
    rest = fastgeo.RBFPrecision.fit(
        z, x[:, 4:], lambda u: dec(u)[:, 4:], num_centers=8, steps=300, progress=False
    )
    assert torch.allclose(prec.weights[4:], rest.weights, rtol=1e-4)
    with pytest.raises(ValueError, match="no variance to fit"):
        fastgeo.RBFPrecision.fit(z, x[:, :4], lambda u: dec(u)[:, :4], num_centers=8, progress=False)


def test_copies_of_a_code_split_between_clusters_take_the_median_spread():
    """5 distinct codes, 8 copies each, 8 clusters: clusters of copies have spreads of rounding
    size, which count as zero (bumps 1e-7 wide otherwise)."""
    x, _ = _blobs()
    codes = torch.cat([x[::30]] * 8)  # 5 distinct codes
    data = codes + 0.1 * torch.randn(
        codes.shape, generator=torch.Generator().manual_seed(1), dtype=codes.dtype
    )
    prec = fastgeo.RBFPrecision.fit(codes, data, lambda u: u, num_centers=8, steps=0, progress=False)
    scale = (codes - codes.mean(0)).norm(dim=1).mean()
    assert float(prec.gammas.max()) < float(0.5 / (1.5 * 1e-3 * scale) ** 2), prec.gammas


def test_fit_argument_errors():
    """Latents and data of different lengths, zeta = 0, more centers than points and a mean that
    returns (mu, logvar) are refused."""
    z, x, mean = _problem()
    with pytest.raises(ValueError, match="one row per training point"):
        fastgeo.RBFPrecision.fit(z, x[:10], mean)
    with pytest.raises(ValueError, match="zeta"):
        fastgeo.RBFPrecision.fit(z, x, mean, zeta=0.0)
    with pytest.raises(ValueError, match="num_centers"):
        fastgeo.RBFPrecision.fit(z, x, mean, num_centers=1000)
    with pytest.raises(TypeError, match=r"got tuple \(for a VAE's \(mu, logvar\) pass a function"):
        fastgeo.RBFPrecision.fit(z, x, lambda q: (mean(q), mean(q)))


def test_fewer_points_than_the_default_centers_take_one_center_each():
    """A user with a few dozen codes (cell types, class representatives) needs no option: the
    default number of centers falls to the number of points; one named explicitly is kept."""
    z, x, mean = _problem()
    few = fastgeo.RBFPrecision.fit(z[:20], x[:20], mean, steps=20, progress=False)
    assert few.num_centers == 20 and bool(torch.isfinite(few.weights).all())
    many = fastgeo.RBFPrecision.fit(z, x, mean, steps=0, progress=False)
    assert z.shape[0] > DEFAULT_CENTERS and many.num_centers == DEFAULT_CENTERS
    with pytest.raises(ValueError, match="num_centers = 21 exceeds the number of points 20"):
        fastgeo.RBFPrecision.fit(z[:20], x[:20], mean, num_centers=21)


def test_the_fit_gradient_is_the_objective_gradient_in_column_chunks(monkeypatch):
    """nll_gradient (no (M, D) autograd graph, the precisions a few columns at a time) equals
    autograd's gradient of rbf_nll, the fit's objective, for chunk widths that split D unevenly."""
    g = torch.Generator().manual_seed(3)
    phi = torch.rand(37, 5, generator=g, dtype=torch.float64)
    resid2 = torch.rand(37, 11, generator=g, dtype=torch.float64)
    log_w = torch.randn(11, 5, generator=g, dtype=torch.float64, requires_grad=True)
    (want,) = torch.autograd.grad(rbf_nll(phi, log_w, resid2, 1e-2), log_w)
    for elements in (37 * 4, 37 * 11, 1 << 22, 1):
        monkeypatch.setattr(rbf_fit, "CHUNK_ELEMENTS", elements)
        got = nll_gradient(phi, log_w.detach(), resid2.T @ phi, 1e-2)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_the_data_decoded_in_row_chunks_gives_the_same_fit(monkeypatch):
    """The mean called on a few latents at a time (row chunks that split M unevenly, images as
    data, an exactly reproduced dimension among them) gives the fit of one call on all points."""
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12))
    dec.append(torch.nn.Unflatten(1, (3, 2, 2))).eval().double()
    z = torch.randn(101, 3, dtype=torch.float64)
    with torch.no_grad():
        dec[2].weight[:1] = 0.0
        dec[2].bias[:1] = 0.0
        x = dec(z) + 0.05 * torch.randn(101, 3, 2, 2, dtype=torch.float64)
    x[:, 0, 0, 0] = 0.0
    whole = fastgeo.RBFPrecision.fit(z, x, dec, num_centers=8, steps=50, progress=False)
    monkeypatch.setattr(rbf_fit, "DECODE_ROWS", 17)
    chunked = fastgeo.RBFPrecision.fit(z, x, dec, num_centers=8, steps=50, progress=False)
    assert torch.allclose(chunked.weights, whole.weights, rtol=1e-9)
    with pytest.raises(ValueError, match=r"got \(17, 3, 4\) for 17 of them \(the data's images are \("):
        fastgeo.RBFPrecision.fit(z, x, lambda u: dec(u).flatten(2), num_centers=8, progress=False)
    with pytest.raises(ValueError, match="channels last against channels first"):  # (M, H, W, C) data
        fastgeo.RBFPrecision.fit(z, x.permute(0, 2, 3, 1), dec, num_centers=8, progress=False)


def test_one_code_per_center_takes_the_codes_scale():
    """As many centers as codes (M <= 64 by default: no spread inside a cluster) gives bandwidths in
    the codes' own units: the same fit at any scale of the latent space, large far from the data."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(2, 5, generator=g, dtype=torch.float64)
    z = torch.randn(30, 2, generator=g, dtype=torch.float64)
    x = torch.tanh(z @ W) + 0.05 * torch.randn(30, 5, generator=g, dtype=torch.float64)
    fits = {}
    for s in (0.01, 100.0):
        fits[s] = fastgeo.RBFPrecision.fit(z * s, x, lambda u, s=s: torch.tanh((u / s) @ W), steps=50,
                                           progress=False)  # fmt: skip
        assert fits[s].num_centers == 30
    torch.testing.assert_close(fits[0.01].gammas * 0.01**2, fits[100.0].gammas * 100.0**2, rtol=1e-6, atol=0)
    far = fits[1e2].sigma(torch.tensor([[600.0, 600.0]], dtype=torch.float64))
    near = fits[1e2].sigma(z[:5] * 100.0)
    assert bool((far > 10 * near.mean()).all())


def test_a_grayscale_channel_on_one_side_only_is_the_same_layout():
    """Images (M, 1, H, W) against a decoder of (M, H, W) (and the reverse) hold the same values in
    the same order: accepted, the fit of flat data."""
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Unflatten(1, (4, 4)))
    dec = dec.double().eval()
    z = torch.randn(40, 2, dtype=torch.float64)
    with torch.no_grad():
        x = dec(z) + 0.05 * torch.randn(40, 4, 4, dtype=torch.float64)
    flat = fastgeo.RBFPrecision.fit(z, x.flatten(1), dec, num_centers=6, steps=20, progress=False)
    for data, mean in ((x[:, None], dec), (x, lambda u: dec(u)[:, None])):
        fit = fastgeo.RBFPrecision.fit(z, data, mean, num_centers=6, steps=20, progress=False)
        torch.testing.assert_close(fit.weights, flat.weights, rtol=1e-9, atol=0)


def test_kmeans_does_not_depend_on_where_the_codes_sit():
    """float32 codes offset by 1,000 get the same clusters as at the origin (distances by matrix
    products lose digits far from it)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 4, generator=g)
    c0, a0 = kmeans(x, 16, seed=0)
    c1, a1 = kmeans(x + 1000.0, 16, seed=0)
    assert torch.equal(a0, a1)
    torch.testing.assert_close(c1 - 1000.0, c0, atol=1e-3, rtol=0)


def test_a_method_around_a_decoder_in_training_mode_is_refused():
    """A decoder with dropout left in training mode, passed as a function (its modules are not
    checked: they may hold an encoder too), is refused as random, not fitted on noisy means."""
    z, x, _ = _problem()
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 4)).double()
    with pytest.raises(ValueError, match="mean is random"):
        fastgeo.RBFPrecision.fit(z, x, lambda u: net(u), num_centers=8, steps=5, progress=False)


def test_data_off_the_decoders_scale_warns():
    """Data in 0-255 against a mean in [0, 1]: every residual is a precision below zeta, and the
    fit warns that its precision is flat (it is zeta everywhere)."""
    z, x, mean = _problem()
    with pytest.warns(UserWarning, match="carries no information about the data"):
        fastgeo.RBFPrecision.fit(z, 255 * x + 128, mean, num_centers=8, steps=5, progress=False)


def test_features_of_a_fit_hold_no_subnormals():
    """2-D codes far apart: many features underflow; they are exact zeros, never subnormal (a
    product reading subnormals runs many times slower on x86)."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat(
        [torch.randn(200, 2, generator=g) + torch.tensor(c) for c in ([0.0, 0.0], [9.0, 0.0], [0.0, 9.0])]
    )
    phi = rbf_fit.rbf_features(z, z[::60], torch.full((10,), 2.0))
    assert bool((phi == 0).any()) and not bool(((phi > 0) & (phi < torch.finfo(phi.dtype).tiny)).any())


def test_a_dimension_reproduced_exactly_around_some_centers_gets_bounded_weights():
    """A ReLU mean at exactly 0 on one cluster of codes whose data is 0 there, noisy on the other:
    around that cluster the likelihood has no maximum, and its weights grew with every step until
    the fit diverged (2,000 steps). With the floor per center they stop, whatever the steps."""
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(100, 2, generator=g) * 0.3 - 3, torch.randn(100, 2, generator=g) * 0.3 + 3])

    def mean(u):
        return torch.relu(u[:, :1]).expand(-1, 3)

    x = mean(z) + 0.1 * torch.randn(200, 3, generator=g) * (z[:, :1] > 0)
    fits = [
        fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=s, progress=False) for s in (1000, 3000)
    ]
    for fit in fits:
        assert bool(torch.isfinite(fit.weights).all())
    with torch.no_grad():
        exact_side = [float(fit.sigma(z[:100]).median()) for fit in fits]
        noisy_side = [float(fit.sigma(z[100:]).median()) for fit in fits]
    assert exact_side[0] < 1e-3 * noisy_side[0]  # certain where the mean is exact
    assert exact_side[1] == pytest.approx(exact_side[0], rel=0.05)  # not set by the step budget
    assert noisy_side[1] == pytest.approx(noisy_side[0], rel=0.05)


def test_bandwidths_do_not_jump_when_a_few_codes_more_than_centers_merge():
    """64 centers for 64 codes take the codes' spacing; for 66 codes the clusters of one code took
    the median spread of k-means' two merges of the closest codes (12x the gammas, holes in the
    precision between neighbouring codes). They take at least the centers' half spacing."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(80, 2, generator=g, dtype=torch.float64)
    W = torch.randn(2, 3, generator=g, dtype=torch.float64)

    def mean(u):
        return torch.tanh(u @ W)

    x = mean(z) + 0.1 * torch.randn(80, 3, generator=g, dtype=torch.float64)
    median = {}
    for m in (64, 65, 66, 70):
        fit = fastgeo.RBFPrecision.fit(z[:m], x[:m], mean, steps=0, progress=False)
        median[m] = float(fit.gammas.median())
    for m in (65, 66, 70):
        assert median[m] <= 1.5 * median[64], median


def test_a_fit_under_inference_mode_gives_trainable_weights():
    """The weights are a Parameter a user may train further: made under torch.inference_mode they
    were inference tensors, which no backward outside it can use."""
    z, x, mean = _problem()
    with torch.inference_mode():
        prec = fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=5, progress=False)
    assert not prec.weights.is_inference()
    prec.sigma(z[:4]).sum().backward()
    assert prec.weights.grad is not None and bool(torch.isfinite(prec.weights.grad).all())


def test_kmeans_and_fit_validate_their_integers_and_the_data_width():
    """numpy integers are integers; a float seed or a negative iteration count is refused naming
    the argument; data with no values per point is refused as such."""
    x, _ = _blobs()
    centers, _ = kmeans(x, np.int64(3), seed=np.int64(1), iters=np.int64(5))
    assert centers.shape[0] == 3
    with pytest.raises(TypeError, match="seed"):
        kmeans(x, 3, seed=1.5)
    with pytest.raises(TypeError, match="iters"):
        kmeans(x, 3, iters=2.5)
    with pytest.raises(ValueError, match="iters"):
        kmeans(x, 3, iters=-1)
    with pytest.raises(ValueError, match="seed"):
        kmeans(x, 3, seed=-1)
    z, x, mean = _problem()
    with pytest.raises(ValueError, match="data must hold D >= 1"):
        fastgeo.RBFPrecision.fit(z, x[:, :0], mean, progress=False)


def test_tight_clusters_keep_their_own_bandwidth():
    """Four clusters 1e-4 wide, 10 apart: genuine spreads (far above rounding), so the precision is
    high on the clusters and low between them; a spread measured relative to the codes' spacing
    had them as copies (bumps 7 wide, the precision higher in the empty middle than on the data)."""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        c = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10]], dtype=dtype)
        z = c.repeat_interleave(50, 0) + 1e-4 * torch.randn(200, 2, generator=g, dtype=dtype)
        w = torch.ones(2, 5, dtype=dtype) / 10
        x = torch.tanh(z @ w) + 0.1 * torch.randn(200, 5, generator=g, dtype=dtype)
        prec = fastgeo.RBFPrecision.fit(z, x, lambda q, w=w: torch.tanh(q @ w), num_centers=4, progress=False)
        middle = prec.total_precision(torch.tensor([[5.0, 0.0]], dtype=dtype))
        assert float(prec.total_precision(z).min()) > 100 * float(middle), (prec.gammas, dtype)


def test_identical_codes_take_the_unit_bandwidth_whatever_their_rounding():
    """M copies of one code: the codes' mean rounds differently by M and value, but every fit takes
    the documented fallback (a spread of 1), never a bandwidth of rounding size."""
    for dtype in (torch.float32, torch.float64):
        for M in (2, 3, 7, 50):
            z = torch.tensor([[0.3, -1.7]], dtype=dtype).expand(M, -1).clone()
            x = torch.randn(M, 5, generator=torch.Generator().manual_seed(M), dtype=dtype)
            prec = fastgeo.RBFPrecision.fit(
                z, x, lambda q: torch.zeros(len(q), 5, dtype=q.dtype), steps=0, progress=False
            )
            assert torch.allclose(prec.gammas, torch.full_like(prec.gammas, 0.5 / 1.5**2)), (dtype, M)


def test_seed_zeta_and_bandwidth_scale_out_of_range_are_named():
    z, x, mean = _problem()
    z32, x32 = z.float(), x.float()

    def mean32(q):
        return mean(q.double()).float()

    with pytest.raises(ValueError, match="seed must be below 2"):
        fastgeo.RBFPrecision.fit(z32, x32, mean32, seed=2**64, progress=False)
    with pytest.raises(ValueError, match="zeta = 1e-50 is 0 in torch.float32"):
        fastgeo.RBFPrecision.fit(z32, x32, mean32, zeta=1e-50, progress=False)
    for scale in (1e25, 1e-30):
        with pytest.raises(ValueError, match="bandwidth_scale"):
            fastgeo.RBFPrecision.fit(z32, x32, mean32, bandwidth_scale=scale, progress=False)
    with pytest.raises(TypeError, match=r"did you mean 'num_centers'\?") as info:
        fastgeo.RBFPrecision.fit(z32, x32, mean32, num_center=3)
    with pytest.raises(TypeError) as info:
        fastgeo.RBFPrecision.fit(z32, x32, mean32, latent=3)
    assert "latents" not in str(info.value)  # a suggestion is an option, not an argument


def test_fit_names_every_option_with_its_default():
    import inspect

    doc = " ".join(fastgeo.RBFPrecision.fit.__doc__.split())
    for name, p in inspect.signature(rbf_fit.fit_rbf_parameters).parameters.items():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            none = {"num_centers": "min(64, M)", "progress": "a bar once it runs 10 s"}
            default = none[name] if p.default is None else repr(p.default)
            assert f"``{name}`` ({default}" in doc, name


def test_a_quick_fit_draws_no_bar_unless_asked(capsys):
    """Its bar showed at once for a fit of under a second, where every other call's bar waits
    10 s (README: "a progress bar once a call runs 10 s")."""
    pytest.importorskip("tqdm")
    z, x, mean = _problem()
    fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=20)
    assert "fit RBF precision" not in capsys.readouterr().err
    fastgeo.RBFPrecision.fit(z, x, mean, num_centers=8, steps=20, progress=True)
    assert "fit RBF precision" in capsys.readouterr().err
