"""Warnings silenced while the library runs a step of its own, safely across threads.

``warnings.catch_warnings`` saves the process-wide filter list on entry and puts that copy back
on exit: two threads inside such blocks at once left one's filter installed in the user's
program for good, and a filter the user added meanwhile was lost. Here a filter is added once
and counted, and the last block that uses it removes that filter alone, leaving the others as
they are by then.
"""

from __future__ import annotations

import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
# (message, category) -> [the filter added, or None where an equal one was there already; blocks open]
_OPEN: dict[tuple[str, type[Warning]], list] = {}


@contextmanager
def quiet(message: str = "", category: type[Warning] = Warning) -> Iterator[None]:
    """Within the block (in every thread: filters are process-wide), warnings of ``category``
    whose text starts with ``message`` (a regular expression, case-insensitive) are ignored."""
    if getattr(sys.flags, "context_aware_warnings", False):
        # Python 3.14's context-aware filters (the default of free-threaded builds): warn() reads
        # the context's own list, where catch_warnings is local to the thread and safe.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=message, category=category)
            yield
        return
    key = (message, category)
    with _LOCK:
        entry = _OPEN.get(key)
        if entry is None:
            item = ("ignore", re.compile(message, re.I) if message else None, category, None, 0)
            if item in warnings.filters:
                entry = _OPEN[key] = [None, 0]  # the user's own: theirs to keep
            else:
                # Inserted as filterwarnings does but for its ``_filters_mutated()``: that bumps the
                # filters' version, which empties every module's record of warnings shown, so that
                # the user's "once" / "default" warnings came again after each of our blocks (the
                # torch.func path enters one per decoder evaluation). An "ignore" verdict is never
                # recorded, so nothing recorded needs forgetting when the filter comes or goes.
                warnings.filters.insert(0, item)
                entry = _OPEN[key] = [item, 0]
        entry[1] += 1
    try:
        yield
    finally:
        with _LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                del _OPEN[key]
                if entry[0] is not None and entry[0] in warnings.filters:
                    warnings.filters.remove(entry[0])
