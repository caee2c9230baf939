"""Checkpoints that cannot lie: a damaged chunk (any flipped bit, a NaN, a flipped status byte)
is solved again with a warning and never used; a resume with another model is refused, however
the mean holds its parameters; stale temporary files are removed."""

import functools
import os
import warnings

import pytest
import torch
from analytic import bumpy_metric, disc_points

import fastgeo
from fastgeo.pairwise.checkpoint import Checkpoint

M, CHUNK, OPTS = 6, 5, {"max_iter": 15}  # 15 pairs -> 3 chunks


def run(metric, ckpt, **kw):
    return fastgeo.pairwise_distances(metric, disc_points(M, 1.5), chunk_size=CHUNK, checkpoint=ckpt,
                                      progress=False, return_report=True, **{**OPTS, **kw})  # fmt: skip


@pytest.fixture(scope="module")
def reference():
    return run(bumpy_metric(), None)


def flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9, -1])
def test_a_flipped_bit_anywhere_is_detected(tmp_path, reference, where):
    ckpt = tmp_path / "ckpt"
    run(bumpy_metric(), ckpt)
    chunk = sorted(ckpt.glob("chunk_*.safetensors"))[1]
    size = chunk.stat().st_size
    flip_bit(chunk, int(where * size) if where > 0 else size - 2)
    with pytest.warns(UserWarning, match="damaged"):
        D, report = run(bumpy_metric(), ckpt)
    assert report.chunks_computed == 1 and report.chunks_loaded == 2
    assert torch.equal(D, reference[0]) and torch.equal(report.converged, reference[1].converged)


def _rewrite_chunk(ckpt, c, change):
    """Change a chunk's tensors and write it back with a valid checksum (a deliberate forgery)."""
    from safetensors.torch import load_file

    path = ckpt / f"chunk_{c:08d}.safetensors"
    box = Checkpoint.__new__(Checkpoint)
    box.path, box.key = ckpt, None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    box.key = meta["key"]
    rec = {**load_file(str(path)), "decoder_evals": int(meta["decoder_evals"]),
           "decoder_jvps": int(meta["decoder_jvps"])}  # fmt: skip
    change(rec)
    box.save(c, rec)


def test_nan_in_a_chunk_never_reaches_the_matrix(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    run(bumpy_metric(), ckpt)

    def nan(rec):
        rec["lengths"][2] = float("nan")

    _rewrite_chunk(ckpt, 0, nan)
    with pytest.warns(UserWarning, match="not n finite values"):
        D, report = run(bumpy_metric(), ckpt)
    assert report.chunks_computed == 1 and bool(torch.isfinite(D).all()) and torch.equal(D, reference[0])


def test_a_flipped_status_byte_is_detected(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    run(bumpy_metric(), ckpt)
    path = ckpt / "chunk_00000000.safetensors"
    data = bytearray(path.read_bytes())
    # Find the 'status' entry's data (int8 codes) through the header.
    import json
    import struct

    n = struct.unpack("<Q", bytes(data[:8]))[0]
    header = json.loads(bytes(data[8 : 8 + n]))
    start = 8 + n + header["status"]["data_offsets"][0]
    data[start] ^= 1
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum"):
        _, report = run(bumpy_metric(), ckpt)
    assert report.chunks_computed == 1 and torch.equal(report.status_code, reference[1].status_code)


class VAE(torch.nn.Module):
    """A decoder whose mean is handed over as a bound method (as README shows)."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(6, 2, generator=g, dtype=torch.float64)

    def decoder_mean(self, z):
        return torch.tanh(z @ self.W.T)


def _metric(mean):
    return fastgeo.ExpectedMetric(mean, bumpy_metric().precision)


GLOBAL_W = {"W": torch.randn(6, 2, dtype=torch.float64)}


def global_mean(z):
    return torch.tanh(z @ GLOBAL_W["W"].T)


def partial_mean(z, W):
    return torch.tanh(z @ W.T)


@pytest.mark.parametrize("kind", ["bound method", "partial", "global tensors", "closure over a list"])
def test_resume_with_another_decoder_is_refused(tmp_path, kind):
    ckpt = tmp_path / "ckpt"
    if kind == "bound method":
        first, second = VAE(0).decoder_mean, VAE(1).decoder_mean
    elif kind == "partial":
        first = functools.partial(partial_mean, W=VAE(0).W)
        second = functools.partial(partial_mean, W=VAE(1).W)
    elif kind == "global tensors":
        first = second = global_mean
    else:
        box = [VAE(0).W]
        first = second = lambda z: torch.tanh(z @ box[0].T)  # noqa: E731
    run(_metric(first), ckpt)
    if kind == "global tensors":
        GLOBAL_W["W"] = VAE(1).W
    if kind == "closure over a list":
        box[0] = VAE(1).W
    with pytest.raises(ValueError, match="metric"):
        run(_metric(second), ckpt)


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    stale = ckpt / ".chunk_00000001.safetensors.x1y2.tmp"
    stale.write_bytes(b"partial write of a killed run")
    import os
    import time

    old = time.time() - 60
    os.utime(stale, (old, old))
    # A temporary written just now may be another process's write in progress: kept.
    fresh = ckpt / ".chunk_00000002.safetensors.zz.tmp"
    fresh.write_bytes(b"a write in progress")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean resume warns about nothing
        # (torch's own deprecations of what it imports lazily are not the resume's)
        warnings.simplefilter("ignore", DeprecationWarning)
        run(bumpy_metric(), ckpt)
    assert not stale.exists()
    assert list(ckpt.glob(".*.tmp")) == [fresh]  # the run's own temporaries are gone


def test_stale_temporaries_of_a_file_take_its_name_literally(tmp_path):
    """An output named like a glob pattern (``nn[1].npz``) finds its own temporaries, not those of
    ``nn1.npz``."""
    from fastgeo._files import stale_temporaries

    own, other = tmp_path / ".nn[1].npz.abc.tmp", tmp_path / ".nn1.npz.def.tmp"
    own.write_bytes(b"x")
    other.write_bytes(b"y")
    assert stale_temporaries(tmp_path, "nn[1].npz") == [own]
    assert stale_temporaries(tmp_path) == sorted([own, other])


def test_written_files_get_ordinary_permissions(tmp_path):
    """A new file gets 0o666 less the umask (not the 0o600 of its temporary); a replaced file
    keeps its mode."""
    from fastgeo._files import atomic_write

    new = tmp_path / "new.bin"
    old_umask = os.umask(0o022)
    try:
        atomic_write(new, lambda f: f.write(b"x"))
    finally:
        os.umask(old_umask)
    assert new.stat().st_mode & 0o777 == 0o644
    new.chmod(0o640)
    atomic_write(new, lambda f: f.write(b"y"))
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_bytes() == b"y"


def test_options_digest_sees_numpy_values():
    """Options given as NumPy numbers are hashed by value (a resume with ``np.int64(300)``
    iterations is not one with ``np.int64(2)``), equal to the same Python numbers; sequences item
    by item."""
    np = pytest.importorskip("numpy")
    from fastgeo.pairwise.checkpoint import options_digest

    assert options_digest({"max_iter": np.int64(2)}) != options_digest({"max_iter": np.int64(300)})
    assert options_digest({"tol": np.float32(1e-4)}) != options_digest({"tol": np.float32(1e-5)})
    assert options_digest({"max_iter": np.int64(2)}) == options_digest({"max_iter": 2})
    assert options_digest({"refine": [1, 2]}) != options_digest({"refine": [1, 3]})


@pytest.mark.parametrize(
    "meta, match",
    [("[]", "not a fastgeo checkpoint"), ('{"fingerprint": null}', "not a fastgeo checkpoint"),
     ('{"chunk_size": null}', "no valid chunk_size"), ('{"chunk_size": 0}', "no valid chunk_size"),
     ("{", "unreadable meta.json")],
)  # fmt: skip
def test_a_foreign_meta_json_is_a_value_error(tmp_path, meta, match):
    """A ``meta.json`` that is JSON but not a checkpoint's (another tool's folder) is refused
    with a ValueError naming the folder, not an AttributeError or a division by zero."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(meta)
    with pytest.raises(ValueError, match=match):  # no chunk_size: the checkpoint's is read
        fastgeo.pairwise_distances(bumpy_metric(), disc_points(M, 1.5), checkpoint=ckpt, progress=False)
