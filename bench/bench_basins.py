"""Basins on several samples of pairs (issue 15): does the default solver, without extra
arguments, land in the dense oracle's basin on every sample, not only on the one it was tuned on?

    OMP_NUM_THREADS=1 python bench/bench_basins.py                       # seeds 0-4, both generators
    OMP_NUM_THREADS=1 python bench/bench_basins.py --seeds 5,6 --generators digits
    OMP_NUM_THREADS=1 python bench/bench_basins.py --generators mlp12_small,conv5_small   # d = 12, 5
    OMP_NUM_THREADS=1 python bench/bench_basins.py --generators my_vae.safetensors --seeds 0,1   # your own
    python bench/bench_basins.py --list-oracles      # which kept oracles fit the generators here

For every generator of ``workloads.py`` and every seed, 48 pairs of its training codes
(``workloads.pair_indices``: a third across classes) are solved twice: ``fastgeo.geodesics`` with
its defaults in float32, and ``method="dense"`` (the oracle: multi-start 128-node polylines) in
float64. Per seed it reports the excess length ``L / L_dense - 1`` of the default's curves (mean and
worst; every curve, the oracle's too, measured on the same grid in float64,
``fastgeo.benchmarks.accuracy``), how many curves ended in each status (``res.status``) for both
solvers, and the largest relative gap between a reported length and the same returned curve's
length measured on 4096 points in float64 (the reported lengths are the curves' own). Goal: worst
excess <= 0.5 % on every seed and mean <= 0.05 %.

The dense oracle takes one to two minutes per seed and generator at one thread, so the default
run takes 20-30 minutes; its lengths are kept in ``bench/oracle/`` (small JSON files, under
version control: an oracle of a real-model generator costs up to an hour per seed) and reused
(keyed by the generator file's bytes and the pairs: a generator trained again elsewhere, bit for
bit different, gets its own), so a rerun after a solver change costs the solver alone. The table
is printed and written to ``bench/results/basins.md``
(``$FASTGEO_BENCH_OUT`` elsewhere; ``basins_<generators>.md`` for the real-model generators of
``workloads.REAL_GENERATORS``, whose dense oracle costs far more: minutes per pair at d >= 8),
rewritten after every seed, so a partial run leaves its rows. The oracle's starts are the default
solver's own curves, so a kept oracle comes from the solver of its day: ``--refresh-oracle``
computes it again, prints how the lengths moved and keeps the shorter per pair;
``--refresh-loose 0.1`` does so on the pairs alone where the default's curve is more than 0.1 %
shorter than the kept oracle's (minutes instead of an hour at d >= 8). The oracle is solved
``--oracle-chunk`` pairs per call, each chunk saved as it ends (``bench/oracle/*.json.partial``), so
a run stopped after hours resumes where it stopped (``oracles.py`` keeps them); ``--oracle-only``
computes (or resumes) the oracles and nothing else:

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 OMP_NUM_THREADS=1 nice -n 19 \
        python bench/bench_basins.py --generators conv12_upsample_glyphs --seeds 0 --oracle-only

The float64
oracle spends ~28 % of its CPU time in the kernel mapping freed tensors afresh (glibc); with
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment 3 %
(mlp12_small, 4 pairs: 15.2 -> 11.1 s of CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import torch
from oracles import ORACLE_CHUNK, ORACLE_OPTIONS, dense_oracle, kept_oracles, oracle_path, refresh_pairs
from workloads import (
    GENERATORS,
    PAIRS,
    REAL_GENERATORS,
    environment_line,
    generator,
    generator_label,
    own_file,
    results_dir,
    solver_pairs,
)

import fastgeo
from fastgeo.benchmarks.accuracy import (
    FINE_POINTS,
    MEASURE_POINTS,
    length_gaps,
    measured_lengths,
)
from fastgeo.solver.result import STATUSES

WORST_GOAL, MEAN_GOAL = 0.5, 0.05  # % (issue 15)
# An oracle is as good as its starts: where the default's curve is shorter than the kept oracle's
# by more than this (%), the oracle missed that basin (kept oracles come from older defaults'
# starts: conv8_shapes seed 1 pair 26 was 7.4 % long), and a pair's excess elsewhere may be
# understated alike; such pairs are listed, to refresh the oracle (--refresh-oracle). Smaller
# gaps are mostly the oracle's 128-node polylines following a winding curve less closely than the
# default's splines (d = 12-64: 0.1-0.5 % on single pairs; mlp32_shapes' kept oracles also 0.6-1.1 %
# on three pairs of 240).
LOOSE_ORACLE = 0.5


def run_one(
    name: str,
    seed: int,
    n: int,
    refresh: bool = False,
    refresh_loose: float | None = None,
    chunk: int = ORACLE_CHUNK,
) -> dict:
    metric = generator(name)[0]
    m64 = metric.to(torch.float64)
    z0, z1 = solver_pairs(name, n, seed)
    with torch.no_grad():
        t = time.perf_counter()
        res = fastgeo.geodesics(metric, z0, z1, progress=False)
        default_s = time.perf_counter() - t
        dense_lengths, dense_status, dense_s = dense_oracle(name, seed, n, m64, z0, z1, refresh, chunk)
        measured = measured_lengths(m64, res.points(MEASURE_POINTS))
        ex = 100 * (measured / dense_lengths - 1)
        if refresh_loose is not None and bool((ex < -refresh_loose).any()):
            idx = (ex < -refresh_loose).nonzero().flatten()
            dense_lengths, dense_status = refresh_pairs(name, seed, n, m64, z0, z1, idx)
            ex = 100 * (measured / dense_lengths - 1)
        gap = 100 * length_gaps(m64, res)
    worst = int(ex.argmax())
    return {
        "generator": generator_label(name),
        "seed": seed,
        "pairs": n,
        "mean": float(ex.mean()),
        "worst": float(ex.max()),
        "worst_pair": worst,
        "worst_status": str(res.status[worst]),
        "above_worst_goal": int((ex > WORST_GOAL).sum()),
        "status": Counter(res.status.tolist()),
        "dense_status": Counter(dense_status),
        "gap": float(gap.abs().max()),
        "default_s": default_s,
        "dense_s": dense_s,
        "excess": ex.tolist(),
        "loose": [(int(i), float(ex[i])) for i in (ex < -LOOSE_ORACLE).nonzero().flatten()],
    }


def _statuses(counts: Counter) -> str:
    return ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts[s]) or "-"


def table(rows: list[dict], command: str, threads: int) -> str:
    lines = [
        f"{environment_line(threads)}, float32 (dense oracle: float64)",
        f"command: `{command}`",
        "",
        "| generator | seed | mean excess % | worst excess % (pair, status) | pairs > 0.5 % | default: "
        f"statuses | dense: statuses | max length gap % ({FINE_POINTS} points) | default s | dense s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['generator']} | {r['seed']} | {r['mean']:.3f} | {r['worst']:.3f} "
            f"({r['worst_pair']}, {r['worst_status']}) | {r['above_worst_goal']} | {_statuses(r['status'])} "
            f"| {_statuses(r['dense_status'])} | {r['gap']:.4f} | {r['default_s']:.2f} | {r['dense_s']:.1f} |"
        )
    lines.append("")
    lines.append("(default s: one call; the first seed of each generator includes building its graph.)")
    for name in dict.fromkeys(r["generator"] for r in rows):
        rs = [r for r in rows if r["generator"] == name]
        pooled = [e for r in rs for e in r["excess"]]
        worst_ok = all(r["worst"] <= WORST_GOAL for r in rs)
        mean_ok = all(r["mean"] <= MEAN_GOAL for r in rs)
        lines.append(
            f"- {name}, {len(rs)} seed(s): worst excess <= {WORST_GOAL} % on every seed: "
            f"{'yes' if worst_ok else 'NO'} (largest {max(r['worst'] for r in rs):.3f} %); "
            f"mean <= {MEAN_GOAL} % on every seed: {'yes' if mean_ok else 'NO'} (largest "
            f"{max(r['mean'] for r in rs):.3f} %, over all {len(pooled)} pairs "
            f"{sum(pooled) / len(pooled):.3f} %); max length gap {max(r['gap'] for r in rs):.4f} %"
        )
        loose = [f"seed {r['seed']} pair {i} ({e:.2f} %)" for r in rs for i, e in r["loose"]]
        if loose:
            lines.append(
                f"  - the oracle is loose (the default more than {LOOSE_ORACLE} % shorter) on: "
                f"{', '.join(loose)}; refresh it (--refresh-oracle) before trusting the excess elsewhere"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds of pair samples")
    p.add_argument(
        "--generators",
        default=",".join(GENERATORS),
        help="comma-separated generators: names of workloads.py, or generator files of your own "
        "(fastgeo.save_generator with extras latents and labels)",
    )
    p.add_argument("--pairs", type=int, default=PAIRS, help="pairs per sample")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--refresh-oracle",
        action="store_true",
        help="compute the kept dense oracles again and keep the shorter length per pair",
    )
    p.add_argument(
        "--refresh-loose",
        type=float,
        default=None,
        metavar="PCT",
        help="compute the kept dense oracle again on the pairs alone where the default is more than PCT %% "
        "shorter (an oracle missed that basin), keeping the shorter length per pair",
    )
    p.add_argument(
        "--kept-only",
        action="store_true",
        help="skip the samples without a kept dense oracle (computing one takes up to hours at d >= 8)",
    )
    p.add_argument(
        "--oracle-only",
        action="store_true",
        help="compute (or resume) the dense oracles of the samples that have none, and nothing else",
    )
    p.add_argument(
        "--oracle-chunk",
        type=int,
        default=ORACLE_CHUNK,
        metavar="K",
        help="pairs per call of the dense oracle, each chunk saved as it ends (a stopped run resumes)",
    )
    p.add_argument(
        "--oracle-points",
        type=int,
        default=None,
        metavar="N",
        help="nodes of the dense oracle's polylines (default: the dense method's 128)",
    )
    p.add_argument(
        "--list-oracles",
        action="store_true",
        help="list the kept dense oracles and whether each belongs to the generator files here, then exit",
    )
    args = p.parse_args(argv)
    if args.list_oracles:
        print("| file | generator | seed | pairs | state | oracle s |\n| --- | --- | --- | --- | --- | --- |")
        for r in kept_oracles():
            cells = (r["file"], r["generator"], r["seed"], r["pairs"], r["state"], f"{r['seconds']:.0f}")
            print("| " + " | ".join(map(str, cells)) + " |")
        return
    if args.oracle_chunk < 1:
        p.error("--oracle-chunk: at least 1 pair per call")
    if args.oracle_points is not None:
        if args.oracle_points < 4:
            p.error("--oracle-points: at least 4 nodes")
        ORACLE_OPTIONS["n_points"] = args.oracle_points
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.generators.split(",")
    for name in names:
        if name not in GENERATORS and name not in REAL_GENERATORS and own_file(name) is None:
            p.error(
                f"--generators: {name!r} is not one of {GENERATORS + tuple(REAL_GENERATORS)}, nor a "
                "generator file (.safetensors / .pt2 of fastgeo.save_generator, extras latents and labels)"
            )
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else argv
    omp = os.environ.get("OMP_NUM_THREADS")
    command = " ".join([*([f"OMP_NUM_THREADS={omp}"] if omp else []), "python bench/bench_basins.py", *given])
    tag = "" if set(names) <= set(GENERATORS) else "_" + "_".join(map(generator_label, names))
    out = results_dir() / f"basins{tag}.md"
    rows: list[dict] = []
    for name in names:
        for seed in seeds:
            if (
                args.kept_only
                and not oracle_path(name, seed, args.pairs, *solver_pairs(name, args.pairs, seed))[0].exists()
            ):
                print(f"[{name} seed {seed}] skipped: no kept dense oracle", flush=True)
                continue
            t = time.perf_counter()
            if args.oracle_only:
                z0, z1 = solver_pairs(name, args.pairs, seed)
                m64 = generator(name)[0].to(torch.float64)
                with torch.no_grad():
                    *_, spent = dense_oracle(
                        name, seed, args.pairs, m64, z0, z1, args.refresh_oracle, args.oracle_chunk
                    )
                print(f"[{name} seed {seed}] dense oracle kept ({spent:.0f} s of solving)", flush=True)
                continue
            rows.append(
                run_one(name, seed, args.pairs, args.refresh_oracle, args.refresh_loose, args.oracle_chunk)
            )
            r = rows[-1]
            print(
                f"[{name} seed {seed}] mean {r['mean']:.3f} % worst {r['worst']:.3f} % "
                f"statuses {_statuses(r['status'])}, gap {r['gap']:.4f} % ({time.perf_counter() - t:.0f} s)"
                + (f"; oracle loose on pairs {[i for i, _ in r['loose']]}" if r["loose"] else ""),
                flush=True,
            )
            out.write_text(table(rows, command, args.threads) + "\n")
    if rows:
        print("\n" + table(rows, command, args.threads))
        print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
