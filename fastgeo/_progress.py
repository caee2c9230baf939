"""Progress bars: tqdm when it is installed (the optional ``progress`` extra), else nothing.

Off a terminal (a log file of a cluster job, CI) a bar is redrawn every OFF_TERMINAL_INTERVAL
seconds instead of every TERMINAL_INTERVAL, each redraw on a line of its own (a terminal's
carriage returns would join them into one line of the log); notebooks get their widget."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")

TERMINAL_INTERVAL = 0.2  # seconds between redraws
OFF_TERMINAL_INTERVAL = 30.0
DELAY = 10.0  # seconds a call runs before its bar shows, where the caller did not ask for one


def _tqdm() -> Any:
    """tqdm's class for here (the notebook widget under Jupyter), or None without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class _Lines:
    """A stream for tqdm off a terminal: every redraw written as one line, its carriage returns
    and padding dropped, blank redraws (a bar erased) skipped."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def _lively() -> bool:
    """Whether bars redraw in place: on a terminal or in a notebook."""
    tqdm = _tqdm()
    notebook = tqdm is not None and any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    stream = sys.stderr
    return notebook or (stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _style() -> dict[str, Any]:
    """tqdm's keyword arguments for here: its redraw interval and, off a terminal, a line stream."""
    if _lively():
        return {"mininterval": TERMINAL_INTERVAL}
    return {"mininterval": OFF_TERMINAL_INTERVAL, "file": _Lines(sys.stderr)}


def progress_iter(it: Iterable[T], enabled: bool, desc: str, delay: float = 0.0) -> Iterator[T]:
    """``it`` wrapped in a tqdm bar when ``enabled`` and tqdm is installed, shown once it has run
    ``delay`` seconds."""
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return iter(it)
    # Off a terminal a bar erased when done would leave its log at the first line (0 %).
    return iter(tqdm(it, desc=desc, leave=not _lively(), delay=delay, **_style()))


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "it", leave: bool = True) -> Any:
    """A tqdm bar of ``total`` units (``.update(n)``, ``.close()``), or None without tqdm;
    ``leave=False``: erased when closed."""
    tqdm = _tqdm() if enabled else None
    if tqdm is None:
        return None
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, leave=leave, **_style())


# The pulse of the call whose bar is open in this thread (None: no bar): decoder work anywhere in
# the call, nested calls included, redraws it.
_PULSE: ContextVar[Callable[[int], None] | None] = ContextVar("fastgeo_pulse", default=None)


# What the call is doing now, where it is not solving curves (shown beside the decoder work).
_PHASE: ContextVar[str | None] = ContextVar("fastgeo_phase", default=None)


@contextlib.contextmanager
def phase(label: str) -> Iterator[None]:
    """Names a long stage of the call whose bar is open (e.g. building the latent graph): its
    redraws show ``label`` until the stage ends; a stage inside another shows both
    (``"smoothed decoder 1/2; race: 96 starts"``)."""
    outer = _PHASE.get()
    token = _PHASE.set(label if outer is None else f"{outer}; {label}")
    try:
        yield
    finally:
        _PHASE.reset(token)


def pulse(points: int) -> None:
    """Decoder work done (``points`` latent points or tangents through the mean): redraws the
    bar of the call it belongs to (its elapsed time and the work so far), if one is open."""
    beat = _PULSE.get()
    if beat is not None:
        beat(points)


@contextlib.contextmanager
def call_bar(
    total: int, enabled: bool, desc: str, unit: str, delay: float, leave: bool = False, initial: int = 0
) -> Iterator[Any]:
    """A bar of ``total`` units for one long call (``None`` without tqdm, when not ``enabled``, or
    inside another call's bar: a call made by a call adds to the outer bar), shown once the call
    has run ``delay`` seconds (``leave``: kept on screen when done; off a terminal always, so that
    a log ends on the call's last line, not its first); while it is open, :func:`pulse` redraws it
    between its updates, so that a single batch of slow curves shows that it runs, and how much
    decoder work it did; its last line shows the call's total decoder work. ``initial``: units
    done before the call (read back from a checkpoint), out of its rate and time left."""
    tqdm = _tqdm() if enabled and _PULSE.get() is None else None
    if tqdm is None:
        yield None
        return
    style = _style()
    leave = leave or not _lively()
    shape = {"total": total, "initial": initial, "unit": unit, "desc": desc, "dynamic_ncols": True}
    bar = tqdm(**shape, leave=leave, delay=delay, **style)
    start, done, last = time.monotonic(), [0], [0.0]

    def beat(points: int) -> None:
        done[0] += points
        now = time.monotonic()
        if now - start >= delay and now - last[0] >= style["mininterval"]:
            last[0] = now
            stage = _PHASE.get()
            work = f"decoder points {done[0]:.3g}"
            bar.set_postfix_str(work if stage is None else f"{stage}, {work}", refresh=True)

    token = _PULSE.set(beat)
    try:
        yield bar
    finally:
        _PULSE.reset(token)
        if done[0]:  # not the stage of the last redraw, up to 30 s old off a terminal
            bar.set_postfix_str(f"decoder points {done[0]:.3g}", refresh=False)
        if last[0]:  # drawn by the redraws above alone, tqdm takes the bar for never shown and
            # closes it without its last line (not set at each redraw: its rate would count from it)
            bar.last_print_t = max(bar.last_print_t, getattr(bar, "_time", time.time)())
        bar.close()
