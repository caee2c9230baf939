"""torch's default device does not reach the library's own tensors: a CPU metric gives the same
results under ``torch.set_default_device`` (or a ``torch.device`` context) as without. A user who
sets a CUDA default and keeps a metric on the CPU, or whose metric is on CUDA while the library
draws its fixed random points with a CPU generator, would otherwise get device errors. Tested
with the ``meta`` device, which holds no data: any tensor the library made without a device fails
at once when it meets the metric's."""

from pathlib import Path

import pytest
import torch

import fastgeo

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def digits() -> fastgeo.ExpectedMetric:
    return fastgeo.load_generator(DATA / "digits.safetensors")


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    return 0.5 * torch.randn(5, 2, generator=torch.Generator().manual_seed(3))


def _under_meta(fn):
    with torch.device("meta"):
        return fn()


def test_geodesics_and_the_dense_oracle(digits, codes, one_thread):
    for method in ("default", "fast", "paper"):
        kw = {"method": method, "progress": False}
        base = fastgeo.geodesics(digits, codes[:2], codes[2:4], **kw)
        res = _under_meta(lambda kw=kw: fastgeo.geodesics(digits, codes[:2], codes[2:4], **kw))
        assert res.lengths.device.type == "cpu"
        torch.testing.assert_close(res.lengths, base.lengths, rtol=0, atol=0)
        assert list(res.status) == list(base.status)
    m64 = digits.to(torch.float64)
    z0, z1 = codes[:1].double(), codes[3:4].double()
    base = fastgeo.geodesics(m64, z0, z1, method="dense", n_points=24, progress=False)
    res = _under_meta(lambda: fastgeo.geodesics(m64, z0, z1, method="dense", n_points=24, progress=False))
    torch.testing.assert_close(res.lengths, base.lengths, rtol=0, atol=0)


@pytest.mark.parametrize(
    "options",
    [{}, {"mode": "graph"}, {"mode": "draft"}, {"workers": 2}],
    ids=["exact", "graph", "draft", "two-workers"],
)
def test_pairwise_distances(digits, codes, options, one_thread):
    base = fastgeo.pairwise_distances(digits, codes, progress=False, **options)
    res = _under_meta(lambda: fastgeo.pairwise_distances(digits, codes, progress=False, **options))
    assert res.device.type == "cpu"
    torch.testing.assert_close(res, base, rtol=0, atol=0)


def test_checkpoints_neighbours_and_high_d(digits, codes, tmp_path, one_thread):
    base = fastgeo.pairwise_distances(digits, codes, progress=False)
    res = _under_meta(
        lambda: fastgeo.pairwise_distances(digits, codes, checkpoint=tmp_path / "ck", progress=False)
    )
    torch.testing.assert_close(res, base, rtol=0, atol=0)
    nn = _under_meta(lambda: fastgeo.nearest_neighbors(digits, codes, k=2, progress=False))
    assert torch.equal(nn.indices, fastgeo.nearest_neighbors(digits, codes, k=2, progress=False).indices)
    # d >= 4: the latent graph's random nodes, its corridors, subdivision (fixed CPU draws)
    mlp = fastgeo.load_generator(DATA / "mlp12_small.safetensors")
    z = mlp.precision.centers[:3].detach().clone()
    base = fastgeo.geodesics(mlp, z[:1], z[2:], progress=False)
    res = _under_meta(lambda: fastgeo.geodesics(mlp, z[:1], z[2:], progress=False))
    torch.testing.assert_close(res.lengths, base.lengths, rtol=0, atol=0)


def test_files_and_fits(digits, tmp_path):
    path = tmp_path / "g.safetensors"
    _under_meta(lambda: fastgeo.save_generator(path, digits))
    loaded = _under_meta(lambda: fastgeo.load_generator(path))
    assert loaded.precision.centers.device.type == "cpu"
    z = 0.5 * torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.features(z), digits.features(z), rtol=0, atol=0)
    dec = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5))
    latents = torch.randn(120, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        data = dec(latents) + 0.1 * torch.randn(120, 5, generator=torch.Generator().manual_seed(2))
    base = fastgeo.RBFPrecision.fit(latents, data, dec, progress=False)
    fit = _under_meta(lambda: fastgeo.RBFPrecision.fit(latents, data, dec, progress=False))
    torch.testing.assert_close(fit.centers, base.centers, rtol=0, atol=0)
    metric = _under_meta(lambda: fastgeo.ExpectedMetric(dec, fit))
    assert metric.probe(2).device.type == "cpu"
