"""Worker processes for all-pairs runs: chunks split over forked processes of one thread each.

Threads of one process share every small parallel region of the solver: on a 2-core machine
two threads solve 48 digits pairs 1.3x faster than one, and 1.7x *slower* than one when another
process keeps a core busy (each region waits for the thread that lost its core). Pairs are
independent, so processes of one thread each split them instead: no region waits for another
process, and a busy core slows only the worker on it, which then takes fewer chunks (workers
take the next chunk from a shared counter). Workers are forked (Linux, CPU tensors), so the
metric is not pickled; they write into shared-memory tensors the parent allocated.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch

from .. import _checks
from .chunks import dist_info

CHUNKS_PER_WORKER = 4  # chunks per worker at least, so that a slow worker's share can move
MIN_CHUNK = 32  # ... unless chunks would get smaller than this (batches keep the solver efficient)


def split_size(n_items: int, limit: int, workers: int) -> int:
    """Items per chunk: at most ``limit`` (the memory budget's), and few enough that each of
    ``workers`` (all processes together) gets ``CHUNKS_PER_WORKER`` chunks, down to
    ``MIN_CHUNK``."""
    if workers <= 1:
        return limit
    return max(1, min(limit, max(MIN_CHUNK, -(-n_items // (CHUNKS_PER_WORKER * workers)))))


def default_workers(device: torch.device, distributed: bool) -> int:
    """As many workers as torch has threads (one thread each) on a Linux CPU run outside
    ``torch.distributed``; 1 elsewhere (fork is unsafe with CUDA and on macOS)."""
    if device.type != "cpu" or distributed or not sys.platform.startswith("linux"):
        return 1
    return max(1, torch.get_num_threads())


def check_workers(workers: object, device: torch.device, distributed: bool) -> int:
    """The ``workers`` option: None (see :func:`default_workers`) or an integer >= 1 (> 1 only
    for CPU runs on Linux)."""
    if workers is None:
        return default_workers(device, distributed)
    workers = _checks.integer("workers", workers, 1)
    if workers > 1 and (device.type != "cpu" or not sys.platform.startswith("linux")):
        raise ValueError("workers > 1 needs a CPU metric on Linux (worker processes are forked)")
    return workers


def run_in_workers(
    workers: int,
    task: Callable[[int, int], None],
    done: torch.Tensor,
    progress: Callable[[int], None] | None = None,
) -> None:
    """``task(w, workers)`` in ``workers`` forked processes of one thread (``w = 0..workers-1``),
    or in this process when ``workers == 1``. Workers report finished units in the shared
    ``done`` (workers,) tensor, which ``progress(n)`` is told of as it grows. A worker's error is
    raised here with its traceback."""
    if workers == 1:
        task(0, 1)
        return
    ctx = multiprocessing.get_context("fork")
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=_child, args=(task, w, workers, errors), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    seen = 0
    watched = False
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.2)
            now = int(done.sum())
            if progress is not None and now > seen:
                progress(now - seen)
            seen = now
            if not errors.empty():
                break
        watched = True
    finally:
        # Stopped here (Ctrl-C or a notebook's interrupt reaches this process alone) or by a
        # worker's error: the other workers stop too, before the wait (they would go on solving
        # and writing chunks otherwise).
        for p in procs:
            if p.is_alive() and (not watched or not errors.empty()):
                p.terminate()
        for p in procs:
            p.join()
    if not errors.empty():
        kind, text = errors.get()
        if isinstance(kind, type) and issubclass(kind, KeyboardInterrupt):  # Ctrl-C in a terminal
            raise KeyboardInterrupt
        message = f"fastgeo.pairwise_distances: a worker process failed:\n{text}"
        try:  # the worker's own exception type (a decoder's ValueError stays a ValueError)
            error = kind(message) if isinstance(kind, type) and issubclass(kind, Exception) else None
        except Exception:  # noqa: BLE001 - a type that takes other arguments
            error = None
        raise error if error is not None else RuntimeError(message)
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(
            f"fastgeo.pairwise_distances: a worker process ended with exit code {failed[0]} "
            "(killed, out of memory?); run again (with a checkpoint, finished chunks are kept) "
            "or with workers=1"
        )
    now = int(done.sum())
    if progress is not None and now > seen:
        progress(now - seen)


def _child(task: Callable[[int, int], None], w: int, workers: int, errors: Any) -> None:
    _die_with_parent()
    torch.set_num_threads(1)
    try:
        task(w, workers)
    except BaseException as e:
        kind = type(e)
        try:
            pickle.dumps(kind)
        except Exception:  # noqa: BLE001 - a type defined where the parent cannot find it
            kind = RuntimeError
        errors.put((kind, traceback.format_exc()))
        os._exit(1)
    os._exit(0)  # no atexit handlers of the parent (its progress bars, its checkpoint)


def chunk_loop(chunks: list[int], workers: int, body: Callable[[int, int], int], bar: Any) -> None:
    """``body(c, w)`` for the chunks ``c`` of this process, split over ``workers`` worker
    processes ``w``; ``body`` writes its results into tensors shared with the parent (see
    :func:`shared`) and returns how many units (pairs, edges) it finished, which the progress
    ``bar`` (or None) counts (times the world size under ``torch.distributed``). With
    ``workers > 1`` every chunk is solved at one thread (where fewer chunks than workers are left,
    in this process), so results do not depend on how many chunks were left to solve."""
    world = dist_info()[1]
    one_thread = workers > 1  # every chunk at one thread, however many workers are left to run
    workers = max(1, min(workers, len(chunks)))  # no idle workers
    done = shared(torch.zeros(workers, dtype=torch.int64, device="cpu"), workers)

    def advance(n: int) -> None:
        if bar is not None:
            bar.update(min(n * world, bar.total - bar.n))

    # Chunks are taken from a shared counter as workers get free: a worker whose core is busy
    # with another program takes fewer (a fixed split would wait for its share).
    taken = shared(torch.zeros(1, dtype=torch.int64, device="cpu"), workers)
    lock = multiprocessing.get_context("fork").Lock() if workers > 1 else None

    def next_chunk() -> int | None:
        if lock is None:
            k = int(taken[0])
            taken[0] += 1
        else:
            with lock:
                k = int(taken[0])
                taken[0] += 1
        return chunks[k] if k < len(chunks) else None

    def task(w: int, W: int) -> None:
        while (c := next_chunk()) is not None:
            n = body(c, w)
            done[w] += n
            if W == 1:
                advance(n)

    if workers > 1 or not one_thread:
        run_in_workers(workers, task, done, advance if workers > 1 else None)
        return
    threads = torch.get_num_threads()  # one chunk left: here, at the workers' one thread
    torch.set_num_threads(1)
    try:
        task(0, 1)
    finally:
        torch.set_num_threads(threads)


def shared(t: torch.Tensor, workers: int) -> torch.Tensor:
    """``t`` in shared memory when worker processes will write into it (in place)."""
    return t.share_memory_() if workers > 1 else t


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when its parent dies (killed runs leave no orphans that
    keep writing to a checkpoint)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
