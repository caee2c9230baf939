"""Generator files: a decoder mean and its RBF precision in one file that needs no user code.

The mean is saved with ``torch.export`` (default) or TorchScript (``torch.jit.trace``, the
fallback for means ``torch.export`` cannot capture); the RBF parameters and a probe of the mean's
outputs travel in the same archive as an extra file ``fastgeo.json``. :func:`load_generator`
rebuilds the :class:`ExpectedMetric` and checks the probe.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from ._files import atomic_write
from .decoders import FlatMean
from .metric import ExpectedMetric
from .rbf import RBFPrecision

FORMAT_VERSION = 1
_META = "fastgeo.json"


class _CallableModule(nn.Module):
    """An ``nn.Module`` around a plain callable, so that it can be exported or traced."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, z: Tensor) -> Tensor:
        return self.fn(z)


def _tensor_b64(tensors: dict[str, Tensor]) -> str:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in tensors.items()}, buf)
    return base64.b64encode(buf.getvalue()).decode()


def _b64_tensors(text: str) -> dict[str, Tensor]:
    return torch.load(io.BytesIO(base64.b64decode(text)), map_location="cpu", weights_only=True)


def save_generator(
    path: str | os.PathLike,
    generator: ExpectedMetric | tuple[Callable[[Tensor], Tensor], RBFPrecision],
    *,
    example_input: Tensor | None = None,
    format: str = "auto",
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Save a generator (decoder mean + RBF precision) to one self-contained file.

    Args:
        path: the file to write (suggested suffix ``.pt2``).
        generator: an :class:`ExpectedMetric`, or a pair ``(mean, precision)`` with ``mean`` any
            ``nn.Module`` or traceable callable (P, d) -> (P, D).
        example_input: (P, d) latent codes to capture the mean with (default: the RBF centers,
            twice, jittered; P >= 2). Any (..., d) is flattened to (P, d).
        format: ``"export"`` (``torch.export``, dynamic P), ``"torchscript"``
            (``torch.jit.trace``), or ``"auto"``: export, falling back to TorchScript.
        extra: tensors to keep in the file (e.g. ``{"latents": Z, "labels": y}``), read back
            by :func:`load_extra`.

    The mean is captured as the operations it runs on ``example_input``: data-dependent Python
    control flow is frozen. The saved mean is checked against the original on the probe.

    Returns:
        the path written.
    """
    if isinstance(generator, ExpectedMetric):
        mean, precision = generator.mean, generator.precision
    else:
        try:
            mean, precision = generator
        except (TypeError, ValueError):
            raise TypeError("generator must be an ExpectedMetric or a pair (mean, precision)") from None
        ExpectedMetric(mean, precision)  # validates shapes, dtype and device
    if format not in ("auto", "export", "torchscript"):
        raise ValueError(f"format must be 'auto', 'export' or 'torchscript', got {format!r}")
    d, D = precision.latent_dim, precision.data_dim
    dtype = precision.weights.dtype
    # Capture on the CPU: a file that loads anywhere.
    if isinstance(mean, nn.Module):
        module = copy.deepcopy(mean).to("cpu").eval()
    else:
        module = _CallableModule(mean)  # tensors in a closure stay on their device
    if example_input is None:
        c = precision.centers.detach().cpu()
        example = torch.cat([c, c + 0.1 * c.std().clamp(min=1e-3) + 0.01])
    else:
        if example_input.shape[-1] != d:
            raise ValueError(f"example_input must have last axis d = {d}, got {tuple(example_input.shape)}")
        example = example_input.detach().cpu().to(dtype).reshape(-1, d)
    if example.shape[0] < 2:
        example = torch.cat([example, example + 0.01])
    with torch.no_grad():
        expected = module(example)
    if tuple(expected.shape) != (example.shape[0], D):
        raise ValueError(
            f"mean maps (P, d) = {tuple(example.shape)} to {tuple(expected.shape)}, expected (P, {D})"
        )

    meta = {
        "fastgeo_generator": FORMAT_VERSION,
        "latent_dim": d,
        "data_dim": D,
        "dtype": str(dtype).removeprefix("torch."),
        "rbf": _tensor_b64({k: v for k, v in zip(("centers", "gammas", "weights", "zeta"),
                                                   precision.params(), strict=True)}),
        "probe": _tensor_b64({"z": example[:8], "x": expected[:8]}),
        "extra": _tensor_b64(_check_extra(extra)),
    }
    path = Path(path)
    errors = []
    for fmt in (("export", "torchscript") if format == "auto" else (format,)):
        meta["format"] = fmt
        payload = json.dumps(meta)
        try:
            if fmt == "export":
                P = torch.export.Dim("P", min=0)
                program = torch.export.export(module, (example,), dynamic_shapes=({0: P},))
                # Stack traces name the saving machine's files: a shared generator file need not.
                for node in program.graph.nodes:
                    node.meta.pop("stack_trace", None)
                extra = {_META: payload}
                atomic_write(path, lambda f, p=program, x=extra: torch.export.save(p, f, extra_files=x))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    traced = torch.jit.trace(module, example, check_trace=False)
                    extra = {_META: payload}
                    atomic_write(path, lambda f, t=traced, x=extra: torch.jit.save(t, f, _extra_files=x))
            break
        except Exception as e:  # noqa: BLE001 - try the next capture mechanism, report all at the end
            errors.append(f"{fmt}: {type(e).__name__}: {e}")
    else:
        raise RuntimeError("could not capture the decoder mean:\n" + "\n".join(errors))
    if errors:
        warnings.warn(f"torch.export failed, saved with TorchScript instead ({errors[0][:300]})",
                      stacklevel=2)
    load_generator(path)  # the probe check: the file reproduces the mean
    return path


def _check_extra(extra: dict[str, Tensor] | None) -> dict[str, Tensor]:
    extra = {} if extra is None else dict(extra)
    for k, v in extra.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise TypeError(f"extra must map names to tensors, got {k!r}: {type(v).__name__}")
    return extra


def load_extra(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``extra`` tensors saved with a generator by :func:`save_generator` (CPU)."""
    meta = _read_meta(Path(path))
    return _b64_tensors(meta["extra"]) if meta.get("extra") else {}


def _read_meta(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith("/extra/" + _META)]
            if not names:
                raise ValueError(f"{str(path)!r} is not a fastgeo generator file (no {_META})")
            meta = json.loads(zf.read(names[0]))
    except zipfile.BadZipFile as e:
        raise ValueError(f"{str(path)!r} is not a fastgeo generator file ({e})") from e
    if meta.get("fastgeo_generator") != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r}: unsupported generator format {meta.get('fastgeo_generator')!r}")
    return meta


def load_generator(
    path: str | os.PathLike, device: torch.device | str | None = None, *, check: bool = True
) -> ExpectedMetric:
    """Load a file written by :func:`save_generator` as an :class:`ExpectedMetric`.

    Args:
        path: the generator file.
        device: where to put the metric (default: CPU).
        check: compare the loaded mean with the probe saved beside it.
    """
    path = Path(path)
    meta = _read_meta(path)
    d, D = int(meta["latent_dim"]), int(meta["data_dim"])
    dtype = getattr(torch, meta["dtype"])
    if meta["format"] == "export":
        with open(path, "rb") as f:
            flat = torch.export.load(f).module()
    elif meta["format"] == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            flat = torch.jit.load(str(path), map_location="cpu")
    else:
        raise ValueError(f"{str(path)!r}: unknown mean format {meta['format']!r}")
    mean = FlatMean(flat, d, D)
    rbf = _b64_tensors(meta["rbf"])
    precision = RBFPrecision(rbf["centers"], rbf["gammas"], rbf["weights"], rbf["zeta"])
    if check:
        probe = _b64_tensors(meta["probe"])
        with torch.no_grad():
            x = mean(probe["z"].to(dtype))
        if x.shape != probe["x"].shape or not torch.allclose(x, probe["x"], rtol=1e-5, atol=1e-6):
            raise ValueError(f"{str(path)!r}: the saved mean does not reproduce its probe outputs")
    if device is not None:
        mean = mean.to(device)
        precision = precision.to(device)
    return ExpectedMetric(mean, precision)
