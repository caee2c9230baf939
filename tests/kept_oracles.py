"""Dense oracles of the tests' small real-model samples, kept in ``data/oracles.json``.

``method="dense"`` in float64 takes 1-2 minutes on the d = 5 conv decoder's six pairs (five
default solves in float64 for its starts, then the polylines): most of the test suite's time.
The oracle does not depend on the solver under test, only on the generator file and the pairs,
so its lengths are kept under a key of both; a generator trained again, other pairs or other
oracle settings give another key, and the test computes the oracle again (slowly) instead of
reading a stale one. ``python tests/data/make_oracles.py`` writes them; the dense method itself
is tested elsewhere (great circles, the moons, the banded steps).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import fastgeo
from fastgeo.benchmarks import accuracy

ORACLES = Path(__file__).parent / "data" / "oracles.json"
DENSE = {"method": "dense", "n_points": 64, "graph": False}  # 64 nodes, no float64 graph: see the test


def key(generator_file: Path, z0: torch.Tensor, z1: torch.Tensor) -> str:
    """sha256 of the generator file, the pairs (float32 bytes) and the oracle's options."""
    h = hashlib.sha256(generator_file.read_bytes())
    h.update(z0.float().numpy().tobytes() + z1.float().numpy().tobytes())
    h.update(json.dumps(DENSE, sort_keys=True).encode())
    return h.hexdigest()


def compute(
    metric: fastgeo.ExpectedMetric, z0: torch.Tensor, z1: torch.Tensor
) -> tuple[torch.Tensor, list[str]]:
    """The dense oracle's lengths (float64, measured by ``benchmarks.accuracy``) and statuses."""
    m64 = metric.to(torch.float64)
    with torch.no_grad():
        dense = fastgeo.geodesics(m64, z0.double(), z1.double(), progress=False, **DENSE)
        return accuracy.oracle_lengths(m64, dense), dense.status.tolist()


def dense_lengths(
    name: str, generator_file: Path, metric: fastgeo.ExpectedMetric, z0: torch.Tensor, z1: torch.Tensor
) -> torch.Tensor:
    """The oracle's lengths (B,) float64: kept ones where the key matches, else computed."""
    kept = json.loads(ORACLES.read_text()).get(name) if ORACLES.exists() else None
    if kept is not None and kept["key"] == key(generator_file, z0, z1):
        return torch.tensor(kept["lengths"], dtype=torch.float64)
    lengths, status = compute(metric, z0, z1)
    assert all(s == "converged" for s in status), status
    return lengths
