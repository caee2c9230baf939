"""Checks of a user's decoder mean, made once when a metric is built: errors that say what is
wrong with the decoder rather than where torch noticed it.

- :func:`call`: the mean on a probe; where it raises, a module of another dtype or device than
  the codes is named; :func:`not_a_tensor_hint` says what to pass for a (mu, logvar) tuple, a
  distribution or a dict;
- :func:`uncompiled`: the module or function under a ``torch.compile`` wrapper;
- :func:`eval_mode`: no dropout or batch statistics left in training mode in a mean that is a
  module; :func:`still_in_eval`: none of those the metric found in eval mode behind a method or
  a function set to training mode since (:func:`._mean_reach.layers_in_eval`); :func:`modules_of` finds the
  modules behind a mean given as a function (a bound method, a lambda or closure around a
  module), named in the messages of :func:`call`;
- :func:`deterministic`: the same codes give the same output, whatever else shares the batch;
- :func:`differentiable`: gradients flow from the output to the codes, and along one direction
  they agree with central differences (a decoder that detaches part of its graph would give
  lengths that are wrong yet converged).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import _checks
from ._mean_reach import modules_of

# Held while torch.fx or torch.export reads a decoder (fastgeo.decoders.tracing) and while a metric
# probes its mean when made: both patch or call modules, and fx patches nn.Module.__call__ for the
# whole process (another thread's module calls during a trace fail with fx's NameError).
TRACING = threading.RLock()

# Relative difference between two calls on the same codes (or one code alone and in a batch)
# above which the mean is random / batch-dependent. Rounding of a deterministic decoder on the CPU
# (BLAS or oneDNN blocking by batch size) is ~1e-6 in float32; on a GPU, convolutions may run in
# TF32 (10-bit mantissas) by algorithms chosen per batch size, hence the looser bound there; a
# dropout layer in training mode changes outputs by percents.
SAME_OUTPUT = 1e-3
SAME_OUTPUT_ELSEWHERE = 2e-2
# Relative disagreement between the mean's directional derivative by autograd and by central
# differences above which a warning says its gradients are wrong. Central differences at the
# step below agree to ~1e-4 in float32 on smooth decoders (kinks of ReLU units crossed within
# the step move it a little); a detached part of the decoder moves it by its share of the output.
DERIVATIVE_MISMATCH = 0.1
LARGER_BATCH = 66  # codes of the last batch a mean is checked on: its first three, and others


def not_a_tensor_hint(value: object) -> str:
    """What to pass instead, for a mean that returned ``value`` (not a tensor): VAE decoders often
    return (mu, logvar), a distribution or a dict. Empty where there is nothing to say."""
    if isinstance(value, tuple | list):
        return " (for a VAE's (mu, logvar) pass a function returning mu, lambda z: decoder(z)[0])"
    if isinstance(value, torch.distributions.Distribution):
        return " (pass a function returning its mean, lambda z: decoder(z).mean)"
    if isinstance(value, dict):
        return f" with keys {list(value)[:6]} (pass a function returning the mean, lambda z: decoder(z)[key])"
    return ""


def probe_outputs(
    name: str, mean: Callable[[Tensor], Tensor], three: Tensor, weights: Tensor
) -> list[Tensor]:
    """The mean's outputs (P, D) on one code and on a batch of three (``three`` (3, d), a mean
    whose output width depends on the batch would pass one probe), checked against the
    precision's ``weights`` (D, K): a tensor, D values per code, their dtype and device."""
    probes = []
    for z in (three[:1], three):
        probe = call(name, mean, z)
        if not isinstance(probe, Tensor) or probe.dim() < 1:
            got = f"a {type(probe).__name__}" if not isinstance(probe, Tensor) else "a 0-d tensor"
            hint = not_a_tensor_hint(probe)
            raise TypeError(f"{name} must return a tensor of shape (..., D), got {got}{hint}")
        D = weights.shape[0]
        if probe.shape != (z.shape[0], D):
            raise ValueError(
                f"{name} maps (P, d={z.shape[1]}) = {tuple(z.shape)} to shape {tuple(probe.shape)}, but the "
                f"precision's weights have D = {D} rows: expected ({z.shape[0]}, {D}) (or images (P, ...) "
                f"of {D} values each)"
            )
        if probe.dtype != weights.dtype or probe.device != weights.device:
            raise TypeError(
                f"{name} returns {probe.dtype} on {probe.device} but the precision is {weights.dtype} on "
                f"{weights.device}; use one dtype and device"
            )
        probes.append(probe)
    return probes


def check_codes(centers: Tensor) -> Tensor:
    """(3, d) codes a mean is checked on: the first RBF center of ``centers`` (K, d) and two
    asymmetric offsets (batch means move)."""
    one = centers[:1].detach()
    return torch.cat([one, one + 0.5, one - 0.3])


def still_in_eval(name: str, metric: Any) -> None:
    """Refuse a call where one of the layers :func:`._mean_reach.layers_in_eval` found in eval mode when
    ``metric`` (an :class:`~fastgeo.ExpectedMetric`) was made is in training mode now (a
    ``.train()`` since, on a VAE whose decoder is a method or a function) and makes its mean random
    or batch-dependent on :func:`check_codes`: a layer off the decoder's path (an encoder's
    dropout, trained against a frozen decoder) is left be."""
    switched = [(path, layer) for path, layer in getattr(metric, "_eval_layers", []) if layer.training]
    if not switched:
        return
    which = ", ".join(f"{type(layer).__name__} {path}" for path, layer in switched[:4])
    # Only dropouts are tried: a batch norm in training mode would update its running statistics,
    # changing the user's model, so one that was switched is refused without a call.
    if all(isinstance(layer, torch.nn.modules.dropout._DropoutNd) for _, layer in switched):
        z = check_codes(metric.precision.centers)
        try:
            with torch.no_grad():
                out, first = call(name, metric.mean, z), call(name, metric.mean, z[:1])
                deterministic(name, metric.mean, z, out, first)
            return
        except ValueError:  # random, or batch-dependent
            pass
    raise ValueError(
        f"{name}: layers in eval mode when the metric was made are in training mode now ({which}"
        f"{', ...' if len(switched) > 4 else ''}; a .train() since?) and the decoder is random or "
        "depends on its batch: call .eval() on the model first"
    )


def _module_itself(mean: Callable[[Tensor], Tensor]) -> torch.nn.Module | None:
    """The module ``mean`` is, or wraps (through ``__wrapped__``); None for a method or a
    function, whose modules may hold more than the decoder (a whole VAE, its encoder first)."""
    while not isinstance(mean, torch.nn.Module):
        inner = getattr(mean, "__wrapped__", None)
        if not callable(inner) or inner is mean:
            return None
        mean = inner
    return mean


def uncompiled(mean: Callable) -> Callable:
    """The module or function that ``torch.compile`` wrapped in ``mean`` (``mean`` itself if it
    is not compiled). fastgeo differentiates a decoder by its own kernels (or ``torch.func``,
    under which a compiled module recompiles for every new shape: 400x slower on a small MLP),
    and compilation does not change what the decoder computes. ValueError for a compiled module
    with hooks of its own (they would be lost)."""
    for _ in range(8):  # a compiled module of a compiled function ...
        if isinstance(mean, torch.nn.Module) and type(mean).__name__ == "OptimizedModule":
            inner = getattr(mean, "_orig_mod", None)
            if mean._forward_hooks or mean._forward_pre_hooks:
                raise ValueError(
                    "mean is a torch.compile'd module with forward hooks on the compiled wrapper: fastgeo "
                    "differentiates the module uncompiled (mean._orig_mod), without those hooks; register "
                    "them on the module itself (mean._orig_mod.register_forward_hook(...)) and pass it"
                )
        elif not isinstance(mean, torch.nn.Module):
            inner = getattr(mean, "_torchdynamo_orig_callable", None)
            # a bound method (a compiled module's forward too) comes wrapped in a function of
            # dynamo's own: the method is its ``__wrapped__``
            code = getattr(inner, "__code__", None)
            wrapped = getattr(inner, "__wrapped__", None)
            if code is not None and "_dynamo" in code.co_filename and callable(wrapped):
                inner = wrapped
        else:
            inner = None
        if not callable(inner):
            return mean
        mean = inner
    return mean


def eval_mode(name: str, mean: Callable[[Tensor], Tensor]) -> None:
    """:func:`fastgeo._checks.eval_mode` on the mean where it is a module (or wraps one). The
    modules behind a method or a function are not checked: they may hold more than the decoder
    (a whole VAE whose encoder has dropout); :func:`deterministic` catches what reaches the output."""
    module = _module_itself(mean)
    if module is not None:
        _checks.eval_mode(name, module)


def call(
    name: str, mean: Callable[[Tensor], Tensor], z: Tensor, codes: str = "the codes (the precision's)"
) -> object:
    """``mean(z)`` without gradients. Where the mean raises torch's error about mixed dtypes or
    devices and one of its modules (of :func:`modules_of`) has floating parameters of another
    dtype or device than ``z``, a TypeError / ValueError names both (torch's error, chained,
    names neither); where it raises torch's RuntimeError and is (or wraps) a module whose first
    layer cannot take ``z``'s width (:func:`_first_layer_unlike`), a ValueError names both widths;
    any other exception of the mean reaches the caller unchanged, with a note on what it was
    called on; ``codes`` says where ``z``'s dtype and device come from."""
    try:
        with torch.no_grad():
            return mean(z)
    except Exception as error:
        mismatch = _parameters_unlike(name, mean, z, codes)
        if mismatch is not None and any(word in str(error) for word in _MISMATCH_WORDS):
            raise mismatch from error
        width = _first_layer_unlike(name, mean, z, codes) if isinstance(error, RuntimeError) else None
        if width is not None:
            raise width from error
        if hasattr(error, "add_note"):  # Python >= 3.11
            training = [type(m).__name__ for m in modules_of(mean) if _in_training(m)]
            error.add_note(
                f"(raised by {name} called on {codes}: shape {tuple(z.shape)}, {z.dtype}, on "
                f"{z.device}"
                + (f"; note: {mismatch}" if mismatch is not None else "")
                + (f"; note: {training[0]} has layers in training mode: call .eval()?" if training else "")
                + ")"
            )
        raise


# Words of torch's errors about mixed dtypes or devices ("mat1 and mat2 must have the same dtype",
# "Input type (double) and bias type (float) should be the same", "expected scalar type Double",
# "Expected all tensors to be on the same device"): only such an error of the mean is replaced
# by one naming the mismatch; any other reaches the caller as the mean raised it.
_MISMATCH_WORDS = ("dtype", "type (", "scalar type", "Float", "Double", "Half", "device")


def _in_training(module: torch.nn.Module) -> bool:
    try:
        _checks.eval_mode("", module)
    except ValueError:
        return True
    return False


def _parameters_unlike(
    name: str, mean: Callable[[Tensor], Tensor], z: Tensor, codes: str
) -> Exception | None:
    """The error to raise if the first floating parameter of a module of ``mean`` has another dtype
    or device than ``z``, else None."""
    for module in modules_of(mean):
        p = next((p for p in (*module.parameters(), *module.buffers()) if p.is_floating_point()), None)
        if p is None:
            continue
        if p.dtype != z.dtype:
            return TypeError(
                f"{name} has {p.dtype} parameters but {codes} are {z.dtype}; convert one of "
                f"them (e.g. decoder.to({z.dtype}))"
            )
        if p.device != z.device:
            return ValueError(
                f"{name} has parameters on {p.device} but {codes} are on {z.device}; move them to one device"
            )
    return None


_CONVS = (torch.nn.modules.conv._ConvNd,)  # Conv1d-3d and ConvTranspose1d-3d


def _first_layer_unlike(
    name: str, mean: Callable[[Tensor], Tensor], z: Tensor, codes: str
) -> ValueError | None:
    """The error to raise if the mean is (or wraps) a module whose first layer with parameters is
    an ``nn.Linear`` with ``in_features`` other than the codes' width ``d = z.shape[-1]``, or a
    convolution whose input channels no reshape of ``d`` values gives (``d % in_channels != 0``);
    else None (other first layers, lazy ones, and means that are methods or functions are not
    guessed at)."""
    module = _module_itself(mean)
    if module is None:
        return None
    layer = next((m for m in module.modules() if next(m.parameters(recurse=False), None) is not None), None)
    if layer is None or isinstance(layer, torch.nn.modules.lazy.LazyModuleMixin):
        return None
    d = z.shape[-1]
    if isinstance(layer, torch.nn.Linear) and layer.in_features != d:
        expects = f"inputs of width {layer.in_features}"
    elif isinstance(layer, _CONVS) and d % layer.in_channels:
        expects = f"inputs of {layer.in_channels} channels"
    else:
        return None
    return ValueError(
        f"{name} expects {expects} (its first layer is {layer}) but {codes} have latent dimension {d}"
    )


def _differ(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / (||a|| + ||b||)`` (0 for two zero tensors; inf where either is not finite)."""
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return float("inf")
    scale = float(a.norm() + b.norm())
    return float((a - b).norm()) / scale if scale > 0 else 0.0


def deterministic(
    name: str, mean: Callable[[Tensor], Tensor], z: Tensor, out: Tensor, out_first: Tensor
) -> None:
    """Refuse a mean that is random (``mean(z)`` again differs from ``out``) or that depends on
    its batch (``out[:1]`` differs from ``out_first``, the mean of ``z[:1]`` alone, or ``out`` from
    the first rows of the mean of a batch of ``LARGER_BATCH`` codes that starts with ``z``)."""
    bound = SAME_OUTPUT if z.device.type == "cpu" else SAME_OUTPUT_ELSEWHERE
    if not bool(torch.isfinite(out).all()):
        return  # a mean not finite at the probe codes is not this check's to name
    again = call(name, mean, z)
    gap = _differ(again, out) if isinstance(again, Tensor) and again.shape == out.shape else 1.0
    if gap > bound:
        raise ValueError(
            f"{name} is random: two calls on the same codes differ by {gap:.1e} (relative). A "
            "dropout layer in training mode, or a sample instead of the decoder's mean? Call "
            ".eval() on the decoder and pass its mean"
        )
    # ... and in a batch as large as the solver's chunks start (a branch on the batch size)
    larger = call(name, mean, torch.cat([z + 0.05 * k for k in range(LARGER_BATCH // max(1, z.shape[0]))]))
    gaps = [_differ(out[:1], out_first)]
    if isinstance(larger, Tensor) and larger.shape[1:] == out.shape[1:]:
        gaps.append(_differ(larger[: z.shape[0]], out))
    gap = max(gaps)
    if gap > bound:  # inf too: e.g. normalized by the batch's std, NaN for one code
        how = (
            "decoded alone gives values that are not finite, beside others finite ones"
            if not bool(torch.isfinite(out_first).all())
            else f"decoded alone, beside 2 others and beside {LARGER_BATCH - 1} differs by {gap:.1e} "
            "(relative)"
        )
        raise ValueError(
            f"{name} depends on its batch: a code {how}. Batch normalization in training mode "
            "(call .eval() on the decoder), or one without running statistics "
            "(track_running_stats=False: it normalizes by the batch in eval mode too), or "
            "statistics of the batch in the mean? The mean of a code must not depend on the codes "
            "beside it"
        )


def differentiable(name: str, mean: Callable[[Tensor], Tensor], z: Tensor) -> bool:
    """Refuse a mean whose output carries no gradient to its input ``z`` (P, d); warn when its
    derivative along one fixed direction disagrees with central differences by more than
    DERIVATIVE_MISMATCH (on the CPU only: TF32 convolutions on a GPU would blur the differences),
    or when its gradient is NaN where its values are finite. Returns whether the latter (the solver
    then keeps to forward-mode derivatives). Skipped under ``torch.inference_mode()`` (no
    gradients there: False)."""
    if torch.is_inference_mode_enabled():
        return False
    z = z.detach()
    g = torch.Generator(device="cpu").manual_seed(20240521)
    u = torch.randn(z.shape, generator=g, device="cpu", dtype=torch.float64).to(z)
    u = u / u.norm(dim=-1, keepdim=True)
    step = torch.finfo(z.dtype).eps ** (1 / 3) * z.abs().max().clamp(min=1.0)
    with torch.no_grad():
        fd = (mean(z + step * u) - mean(z - step * u)).flatten(1) / (2 * step)
    # Weights of the outputs: the differences scaled to at most 1, so that J^T w cannot overflow
    # (a mean of outputs ~1e20 in float32 overflowed fd * J).
    w = fd / fd.abs().amax().clamp(min=torch.finfo(fd.dtype).tiny) if fd.numel() else fd
    with torch.enable_grad():
        x = z.clone().requires_grad_(True)
        out = mean(x)
        grad = None
        if isinstance(out, Tensor) and out.requires_grad:
            (grad,) = torch.autograd.grad(out.flatten(1), x, grad_outputs=w.to(out.dtype), allow_unused=True)
    if grad is None:
        raise ValueError(
            f"{name} passes no gradient to its input: its output does not depend differentiably on "
            "the codes (a .detach(), .numpy() or torch.no_grad() inside?). Geodesics need the "
            "decoder's derivatives"
        )
    if bool(torch.isnan(grad).any()) and bool(torch.isfinite(fd).all()):
        warnings.warn(
            f"{name}'s gradient by autograd is not finite at codes where its values are (NaN from a "
            "branch not taken: torch.where(h > 0, torch.sqrt(h), 0) back-propagates 0 * inf; write "
            "torch.sqrt(h.clamp(min=0)) or take the branch's input through the where as well). The "
            "lengths' gradients in their end points would be NaN there, and the solver keeps to "
            "forward-mode derivatives for it (linearize='always': slower from d = 8)",
            stacklevel=3,
        )
        return True
    if z.device.type != "cpu":
        return False
    along = float((grad * u).sum())  # <w, J u>
    expected = float((w * fd).sum())  # <w, fd>: equal when J u = fd
    if expected > 0 and abs(along - expected) > DERIVATIVE_MISMATCH * expected:
        low = sorted({str(p.dtype) for m in modules_of(mean) for p in m.parameters() if p.dtype in _LOW})
        rounding = (
            f" Its layers compute in {' and '.join(low)}, whose rounding alone can blur the differences "
            f"this much (a {z.dtype} copy of the decoder would check exactly); if not that:"
            if low
            else ""
        )
        warnings.warn(
            f"{name}'s derivative by autograd disagrees with central differences by "
            f"{abs(along - expected) / expected:.0%} along a test direction.{rounding} is a part of it "
            "detached from autograd, or not differentiable? Lengths measured under it would be wrong",
            stacklevel=3,
        )
    return False


_LOW = (torch.bfloat16, torch.float16)
