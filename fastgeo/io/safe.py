"""The safe generator format (the default): one safetensors file, no pickle and no code.

The decoder mean is an ``nn.Sequential`` of standard layers whose structure is stored as JSON
(:mod:`fastgeo.decoders.structure`) and rebuilt from a fixed table of constructors; every tensor
(the mean's state, the RBF precision, the probe, the extras) is a safetensors entry. Loading such
a file runs no code from it, whoever wrote it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor, nn

from .._files import atomic_write
from ..decoders import structure
from .contents import Contents

VERSION = "2"
MAGIC_KEY = "fastgeo_generator"


def _entries(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def write(path: Path, sequential: nn.Sequential, contents: Contents) -> None:
    """Write a safe generator file for the mean ``sequential`` (P, d) -> (P, D)."""
    for k, v in contents.extra.items():
        if v.layout != torch.strided or v.is_quantized or v.is_complex():
            kind = "complex" if v.is_complex() else "quantized" if v.is_quantized else str(v.layout)
            raise TypeError(
                f"extra[{k!r}] is a {kind} tensor, which the safe format does not store: pass a dense real "
                "tensor (e.g. .to_dense(), torch.view_as_real), or format='export'"
            )
    tensors = {
        **_entries("mean", sequential.state_dict()),
        **_entries("rbf", contents.rbf),
        **_entries("probe", contents.probe),
        **_entries("extra", contents.extra),
    }
    meta = {
        MAGIC_KEY: VERSION,
        "structure": structure.describe(sequential),
        "latent_dim": str(contents.latent_dim),
        "data_dim": str(contents.data_dim),
        "dtype": str(contents.dtype).removeprefix("torch."),
    }
    payload = save(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(payload))


def is_safe_file(path: Path) -> bool:
    """Whether ``path`` is a safetensors file written by :func:`write` (of another format version
    than this fastgeo reads: a ValueError saying so)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            version = (f.metadata() or {}).get(MAGIC_KEY)
    except (OSError, SafetensorError, ValueError) as e:
        if _safetensors_header(path):
            raise ValueError(
                f"{str(path)!r} starts as a safetensors file but cannot be read ({e}): truncated or "
                "damaged? (copy it again)"
            ) from e
        return False
    if version is not None and version != VERSION:
        raise ValueError(
            f"{str(path)!r} is a fastgeo generator file of format {version}; this fastgeo reads format "
            f"{VERSION} (write it again with this version, or install the version that wrote it)"
        )
    return version == VERSION


def _safetensors_header(path: Path) -> bool:
    """Whether ``path`` starts as a safetensors file does: a header length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and 0 < int.from_bytes(head[:8], "little") < (1 << 30) and head[8:] == b"{"


def read(path: Path) -> tuple[nn.Sequential, Contents]:
    """The mean (rebuilt from its structure, in eval mode) and the contents of a safe file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        d, D = int(meta["latent_dim"]), int(meta["data_dim"])
        dtype = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
        layers = meta["structure"]
    except (OSError, SafetensorError, KeyError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a readable fastgeo generator file ({e})") from e
    groups: dict[str, dict[str, Tensor]] = {"mean": {}, "rbf": {}, "probe": {}, "extra": {}}
    for name, t in tensors.items():
        prefix, _, key = name.partition(".")
        if prefix not in groups or not key:
            raise ValueError(f"{str(path)!r}: unexpected entry {name!r}")
        groups[prefix][key] = t
    _check_mean_tensors(path, layers, groups["mean"])
    mean = structure.build(layers).to(dtype)  # every parameter backed by a tensor of the file
    try:
        mean.load_state_dict(groups["mean"], strict=True)
    except RuntimeError as e:
        raise ValueError(f"{str(path)!r}: the decoder's tensors do not fit its structure ({e})") from e
    mean.eval()
    contents = Contents(d, D, dtype, groups["rbf"], groups["probe"], groups["extra"])
    return mean, contents


def _check_mean_tensors(path: Path, layers: str, tensors: dict[str, Tensor]) -> None:
    """The structure's parameters and buffers are the file's tensors, shape for shape (checked on
    a skeleton built on the meta device: sizes a file declares allocate nothing until its tensors
    back them), real and finite."""
    with torch.device("meta"):
        skeleton = structure.build(layers)
    want = {k: tuple(t.shape) for k, t in skeleton.state_dict().items()}
    got = {k: tuple(t.shape) for k, t in tensors.items()}
    if want != got:
        differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
        shown = ", ".join(f"{k}: {want.get(k, 'none')} in the structure, {got.get(k, 'none')} in the file"
                          for k in differ[:3])  # fmt: skip
        raise ValueError(f"{str(path)!r}: the decoder's tensors do not fit its structure ({shown})")
    for k, t in tensors.items():
        if t.is_complex() or (t.is_floating_point() and not bool(torch.isfinite(t).all())):
            raise ValueError(f"{str(path)!r}: the decoder's tensor {k!r} is complex or holds NaN or inf")
