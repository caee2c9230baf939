"""Generator files that carry code: the decoder mean captured by ``torch.export`` or TorchScript,
for means with no structure as data. Only when the user asks (``format="export"`` or
``"torchscript"``), and loaded only with ``trust=True``: reading such a file unpickles what it
holds and can run code it carries.

The file is the capture's own zip archive with an extra entry ``fastgeo.json`` (shapes, dtype,
and the RBF, probe and extra tensors as base64 of ``torch.save``, read with
``weights_only=True``). Files of fastgeo's first format are such files.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .._files import atomic_write
from .._mean_checks import modules_of
from .contents import Contents

VERSION = 1
META = "fastgeo.json"
MAX_INFLATION = 16  # uncompressed / compressed size of the metadata entry, at most (plus 1 MiB)
FORMATS = ("export", "torchscript")


class _CallableModule(nn.Module):
    """An ``nn.Module`` around a plain callable, so that it can be exported or traced. ``called``:
    the modules it calls (a method's module, a closure's) are made its submodules, so that
    TorchScript traces their parameters as parameters (it refuses tensors that require grad as
    constants, and cannot load large ones); the whole module goes into the file (a VAE's encoder
    too). ``torch.export`` takes the parameters it uses without them."""

    def __init__(self, fn: Callable[[Tensor], Tensor], called: bool = False) -> None:
        super().__init__()
        self.fn = fn
        if called:
            self.called = nn.ModuleList(part for m in modules_of(fn) for part in _without_lazy(m))

    def forward(self, z: Tensor) -> Tensor:
        return self.fn(z)


def _without_lazy(module: nn.Module) -> list[nn.Module]:
    """``module``, or where it holds a lazy module not yet run (no weights to trace: an unused
    encoder, say), its largest parts without one."""
    if not any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()):
        return [module]
    return [part for child in module.children() for part in _without_lazy(child)]


def capture_module(mean: Callable[[Tensor], Tensor], fmt: str) -> nn.Module:
    """The mean as a CPU module to capture with ``fmt`` (a copy of an ``nn.Module``, in eval
    mode)."""
    if isinstance(mean, nn.Module):
        return copy.deepcopy(mean).to("cpu").eval()
    return _CallableModule(mean, called=fmt == "torchscript")  # tensors in a closure stay on their device


def _b64(tensors: dict[str, Tensor]) -> str:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _unb64(text: str) -> dict[str, Tensor]:
    return torch.load(io.BytesIO(base64.b64decode(text)), map_location="cpu", weights_only=True)


def write(path: Path, module: nn.Module, example: Tensor, contents: Contents, fmt: str) -> None:
    """Capture ``module`` on ``example`` with ``fmt`` and write the file."""
    meta = {
        "fastgeo_generator": VERSION,
        "format": fmt,
        "latent_dim": contents.latent_dim,
        "data_dim": contents.data_dim,
        "dtype": str(contents.dtype).removeprefix("torch."),
        "rbf": _b64(contents.rbf),
        "probe": _b64(contents.probe),
        "extra": _b64(contents.extra),
    }
    files = {META: json.dumps(meta)}
    if fmt == "export":
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("P", min=0)},))
        for node in program.graph.nodes:  # stack traces name the saving machine's files
            node.meta.pop("stack_trace", None)
        atomic_write(path, lambda f: torch.export.save(program, f, extra_files=files))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                traced = torch.jit.trace(module, example, check_trace=False)
            except RuntimeError as e:  # e.g. a closure's tensor that requires grad, not a module's
                raise ValueError(
                    f"format='torchscript' could not trace the decoder mean ({str(e).splitlines()[0]}); "
                    "pass format='export', or a mean whose tensors are parameters of its modules"
                ) from e
            atomic_write(path, lambda f: torch.jit.save(traced, f, _extra_files=files))


def is_code_file(path: Path) -> bool:
    """Whether ``path`` is a zip archive (a torch.export or TorchScript capture)."""
    return zipfile.is_zipfile(path)


def read_meta(path: Path) -> dict:
    """The ``fastgeo.json`` entry of a code file (plain JSON: reading it runs nothing)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + META)]
            if not names:
                raise ValueError(f"{str(path)!r} is not a fastgeo generator file (no {META})")
            info = zf.getinfo(names[0])
            if info.file_size > MAX_INFLATION * info.compress_size + (1 << 20):
                # base64 tensors hardly compress: an entry that inflates this much is no metadata
                raise ValueError(
                    f"{str(path)!r}: its {META} inflates from {info.compress_size} to {info.file_size} "
                    "bytes; not a fastgeo generator file"
                )
            meta = json.loads(zf.read(names[0]))
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a fastgeo generator file ({e})") from e
    if meta.get("fastgeo_generator") != VERSION or meta.get("format") not in FORMATS:
        raise ValueError(f"{str(path)!r}: unsupported generator format {meta.get('fastgeo_generator')!r}")
    return meta


def read_contents(meta: dict) -> Contents:
    """The tensors of a code file (``torch.load`` with ``weights_only=True``: no code runs)."""
    dtype = {"float32": torch.float32, "float64": torch.float64}[meta["dtype"]]
    extra = _unb64(meta["extra"]) if meta.get("extra") else {}
    return Contents(int(meta["latent_dim"]), int(meta["data_dim"]), dtype, _unb64(meta["rbf"]),
                    _unb64(meta["probe"]), extra)  # fmt: skip


def read_module(path: Path, meta: dict) -> nn.Module:
    """Load the captured mean: unpickles the archive and can run code it carries (trusted only)."""
    if meta["format"] == "export":
        with open(path, "rb") as f:
            return torch.export.load(f).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")
