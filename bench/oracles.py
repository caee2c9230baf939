"""The dense oracles of bench/oracle/: computed, kept, resumed and refreshed (issue 15).

An oracle of a sample (a generator's 48 pairs of one seed) is ``fastgeo.geodesics(...,
method="dense")`` in float64, its lengths measured like every curve
(``fastgeo.benchmarks.accuracy.oracle_lengths``), kept as a small JSON file keyed by the generator
file's bytes and the pairs. It is solved a few pairs per call, each chunk saved as it ends
(``*.json.partial``), so a run of hours resumes where it stopped. ``bench_basins.py`` is the
command line.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from workloads import (
    generator_fingerprint,
    generator_label,
    generator_path,
    present_generator_path,
    solver_pairs,
)

import fastgeo
from fastgeo.benchmarks.accuracy import oracle_lengths

ORACLE_DIR = Path(__file__).resolve().parent / "oracle"
# Pairs per call of the dense oracle: each chunk is saved as it ends (hours per sample at d >= 8).
ORACLE_CHUNK = 4
# Options of the dense oracle's calls (--oracle-points: its polylines' nodes; on a ReLU decoder 128
# nodes end 0.7-1 % above the default's curve on a few pairs, 256 nodes 0.14-0.19 %).
ORACLE_OPTIONS: dict = {}


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
