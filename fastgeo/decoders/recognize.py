"""Recognizing decoder means that the stacked forward mode can differentiate: chains of layers
applied point by point, read off the module's structure as a list of steps
(:mod:`fastgeo.decoders.steps`).

- ``nn.Sequential`` (nested too) of the standard layers of :mod:`fastgeo.decoders.modules`
  (linear, convolutions, upsampling, normalization in eval mode, flatten / unflatten,
  activations), and such a layer alone: read at every call (a few dozen attribute look-ups);
- ``torch.fx.GraphModule``: ``aten`` graphs of ``torch.export``, e.g. a mean saved by
  :func:`fastgeo.save_generator` and loaded back, or symbolically traced graphs
  (:mod:`fastgeo.decoders.graphs`);
- any other ``nn.Module`` (a custom decoder class) whose ``forward`` ``torch.fx`` can trace into
  such a chain (residual blocks ``x + f(x)``, gates ``x * g(x)`` and concatenations included).
  Tracing takes milliseconds, so its steps are kept per module and traced again only when the
  module's fingerprint changes (its submodules, their types, training flags and plain settings
  such as strides or an ELU's alpha). Graphs are read once per fingerprint too (with the graph's
  identity and code). A method of a module (``vae.decode``) and a plain function around modules
  (``lambda z: vae.decode(z)[0]`` for a decoder returning (mu, logvar)) are traced alike, their
  modules as submodules; what the output does not use (the logvar head) is dropped first.

A module with forward hooks (or a forward replaced on the instance) anywhere in it, and any
module while global forward hooks are registered, is not a chain (None): its Jacobian comes
from ``torch.func``.
"""

from __future__ import annotations

import inspect
import types
import weakref
from collections.abc import Callable, Hashable

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from .._mean_checks import modules_of
from . import modules
from .activations import PIECEWISE_LINEAR
from .flat import FlatMean, FlatOutput
from .graphs import graph_steps, read_graph, where_not_a_chain
from .smoothing import SmoothedChain, smooth_steps
from .steps import LAYERS, Activation, Axes, Branches, ByTensor, Conv, Part, PReLU, Step, signature, walk
from .tracing import ClosureModule, MethodModule, exported_graph, traced_graph

__all__ = [
    "chain_module", "describe", "forget", "graph_steps", "module_steps", "piecewise_linear", "recognize",
    "smoothed", "traced_steps",
]  # fmt: skip

# module -> (fingerprint, steps or None) of its last trace or graph reading
_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# module -> (key, steps or None, exported graph) of its last export (where torch.fx fails)
_EXPORTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# wrappers that split a batch over devices and call the module they hold on each part
_PARALLEL = (nn.DataParallel, nn.parallel.DistributedDataParallel)

# bound method / function -> its MethodModule / ClosureModule, FlatOutput -> its chain (held by a
# metric as long as it lives)
_METHODS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def chain_module(fn: Callable[[Tensor], Tensor]) -> nn.Module | None:
    """The module whose structure describes ``fn``: ``fn`` itself, the module a
    :class:`FlatMean` wraps (it only flattens (..., d) to (P, d)) or a ``DataParallel`` holds, a
    :class:`MethodModule` for a method of a module, a :class:`ClosureModule` for a function
    around modules (followed by a flatten where a :class:`FlatOutput` wraps it); None for any
    other callable."""
    if type(fn) is FlatMean and not modules.has_hooks(fn):
        return fn.flat
    if isinstance(fn, _PARALLEL) and not modules.has_hooks(fn):  # the same function, on one device
        return chain_module(fn.module)
    if type(fn) is FlatOutput:  # a method returning images: its chain, then a flatten
        inner = chain_module(fn.mean)
        if inner is None:
            return None
        module = _METHODS.get(fn)
        if module is None:
            module = _METHODS[fn] = nn.Sequential(inner, nn.Flatten(1))
        return module
    if isinstance(fn, nn.Module):
        return fn
    if isinstance(fn, types.MethodType) and isinstance(fn.__self__, nn.Module):
        module = _METHODS.get(fn)
        if module is None:
            module = _METHODS[fn] = MethodModule(fn)
        return module
    if inspect.isfunction(fn):
        module = _METHODS.get(fn)
        if module is None:
            owners = modules_of(fn)
            if not owners:
                return None
            module = _METHODS[fn] = ClosureModule(fn, owners)
        return module
    return None


def forget(fn: Callable[[Tensor], Tensor]) -> None:
    """Drop what was read of ``fn``'s structure (its method / closure module, traces, exports):
    the next :func:`recognize` reads it afresh. For a decoder whose kept steps no longer compute
    what it does (it changed in a way its fingerprint does not see)."""
    module = chain_module(fn)
    for cache in (_STEPS, _EXPORTED):
        for m in () if module is None else module.modules():
            cache.pop(m, None)
    for key in (fn, getattr(fn, "mean", None)):  # a FlatOutput's method too
        try:
            _METHODS.pop(key, None)
        except TypeError:  # not weak-referenceable: never kept
            pass


def module_steps(module: nn.Module) -> list[Step] | None:
    """Steps of an nn.Sequential / known layer / ``torch.fx.GraphModule``, or None (no tracing)."""
    if isinstance(module, torch.fx.GraphModule):
        return graph_steps(module)  # torch.export's own hooks only check and flatten the input
    return modules.module_steps(module)


def recognize(
    fn: Callable[[Tensor], Tensor], latent_dim: int | None = None
) -> tuple[list[Step], Hashable] | None:
    """The steps of ``fn`` and the key of its structure (equal keys: the same chain, up to
    parameter values), or None if ``fn`` is not a chain the forward mode knows. With the codes'
    ``latent_dim``, a module that ``torch.fx`` cannot read is exported by ``torch.export``."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return None
    module = chain_module(fn)
    if module is None:
        return None
    if type(module) is SmoothedChain:
        found = (module.steps, None)
    elif isinstance(module, torch.fx.GraphModule):
        # torch.export's own hooks only check and flatten the input: counted in the key below.
        found = _cached(module, graph_steps, exported=True, extra=(id(module.graph), module.code))
    else:
        steps = modules.module_steps(module)
        if steps is not None:
            found = (steps, None)
        else:  # a traced function bakes in the tensors and numbers it reads by name
            found = _cached(module, _trace, extra=_free_values_of(module))
            if found is None and latent_dim is not None:
                found = _exported(module, latent_dim)
    if found is None:
        return None
    steps, fingerprint = found
    hooks = (len(module._forward_hooks), len(module._forward_pre_hooks))
    return steps, (id(module), hooks, fingerprint, signature(steps))


def piecewise_linear(fn: Callable[[Tensor], Tensor], latent_dim: int | None = None) -> bool:
    """Whether ``fn`` is a recognized chain with a piecewise-linear activation (ReLU, LeakyReLU,
    PReLU, Hardtanh, ReLU6, Hardsigmoid, Hardswish): its Jacobian jumps where a unit switches.
    False for anything else, including decoders that are not recognized."""
    found = recognize(fn, latent_dim)
    return found is not None and _has_kinks(found[0])


def describe(fn: Callable[[Tensor], Tensor], latent_dim: int | None = None, agrees: bool = True) -> str:
    """How ``fn``'s derivatives are taken, in a sentence or two: a recognized chain (its steps,
    the stacked forward mode, smoothing of kinks) or not (``torch.func``). ``latent_dim``: as
    :func:`recognize` takes it; ``agrees``: whether the chain read passed the check against ``fn``
    (:func:`fastgeo.decoders.forward_mode.stacked_chain`)."""
    found = recognize(fn, latent_dim)
    if found is None:
        return (
            f"not a recognized chain of layers ({why_not_a_chain(fn, latent_dim)}): its Jacobians come from "
            "torch.func, several times slower than the stacked forward mode, and piecewise-linear "
            "activations in it (if any) are not smoothed first. An nn.Sequential of standard "
            "layers, or a module (or a method of one) torch.fx traces into them, takes the fast path"
        )
    steps = found[0]
    names = " -> ".join(_step_name(s) for s in steps)
    if not agrees:
        why = (
            "but that chain does not compute what the decoder does on a probe (an in-place operation "
            "on a tensor used again, a forward replaced on an instance, ...)"
            if any(isinstance(s, LAYERS) for s in walk(steps))
            else "with no layer to stack"
        )
        return (
            f"read as a chain of {len(steps)} steps ({names}), {why}: its Jacobians come from torch.func, "
            "several times slower, and piecewise-linear activations in it (if any) are not smoothed first"
        )
    text = f"a chain of {len(steps)} steps ({names}): Jacobians by the stacked forward mode"
    fingerprint = found[1][2]
    if isinstance(fingerprint, tuple) and fingerprint[:1] == ("export",):
        text += " (read from its torch.export graph: torch.fx could not trace it)"
    if _has_kinks(steps):
        text += (
            "; it has piecewise-linear activations: in d >= 4 the spline methods solve on a "
            "smoothed stand-in first, then on the true decoder"
        )
    return text


def why_not_a_chain(fn: Callable[[Tensor], Tensor], latent_dim: int | None = None) -> str:
    """Why ``fn`` is not a recognized chain, in a few words."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return "global module hooks are registered"
    module = chain_module(fn)
    if module is None:
        return "a function around no module: pass the decoder module, or a method of it, instead"
    if modules.has_hooks(module) and not isinstance(module, torch.fx.GraphModule):  # export's own hooks
        return "a module with hooks"
    if isinstance(module, torch.jit.ScriptModule):
        return "a TorchScript module (torch.jit.script / trace): pass the Python module it was made from"
    if isinstance(module, torch.fx.GraphModule):
        graph = module.graph
    else:
        try:
            graph = traced_graph(module)
        except Exception as e:  # noqa: BLE001 - untraceable: say why, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            cached = _EXPORTED.get(module) if latent_dim is not None else None
            exported = None if cached is None else cached[2]
            if exported is not None:  # exported: where its graph stops being a chain is the reason
                where = where_not_a_chain(exported.graph, exported)
                return (
                    f"torch.fx cannot trace it ({first[:80]}); its torch.export graph stops being a chain "
                    f"of known layers at {where or 'an unknown op'}"
                )
            also = "" if latent_dim is None else ", nor torch.export read it into known layers"
            return f"torch.fx cannot trace it{also}: {first[:160]}"
    where = where_not_a_chain(graph, module)
    return f"it stops being a chain of known layers at {where}" if where else "unknown"


def _step_name(step: Step) -> str:
    if isinstance(step, Branches):
        first, second = (" -> ".join(map(_step_name, c)) or "identity" for c in (step.first, step.second))
        if step.join == "cat":
            return f"cat(({first}), ({second}), dim={step.dim})"
        return f"({first}) {'*' if step.join == 'product' else '+'} ({second})"
    if isinstance(step, Activation):
        return step.name
    if isinstance(step, Axes):
        return step.op
    if isinstance(step, ByTensor):
        return f"{step.op} {step.identity}"
    if isinstance(step, Conv):
        return f"{'ConvTranspose' if step.transposed else 'Conv'}{step.weight().dim() - 2}d"
    if isinstance(step, Part):
        if step.op == "slice":
            start, stop, stride = ("" if v is None else v for v in step.arg)
            return f"[{start}:{stop}{f':{stride}' if stride != '' else ''}] of axis {step.axis}"
        if step.op == "select":
            return f"[{step.arg}] of axis {step.axis}"
        return f"{step.op} {step.arg} [{step.index}] of axis {step.axis}"
    return type(step).__name__


def _has_kinks(steps: list[Step]) -> bool:
    return any(
        isinstance(s, Activation) and s.name in PIECEWISE_LINEAR or isinstance(s, PReLU) and s.beta is None
        for s in walk(steps)
    )


def smoothed(
    fn: Callable[[Tensor], Tensor], probe: Tensor, sharpness: float | None = None
) -> SmoothedChain | None:
    """``fn`` with its piecewise-linear activations rounded (:mod:`fastgeo.decoders.smoothing`,
    scaled at ``probe`` (P, d) points), or None if ``fn`` is not a recognized chain with such
    activations."""
    found = recognize(fn, probe.shape[-1])
    if found is None or not _has_kinks(found[0]):
        return None
    return SmoothedChain(smooth_steps(found[0], probe, sharpness))


def traced_steps(module: nn.Module) -> list[Step] | None:
    """Steps of ``module`` traced by ``torch.fx`` (traced once per fingerprint), or None."""
    found = _cached(module, _trace)
    return None if found is None else found[0]


def _trace(module: nn.Module) -> list[Step] | None:
    try:
        graph = traced_graph(module)
    except Exception:  # noqa: BLE001 - untraceable (control flow on values, ...): not a chain
        return None
    return read_graph(graph, module)


def _exported(module: nn.Module, latent_dim: int) -> tuple[list[Step], Hashable] | None:
    """Steps of ``module`` exported by ``torch.export`` at codes of ``latent_dim`` (once per
    fingerprint, latent dimension, free values and parameter objects: the exported graph holds
    the parameters themselves, not their modules), or None."""
    fingerprint = _fingerprint(module)
    if fingerprint is None:
        return None
    tensors = tuple(id(t) for t in (*module.parameters(), *module.buffers()))
    key = ("export", latent_dim, _free_values_of(module), tensors, fingerprint)
    cached = _EXPORTED.get(module)
    if cached is None or cached[0] != key:
        try:
            graph = exported_graph(module, latent_dim)
            steps = graph_steps(graph)
        except Exception:  # noqa: BLE001 - not exportable either (control flow on values, ...)
            graph = steps = None
        cached = _EXPORTED[module] = (key, steps, graph)  # the graph owns what the steps read
    return None if cached[1] is None else (cached[1], key)


def _cached(
    module: nn.Module,
    read: Callable[[nn.Module], list[Step] | None],
    exported: bool = False,
    extra: Hashable = (),
) -> tuple[list[Step], Hashable] | None:
    """``read(module)`` and the module's fingerprint, read again only when the fingerprint
    (with ``extra``) changes; None if there are no steps."""
    fingerprint = _fingerprint(module, exported)
    if fingerprint is None:
        return None
    fingerprint = (extra, fingerprint)
    cached = _STEPS.get(module)
    if cached is not None and cached[0] == fingerprint:
        steps = cached[1]
    else:
        steps = read(module)
        _STEPS[module] = (fingerprint, steps)
    return None if steps is None else (steps, fingerprint)


def _traced_function(module: nn.Module) -> types.FunctionType | None:
    """The Python function ``torch.fx`` traces for ``module``: the wrapped function or method, or
    the class's ``forward``."""
    if type(module) is ClosureModule:
        return module._function()
    function = module._function if type(module) is MethodModule else getattr(type(module), "forward", None)
    return function if inspect.isfunction(function) else None


def _free_values_of(module: nn.Module) -> Hashable:
    """:func:`free_values` of the functions traced for ``module`` and its submodules of the user's
    own (not torch's layers): a method returning images is a flattening around the method."""
    values = []
    for m in module.modules():
        if type(m) in (ClosureModule, MethodModule) or not type(m).__module__.startswith("torch."):
            function = _traced_function(m)
            if function is not None:
                values.append(free_values(function))
    return tuple(values)


def free_values(function: types.FunctionType, depth: int = 0) -> Hashable:
    """What ``torch.fx`` bakes into the graph of ``function`` besides its modules: the tensors (by
    identity) and plain values (numbers, strings) its closure cells and the globals it names hold,
    through the plain functions it calls (a few levels). Rebinding one (``P = new``, ``scale =
    3.0``) changes this, and the function is traced again; in-place changes show anyway."""
    code = function.__code__
    found = []
    for name, cell in zip(code.co_freevars, function.__closure__ or (), strict=False):
        try:
            found.append((name, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    names = function.__globals__
    found += [(name, names[name]) for name in code.co_names if name in names]
    values = []
    for name, value in found:
        if isinstance(value, Tensor):
            values.append((name, id(value)))
        elif _plain(value):
            values.append((name, value))
        elif inspect.isfunction(value) and depth < 3:
            values.append((name, id(value), free_values(value, depth + 1)))
    return tuple(values)


def _fingerprint(module: nn.Module, exported: bool = False) -> Hashable | None:
    """What a traced graph and its steps depend on: every submodule's name, identity, type,
    training flag and plain public settings (strides, an ELU's alpha, a channel count the
    forward reshapes to); None if some module has hooks or an instance forward (``exported``:
    but the root's hooks and the input guards of ``torch.export``)."""
    parts = []
    for name, m in module.named_modules():
        if exported and (m is module or name == "_guards_fn"):
            pass
        elif modules.has_hooks(m) or "forward" in vars(m):
            return None
        settings = tuple((k, v) for k, v in vars(m).items() if k[0] != "_" and _plain(v))
        hooks = tuple(id(h) for h in modules.weight_hooks(m))  # removed: traced again
        parts.append((name, id(m), type(m), m.training, settings, hooks))
    return tuple(parts)


_SCALARS = (bool, int, float, str, type(None))


def _plain(value: object) -> bool:
    """None, a number, a string, or a tuple of those (recursively)."""
    if type(value) in _SCALARS:
        return True
    return type(value) is tuple and all(_plain(v) for v in value)
