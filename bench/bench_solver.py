"""Solver benchmark: accuracy and wall time of fastgeo's ``default`` and ``paper`` methods and of
StochMan's ``connecting_geodesic`` (its defaults: cubic spline with 5 nodes, Adam, 150
iterations, 20 evaluation points; all pairs in one batch), on the same generators and pairs, in
the same run.

    pip install stochman==0.3.0      # optional peer (skipped if absent)
    pytest bench/bench_solver.py --benchmark-only -s
    FASTGEO_BENCH_SEED=1 pytest bench/bench_solver.py --benchmark-only -s   # another sample of pairs

Generators and pairs: those of ``workloads.py``, shared with the other layers (the shipped
two-moons (D = 10) and digits (D = 64) VAEs of tests/data, latent d = 2, float32; 48 pairs of
training codes, a third across classes). Accuracy: excess length
``L / L_dense - 1`` of every curve measured at 1024 points in float64, against
``method="dense"`` (free 128-node polylines in float64, multi-start, measured between their nodes
too: ``fastgeo.benchmarks.accuracy``). Time: min over rounds of
one batched call, after one warm-up call (the warm-up builds fastgeo's graph, which is cached
per metric; its cost is printed separately). Decoder work per geodesic counts latent points
through the mean, forward-mode directions counted once each, in one timed (warm) call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from workloads import GENERATORS, PAIRS, environment_line, generator, results_dir, solver_pairs

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, excess
from fastgeo.benchmarks.timing import environment
from fastgeo.solver.graph_cache import forget_graphs

ROWS: list[dict] = []
SEED = int(os.environ.get("FASTGEO_BENCH_SEED", "0"))  # which sample of PAIRS pairs (0: the default)


@pytest.fixture(scope="module", params=GENERATORS)
def problem(request):
    metric = generator(request.param)[0]
    z0, z1 = solver_pairs(request.param, seed=SEED)
    m64 = metric.to(torch.float64)
    t = time.perf_counter()
    with torch.no_grad():
        dense = fastgeo.geodesics(m64, z0.double(), z1.double(), method="dense")
    took = time.perf_counter() - t
    print(f"\n[{request.param}] dense oracle: {took:.1f} s, converged {int(dense.converged.sum())}/{PAIRS}")
    return {"name": request.param, "metric": metric, "m64": m64, "z0": z0, "z1": z1, "dense": dense}


def _excess(problem, points: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return excess(problem["m64"], points, problem["dense"])


def _stochman(problem):
    stochman = pytest.importorskip("stochman")
    from stochman.manifold import EmbeddedManifold

    metric = problem["metric"]

    class Embedded(EmbeddedManifold):
        """The generator as an embedded manifold: embed(c) = [mu(c), sigma(c)] gives our energy."""

        def embed(self, c, jacobian=False):
            return metric.features(c)

    manifold = Embedded()

    def run():
        curve, _ = manifold.connecting_geodesic(problem["z0"].clone(), problem["z1"].clone())
        with torch.no_grad():
            return curve(torch.linspace(0, 1, MEASURE_POINTS))

    return run, stochman.__version__


@pytest.mark.parametrize("method", ["default", "paper", "stochman"])
def test_solver(benchmark, problem, method):
    metric, z0, z1 = problem["metric"], problem["z0"], problem["z1"]
    first = None
    if method == "stochman":
        run, version = _stochman(problem)
        label = f"StochMan {version}"
        evals = 150 * 20 * 3  # 150 Adam steps x 20 points x (forward + backward ~ 2 forwards)
    else:
        forget_graphs(metric)
        t = time.perf_counter()
        with torch.no_grad():
            fastgeo.geodesics(metric, z0, z1, method=method)
            first = time.perf_counter() - t
            res = fastgeo.geodesics(metric, z0, z1, method=method)  # the timed call's work
        evals = (res.decoder_evals + res.decoder_jvps) / PAIRS

        def run():
            with torch.no_grad():
                return fastgeo.geodesics(metric, z0, z1, method=method).points(MEASURE_POINTS)

        label = f"fastgeo {method}"
    points = benchmark.pedantic(run, rounds=3, warmup_rounds=0 if method != "stochman" else 1)
    ex = _excess(problem, points)
    row = {
        "generator": problem["name"], "method": label, "time_s": benchmark.stats.stats.min,
        "first_call_s": first, "mean_excess_pct": 100 * float(ex.mean()),
        "worst_excess_pct": 100 * float(ex.max()), "decoder_evals_per_geodesic": evals,
    }  # fmt: skip
    benchmark.extra_info.update(environment("cpu"))  # version, commit, CPU model, threads...
    shape = f"B={PAIRS}, d={z0.shape[1]}"
    benchmark.extra_info.update(row, dtype="float32", pairs=PAIRS, seed=SEED, shape=shape)
    ROWS.append(row)


def solver_table() -> str:
    lines = [
        f"{environment_line()}, float32, {PAIRS} pairs per generator (a third across classes, seed {SEED})",
        "",
        "| generator | method | time s (min of 3) | first call s | StochMan / this | mean excess % "
        "| worst excess % | decoder evals / geodesic |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    peer = {r["generator"]: r["time_s"] for r in ROWS if r["method"].startswith("StochMan")}
    for r in ROWS:
        ratio = peer.get(r["generator"])
        first = "-" if r["first_call_s"] is None else f"{r['first_call_s']:.3f}"
        speedup = "-" if ratio is None else f"{ratio / r['time_s']:.2f}"
        lines.append(
            f"| {r['generator']} | {r['method']} | {r['time_s']:.3f} | {first} | {speedup} | "
            f"{r['mean_excess_pct']:.3f} | {r['worst_excess_pct']:.3f} | "
            f"{r['decoder_evals_per_geodesic']:.0f} |"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if ROWS:
        table = solver_table()
        out = results_dir()
        (out / "solver.md").write_text(table + "\n")
        print("\n" + table)
        write_solver_plots(out)


def write_solver_plots(out: Path) -> None:
    """Accuracy against time, one plot per generator: ``out/solver_<generator>.png`` (drawn by
    the plotting code of ``fastgeo bench``)."""
    try:
        from fastgeo.benchmarks.report import write_plots
    except ImportError:
        return
    for name in dict.fromkeys(r["generator"] for r in ROWS):
        rows = [
            {"layer": "solver", "method": r["method"], "pairs": PAIRS, "time_s": {"min": r["time_s"]},
             "mean_excess_pct": r["mean_excess_pct"], "worst_excess_pct": r["worst_excess_pct"]}
            for r in ROWS if r["generator"] == name
        ]  # fmt: skip
        try:
            label = f"{name}, {torch.get_num_threads()} thread(s)"
            (path,) = write_plots({"results": rows, "label": label}, str(out / name))
        except ImportError:  # matplotlib is optional
            return
        Path(path).replace(out / f"solver_{name}.png")
        (out / name).rmdir()
