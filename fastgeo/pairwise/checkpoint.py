"""Checkpoints of an all-pairs run that verify themselves.

``checkpoint=DIR`` keeps a ``meta.json`` with the fingerprint of the inputs and one
``chunk_XXXXXXXX.safetensors`` per finished chunk (no pickle). Every file is written atomically,
so a run killed at any point leaves whole files and at most stale temporary files, which the next
run removes. A run started again with the same arguments loads the finished chunks and solves
the rest; several processes (``torch.distributed``) may share one folder.

What cannot lie:
- every chunk carries the SHA-256 of its contents (the run's key, its index, its tensors): a
  chunk whose bytes changed, or whose lengths are not finite, is solved again with a warning,
  never used;
- the fingerprint covers what the mean computes, not only what holds its parameters: the outputs
  of the metric on a fixed probe of latent points (:meth:`ExpectedMetric.probe`), the RBF
  parameters, the mean's module state, dtype, device, the inputs, options and layout; a run
  resumed with any other model is refused.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from .._files import atomic_write, stale_temporaries
from ..metric import ExpectedMetric
from ..solver.result import NONFINITE
from .layout import Layout

# 7: lengths measured to their error estimate (and the straight-line check with it); 6:
# subdivision; 5: float32 tol 1e-6 and 300 iterations; 4: lagged calls without the secant model,
# curves decoded in whole row blocks
CHECKPOINT_VERSION = 7
PROBE_POINTS = 16
STALE_AFTER = 10.0  # seconds after which a temporary file is a dead write's
# Temporaries of the files a checkpoint writes (atomic_write's names: ".<file>.<random>.tmp").
_OWN_TEMPORARY = re.compile(r"\.(meta\.json|chunk_\d{8}\.safetensors)\.[^.]+\.tmp")
_TENSORS = ("lengths", "status", "iterations")


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_digest(t: Tensor | None) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (of "none" for None)."""
    h = hashlib.sha256()
    if t is None:
        h.update(b"none")
    else:
        _hash_tensor(h, t)
    return h.hexdigest()


def metric_fingerprint(metric: ExpectedMetric) -> str:
    """Hash of what the metric computes: its outputs ``[mu, sigma]`` on a fixed probe of latent
    points, the RBF parameters, and (for an ``nn.Module`` mean) its state; dtype and device.

    The probe makes any change of model visible, whatever holds the mean's parameters (a module,
    a bound method, a ``functools.partial``, a closure, global tensors).
    """
    h = hashlib.sha256()
    h.update(f"{metric.dtype} {metric.device.type}".encode())
    _hash_tensor(h, metric.probe(PROBE_POINTS))
    for name, t in sorted(metric.precision.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    if isinstance(metric.mean, torch.nn.Module):
        for name, t in sorted(metric.mean.state_dict().items()):
            h.update(name.encode())
            _hash_tensor(h, t)
    return h.hexdigest()


def _scalar(v: Any) -> bool | int | float | complex | str | None:
    """A plain number's or a NumPy scalar's value (``np.int64(2)`` is 2), else None."""
    if isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, numbers.Number) or (type(v).__module__ == "numpy" and getattr(v, "shape", None) == ()):
        value = v.item() if hasattr(v, "item") else v
        return value if isinstance(value, (bool, int, float, complex, str)) else None
    return None


def _hash_value(h: Any, v: Any, depth: int = 0) -> None:
    """Tensors and arrays by their bytes, numbers (NumPy's too) and strings by value, sequences
    and dicts item by item; other objects by their type and the tensors and numbers among their
    attributes (an object holding a metric is not walked into it)."""
    value = _scalar(v)
    if isinstance(v, Tensor):
        _hash_tensor(h, v)
    elif v is None or value is not None:
        h.update(repr(value).encode())
    elif type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "biufc":
        _hash_tensor(h, torch.as_tensor(v, device="cpu"))
    elif isinstance(v, (list, tuple)) and depth < 4:
        h.update(f"{type(v).__name__}[{len(v)}]".encode())
        for item in v:
            _hash_value(h, item, depth + 1)
    elif isinstance(v, dict) and depth < 4:
        h.update(f"dict[{len(v)}]".encode())
        for k in sorted(v, key=repr):
            h.update(repr(k).encode())
            _hash_value(h, v[k], depth + 1)
    else:
        h.update(type(v).__qualname__.encode())
        for name, a in sorted(getattr(v, "__dict__", {}).items()):
            if isinstance(a, Tensor):
                h.update(name.encode())
                _hash_tensor(h, a)
            elif _scalar(a) is not None:
                h.update(f"{name}={_scalar(a)!r}".encode())


def options_digest(options: dict) -> str:
    """Hash of solver options (see :func:`_hash_value`): two runs whose options differ in any
    value get different digests."""
    h = hashlib.sha256()
    for k in sorted(options):
        h.update(k.encode())
        _hash_value(h, options[k])
    return h.hexdigest()


def _chunk_digest(key: str, chunk: int, counts: dict[str, int], tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    h.update(f"{key} {chunk} {counts['decoder_evals']} {counts['decoder_jvps']}".encode())
    for name in _TENSORS:
        h.update(name.encode())
        _hash_tensor(h, tensors[name])
    return h.hexdigest()


class Checkpoint:
    """A checkpoint folder: ``meta.json`` plus one ``chunk_XXXXXXXX.safetensors`` per chunk."""

    def __init__(self, path: str | os.PathLike, components: dict[str, str], meta: dict) -> None:
        started = time.time()
        self.path = Path(path)
        self.components = components
        self.key = hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint {str(self.path)!r} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            old = _read_meta(meta_path)
            old_components = old.get("fingerprint", {})
            if old.get("version") != CHECKPOINT_VERSION or old_components != components:
                differ = sorted(
                    k
                    for k in set(components) | set(old_components)
                    if components.get(k) != old_components.get(k)
                )
                # The chunk size follows memory_budget and workers unless given.
                hint = (
                    f"; its chunks hold {old['chunk_size']} pairs (chunk_size={old['chunk_size']} resumes it "
                    "if nothing else differs)"
                    if "layout" in differ and isinstance(old.get("chunk_size"), int)
                    else ""
                )
                raise ValueError(
                    f"checkpoint {str(self.path)!r} was written for different inputs (differs in: "
                    f"{', '.join(differ) or 'version'}){hint}; use another folder, or delete it to start over"
                )
        else:
            payload = json.dumps(
                {"version": CHECKPOINT_VERSION, "fingerprint": components, **meta}, indent=1, sort_keys=True
            ).encode()
            atomic_write(meta_path, lambda f: f.write(payload))
        self._remove_stale_temporaries(started)  # the folder is this checkpoint's now

    def _remove_stale_temporaries(self, now: float) -> None:
        """Temporary files of the checkpoint's own writes cut short (a killed run) are removed:
        those older than :data:`STALE_AFTER` seconds (a write takes milliseconds; another process
        sharing the folder may be writing one right now). Other files' temporaries are left (a
        user's, or the ``out`` matrix another run fills in place: its time stamp stays old)."""
        for tmp in stale_temporaries(self.path):
            if not _OWN_TEMPORARY.fullmatch(tmp.name):
                continue
            try:
                if tmp.stat().st_mtime < now - STALE_AFTER:
                    tmp.unlink()
            except OSError:  # another process removed or replaced it first
                pass

    def chunk_path(self, c: int) -> Path:
        return self.path / f"chunk_{c:08d}.safetensors"

    def _damaged(self, p: Path, why: str) -> None:
        warnings.warn(f"fastgeo: checkpoint chunk {p} is damaged ({why}); solving it again", stacklevel=4)

    def load(self, c: int, n: int) -> dict | None:
        """Chunk ``c`` of ``n`` pairs if a verified copy is on disk, else None (damaged copies
        are reported and ignored)."""
        p = self.chunk_path(c)
        if not p.exists():
            return None
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(p))
            counts = {k: int(meta[k]) for k in ("decoder_evals", "decoder_jvps")}
            key, chunk, digest = meta["key"], int(meta["chunk"]), meta["sha256"]
        except (OSError, SafetensorError, KeyError, ValueError) as e:
            self._damaged(p, f"unreadable: {e}")
            return None
        if set(tensors) != set(_TENSORS) or _chunk_digest(key, chunk, counts, tensors) != digest:
            self._damaged(p, "its checksum does not match its contents")
            return None
        if key != self.key or chunk != c:
            raise ValueError(f"checkpoint chunk {p} does not belong to these inputs; delete the folder")
        lengths = tensors["lengths"]
        # +inf is a result (a pair with no finite path, status nonfinite); NaN or -inf never is.
        nonfinite = torch.isinf(lengths) & (lengths > 0) & (tensors["status"] == NONFINITE)
        if lengths.shape != (n,) or not bool((torch.isfinite(lengths) | nonfinite).all()):
            self._damaged(p, "its lengths are not n finite values (or inf where no finite path was found)")
            return None
        return {**tensors, **counts}

    def save(self, c: int, rec: dict) -> None:
        """Write chunk ``c``: rec holds lengths, status, iterations, decoder_evals, decoder_jvps."""
        tensors = {k: rec[k].detach().cpu().contiguous() for k in _TENSORS}
        counts = {k: int(rec[k]) for k in ("decoder_evals", "decoder_jvps")}
        meta = {"key": self.key, "chunk": str(c), **{k: str(v) for k, v in counts.items()}}
        meta["sha256"] = _chunk_digest(self.key, c, counts, tensors)
        payload = save(tensors, metadata=meta)
        atomic_write(self.chunk_path(c), lambda f: f.write(payload))

    def finished(self) -> int:
        return sum(1 for _ in self.path.glob("chunk_*.safetensors"))


def checkpointed_chunk_size(checkpoint: str | os.PathLike, chunk_size: int) -> int:
    """The chunk size a checkpoint was started with (a default budget may depend on free memory)."""
    meta_path = Path(checkpoint) / "meta.json"
    if not meta_path.is_file():
        return chunk_size
    kept = _read_meta(meta_path).get("chunk_size", chunk_size)
    if isinstance(kept, bool) or not isinstance(kept, int) or kept < 1:
        raise ValueError(f"checkpoint {str(checkpoint)!r}: meta.json has no valid chunk_size ({kept!r})")
    return kept


def _read_meta(meta_path: Path) -> dict:
    """A checkpoint's ``meta.json`` as a dict, or a ValueError saying why it is not one."""
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint {str(meta_path.parent)!r}: unreadable meta.json ({e})") from e
    fingerprint = meta.get("fingerprint", {}) if isinstance(meta, dict) else None
    if not isinstance(fingerprint, dict):
        raise ValueError(
            f"checkpoint {str(meta_path.parent)!r}: meta.json is not a fastgeo checkpoint's; use another "
            "folder, or delete it to start over"
        )
    return meta


def open_checkpoint(
    checkpoint: str | os.PathLike,
    metric: ExpectedMetric,
    Z: Tensor,
    Y: Tensor | None,
    options: dict[str, Any],
    layout: Layout,
) -> Checkpoint:
    """The checkpoint folder of a run, keyed by its inputs, options, chunk layout and metric."""
    components = {
        "Z": tensor_digest(Z),
        "Y": tensor_digest(Y),
        "options": options_digest(options),
        "layout": layout.describe(),
        "metric": metric_fingerprint(metric),
        "dtype": str(metric.dtype),
    }
    meta = {
        "M": Z.shape[0],
        "P": None if Y is None else Y.shape[0],
        "n_pairs": layout.n_pairs,
        "chunk_size": layout.chunk_size,
        "n_chunks": layout.n_chunks,
        "options": {
            k: v if v is None or isinstance(v, (bool, int, float, str)) else type(v).__name__
            for k, v in options.items()
        },
    }
    return Checkpoint(checkpoint, components, meta)
