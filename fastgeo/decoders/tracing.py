"""How a decoder is traced by ``torch.fx`` for :mod:`fastgeo.decoders.recognize`, with the habits
of users' ``forward`` that plain symbolic tracing refuses: ``len(z)`` (recorded into the graph),
arguments with defaults (traced at them), a buffer's methods called with the batch size
(``self.coords.expand(len(z), -1, -1, -1)``), and for a function around modules
(:class:`ClosureModule`) the tensors it reads by name (``lambda z: cvae.decode(z, y.expand(len(z),
-1))``: ``y`` traced as a buffer of the wrapper). Methods of modules are traced as modules of
their own (:class:`MethodModule`). A forward that ``torch.fx`` cannot trace (a branch on
``z.dim()``, an ``assert`` on ``z.shape``, a distribution's mean) is exported by ``torch.export``
at a batch of codes instead (:func:`exported_graph`). Distributions' argument checks, which branch
on values, are off while either traces."""

from __future__ import annotations

import builtins
import contextlib
import functools
import inspect
import io
import logging
import types
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .. import _mean_checks
from .graph_dead import writes

__all__ = ["ClosureModule", "MethodModule", "exported_graph", "traced_graph"]


class MethodModule(nn.Module):
    """A method of a module (``vae.decode``) as a module of its own, the owner its submodule:
    ``torch.fx`` traces the method's body as it traces a ``forward``, through the owner's layers."""

    def __init__(self, method: types.MethodType) -> None:
        super().__init__()
        self.owner = method.__self__
        self._function = method.__func__
        self.training = False  # this wrapper's own flag only (the owner's are the user's)

    def forward(self, z: Tensor) -> Tensor:
        return self._function(self.owner, z)


class ClosureModule(nn.Module):
    """A plain function (a lambda, a closure) around modules as a module, those modules its
    submodules: ``torch.fx`` traces the function's body through their layers. The function is
    held weakly (the wrapper is kept per function: a strong reference would keep both alive)."""

    def __init__(self, function: types.FunctionType, owners: list[nn.Module]) -> None:
        super().__init__()
        self.owners = nn.ModuleList(owners)
        self._function = weakref.ref(function)
        self.training = False  # this wrapper's own flag only (the owners' are the user's)

    def forward(self, z: Tensor) -> Tensor:
        function = self._function()
        if function is None:
            raise RuntimeError("the function this module traced is gone")
        if not isinstance(z, torch.fx.Proxy):
            return function(z)
        with self._free_tensors_traced(function):
            return function(z)

    @contextlib.contextmanager
    def _free_tensors_traced(self, function: types.FunctionType) -> Iterator[None]:
        """While ``function`` is traced, the plain tensors it reads by name (closure cells, its
        module's globals) are buffers of this module (``_free_0``, ...; the same tensors), read
        through it, so that the tracer sees them as attributes (a method of one called with the
        batch size is traced); the names hold their tensors again afterwards."""
        cells = [c for c in function.__closure__ or () if _plain_tensor(_contents(c))]
        names = [n for n in function.__code__.co_names if _plain_tensor(function.__globals__.get(n))]
        slots = [(c, "cell") for c in cells] + [(n, "global") for n in names]
        saved = []
        try:
            for i, (slot, kind) in enumerate(slots):
                value = slot.cell_contents if kind == "cell" else function.__globals__[slot]
                self.register_buffer(f"_free_{i}", value, persistent=False)
                traced = getattr(self, f"_free_{i}")  # the tracer's attribute: a graph node
                saved.append((slot, kind, value))
                if kind == "cell":
                    slot.cell_contents = traced
                else:
                    function.__globals__[slot] = traced
            yield
        finally:
            for slot, kind, value in saved:
                if kind == "cell":
                    slot.cell_contents = value
                else:
                    function.__globals__[slot] = value


def _contents(cell: types.CellType) -> object:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _plain_tensor(value: object) -> bool:
    """A tensor that is not a parameter (the tracer reads parameters by itself)."""
    return isinstance(value, Tensor) and not isinstance(value, nn.Parameter)


# torch.fx and torch.export patch process-wide state while they run (nn.Module.__call__, warning
# filters, logging, stderr, distributions' checks), each put back when it ends: two threads
# tracing at once put back each other's, leaving stderr swallowed and filters installed for good.
F = TypeVar("F", bound=Callable[..., Any])


def _one_at_a_time(function: F) -> F:
    @functools.wraps(function)
    def serialized(*args: Any, **kwargs: Any) -> Any:
        with _mean_checks.TRACING:
            return function(*args, **kwargs)

    return serialized  # type: ignore[return-value]


@_one_at_a_time
def traced_graph(module: nn.Module) -> torch.fx.Graph:
    """The graph ``torch.fx`` traces, without the nodes the output does not use (a decoder's
    logvar head beside the mean it returns)."""
    defaults = _specialized(module)
    for proxied in (True, False):
        tracer = torch.fx.Tracer()
        # A buffer's methods traced too (self.coords.expand(B, -1)); a buffer that steers Python
        # control flow (an ``initialized`` flag) cannot be: traced again as a plain tensor.
        tracer.proxy_buffer_attributes = proxied
        try:
            with _len_recorded(module), _distributions_unchecked():
                graph = tracer.trace(module, concrete_args=defaults or None)
            break
        except Exception:
            if not proxied:
                raise
    if defaults:  # the placeholders of the defaults, and the guards torch.fx adds on them
        guards = set([n for n in graph.nodes if n.op == "placeholder"][1:])
        for n in graph.nodes:
            if n.op != "placeholder" and n.all_input_nodes and set(n.all_input_nodes) <= guards:
                guards.add(n)
        for n in reversed(list(graph.nodes)):
            if n in guards and set(n.users) <= guards:
                graph.erase_node(n)
    graph.owning_module = module  # whose submodules' purity the elimination checks
    # torch.fx takes `mu.clamp_(-1, 1)` (its value unused) for pure and removes it: the chain
    # read without it is another function, wrong wherever the clamp acts (the probes may not
    # reach it). Writes are kept, and a graph holding one is not read as a chain.
    graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or writes(n, module))
    return graph


@_one_at_a_time
def exported_graph(module: nn.Module, latent_dim: int) -> torch.fx.GraphModule:
    """``module`` exported by ``torch.export`` at codes (P, latent_dim) of its parameters' dtype
    and device, P dynamic: its ``aten`` graph, whose parameters are the module's own."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    device = tensors[0].device if tensors else torch.device("cpu")
    z = torch.zeros(3, latent_dim, dtype=dtype, device=device)
    batch = ({0: torch.export.Dim.DYNAMIC},)  # a range the forward asserts is no error
    quiet = logging.root.manager.disable  # a failed export logs warnings and prints its graph
    logging.disable(max(quiet, logging.WARNING))
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
            stack.enter_context(_distributions_unchecked())
            stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            # grad on: under no_grad a forward's own enable_grad (a distribution's lazy mean)
            # would be recorded as a region of its own
            stack.enter_context(torch.enable_grad())
            program = torch.export.export(module, (z,), dynamic_shapes=batch, strict=False)
    finally:
        logging.disable(quiet)
    return program.module()


@contextlib.contextmanager
def _distributions_unchecked() -> Iterator[None]:
    """``torch.distributions`` without argument checks (they branch on values: no tracer follows
    them), put back afterwards; the chain read from the trace is checked against the decoder."""
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)


def _specialized(module: nn.Module) -> dict[str, object]:
    """The arguments of ``module.forward`` after the codes that have defaults (``c=None`` of a
    conditional decoder called without a condition): traced at their defaults, as the mean is
    called."""
    try:
        parameters = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in parameters if p.kind in kinds and p.default is not p.empty}


def _traced_len(x: object) -> object:
    """``len`` while a decoder is traced: of a traced tensor a node of the graph (the batch size
    in ``h.view(len(z), ...)``), else the builtin's."""
    if isinstance(x, torch.fx.Proxy):
        return x.tracer.create_proxy("call_function", builtins.len, (x,), {})
    return builtins.len(x)


@contextlib.contextmanager
def _len_recorded(module: nn.Module) -> Iterator[None]:
    """``len`` recorded into the graph (``torch.fx`` raises on a traced tensor's ``len``) in the
    code the trace runs: the modules' own ``forward`` (not torch's layers) and the function or
    method a :class:`ClosureModule` / :class:`MethodModule` wraps, where their module's globals
    name no ``len`` of their own; put back afterwards."""
    functions = [getattr(type(m), "forward", None) for m in module.modules()]
    functions += [m._function for m in module.modules() if isinstance(m, MethodModule)]
    functions += [m._function() for m in module.modules() if isinstance(m, ClosureModule)]
    scopes = {id(f.__globals__): f.__globals__ for f in functions if inspect.isfunction(f)}
    ours = ("torch.", "fastgeo.")
    patched = [g for g in scopes.values() if "len" not in g and not str(g.get("__name__")).startswith(ours)]
    for g in patched:
        g["len"] = _traced_len
    try:
        yield
    finally:
        for g in patched:
            if g.get("len") is _traced_len:
                del g["len"]
