"""The demo's model on other seeds: held-out 2-D generators with thin walls of uncertainty.

    OMP_NUM_THREADS=1 python bench/bench_demo_seeds.py                  # seeds 4, 5, 6
    OMP_NUM_THREADS=1 python bench/bench_demo_seeds.py --seeds 7,8 -- m=12 n_points=48

For each seed, the demo's recipe (``fastgeo.demo.run``: two moons lifted to D = 8, a VAE with 32
hidden units, an RBF precision of 256 centers with bandwidth scale 2 and zeta 1e-3, whose walls
between the moons are thin) is trained on that seed (the VAE for 3,000 steps), and the demo's 8
pairs (along and across the moons) are solved by ``fastgeo.geodesics`` (float32; options after
``--``, as ``name=value``) and by ``method="dense"`` (float64). Reports the excess length of every
pair over the oracle (both measured on 1024 points in float64), the statuses, and the worst per
seed. Writes ``bench/results/demo_seeds.md`` (``$FASTGEO_BENCH_OUT`` elsewhere).
"""

from __future__ import annotations

import argparse
import ast
import time

import torch
from workloads import environment_line, results_dir

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS
from fastgeo.datasets import _lift, two_moons
from fastgeo.demo import run as demo
from fastgeo.demo.vae import train_vae

VAE_STEPS = 3000


def demo_model(seed: int) -> tuple[fastgeo.ExpectedMetric, torch.Tensor, torch.Tensor]:
    """The demo's metric trained on ``seed``, and the end points (8, 2) of its pairs."""
    planar, labels = two_moons(demo.N_POINTS, demo.NOISE, seed, dtype=torch.float64)
    X = torch.from_numpy(_lift(planar.numpy(), demo.DATA_DIM)).float()
    vae = train_vae(X, seed=seed, progress=False, **{**demo.VAE, "steps": VAE_STEPS})
    with torch.no_grad():
        Z = vae.encode(X)[0]
    prec = fastgeo.RBFPrecision.fit(Z, X, vae.decoder_mean, **demo.RBF, progress=False, seed=seed)
    idx = demo._anchor_indices(planar, labels)
    i0 = torch.tensor([idx[a] for a, _, _ in demo.PAIRS])
    i1 = torch.tensor([idx[b] for _, b, _ in demo.PAIRS])
    return fastgeo.ExpectedMetric(vae.decoder_mean, prec), Z[i0], Z[i1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="4,5,6")
    parser.add_argument("options", nargs="*", help="geodesics options, name=value")
    args = parser.parse_args()
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.options)}
    torch.set_num_threads(1)
    names = [f"{a} -> {b}" for a, b, _ in demo.PAIRS]
    lines = [
        f"{environment_line()}, float32 (dense oracle: float64); options {options or 'defaults'}",
        "",
        "| seed | " + " | ".join(names) + " | worst % | statuses | default s |",
        "| --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |",
    ]
    for seed in (int(s) for s in args.seeds.split(",")):
        metric, z0, z1 = demo_model(seed)
        m64 = metric.to(torch.float64)
        with torch.no_grad():
            t = time.perf_counter()
            res = fastgeo.geodesics(metric, z0, z1, **options)
            took = time.perf_counter() - t
            dense = fastgeo.geodesics(m64, z0.double(), z1.double(), method="dense")
            length = m64.length(res.points(MEASURE_POINTS).double())
            oracle = m64.length(dense.points(MEASURE_POINTS))
        excess = 100 * (length / oracle - 1)
        counts = ", ".join(f"{s} {int((res.status == s).sum())}" for s in dict.fromkeys(res.status))
        cells = " | ".join(f"{e:.3f}" for e in excess.tolist())
        lines.append(f"| {seed} | {cells} | {float(excess.max()):.3f} | {counts} | {took:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "(excess % of each pair over the dense oracle; negative: the default's curve is shorter)"]
    out = results_dir() / "demo_seeds.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\nwritten: {out}")


if __name__ == "__main__":
    main()
