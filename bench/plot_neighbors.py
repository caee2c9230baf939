"""Geodesic nearest neighbours against the latent space's Euclidean ones, on one figure: the k
nearest of M codes by ``fastgeo.nearest_neighbors`` and by latent distance; the links both have in
grey, those only the geodesic search finds drawn as their geodesics, those only latent distance
finds as red dashed chords::

    OMP_NUM_THREADS=1 python bench/plot_neighbors.py --generator two_moons --m 150 --k 3 \\
        --out docs/neighbors_two_moons.png
"""

from __future__ import annotations

import argparse

import matplotlib
import torch
from workloads import GENERATORS, generator

import fastgeo
from fastgeo import plot as fplot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="two_moons", choices=sorted(GENERATORS))
    p.add_argument("--m", type=int, default=300)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="neighbors.png")
    args = p.parse_args()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    metric, codes, labels = generator(args.generator)
    pick = torch.randperm(codes.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.m]
    Z, lab = codes[pick], labels[pick]
    res = fastgeo.nearest_neighbors(metric, Z, args.k, workers=1, progress=False)
    euclid = torch.cdist(Z, Z).fill_diagonal_(float("inf")).topk(args.k, dim=1, largest=False).indices

    def links(idx: torch.Tensor) -> set[tuple[int, int]]:
        return {(min(i, j), max(i, j)) for i, row in enumerate(idx.tolist()) for j in row}

    geo, euc = links(res.indices), links(euclid)
    both, only_geo, only_euc = geo & euc, sorted(geo - euc), sorted(euc - geo)
    lo, hi = Z.min(0).values - 0.4, Z.max(0).values + 0.4
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    fig, ax = plt.subplots(figsize=(8.5, 6.2))
    fplot.plot_background(ax, metric, extent, kind="magnification", cmap="Greys", colorbar=False)
    for i, j in both:
        ax.plot(Z[[i, j], 0], Z[[i, j], 1], "-", color="0.55", lw=0.6)
    if only_geo:
        a, b = torch.tensor(only_geo).T
        curves = fastgeo.geodesics(metric, Z[a], Z[b], progress=False).points(64).detach()
        fplot.plot_curves(ax, curves, color="tab:blue", lw=1.3)
        ax.plot([], [], color="tab:blue", lw=1.3, label=f"geodesic neighbours only ({len(only_geo)})")
    for n, (i, j) in enumerate(only_euc):
        label = f"latent-distance neighbours only ({len(only_euc)})" if n == 0 else None
        ax.plot(Z[[i, j], 0], Z[[i, j], 1], "--", color="tab:red", lw=1.0, label=label)
    ax.plot([], [], color="0.55", lw=0.6, label=f"both ({len(both)})")
    fplot.plot_latents(ax, Z, lab, s=9, zorder=3, cmap="coolwarm")
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        f"{args.generator}: the {args.k} nearest of {args.m} codes, geodesic (fastgeo.nearest_neighbors, "
        f"{res.pairs_solved / args.m:.1f} geodesics per code) and by latent distance;\n"
        "grey background: log10 sqrt(det M)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out, res)


if __name__ == "__main__":
    main()
