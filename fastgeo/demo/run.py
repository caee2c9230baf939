"""The paper's two-moons illustration (Figure 1), end to end: ``fastgeo demo``.

Train a small VAE on two moons, fit the RBF precision of its decoder, compute geodesics between
points along and across the moons, draw them against straight lines on the latent plane and
decoded into data space, save the generator and print a table of lengths and statuses.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .. import _checks
from ..datasets import _lift, two_moons
from ..io import save_generator
from ..metric import ExpectedMetric
from ..rbf import RBFPrecision
from ..solver import geodesics
from .vae import train_vae

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..solver import GeodesicResult

# Demo settings. Data: 1000 points lifted to D = 8 so the decoder has a curved map to learn.
N_POINTS, NOISE, DATA_DIM = 1000, 0.05, 8
# The VAE: the decoder variance is frozen at 0.01 for the first 30 % of the steps, so the mean is
# fitted closely before the model may explain the data as noise, then 5000 full-batch steps in
# all. With the variance at 0.1 and 1500 steps the latent moons came out blurred and folded and
# the geodesics looped; after 3000 steps the moons were clean, but on some seeds their closest
# points lay farther apart in the latent space than the RBF bumps reach, and curves across the
# moons met a wall of uncertainty there (status under_resolved or straight_fallback).
VAE = {"hidden": 32, "steps": 5000, "init_var": 0.01, "freeze_var": 0.3}
QUICK_VAE = {"hidden": 32, "steps": 300, "init_var": 0.01, "freeze_var": 0.3}
# The RBF precision: high along each moon (bumps overlapping along it, or a curve meets a wall
# between two centers) and low in the gaps (or curves cut corners through them). The decoder fits
# these noise-free-manifold data closely (precision ~1e6 on them), so a bump keeps the precision
# high for several bandwidths: many small bumps (256 centers, ~4 points each) with bandwidths
# twice their clusters' spread do both. With 64 centers the bumps filled the gaps and curves cut
# across them; with bandwidths 1-1.5x the spread the gaps became walls everywhere, and curves
# across the moons went through the empty middle. These settings give 8 converged curves on
# every seed 0-9; decoded, the curves along a moon stay within 0.06-0.17 of its data points (one
# of the 60, 0.29), the noise being 0.05.
RBF = {"num_centers": 256, "bandwidth_scale": 2.0, "zeta": 1e-3, "steps": 1000}
QUICK_RBF = {"num_centers": 32, "bandwidth_scale": 2.0, "zeta": 1e-3, "steps": 200}

# End points on the noise-free moons (planar coordinates): upper moon (cos t, sin t), lower moon
# (1 - cos t, 0.5 - sin t). Each anchor is snapped to the nearest training point of its moon.
_UPPER = {"U-left": (-1.0, 0.0), "U-top": (0.0, 1.0), "U-right": (1.0, 0.0)}
_LOWER = {"L-left": (0.0, 0.5), "L-bottom": (1.0, -0.5), "L-right": (2.0, 0.5)}
PAIRS = [
    ("U-left", "U-right", "along"),
    ("U-left", "U-top", "along"),
    ("U-top", "U-right", "along"),
    ("L-left", "L-right", "along"),
    ("L-left", "L-bottom", "along"),
    ("L-bottom", "L-right", "along"),
    ("U-top", "L-bottom", "across"),
    ("U-left", "L-right", "across"),
]
QUICK_PAIRS = [PAIRS[0], PAIRS[6]]

# Figure style: one colour per moon (latent codes, data), one per kind of geodesic.
MOON_COLORS = ("#3b75af", "#e1812c")
KIND_COLORS = {"along": "#111111", "across": "#c0182b"}
STRAIGHT_COLOR = "#4d4d4d"


def run_demo(
    out_dir: str = "fastgeo-demo", seed: int = 0, quick: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Run the two-moons demo; write ``two_moons.png`` and ``generator.safetensors`` (see
    :func:`fastgeo.save_generator`) into ``out_dir``.

    Args:
        out_dir: output folder (created if missing).
        seed: seeds the data, the VAE, k-means and nothing else (the solver is deterministic).
        quick: tiny settings (a few hundred optimizer steps, two pairs): a smoke test, not a
            good figure.
        progress: show progress bars (tqdm, if installed) and stage messages.
    Returns:
        dict with ``figure`` and ``generator`` (paths), ``rows`` (one dict per pair: names,
        kind, geodesic and straight lengths, ratio, status and converged), ``seconds`` (wall
        time per stage), ``metric`` (the :class:`ExpectedMetric`), ``result`` (the
        :class:`GeodesicResult`), ``latents`` (M, 2) and ``labels`` (M,).
    """

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    if not isinstance(out_dir, (str, os.PathLike)) or not os.fspath(out_dir):
        raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
    seed = _checks.seed("seed", seed, allow_none=False)
    quick = _checks.boolean("quick", quick)
    progress = _checks.boolean("progress", progress)
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK | os.X_OK):  # found before the training, not after
        raise ValueError(f"out_dir: folder {out_dir!r} is not writable")
    # One intra-op thread: every tensor here is small (1000 x 32), where thread hand-offs cost
    # more than they save, and on a busy machine oversubscription slowed the VAE ~20x. Restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out_dir, seed, quick, progress, say)
    finally:
        torch.set_num_threads(threads)


def _run(out_dir: str, seed: int, quick: bool, progress: bool, say: Any) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    planar, labels = two_moons(N_POINTS, NOISE, seed, dtype=torch.float64)
    X = torch.from_numpy(_lift(planar.numpy(), DATA_DIM)).float()
    say(f"[1/4] training a VAE on {N_POINTS} two-moons points (D = {DATA_DIM}, d = 2)")
    vae = train_vae(X, seed=seed, progress=progress, **(QUICK_VAE if quick else VAE))
    with torch.no_grad():
        Z = vae.encode(X)[0]
    seconds["vae"] = time.perf_counter() - t0

    t = time.perf_counter()
    say("[2/4] fitting the RBF precision (k-means centers, maximum likelihood weights)")
    prec = RBFPrecision.fit(
        Z, X, vae.decoder_mean, **(QUICK_RBF if quick else RBF), progress=progress, seed=seed
    )
    metric = ExpectedMetric(vae.decoder_mean, prec)
    seconds["rbf"] = time.perf_counter() - t

    t = time.perf_counter()
    pairs = QUICK_PAIRS if quick else PAIRS
    idx = _anchor_indices(planar, labels)
    i0 = torch.tensor([idx[a] for a, _, _ in pairs])
    i1 = torch.tensor([idx[b] for _, b, _ in pairs])
    say(f"[3/4] computing {len(pairs)} geodesics (fastgeo.geodesics, default method)")
    res = geodesics(metric, Z[i0], Z[i1], progress=progress)
    seconds["geodesics"] = time.perf_counter() - t

    t = time.perf_counter()
    say("[4/4] drawing the figure and saving the generator")
    ends = {name: Z[idx[name]] for pair in pairs for name in pair[:2]}
    fig = draw_figure(
        metric, res, pairs, Z, labels, ends, planar, projection=_plane_projection(planar), quick=quick
    )
    figure = os.path.join(out_dir, "two_moons.png")
    save_png(fig, figure, dpi=70 if quick else 110)
    path = os.path.join(out_dir, "generator.safetensors")
    generator = str(save_generator(path, metric, extra={"latents": Z, "labels": labels}))
    seconds["output"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    status = res.status
    rows = [
        {
            "from": a,
            "to": b,
            "kind": kind,
            "geodesic": float(res.lengths[i]),
            "straight": float(res.straight_lengths[i]),
            "ratio": float(res.lengths[i] / res.straight_lengths[i]),
            "status": str(status[i]),
            "converged": bool(res.converged[i]),
        }
        for i, (a, b, kind) in enumerate(pairs)
    ]
    print(format_table(rows))
    print(
        f"figure: {figure}\ngenerator: {generator}\ntime: {seconds['total']:.1f} s "
        f"(VAE {seconds['vae']:.1f}, RBF {seconds['rbf']:.1f}, geodesics {seconds['geodesics']:.1f}, "
        f"output {seconds['output']:.1f})"
    )
    return {
        "figure": figure,
        "generator": generator,
        "rows": rows,
        "seconds": seconds,
        "metric": metric,
        "result": res,
        "latents": Z,
        "labels": labels,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The length table printed by the demo: one row per geodesic, its length, the straight
    line's, their ratio and the solver's status (``converged`` or why not)."""
    head = f"{'from':>9} {'to':>9} {'kind':>6} {'geodesic':>9} {'straight':>9} {'ratio':>6}  status"
    lines = [head, "-" * (len(head) + 11)]
    for r in rows:
        lines.append(
            f"{r['from']:>9} {r['to']:>9} {r['kind']:>6} {r['geodesic']:9.3f} {r['straight']:9.3f} "
            f"{r['ratio']:6.3f}  {r['status']}"
        )
    return "\n".join(lines)


def save_png(fig: Any, path: str, dpi: int) -> None:
    """Save ``fig`` as a PNG with a 256-colour palette (a third of the size of full colour, and
    the same to the eye for a figure of a few flat colours and one grey gradient)."""
    import io

    from PIL import Image  # a dependency of matplotlib

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        im.convert("RGB").quantize(256).save(path, optimize=True)


def _anchor_indices(planar: Tensor, labels: Tensor) -> dict[str, int]:
    """Index of the training point of the right moon nearest to each named anchor."""
    out = {}
    for moon, anchors in ((0, _UPPER), (1, _LOWER)):
        members = (labels == moon).nonzero().squeeze(1)
        for name, xy in anchors.items():
            d = (planar[members] - planar.new_tensor(xy)).norm(dim=-1)
            out[name] = int(members[d.argmin()])
    return out


def _plane_projection(planar: Tensor) -> np.ndarray:
    """The (D, 2) matrix that maps data back to the moons' plane: the lift is a rotation of
    ``(p, bend(p))`` with the bend orthogonal to the plane, so least squares recovers it exactly."""
    lifted = _lift(planar.numpy(), DATA_DIM)
    return np.linalg.lstsq(lifted, planar.numpy(), rcond=None)[0]


def draw_figure(
    metric: ExpectedMetric,
    res: GeodesicResult,
    pairs: list[tuple[str, str, str]],
    Z: Tensor,
    labels: Tensor,
    anchors: dict[str, Tensor],
    planar: Tensor,
    projection: np.ndarray,
    quick: bool = False,
) -> Figure:
    """The demo's figure: (a) the latent plane, log10 total precision behind the latent codes,
    geodesics (solid) and straight lines (dashed); (b) the same curves decoded by the mean and
    projected on the plane of the moons, over the training data."""
    import matplotlib

    with matplotlib.rc_context({"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8.5}):
        return _draw_figure(metric, res, pairs, Z, labels, anchors, planar, projection, quick)


def _draw_figure(
    metric: ExpectedMetric,
    res: GeodesicResult,
    pairs: list[tuple[str, str, str]],
    Z: Tensor,
    labels: Tensor,
    anchors: dict[str, Tensor],
    planar: Tensor,
    projection: np.ndarray,
    quick: bool,
) -> Figure:
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ..plot import plot_background, plot_latents

    # A Figure of its own, not pyplot's: the user's backend and open figures stay as they were.
    fig = Figure(figsize=(11.5, 4.9), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=(1.0, 1.05))
    n = 200
    pts = res.points(n).detach().cpu()
    t = torch.linspace(0, 1, n, dtype=pts.dtype)[None, :, None]
    lines = pts[:, :1] + t * (pts[:, -1:] - pts[:, :1])
    kinds = [kind for _, _, kind in pairs]

    # (a) the latent plane
    lo, hi = Z.amin(0), Z.amax(0)
    pad = 0.12 * (hi - lo)
    extent = (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    cmap = LinearSegmentedColormap.from_list("precision", ["#ffffff", "#6f6f6f"])
    image = plot_background(ax, metric, extent, resolution=80 if quick else 240, cmap=cmap, colorbar=False)
    cbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    cbar.set_label(r"$\log_{10}$ total precision  $\Sigma_D\, \beta_D(z)$")
    plot_latents(ax, Z, c=[MOON_COLORS[int(k)] for k in labels], s=6, alpha=0.55)
    _draw_curves(ax, pts.numpy(), lines.numpy(), kinds)
    _mark_ends(ax, {k: v.numpy() for k, v in anchors.items()})
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$z_1$", ylabel="$z_2$", aspect="equal")
    ax.set_title("(a) latent space")

    # (b) decoded into data space
    with torch.no_grad():
        dec = metric.mean(pts).double().numpy() @ projection
        dec_lines = metric.mean(lines).double().numpy() @ projection
    data = planar.numpy()
    bx.scatter(data[:, 0], data[:, 1], c=[MOON_COLORS[int(k)] for k in labels], s=6, alpha=0.55, linewidths=0)
    _draw_curves(bx, dec, dec_lines, kinds)
    with torch.no_grad():
        dec_ends = {k: metric.mean(v).double().numpy() @ projection for k, v in anchors.items()}
    _mark_ends(bx, dec_ends)
    dlo, dhi = data.min(0), data.max(0)
    dpad = 0.12 * (dhi - dlo)
    bx.set(
        xlim=(dlo[0] - dpad[0], dhi[0] + dpad[0]),
        ylim=(dlo[1] - dpad[1], dhi[1] + dpad[1]),
        xlabel="$p_1$",
        ylabel="$p_2$",
        aspect="equal",
    )
    bx.set_title(r"(b) decoded, $\mu(c(t))$, on the plane of the data")

    handles = [
        Line2D([], [], ls="", marker="o", ms=5, color=MOON_COLORS[0], label="upper moon"),
        Line2D([], [], ls="", marker="o", ms=5, color=MOON_COLORS[1], label="lower moon"),
        Line2D([], [], color=KIND_COLORS["along"], lw=2, label="geodesic along a moon"),
        Line2D([], [], color=KIND_COLORS["across"], lw=2, label="geodesic across"),
        Line2D([], [], color=STRAIGHT_COLOR, lw=1.0, ls=(0, (4, 3)), label="straight line in latent space"),
    ]
    bx.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)
    return fig


def _draw_curves(ax: Any, curves: np.ndarray, lines: np.ndarray, kinds: list[str]) -> None:
    import matplotlib.patheffects as pe

    halo = [pe.Stroke(linewidth=3.6, foreground="white", alpha=0.8), pe.Normal()]
    for line in lines:
        ax.plot(line[:, 0], line[:, 1], color=STRAIGHT_COLOR, lw=1.0, ls=(0, (4, 3)), zorder=2)
    for curve, kind in zip(curves, kinds, strict=True):
        ax.plot(curve[:, 0], curve[:, 1], color=KIND_COLORS[kind], lw=2.0, zorder=3, path_effects=halo)


def _mark_ends(ax: Any, ends: dict[str, np.ndarray]) -> None:
    import matplotlib.patheffects as pe

    for name, xy in ends.items():
        ax.plot(*xy, marker="o", ms=7, mfc="white", mec="black", mew=1.4, zorder=4)
        ax.annotate(
            name,
            xy,
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=8.5,
            zorder=5,
            path_effects=[pe.withStroke(linewidth=2.5, foreground="white")],
        )
