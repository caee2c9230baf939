"""What every run over many pairs sets up the same way (:func:`fastgeo.pairwise_distances`,
:func:`fastgeo.nearest_neighbors`): its inputs and solver options checked before any work,
chunks sized by the solver's memory model, and the solver's latent graph built once, before
worker processes fork."""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import _checks, _metric_checks
from .._progress import DELAY, call_bar
from ..metric import ExpectedMetric
from ..solver import SolverOptions, geodesics, solver_options, working_memory_per_curve
from ..solver.arguments import check_graph_inputs
from ..solver.defaults import SPLINE_METHODS
from ..solver.graph_cache import cached_graph
from ..solver.options import BATCH_BUDGET
from .chunks import dist_info

# Bytes of solver working memory per chunk on the CPU, by the solver's memory model: as much as a
# geodesics call gives one batch. The model bounds the memory from far above (the linearizations
# go in cache-sized chunks of points): 1.5-7 MB of RSS per curve measured where it counts 32-95 MB
# (d = 8-16, D = 784-2,000); 256 MiB made chunks of 2-8 pairs at d >= 8, 1.13-1.27x slower than
# chunks of 24 (bench/RESULTS.md, "Gaussian decoders").
DEFAULT_CPU_BUDGET = BATCH_BUDGET
_NOT_OPTIONS = ("metric", "z0", "z1", "init", "progress")  # geodesics() arguments, not options here
SOLVER_OPTIONS = tuple(k for k in inspect.signature(geodesics).parameters if k not in _NOT_OPTIONS)


def check_inputs(
    caller: Callable[..., Any],
    metric: ExpectedMetric,
    Z: Tensor,
    Y: Tensor | None,
    solver_opts: dict[str, Any],
) -> tuple[Tensor, Tensor | None, dict[str, Any]]:
    """``Z`` (M, d) and ``Y`` (P, d) or None checked against the metric, and the solver options
    given to ``caller`` (its keyword-only arguments are named in the error of an unknown one):
    returns them detached, and the options as a new dict."""
    if not isinstance(metric, ExpectedMetric):
        raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
    _metric_checks.metric_in_eval(metric)
    metric.check_points("Z", Z, ndim=2)
    _checks.finite("Z", Z)
    if Y is not None:
        metric.check_points("Y", Y, ndim=2)
        _checks.finite("Y", Y)
    if torch.is_grad_enabled() and (Z.requires_grad or (Y is not None and Y.requires_grad)):
        warnings.warn(
            f"fastgeo.{caller.__name__}: its distances carry no gradient to the codes; for distances "
            "differentiable in their end points, solve the pairs with fastgeo.geodesics",
            UserWarning, stacklevel=3,
        )  # fmt: skip
    allowed = list(SOLVER_OPTIONS)
    unknown = set(solver_opts) - set(allowed)
    if unknown:
        params = inspect.signature(caller).parameters.values()
        own = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        close = {k: difflib.get_close_matches(k, own + allowed, n=1) for k in sorted(unknown)}
        hints = [f"{k!r} -> {c[0]!r}" for k, c in close.items() if c]
        raise TypeError(
            f"unknown option(s) {sorted(unknown)}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f"; {caller.__name__} takes {own} and the solver options {allowed}"
            + (" (init is per pair and has no meaning here)" if "init" in unknown else "")
        )
    solver_options_of(metric, solver_opts)  # every option checked before any work
    check_graph_inputs(metric, solver_opts.get("graph", True), solver_opts.get("latents"))
    return Z.detach(), None if Y is None else Y.detach(), dict(solver_opts)


def default_memory_budget(device: torch.device) -> int:
    """Solver working memory per chunk: a quarter of free GPU memory (<= 4 GiB), on the CPU
    DEFAULT_CPU_BUDGET."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(min(free // 4, 4 << 30))
    return DEFAULT_CPU_BUDGET


def solver_options_of(metric: ExpectedMetric, options: dict[str, Any]) -> SolverOptions:
    """The validated :class:`SolverOptions` that ``geodesics(metric, ..., **options)`` runs with."""
    names = inspect.signature(solver_options).parameters
    return solver_options(
        metric.dtype,
        metric.latent_dim,
        metric.data_dim,
        piecewise_linear=metric.piecewise_linear_mean,
        **{k: v for k, v in options.items() if k in names},
    )


def build_latent_graph(metric: ExpectedMetric, options: dict[str, Any], progress: bool) -> int:
    """The solver's latent graph, built here once if the solves will use it, so that forked
    workers inherit it instead of each building its own (with a bar if that takes ``DELAY``
    seconds); the decoder evaluations it cost."""
    opts = solver_options_of(metric, options)
    if opts.method not in SPLINE_METHODS or opts.corridors <= 0 or options.get("graph", True) is not True:
        return 0
    with call_bar(1, progress and dist_info()[0] == 0, "latent graph", "graph", DELAY):
        graph, built = cached_graph(metric, options.get("latents"))
    return graph.edge_evals if built else 0


def chunk_size_for_budget(
    metric: ExpectedMetric, options: dict[str, Any], memory_budget: int | None, stacklevel: int = 2
) -> int:
    """Pairs per chunk that fit ``memory_budget`` bytes by the solver's memory model (at least
    one: a budget given below one pair's estimate is warned of, at ``stacklevel`` from the caller)."""
    opts = solver_options_of(metric, options)
    per_pair = working_memory_per_curve(
        metric.latent_dim,
        metric.data_dim,
        opts.n_points,
        opts.m * metric.latent_dim,
        torch.finfo(metric.dtype).bits // 8,
    )
    budget = default_memory_budget(metric.device) if memory_budget is None else memory_budget
    if memory_budget is not None and per_pair > memory_budget:
        warnings.warn(
            f"memory_budget ({memory_budget / 2**20:.0f} MiB) is below the memory model's estimate for "
            f"one pair ({per_pair / 2**20:.0f} MiB; an upper bound, up to ~10x above what large decoders "
            "use): solving one pair per chunk",
            UserWarning, stacklevel=stacklevel + 1,
        )  # fmt: skip
    size = max(1, int(budget) // per_pair)
    if dist_info()[1] > 1:  # every process must cut the pairs alike: free GPU memory differs
        smallest = torch.tensor([size], device=metric.device)
        torch.distributed.all_reduce(smallest, op=torch.distributed.ReduceOp.MIN)
        size = int(smallest)
    return size


def check_memory_budget(memory_budget: object) -> int | None:
    """The ``memory_budget`` argument checked: None, or a finite number of bytes >= 1 (as an int)."""
    if memory_budget is None:
        return None
    budget = int(_checks.positive_float("memory_budget", memory_budget))
    if budget < 1:
        raise ValueError(f"memory_budget is in bytes and must be >= 1, got {memory_budget!r}")
    return budget
