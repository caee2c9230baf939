"""The chord mode's estimates against exact geodesics, one panel per run of
``bench_pairwise_graph.py --holdout``: each held-out pair's relative error (%) against its exact
length, for the matrix entry (the chord estimate, or the graph distance in the graph mode) and for
the feature-space chord it starts from (a lower bound)::

    python bench/bench_pairwise_graph.py --generator mlp10_cells --ms 10000 --mode chord --holdout 100
    python bench/plot_chord_estimates.py bench/results/held_chord_mlp10_cells_10000.json ... \\
        --out docs/chord_estimates.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="held_<mode>_<generator>_<M>.json of the bench")
    p.add_argument("--out", default="chord_estimates.png")
    args = p.parse_args()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.files), figsize=(4.2 * len(args.files), 3.8), squeeze=False)
    for ax, file in zip(axes[0], args.files, strict=True):
        run = json.loads(Path(file).read_text())
        _, mode, *rest = Path(file).stem.split("_")
        name, M = "_".join(rest[:-1]), int(rest[-1])
        exact = run["exact"]
        entry = [100 * (e / x - 1) for e, x in zip(run["entry"], exact, strict=True)]
        chord = [100 * (c / x - 1) for c, x in zip(run["chord"], exact, strict=True)]
        ax.axhline(0, color="k", lw=0.8)
        ax.scatter(exact, chord, s=10, c="0.6", label="feature-space chord (lower bound)")
        ax.scatter(exact, entry, s=12, c="C0", label=f"{mode} estimate")
        mean_abs = sum(abs(e) for e in entry) / len(entry)
        ax.set_title(f"{name}, M = {M:,}: {len(exact)} held-out pairs\n{mode} mean |error| {mean_abs:.1f} %",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("geodesic distance (exact)")
        ax.set_ylabel("relative error (%)")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
