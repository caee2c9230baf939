"""The arguments of a :func:`fastgeo.geodesics` call, checked before any work: clear errors that
name the argument (and, for a result's curves passed back, what to pass with them)."""

from __future__ import annotations

import warnings

from torch import Tensor

from .. import _checks, _mean_checks
from ..metric import ExpectedMetric
from .graph import LatentGraph
from .options import SPLINE_METHODS, SolverOptions


def check_ends(metric: ExpectedMetric, z0: Tensor, z1: Tensor) -> None:
    """``z0``, ``z1`` (B, d) as :func:`fastgeo.geodesics` takes them: the metric's dtype, device and
    latent dimension, one shape, finite; the metric an :class:`ExpectedMetric` whose mean is still
    in eval mode; autograd not off for good."""
    if not isinstance(metric, ExpectedMetric):
        raise TypeError(f"metric must be a fastgeo.ExpectedMetric, got {type(metric).__name__}")
    _checks.autograd_enabled("geodesics")
    _checks.outside_autocast("geodesics")
    _mean_checks.metric_in_eval(metric)  # set to training mode since the metric was made
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


def warn_unused_graph_inputs(graph: object, latents: Tensor | None, opts: SolverOptions) -> None:
    """Warn where ``latents`` or a given :class:`LatentGraph` (the graph starts' nodes) go unused:
    ``graph=False``, a given graph (its own nodes), method ``"paper"``, ``corridors=0``."""
    if latents is not None and graph is False:
        warnings.warn("fastgeo.geodesics: latents are nodes of the latent graph; graph=False ignores "
                      "them", UserWarning, stacklevel=3)  # fmt: skip
    elif latents is not None and isinstance(graph, LatentGraph):
        warnings.warn("fastgeo.geodesics: latents are nodes of the latent graph the call builds; a given "
                      "graph keeps its own nodes and ignores them (pass them to fastgeo.LatentGraph)",
                      UserWarning, stacklevel=3)  # fmt: skip
    elif (latents is not None or isinstance(graph, LatentGraph)) and (
        opts.method == "paper" or (opts.method in SPLINE_METHODS and opts.corridors == 0)
    ):
        given = "latents feed" if latents is not None else "graph feeds"
        why = "method='paper' starts from straight lines" if opts.method == "paper" else "corridors=0"
        warnings.warn(f"fastgeo.geodesics: {given} the latent graph's starts, which {why} leaves "
                      "out: ignored", UserWarning, stacklevel=3)  # fmt: skip
