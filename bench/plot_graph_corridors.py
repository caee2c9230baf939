"""One pair's graph corridors with the former 2-D latent graph (a 40 x 40 grid, 10 neighbours) and
today's (60 x 60, 20 neighbours), side by side: the first three corridors (graph paths), the
default's curve with each graph, and a reference curve (the pair solved from the chain through a
third code, ``--via``)::

    OMP_NUM_THREADS=1 python bench/plot_graph_corridors.py --generator two_moons --m 80 --seed 1 \\
        --pair 18,50 --via 10 --out docs/graph_corridors_two_moons.png
"""

from __future__ import annotations

import argparse

import matplotlib
import torch
from bench_random_pairs import constants, random_codes
from workloads import GENERATORS, generator

import fastgeo
from fastgeo import plot as fplot
from fastgeo.solver.corridors import graph_paths
from fastgeo.solver.graph_cache import cached_graph, forget_graphs

GRAPHS = {
    "former graph: 1,600 grid nodes, 10 neighbours": {
        "fastgeo.solver.graph.GRID_NODES": 1600,
        "fastgeo.solver.graph.GRID_NEIGHBOURS": 10,
    },
    "today's graph: 3,600 grid nodes, 20 neighbours": {},
}
COLOURS = ("tab:blue", "tab:orange", "tab:green")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="two_moons", choices=sorted(GENERATORS))
    p.add_argument("--m", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pair", default="18,50", help="two indices into the random codes")
    p.add_argument("--via", type=int, default=10, help="the third code of the reference chain")
    p.add_argument("--out", default="graph_corridors.png")
    args = p.parse_args()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(1)
    metric, codes = generator(args.generator)[:2]
    z = random_codes(args.generator, args.m, args.seed)
    a, b = (int(x) for x in args.pair.split(","))
    t = torch.linspace(0, 1, 256)
    legs = fastgeo.geodesics(metric, z[[a, args.via]], z[[args.via, b]], progress=False)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), sharex=True, sharey=True)
    for ax, (title, overrides) in zip(axes, GRAPHS.items(), strict=True):
        with constants(overrides):
            forget_graphs(metric)  # a graph built with these constants
            res = fastgeo.geodesics(metric, z[[a]], z[[b]], progress=False)
            graph, _ = cached_graph(metric, None)
            paths, _ = graph_paths(graph, z[[a]], z[[b]], 3)
        pts = res.curves.at(t)[0]
        ref = torch.cat([legs.curves.at(t)[0], legs.curves.at(t)[1]])
        allp = torch.cat([pts, ref])
        lo, hi = allp.min(0).values - 0.6, allp.max(0).values + 0.6
        extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
        fplot.plot_background(ax, metric, extent, kind="magnification", cmap="Greys", colorbar=False)
        inside = ((codes >= lo) & (codes <= hi)).all(1)
        fplot.plot_latents(ax, codes[inside], c="tab:green", s=3, alpha=0.35)
        nodes = torch.cat([graph.nodes, paths[0].ends.to(graph.nodes)])
        for k, (path, colour) in enumerate(zip(paths, COLOURS, strict=True)):
            P = nodes[torch.as_tensor(path.nodes[0])]
            ax.plot(
                P[:, 0],
                P[:, 1],
                "-",
                lw=0.9,
                color=colour,
                label=f"corridor {k + 1} (graph {path.arc[0, -1]:.2f})",
            )
        fplot.plot_curves(
            ax, pts, color="k", lw=2, label=f"default's curve, length {float(res.lengths[0]):.3f}"
        )
        fplot.plot_curves(
            ax,
            ref,
            color="tab:red",
            lw=1.6,
            ls="--",
            label=f"via code {args.via}, {float(legs.lengths.sum()):.3f}",
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"{args.generator}, codes {a} -> {b} of {args.m} (seed {args.seed}); grey: log10 sqrt(det M)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
