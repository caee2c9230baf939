"""Every pair of M random codes of a generator, solved by the default: the pairs a user's distance
matrix holds, not the basins benchmark's sample (a third across classes). Wrong basins are rare
(a few pairs in a thousand), so it takes many pairs to see them; with no oracle at this count, the
reference is the shortest curve of the runs compared, or a chain of them through other codes where
that is shorter (every length is a curve's own length, an upper bound of the geodesic distance).

Each run saves its lengths, statuses, CPU time and LM iterations to
``bench/results/random_pairs/<generator>_<M>_<seed>_<tag>.pt``; ``--compare`` prints a table of
the runs saved for the same generator, M and seed (e.g. one per commit: run it at each commit
with another ``--tag``)::

    OMP_NUM_THREADS=1 python bench/bench_random_pairs.py --generator digits --m 60 --seed 0 --tag new
    OMP_NUM_THREADS=1 python bench/bench_random_pairs.py --generator digits --m 60 --seed 0 --compare

``--options`` passes keyword arguments of ``fastgeo.geodesics`` (JSON) to compare variants, and
module constants by their dotted names (as ``bench_variants.py``)::

    OMP_NUM_THREADS=1 python bench/bench_random_pairs.py --generator mlp12_small --m 30 --tag corr2 \
        --options '{"corridors": 2, "refine": 4}'
    OMP_NUM_THREADS=1 python bench/bench_random_pairs.py --generator digits --m 80 --tag close3 \
        --options '{"fastgeo.solver.race.CLOSE_RACE": 0.03}'
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch
from bench_variants import constants
from workloads import GENERATORS, REAL_GENERATORS, environment_line, generator, results_dir

import fastgeo


def codes_parser(doc: str | None, m: int) -> argparse.ArgumentParser:
    """An argument parser (described by ``doc``'s first paragraph) with the options that pick the
    codes: ``--generator``, ``--m`` (default ``m``) and ``--seed``."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--generator", default="digits", choices=sorted({*GENERATORS, *REAL_GENERATORS}))
    p.add_argument("--m", type=int, default=m, help="random training codes (every pair i < j is solved)")
    p.add_argument("--seed", type=int, default=0, help="seed of the codes drawn")
    return p


def random_codes(name: str, m: int, seed: int) -> torch.Tensor:
    """``m`` distinct training codes of generator ``name``, drawn with ``seed``: (m, d)."""
    codes = generator(name)[1]
    if not 2 <= m <= codes.shape[0]:
        raise ValueError(f"--m must be in [2, {codes.shape[0]}], got {m}")
    g = torch.Generator().manual_seed(seed)
    return codes[torch.randperm(codes.shape[0], generator=g)[:m]]


def run(name: str, m: int, seed: int, options: dict | None = None) -> dict:
    """The default (or ``geodesics(**options)``) on every pair i < j of the codes; lengths in
    float64."""
    z = random_codes(name, m, seed)
    i, j = torch.triu_indices(m, m, 1)
    metric = generator(name)[0]
    options = options or {}
    overrides = {k: v for k, v in options.items() if k.startswith("fastgeo.")}
    kwargs = {k: v for k, v in options.items() if k not in overrides}
    t = time.process_time()
    with constants(overrides):
        res = fastgeo.geodesics(metric, z[i], z[j], progress=False, **kwargs)
    cpu = time.process_time() - t
    return {
        "lengths": res.lengths.double(),
        "status": res.status.tolist(),
        "cpu_s": cpu,
        "iterations": float(res.iterations.float().mean()),
        "version": fastgeo.__version__,
        "options": options,
    }


def chain_closure(lengths: torch.Tensor) -> torch.Tensor:
    """Per pair i < j (row-major, as ``triu_indices``) the shortest chain of pairs through the
    other codes (Floyd-Warshall on the (M, M) matrix of ``lengths``): a curve's length too, so
    an upper bound of the distance that the direct curve should not exceed."""
    from scipy.sparse.csgraph import shortest_path

    m = int(round((1 + (1 + 8 * lengths.numel()) ** 0.5) / 2))
    i, j = torch.triu_indices(m, m, 1)
    full = torch.zeros(m, m, dtype=torch.float64)
    full[i, j] = lengths.double()
    full[j, i] = lengths.double()
    return torch.as_tensor(shortest_path(full.numpy(), method="FW", directed=False))[i, j]


def compare(runs: dict[str, dict]) -> str:
    """Markdown table: per run the CPU time and LM iterations per pair, and its excess over the
    best curve known per pair: the shortest of all runs' curves, or a chain of them through other
    codes where that is shorter (the column "chains" counts the pairs a chain of the run's own
    curves beats by more than 0.01 %)."""
    shortest = torch.stack([r["lengths"] for r in runs.values()]).amin(0)
    best = torch.minimum(shortest, chain_closure(shortest))
    lines = [
        "| run | pairs | ms / pair (CPU) | LM iterations / pair | statuses | mean excess % | worst % "
        "| pairs > 0.1 % | pairs > 0.5 % | chains |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tag, r in runs.items():
        ex = 100 * (r["lengths"] / best - 1)
        chains = int((chain_closure(r["lengths"]) < (1 - 1e-4) * r["lengths"]).sum())
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(Counter(r["status"]).items()))
        lines.append(
            f"| {tag} | {best.numel()} | {1000 * r['cpu_s'] / best.numel():.1f} | {r['iterations']:.1f} | "
            f"{statuses} | {float(ex.mean()):.4f} | {float(ex.max()):.3f} | {int((ex > 0.1).sum())} | "
            f"{int((ex > 0.5).sum())} | {chains} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = codes_parser(__doc__, 60)
    p.add_argument("--tag", default="run", help="name of this run's saved results")
    p.add_argument("--compare", action="store_true", help="print the saved runs' table instead of running")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--options", default="{}", help="keyword arguments of fastgeo.geodesics, as JSON")
    args = p.parse_args(argv)
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as e:
        p.error(f"--options is not JSON: {e}")
    if not isinstance(options, dict):
        p.error("--options must be a JSON object")
    torch.set_num_threads(args.threads)
    folder = results_dir() / "random_pairs"
    stem = f"{args.generator}_{args.m}_{args.seed}"
    if args.compare:
        runs = {f.stem[len(stem) + 1 :]: torch.load(f) for f in sorted(folder.glob(f"{stem}_*.pt"))}
        if not runs:
            p.error(f"no saved runs {folder / stem}_*.pt: run without --compare first")
        print(f"{environment_line(args.threads)}, float32, {args.generator}, M = {args.m}, seed {args.seed}")
        print(compare(runs))
        return
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{stem}_{args.tag}.pt"
    torch.save(run(args.generator, args.m, args.seed, options), out)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
