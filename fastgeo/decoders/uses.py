"""Uses of the library, for checking recognized decoders again.

A recognized chain is checked against its decoder when its structure is first seen (its key:
modules, settings, the values a traced function reads by name). Between two calls of the user a
decoder can change in ways no key sees: a NumPy scalar or a config object's attribute it reads, an
activation or a module's ``forward`` rebound. So each chain is checked again (its values at a few
points against the decoder's) at its first evaluation in every *use*: a metric made, a solve, a
matrix, a latent graph, a measurement the user calls; not at each of the hundreds of evaluations
inside one use.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# The number of the last use begun in any thread; per thread, the use it is in and how deep (a
# use of another thread must not make this thread's calls part of it, nor begin a new use in the
# middle of this thread's solve: its chains would be checked again there, and at every
# evaluation where the two threads take turns).
_COUNT = {"use": 0}
_LOCK = threading.Lock()
_THREAD = threading.local()


def new_use() -> None:
    """A call from outside the library begins (no-op within :func:`one_use` in this thread):
    every chain is checked again at its next evaluation in this thread."""
    if getattr(_THREAD, "depth", 0) == 0:
        with _LOCK:
            _COUNT["use"] += 1
            _THREAD.use = _COUNT["use"]


@contextmanager
def one_use() -> Iterator[None]:
    """Everything inside (in this thread) is one use: chains are checked at their first
    evaluation only."""
    new_use()
    _THREAD.depth = getattr(_THREAD, "depth", 0) + 1
    try:
        yield
    finally:
        _THREAD.depth -= 1


def in_one_use(function: F) -> F:
    """``function`` with each call one use (:func:`one_use`): for the library's entry points."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_use():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def current_use() -> int:
    """The number of the use this thread is in (unique across threads; it only grows)."""
    return getattr(_THREAD, "use", 0)


def depth() -> int:
    """How many :func:`one_use` blocks this thread is in (1: a call of the user's, itself)."""
    return getattr(_THREAD, "depth", 0)
