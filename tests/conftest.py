"""Shared test fixtures and session set-up (the shared helpers are in ``helpers.py``, the analytic
generators in ``analytic.py``).

The ``slow`` marker (declared in pyproject.toml) selects, it does not exclude: the default run,
``python -m pytest -q -n 2 tests`` (README's), runs every test, slow ones included, and that is
the run CI must pass. ``slow`` marks tests that take several seconds and whose coverage faster
tests duplicate; ``-m "not slow"`` leaves them out for a quicker run while developing.
"""

import os

import pytest
import torch

# Without a GPU the Triton kernels are tested in Triton's interpreter. fastgeo.triton reads
# TRITON_INTERPRET when it is imported (by any test module that imports fastgeo), so it is set
# here, before the first test module is collected; TRITON_INTERPRET=0 opts out.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# README's test command runs two pytest workers (pytest-xdist). Each worker computes with one
# intra-op thread, and the processes the tests start inherit OMP_NUM_THREADS=1: two workers of as
# many threads as cores would oversubscribe the cores, and OpenMP's spinning threads then slow
# every test several times over. A test that needs more threads sets them itself.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription slowdowns on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
