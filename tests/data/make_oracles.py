"""Compute the dense oracles of the tests' real-model samples and keep them in ``oracles.json``
(read by ``tests/kept_oracles.py``; run again after training the generators again)::

    python tests/data/make_oracles.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import kept_oracles  # noqa: E402
from test_real_models import DATA, _pairs  # noqa: E402


def main() -> None:
    out = {}
    for name in ("conv5_small", "mlp12_small"):
        metric, z0, z1 = _pairs(name)
        lengths, status = kept_oracles.compute(metric, z0, z1)
        out[name] = {
            "key": kept_oracles.key(DATA / f"{name}.safetensors", z0, z1),
            "lengths": lengths.tolist(),
            "status": status,
            "torch": torch.__version__,
        }
        print(name, [f"{v:.6f}" for v in lengths.tolist()], status, flush=True)
    kept_oracles.ORACLES.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
