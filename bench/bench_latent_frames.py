"""The default solver in other frames of the same latent space: rotated and rescaled.

    OMP_NUM_THREADS=1 python bench/bench_latent_frames.py --generator mlp12_small --seed 0 --rotations 3
    OMP_NUM_THREADS=1 python bench/bench_latent_frames.py --generator digits --angles 0.3 --scales 0.01,100

A rotation ``z' = R z`` or a rescaling ``z' = s z`` of the latent space, with the decoder mean read
at ``R^T z'`` (``z' / s``) and the RBF centers moved alike (bandwidths ``gamma / s^2``), changes
no curve's length: every geodesic of one frame is a geodesic of the other. A solver whose result
moves with the frame has something tied to the axes or to absolute sizes (the graph's grid and
random nodes, Adam's per-coordinate steps in the explored start, absolute floors): where the
frames disagree, at most one of them found the shortest basin. Another training run of a VAE puts
its codes in another frame, so the spread over frames is a fair look at how the default fares on
models it was not tuned on. Per frame: the pairs' lengths against the first frame's, and (where
``bench/oracle`` keeps the sample's dense oracle) the excess over it, each curve measured in the
original frame on the grid of ``fastgeo.benchmarks.accuracy``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from bench_variants import add_options_argument, constants, options_of
from oracles import oracle_path
from torch import nn
from workloads import PAIRS, environment_line, generator, solver_pairs

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths


class _Framed(nn.Module):
    """The mean read in another frame: ``mean(z' @ A)`` (rows), ``A = R / s``."""

    def __init__(self, mean: nn.Module, A: torch.Tensor) -> None:
        super().__init__()
        self.mean = mean
        self.register_buffer("A", A.contiguous())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mean(z @ self.A)


def framed(metric: fastgeo.ExpectedMetric, R: torch.Tensor, s: float) -> fastgeo.ExpectedMetric:
    """The metric in the frame ``z' = s R z`` (R orthogonal, (d, d))."""
    p = metric.precision
    precision = fastgeo.RBFPrecision(s * p.centers @ R.T, p.gammas / s**2, p.weights, p.zeta)
    return fastgeo.ExpectedMetric(_Framed(metric.mean, R / s), precision)


def frames(
    d: int, angles: list[float], rotations: int, scales: list[float], seed: int
) -> list[tuple[str, torch.Tensor, float]]:
    """(name, R, s) of every frame: the original first, then plane rotations (2-D) or random
    orthogonal matrices, then rescalings."""
    out = [("original", torch.eye(d), 1.0)]
    for a in angles:
        c, s = math.cos(a), math.sin(a)
        R = torch.eye(d)
        R[:2, :2] = torch.tensor([[c, -s], [s, c]])
        out.append((f"rotated {a:g} rad in the first plane", R, 1.0))
    g = torch.Generator().manual_seed(seed)
    for k in range(rotations):
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        out.append((f"random rotation {k + 1}", Q.float(), 1.0))
    out += [(f"scaled by {s:g}", torch.eye(d), s) for s in scales]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generator", default="digits")
    p.add_argument("--seed", type=int, default=0, help="sample of pairs (workloads.pair_indices)")
    p.add_argument("--pairs", type=int, default=PAIRS)
    p.add_argument("--angles", default="", help="comma-separated rotations of the first latent plane (rad)")
    p.add_argument("--rotations", type=int, default=0, help="random orthogonal frames")
    p.add_argument("--scales", default="", help="comma-separated rescalings")
    add_options_argument(p)
    args = p.parse_args()
    options, overrides, kwargs = options_of(args)
    torch.set_num_threads(1)
    metric = generator(args.generator)[0]
    z0, z1 = solver_pairs(args.generator, args.pairs, args.seed)
    m64 = metric.to(torch.float64)
    kept = oracle_path(args.generator, args.seed, args.pairs, z0, z1)[0]
    oracle = (
        torch.tensor(json.loads(kept.read_text())["lengths"], dtype=torch.float64) if kept.exists() else None
    )
    floats = [float(x) for x in args.angles.split(",") if x], [float(x) for x in args.scales.split(",") if x]
    print(
        environment_line(1)
        + f", float32; {args.generator}, seed {args.seed}, {args.pairs} pairs, options {options}"
    )
    columns = (
        "frame", "ms / pair (CPU)", "statuses", "length vs the original: mean / min / max %",
        "pairs > 0.01 % apart", "excess over the dense oracle: mean / worst % (pair)",
    )  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = None
    for name, R, s in frames(z0.shape[1], floats[0], args.rotations, floats[1], args.seed):
        fm = framed(metric, R, s)
        t = time.process_time()
        with torch.no_grad(), constants(overrides):
            res = fastgeo.geodesics(fm, s * z0 @ R.T, s * z1 @ R.T, progress=False, **kwargs)
        ms = 1000 * (time.process_time() - t) / args.pairs
        lengths = res.lengths.double()
        base = lengths if base is None else base
        rel = 100 * (lengths / base - 1)
        apart = (rel.abs() > 0.01).nonzero().squeeze(1).tolist()
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(_count(res.status.tolist()).items()))
        excess = "-"
        if oracle is not None:
            with torch.no_grad():
                pts = res.points(MEASURE_POINTS).double() @ (R.double() / s)  # back to the original frame
                ex = 100 * (measured_lengths(m64, pts) / oracle - 1)
            excess = f"{float(ex.mean()):.4f} / {float(ex.max()):.4f} ({int(ex.argmax())})"
        print(
            f"| {name} | {ms:.0f} | {statuses} | {float(rel.mean()):+.4f} / {float(rel.min()):+.4f} / "
            f"{float(rel.max()):+.4f} | {len(apart)} {apart if apart else ''} | {excess} |",
            flush=True,
        )


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


if __name__ == "__main__":
    main()
