"""Real-model benchmark: time per geodesic and accuracy of fastgeo's default, its ``fast`` method
and StochMan's defaults (``connecting_geodesic``, all pairs in one batch) on VAEs shaped like
users' models (latent d = 2-128, MLP and convolutional decoders, D = 784; ``conv32_color64``:
D = 12,288), in the same run, one thread.

    pip install stochman==0.3.0      # the peer (its rows are skipped if absent)
    OMP_NUM_THREADS=1 pytest bench/bench_real_models.py --benchmark-only -s
    FASTGEO_BENCH_SEED=1 FASTGEO_BENCH_REAL=mlp16_shapes,mlp16_glyphs OMP_NUM_THREADS=1 \\
        pytest bench/bench_real_models.py --benchmark-only -s
    FASTGEO_BENCH_REAL=my_vae.safetensors OMP_NUM_THREADS=1 \\
        pytest bench/bench_real_models.py --benchmark-only -s       # a generator file of your own

Generators: ``workloads.REAL_GENERATORS`` (trained on first use, minutes each; the default list
is ``DEFAULT_REAL`` below, ``FASTGEO_BENCH_REAL`` picks others) and the shipped 2-D ``digits``
VAE (D = 64) for d = 2. Pairs: ``PAIRS_REAL`` training codes, a third across classes
(``workloads.pair_indices``, seed ``FASTGEO_BENCH_SEED``). Reference: the free polylines of
``method="dense"`` cost hours at d >= 16, so every curve is compared with the shortest curve
known for its pair: the best of fastgeo's default, StochMan and a stronger fastgeo run in float64
(``STRONG``: 24 control points and 96 points per curve, Gauss-Newton
matrices at every step, tolerance 1e-10), all measured alike (1024 points, float64). Excess is
therefore a lower bound of the excess over the true geodesic. Time: one timed call after a
warm-up on two pairs (fastgeo: process time is not used; wall time on an otherwise idle
machine). Peak RSS of the process is printed with every row (run one generator per process to
read it as that generator's).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from workloads import (
    REAL_GENERATORS,
    environment_line,
    generator,
    generator_label,
    own_file,
    pair_indices,
    results_dir,
)

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS
from fastgeo.benchmarks.stochman_peer import stochman_geodesics
from fastgeo.benchmarks.timing import environment

PAIRS_REAL = int(os.environ.get("FASTGEO_BENCH_PAIRS", "32"))  # pairs per generator
SEED = int(os.environ.get("FASTGEO_BENCH_SEED", "0"))
DEFAULT_REAL = "digits,conv8_shapes,conv8_glyphs,mlp16_shapes,mlp16_glyphs,mlp32_shapes,mlp64_glyphs"
NAMES = [n for n in os.environ.get("FASTGEO_BENCH_REAL", DEFAULT_REAL).split(",") if n]
STRONG = {"m": 24, "n_points": 96, "linearize": "always", "tol": 1e-10}
# FASTGEO_BENCH_STRONG=0: no strong run (it costs hours at D = 12,288); excess then against the
# better of fastgeo and StochMan only
USE_STRONG = os.environ.get("FASTGEO_BENCH_STRONG", "1") != "0"
# FASTGEO_BENCH_FAST=0: without fastgeo's method="fast" rows; FASTGEO_BENCH_GENERIC=1: with a row of
# the default on the decoder hidden behind a plain function (its Jacobians by torch.func, as for a
# decoder fastgeo does not recognize)
METHODS = [
    "default", *(["fast"] if os.environ.get("FASTGEO_BENCH_FAST", "1") != "0" else []),
    *(["generic"] if os.environ.get("FASTGEO_BENCH_GENERIC", "0") == "1" else []), "stochman",
]  # fmt: skip
ROWS: list[dict] = []


def _describe(name: str) -> str:
    if own_file(name) is not None:
        return f"a generator file of one's own ({Path(name).name})"
    return REAL_GENERATORS.get(name, "d = 2, MLP, digits 8x8 (D = 64)")


def _convolutional(metric: fastgeo.ExpectedMetric) -> bool:
    """Whether the decoder mean has a convolution (the plot draws conv and MLP decoders apart)."""
    mean = getattr(metric.mean, "__self__", metric.mean)  # a method of a module: the module
    modules = mean.modules() if isinstance(mean, torch.nn.Module) else ()
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in modules)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module", params=NAMES)
def problem(request):
    metric, Z, labels = generator(request.param)
    I, J = pair_indices(labels, PAIRS_REAL, SEED)
    return {"name": request.param, "metric": metric, "m64": metric.to(torch.float64), "z0": Z[I], "z1": Z[J]}


@pytest.fixture(scope="module")
def reference(problem):
    """The strong float64 run's lengths (PAIRS_REAL,), measured on MEASURE_POINTS points (inf
    without it)."""
    m64 = problem["m64"]
    if not USE_STRONG:
        return {"lengths": torch.full((PAIRS_REAL,), torch.inf, dtype=torch.float64)}
    t = time.perf_counter()
    with torch.no_grad():
        strong = fastgeo.geodesics(m64, problem["z0"].double(), problem["z1"].double(), **STRONG)
        lengths = m64.length(strong.points(MEASURE_POINTS))
    print(f"\n[{problem['name']}] strong float64 reference: {time.perf_counter() - t:.1f} s", flush=True)
    return {"lengths": lengths}


def _stochman_run(problem):
    pytest.importorskip("stochman")
    run_sm, label = stochman_geodesics(problem["metric"], MEASURE_POINTS)

    def run(z0, z1):
        return run_sm(z0, z1), None

    return run, label


def _fastgeo_run(problem, method: str = "default"):
    metric = problem["metric"]
    label = f"fastgeo {method}"
    if method == "generic":
        mean = metric.mean
        metric = fastgeo.ExpectedMetric(lambda z: mean(z), metric.precision)
        method, label = "default", "torch.func Jacobians, fastgeo default"

    def run(z0, z1):
        with torch.no_grad():
            res = fastgeo.geodesics(metric, z0, z1, method=method, progress=False)
            return res.points(MEASURE_POINTS), res

    return run, label


@pytest.mark.parametrize("method", METHODS)
def test_real_model(benchmark, problem, reference, method):
    run, label = _stochman_run(problem) if method == "stochman" else _fastgeo_run(problem, method)
    z0, z1 = problem["z0"], problem["z1"]
    run(z0[:2], z1[:2])  # warm-up (first calls of the decoder, kernels' first use)
    points, res = benchmark.pedantic(run, args=(z0, z1), rounds=1, warmup_rounds=0)
    with torch.no_grad():
        lengths = problem["m64"].length(points.double())
    row = {
        "generator": generator_label(problem["name"]), "about": _describe(problem["name"]), "d": z0.shape[1],
        "conv": _convolutional(problem["metric"]), "D": problem["metric"].data_dim, "method": label,
        "lengths": lengths, "statuses": _statuses(res),
        "ms_per_geodesic": 1e3 * benchmark.stats.stats.min / len(z0), "peak_rss_mb": _peak_rss_mb(),
    }  # fmt: skip
    benchmark.extra_info.update(environment("cpu"))
    benchmark.extra_info.update(
        {k: v for k, v in row.items() if k != "lengths"}, dtype="float32", pairs=len(z0), seed=SEED
    )
    row["reference"] = reference["lengths"]
    ROWS.append(row)


def _statuses(res) -> str:
    """'converged 31, max_iter 1' (fastgeo), '-' (StochMan reports none)."""
    if res is None:
        return "-"
    names, counts = np.unique(res.status, return_counts=True)
    return ", ".join(f"{s} {n}" for s, n in zip(names, counts, strict=True))


def real_models_table() -> str:
    lines = [
        f"{environment_line()}, float32, {PAIRS_REAL} pairs per generator (a third across classes, "
        f"seed {SEED}); excess over the shortest known curve of each pair",
        "",
        "| generator | model | method | ms / geodesic | StochMan / this | mean excess % | worst excess % "
        "| statuses | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    best: dict[str, torch.Tensor] = {}
    for r in ROWS:
        prev = best.get(r["generator"], r["reference"])
        best[r["generator"]] = torch.minimum(prev, r["lengths"])
    peer = {r["generator"]: r["ms_per_geodesic"] for r in ROWS if r["method"].startswith("StochMan")}
    for r in ROWS:
        ex = 100 * (r["lengths"] / best[r["generator"]] - 1)
        r["mean_excess_pct"], r["worst_excess_pct"] = float(ex.mean()), float(ex.max())
        ratio = peer.get(r["generator"])
        speedup = "-" if ratio is None else f"{ratio / r['ms_per_geodesic']:.2f}"
        lines.append(
            f"| {r['generator']} | {r['about']} | {r['method']} | {r['ms_per_geodesic']:.1f} | {speedup} | "
            f"{r['mean_excess_pct']:.4f} | {r['worst_excess_pct']:.4f} | {r['statuses']} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if ROWS:
        table = real_models_table()
        out = results_dir()
        tag = f"real_models_seed{SEED}"
        own = [generator_label(n) for n in NAMES if own_file(n) is not None]
        if own:  # a user's own files: a table of their own, not the shipped generators' overwritten
            tag += "_" + "_".join(own)
        (out / f"{tag}.md").write_text(table + "\n")
        print("\n" + table)
        write_time_plot(out / f"{tag}.png")


def write_time_plot(path: Path) -> None:
    """Time per geodesic against the latent dimension, fastgeo and StochMan (log-log)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8.4, 4.2), layout="constrained")
    styles = (("fastgeo default", "o", "C0"), ("fastgeo fast", "^", "C1"), ("StochMan", "s", "C2"))
    for method, marker, color in styles:
        rows = [r for r in ROWS if r["method"].startswith(method)]
        for conv in (False, True):
            pick = [r for r in rows if r["conv"] == conv]
            if not pick:
                continue
            # every generator a marker; the line through the median time of each d (several
            # generators share a d: a line through all of them would run up and down)
            ds = sorted({r["d"] for r in pick})
            medians = [float(np.median([r["ms_per_geodesic"] for r in pick if r["d"] == d])) for d in ds]
            ax.plot(
                [r["d"] for r in pick], [r["ms_per_geodesic"] for r in pick], linestyle="none",
                marker=marker, color=color, fillstyle="none" if conv else "full",
                label=f"{method} ({'conv' if conv else 'MLP'} decoders)",
            )  # fmt: skip
            ax.plot(ds, medians, linestyle="--" if conv else "-", color=color, alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("latent dimension d")
    ax.set_ylabel("ms per geodesic (1 thread, float32)")
    ax.set_title(f"Time per geodesic against d ({PAIRS_REAL} pairs, seed {SEED})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)
