"""What a user's decoder mean reaches: the modules (and loose tensors) behind a callable.

A mean is rarely the module itself: ``vae.decode``, ``lambda z: vae.decode(z)``,
``lambda z: cfg.model(z)``, ``functools.partial(run, model=decoder)``, an object with
``__call__``. The checks that a layer is still in eval mode and the choice of a differentiable
metric tensor need the modules behind it; :func:`modules_of` finds them by following, a few
levels deep, bound methods, wrappers, partials' functions and arguments, functions' closures and
the globals they name, callable objects' attributes, and containers (dicts, lists, tuples, plain
objects such as ``SimpleNamespace`` or a config) among those.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import types
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from . import _checks

DEPTH = 3  # levels of references followed from the mean (cfg.model.decode is two)
ITEMS = 64  # items of one container looked at (a global list of data is not walked)
VISITS = 1000  # objects walked into per call, at most


def modules_of(mean: Callable[[Tensor], Tensor]) -> list[torch.nn.Module]:
    """The modules a mean is or calls, outermost first, each once: ``mean`` itself, the module
    of a bound method, and those its wrappers, partials, closures, named globals, attributes and
    containers hold (see the module's docstring). Submodules of a module found are not listed."""
    return [obj for obj in _reached(mean) if isinstance(obj, torch.nn.Module)]


def loose_tensors_of(mean: Callable[[Tensor], Tensor]) -> list[Tensor]:
    """Tensors that require grad which a mean reaches outside any module (``lambda z: z @ W``)."""
    return [obj for obj in _reached(mean) if isinstance(obj, Tensor) and obj.requires_grad]


@contextlib.contextmanager
def batch_statistics_kept(mean: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """The running statistics of the batch norms in training mode behind ``mean`` (its modules,
    :func:`modules_of`) as they were before the block, whatever the block called."""
    layers = [
        layer
        for owner in modules_of(mean)
        for layer in owner.modules()
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.training
    ]
    saved = [[b.detach().clone() for b in layer.buffers(recurse=False)] for layer in layers]
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, buffers in zip(layers, saved, strict=True):
                for now, before in zip(layer.buffers(recurse=False), buffers, strict=True):
                    now.copy_(before)


def layers_in_eval(mean: Callable[[Tensor], Tensor]) -> list[tuple[str, torch.nn.Module]]:
    """The dropout and batch-statistics layers of the modules behind ``mean`` (its own, a method's
    module's, a closure's) that are in eval mode now, when the metric is made, with their paths."""
    return [
        (f"{type(owner).__name__}.{path}" if path else type(owner).__name__, layer)
        for owner in modules_of(mean)
        for path, layer in owner.named_modules()
        if isinstance(layer, _checks.TRAINING_DEPENDENT)
        and not layer.training
        and getattr(layer, "track_running_stats", True)
    ]


def parameter_kinds(mean: Callable[[Tensor], Tensor]) -> list[tuple[torch.dtype, torch.device]]:
    """The dtype and device of every floating parameter and buffer behind ``mean``, in order."""
    return [
        (t.dtype, t.device)
        for module in modules_of(mean)
        for t in (*module.parameters(), *module.buffers())
        if t.is_floating_point()
    ]


def _reached(mean: object) -> list[object]:
    """The modules and tensors found from ``mean``, each once, in the order first met (each
    object walked into once, at most ``VISITS`` of them: a call must not crawl a user's data)."""
    found: dict[int, object] = {}
    walked: set[int] = set()
    stack = [(mean, DEPTH)]
    while stack and len(walked) < VISITS:
        obj, depth = stack.pop()
        if isinstance(obj, torch.nn.Module | Tensor):
            found.setdefault(id(obj), obj)
        elif depth >= 0 and obj is not None and not isinstance(obj, _LEAVES) and id(obj) not in walked:
            walked.add(id(obj))
            stack.extend((ref, depth - 1) for ref in reversed(_references(obj)))
    return list(found.values())


# Never walked into: code and types (a global named `torch` or `np`), numbers and strings.
_LEAVES = (types.ModuleType, type, str, bytes, int, float, complex, bool, range, torch.dtype, torch.device)


def _references(obj: object) -> list[object]:
    """What ``obj`` holds that a call of it may use."""
    if isinstance(obj, functools.partial):
        return [obj.func, *obj.args, *obj.keywords.values()]
    if isinstance(obj, types.MethodType):
        return [obj.__self__, obj.__func__]
    if inspect.isfunction(obj):
        refs = [getattr(obj, "__wrapped__", None)]
        try:
            found = inspect.getclosurevars(obj)
        except (TypeError, ValueError):
            return refs
        return [*refs, *found.nonlocals.values(), *found.globals.values()]
    if isinstance(obj, dict):
        return list(obj.values())[:ITEMS]
    if isinstance(obj, list | tuple | set | frozenset):
        return list(obj)[:ITEMS]
    try:  # an object's own attribute lookup may raise anything
        wrapped = getattr(obj, "__wrapped__", None)  # functools.wraps, torch.compile's wrappers
        attributes = getattr(obj, "__dict__", None)
    except Exception:
        return []
    values = list(attributes.values())[:ITEMS] if isinstance(attributes, dict) else []
    return [wrapped, *values]
