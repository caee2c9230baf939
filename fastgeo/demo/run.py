"""The paper's two-moons illustration (Figure 1), end to end: ``fastgeo demo``.

Train a small VAE on two moons, fit the RBF precision of its decoder, compute geodesics between
points along and across the moons, draw them against straight lines on the latent plane, save
the generator and print a table of lengths.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import Tensor

from ..datasets import _lift, two_moons
from ..io import save_generator
from ..metric import ExpectedMetric
from ..rbf import RBFPrecision
from ..solver import geodesics
from .vae import train_vae

# Demo settings. Data: 1000 points lifted to D = 8 so the decoder has a curved map to learn.
N_POINTS, NOISE, DATA_DIM = 1000, 0.05, 8
VAE_HIDDEN, VAE_STEPS, QUICK_VAE_STEPS = 32, 1500, 150
RBF = {"num_centers": 64, "bandwidth_scale": 1.25, "zeta": 1e-3, "steps": 1000}
QUICK_RBF = {"num_centers": 16, "bandwidth_scale": 1.5, "zeta": 1e-3, "steps": 100}

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
        kind, geodesic and straight lengths, ratio, converged), ``seconds`` (wall time per
        stage), ``metric`` (the :class:`ExpectedMetric`), ``result`` (the
        :class:`GeodesicResult`), ``latents`` (M, 2) and ``labels`` (M,).
    """
    import matplotlib

    matplotlib.use("Agg")  # the demo only writes files; no display needed

    from ..plot import plot_geodesics

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    os.makedirs(out_dir, exist_ok=True)
    # One intra-op thread: every tensor here is small (1000 x 32), where thread hand-offs cost
    # more than they save, and on a busy machine oversubscription slowed the VAE ~20x. Restored.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(out_dir, seed, quick, progress, say, plot_geodesics)
    finally:
        torch.set_num_threads(threads)


def _run(
    out_dir: str, seed: int, quick: bool, progress: bool, say: Any, plot_geodesics: Any
) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    planar, labels = two_moons(N_POINTS, NOISE, seed, dtype=torch.float64)
    X = torch.from_numpy(_lift(planar.numpy(), DATA_DIM)).float()
    say(f"[1/4] training a VAE on {N_POINTS} two-moons points (D = {DATA_DIM}, d = 2)")
    steps = QUICK_VAE_STEPS if quick else VAE_STEPS
    vae = train_vae(X, hidden=VAE_HIDDEN, steps=steps, seed=seed, progress=progress)
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
    res = geodesics(metric, Z[i0], Z[i1])
    seconds["geodesics"] = time.perf_counter() - t

    t = time.perf_counter()
    say("[4/4] drawing the figure and saving the generator")
    fig = plot_geodesics(metric, res, latents=Z, labels=labels, resolution=60 if quick else 200)
    fig.axes[0].set_title("Geodesics (solid) vs straight lines (dashed), two moons")
    figure = os.path.join(out_dir, "two_moons.png")
    fig.savefig(figure, dpi=80 if quick else 100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    path = os.path.join(out_dir, "generator.safetensors")
    generator = str(save_generator(path, metric, extra={"latents": Z, "labels": labels}))
    seconds["output"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0

    rows = [
        {
            "from": a,
            "to": b,
            "kind": kind,
            "geodesic": float(res.lengths[i]),
            "straight": float(res.straight_lengths[i]),
            "ratio": float(res.lengths[i] / res.straight_lengths[i]),
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
    """The length table printed by the demo."""
    head = f"{'from':>9} {'to':>9} {'kind':>6} {'geodesic':>9} {'straight':>9} {'ratio':>6} {'conv':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['from']:>9} {r['to']:>9} {r['kind']:>6} {r['geodesic']:9.3f} {r['straight']:9.3f} "
            f"{r['ratio']:6.3f} {'yes' if r['converged'] else 'no':>5}"
        )
    return "\n".join(lines)


def _anchor_indices(planar: Tensor, labels: Tensor) -> dict[str, int]:
    """Index of the training point of the right moon nearest to each named anchor."""
    out = {}
    for moon, anchors in ((0, _UPPER), (1, _LOWER)):
        members = (labels == moon).nonzero().squeeze(1)
        for name, xy in anchors.items():
            d = (planar[members] - planar.new_tensor(xy)).norm(dim=-1)
            out[name] = int(members[d.argmin()])
    return out
