"""``fastgeo.info()``: versions, threads and the backend each op uses here."""

from __future__ import annotations

import platform
import warnings

import torch

from ._version import __version__
from .decoders.low_precision import ENV, bfloat16_is_fast
from .ops.registry import AUTO_ORDER, OPS, availability, resolve


def info() -> str:
    """A human-readable report: versions, threads, backends available and the one each op uses."""
    lines = [
        f"fastgeo {__version__}",
        f"python {platform.python_version()}  torch {torch.__version__}",
        f"threads {torch.get_num_threads()}  cuda available {torch.cuda.is_available()}",
    ]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError:
        lines.append("triton not installed")
    lines.append("backends:")
    for name, (ok, reason) in availability().items():
        lines.append(f"  {name:10s} {'yes' if ok else 'no ':3s}  {reason}")
    lines.append("operators (torch.ops.fastgeo), and the backend each runs under 'auto':")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        if dev not in AUTO_ORDER:
            continue
        with warnings.catch_warnings():  # the report itself says when the reference is used
            warnings.simplefilter("ignore")
            chosen = ", ".join(f"{op}: {resolve(op, torch.device(dev))[0]}" for op in OPS)
        lines.append(f"  on {dev}: {chosen}")
    fast = [dev for dev in devices if bfloat16_is_fast(torch.device(dev))]
    where = ", ".join(fast) or "none"
    lines.append(f"tangents of lagged linearizations (d >= 8, float32) in bfloat16 on: {where} ({ENV})")
    return "\n".join(lines)
