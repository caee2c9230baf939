"""The arguments of a :func:`fastgeo.geodesics` call, checked before any work: clear errors that
name the argument (and, for a result's curves passed back, what to pass with them)."""

from __future__ import annotations

from torch import Tensor

from .. import _checks, _metric_checks
from ..metric import ExpectedMetric
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
