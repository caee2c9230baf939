"""Progress bars: tqdm when it is installed (the optional ``progress`` extra), else nothing."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress_iter(it: Iterable[T], enabled: bool, desc: str) -> Iterator[T]:
    """``it`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            return iter(tqdm(it, desc=desc, leave=False, mininterval=0.2))
    return iter(it)


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar of ``total`` units (``.update(n)``, ``.close()``), or None without tqdm;
    ``leave=False``: erased when closed."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, leave=leave)
