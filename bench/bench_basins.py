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
a run stopped after hours resumes where it stopped; ``--oracle-only`` computes (or resumes) the
oracles and nothing else:

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 OMP_NUM_THREADS=1 nice -n 19 \
        python bench/bench_basins.py --generators conv12_upsample_glyphs --seeds 0 --oracle-only

The float64
oracle spends ~28 % of its CPU time in the kernel mapping freed tensors afresh (glibc); with
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment 3 %
(mlp12_small, 4 pairs: 15.2 -> 11.1 s of CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from workloads import (
    GENERATORS,
    PAIRS,
    REAL_GENERATORS,
    environment_line,
    generator,
    generator_fingerprint,
    generator_label,
    generator_path,
    own_file,
    present_generator_path,
    results_dir,
    solver_pairs,
)

import fastgeo
from fastgeo.benchmarks.accuracy import (
    FINE_POINTS,
    MEASURE_POINTS,
    length_gaps,
    measured_lengths,
    oracle_lengths,
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
ORACLE_DIR = Path(__file__).resolve().parent / "oracle"
# Pairs per call of the dense oracle: each chunk is saved as it ends (hours per sample at d >= 8).
ORACLE_CHUNK = 4
# Options of the dense oracle's calls (--oracle-points: its polylines' nodes; on a ReLU decoder 128
# nodes end 0.7-1 % above the default's curve on a few pairs, 256 nodes 0.14-0.19 %).
ORACLE_OPTIONS: dict = {}


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


def dense_oracle(
    name: str, seed: int, n: int, m64, z0, z1, refresh: bool = False, chunk: int = ORACLE_CHUNK
) -> tuple[torch.Tensor, list[str], float]:
    """The dense oracle's lengths (measured like every curve), statuses and time for a sample,
    kept in ``bench/oracle/`` (the oracle does not change with the solver under test; a
    changed generator file or sample gives another key). ``refresh``: compute it again (its starts
    are the default solver's curves, which change with the solver), print how its lengths differ
    from the kept ones, and keep the shorter per pair (every oracle length is an upper bound).

    It is computed ``chunk`` pairs at a time (the solver is batch independent: the same curves as
    in one call), each chunk's lengths saved beside the kept file (``*.json.partial``), so a run
    stopped after hours resumes where it stopped, in this process or a later one."""
    path, key = oracle_path(name, seed, n, z0, z1)
    kept = _read_oracle(path)
    if kept is not None and not refresh:
        return kept["lengths"], kept["status"], kept["seconds"]
    if kept is None:
        print(
            f"[{name} seed {seed}] no kept dense oracle for this generator file and sample ({path.name}): "
            "computing it (up to hours at d >= 8)",
            flush=True,
        )
    lengths, status, seconds = _oracle_by_chunks(name, seed, path, key, m64, z0, z1, refresh, chunk)
    if kept is not None:
        rel = lengths / kept["lengths"] - 1
        print(
            f"[{name} seed {seed}] oracle again in {seconds:.0f} s (kept: {kept['seconds']:.0f} s): "
            f"{int((rel < -1e-6).sum())} pairs shorter (by up to {100 * float(-rel.min()):.4f} %), "
            f"{int((rel > 1e-6).sum())} longer (by up to {100 * float(rel.max()):.4f} %)",
            flush=True,
        )
        shorter = lengths < kept["lengths"]
        pairs = zip(status, kept["status"], shorter.tolist(), strict=True)
        status = [new if short else old for new, old, short in pairs]
        lengths, seconds = torch.minimum(lengths, kept["lengths"]), min(seconds, kept["seconds"])
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "generator": generator_label(name),
        "seed": seed,
        "pairs": n,
        "key": key,
        "lengths": lengths.tolist(),  # float64, measured like every curve (benchmarks.accuracy)
        "status": status,
        "seconds": seconds,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **({"points": ORACLE_OPTIONS["n_points"]} if "n_points" in ORACLE_OPTIONS else {}),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    _partial_path(path).unlink(missing_ok=True)
    return lengths, status, seconds


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _oracle_by_chunks(
    name: str, seed: int, path: Path, key: str, m64, z0, z1, refresh: bool, chunk: int
) -> tuple[torch.Tensor, list[str], float]:
    """The oracle of every pair of a sample, ``chunk`` pairs per call, resumed from and saved to
    the partial file after each chunk. Returns lengths (n,), statuses and the seconds they took
    (summed over the runs that computed them)."""
    n = z0.shape[0]
    partial = _partial_path(path)
    done: dict = {"key": key, "refresh": refresh, "options": ORACLE_OPTIONS, "lengths": {}, "status": {}}
    done["seconds"] = 0.0
    if partial.exists():
        saved = json.loads(partial.read_text())
        same = (saved.get("key"), saved.get("refresh"), saved.get("options", {}))
        if same == (key, refresh, ORACLE_OPTIONS):
            done = saved
            print(f"[{name} seed {seed}] resuming the oracle: {len(done['lengths'])} of {n} pairs saved",
                  flush=True)  # fmt: skip
    todo = [i for i in range(n) if str(i) not in done["lengths"]]
    for at in range(0, len(todo), chunk):
        idx = torch.tensor(todo[at : at + chunk])
        t = time.perf_counter()
        dense = fastgeo.geodesics(m64, z0[idx].double(), z1[idx].double(), method="dense", **ORACLE_OPTIONS)
        lengths = oracle_lengths(m64, dense)
        done["seconds"] += time.perf_counter() - t
        for k, i in enumerate(idx.tolist()):
            done["lengths"][str(i)] = float(lengths[k])
            done["status"][str(i)] = str(dense.status[k])
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(done, indent=1) + "\n")
        print(
            f"[{name} seed {seed}] oracle: {len(done['lengths'])} of {n} pairs ({done['seconds']:.0f} s)",
            flush=True,
        )
    lengths = torch.tensor([done["lengths"][str(i)] for i in range(n)], dtype=torch.float64)
    return lengths, [done["status"][str(i)] for i in range(n)], done["seconds"]


def refresh_pairs(
    name: str, seed: int, n: int, m64, z0, z1, idx: torch.Tensor
) -> tuple[torch.Tensor, list[str]]:
    """The kept oracle of a sample computed again on the pairs ``idx`` alone (the solver is batch
    independent: the same curves as in the whole sample), from today's default's curves among its
    starts; the shorter length kept per pair, the file rewritten. Returns the lengths and
    statuses of the whole sample."""
    path, _ = oracle_path(name, seed, n, z0, z1)
    kept = _read_oracle(path)
    t = time.perf_counter()
    dense = fastgeo.geodesics(m64, z0[idx].double(), z1[idx].double(), method="dense", **ORACLE_OPTIONS)
    lengths = oracle_lengths(m64, dense)
    old = kept["lengths"][idx]
    moved = (
        f"{i}: {100 * (float(a) / float(b) - 1):+.3f} %"
        for i, a, b in zip(idx.tolist(), lengths, old, strict=True)
    )
    print(
        f"[{name} seed {seed}] oracle again on pairs in {time.perf_counter() - t:.0f} s: {', '.join(moved)}",
        flush=True,
    )
    shorter = lengths < old
    kept["lengths"][idx] = torch.minimum(lengths, old)
    for k, i in enumerate(idx.tolist()):
        if shorter[k]:
            kept["status"][i] = dense.status[k]
    kept["refreshed_pairs"] = sorted({*kept.get("refreshed_pairs", []), *idx.tolist()})
    if "n_points" in ORACLE_OPTIONS:  # polylines of other than the dense method's default nodes
        points = kept.setdefault("refreshed_points", {})
        points.update({str(i): ORACLE_OPTIONS["n_points"] for i in idx.tolist()})
    path.write_text(json.dumps({**kept, "lengths": kept["lengths"].tolist()}, indent=1) + "\n")
    return kept["lengths"], kept["status"]


def oracle_path(name: str, seed: int, n: int, z0: torch.Tensor, z1: torch.Tensor) -> tuple[Path, str]:
    """Where the dense oracle of a sample is kept, and its key (the generator's fingerprint and
    the pairs: a generator trained again to other weights, or other pairs, give another key)."""
    sample = z0.numpy().tobytes() + z1.numpy().tobytes()
    key = hashlib.sha256(generator_fingerprint(generator_path(name)) + sample).hexdigest()
    return ORACLE_DIR / f"{generator_label(name)}_{seed}_{n}_{key[:16]}.json", key


def _read_oracle(path: Path) -> dict | None:
    """A kept oracle (lengths as a float64 tensor), or None."""
    if not path.exists():
        return None
    kept = json.loads(path.read_text())
    kept["lengths"] = torch.tensor(kept["lengths"], dtype=torch.float64)
    return kept


def kept_oracles() -> list[dict]:
    """Every kept oracle file with whether it belongs to the generator on this machine: its key
    against the one the generator's file and pairs give now ("current"), another training of the
    generator ("stale": kept as the record of earlier weights), or no such generator file here."""
    rows = []
    for path in sorted(ORACLE_DIR.glob("*.json")):
        rec = json.loads(path.read_text())
        name, seed, n = rec["generator"], rec["seed"], rec["pairs"]
        if present_generator_path(name) is None:
            state = "generator not on this machine"
        else:
            now = oracle_path(name, seed, n, *solver_pairs(name, n, seed))[0]
            state = "current" if now == path else "stale"
        row = {"file": path.name, "generator": name, "seed": seed, "pairs": n, "state": state}
        rows.append(row | {"seconds": rec["seconds"]})
    return rows


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
