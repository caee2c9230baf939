"""Worker processes of an all-pairs run stop with their parent: Ctrl-C reaching the parent alone
(a notebook's interrupt, ``kill -INT``) ends every worker before the call returns, and Ctrl-C in a
worker is a KeyboardInterrupt in the parent, not a worker failure."""

import multiprocessing
import sys
import time

import pytest
import torch

from fastgeo.pairwise.workers import run_in_workers, shared

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked (Linux)")


def endless(done):
    def task(w, workers):
        while True:
            done[w] += 1
            time.sleep(0.01)

    return task


def test_interrupt_in_the_parent_stops_every_worker():
    done = shared(torch.zeros(2, dtype=torch.int64), 2)

    def progress(n):
        raise KeyboardInterrupt  # as Ctrl-C arriving while the parent watches the workers

    with pytest.raises(KeyboardInterrupt):
        run_in_workers(2, endless(done), done, progress)
    assert multiprocessing.active_children() == []
    seen = int(done.sum())
    time.sleep(0.2)
    assert int(done.sum()) == seen  # nobody is still working


def test_interrupt_in_a_worker_is_a_keyboard_interrupt():
    done = shared(torch.zeros(2, dtype=torch.int64), 2)

    def task(w, workers):
        if w == 0:
            raise KeyboardInterrupt
        endless(done)(w, workers)

    with pytest.raises(KeyboardInterrupt):
        run_in_workers(2, task, done)
    assert multiprocessing.active_children() == []
