"""The ``"triton"`` implementations of the fastgeo operators (one kernel file per op).

The functions here follow the operators' schemas (``csrc/ops.cpp``): forward ops, and backward
ops taking ``output_mask`` and returning an empty (0,) tensor for each gradient not asked for.
On CUDA tensors they serve as the operators' CUDA kernels when the registry chooses Triton
(:mod:`fastgeo.ops.library`); with ``TRITON_INTERPRET=1`` (set before this package is imported)
they also run on CPU tensors through Triton's interpreter, which is how CI tests them against
the reference. Importing fastgeo never imports triton: the kernels load on first use.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from types import ModuleType

import torch
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
OPS = (
    "rbf_precision",
    "rbf_precision_backward",
    "segment_sqdist",
    "segment_sqdist_backward",
    "rbf_segment_sqdist",
    "rbf_segment_sqdist_backward",
)


def is_available() -> tuple[bool, str]:
    """(True, how) if triton imports and can run on CUDA tensors here, else (False, why)."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed (pip install triton)"
    if not torch.cuda.is_available():
        return False, "no CUDA device (TRITON_INTERPRET=1 runs the kernels on CPU tensors, for tests)"
    return True, "Triton kernels on CUDA"


def _kernels(name: str) -> ModuleType:
    # Deferred so TRITON_INTERPRET can be set after `import fastgeo`, before the first launch.
    return importlib.import_module(f".{name}", __name__)


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


def _no_param_grads(mask: Sequence[bool], op: str) -> None:
    if mask[1] or mask[2]:
        raise NotImplementedError(
            f"fastgeo triton {op}: gradients for centers/gammas are not implemented; "
            "use fastgeo.use_backend('reference') to differentiate them"
        )


def rbf_precision(z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor) -> Tensor:
    """z (P, d), centers (K, d), gammas (K,), weights (D, K), zeta (D,) -> beta (P, D)."""
    return _kernels("_rbf_precision").forward(z, centers, gammas, weights, zeta)


def rbf_precision_backward(
    grad: Tensor, z: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, output_mask: Sequence[bool]
) -> tuple[Tensor, ...]:
    """grad (P, D) -> grads of (z, centers, gammas, weights, zeta), masked."""
    _no_param_grads(output_mask, "rbf_precision_backward")
    k = _kernels("_rbf_precision")
    gz = k.backward_z(grad, z, centers, gammas, weights) if output_mask[0] else _empty(z)
    gw = grad.transpose(0, 1) @ k.features(z, centers, gammas) if output_mask[3] else _empty(z)
    gzeta = grad.sum(0) if output_mask[4] else _empty(z)
    return gz, _empty(z), _empty(z), gw, gzeta


def segment_sqdist(x: Tensor) -> Tensor:
    """x (B, N, D) -> (B, N-1)."""
    return _kernels("_segment_sqdist").forward(x)


def segment_sqdist_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad (B, N-1), x (B, N, D) -> grad_x (B, N, D)."""
    return _kernels("_segment_sqdist").backward(grad, x)


def rbf_segment_sqdist(
    points: Tensor, centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor
) -> Tensor:
    """points (B, N, d) -> (B, N-1), fused (no (B, N, D) tensor)."""
    return _kernels("_rbf_segment_sqdist").forward(points, centers, gammas, weights, zeta)


def rbf_segment_sqdist_backward(
    grad: Tensor,
    points: Tensor,
    centers: Tensor,
    gammas: Tensor,
    weights: Tensor,
    zeta: Tensor,
    output_mask: Sequence[bool],
) -> tuple[Tensor, ...]:
    """grad (B, N-1) -> grads of (points, centers, gammas, weights, zeta), masked."""
    _no_param_grads(output_mask, "rbf_segment_sqdist_backward")
    gp, gw, gzeta = _kernels("_rbf_segment_sqdist").backward(
        grad, points, centers, gammas, weights, zeta, bool(output_mask[3]), bool(output_mask[4])
    )
    e = _empty(points)
    return (
        (gp if output_mask[0] else e),
        e,
        e,
        (gw if output_mask[3] else e),
        (gzeta if output_mask[4] else e),
    )
