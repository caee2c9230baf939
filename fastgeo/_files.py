"""Atomic file writes: a file is either absent, the old version, or the whole new version."""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; abandoned temporaries are left
    fcntl = None

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


def _file_mode(path: Path) -> int:
    """The permissions of a file written at ``path``: those of the file it replaces, else what
    ``open`` would give (0o666 less the umask; mkstemp's temporaries are 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` atomically: ``write(fileobj)`` to a temporary file beside it (named
    ``.<name>.<random>.tmp``), fsync, ``os.replace``, fsync of the folder. A run killed at any
    point leaves the old file or the new one, and at most a stale temporary file. The new file
    has the permissions of the old one, or those of a newly opened file."""
    path = Path(path)
    mode = _file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
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


def reserve_beside(path: str | os.PathLike) -> Path:
    """An empty temporary file beside ``path`` (named as :func:`atomic_write`'s, with the
    permissions the file at ``path`` will have), for a writer that fills it in place and then
    :func:`publish` es it; a ValueError where the folder takes no new file."""
    path = Path(path)
    mode = _file_mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise ValueError(f"cannot write a file in the folder {str(path.parent)!r} ({e})") from e
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def reserved_and_held(path: str | os.PathLike) -> Iterator[Path]:
    """:func:`reserve_beside`, the temporary file locked (``flock``, advisory) while the block
    runs: :func:`remove_abandoned` leaves it be. A file filled through a memory map keeps its old
    time stamp, so that its age cannot tell a live run's file from a killed one's; the lock can
    (the system drops it when its process dies)."""
    tmp = reserve_beside(path)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a file system without locks: none taken (nor removed)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
    finally:
        os.close(fd)


def remove_abandoned(path: str | os.PathLike, young: float = 10.0) -> None:
    """Remove the temporaries of ``path`` that :func:`reserved_and_held` left behind a run that
    was killed: those no process holds locked (none younger than ``young`` seconds: one just
    reserved, not locked yet). Without ``flock`` (Windows) nothing is removed."""
    if fcntl is None:
        return
    path = Path(path)
    for tmp in stale_temporaries(path.parent, path.name):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime < young:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises where a live run holds it
            tmp.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)


def publish(tmp: Path, path: str | os.PathLike) -> None:
    """Put the filled temporary file ``tmp`` (from :func:`reserve_beside`) in place of ``path``:
    fsync, ``os.replace``, fsync of the folder."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Temporary files :func:`atomic_write` left in ``folder`` (a process killed while writing
    leaves one): for the target file ``name`` (taken literally: ``nn[1].npz`` is no pattern), or
    for any target."""
    return sorted(Path(folder).glob(f".{'*' if name is None else glob.escape(name)}.*{TMP_SUFFIX}"))
