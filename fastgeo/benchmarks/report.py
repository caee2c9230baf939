"""Printing (markdown tables), JSON and plots of benchmark results."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .._files import atomic_write


def _f(v: float | None, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def _table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def format_tables(results: dict[str, Any]) -> str:
    """The results as markdown tables, one per layer, under a line saying where they ran."""
    env = results["environment"]
    lines = [
        f"fastgeo {env['fastgeo_version']} ({env['git_commit']}), torch {env['torch_version']}, "
        f"triton {env['triton_version'] or 'not installed'}; device {env['device_name']}; "
        f"cpu {env['cpu_model']} ({env['cpu_count']} cores); threads per row below; "
        f"mode {results['settings']['mode']}",
        "times: seconds per call, min over rounds (median); ratios from the same run",
    ]
    rows = results["results"]
    ops = [r for r in rows if r["layer"] == "ops"]
    if ops:
        lines += ["", "ops (ratio = reference time / this backend's time)"]
        lines += _table(
            [
                "op",
                "shape",
                "dtype",
                "threads",
                "mode",
                "backend",
                "min s",
                "median s",
                "rounds",
                "vs reference",
            ],
            [
                [
                    r["op"],
                    r["shape"],
                    r["dtype"],
                    str(r["threads"]),
                    r["mode"],
                    r["backend"],
                    _f(r["time_s"]["min"]),
                    _f(r["time_s"]["median"]),
                    str(r["time_s"]["rounds"]),
                    _f(r["ratio_vs_reference"], ".2f"),
                ]
                for r in ops
            ],
        )
    solver = [r for r in rows if r["layer"] == "solver"]
    if solver:
        s0 = solver[0]
        lines += ["", f"solver ({s0['shape']}, a synthetic 2-D MLP generator with thin walls between "
                  "clusters, not a trained VAE; excess length over the shortest curve known per pair, "
                  f"method='dense' (float64; converged on {s0['dense_converged']}/{s0['pairs']} pairs, "
                  f"the shortest on {s0['pairs'] - s0.get('dense_longer', 0)}) or any method's, all "
                  "measured alike; ratio = StochMan time / this time)"]  # fmt: skip
        lines += _table(
            [
                "method",
                "dtype",
                "threads",
                "min s",
                "median s",
                "ms / geodesic",
                "first call s",
                "mean excess %",
                "worst excess %",
                "vs StochMan",
            ],
            [
                [
                    r["method"],
                    r["dtype"],
                    str(r["threads"]),
                    _f(r["time_s"]["min"]),
                    _f(r["time_s"]["median"]),
                    _f(1e3 * r["time_per_geodesic_s"], ".3g"),
                    _f(r["first_call_s"]),
                    _f(r["mean_excess_pct"], ".3f"),
                    _f(r["worst_excess_pct"], ".3f"),
                    _f(r["ratio_vs_stochman"], ".2f"),
                ]
                for r in solver
            ],
        )
    pairwise = [r for r in rows if r["layer"] == "pairwise"]
    if pairwise:
        lines += [
            "",
            "pairwise (pairwise_distances, all pairs of M codes, solver defaults; error: excess "
            "of the draft mode's coarse curves and the graph mode's chains over exact geodesics on a "
            "sample)",
        ]
        lines += _table(
            [
                "mode",
                "M",
                "shape",
                "dtype",
                "threads",
                "pairs",
                "min s",
                "median s",
                "ms / pair",
                "not converged",
                "error mean / max %",
            ],
            [
                [
                    r.get("mode", "exact"),
                    str(r["M"]),
                    r["shape"],
                    r["dtype"],
                    str(r["threads"]),
                    str(r["geodesics"]),
                    _f(r["time_s"]["min"]),
                    _f(r["time_s"]["median"]),
                    _f(1e3 * r["time_per_geodesic_s"], ".3g"),
                    str(r["not_converged"]),
                    _estimate_error(r),
                ]
                for r in pairwise
            ],
        )
    for s in results["skipped"]:
        lines.append(f"skipped ({s['layer']}): {s['what']}: {s['reason']}")
    return "\n".join(lines)


def _estimate_error(row: dict[str, Any]) -> str:
    if row.get("error_mean_pct") is None:
        return "-"
    return f"{row['error_mean_pct']:.2f} / {row['error_max_pct']:.2f}"


def write_json(results: dict[str, Any], out_dir: str) -> str:
    """Write ``out_dir/results.json``; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    atomic_write(path, lambda f: f.write(json.dumps(results, indent=1).encode()))
    return path


def write_plots(results: dict[str, Any], out_dir: str) -> list[str]:
    """One PNG per layer present in ``results``; returns the paths. Needs matplotlib."""
    # Figures of their own, not pyplot's: the caller's backend and open figures stay as they were.
    from matplotlib.figure import Figure

    os.makedirs(out_dir, exist_ok=True)
    rows = results["results"]
    paths = []

    def save(fig, name: str) -> str:
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=110)
        return path

    ops = [r for r in rows if r["layer"] == "ops"]
    if ops:
        names = list(dict.fromkeys(r["op"] for r in ops))
        fig = Figure(figsize=(4.2 * len(names), 7))
        axes = fig.subplots(2, len(names), squeeze=False)
        for j, op in enumerate(names):
            for i, mode in enumerate(("fwd", "fwd+bwd")):
                ax = axes[i][j]
                for backend, nt in dict.fromkeys((r["backend"], r["threads"]) for r in ops):
                    sel = [
                        r
                        for r in ops
                        if (r["op"], r["mode"], r["backend"], r["threads"]) == (op, mode, backend, nt)
                    ]
                    ax.plot(
                        [r["batch"] for r in sel],
                        [r["time_s"]["min"] for r in sel],
                        "o-",
                        label=f"{backend}, {nt} thread{'s' if nt > 1 else ''}",
                    )
                ax.set(xscale="log", yscale="log", title=f"{op} {mode}", xlabel="batch size B",
                       ylabel="seconds (min)")  # fmt: skip
                ax.legend()
        paths.append(save(fig, "ops"))

    solver = [r for r in rows if r["layer"] == "solver"]
    if solver:
        fig = Figure(figsize=(5.5, 4.2))
        ax = fig.subplots()
        for r in solver:
            t = r["time_s"]["min"]
            ax.plot([t], [max(r["mean_excess_pct"], 1e-6)], "o", label=f"{r['method']} (mean)")
            ax.plot([t], [max(r["worst_excess_pct"], 1e-6)], "v", color=ax.lines[-1].get_color(),
                    label=f"{r['method']} (worst)")  # fmt: skip
        label = f" ({results['label']})" if "label" in results else ""
        ax.set(yscale="log", xlabel=f"seconds for {solver[0]['pairs']} pairs (min)",
               ylabel="excess over the shortest known curve, %",
               title=f"solver: accuracy against time{label}")  # fmt: skip
        ax.legend(fontsize=8)
        paths.append(save(fig, "solver"))

    pairwise = [r for r in rows if r["layer"] == "pairwise"]
    if pairwise:
        fig = Figure(figsize=(5.5, 4.2))
        ax = fig.subplots()
        for mode in dict.fromkeys(r.get("mode", "exact") for r in pairwise):
            rs = [r for r in pairwise if r.get("mode", "exact") == mode]
            ax.plot([r["M"] for r in rs], [r["time_s"]["min"] for r in rs], "o-", label=f"mode={mode}")
        ax.legend(fontsize=8)
        ax.set(xscale="log", yscale="log", xlabel="M (codes; M (M-1)/2 geodesics)",
               ylabel="seconds (min)", title="pairwise_distances: all-pairs time")  # fmt: skip
        paths.append(save(fig, "pairwise"))
    return paths
