"""The examples in ``examples/`` run as a user runs them: a fresh process, the public API only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=EXAMPLES.parent, timeout=600
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_own_decoder_example():
    out = _run(str(EXAMPLES / "own_decoder.py"))
    assert "all converged:         True" in out
    assert "symmetric: True" in out


def test_conv_vae_example(tmp_path):
    pytest.importorskip("matplotlib")
    out = _run(str(EXAMPLES / "conv_vae.py"), "--quick", "--out", str(tmp_path))
    # The decoder takes the stacked forward mode, not the torch.func fallback.
    assert "Jacobians by the stacked forward mode" in out
    pair = r"pair \d \(\w+ -> \w+\): ([\d.]+) \((\w+)\), fast ([\d.]+) \((\w+)\), line ([\d.]+)"
    pairs = re.findall(pair, out)
    assert len(pairs) == 2
    for geo, status, fast, fast_status, line in pairs:
        assert status == "converged" and fast_status == "converged"
        # No geodesic is longer than the straight line, nor shorter than the default's by much.
        assert float(geo) <= float(line) and float(fast) <= float(line)
        assert float(fast) >= float(geo) * (1 - 1e-3)
    assert "2 x 2 distance matrix" in out
    assert (tmp_path / "conv_vae_paths.png").stat().st_size > 0


def test_cells_vae_example():
    out = _run(str(EXAMPLES / "cells_vae.py"), "--quick")
    # A Gaussian decoder: measured through its last layer's triangular factor.
    assert "its 128 x 128 triangular factor" in out
    found = re.search(r"(\d+) geodesics, (\d+) converged, 0 not", out)
    assert found is not None and found.group(1) == found.group(2) == "66"  # 12 cells, 2 per type
    assert re.search(r"geodesic / Euclidean latent distance: [\d.]+-[\d.]+", out)
    chord = r"1500 x 1500 chord estimates in \d+ s: chord estimates over geodesics by method='fast' on 20 "
    assert re.search(chord, out)
