"""Checkpoints of an all-pairs run: ``checkpoint=DIR`` keeps one file per finished chunk
(``chunk_00000012.pt``) and a ``meta.json`` with the fingerprint of the inputs. Every file is
written atomically, so a run killed at any point leaves only whole files; a run started again
with the same arguments loads the finished chunks and solves the rest. Several processes
(``torch.distributed``) may share one checkpoint folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._files import atomic_write
from ..metric import ExpectedMetric

CHECKPOINT_VERSION = 1


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _tensor_digest(t: Tensor | None) -> str:
    h = hashlib.sha256()
    if t is None:
        h.update(b"none")
    else:
        _hash_tensor(h, t)
    return h.hexdigest()


def metric_fingerprint(metric: ExpectedMetric) -> str:
    """Hash of the metric's parameters: RBF buffers and weights, and the mean's tensors.

    For an ``nn.Module`` mean its ``state_dict``; for a plain function the tensors (and modules)
    captured in its closure; otherwise only its type name is known.
    """
    h = hashlib.sha256()
    for name, t in sorted(metric.precision.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    mean = metric.mean
    h.update(type(mean).__qualname__.encode())
    if isinstance(mean, torch.nn.Module):
        for name, t in sorted(mean.state_dict().items()):
            h.update(name.encode())
            _hash_tensor(h, t)
    else:
        h.update(getattr(mean, "__qualname__", "").encode())
        for cell in getattr(mean, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # empty cell
                continue
            if isinstance(value, Tensor):
                _hash_tensor(h, value)
            elif isinstance(value, torch.nn.Module):
                for name, t in sorted(value.state_dict().items()):
                    h.update(name.encode())
                    _hash_tensor(h, t)
    return h.hexdigest()


def _options_digest(options: dict) -> str:
    """Hash of solver options; tensors by value, other objects by type and tensor attributes."""
    h = hashlib.sha256()
    for k in sorted(options):
        v = options[k]
        h.update(k.encode())
        if isinstance(v, Tensor):
            _hash_tensor(h, v)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(repr(v).encode())
        else:
            h.update(type(v).__qualname__.encode())
            for name, a in sorted(getattr(v, "__dict__", {}).items()):
                if isinstance(a, Tensor):
                    h.update(name.encode())
                    _hash_tensor(h, a)
                elif isinstance(a, (bool, int, float, str)):
                    h.update(f"{name}={a!r}".encode())
    return h.hexdigest()


class Checkpoint:
    """A checkpoint folder: ``meta.json`` plus one ``chunk_XXXXXXXX.pt`` per finished chunk."""

    def __init__(self, path: str | os.PathLike, components: dict[str, str], meta: dict) -> None:
        self.path = Path(path)
        self.components = components
        self.key = hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint {str(self.path)!r} exists and is not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / "meta.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"checkpoint {str(self.path)!r}: unreadable meta.json ({e})") from e
            old_components = old.get("fingerprint", {})
            if old.get("version") != CHECKPOINT_VERSION or old_components != components:
                differ = sorted(
                    k
                    for k in set(components) | set(old_components)
                    if components.get(k) != old_components.get(k)
                )
                raise ValueError(
                    f"checkpoint {str(self.path)!r} was written for different inputs (differs in: "
                    f"{', '.join(differ) or 'version'}); use another folder, or delete it to start over"
                )
        else:
            payload = json.dumps(
                {"version": CHECKPOINT_VERSION, "fingerprint": components, **meta}, indent=1, sort_keys=True
            ).encode()
            atomic_write(meta_path, lambda f: f.write(payload))

    def chunk_path(self, c: int) -> Path:
        return self.path / f"chunk_{c:08d}.pt"

    def load(self, c: int, n: int) -> dict | None:
        p = self.chunk_path(c)
        if not p.exists():
            return None
        try:
            rec = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable file is recomputed, not trusted
            warnings.warn(
                f"fastgeo: checkpoint chunk {p} is unreadable ({e}); solving it again", stacklevel=3
            )
            return None
        if rec.get("key") != self.key or rec.get("chunk") != c or rec["lengths"].shape != (n,):
            raise ValueError(f"checkpoint chunk {p} does not belong to these inputs; delete the folder")
        return rec

    def save(self, c: int, rec: dict) -> None:
        rec = {**rec, "key": self.key, "chunk": c}
        atomic_write(self.chunk_path(c), lambda f: torch.save(rec, f))

    def finished(self) -> int:
        return sum(1 for _ in self.path.glob("chunk_*.pt"))
