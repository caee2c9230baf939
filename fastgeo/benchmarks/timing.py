"""Timing and environment records shared by the layers."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

from .._version import __version__


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that wall time covers it (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], Any],
    *,
    rounds: int,
    warmup: int = 1,
    device: torch.device | str = "cpu",
    min_round_s: float = 0.005,
    min_total_s: float = 0.0,
    max_rounds: int = 50,
) -> dict[str, float | int]:
    """Seconds per call of ``fn``: {"min", "median", "rounds", "number"}.

    After ``warmup`` calls, each of ``rounds`` rounds times ``number`` back-to-back calls;
    ``number`` is chosen so that a round lasts at least ``min_round_s`` (timer resolution and
    call overhead would dominate a single sub-millisecond call). Rounds go on past ``rounds``
    (up to ``max_rounds``) until ``min_total_s`` seconds were timed: on a shared machine a
    millisecond call can lose a whole scheduler slice to another process, so fast calls get
    more chances at a clean round. Min is the statistic to compare: every other effect only
    adds time.
    """
    t = float("inf")
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        fn()
        sync(device)
        t = min(t, time.perf_counter() - start)
    number = 1 if t >= min_round_s else min(100, math.ceil(min_round_s / max(t, 1e-7)))
    times: list[float] = []
    while len(times) < rounds or (sum(times) * number < min_total_s and len(times) < max_rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / number)
    return {"min": min(times), "median": statistics.median(times), "rounds": len(times), "number": number}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_commit() -> str:
    """HEAD of the git checkout fastgeo is imported from ("-dirty" if tracked files changed),
    or "unknown" (an installed wheel, or no git)."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device | str) -> dict[str, Any]:
    """What every result records about where it ran."""
    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    dev = torch.device(device)
    return {
        "fastgeo_version": __version__,
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "triton_version": triton_version,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
