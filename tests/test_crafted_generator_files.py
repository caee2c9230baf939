"""Generator files crafted to hurt whoever loads them: sizes a file declares but does not back,
tensors that are not finite, probes emptied, structures that are no list of layers, metadata
that inflates: each a ValueError naming the file, before any large allocation."""

import json
import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import fastgeo
from fastgeo.io import load_extra, load_generator, save_generator


@pytest.fixture
def saved(tmp_path):
    """(metadata, tensors) of a small safe file: Linear(2, 8) - Tanh - Linear(8, 6)."""
    mean = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 6)).double()
    g = torch.Generator().manual_seed(0)
    f64 = torch.float64
    centers, weights = torch.randn(5, 2, generator=g, dtype=f64), torch.rand(6, 5, generator=g, dtype=f64)
    gammas, zeta = torch.ones(5, dtype=f64), torch.full((6,), 0.1, dtype=f64)
    precision = fastgeo.RBFPrecision(centers, gammas, weights, zeta)
    path = save_generator(tmp_path / "g.safetensors", fastgeo.ExpectedMetric(mean, precision))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return meta, load_file(str(path))


def crafted(tmp_path, meta, tensors, name="c.safetensors"):
    path = tmp_path / name
    save_file(tensors, str(path), metadata=meta)
    return path


def test_declared_sizes_the_file_does_not_back_allocate_nothing(tmp_path, saved):
    """A structure declaring a (10^6 x 10^6) Linear (4 TB) over the file's (8 x 2) weight: refused
    by shape, naming both, without allocating it."""
    meta, tensors = saved
    layers = json.loads(meta["structure"])
    layers[0].update(in_features=10**6, out_features=10**6)
    path = crafted(tmp_path, {**meta, "structure": json.dumps(layers)}, tensors)
    with pytest.raises(ValueError, match=r"do not fit its structure \(0.bias: \(1000000,\) in the structure"):
        load_generator(path)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("check", [True, False])
def test_decoder_tensors_that_are_not_finite_are_refused(tmp_path, saved, value, check):
    meta, tensors = saved
    bias = tensors["mean.2.bias"].clone()
    bias[1] = value
    path = crafted(tmp_path, meta, {**tensors, "mean.2.bias": bias})
    with pytest.raises(ValueError, match="'2.bias' is complex or holds NaN or inf"):
        load_generator(path, check=check)


def test_an_emptied_probe_is_no_check(tmp_path, saved):
    """Altered weights with the probe emptied: refused (every file save_generator writes holds
    probe points)."""
    meta, tensors = saved
    altered = {**tensors, "mean.0.weight": 2 * tensors["mean.0.weight"]}
    altered["probe.z"], altered["probe.x"] = tensors["probe.z"][:0], tensors["probe.x"][:0]
    with pytest.raises(ValueError, match="holds no probe outputs"):
        load_generator(crafted(tmp_path, meta, altered))


@pytest.mark.parametrize(
    "change",
    [lambda s: [{"type": []}], lambda s: [{**s[0], "out_features": -5}] + s[1:], lambda s: [s[0]] * 10_001,
     lambda s: json.loads("[" * 100_000 + "]" * 100_000), lambda s: [{**s[1], "type": "os.system"}]],
    ids=["type_not_a_name", "negative_size", "too_many_layers", "nested_deeply", "not_in_the_table"],
)  # fmt: skip
def test_structures_that_are_no_decoder_are_one_value_error(tmp_path, saved, change):
    meta, tensors = saved
    try:
        structure = json.dumps(change(json.loads(meta["structure"])))
    except RecursionError:  # json cannot even write it: the file holds the raw text
        structure = "[" * 100_000 + "]" * 100_000
    path = crafted(tmp_path, {**meta, "structure": structure}, tensors)
    with pytest.raises(ValueError, match="c.safetensors|decoder structure|layer"):
        load_generator(path)


def test_latent_dimension_contradicting_the_structure_is_a_value_error(tmp_path, saved):
    meta, tensors = saved
    with pytest.raises(ValueError, match="c.safetensors"):
        load_generator(crafted(tmp_path, {**meta, "latent_dim": "3"}, tensors))


def test_metadata_that_inflates_is_refused_before_it_is_read(tmp_path):
    """A code file whose fastgeo.json inflates 1,000-fold (a zip bomb; base64 tensors hardly
    compress) is refused from the archive's directory, by load_generator and load_extra alike."""
    path = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/extra/fastgeo.json", "{" + " " * (8 << 20) + "}")
    for load in (load_generator, load_extra):
        with pytest.raises(ValueError, match="inflates from"):
            load(path)


@pytest.mark.parametrize("check", [True, False])
def test_precision_tensors_out_of_range_name_the_file(tmp_path, saved, check):
    """Bytes changed inside the RBF weights (a negative weight): a ValueError naming the file as
    damaged, not the precision's bare "weights must be >= 0"."""
    meta, tensors = saved
    weights = tensors["rbf.weights"].clone()
    weights[0, 0] = -1.0
    path = crafted(tmp_path, meta, {**tensors, "rbf.weights": weights})
    with pytest.raises(ValueError, match=r"c\.safetensors' is damaged: its RBF precision is not valid"):
        load_generator(path, check=check)


def test_a_truncated_file_is_named_so(tmp_path, saved):
    """A safe file cut short (a copy interrupted): "truncated or damaged?", from load_generator and
    load_extra alike (they said "not a fastgeo generator file" and "File is not a zip file")."""
    meta, tensors = saved
    path = crafted(tmp_path, meta, tensors)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    for load in (load_generator, load_extra):
        with pytest.raises(ValueError, match=r"c\.safetensors' starts as a safetensors file but cannot"):
            load(path)
    path.write_bytes(b"not a generator at all")
    with pytest.raises(ValueError, match="is not a fastgeo generator file"):
        load_generator(path)
