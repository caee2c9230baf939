"""Argument checks shared by the public API: clear errors that name the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)


def tensor(name: str, value: object, ndim: int | None = None, min_ndim: int | None = None) -> Tensor:
    """``value`` as a floating tensor (float32/float64) of the given rank, else a clear error."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if min_ndim is not None and value.dim() < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(value.shape)}"
        )
    return value


def same_dtype_device(named: Sequence[tuple[str, Tensor]]) -> None:
    """All tensors share the first one's dtype and device."""
    first_name, first = named[0]
    for name, t in named[1:]:
        if t.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but {first_name} has {first.dtype}; "
                "convert them to one dtype"
            )
        if t.device != first.device:
            raise ValueError(
                f"{name} is on {t.device} but {first_name} is on {first.device}; "
                "move them to one device"
            )


def eval_mode(name: str, module: object) -> None:
    """``module``, if an ``nn.Module``, has no dropout or batch-statistics normalization left in
    training mode: the decoder would be random, or depend on which points share its batch.
    (Instance norms without running statistics compute the same in both modes.)"""
    if not isinstance(module, torch.nn.Module):
        return
    for sub_name, sub in module.named_modules():
        if (
            sub.training
            and isinstance(sub, TRAINING_DEPENDENT)
            and getattr(sub, "track_running_stats", True)
        ):
            where = f" ({sub_name!r})" if sub_name else ""
            raise ValueError(
                f"{name} is in training mode: its {type(sub).__name__}{where} makes the decoder "
                "random or dependent on its batch; call .eval() on the decoder first"
            )


TRAINING_DEPENDENT = (
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.modules.batchnorm._BatchNorm,
    torch.nn.modules.instancenorm._InstanceNorm,
)


def autograd_enabled(caller: str) -> None:
    """Raise where autograd is off for good: the solvers take reverse-mode gradients of the
    energy (``torch.no_grad()`` is fine, they turn it back on; ``torch.inference_mode()`` is not)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{caller} needs autograd and cannot run inside torch.inference_mode(); "
            "call it outside that block (torch.no_grad() around it is fine)"
        )


def outside_autocast(caller: str) -> None:
    """Raise inside ``torch.autocast``: the metric's ops and solvers take float32 or float64, and a
    decoder run in bfloat16 / float16 would round its Jacobians far beyond the solver's tolerance."""
    for kind in ("cpu", "cuda"):
        if torch.is_autocast_enabled(kind):
            raise RuntimeError(
                f"{caller} cannot run inside torch.autocast({kind!r}): the metric needs the decoder in "
                f"float32 or float64; call it outside that block, or within "
                f"torch.autocast({kind!r}, enabled=False)"
            )


def not_transformed(caller: str, named: Sequence[tuple[str, Tensor]]) -> None:
    """No tensor is a torch.func transform's (vmap, grad, jvp): the solver's iterations, kernels
    and data-dependent stopping cannot run under them."""
    wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    for name, t in named:
        if wrapped is not None and isinstance(t, Tensor) and wrapped(t):
            raise TypeError(
                f"{caller}: {name} is a tensor of a torch.func transform (vmap, grad, jvp); "
                f"{caller} runs outside torch.func: use torch.autograd (lengths are differentiable in "
                "their end points) and a loop or a batch in place of vmap"
            )


def finite(name: str, t: Tensor) -> None:
    """No NaN or inf in ``t`` (one host sync: use at API boundaries, not in loops)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")


def rbf_params(
    centers: Tensor, gammas: Tensor, weights: Tensor, zeta: Tensor | float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shapes, dtypes and devices of RBF parameters; returns them with ``zeta`` as a (D,) tensor."""
    tensor("centers", centers, ndim=2)
    tensor("gammas", gammas, ndim=1)
    tensor("weights", weights, ndim=2)
    K, _ = centers.shape
    D = weights.shape[0]
    if gammas.shape[0] != K:
        raise ValueError(f"gammas must have shape (K,) = ({K},) to match centers, got {tuple(gammas.shape)}")
    if weights.shape[1] != K:
        raise ValueError(
            f"weights must have shape (D, K) with K = {K} (the number of centers), "
            f"got {tuple(weights.shape)}"
        )
    if isinstance(zeta, numbers.Real) and not isinstance(zeta, bool):
        zeta = torch.full((D,), float(zeta), dtype=weights.dtype, device=weights.device)
    if not isinstance(zeta, Tensor):
        kind = type(zeta).__name__
        raise TypeError(f"zeta must be a number or a float tensor of shape () or (D,), got {kind}")
    tensor("zeta", zeta)
    if zeta.dim() == 0:
        zeta = zeta.expand(D)
    elif zeta.shape != (D,):
        raise ValueError(f"zeta must be a scalar or have shape (D,) = ({D},), got {tuple(zeta.shape)}")
    same_dtype_device([("centers", centers), ("gammas", gammas), ("weights", weights), ("zeta", zeta)])
    return centers, gammas, weights, zeta


# ----------------------------------------------------------------------------- options


# Beyond any size or count a machine holds: larger integers overflowed deep inside (int64 shapes,
# knot lists, allocations) with errors that named nothing.
LARGEST = 1 << 62


def integer(name: str, value: object, minimum: int | None = None, maximum: int | None = LARGEST) -> int:
    """``value`` as an int (a Python or numpy integer, never a bool), ``>= minimum`` and ``<=
    maximum`` (by default :data:`LARGEST`; None: no bound)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:  # a tensor has __index__ but refuses it unless it holds one integer
        value = int(value.__index__())  # type: ignore[attr-defined]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        bound = "2**62 (beyond any size this machine holds)" if maximum == LARGEST else str(maximum)
        raise ValueError(f"{name} must be an integer <= {bound}, got {value}")
    return value


def seed(name: str, value: object, allow_none: bool = True) -> int | None:
    """``value`` as a seed: an integer in [0, 2**64) (what both numpy and torch take), or None
    where ``allow_none`` (fresh entropy)."""
    if value is None and allow_none:
        return None
    value = integer(name, value, 0, maximum=None)
    if value >= 1 << 64:
        raise ValueError(f"{name} must be below 2**64, got {value}")
    return value


def float_dtype(name: str, value: object) -> torch.dtype:
    """``value`` if it is a floating ``torch.dtype``."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype such as torch.float32, got {value!r}")
    return value


def nonnegative_float(name: str, value: object) -> float:
    """``value`` as a finite float >= 0 (ints and numpy numbers accepted, bools and strings not)."""
    return _finite_float(name, value, zero=True)


def positive_float(name: str, value: object) -> float:
    """``value`` as a finite float > 0 (ints and numpy numbers accepted, bools and strings not)."""
    return _finite_float(name, value, zero=False)


def _finite_float(name: str, value: object, zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (0 <= number if zero else 0 < number) or number == math.inf:
        raise ValueError(f"{name} must be finite and {'>=' if zero else '>'} 0, got {value!r}")
    return number


def boolean(name: str, value: object) -> bool:
    """``value`` if it is a bool (``True``/``False``; strings such as ``'no'`` are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def device(name: str, value: object) -> torch.device:
    """``value`` (a device name, a ``torch.device`` or a CUDA index) as a device this machine can
    compute on."""
    if isinstance(value, bool) or not isinstance(value, (str, torch.device, int)):
        raise TypeError(f"{name} must be a device such as 'cpu' or 'cuda' (or a torch.device), got {value!r}")
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name}: {value!r} is not a torch device ({e})") from e
    if dev.type == "meta":
        raise ValueError(f"{name}: {value!r} tensors hold no values to compute with")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: {value!r}, but this torch has no usable CUDA device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(f"{name}: {value!r}, but this machine has {count} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        # Every build names xpu, hpu, mps, ...; one it lacks fails on its first tensor with an
        # AssertionError or an ImportError deep in the work. (CUDA, above, without making a context.)
        try:
            torch.empty(0, device=dev)
        except Exception as e:
            reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0]  # dispatcher errors run long
            raise ValueError(
                f"{name}: {value!r}, but this torch cannot make tensors there ({type(e).__name__}: {reason})"
            ) from e
    return dev
