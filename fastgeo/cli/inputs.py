"""Checks of the ``fastgeo`` command's inputs, done before any work: paths that can be read or
written, latent codes that are finite float arrays of the right width; the arguments its
commands share."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import _checks
from ..io import load_generator
from ..metric import ExpectedMetric
from ..solver import solver_options
from ..solver.defaults import METHODS


class InputError(ValueError):
    """A bad command-line input: reported as one line, exit status 2."""


def readable_file(option: str, path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option}: {path!r} is not a file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{option}: {path!r} cannot be read")
    return p


def writable_file(option: str, path: str, suffix: str) -> Path:
    """A path whose folder exists and is writable, with the given suffix, not a folder itself."""
    p = Path(path)
    if p.suffix != suffix:
        raise InputError(f"{option}: {path!r} must end in {suffix}")
    if p.is_dir():
        raise InputError(f"{option}: {path!r} is a folder")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{option}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{option}: folder {str(folder)!r} is not writable")
    return p


def checkpoint_folder(option: str, path: str | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option}: {path!r} exists and is not a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not p.exists() and not parent.is_dir():
        raise InputError(f"{option}: folder {str(parent)!r} does not exist")
    folder = p if p.exists() else parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option}: folder {str(folder)!r} is not writable")
    return p


def positive(option: str, value: float | None) -> float | None:
    if value is not None and not (0 < value < math.inf):
        raise InputError(f"{option} must be finite and > 0, got {value}")
    return value


def at_least(option: str, value: int | None, minimum: int) -> int | None:
    """``value`` (None: not given) if ``minimum <= value <= 2**62`` (beyond, no machine's size)."""
    if value is not None and value < minimum:
        raise InputError(f"{option} must be >= {minimum}, got {value}")
    if value is not None and value > _checks.LARGEST:
        raise InputError(f"{option} must be <= 2**62, got {value}")
    return value


def only_in_mode(option: str, value: object, mode: str, *needed: str) -> None:
    """Refuse an option given explicitly (not None) that only the modes ``needed`` use."""
    if value is not None and mode not in needed:
        wanted = " or ".join(needed)
        raise InputError(f"{option} is for --mode {wanted}; it has no effect in --mode {mode}")


def latent_codes(option: str, path: Path, d: int, dtype: torch.dtype) -> Tensor:
    """An (M, d) array of finite floats from a ``.npy`` file, as a tensor of ``dtype``."""
    if path.suffix != ".npy":
        raise InputError(f"{option}: {str(path)!r} must be a .npy file (np.save of an (M, {d}) float array)")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{option}: cannot read {str(path)!r} as a .npy array ({e})") from e
    if not isinstance(array, np.ndarray):  # a zip archive (np.savez) under a .npy name
        array.close()
        raise InputError(
            f"{option}: {str(path)!r} is an .npz archive, not a .npy array (np.save of an (M, {d}) floats)"
        )
    if array.dtype.kind != "f":
        raise InputError(f"{option}: {str(path)!r} holds {array.dtype} values; latent codes must be floats")
    if array.ndim != 2 or array.shape[1] != d:
        raise InputError(
            f"{option}: {str(path)!r} has shape {array.shape}; the generator needs {d} columns (one "
            "latent code per row)"
        )
    array = array.astype(array.dtype.newbyteorder("="), copy=False)  # big-endian files too
    if array.dtype.itemsize > 8:  # long doubles: torch has no such dtype
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{option}: {str(path)!r} contains NaN or inf")
    codes = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)
    if not bool(torch.isfinite(codes).all()):
        raise InputError(f"{option}: {str(path)!r} holds values beyond the range of the generator's {dtype}")
    return codes


def device(option: str, value: str | None) -> str | None:
    """``value`` if it names a torch device this machine has (None: the default)."""
    if value is None:
        return None
    try:
        _checks.device(option, value)
    except (TypeError, ValueError) as e:
        raise InputError(str(e)) from e
    return value


def output_folder(option: str, path: str) -> Path:
    """A folder to write into: existing and writable, or to be made in a writable folder (not a
    file). Checked first: a demo or benchmark would otherwise fail after its work."""
    if not path.strip():
        raise InputError(f"{option}: an empty path (the current folder is '.')")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{option}: {path!r} exists and is not a folder")
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option}: {str(existing)!r} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option}: folder {str(existing)!r} is not writable")
    return p


def distinct(option: str, path: Path, other_option: str, other: Path) -> None:
    """Refuse an output ``path`` that is the input ``other`` (it would be overwritten)."""
    if path.resolve() == other.resolve():
        raise InputError(f"{option} {str(path)!r} is {other_option}: it would be overwritten")


def add_solver_arguments(p: argparse.ArgumentParser, chord_mode: bool = False) -> None:
    """The solver options a command passes to every geodesic (see :func:`solver_options_given`);
    ``chord_mode``: the command has ``--mode chord``, whose sample is solved by ``fast``."""
    chord = ", and 'fast' for --mode chord's sample" if chord_mode else ""
    p.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help=f"solver method (default: 'default'{chord}; 'fast': coarser curves, 2-4x less time)",
    )
    p.add_argument(
        "--m",
        type=int,
        default=None,
        help="basis functions per latent dimension (default: by method and d, see help(fastgeo.geodesics))",
    )
    p.add_argument(
        "--n-points", type=int, default=None, help="points per curve in the energy (default: by method and d)"
    )
    p.add_argument(
        "--max-iter", type=int, default=None, help="iteration limit per phase (default 300; paper: 2000)"
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="relative energy tolerance (default 1e-6 in float32, 1e-10 in float64; fast: 1e-4, 1e-8)",
    )


def solver_options_given(args: argparse.Namespace) -> dict[str, object]:
    """The solver options given on the command line (the others keep the solver's defaults)."""
    at_least("--max-iter", args.max_iter, 1)
    at_least("--m", args.m, 1)
    at_least("--n-points", args.n_points, 2)
    positive("--tol", args.tol)
    given = {"method": args.method, "m": args.m, "n_points": args.n_points}
    given |= {"max_iter": args.max_iter, "tol": args.tol}
    return {k: v for k, v in given.items() if v is not None}


def add_workers_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes of one thread each (default: torch's thread count on a Linux CPU run, else 1)",
    )


def add_generator_arguments(p: argparse.ArgumentParser) -> None:
    """Where the generator runs and whether its file may hold code; progress bars."""
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument(
        "--trust",
        action="store_true",
        help="allow a generator file that holds its decoder as code (can run code: only trusted files)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def generator_and_codes(
    generator: Path, latents: Path, second: Path | None, device: str | None, trust: bool, options: dict
) -> tuple[ExpectedMetric, Tensor, Tensor | None]:
    """The metric of a generator file on ``device``, every solver option checked against it, and
    the (M, d) codes of ``latents`` (and the (P, d) codes of ``--y``) in its dtype, on its device."""
    metric = load_generator(generator, device=device, trust=trust)
    solver_options(metric.dtype, metric.latent_dim, metric.data_dim, **options)  # every option, now
    Z = latent_codes("latents", latents, metric.latent_dim, metric.dtype).to(metric.device)
    Y = None
    if second is not None:
        Y = latent_codes("--y", second, metric.latent_dim, metric.dtype).to(metric.device)
    return metric, Z, Y
