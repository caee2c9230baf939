"""The ``"triton"`` backend: Triton kernels for the three ops (one file per op).

Runs on CUDA tensors; with ``TRITON_INTERPRET=1`` (set before this package is imported) also on
CPU tensors through Triton's interpreter, which is how CI tests the kernels. Importing fastgeo
never imports triton: the kernels load on the first op call.
"""

from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch
from torch import Tensor

name = "triton"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
devices: tuple[str, ...] = ("cuda", "cpu") if INTERPRET else ("cuda",)


def is_available() -> tuple[bool, str]:
    """(True, how) if triton imports and can run here, else (False, why)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if INTERPRET:
        return True, "Triton interpreter (TRITON_INTERPRET=1): CPU tensors too, slow"
    if not torch.cuda.is_available():
        return False, "no CUDA device (set TRITON_INTERPRET=1 to interpret kernels on the CPU)"
    return True, "Triton on CUDA"


def _lib() -> ModuleType:
    # Deferred so TRITON_INTERPRET can be set after `import fastgeo` and before the first launch.
    from . import _library

    return _library


def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """z (P, d) -> beta (P, D); see :func:`fastgeo.ops.rbf_precision`."""
    return _lib().rbf_precision(z, centers, gammas, weights, zeta)


def segment_sqdist(x: Tensor) -> Tensor:
    """x (B, N, D) -> (B, N-1); see :func:`fastgeo.ops.segment_sqdist`."""
    return _lib().segment_sqdist(x)


def rbf_segment_sqdist(points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor,
                       zeta: Tensor) -> Tensor:
    """points (B, N, d) -> (B, N-1), fused; see :func:`fastgeo.ops.rbf_segment_sqdist`."""
    return _lib().rbf_segment_sqdist(points, centers, gammas, weights, zeta)
