"""Latent-space figures: a background showing where the decoder is certain, latent codes, curves.

matplotlib is an optional dependency (``pip install fastgeo[plot]``); it is imported when a
function here is called, never at ``import fastgeo``, and this module never selects a backend
(scripts without a display can call ``matplotlib.use("Agg")`` themselves).

Example::

    import fastgeo.plot as fplot
    res = fastgeo.geodesics(metric, z0, z1)
    fig = fplot.plot_geodesics(metric, res, latents=Z, labels=y)
    fig.savefig("geodesics.png", dpi=150)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from . import _checks
from .metric import ExpectedMetric
from .rbf import RBFPrecision

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

    from .solver import GeodesicResult

KINDS = ("precision", "magnification")


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # also raised when sys.modules["matplotlib"] is None
        raise ImportError(
            "fastgeo.plot needs matplotlib, an optional dependency: pip install 'fastgeo[plot]' "
            "(or pip install matplotlib)"
        ) from err
    return plt


def _numpy(x: Tensor | Any) -> Any:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else x


def background_values(
    metric_or_precision: ExpectedMetric | RBFPrecision,
    extent: Sequence[float],
    kind: str = "precision",
    resolution: int = 100,
) -> Tensor:
    """The background field on a regular grid over ``extent = (xmin, xmax, ymin, ymax)``.

    ``kind="precision"``: ``log10 sum_D beta(z)`` (the RBF's total precision, whose ridges the
    warm start follows); ``kind="magnification"``: ``log10 sqrt(det M(z))`` (the volume element of
    the expected metric; needs an :class:`ExpectedMetric`). Latent dimension d must be 2.

    Returns:
        (resolution, resolution) tensor, row i at ``y = linspace(ymin, ymax)[i]`` (image order
        with ``origin="lower"``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if isinstance(metric_or_precision, ExpectedMetric):
        metric: ExpectedMetric | None = metric_or_precision
        prec = metric_or_precision.precision
    elif isinstance(metric_or_precision, RBFPrecision):
        metric, prec = None, metric_or_precision
    else:
        raise TypeError(
            "metric_or_precision must be a fastgeo.ExpectedMetric or fastgeo.RBFPrecision, got "
            f"{type(metric_or_precision).__name__}"
        )
    if prec.latent_dim != 2:
        raise ValueError(f"latent-plane plots need latent dimension d = 2, got d = {prec.latent_dim}")
    if len(extent) != 4:
        raise ValueError(f"extent must be (xmin, xmax, ymin, ymax), got {extent!r}")
    resolution = _checks.integer("resolution", resolution, 2)
    w = prec.weights
    xs = torch.linspace(float(extent[0]), float(extent[1]), resolution, dtype=w.dtype, device=w.device)
    ys = torch.linspace(float(extent[2]), float(extent[3]), resolution, dtype=w.dtype, device=w.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        if kind == "precision":
            values = prec.total_precision(grid).log10()
        else:
            if metric is None:
                raise TypeError("kind='magnification' needs an ExpectedMetric (it uses the decoder mean)")
            det = torch.linalg.det(metric.metric_tensor(grid)).clamp(min=torch.finfo(w.dtype).tiny)
            values = 0.5 * det.log10()
    return values.reshape(resolution, resolution)


def plot_background(
    ax: Axes,
    metric_or_precision: ExpectedMetric | RBFPrecision,
    extent: Sequence[float],
    kind: str = "precision",
    resolution: int = 100,
    cmap: str = "viridis_r",
    colorbar: bool = True,
    **imshow_kwargs: Any,
) -> AxesImage:
    """Draw :func:`background_values` on ``ax`` as an image over ``extent`` (d = 2 only).

    Example::

        fig, ax = plt.subplots()
        fplot.plot_background(ax, metric, (-3, 3, -3, 3), kind="magnification", resolution=120)
    """
    values = background_values(metric_or_precision, extent, kind, resolution)
    image = ax.imshow(
        _numpy(values), extent=tuple(float(e) for e in extent), origin="lower", cmap=cmap,
        aspect="auto", interpolation="bilinear", **imshow_kwargs,
    )
    if colorbar:
        label = "log10 total precision" if kind == "precision" else "log10 sqrt(det M)"
        ax.figure.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04)
    return image


def plot_latents(ax: Axes, Z: Tensor, labels: Tensor | None = None, **scatter_kwargs: Any) -> Any:
    """Scatter latent codes Z (M, 2), coloured by integer ``labels`` (M,) if given."""
    _pyplot()
    Z = np.asarray(_numpy(Z))
    if Z.ndim != 2 or Z.shape[1] != 2:
        raise ValueError(f"Z must have shape (M, 2) (codes of a 2-D latent space), got {tuple(Z.shape)}")
    style: dict[str, Any] = {"s": 4, "alpha": 0.6, "linewidths": 0}
    if labels is not None:
        labels = np.asarray(_numpy(labels))
        if labels.shape != (Z.shape[0],):
            raise ValueError(f"labels must have shape (M,) = ({Z.shape[0]},), got {tuple(labels.shape)}")
        style.update(c=labels, cmap="coolwarm")
    else:
        style.update(c="k")
    style.update(scatter_kwargs)
    return ax.scatter(Z[:, 0], Z[:, 1], **style)


def plot_curves(ax: Axes, points: Tensor, **style: Any) -> list[Any]:
    """Draw curves ``points`` (B, n, 2) (or one curve (n, 2)) on ``ax``; returns the lines."""
    _pyplot()
    pts = _numpy(points)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, n, 2) or (n, 2), got {tuple(pts.shape)}")
    style = {"color": "k", "lw": 1.8, **style}
    lines = []
    for i, curve in enumerate(pts):
        # Only the first curve carries the legend label.
        kw = style if i == 0 else {k: v for k, v in style.items() if k != "label"}
        lines.extend(ax.plot(curve[:, 0], curve[:, 1], **kw))
    return lines


def plot_geodesics(
    metric: ExpectedMetric,
    result: GeodesicResult,
    latents: Tensor | None = None,
    labels: Tensor | None = None,
    straight: bool = True,
    ax: Axes | None = None,
    kind: str = "precision",
    extent: Sequence[float] | None = None,
    resolution: int = 150,
    n: int = 100,
) -> Figure:
    """Geodesics of ``result`` over the background of ``metric``, with straight lines dashed.

    Args:
        metric: the :class:`ExpectedMetric` (d = 2).
        result: a :class:`GeodesicResult` from :func:`fastgeo.geodesics` (B curves).
        latents, labels: optional latent codes (M, 2) and labels (M,) to scatter.
        straight: also draw the straight lines between the end points.
        ax: axes to draw into (default: a new 6x5 inch figure).
        kind: background, ``"precision"`` or ``"magnification"`` (see :func:`background_values`).
        extent: (xmin, xmax, ymin, ymax); default: the latents and curves plus a 15% margin.
        resolution: background grid points per axis.
        n: points per drawn curve.
    Returns:
        the matplotlib Figure.
    """
    plt = _pyplot()
    if metric.latent_dim != 2:
        raise ValueError(f"plot_geodesics draws a 2-D latent space; the metric's has d = {metric.latent_dim}")
    if labels is not None and latents is None:
        raise ValueError("labels colour the latents: pass latents too")
    if latents is not None:
        latents = torch.as_tensor(_numpy(latents))
        if latents.dim() != 2 or latents.shape[1] != 2:
            raise ValueError(f"latents must have shape (M, 2), got {tuple(latents.shape)}")
    pts = result.points(n).detach().cpu()
    if extent is None and pts.shape[0] == 0 and latents is None:
        raise ValueError("nothing to frame: the result holds no curve; pass extent or latents")
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    else:
        fig = ax.figure
    if extent is None:
        every = pts.reshape(-1, 2) if latents is None else torch.cat([pts.reshape(-1, 2), latents.to(pts)])
        lo, hi = every.amin(0), every.amax(0)
        pad = 0.15 * (hi - lo).clamp(min=1e-6)
        extent = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    plot_background(ax, metric, extent, kind=kind, resolution=resolution)
    if latents is not None:
        plot_latents(ax, latents, labels)
    if straight:
        ends = torch.stack([pts[:, 0], pts[:, -1]], dim=1)
        plot_curves(ax, ends, color="w", lw=1.2, ls="--", label="straight line")
    plot_curves(ax, pts, color="k", lw=2.0, label="geodesic")
    ax.scatter(_numpy(pts[:, 0, 0]), _numpy(pts[:, 0, 1]), c="k", s=18, zorder=3)
    ax.scatter(_numpy(pts[:, -1, 0]), _numpy(pts[:, -1, 1]), c="k", s=18, zorder=3)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if pts.shape[0]:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    return fig


__all__ = ["background_values", "plot_background", "plot_curves", "plot_geodesics", "plot_latents"]
