"""The two-moons demo end to end, run once and shared by the tests that read its outputs (figure,
generator file, length table, thread count), and the plot functions on a small metric."""

import contextlib
import io
import sys
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from helpers import randn, rbf_params

import fastgeo

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastgeo import plot as fplot  # noqa: E402
from fastgeo.benchmarks.accuracy import length_gaps  # noqa: E402
from fastgeo.datasets import two_moons  # noqa: E402
from fastgeo.demo import run_demo  # noqa: E402
from fastgeo.demo.run import (  # noqa: E402
    N_POINTS,
    NOISE,
    PAIRS,
    QUICK_PAIRS,
    _anchor_indices,
    draw_figure,
    format_table,
)
from fastgeo.solver.result import STATUSES  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEMO_THREADS = 2  # the demo runs on one thread: started with two, it must give two back


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One quick demo run (seed 0) started with DEMO_THREADS intra-op threads and pyplot on the
    "pdf" backend: its return value, output folder, printed text, and the thread count, backend
    and open pyplot figures right after it (the caller's settings are restored afterwards
    whatever happens)."""
    out_dir = tmp_path_factory.mktemp("demo") / "demo"
    threads = torch.get_num_threads()
    printed = io.StringIO()
    torch.set_num_threads(DEMO_THREADS)
    plt.switch_backend("pdf")
    rng_before = torch.get_rng_state()
    solved = fastgeo.demo.run.geodesics
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return solved(*args, **kwargs)

    fastgeo.demo.run.geodesics = spy
    try:
        with contextlib.redirect_stdout(printed):
            out = run_demo(out_dir=str(out_dir), seed=0, quick=True, progress=False)
        threads_after = torch.get_num_threads()
        backend_after, figures_after = matplotlib.get_backend(), plt.get_fignums()
        rng_kept = torch.equal(torch.get_rng_state(), rng_before)
    finally:
        fastgeo.demo.run.geodesics = solved
        torch.set_num_threads(threads)
        plt.switch_backend("Agg")
    return {
        "out": out, "dir": out_dir, "printed": printed.getvalue(), "threads_after": threads_after,
        "backend_after": backend_after, "figures_after": figures_after, "rng_kept": rng_kept,
        "geodesics_calls": calls,
    }  # fmt: skip


def test_demo_leaves_pyplot_alone(demo):
    """A notebook's backend and figures survive the demo: it draws on a Figure of its own."""
    assert demo["backend_after"].lower() == "pdf"
    assert demo["figures_after"] == []


def _metric():
    """A small metric (d = 2, D = 3): 6 RBF centers with gamma 2, weights in [0, 100), zeta 1e-2,
    and a tanh decoder mean; and the centers."""
    params = rbf_params(6, 2, 3, gammas=(2.0, 2.0), weights=(0.0, 100.0), zeta=(1e-2, 1e-2))
    lin = randn(2, 3, seed=1)
    return fastgeo.ExpectedMetric(lambda z: torch.tanh(z @ lin), fastgeo.RBFPrecision(*params)), params[0]


def test_demo_writes_the_figure(demo):
    """The figure is a PNG of a reasonable size, at the path the demo returns, with both panels
    (the latent plane and the decoded curves), and small enough to ship in the docs."""
    png = demo["dir"] / "two_moons.png"
    assert demo["out"]["figure"] == str(png)
    assert png.is_file() and png.read_bytes()[:8] == PNG_SIGNATURE
    assert png.stat().st_size < 300_000
    image = plt.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 1.5 * image.shape[0]


def test_demo_figure_draws_every_curve():
    """draw_figure puts every geodesic and its straight line on both panels, with the colorbar of
    the background; the demo's PNG is saved with a palette and reads back as an RGB(A) image."""
    metric, centers = _metric()
    res = fastgeo.geodesics(metric, centers[:2], centers[2:4], max_iter=5)
    pairs = [("a", "b", "along"), ("c", "d", "across")]
    ends = dict(zip("abcd", centers[:4], strict=True))
    planar = torch.cat([centers, centers + 0.1])
    labels = torch.arange(12) % 2
    projection = torch.eye(3, 2, dtype=torch.float64).numpy()  # the mean's first two coordinates
    fig = draw_figure(metric, res, pairs, planar, labels, ends, planar, projection, quick=True)
    latent, decoded = fig.axes[:2]
    for ax in (latent, decoded):
        assert len(ax.lines) >= 2 * len(pairs)  # straight lines, geodesics (+ end point markers)
    assert len(latent.images) == 1 and len(fig.axes) == 3  # the background and its colorbar
    plt.close(fig)


def test_demo_reports_a_status_per_curve(demo):
    """Every curve of the quick demo has a status from the solver's list, the rows carry it (and
    converged agrees with it), and the printed table shows it."""
    res, rows = demo["out"]["result"], demo["out"]["rows"]
    assert len(res.status) == len(rows) == len(QUICK_PAIRS)
    for r, status in zip(rows, res.status, strict=True):
        assert r["status"] == status and status in STATUSES
        assert r["converged"] == (status == "converged")
        assert r["status"] in demo["printed"]
    assert "status" in demo["printed"]


def test_demo_table_format():
    """format_table: a header, a rule and one line per row with its lengths, ratio and status."""
    row = {
        "from": "U-left",
        "to": "L-right",
        "kind": "across",
        "geodesic": 7.5,
        "straight": 435.0,
        "ratio": 7.5 / 435.0,
        "status": "under_resolved",
        "converged": False,
    }
    lines = format_table([row]).splitlines()
    assert len(lines) == 3 and lines[0].split()[-1] == "status"
    assert lines[2].split() == ["U-left", "L-right", "across", "7.500", "435.000", "0.017", "under_resolved"]


def test_demo_generator_file_rebuilds_its_metric(demo):
    """The saved generator file (``generator.safetensors``) rebuilds a metric that agrees with the
    one the demo used."""
    out = demo["out"]
    assert out["generator"] == str(demo["dir"] / "generator.safetensors")
    metric = fastgeo.load_generator(out["generator"])
    z = out["latents"][:5]
    with torch.no_grad():
        torch.testing.assert_close(metric.mean(z), out["metric"].mean(z), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(metric.precision(z), out["metric"].precision(z), rtol=1e-5, atol=1e-8)


def test_demo_table_of_lengths(demo):
    """One row per geodesic; each no longer than its straight line, with the ratio of the two;
    the printed table shows them."""
    rows = demo["out"]["rows"]
    assert len(rows) == len(demo["out"]["result"]) >= 2
    for r in rows:
        assert 0 < r["geodesic"] <= r["straight"] * (1 + 1e-5)
        assert r["ratio"] == pytest.approx(r["geodesic"] / r["straight"])
    printed = demo["printed"]
    assert "geodesic" in printed and "straight" in printed and f"{rows[0]['geodesic']:.3f}" in printed


def test_demo_lengths_are_the_curves_own(demo):
    """Every length the demo reports is within 0.1 % of its curve's length on 4096 points (float64),
    on its own pairs and on all eight pairs of the full demo (the same anchors on the moons), solved
    on the quick demo's generator."""
    out = demo["out"]
    metric64 = out["metric"].to(torch.float64)
    rel = length_gaps(metric64, out["result"])
    assert float(rel.abs().max()) < 1e-3, rel.tolist()
    assert [r["geodesic"] for r in out["rows"]] == out["result"].lengths.tolist()

    planar, labels = two_moons(N_POINTS, NOISE, 0, dtype=torch.float64)  # the demo's data, seed 0
    assert torch.equal(labels, out["labels"])
    idx = _anchor_indices(planar, labels)
    Z = out["latents"]
    i0 = torch.tensor([idx[a] for a, _, _ in PAIRS])
    i1 = torch.tensor([idx[b] for _, b, _ in PAIRS])
    with torch.no_grad():
        res = fastgeo.geodesics(out["metric"], Z[i0], Z[i1])
    rel = length_gaps(metric64, res)
    assert float(rel.abs().max()) < 1e-3, list(zip(rel.tolist(), res.status, strict=True))


@pytest.mark.slow  # ~12 s: the full demo trains its VAE; the test above covers its pairs on a quick one
def test_full_demo_lengths_are_the_curves_own(tmp_path):
    """The full demo (seed 0): its eight reported lengths are within 0.1 % of their curves'
    lengths on 4096 points (float64); among them are curves re-solved at more points."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = run_demo(out_dir=str(tmp_path / "demo"), seed=0, progress=False)
    res = out["result"]
    assert len(res) == len(PAIRS)
    rel = length_gaps(out["metric"].to(torch.float64), res)
    assert float(rel.abs().max()) < 1e-3, list(zip(rel.tolist(), res.status, strict=True))


def test_demo_leaves_torchs_global_rng_and_passes_progress_on(demo):
    """The demo seeds its own generators (the caller's random stream is theirs), and
    ``progress=False`` reaches the solver (no bar on a slow machine either)."""
    assert demo["rng_kept"]
    assert demo["geodesics_calls"] and all(kw.get("progress") is False for kw in demo["geodesics_calls"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -3}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": None}, "seed"),
        ({"seed": 1 << 64}, "seed"), ({"quick": "yes"}, "quick"), ({"progress": 1}, "progress"),
    ],
)  # fmt: skip
def test_demo_arguments_are_checked_before_its_folder_is_made(tmp_path, kwargs, match):
    out_dir = tmp_path / "never"
    with pytest.raises((ValueError, TypeError), match=match):
        run_demo(out_dir=str(out_dir), **{"quick": True, "progress": False, **kwargs})
    assert not out_dir.exists()
    with pytest.raises(ValueError, match="out_dir"):
        run_demo(out_dir="", quick=True, progress=False)


def test_demos_vae_training_checks_its_arguments_and_keeps_the_global_rng():
    from fastgeo.demo.vae import train_vae

    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    bad = [({"steps": -5}, "steps"), ({"latent_dim": 0}, "latent_dim"), ({"hidden": 0}, "hidden")]
    for kwargs, match in bad:
        with pytest.raises((ValueError, TypeError), match=match):
            train_vae(x, progress=False, **kwargs)
    with pytest.raises(ValueError, match="x must"):
        train_vae(x[:0], progress=False)
    torch.manual_seed(7)
    train_vae(x, steps=3, progress=False)
    after = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))


def test_demo_restores_thread_count(demo):
    """The demo sets one intra-op thread while it runs and gives the caller's count back."""
    assert demo["threads_after"] == DEMO_THREADS


def test_plot_functions_produce_figures():
    """plot_geodesics draws the background and, per pair, a straight line and a geodesic;
    plot_background, plot_latents and plot_curves draw on a given axis."""
    metric, centers = _metric()
    res = fastgeo.geodesics(metric, centers[:2], centers[2:4], max_iter=5)
    fig = fplot.plot_geodesics(metric, res, latents=centers, labels=torch.arange(6) % 2, resolution=20)
    assert isinstance(fig, matplotlib.figure.Figure)
    ax = fig.axes[0]
    assert len(ax.images) == 1 and len(ax.lines) == 4  # 2 straight + 2 geodesics
    plt.close(fig)

    fig, ax = plt.subplots()
    image = fplot.plot_background(ax, metric, (-2, 2, -2, 2), kind="magnification", resolution=12)
    assert image.get_array().shape == (12, 12)
    fplot.plot_background(ax, metric.precision, (-2, 2, -2, 2), resolution=12, colorbar=False)
    fplot.plot_latents(ax, centers)
    lines = fplot.plot_curves(ax, res.points(10), color="r")
    assert len(lines) == 2
    plt.close(fig)
    # numpy codes are drawn; codes of another width, and an empty result with nothing to frame, named
    fig = fplot.plot_geodesics(metric, res, latents=centers.numpy(), resolution=12)
    plt.close(fig)
    with pytest.raises(ValueError, match=r"latents must have shape \(M, 2\)"):
        fplot.plot_geodesics(metric, res, latents=torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no curve"):
        fplot.plot_geodesics(metric, res.select([]))
    # an empty result framed by its codes draws no legend (matplotlib warned of one with no entry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plt.close(fplot.plot_geodesics(metric, res.select([]), latents=centers, resolution=8))
    with pytest.raises(ValueError, match="pass latents too"):
        fplot.plot_geodesics(metric, res, labels=torch.arange(6) % 2)
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"Z must have shape \(M, 2\)"):
        fplot.plot_latents(ax, torch.zeros(5, 4))
    with pytest.raises(ValueError, match=r"labels must have shape \(M,\)"):
        fplot.plot_latents(ax, centers, labels=torch.arange(3))
    plt.close(fig)


def test_background_values_match_the_metric():
    """background_values at a grid point is log10 of the magnification sqrt(det M), or of the total
    precision, there; a precision has no magnification and unknown kinds are refused."""
    metric, _ = _metric()
    v = fplot.background_values(metric, (-1, 1, -1, 1), kind="magnification", resolution=3)
    M = metric.metric_tensor(torch.tensor([[1.0, -1.0]], dtype=torch.float64))  # column 2, row 0
    assert v[0, 2] == pytest.approx(0.5 * torch.linalg.det(M).log10().item())
    p = fplot.background_values(metric.precision, (-1, 1, -1, 1), resolution=3)
    with torch.no_grad():
        expected = metric.precision.total_precision(torch.tensor([[-1.0, 1.0]], dtype=torch.float64))
    assert p[2, 0] == pytest.approx(expected.log10().item())
    with pytest.raises(TypeError, match="needs an ExpectedMetric"):
        fplot.background_values(metric.precision, (-1, 1, -1, 1), kind="magnification")
    with pytest.raises(ValueError, match="kind"):
        fplot.background_values(metric, (-1, 1, -1, 1), kind="nope")
    assert fplot.background_values(metric, (-1, 1, -1, 1), resolution=np.int64(3)).shape == (3, 3)


def test_clear_error_without_matplotlib(monkeypatch):
    """Without matplotlib the plot functions raise an ImportError naming the install command."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    metric, centers = _metric()
    with pytest.raises(ImportError, match=r"pip install 'fastgeo\[plot\]'"):
        fplot.plot_latents(None, centers)
    res = fastgeo.geodesics(metric, centers[:1], centers[1:2], max_iter=1)
    with pytest.raises(ImportError, match="matplotlib"):
        fplot.plot_geodesics(metric, res)
