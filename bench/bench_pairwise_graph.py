"""All-pairs distances at the sizes users cluster (issue 18): the approximate modes of
``pairwise_distances`` (``mode="graph"``, or ``--mode draft``) on M = 256 to 4,000 codes, time,
pairs per second, peak RSS and the measured error of their entries on a random sample of pairs
solved exactly.

    python bench/bench_pairwise_graph.py                                  # digits, M = 256, 1000, 4000
    python bench/bench_pairwise_graph.py --generator mlp16_shapes --ms 256,1000
    python bench/bench_pairwise_graph.py --threads 1,2 --ms 256 --load    # with a competing process
    python bench/bench_pairwise_graph.py --ms 256 --straight              # straight segments in 2-D too
    python bench/bench_pairwise_graph.py --generator mlp10_cells --ms 256 --neighbors 0   # segments alone
    python bench/bench_pairwise_graph.py --generator mlp16_shapes --ms 256 --mode draft   # coarse curves
    python bench/bench_pairwise_graph.py --generator mlp10_cells --ms 10000 --mode chord --holdout 100

Each (M, threads) runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own; the
M codes are a random subset (seed 1) of the generator's training codes (``workloads.py``; beyond
their number, more drawn around them: ``codes``). The
error is the entries' relative excess over :func:`fastgeo.geodesics` (defaults) on ``--sample``
random pairs (``report.graph_error``, ``report.draft_error``, ``report.chord_error``: the chord
mode fits its estimates to that sample and states them each predicted without it);
``--holdout`` more random pairs, solved by :func:`fastgeo.geodesics` after the call, give the
entries' error on pairs the call never saw; the default solver's own excess
over the dense oracle is in the solver and basins tables. ``--load``
runs a competing busy process on one core during each measurement. The table is printed and
written to ``bench/results/pairwise_<mode>_<generator>.md`` (``$FASTGEO_BENCH_OUT`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from workloads import environment_line, generator, results_dir

import fastgeo


def worker(
    name: str,
    M: int,
    threads: int,
    sample: int,
    straight: bool | None = None,
    neighbors: int | None = None,
    mode: str = "graph",
    edges: str | None = None,
    holdout: int = 0,
) -> dict:
    torch.set_num_threads(threads)
    metric, Zall, _ = generator(name)
    Z = codes(Zall, M)
    graph = {"straight": straight, "neighbors": neighbors, "edges": edges} if mode == "graph" else {}
    t0 = time.perf_counter()
    D, rep = fastgeo.pairwise_distances(
        metric, Z, mode=mode, error_sample=sample, progress=False, return_report=True, **graph
    )
    wall = time.perf_counter() - t0
    e = {"graph": rep.graph_error, "draft": rep.draft_error, "chord": rep.chord_error}[mode]
    held = held_out_error(metric, Z, D, holdout, f"held_{mode}_{name}_{M}.json")
    return {
        "M": M,
        "threads": threads,
        "pairs": rep.n_pairs,
        "edges": rep.graph_edges,
        "straight": rep.straight_shortcuts,
        "wall_s": wall,
        "pairs_per_s": rep.n_pairs / wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "sample": e.pairs,
        "mean": 100 * e.mean,
        "median": 100 * e.median,
        "p95": 100 * e.p95,
        "max": 100 * e.max,
        "mean_abs": 100 * e.mean_abs,
        "min": 100 * e.min,
        **held,
        "finite": bool(torch.isfinite(D).all()),
        "symmetric": bool(torch.equal(D, D.T)),
    }


def held_out_error(
    metric: fastgeo.ExpectedMetric, Z: torch.Tensor, D: torch.Tensor, n: int, file: str
) -> dict:
    """The entries' relative error (%) on ``n`` random pairs ``i < j`` (seed 7, not the call's
    sample seed) solved by ``fastgeo.geodesics`` here: mean |error|, min, max; the pairs' exact
    lengths, entries and feature-space chords written to ``file`` in the results folder (JSON,
    for ``plot_chord_estimates.py``)."""
    if n == 0:
        return {"held": 0, "held_mean_abs": float("nan"), "held_min": float("nan"), "held_max": float("nan")}
    g = torch.Generator().manual_seed(7)
    i, j = torch.randint(Z.shape[0], (2, 4 * n), generator=g)
    keep = (i != j).nonzero().squeeze(1)[:n]
    i, j = torch.minimum(i, j)[keep], torch.maximum(i, j)[keep]
    exact = fastgeo.geodesics(metric, Z[i], Z[j], progress=False).lengths.double()
    err = 100 * (D[i, j].double() / exact - 1)
    with torch.no_grad():
        chord = (metric.features(Z[i]) - metric.features(Z[j])).double().norm(dim=1)
    pairs = {"exact": exact.tolist(), "entry": D[i, j].double().tolist(), "chord": chord.tolist()}
    (results_dir() / file).write_text(json.dumps(pairs))
    return {"held": int(err.numel()), "held_mean_abs": float(err.abs().mean()),
            "held_min": float(err.min()), "held_max": float(err.max())}  # fmt: skip


def codes(Zall: torch.Tensor, M: int) -> torch.Tensor:
    """M codes: a random subset (seed 1) of the training codes; beyond their number, more drawn
    around random training codes (Gaussian, half the median nearest-neighbour distance), as an
    encoder's posterior samples would be."""
    g = torch.Generator().manual_seed(1)
    Z = Zall[torch.randperm(Zall.shape[0], generator=g)[:M]]
    extra = M - Z.shape[0]
    if extra > 0:
        nn = torch.cdist(Zall, Zall).fill_diagonal_(float("inf")).min(1).values.median()
        idx = torch.randint(Zall.shape[0], (extra,), generator=g)
        Z = torch.cat([Z, Zall[idx] + 0.5 * nn * torch.randn(extra, Zall.shape[1], generator=g)])
    return Z


def busy() -> subprocess.Popen:
    """A competing process: one core spinning in Python."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    ap.add_argument("--generator", default="digits")
    ap.add_argument("--mode", default="graph", choices=("graph", "draft", "chord"))
    ap.add_argument("--ms", default="256,1000,4000")
    ap.add_argument("--threads", default="2")
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--load", action="store_true", help="a competing busy process on one core")
    ap.add_argument(
        "--straight",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="straight segments as shortcuts (default: the library's, on in d >= 4)",
    )
    ap.add_argument("--neighbors", type=int, default=None, help="edges per code (0: straight segments alone)")
    ap.add_argument("--edges", choices=("draft", "exact"), default=None, help="edges as drafts or geodesics")
    ap.add_argument("--holdout", type=int, default=0, help="more random pairs solved after the call")
    ap.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)  # M, threads, sample
    args = ap.parse_args()
    if args.worker:
        extra = dict(
            straight=args.straight,
            neighbors=args.neighbors,
            mode=args.mode,
            edges=args.edges,
            holdout=args.holdout,
        )
        record = worker(args.generator, *args.worker, **extra)
        print(json.dumps(record))
        return
    rows = []
    head = (
        f"# pairwise_distances(mode={args.mode!r}) on {args.generator}"
        + (" with a competing busy process" if args.load else "")
        + f"\n\n{environment_line()}\n\n"
        "| M | threads | pairs | edges | entries from straight segments | time (s) | pairs/s "
        "| peak RSS (MB): run / largest worker | sample | mean excess % | median % | p95 % | max % "
        "| min % | mean abs % | held-out pairs: mean abs %, min, max |\n|" + " --- |" * 16
    )
    print(head, flush=True)
    for M in (int(x) for x in args.ms.split(",")):
        for threads in (int(x) for x in args.threads.split(",")):
            other = busy() if args.load else None
            try:
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                cmd = [
                    sys.executable,
                    __file__,
                    "--generator",
                    args.generator,
                    "--mode",
                    args.mode,
                    "--worker",
                    str(M),
                    str(threads),
                    str(args.sample),
                    *([] if args.straight is None else ["--straight" if args.straight else "--no-straight"]),
                    *([] if args.neighbors is None else ["--neighbors", str(args.neighbors)]),
                    *([] if args.edges is None else ["--edges", args.edges]),
                    "--holdout",
                    str(args.holdout),
                ]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            r = json.loads(out.strip().splitlines()[-1])
            assert r["finite"] and r["symmetric"]
            line = (
                f"| {M} | {threads} | {r['pairs']} | {r['edges']} | {r['straight']} | {r['wall_s']:.1f} | "
                f"{r['pairs_per_s']:.0f} | "
                f"{r['rss_mb']:.0f} / {r['worker_rss_mb']:.0f} | {r['sample']} | {r['mean']:.3f} | "
                f"{r['median']:.3f} | {r['p95']:.3f} | "
                f"{r['max']:.3f} | {r['min']:.3f} | {r['mean_abs']:.3f} | "
                + (
                    f"{r['held']}: {r['held_mean_abs']:.3f}, {r['held_min']:.3f}, {r['held_max']:.3f} |"
                    if r["held"]
                    else "- |"
                )
            )
            rows.append(line)
            print(line, flush=True)
            name = f"pairwise_{args.mode}_{args.generator}{'_load' if args.load else ''}.md"
            (results_dir() / name).write_text(head + "\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
