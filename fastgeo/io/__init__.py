"""Generator files: a decoder mean and its RBF precision in one file.

Trust model. The default format is safe: the decoder's structure as data (JSON) and all tensors
in safetensors (:mod:`.safe`); loading it never unpickles and runs no code from the file, so
files from anyone can be opened. Decoders with no structure as data (custom modules, functions)
are saved as code (``torch.export`` or TorchScript, :mod:`.code`) only when asked; loading such a
file can run code it carries, so :func:`load_generator` refuses it unless ``trust=True`` (the CLI's
``--trust``) and warns. Files of fastgeo's first format are code files.
"""

from __future__ import annotations

import binascii
import contextlib
import copy
import json
import os
import pickle
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from .. import _checks, _mean_checks
from ..decoders import FlatMean
from ..decoders.layers_of_steps import first_without_layer
from ..decoders.recognize import recognize, why_not_a_chain
from ..decoders.structure import sequential_of
from ..metric import ExpectedMetric
from ..rbf import RBFPrecision
from . import code, safe
from .contents import Contents, contents_of, example_inputs, split_generator

FORMATS = ("safe",) + code.FORMATS


def save_generator(
    path: str | os.PathLike,
    generator: ExpectedMetric | tuple[Callable[[Tensor], Tensor], RBFPrecision],
    *,
    example_input: Tensor | None = None,
    format: str = "safe",
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Save a generator (decoder mean + RBF precision) to one self-contained file.

    Args:
        path: the file to write (suggested suffix ``.safetensors`` for the safe format,
            ``.pt2`` for the code formats).
        generator: an :class:`ExpectedMetric`, or a pair ``(mean, precision)``.
        example_input: (P, d) latent codes to probe (and capture) the mean with (default: the RBF
            centers, twice, jittered). Any (..., d) is flattened to (P, d).
        format: ``"safe"`` (default): the mean must be an ``nn.Sequential`` of standard layers
            (:data:`fastgeo.decoders.structure.LAYERS`), or a module, method or function that
            ``torch.fx`` traces into a chain of such layers, stored as data; ``"export"``
            (``torch.export``) or ``"torchscript"`` (``torch.jit.trace``) store any traceable
            mean as code: loading it then needs ``trust=True``.
        extra: tensors to keep in the file (e.g. ``{"latents": Z, "labels": y}``), read back
            by :func:`load_extra`.

    The file is loaded back and checked against the original on a probe of the mean's outputs.

    Returns:
        the path written.
    """
    if isinstance(generator, (str, os.PathLike)) and not isinstance(path, (str, os.PathLike)):
        raise TypeError("save_generator(path, generator): the path comes first (the arguments look swapped)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or path-like), got {type(path).__name__}")
    mean, precision = split_generator(generator)
    fmt = _checks.choice("format", format, FORMATS)
    example = example_inputs(precision, example_input)
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: the folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"path: {str(path)!r} is a folder, not a file to write")
    if path.is_symlink():  # written through, as open() would: the link stays a link
        path = path.resolve()
    # Written beside the path and checked there: a save that fails leaves an existing file alone.
    # (A short name: the longest file names a folder allows are the user's.)
    checked = path.with_name(f".fastgeo-{uuid.uuid4().hex[:12]}.saving")
    try:
        if fmt == "safe":
            sequential = sequential_of(mean)
            if sequential is None:
                # a decoder set to training mode since its metric was made: named as such (its
                # dropout keeps it from being read as a chain of layers)
                _mean_checks.eval_mode("the decoder mean", mean)
                _mean_checks.still_in_eval("the decoder mean", generator)
                found = recognize(mean, precision.latent_dim)
                if found is None:
                    why = f" ({why_not_a_chain(mean, precision.latent_dim)})"
                else:  # a chain fastgeo computes, with a step no standard layer stores
                    why = f" (its traced step {first_without_layer(found[0])} has no standard layer)"
                raise ValueError(
                    f"the decoder mean has no structure fastgeo can store as data{why}: it must be an "
                    "nn.Sequential of standard layers (fastgeo.decoders.structure.LAYERS), or trace "
                    "into a chain of them; pass format='export' to save it as code (loading that file "
                    "then needs trust=True)"
                )
            sequential = copy.deepcopy(sequential).to("cpu").eval()  # the caller's layers stay where they are
            safe.write(checked, sequential, contents_of(sequential, precision, example, extra))
            load_generator(checked)  # the probe check: the file reproduces the mean
        else:
            module = code.capture_module(mean, fmt)
            code.write(checked, module, example, contents_of(module, precision, example, extra), fmt)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                load_generator(checked, trust=True)
        if path.exists():  # the file keeps its permissions (a private generator stays private)
            shutil.copymode(path, checked)
        os.replace(checked, path)
    except ValueError as e:  # the probe check's message names the file the user asked for
        raise ValueError(str(e).replace(str(checked), str(path))) from e
    finally:
        checked.unlink(missing_ok=True)
    return path


def load_extra(path: str | os.PathLike) -> dict[str, Tensor]:
    """The ``extra`` tensors saved with a generator by :func:`save_generator` (CPU). Reading them
    runs no code, whatever the file's format."""
    path = _existing(path)
    with _readable(path):
        if safe.is_safe_file(path):
            return safe.read(path)[1].extra
        return code.read_contents(code.read_meta(path)).extra


def load_generator(
    path: str | os.PathLike,
    device: torch.device | str | None = None,
    *,
    check: bool = True,
    trust: bool = False,
) -> ExpectedMetric:
    """Load a file written by :func:`save_generator` as an :class:`ExpectedMetric`.

    Args:
        path: the generator file.
        device: where to put the metric (default: CPU).
        check: compare the loaded mean with the probe saved beside it.
        trust: allow a code file (``torch.export`` / TorchScript, or fastgeo's first format),
            whose loading can run code it carries. Only for files from a source you trust.
    """
    path = _existing(path)
    _checks.boolean("trust", trust)
    _checks.boolean("check", check)
    if device is not None:
        device = _checks.device("device", device)
    # Read on the CPU whatever torch's default device (the docstring's default), moved after.
    with _readable(path), torch.device("cpu"):
        flat, contents = _read(path, trust)
        mean = FlatMean(flat, contents.latent_dim, contents.data_dim)
        if check:
            contents.check_probe(mean, str(path))
        try:
            precision = contents.precision()
        except ValueError as e:  # its stored tensors out of range: bytes changed
            raise ValueError(f"{str(path)!r} is damaged: its RBF precision is not valid ({e})") from e
        if check:
            contents.check_precision(precision, str(path))
    if device is not None:
        mean, precision = mean.to(device), precision.to(device)
    return ExpectedMetric(mean, precision)


def _read(path: Path, trust: bool) -> tuple[torch.nn.Module, Contents]:
    """The mean (as stored: (P, d) -> (P, D)) and the contents of a generator file."""
    if safe.is_safe_file(path):
        return safe.read(path)
    if code.is_code_file(path):
        meta = code.read_meta(path)
        if not trust:
            raise ValueError(
                f"{str(path)!r} holds its decoder as code ({meta['format']}): loading it can run code it "
                "carries. Pass trust=True (--trust on the command line) only for a file from a source you "
                "trust; save decoders that are nn.Sequential of standard layers with format='safe' instead"
            )
        warnings.warn(
            f"fastgeo: loading {str(path)!r} as trusted code ({meta['format']})", UserWarning, stacklevel=3
        )  # the caller of load_generator
        contents = code.read_contents(meta)
        return code.read_module(path, meta), contents
    raise ValueError(f"{str(path)!r} is not a fastgeo generator file")


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Errors of a damaged file (entries missing, undecodable metadata or tensors) as one
    ValueError naming it, not as a traceback from deep inside the reader."""
    try:
        yield
    except (KeyError, EOFError, AttributeError, IndexError, pickle.UnpicklingError, binascii.Error,
            TypeError, RuntimeError, NotImplementedError, RecursionError) as e:  # fmt: skip
        raise ValueError(
            f"{str(path)!r} is damaged or was not written by fastgeo.save_generator: {type(e).__name__}: {e}"
        ) from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r}: its metadata is not valid JSON ({e})") from e


def _existing(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or path-like), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"generator file {str(path)!r} is a folder")
    if not path.is_file():
        raise FileNotFoundError(f"generator file {str(path)!r} does not exist")
    return path


__all__ = ["FORMATS", "load_extra", "load_generator", "save_generator"]
