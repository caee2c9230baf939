"""The output matrix of an all-pairs run: in memory on the metric's device, or a memory-mapped
``.npy`` file on the CPU (the matrix out of the process's memory), filled under a temporary name and
put in place when the run ends: an interrupted run leaves an earlier file as it was, and no file
of zeros that would read as distances."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._files import publish, remove_abandoned, reserved_and_held
from ..metric import ExpectedMetric
from .layout import duplicate_index, expand_duplicates

EXPAND_BLOCK = 1024  # rows per block when duplicates are expanded into a mapped file


def npy_path(out: object) -> Path:
    """The ``out`` argument checked: a ``.npy`` path in an existing folder."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a path (str or os.PathLike) of a .npy file, got {type(out).__name__}")
    path = Path(out)
    if path.suffix != ".npy":
        raise ValueError(f"out must name a .npy file, got {str(path)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"out: the folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"out: {str(path)!r} is a folder")
    if path.exists() and not os.access(path, os.W_OK):  # its copy's mode would refuse the filling
        raise ValueError(f"out: {str(path)!r} is read-only")
    return path


@contextlib.contextmanager
def filled_in_place(path: Path | None) -> Iterator[Path | None]:
    """A temporary file beside ``path`` for the run to map and fill (None without ``path``),
    reserved now (a ValueError naming ``out`` if the folder takes no file, before any work), put
    in place of ``path`` when the block ends, removed if it raises. The temporaries of ``path``
    that killed runs left (full-size matrices) are removed first; a live run's are not."""
    if path is None:
        yield None
        return
    remove_abandoned(path)  # a killed run's full-size matrix
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(reserved_and_held(path))
        except ValueError as e:
            raise ValueError(f"out: {e}") from e
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        publish(tmp, path)  # still held: unlocked, a run starting now could take it for abandoned


def allocate(shape: tuple[int, int], metric: ExpectedMetric, path: Path | None) -> tuple[Tensor, Any]:
    """A zero (rows, cols) matrix: on the metric's device, or (``path``) a memory-mapped ``.npy``
    file on the CPU; and the memory map (None without ``path``)."""
    if path is None:
        return torch.zeros(shape, dtype=metric.dtype, device=metric.device), None
    dtype = torch.empty(0, dtype=metric.dtype, device="cpu").numpy().dtype
    mapped = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    return torch.from_numpy(mapped), mapped


def expand(matrix: Tensor, rep: Tensor, metric: ExpectedMetric, path: Path | None) -> tuple[Tensor, Any]:
    """The matrix over distinct rows expanded to all rows (see ``expand_duplicates``), written
    row block by row block into the memory-mapped ``path`` if given."""
    if path is None:
        return expand_duplicates(matrix, rep), None
    M = rep.shape[0]
    full, mapped = allocate((M, M), metric, path)
    idx = duplicate_index(rep).to(matrix.device)
    for lo in range(0, M, EXPAND_BLOCK):
        full[lo : lo + EXPAND_BLOCK] = matrix[idx[lo : lo + EXPAND_BLOCK]][:, idx].to(full)
    return full, mapped
