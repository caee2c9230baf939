"""Progress bars: tqdm when it is installed (the optional ``progress`` extra), else nothing.

Off a terminal (a log file of a cluster job, CI) a bar is redrawn every OFF_TERMINAL_INTERVAL
seconds instead of every TERMINAL_INTERVAL, so that logs get a line now and then rather than a
redraw five times a second; notebooks get their widget."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

TERMINAL_INTERVAL = 0.2  # seconds between redraws
OFF_TERMINAL_INTERVAL = 30.0


def _tqdm() -> Any:
    """tqdm's class for here (the notebook widget under Jupyter), or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _interval(tqdm: Any) -> float:
    """Seconds between redraws: TERMINAL_INTERVAL on a terminal or in a notebook."""
    notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    stream = sys.stderr
    on_terminal = stream is not None and hasattr(stream, "isatty") and stream.isatty()
    return TERMINAL_INTERVAL if on_terminal or notebook else OFF_TERMINAL_INTERVAL


def progress_iter(it: Iterable[T], enabled: bool, desc: str) -> Iterator[T]:
    """``it`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed."""
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return iter(it)
    return iter(tqdm(it, desc=desc, leave=False, mininterval=_interval(tqdm)))


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar of ``total`` units (``.update(n)``, ``.close()``), or None without tqdm;
    ``leave=False``: erased when closed."""
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return None
    return tqdm(
        total=total, unit=unit, desc=desc, dynamic_ncols=True, leave=leave, mininterval=_interval(tqdm)
    )
