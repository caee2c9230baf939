"""Checks, before a call, that a metric is still as it was made: its mean's modules in eval mode
(for the solvers), its precision valid, its parameters of the dtype and device it was made with,
its mean's output as wide as the precision's D (a layer replaced in place since)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from ._mean_checks import call, eval_mode, still_in_eval
from ._mean_reach import parameter_kinds
from .decoders.uses import depth, one_use

M = TypeVar("M", bound=Callable[..., Any])


def metric_in_eval(metric: Any) -> None:
    """:func:`~fastgeo._mean_checks.eval_mode` and :func:`~fastgeo._mean_checks.still_in_eval` on
    ``metric``'s mean (an :class:`~fastgeo.ExpectedMetric`), then its precision's values, its
    parameters' kinds and its output's width, before a call decodes anything: a batch norm
    switched to training mode since would have its running statistics changed by the first call
    of the decoder, before a later check refuses."""
    eval_mode("metric.mean", metric.mean)
    still_in_eval("metric.mean", metric)
    metric_still_valid(metric)


def metric_still_valid(metric: Any) -> None:
    """The checks of :func:`metric_in_eval` but for training mode (a user's own call of the
    metric's methods may be a loss while the decoder trains): the precision's values, the mean's
    parameters' kinds, and, where no module of the mean computes batch statistics now, its
    output's width (a point decoded in training mode would change them)."""
    metric.precision.check_values("metric.precision: ")
    made = getattr(metric, "_parameter_kinds", None)
    if made is not None and parameter_kinds(metric.mean) != made:
        now = sorted({f"{dtype} on {device}" for dtype, device in parameter_kinds(metric.mean)})
        raise TypeError(
            f"metric.mean's parameters were converted since the metric was made (now {', '.join(now)}; "
            f"the precision is {metric.dtype} on {metric.device}): make a new ExpectedMetric, or use "
            "metric.to(...), which converts a copy"
        )
    # A layer replaced in place since (the last Linear of another width) broadcast against the
    # precision's D outputs: silent wrong lengths. One point decoded: a hair of any solve's cost.
    try:
        eval_mode("metric.mean", metric.mean)
    except ValueError:
        return
    with torch.no_grad():
        out = call("metric.mean", metric.mean, metric.precision.centers[:1].detach())
    if isinstance(out, Tensor) and out.dim() >= 1:
        output_width(out[:1].numel(), metric.data_dim)


def output_width(got: int, data_dim: int) -> None:
    """Refuse a mean that returns ``got`` values per point for a precision of ``data_dim``."""
    if got != data_dim:
        raise ValueError(
            f"metric.mean returns {got} values per point, the precision models D = {data_dim}: was a "
            "layer of the decoder replaced since the metric was made? Make a new ExpectedMetric (and "
            "fit its precision) for the new decoder"
        )


def called_by_user(method: M) -> M:
    """A method of the metric's that users call: from outside the library (not within one of its
    calls) the metric is first checked as the solvers check it, training mode aside
    (:func:`metric_still_valid`: a replaced last layer or negative weights gave wrong numbers or
    NaN silently), and the call is one use (its chain checked once)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Not inside torch.func transforms (a vmap over stacked precisions cannot branch on their
        # values) nor while torch.compile traces (its checks would break the graph).
        if (
            depth() == 0
            and torch._C._functorch.maybe_current_level() is None
            and not torch.compiler.is_compiling()
        ):
            metric_still_valid(self)
        with one_use():
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
