"""The benchmarks' dense oracles are kept under a key of their generator (bench/workloads.py's
``generator_fingerprint``): the same weights saved again must give the same key, whatever order
safetensors wrote the metadata in, and other weights another."""

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _workloads():
    spec = importlib.util.spec_from_file_location("fastgeo_bench_workloads_fp", BENCH / "workloads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fingerprint():
    return _workloads().generator_fingerprint


def _reorder_metadata(path: Path, out: Path) -> None:
    """``path`` with its metadata entries written in the reverse order (same header length)."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    reordered = {"__metadata__": dict(reversed(list(meta.items())))}
    reordered.update(header)
    text = json.dumps(reordered, separators=(",", ":")).encode()
    assert len(text) <= n
    out.write_bytes(raw[:8] + text.ljust(n) + raw[8 + n :])


def test_fingerprint_ignores_metadata_order_not_weights(tmp_path):
    fingerprint = _fingerprint()
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    meta = {f"key{i}": f"value{i}" for i in range(5)}
    first = tmp_path / "a.safetensors"
    save_file(tensors, str(first), metadata=meta)
    again = tmp_path / "b.safetensors"
    _reorder_metadata(first, again)
    assert first.read_bytes() != again.read_bytes()
    assert fingerprint(first) == fingerprint(again)

    other = tmp_path / "c.safetensors"
    save_file({**tensors, "b": torch.full((3,), 1.0 + 2**-20)}, str(other), metadata=meta)
    assert fingerprint(other) != fingerprint(first)
    changed = tmp_path / "d.safetensors"
    save_file(tensors, str(changed), metadata={**meta, "key0": "other"})
    assert fingerprint(changed) != fingerprint(first)


def test_a_generator_file_of_ones_own_is_a_generator(tmp_path):
    """The benchmarks take a user's generator file by its path (named by its stem in tables and
    oracle files), its codes and labels from its extras; a name that is neither is refused."""
    workloads = _workloads()
    mine = tmp_path / "my_vae.safetensors"
    shutil.copy(Path(__file__).resolve().parent / "data" / "digits.safetensors", mine)
    assert workloads.generator_path(str(mine)) == mine
    assert workloads.generator_label(str(mine)) == "my_vae"
    assert workloads.generator_label("digits") == "digits"
    metric, codes, labels = workloads.generator(str(mine))
    assert codes.shape == (labels.shape[0], metric.latent_dim)
    z0, z1 = workloads.solver_pairs(str(mine), 6, 0)
    assert z0.shape == z1.shape == (6, 2)
    assert workloads.present_generator_path("my_vae") is None  # a stem alone is no file here
    with pytest.raises(ValueError, match="or a generator file"):
        workloads.generator_path(str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("labels", [torch.zeros(30), torch.arange(30)], ids=["one class", "all distinct"])
def test_pairs_of_a_generator_file_without_classes(labels):
    """A user's generator file whose codes have one class (or each its own) made the benchmarks'
    pair sampling loop for ever (it wanted pairs across and within classes)."""
    from fastgeo.benchmarks.pairs import pair_indices

    I, J = pair_indices(labels, 9, 0)
    assert len(I) == len(J) == 9 and all(i != j for i, j in zip(I, J, strict=True))
    mixed = torch.arange(30) % 3
    I, J = pair_indices(mixed, 9, 0)
    assert [bool(mixed[i] != mixed[j]) for i, j in zip(I, J, strict=True)] == [True] * 3 + [False] * 6
    with pytest.raises(ValueError, match="at least 2 codes"):
        pair_indices(torch.zeros(1), 3, 0)
