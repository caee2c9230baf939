"""Generator files: the safe format (structure as data + safetensors) round-trips every standard
layer; crafted files run nothing unless trusted; code files need trust=True."""

import json
import os
import pickle
import sys
import zipfile

import pytest
import torch
from analytic import bumpy_metric, disc_points
from torch import nn

import fastgeo
from fastgeo.decoders.structure import LAYERS, build, describe, sequential_of
from fastgeo.io import load_extra, load_generator, save_generator

f64 = torch.float64


def conv_decoder(d: int = 3) -> nn.Sequential:
    """Every layer type of the structure table, in a decoder (P, d) -> (P, 3 * 8 * 8)."""
    return nn.Sequential(
        nn.Linear(d, 2 * 4 * 4), nn.ELU(), nn.Unflatten(1, (2, 4, 4)),
        nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(4), nn.SiLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.GroupNorm(2, 4), nn.Softplus(beta=2.0),
        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(4, 3, 3, stride=2, padding=1, bias=False),
        nn.LeakyReLU(0.1), nn.LayerNorm([8, 8]), nn.GELU(approximate="tanh"), nn.Hardtanh(-2.0, 2.0),
        nn.ReLU6(), nn.Tanh(), nn.ReLU(), nn.Identity(), nn.Flatten(), nn.Sigmoid(),
    )  # fmt: skip


def more_layers_decoder(d: int = 3) -> nn.Sequential:
    """The rest of the structure table (1-D convolutions, instance norms, padding, pixel shuffles,
    pooling, dropout, the other activations, softmax), in a decoder (P, d) -> (P, 3 * 3 * 3)."""
    return nn.Sequential(
        nn.Linear(d, 4 * 16), nn.Mish(), nn.Unflatten(1, (4, 16)), nn.Conv1d(4, 8, 3, padding=1),
        nn.InstanceNorm1d(8, affine=True), nn.PReLU(8), nn.ConvTranspose1d(8, 4, 4, 2, 1),
        nn.InstanceNorm1d(4, track_running_stats=True), nn.SELU(), nn.AvgPool1d(2), nn.Dropout(0.1),
        nn.Dropout1d(0.1), nn.Unflatten(2, (4, 4)), nn.ZeroPad2d(1), nn.Conv2d(4, 8, 3), nn.PixelShuffle(2),
        nn.ReflectionPad2d(1), nn.ReplicationPad2d(1), nn.AvgPool2d(2, divisor_override=3),
        nn.InstanceNorm2d(2), nn.CELU(0.5), nn.PixelUnshuffle(2), nn.Dropout2d(0.2), nn.Conv2d(8, 3, 1),
        nn.Hardswish(), nn.Softsign(), nn.Tanhshrink(), nn.LogSigmoid(), nn.Hardsigmoid(), nn.Softmax(dim=1),
        nn.LogSoftmax(dim=-1), nn.Flatten(),
    )  # fmt: skip


def generator(mean: nn.Module, d: int, D: int, dtype=f64) -> fastgeo.ExpectedMetric:
    g = torch.Generator().manual_seed(0)
    prec = fastgeo.RBFPrecision(torch.randn(5, d, generator=g, dtype=f64), torch.ones(5, dtype=f64),
                                torch.rand(D, 5, generator=g, dtype=f64), 0.1).to(dtype)  # fmt: skip
    return fastgeo.ExpectedMetric(mean.to(dtype).eval(), prec)


def test_structure_table_covers_every_layer_of_the_two_decoders():
    seen = {type(m).__name__ for m in [*conv_decoder(), *more_layers_decoder()]}
    assert seen == set(LAYERS) - {"BatchNorm1d"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_roundtrip_more_layers(tmp_path, dtype):
    """Every other table layer round-trips, and the loaded decoder is still a recognized chain."""
    from fastgeo.decoders import stacked_chain

    torch.manual_seed(1)
    mean = more_layers_decoder()
    with torch.no_grad():
        mean[7].running_mean.uniform_(-0.5, 0.5)
        mean[7].running_var.uniform_(0.5, 2.0)
        mean[5].weight.uniform_(-0.3, 0.3)
    metric = generator(mean, 3, 27, dtype)
    loaded = load_generator(save_generator(tmp_path / "g.safetensors", metric))
    z = torch.randn(10, 3, dtype=dtype)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z), rtol=0, atol=0)
    assert stacked_chain(loaded.mean, z[:4]) is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_safe_roundtrip_conv_decoder(tmp_path, dtype):
    torch.manual_seed(0)
    mean = conv_decoder()
    with torch.no_grad():  # non-trivial running statistics
        mean[4].running_mean.uniform_(-0.5, 0.5)
        mean[4].running_var.uniform_(0.5, 2.0)
    metric = generator(mean, 3, 192, dtype)
    extra = {"latents": torch.randn(4, 3, dtype=dtype), "labels": torch.arange(4)}
    path = save_generator(tmp_path / "g.safetensors", metric, extra=extra)
    with open(path, "rb") as f:
        assert not f.read(8).startswith(b"PK")  # not a zip / pickle archive
    loaded = load_generator(path)
    z = torch.randn(10, 3, dtype=dtype)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z), rtol=0, atol=0)
    batched = loaded.mean(z.reshape(2, 5, 3))  # any (..., d)
    torch.testing.assert_close(batched, metric.mean(z).reshape(2, 5, -1))
    for name, t in metric.precision.state_dict().items():
        assert torch.equal(loaded.precision.state_dict()[name], t)
    got = load_extra(path)
    assert torch.equal(got["latents"], extra["latents"]) and torch.equal(got["labels"], extra["labels"])


def test_nested_sequential_is_flattened():
    mean = nn.Sequential(nn.Sequential(nn.Linear(2, 4), nn.Tanh()), nn.Linear(4, 3))
    flat = sequential_of(mean)
    assert [type(m) for m in flat] == [nn.Linear, nn.Tanh, nn.Linear]
    z = torch.randn(6, 2)
    torch.testing.assert_close(flat(z), mean(z))


def test_methods_traced_into_linear_chains_are_saved_as_data(tmp_path):
    """The decoder of PyTorch's example VAE, a method written with functional activations
    (``torch.sigmoid(self.fc4(F.relu(self.fc3(z))))``), is stored as data: loaded without
    trust, the same function; the module's other layers (the encoder) are not in the file."""

    class ExampleVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)
            self.fc3, self.fc4 = nn.Linear(3, 5), nn.Linear(5, 6)

        def encode(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

        def decode(self, z):
            return torch.sigmoid(self.fc4(nn.functional.relu(self.fc3(z))))

    torch.manual_seed(0)
    vae = ExampleVAE().double()
    metric = fastgeo.ExpectedMetric(vae.decode, generator(nn.Linear(3, 6), 3, 6).precision)
    path = save_generator(tmp_path / "g.safetensors", metric)
    loaded = load_generator(path)
    assert [type(m) for m in loaded.mean.flat] == [nn.Linear, nn.ReLU, nn.Linear, nn.Sigmoid]
    z = torch.randn(7, 3, dtype=f64)
    torch.testing.assert_close(loaded.mean(z), vae.decode(z))
    assert vae.fc3.weight.device.type == "cpu" and vae.training  # the caller's module untouched


def test_custom_conv_decoders_are_saved_as_data(tmp_path):
    """A convolutional decoder written as a custom module (functional activations, ``view``,
    BatchNorm in eval mode, upsampling, ``flatten``) is stored as data and loads without trust
    as the same function."""

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 8 * 4 * 4)
            self.up1 = nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.gn = nn.GroupNorm(2, 6)
            self.up2 = nn.Upsample(scale_factor=2, mode="nearest")
            self.conv = nn.Conv2d(6, 2, 3, padding=1)

        def forward(self, z):
            h = nn.functional.silu(self.fc(z)).view(-1, 8, 4, 4)
            h = nn.functional.leaky_relu(self.bn(self.up1(h)), 0.1)
            return torch.sigmoid(self.conv(self.up2(self.gn(h)))).flatten(1)

    torch.manual_seed(0)
    decoder = Decoder()
    with torch.no_grad():
        decoder.bn.running_mean.uniform_(-1, 1)
        decoder.bn.running_var.uniform_(0.5, 2)
    metric = generator(decoder, 3, 2 * 16 * 16)
    path = save_generator(tmp_path / "g.safetensors", metric)
    loaded = load_generator(path)
    assert {nn.BatchNorm2d, nn.GroupNorm, nn.ConvTranspose2d} <= {type(m) for m in loaded.mean.flat}
    z = torch.randn(5, 3, dtype=f64)
    torch.testing.assert_close(loaded.mean(z), decoder(z))


def test_decoders_without_structure_need_code(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 6)

        def forward(self, z):
            return torch.tanh(self.fc(z)) * 2

    metric = generator(Custom(), 2, 6)
    with pytest.raises(ValueError, match="format='export'"):
        save_generator(tmp_path / "g.safetensors", metric)
    hooked = nn.Sequential(nn.Linear(2, 6))
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    assert sequential_of(hooked) is None
    with pytest.raises(ValueError, match=r"no structure fastgeo can store as data \(a module with hooks\)"):
        save_generator(tmp_path / "g.safetensors", generator(hooked, 2, 6))  # the reason named
    assert sequential_of(bumpy_metric().mean) is None  # a plain function
    path = save_generator(tmp_path / "g.pt2", metric, format="export")
    with pytest.raises(ValueError, match="trust=True"):
        load_generator(path)
    with pytest.warns(UserWarning, match="trusted code"):
        loaded = load_generator(path, trust=True)
    z = torch.randn(4, 2, dtype=f64)
    torch.testing.assert_close(loaded.mean(z), metric.mean(z))


def test_build_refuses_what_is_not_in_the_table():
    for bad in ('[{"type": "builtins.exec", "source": "1"}]', '[{"type": "Linear", "in_features": 2, '
                '"out_features": 3, "bias": true, "device": "meta"}]', '{"type": "Linear"}', "not json",
                '[{"type": "Linear", "in_features": {"a": 1}, "out_features": 3}]'):  # fmt: skip
        with pytest.raises(ValueError):
            build(bad)
    assert describe(build(describe(conv_decoder()))) == describe(conv_decoder())


PAYLOAD = "open({marker!r}, 'w').write('ran')"


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (PAYLOAD.format(marker=self.marker),))


def test_crafted_code_file_runs_nothing_without_trust(tmp_path):
    """An archive of the first format whose pickled payload calls exec: refused before unpickling."""
    marker = tmp_path / "pwned"
    metric = generator(nn.Sequential(nn.Linear(2, 6), nn.Tanh()), 2, 6)
    path = save_generator(tmp_path / "g.pt2", metric, format="export")
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(crafted, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if (
                item.filename.endswith(".pkl")
                or "constants" in item.filename
                or item.filename.endswith("data.pkl")
            ):
                data = pickle.dumps(_Exploit(str(marker)))
            dst.writestr(item, data)
        dst.writestr("g/data/evil.pkl", pickle.dumps(_Exploit(str(marker))))
    with pytest.raises(ValueError, match="trust=True"):
        load_generator(crafted)
    load_extra(crafted)  # extras are read with weights_only: no code either
    assert not marker.exists()


def test_crafted_safe_file_runs_nothing(tmp_path):
    """A safetensors file carrying a pickled exec payload in its metadata and a bogus layer type:
    refused, and the payload never runs (nothing in the safe format is unpickled)."""
    from safetensors.torch import save_file

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(marker))).hex()
    meta = {"fastgeo_generator": "2", "structure": json.dumps([{"type": "Exec", "code": evil}]),
            "latent_dim": "2", "data_dim": "3", "dtype": "float64", "payload": evil}  # fmt: skip
    path = tmp_path / "crafted.safetensors"
    save_file({"rbf.centers": torch.zeros(1, 2)}, str(path), metadata=meta)
    with pytest.raises(ValueError):
        load_generator(path)
    with pytest.raises(ValueError):
        load_generator(path, trust=True)
    assert not marker.exists()


def test_old_format_files_load_with_trust(tmp_path):
    """Files of fastgeo's first format (torch.export archives) need trust=True; a safe copy can be
    written from them (their exported MLP chain has a structure)."""
    old = os.path.join(os.path.dirname(__file__), "data", "two_moons.pt2")
    assert os.path.exists(old), "tests/data/two_moons.pt2 (a first-format file) is missing"
    with pytest.raises(ValueError, match="trust=True"):
        load_generator(old)
    with pytest.warns(UserWarning):
        metric = load_generator(old, trust=True)
    safe = save_generator(tmp_path / "moons.safetensors", metric, extra=load_extra(old))
    again = load_generator(safe)
    z = disc_points(8, 1.0).float()
    torch.testing.assert_close(again.mean(z), metric.mean(z), rtol=1e-6, atol=1e-6)


def test_bad_paths_and_options(tmp_path):
    metric = generator(nn.Sequential(nn.Linear(2, 6)), 2, 6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a fastgeo generator"):
        load_generator(junk)
    with pytest.raises(ValueError, match="format"):
        save_generator(tmp_path / "g.bin", metric, format="onnx")
    with pytest.raises(TypeError, match="trust"):
        load_generator(save_generator(tmp_path / "g.safetensors", metric), trust="yes")
    with pytest.raises(TypeError, match="generator"):
        save_generator(tmp_path / "g.safetensors", metric.mean)


def test_subprocess_load_does_not_import_pickle_payloads(tmp_path):
    """Loading a safe file in a fresh process never unpickles (pickle and torch.load disabled)."""
    metric = generator(nn.Sequential(nn.Linear(2, 6), nn.ELU()), 2, 6)
    path = save_generator(tmp_path / "g.safetensors", metric)
    code = (
        "import pickle, torch, fastgeo\n"
        "def refuse(*a, **k): raise AssertionError('unpickled')\n"
        "pickle.loads = pickle.load = pickle.Unpickler = torch.load = torch.serialization.load = refuse\n"
        f"fastgeo.load_generator({str(path)!r})\n"
        "print('ok')\n"
    )
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_an_altered_rbf_precision_is_caught_on_load(tmp_path):
    """The file holds the precisions of its probe points too: an RBF tensor altered after saving
    (a flipped sign, another zeta) is refused on load, as an altered mean is; check=False loads."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    metric = generator(nn.Sequential(nn.Linear(2, 6), nn.Tanh()), 2, 6)
    path = save_generator(tmp_path / "g.safetensors", metric)
    load_generator(path)  # as saved: loads
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    for name, change in [("rbf.centers", lambda t: t * torch.tensor([[-1.0, 1.0]], dtype=t.dtype)),
                         ("rbf.zeta", lambda t: 2 * t)]:  # fmt: skip
        altered = {**tensors, name: change(tensors[name])}
        bad = tmp_path / f"{name}.safetensors"
        save_file(altered, str(bad), metadata=meta)
        with pytest.raises(ValueError, match="RBF precision does not reproduce"):
            load_generator(bad)
        load_generator(bad, check=False)


def test_a_failed_save_leaves_the_existing_file(tmp_path, monkeypatch):
    """The file is written beside the path and checked there: a save whose check fails leaves the
    file that was at the path (and no temporary), and names the path, not the temporary."""
    import fastgeo.io as io

    path = tmp_path / "g.safetensors"
    metric = generator(more_layers_decoder(), 3, 27)
    save_generator(path, metric)
    before = path.read_bytes()

    def fails(p, *a, **k):
        raise ValueError(f"{str(p)!r}: the saved mean does not reproduce its probe outputs")

    monkeypatch.setattr(io, "load_generator", fails)
    with pytest.raises(ValueError, match=r"g\.safetensors': the saved mean"):
        save_generator(path, generator(conv_decoder(), 3, 3 * 8 * 8))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["g.safetensors"]
    with pytest.raises(ValueError, match="extra: names must be non-empty"):
        save_generator(tmp_path / "e.safetensors", metric, extra={"": torch.zeros(2)})


def test_damaged_and_future_files_are_one_error(tmp_path):
    """Entries missing or a format this version does not read: a ValueError naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = tmp_path / "g.safetensors"
    save_generator(path, generator(more_layers_decoder(), 3, 27))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    save_file({k: v for k, v in tensors.items() if k != "rbf.centers"}, str(tmp_path / "m.safetensors"), meta)
    with pytest.raises(ValueError, match="m.safetensors' is damaged.*KeyError"):
        load_generator(tmp_path / "m.safetensors")
    save_file(tensors, str(tmp_path / "v.safetensors"), {**meta, "fastgeo_generator": "3"})
    with pytest.raises(ValueError, match="of format 3; this fastgeo reads format 2"):
        load_generator(tmp_path / "v.safetensors")


def test_saving_leaves_the_callers_layers_and_keeps_every_upsample_argument(tmp_path, monkeypatch):
    """The stored copy is moved and set to eval mode, not the caller's layers; Upsample's
    recompute_scale_factor is stored (its interpolation differs without it); one RBF center at
    d = 1 gives finite probe codes."""
    moved, apply = [], nn.Linear._apply

    def watched(self, fn, *args, **kwargs):
        moved.append(self)
        return apply(self, fn, *args, **kwargs)

    up = nn.Upsample(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)
    mean = nn.Sequential(nn.Linear(3, 8), nn.Unflatten(1, (2, 2, 2)), up, nn.Flatten()).to(f64).eval()
    metric = generator(mean, 3, 2 * 3 * 3)
    monkeypatch.setattr(nn.Linear, "_apply", watched)
    save_generator(tmp_path / "u.safetensors", metric)
    assert moved and all(m is not mean[0] for m in moved)  # the copy was moved, not the caller's
    assert load_generator(tmp_path / "u.safetensors").mean.flat[2].recompute_scale_factor is True
    prec = fastgeo.RBFPrecision(torch.zeros(1, 1, dtype=f64), torch.ones(1, dtype=f64),
                                torch.ones(4, 1, dtype=f64), 0.1)  # fmt: skip
    line = nn.Sequential(nn.Linear(1, 4)).to(f64).eval()
    save_generator(tmp_path / "one.safetensors", fastgeo.ExpectedMetric(line, prec))
    assert load_generator(tmp_path / "one.safetensors").latent_dim == 1
