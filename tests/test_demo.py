import sys

import pytest
import torch

import fastgeo

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fastgeo import plot as fplot  # noqa: E402
from fastgeo.demo import run_demo  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


def _metric():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(6, 2, generator=g, dtype=torch.float64)
    prec = fastgeo.RBFPrecision(centers, torch.full((6,), 2.0, dtype=torch.float64),
                                torch.rand(3, 6, generator=g, dtype=torch.float64) * 100, 1e-2)
    lin = torch.randn(2, 3, generator=g, dtype=torch.float64)
    return fastgeo.ExpectedMetric(lambda z: torch.tanh(z @ lin), prec), centers


def test_demo_quick_end_to_end(tmp_path, capsys):
    out = run_demo(out_dir=str(tmp_path / "demo"), seed=0, quick=True, progress=False)
    png = tmp_path / "demo" / "two_moons.png"
    assert out["figure"] == str(png)
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    image = plt.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    # The generator file rebuilds a metric that agrees with the one the demo used.
    metric = fastgeo.load_generator(out["generator"])
    z = out["latents"][:5]
    with torch.no_grad():
        assert torch.allclose(metric.mean(z), out["metric"].mean(z), atol=1e-6)
        assert torch.allclose(metric.precision(z), out["metric"].precision(z))
    rows = out["rows"]
    assert len(rows) == len(out["result"]) >= 2
    for r in rows:
        assert 0 < r["geodesic"] <= r["straight"] * (1 + 1e-5)
        assert r["ratio"] == pytest.approx(r["geodesic"] / r["straight"])
    printed = capsys.readouterr().out
    assert "geodesic" in printed and "straight" in printed and f"{rows[0]['geodesic']:.3f}" in printed


def test_demo_restores_thread_count(tmp_path):
    torch.set_num_threads(2)
    before = torch.get_num_threads()
    run_demo(out_dir=str(tmp_path), seed=1, quick=True, progress=False)
    assert torch.get_num_threads() == before


def test_plot_functions_produce_figures():
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


def test_background_values_match_the_metric():
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


def test_clear_error_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    metric, centers = _metric()
    with pytest.raises(ImportError, match=r"pip install 'fastgeo\[plot\]'"):
        fplot.plot_latents(None, centers)
    res = fastgeo.geodesics(metric, centers[:1], centers[1:2], max_iter=1)
    with pytest.raises(ImportError, match="matplotlib"):
        fplot.plot_geodesics(metric, res)
