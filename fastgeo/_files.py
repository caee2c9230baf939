"""Atomic file writes: a file is either absent, the old version, or the whole new version."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` atomically: ``write(fileobj)`` to a temporary file beside it (named
    ``.<name>.<random>.tmp``), fsync, ``os.replace``, fsync of the folder. A run killed at any
    point leaves the old file or the new one, and at most a stale temporary file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def stale_temporaries(folder: str | os.PathLike, name_glob: str = "*") -> list[Path]:
    """Temporary files :func:`atomic_write` left in ``folder`` for targets matching ``name_glob``
    (a process killed while writing leaves one)."""
    return sorted(Path(folder).glob(f".{name_glob}.*{TMP_SUFFIX}"))
