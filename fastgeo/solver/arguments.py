"""The arguments of a :func:`fastgeo.geodesics` call, checked before any work: clear errors that
name the argument (and, for a result's curves passed back, what to pass with them); a warning for
a latent graph of another metric."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .. import _checks, _metric_checks
from ..metric import ExpectedMetric
from .graph import LatentGraph
from .options import SolverOptions


def check_ends(metric: ExpectedMetric, z0: Tensor, z1: Tensor) -> None:
    """``z0``, ``z1`` (B, d) as :func:`fastgeo.geodesics` takes them: the metric's dtype, device and
    latent dimension, one shape, finite; the metric an :class:`ExpectedMetric` whose mean is still
    in eval mode; autograd not off for good."""
    if not isinstance(metric, ExpectedMetric):
        raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
    _checks.autograd_enabled("geodesics")
    _checks.outside_autocast("geodesics")
    _metric_checks.metric_in_eval(metric)  # set to training mode since the metric was made
    metric.check_points("z0", z0, ndim=2)
    metric.check_points("z1", z1, ndim=2)
    _checks.not_transformed("fastgeo.geodesics", [("z0", z0), ("z1", z1)])
    if z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must have the same shape (B, d), got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    _checks.finite("z0", z0)
    _checks.finite("z1", z1)


def check_init(metric: ExpectedMetric, init: Tensor | None, z0: Tensor, opts: SolverOptions) -> Tensor | None:
    """``init`` (B, m, d) in the basis of ``opts`` for the ends ``z0`` (B, d), finite, detached;
    None stays None."""
    if init is None:
        return None
    metric.check_points("init", init, ndim=3)
    B, d = z0.shape
    if init.shape != (B, opts.m, d):
        hint = (
            "method='dense': the n_points - 2 interior nodes of each polyline, as deviations from the "
            "straight line; pass n_points = their number + 2"
            if opts.method == "dense"
            else "a subdivided result's curves have more functions: pass m=res.curves.basis.m with them; "
            "the points and levels of subdivision follow it"
        )
        shape = (B, opts.m, d)
        raise ValueError(f"init must have shape (B, m, d) = {shape}, got {tuple(init.shape)}; {hint}")
    _checks.finite("init", init)
    return init.detach()


def check_graph_inputs(metric: ExpectedMetric, graph: object, latents: Tensor | None) -> None:
    """The ``graph`` and ``latents`` options of :func:`fastgeo.geodesics`, checked."""
    if not isinstance(graph, (bool, LatentGraph)):
        raise TypeError(f"graph must be True, False or a fastgeo.LatentGraph, got {graph!r}")
    if isinstance(graph, LatentGraph) and graph.nodes.shape[1] != metric.latent_dim:
        raise ValueError(
            f"graph is for latent dimension {graph.nodes.shape[1]}, the metric's is {metric.latent_dim}"
        )
    if isinstance(graph, LatentGraph) and graph.nodes.dtype != metric.dtype:
        raise TypeError(
            f"graph was built for a {graph.nodes.dtype} metric, this one is {metric.dtype}: build it "
            "with this metric (fastgeo.LatentGraph(metric))"
        )
    if isinstance(graph, LatentGraph) and graph.nodes.device != metric.device:
        raise ValueError(f"graph is on {graph.nodes.device}, the metric on {metric.device}")
    if isinstance(graph, LatentGraph) and _of_another_metric(graph, metric):
        warnings.warn(
            "fastgeo: graph was built for another metric, or for this one before its decoder or "
            "precision changed (its edges are those lengths): the starts follow those corridors, the "
            "curves are solved and measured under this one; build the graph again, "
            "fastgeo.LatentGraph(metric)",
            UserWarning,
            stacklevel=3,
        )
    if latents is not None:
        metric.check_points("latents", latents, ndim=2)
        _checks.finite("latents", latents)


def _of_another_metric(graph: LatentGraph, metric: ExpectedMetric) -> bool:
    """Whether ``graph`` was built for a metric other than ``metric`` as it is now: another
    decoder or precision, or this one changed in place since (trained), by the probe outputs at
    the graph's build and now. Not asked of a smoothed copy of a metric (the solver's own stage,
    which takes its source's graph; the call on the source was checked)."""
    if getattr(metric, "_smoothed_from", None) is not None:
        return False
    mine, theirs = graph.probe, metric.probe()
    if not torch.equal(graph.precision_key, metric.precision.fingerprint()):
        return True
    return mine.shape != theirs.shape or not torch.allclose(mine, theirs, rtol=1e-5, atol=0, equal_nan=True)
