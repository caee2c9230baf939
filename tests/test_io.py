"""Generator files (save_generator / load_generator) and the `fastgeo distances` command."""

import warnings

import numpy as np
import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo
from fastgeo.cli import main
from fastgeo.io import load_extra, load_generator, save_generator

OPTS = {"max_iter": 20}
pytestmark = pytest.mark.filterwarnings("ignore:fastgeo.pairwise_distances")


def module_metric(dtype=torch.float64):
    torch.manual_seed(0)
    mean = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 6), torch.nn.Sigmoid()
    ).to(dtype)
    return fastgeo.ExpectedMetric(mean, bumpy_metric(dtype).precision)


@pytest.mark.parametrize(
    "kind,fmt",
    [
        # ~10 s (torch.export of an nn.Module); exported modules are also saved, loaded and compared
        # in test_jacobian (saved_generator) and loaded in test_solver_accuracy.
        pytest.param("module", "export", marks=pytest.mark.slow),
        ("module", "safe"),
        ("module", "torchscript"),
        ("closure", "export"),
        ("closure", "torchscript"),
        ("method", "torchscript"),  # its module's parameters require grad: traced as parameters
    ],
)
def test_roundtrip_gives_same_metric(tmp_path, fmt, kind):
    """save_generator then load_generator gives an ExpectedMetric (float64) with the same RBF
    parameters, the same mean on any (..., d), and the same distance matrix (1e-9); code formats
    load only with trust=True."""
    metric = module_metric() if kind == "module" else bumpy_metric()  # bumpy: a plain function mean
    if kind == "method":
        metric = fastgeo.ExpectedMetric(_VAE().decode, metric.precision)
    path = save_generator(tmp_path / "gen.pt2", metric, format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # code formats load as trusted code
        loaded = load_generator(path, trust=fmt != "safe")
    assert isinstance(loaded, fastgeo.ExpectedMetric) and loaded.dtype == torch.float64
    for name, t in metric.precision.state_dict().items():
        assert torch.equal(loaded.precision.state_dict()[name], t)
    z = disc_points(10, 2.0).reshape(2, 5, 2)  # any (..., d)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z), rtol=1e-12, atol=1e-12)
    Z = disc_points(5, 1.5)
    D0 = fastgeo.pairwise_distances(metric, Z, progress=False, **OPTS)
    D1 = fastgeo.pairwise_distances(loaded, Z, progress=False, **OPTS)
    torch.testing.assert_close(D1, D0, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fmt", ["safe", "torchscript"])
def test_saving_and_loading_leave_the_global_random_stream_alone(tmp_path, fmt):
    """Rebuilding a stored decoder initializes layers that the file's weights overwrite: that
    must not draw from the caller's torch RNG (a script seeded once would change its results)."""
    metric = module_metric()
    torch.manual_seed(5)
    path = save_generator(tmp_path / "gen.pt2", metric, format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        load_generator(path, trust=fmt != "safe")
    drawn = torch.rand(4)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(4))


class _VAE(torch.nn.Module):
    """A VAE as users write them: its decoder a method, an encoder beside it."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(6, 4).double()
        layers = torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)
        self.decoder = torch.nn.Sequential(*layers).double()

    def decode(self, z):
        return torch.sigmoid(self.decoder(z))


def test_torchscript_of_a_method_beside_an_unused_lazy_module(tmp_path):
    """A VAE whose encoder is a lazy module never run (no weights): its decode method saves as
    TorchScript (the whole VAE was left out of the traced wrapper, and its weights then refused
    as constants that require grad)."""
    vae = _VAE()
    vae.encoder = torch.nn.LazyLinear(4)
    metric = fastgeo.ExpectedMetric(vae.decode, bumpy_metric().precision)
    path = save_generator(tmp_path / "g.pt2", metric, format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_generator(path, trust=True)
    z = disc_points(6, 1.0)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z), rtol=1e-12, atol=1e-12)


def test_torchscript_of_a_closure_over_a_tensor_that_requires_grad(tmp_path):
    """TorchScript refuses a closure's tensor that requires grad as a constant: a ValueError that
    says to pass format='export' (it was torch's RuntimeError)."""
    metric = module_metric()
    weight = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    mean = lambda z: metric.mean(z) @ weight  # noqa: E731
    with pytest.raises(ValueError, match="format='export'"):
        save_generator(tmp_path / "g.pt2", (mean, metric.precision), format="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_pair_and_example_input_float32(tmp_path):
    """A float32 (mean, precision) pair with an example input and extra tensors: loaded back float32
    with the same mean, and load_extra returns the extras."""
    metric = module_metric(torch.float32)
    Z, y = torch.randn(5, 2), torch.arange(5)
    path = save_generator(
        tmp_path / "g.pt",
        (metric.mean, metric.precision),
        example_input=torch.randn(3, 4, 2),
        extra={"latents": Z, "labels": y},
    )
    loaded = load_generator(path)
    extra = load_extra(path)
    assert torch.equal(extra["latents"], Z) and torch.equal(extra["labels"], y)
    assert loaded.dtype == torch.float32
    z = torch.randn(7, 2)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z))


def test_a_pair_with_an_image_mean_saves_as_its_metric_does(tmp_path):
    """(mean, precision) with a mean returning images (P, C, H, W) saves like the metric made of
    them (the mean flattened); a missing folder is named."""
    torch.manual_seed(0)
    nn = torch.nn
    dec = nn.Sequential(nn.Linear(2, 48), nn.Tanh(), nn.Unflatten(1, (3, 4, 4))).eval()
    prec = fastgeo.RBFPrecision(torch.randn(8, 2), torch.ones(8), torch.rand(48, 8), zeta=1e-2)
    loaded = load_generator(save_generator(tmp_path / "pair.safetensors", (dec, prec)))
    z = torch.randn(3, 5, 2)
    torch.testing.assert_close(loaded.length(z), fastgeo.ExpectedMetric(dec, prec).length(z))
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        save_generator(tmp_path / "nope" / "g.safetensors", (dec, prec))


def test_bad_files_and_inputs_refused(tmp_path):
    """A file that is not a generator, a mean without a precision, and an unknown format are
    refused."""
    bad = tmp_path / "x.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a fastgeo generator"):
        load_generator(bad)
    metric = module_metric()
    with pytest.raises(TypeError):
        save_generator(tmp_path / "g.pt2", metric.mean)
    with pytest.raises(ValueError, match="format"):
        save_generator(tmp_path / "g.pt2", metric, format="onnx")
    with pytest.raises(TypeError, match="path comes first"):
        save_generator(metric, tmp_path / "g.safetensors")
    with pytest.raises(TypeError, match="path comes first"):
        save_generator(metric, str(tmp_path / "g.safetensors"))


def test_cli_distances_equals_python_call(tmp_path, capsys):
    """`fastgeo distances` writes the matrix pairwise_distances gives (bit for bit), solves only
    distinct pairs, writes the per-pair report, and a rerun on its checkpoint writes the same file.
    """
    metric = module_metric()
    gen = save_generator(tmp_path / "gen.pt2", metric)
    Z = disc_points(6, 1.5)
    Z[4] = Z[1]
    np.save(tmp_path / "Z.npy", Z.numpy())
    out, ckpt = tmp_path / "D.npy", tmp_path / "ckpt"
    argv = [
        "distances",
        str(gen),
        str(tmp_path / "Z.npy"),
        "-o",
        str(out),
        "--checkpoint",
        str(ckpt),
        "--max-iter",
        "20",
        "--chunk-size",
        "4",
        "--no-progress",
        "--report",
        str(tmp_path / "r.npz"),
    ]
    assert main(argv) == 0
    D = fastgeo.pairwise_distances(load_generator(gen), Z, chunk_size=4, progress=False, **OPTS)
    assert np.array_equal(np.load(out), D.numpy())
    assert "10 geodesics" in capsys.readouterr().err  # distinct pairs: row 4 repeats row 1
    assert np.load(tmp_path / "r.npz")["converged"].shape == (6, 6)
    assert main(argv) == 0  # resumed from the checkpoint: same file
    assert np.array_equal(np.load(out), D.numpy())


class _DropoutVAE(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.drop, self.l2 = torch.nn.Linear(2, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 6)

    def decode(self, z):
        return torch.sigmoid(self.l2(self.drop(torch.tanh(self.l1(z)))))


def test_save_names_a_decoder_set_to_training_mode(tmp_path):
    """A VAE whose decode method was in eval mode when its metric was made, in training mode since:
    the safe save says so (it said the decoder "has no structure fastgeo can store as data")."""
    torch.manual_seed(0)
    vae = _DropoutVAE().double().eval()
    metric = fastgeo.ExpectedMetric(vae.decode, bumpy_metric().precision)
    vae.train()
    with pytest.raises(ValueError, match=r"are in training mode now \(Dropout _DropoutVAE\.drop;"):
        save_generator(tmp_path / "g.safetensors", metric)
    assert list(tmp_path.iterdir()) == []
    vae.eval()
    save_generator(tmp_path / "g.safetensors", metric)


def test_convert_says_when_a_file_cannot_be_safe(tmp_path, capsys):
    """``fastgeo convert`` of a TorchScript file: one line saying what to do (it advised
    format='export', an option convert does not have, then called a chain of standard layers not
    one and said to pass the Python module, which a command cannot)."""
    path = save_generator(tmp_path / "g.pt2", module_metric(), format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["convert", str(path), str(tmp_path / "s.safetensors"), "--trust"]) == 2
    err = capsys.readouterr().err
    assert "TorchScript decoder's layers cannot be read back" in err and "save the generator again" in err
    assert "not a chain of standard layers" not in err and len(err.strip().splitlines()) == 1
    assert "format='export'" not in err
