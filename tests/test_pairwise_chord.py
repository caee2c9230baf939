"""pairwise_distances(mode="chord") (issue 18): every entry its feature-space chord times a ratio
fitted to the error sample; the fit and its leave-one-out error against plain least squares, the
covariates against the metric's own features and metric tensors, the sampled entries exact,
Z x Y, refused options, the command line, and the estimates' error on a trained decoder."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from analytic import bumpy_metric

import fastgeo
from fastgeo.pairwise.chord_mode import (
    MARGIN,
    MIN_SAMPLE,
    ChordFit,
    _fill,
    block_covariates,
    code_data,
    covariates,
    fit_ratio,
    pair_covariates,
)
from fastgeo.pairwise.error_sample import draw_sample
from fastgeo.solver.result import CHORD_ESTIMATE, CONVERGED, STATUSES

DATA = Path(__file__).parent / "data"
M = 9


@pytest.fixture(scope="module")
def metric():
    return bumpy_metric(d=4)


@pytest.fixture(scope="module")
def Z():
    return torch.randn(M, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.fixture(scope="module")
def chord_run(metric, Z):
    return fastgeo.pairwise_distances(
        metric, Z, mode="chord", error_sample=24, progress=False, return_report=True
    )


def _pieces(metric, Z):
    """Features, metric tensors, codes and graphs of ``Z``, as the chord mode holds them."""
    return code_data(metric, Z)


def _shortest(W):
    """All-pairs shortest paths (Floyd-Warshall) of a complete graph with edge weights W (n, n)."""
    D = W.clone().fill_diagonal_(0)
    for k in range(D.shape[0]):
        D = torch.minimum(D, D[:, k : k + 1] + D[k : k + 1])
    return D


def test_fit_recovers_an_exact_log_linear_ratio():
    """Lengths that are exactly chord * exp(w . [1, x]): the fit finds w, and every leave-one-out
    ratio is the true ratio (at least 1, as every estimate); with fewer than MIN_SAMPLE pairs only
    the mean log-ratio is fitted."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64).repeat(2, 1)  # in the others' range
    w = torch.tensor([0.3, 0.5, -0.2, 0.1, 0.2, -0.1], dtype=torch.float64)
    chord = torch.rand(40, generator=g, dtype=torch.float64) + 0.5
    ratio = (w[0] + x @ w[1:]).exp()
    fit, loo = fit_ratio(x, chord * ratio, chord)
    assert torch.allclose(fit.weights, w, atol=1e-10)
    assert torch.allclose(loo, ratio.clamp(min=1), rtol=1e-10) and (ratio < 1).any()
    few, loo_few = fit_ratio(x[: MIN_SAMPLE - 1], (chord * ratio)[: MIN_SAMPLE - 1], chord[: MIN_SAMPLE - 1])
    assert (few.weights[1:] == 0).all()
    logs = ratio[: MIN_SAMPLE - 1].log()
    assert torch.isclose(few.weights[0], logs.mean(), atol=1e-12)


def test_leave_one_out_is_the_fit_without_the_pair():
    """The leave-one-out ratios equal a least-squares fit on the other pairs, predicted at the pair
    left out with its covariates clamped to the others' range (widened by MARGIN); a zero length
    is left out of the fit (NaN ratio); a path covariate that is inf (ends the graphs do not
    join) counts as the sample's largest."""
    g = torch.Generator().manual_seed(1)
    n = 30
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x[11, 0] = 9.0  # far beyond the others: clamped
    x[20, 4] = torch.inf
    chord = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    lengths = chord * (0.2 + 0.3 * x[:, 0] + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)).exp()
    lengths[4] = 0.0
    _, loo = fit_ratio(x, lengths, chord)
    assert torch.isnan(loo[4]) and torch.isfinite(loo[20])
    x[20, 4] = x[:, 4][torch.isfinite(x[:, 4])].max()
    X = torch.cat([torch.ones(n, 1, dtype=torch.float64), x], 1)
    y = (lengths / chord).log()
    for k in (0, 7, 11, 20, 29):
        keep = torch.ones(n, dtype=torch.bool)
        keep[[k, 4]] = False
        w = torch.linalg.lstsq(X[keep], y[keep, None]).solution[:, 0]
        lo, hi = x[keep].min(0).values, x[keep].max(0).values
        xk = torch.maximum(torch.minimum(x[k], hi + MARGIN * (hi - lo)), lo - MARGIN * (hi - lo))
        assert (k != 11) or xk[0] < 9.0
        assert torch.isclose(loo[k], (w[0] + xk @ w[1:]).clamp(min=0).exp(), rtol=1e-9)


def test_pairs_without_a_leave_one_out_estimate_are_counted():
    """A sampled pair alone fixing a coefficient has no leave-one-out estimate (NaN): the error is
    measured on the others and says how many were left out (they were dropped without a word)."""
    from fastgeo.pairwise.chord_mode import _loo_error

    exact = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    error = _loo_error(torch.tensor([1.1, float("nan"), 3.0, 4.4], dtype=torch.float64), exact)
    assert error.pairs == 3 and error.unmeasured == 1
    assert "(1 sampled pairs without an estimate to compare)" in str(error)
    assert _loo_error(exact, exact).unmeasured == 0


def test_ratio_is_clamped():
    """Covariates beyond the sample's range are clamped to it; the ratio is never below 1 (the
    chord is a lower bound)."""
    weights = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.5], dtype=torch.float64)
    fit = ChordFit(weights, torch.full((5,), -1.0).double(), torch.full((5,), 2.0).double())
    x = torch.tensor([[5.0, 0, 0, 0, 0], [-5.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0], [0, 0, 0, 0, torch.inf]],
                     dtype=torch.float64)  # fmt: skip
    assert torch.allclose(fit.ratio(x), torch.tensor([2.0, 0.0, 1.0, 1.0], dtype=torch.float64).exp())


def test_covariates_are_the_metrics_own(metric, Z):
    """The chord is the distance of the metric's features; a0, a1 are the straight segment's
    length under the metric tensor frozen at either end; the paths are shortest paths over the
    edges chord (feature graph) and max(chord, sqrt(a0 a1)) (latent graph; with 9 codes both
    graphs join every pair); blocks give the pair lists' values."""
    codes = _pieces(metric, Z)
    a, b = torch.tensor([0, 3, 5, 8]), torch.tensor([1, 2, 7, 0])
    chord, x = pair_covariates(codes, a, b)
    feats = metric.features(Z)
    assert torch.allclose(chord, (feats[a] - feats[b]).norm(dim=1), rtol=1e-12)
    v = Z[b] - Z[a]
    Ga, Gb = metric.metric_tensor(Z[a]), metric.metric_tensor(Z[b])
    a0 = torch.einsum("bi,bij,bj->b", v, Ga, v).sqrt()
    a1 = torch.einsum("bi,bij,bj->b", v, Gb, v).sqrt()
    feats = feats.double()
    C = torch.cdist(feats, feats)
    V = Z[None] - Z[:, None]
    Q = torch.einsum("abi,aij,abj->ab", V, metric.metric_tensor(Z), V)
    paths = torch.stack([_shortest(C), _shortest(torch.maximum(C, (Q * Q.T).sqrt().sqrt()))])
    assert torch.allclose(x, covariates(chord, a0, a1, v.norm(dim=1), paths[:, a, b]), rtol=1e-10)
    assert torch.allclose(x[:, 3], torch.zeros(4, dtype=torch.float64), atol=1e-12)  # Euclidean
    assert (x[:, 4] > 1e-3).any()
    bc, bx = block_covariates(codes, torch.arange(M), torch.arange(M))
    assert torch.allclose(bc[a, b], chord, rtol=1e-10) and torch.allclose(bx[a, b], x, rtol=1e-9)


def test_entries_are_the_fitted_chords(chord_run, metric, Z):
    """Unsampled entries: chord * the report's fitted ratio, status chord_estimate, at least the
    chord; sampled entries: the geodesic of the pair (its solver status), by ``method="fast"``
    where the call names none; symmetric, zero and converged diagonal; the report's error is the
    leave-one-out error of those sampled pairs."""
    D, rep = chord_run
    assert STATUSES[CHORD_ESTIMATE] == "chord_estimate"
    assert torch.equal(D, D.T) and (D.diagonal() == 0).all() and torch.isfinite(D).all()
    assert (rep.status_code.diagonal() == CONVERGED).all()
    i, j, _, _ = draw_sample(torch.arange(M), torch.arange(M), True, 24)
    assert len(i) == 24 and rep.n_converged + rep.n_failed == 24 and rep.chord_error.pairs == 24
    alone = fastgeo.geodesics(metric, Z[i], Z[j], method="fast", progress=False)
    assert torch.allclose(D[i, j], alone.lengths, rtol=1e-9) and rep.options["method"] == "fast"
    codes = _pieces(metric, Z)
    chord, x = block_covariates(codes, torch.arange(M), torch.arange(M))
    estimated = torch.triu(rep.status_code == CHORD_ESTIMATE, 1)
    assert int(estimated.sum()) == M * (M - 1) // 2 - 24
    assert torch.allclose(D[estimated], (chord * rep.chord_fit.ratio(x))[estimated], rtol=1e-9)
    assert (D[estimated] >= chord[estimated] * (1 - 1e-12)).all()
    chord_s, x_s = pair_covariates(codes, i, j)
    _, loo = fit_ratio(x_s, alone.lengths.double(), chord_s)
    err = loo * chord_s / alone.lengths - 1
    assert rep.chord_error.mean_abs == pytest.approx(float(err.abs().mean()), rel=1e-6)
    assert rep.chord_error.min == pytest.approx(float(err.min()), rel=1e-6, abs=1e-12)
    # The report names what the sample was solved as (it said "exact geodesics" of `fast` curves).
    text = str(rep)
    assert "fitted to 24 geodesics by method='fast'" in text
    assert "chord estimates over geodesics by method='fast' on 24 random pairs" in text


def test_z_by_y(metric, Z):
    """With Y: an (M, P) matrix, equal codes at distance 0, sampled entries solved by the method
    the call names."""
    Y = torch.cat([Z[:2], torch.randn(4, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)])
    D, rep = fastgeo.pairwise_distances(metric, Z[:5], Y, mode="chord", error_sample=20, progress=False,
                                        return_report=True, method="default")  # fmt: skip
    assert D.shape == (5, 6) and D[0, 0] == 0 and D[1, 1] == 0 and torch.isfinite(D).all()
    solved = rep.status_code != CHORD_ESTIMATE
    i, j = solved.nonzero().T
    i, j = i[(i != j) | (j > 1)], j[(i != j) | (j > 1)]
    alone = fastgeo.geodesics(metric, Z[i], Y[j], progress=False)
    # 20 pairs of codes; Y holds Z[0] and Z[1], so the pair {Z[0], Z[1]} fills (0, 1) and (1, 0)
    assert len(i) == 21 and torch.allclose(D[i, j], alone.lengths, rtol=1e-9)
    assert D[0, 1] == D[1, 0]


def test_refused_options(metric, Z, tmp_path):
    """A sample too small to fit, a checkpoint, the graph's options: refused before any work."""
    with pytest.raises(ValueError, match="error_sample=5.*at least 20"):
        fastgeo.pairwise_distances(metric, Z, mode="chord", error_sample=5, progress=False)
    with pytest.raises(ValueError, match="checkpoint"):
        fastgeo.pairwise_distances(metric, Z, mode="chord", checkpoint=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="neighbors"):
        fastgeo.pairwise_distances(metric, Z, mode="chord", neighbors=3, progress=False)


def test_close_on_a_trained_decoder():
    """mlp12_small (a trained d = 12 MLP VAE): 60 training codes, 40 pairs fitted; on 12 other
    pairs solved by geodesics the estimates are within 15 % (3.6 % on average on 500 codes and 40
    held-out pairs, bench/RESULTS.md), and closer than the chord (a lower bound) alone."""
    path = DATA / "mlp12_small.safetensors"
    metric = fastgeo.load_generator(path)
    Z = fastgeo.load_extra(path)["latents"][:60]
    D, rep = fastgeo.pairwise_distances(metric, Z, mode="chord", error_sample=40, progress=False,
                                        return_report=True)  # fmt: skip
    assert rep.chord_error.pairs == 40 and rep.chord_error.mean_abs < 0.1
    est = torch.triu(rep.status_code == CHORD_ESTIMATE, 1).nonzero()[::150][:12]
    i, j = est.T
    exact = fastgeo.geodesics(metric, Z[i], Z[j], progress=False).lengths.double()
    err = D[i, j].double() / exact - 1
    with torch.no_grad():
        feats = metric.features(Z).double()
    chord_err = (feats[i] - feats[j]).norm(dim=1) / exact - 1
    assert err.abs().max() < 0.15, err
    assert err.abs().mean() < chord_err.abs().mean() / 2, (err, chord_err)


def test_command_line(capsys, tmp_path):
    """--mode chord writes the API's matrix and prints its error; --error-sample below 20 is
    refused before any work, naming the option."""
    from analytic import saved_generator_and_codes

    from fastgeo.cli import main

    gen = saved_generator_and_codes(tmp_path, 8)
    argv = ["distances", str(gen), str(tmp_path / "Z.npy"), "-o", str(tmp_path / "D.npy"), "--mode", "chord",
            "--no-progress", "--max-iter", "5"]  # fmt: skip
    assert main([*argv, "--error-sample", "20"]) == 0
    err = capsys.readouterr().err
    Z = torch.from_numpy(np.load(tmp_path / "Z.npy"))
    D = fastgeo.pairwise_distances(fastgeo.load_generator(gen), Z, mode="chord", error_sample=20, max_iter=5,
                                   progress=False)  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "D.npy"), D.numpy()) and "chord estimates" in err
    assert main([*argv, "--error-sample", "5"]) == 2
    assert "--error-sample" in capsys.readouterr().err


def test_codes_where_the_decoder_is_not_finite(metric, Z):
    """A decoder that is inf at one code: the matrix refuses the code before any work, naming it
    (as in every mode); estimates with such a code would be inf, never NaN."""

    def mean(z):
        out = metric.mean(z)
        return torch.where(z[..., :1] > 5, torch.full_like(out, torch.inf), out)

    broken = fastgeo.ExpectedMetric(mean, metric.precision)
    Zb = Z.clone()
    Zb[0, 0] = 10.0
    with pytest.raises(ValueError, match=r"not finite at 1 code\(s\), e\.g\. Z\[0\] = \[10\.0"):
        fastgeo.pairwise_distances(broken, Zb, mode="chord", error_sample=24, progress=False)
    codes = _pieces(broken, Zb)
    assert not torch.isfinite(codes.F[0]).all()
    fit = ChordFit(torch.tensor([0.1, 0.2, 0.0, 0.0, 0.1, 0.1], dtype=torch.float64),
                   torch.full((5,), -9.0).double(), torch.full((5,), 9.0).double())  # fmt: skip
    out = torch.zeros(M, M, dtype=torch.float64)
    status = torch.full((M, M), CHORD_ESTIMATE, dtype=torch.int8)
    assert _fill(fit, codes, torch.arange(M), torch.arange(M), True, out, status, False) == M - 1
    assert not torch.isnan(out).any() and torch.isinf(out[0, 1:]).all() and torch.isfinite(out[1:, 1:]).all()


def test_a_sample_near_every_pair_has_the_size_asked():
    """Asked for nearly every pair, the sample is drawn without replacement: as many distinct
    pairs as asked (a draw with replacement left 765 of 779)."""
    for R, asked in ((40, 779), (30, 434), (12, 40)):
        i, j, _, _ = draw_sample(torch.arange(R), torch.arange(R), True, asked)
        assert i.numel() == asked and bool((i < j).all())
        assert torch.unique(i * R + j).numel() == asked


def test_no_estimate_warning_where_every_pair_was_sampled():
    """With every pair in the error sample the matrix holds no estimate: no warning about the
    estimates' error (on the 2-D digits VAE, 7 codes: ~40 % off, and every entry exact)."""
    path = DATA / "digits.safetensors"
    digits, codes = fastgeo.load_generator(path), fastgeo.load_extra(path)["latents"][:7]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        D, rep = fastgeo.pairwise_distances(
            digits, codes, mode="chord", error_sample=21, progress=False, return_report=True, workers=1
        )
    assert rep.chord_error.mean_abs > 0.05  # the estimates were far off: the old code warned
    assert not bool((rep.status_code == CHORD_ESTIMATE).any())
    assert not rep.estimates_left and "no estimate is left in the matrix" in str(rep)


@pytest.mark.parametrize("mode", ["graph", "draft"])
def test_no_estimate_warning_in_the_upper_bound_modes_where_every_pair_was_sampled(mode):
    """Graph and draft modes with every pair sampled: ties (the exact length within 1e-4 of the
    estimate) kept the estimate's status, so the report warned "25 % above exact ... use
    mode='exact'" of a matrix equal to the exact mode's."""
    path = DATA / "digits.safetensors"
    digits = fastgeo.load_generator(path)
    codes = fastgeo.load_extra(path)["latents"][
        torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:8]
    ]
    kw = {"neighbors": 1} if mode == "graph" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        D, rep = fastgeo.pairwise_distances(
            digits, codes, mode=mode, progress=False, return_report=True, workers=1, **kw
        )
    error = rep.graph_error if mode == "graph" else rep.draft_error
    assert error.every_pair and error.pairs == 28 and "every pair" in str(rep)
    exact = fastgeo.pairwise_distances(digits, codes, progress=False, workers=1, chains=False)
    torch.testing.assert_close(D, exact, rtol=2e-4, atol=0)


def test_an_error_line_shows_estimates_below_the_distance():
    """A mean above with some estimates far below read as one-sided (min left out)."""
    from fastgeo.pairwise.error_sample import estimate_error

    text = str(estimate_error(torch.tensor([0.10] * 9 + [-0.30], dtype=torch.float64), "chord estimates"))
    assert "min -30.000 %" in text
    assert "min" not in str(estimate_error(torch.tensor([0.1, 0.2, -1e-6], dtype=torch.float64), "draft"))


@pytest.mark.parametrize("mode", ["graph", "chord", "draft"])
def test_reports_of_no_pair_name_their_mode(metric, mode):
    """With no pair (0 or 1 code) the approximate modes' reports are theirs (the graph and chord
    modes printed the exact mode's "0 geodesics, 0 converged"), and say that nothing was sampled."""
    d = metric.latent_dim
    for Z in (torch.zeros(0, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64)):
        D, rep = fastgeo.pairwise_distances(metric, Z, mode=mode, progress=False, return_report=True)
        assert D.shape == (Z.shape[0],) * 2 and rep.n_pairs == 0 and not rep.estimates_left
        text = str(rep)
        assert "geodesics, 0 converged" not in text and "no pair sampled" in text
        assert "no estimate is left" not in text  # nothing to say of an empty matrix
