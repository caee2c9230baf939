"""All-pairs geodesic distances at scale (issue 6): time and peak memory against M, time per
geodesic, and StochMan's default geodesic solver on a random subsample of the same pairs (same
run), with accuracy of both against ``method="dense"`` (float64) on that subsample.

    python bench/bench_pairwise.py                          # M = 32, 64, 128, 256; 32 pairs vs StochMan
    python bench/bench_pairwise.py --ms 32,64 --sub 16      # quicker
    python bench/bench_pairwise.py --max-iter 30 --tol 1e-4 # solver options of the fastgeo run

Each M runs in a fresh subprocess so that its peak RSS (``ru_maxrss``) is its own. The generator
is the digits VAE of tests/data that the ops and solver layers measure too (``workloads.py``;
d = 2, D = 64), and the M points a random subset of its training codes. ``--generator FILE``
takes another file written by ``fastgeo.save_generator`` with ``extra={"latents": Z}``;
``--generator synthetic`` a synthetic digits-like generator (random MLP mean, 80 RBF centers on
10 clusters, codes drawn around the clusters). StochMan (``pip install stochman==0.3.0``) gets the same
decoder mean and a plain-PyTorch sigma, through ``EmbeddedManifold.embed = [mu, sigma]`` (its
energy is twice ours); its default is ``connecting_geodesic``: a 5-node cubic spline, 150 Adam
steps (lr 0.1) on 20 points, one pair per call. Its batched use (all subsample pairs in one call)
is timed too. Accuracy is the relative excess length ``L / L_dense - 1``, every curve (the
oracle's too) measured on the same 1024-point grid in float64 (``fastgeo.benchmarks.accuracy``).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch import Tensor

try:  # the pytest-benchmark entry point at the end; the script runs without pytest
    import pytest
except ImportError:  # pragma: no cover
    pytest = None
from workloads import environment_line, generator_path

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from fastgeo.benchmarks.generator import latent_codes, synthetic_generator
from fastgeo.benchmarks.timing import environment
from fastgeo.curves import straight_line, time_grid

DIGITS = str(generator_path("digits"))  # the generator the other layers measure too (workloads.py)


def load(args: argparse.Namespace, n: int) -> tuple[fastgeo.ExpectedMetric, Tensor]:
    if args.generator and args.generator != "synthetic":
        from fastgeo.io import load_extra, load_generator

        metric = load_generator(args.generator)
        Z = load_extra(args.generator)["latents"].to(metric.dtype)
        g = torch.Generator().manual_seed(1)
        return metric, Z[torch.randperm(Z.shape[0], generator=g)[:n]]
    metric, cc = synthetic_generator(clusters=10)  # digits-like: d = 2, D = 64, 10 clusters
    return metric, latent_codes(n, cc)


def shown_path(path: str) -> str:
    """A path as printed: relative to the repository when inside it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full = os.path.abspath(path)
    return os.path.relpath(full, root) if full.startswith(root + os.sep) else path


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def stochman_run(
    metric: fastgeo.ExpectedMetric, z0: Tensor, z1: Tensor, batched: bool
) -> tuple[Tensor, float]:
    """StochMan's default connecting_geodesic: curves sampled on the measurement grid
    (B, MEASURE_POINTS, d), seconds."""
    from stochman.manifold import EmbeddedManifold

    mean = metric.mean
    c, gam, W, zeta = (t.detach() for t in metric.precision.params())

    def sigma(z: Tensor) -> Tensor:  # plain PyTorch, as a StochMan user writes it
        phi = torch.exp(-gam * (z[..., None, :] - c).pow(2).sum(-1))
        return (phi @ W.T + zeta).rsqrt()

    class Generator(EmbeddedManifold):
        def embed(self, z: Tensor, jacobian: bool = False) -> Tensor:
            return torch.cat([mean(z), sigma(z)], -1)

    manifold = Generator()
    t = torch.linspace(0, 1, MEASURE_POINTS, dtype=z0.dtype)
    out = []
    start = time.perf_counter()
    if batched:
        curve, _ = manifold.connecting_geodesic(z0, z1)
        with torch.no_grad():
            out.append(curve(t).reshape(z0.shape[0], MEASURE_POINTS, -1))
    else:
        for b in range(z0.shape[0]):
            curve, _ = manifold.connecting_geodesic(z0[b : b + 1], z1[b : b + 1])
            with torch.no_grad():
                out.append(curve(t).reshape(1, MEASURE_POINTS, -1))
    seconds = time.perf_counter() - start
    return torch.cat(out).detach(), seconds


def dense_reference(metric: fastgeo.ExpectedMetric, z0: Tensor, z1: Tensor) -> tuple[Tensor, Tensor]:
    """``method="dense"`` lengths (measured as every curve is: ``fastgeo.benchmarks.accuracy``)
    and converged flags (B,); pair by pair if the batch fails."""
    try:
        ref = fastgeo.geodesics(metric, z0, z1, method="dense")
        return oracle_lengths(metric, ref), ref.converged
    except RuntimeError as e:
        print(f"dense batch failed ({e}); solving pair by pair", file=sys.stderr)
    out = [fastgeo.geodesics(metric, z0[b : b + 1], z1[b : b + 1], method="dense") for b in range(len(z0))]
    return torch.cat([oracle_lengths(metric, r) for r in out]), torch.cat([r.converged for r in out])


def worker(args: argparse.Namespace, M: int, compare: bool) -> dict:
    torch.set_num_threads(args.threads)
    options = {
        k: v
        for k, v in (
            ("method", args.method),
            ("m", args.m),
            ("n_points", args.n_points),
            ("max_iter", args.max_iter),
            ("tol", args.tol),
        )
        if v is not None
    }
    for item in filter(None, args.options.split(",")):
        key, value = item.split("=", 1)
        options[key.strip()] = ast.literal_eval(value.strip())
    metric, Z = load(args, M)
    fastgeo.pairwise_distances(metric, Z[:4], progress=False, **options)  # warm-up (lazy imports, graph)
    rss0 = current_rss_mb()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        start = time.perf_counter()
        D, report = fastgeo.pairwise_distances(
            metric, Z, progress=args.progress, return_report=True, **options
        )
        seconds = time.perf_counter() - start
    row = {
        "M": M,
        "pairs": report.n_pairs,
        "seconds": seconds,
        "ms_per_geodesic": 1e3 * seconds / report.n_pairs,
        "pairs_per_s": report.n_pairs / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss0,
        "chunk_size": report.chunk_size,
        "chunks": report.chunks_total,
        "converged": report.n_converged,
        "not_converged": report.n_failed,
        "decoder_evals": report.decoder_evals,
        "matrix_mb": D.numel() * D.element_size() / 2**20,
        "options": {k: repr(v) for k, v in options.items()},
    }
    if not compare:
        return row
    # Subsample of the same pairs: StochMan (default, per pair and batched), dense float64 oracle.
    g = torch.Generator().manual_seed(2)
    i, j = torch.triu_indices(M, M, offset=1)
    pick = torch.randperm(i.numel(), generator=g)[: args.sub]
    i, j = i[pick], j[pick]
    keep = (Z[i] != Z[j]).any(-1)
    i, j = i[keep], j[keep]
    z0, z1 = Z[i], Z[j]
    m64 = metric.to(torch.float64)
    sm_points, sm_seconds = stochman_run(metric, z0, z1, batched=False)
    smb_points, smb_seconds = stochman_run(metric, z0, z1, batched=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = fastgeo.geodesics(metric, z0, z1, **{"batch_size": report.chunk_size, **options})
        ref_lengths, ref_converged = dense_reference(m64, z0.double(), z1.double())
    L_ref = ref_lengths
    with torch.no_grad():
        ours_fine = measured_lengths(m64, ours.points(MEASURE_POINTS))
        sm_fine = measured_lengths(m64, sm_points)
        smb_fine = measured_lengths(m64, smb_points)
        straight = measured_lengths(m64, straight_line(z0, z1, time_grid(MEASURE_POINTS, z0)))

    def excess(L: Tensor) -> dict:
        e = L / L_ref - 1
        return {
            "median": float(e.median()),
            "mean": float(e.mean()),
            "max": float(e.max()),
            "min": float(e.min()),
        }

    row["compare"] = {
        "pairs": int(i.numel()),
        "stochman_ms_per_geodesic": 1e3 * sm_seconds / i.numel(),
        "stochman_batched_ms_per_geodesic": 1e3 * smb_seconds / i.numel(),
        "ratio_vs_stochman": (1e3 * sm_seconds / i.numel()) / row["ms_per_geodesic"],
        "ratio_vs_stochman_batched": (1e3 * smb_seconds / i.numel()) / row["ms_per_geodesic"],
        "excess_fastgeo": excess(ours_fine),
        "excess_fastgeo_matrix_entries": excess(D[i, j].double()),
        "excess_stochman": excess(sm_fine),
        "excess_stochman_batched": excess(smb_fine),
        "excess_straight": excess(straight),
        "dense_converged": int(ref_converged.sum()),
    }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ms", default="32,64,128,256", help="comma-separated M values")
    p.add_argument("--sub", type=int, default=32, help="pairs compared with StochMan and the dense oracle")
    p.add_argument("--compare-m", type=int, default=None, help="M whose run is compared (default: largest)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--generator",
        default=DIGITS if os.path.exists(DIGITS) else None,
        help="a file written by fastgeo.save_generator with extra latents (default: "
        "tests/data/digits.safetensors if present); 'synthetic' for the synthetic generator",
    )
    p.add_argument("--method", default=None)
    p.add_argument("--m", type=int, default=None)
    p.add_argument("--n-points", type=int, default=None)
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument("--tol", type=float, default=None)
    p.add_argument("--options", default="", help="more solver options, e.g. 'refine=1,graph=False'")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json", default=None, help="write all rows to this file")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print("ROW " + json.dumps(worker(args, args.worker, args.compare)), flush=True)
        return
    ms = [int(x) for x in args.ms.split(",")]
    compare_m = args.compare_m or max(ms)
    print(
        f"{environment_line(args.threads)}, cpu; backend {fastgeo.current_backend()}; "
        f"generator {shown_path(args.generator) if args.generator else 'synthetic digits-like'}; "
        f"options: max_iter={args.max_iter} "
        f"tol={args.tol} m={args.m} n_points={args.n_points} {args.options}"
    )
    rows = []
    passthrough = sys.argv[1:]
    for M in ms:
        cmd = [sys.executable, __file__, *passthrough, "--worker", str(M)] + (
            ["--compare"] if M == compare_m else []
        )
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("ROW ")]
        if out.returncode or not line:
            sys.exit(f"worker M={M} failed:\n{out.stderr[-3000:]}")
        row = json.loads(line[0][4:])
        rows.append(row)
        print(
            f"M={M:5d}  pairs={row['pairs']:6d}  {row['seconds']:8.1f} s  "
            f"{row['ms_per_geodesic']:7.2f} ms/geodesic  "
            f"{row['pairs_per_s']:7.1f} pairs/s  peak RSS {row['peak_rss_mb']:6.0f} MB (before call "
            f"{row['rss_before_mb']:.0f} MB, matrix {row['matrix_mb']:.2f} MB)  chunk {row['chunk_size']}  "
            f"not converged {row['not_converged']}",
            flush=True,
        )
        if "compare" in row:
            c = row["compare"]
            print(
                f"  subsample of {c['pairs']} pairs of M={M}: StochMan {c['stochman_ms_per_geodesic']:.1f} "
                f"ms/geodesic (one pair per call) -> ratio {c['ratio_vs_stochman']:.1f}x; batched "
                f"{c['stochman_batched_ms_per_geodesic']:.1f} ms/geodesic -> "
                f"{c['ratio_vs_stochman_batched']:.1f}x"
            )
            for name in ("fastgeo", "fastgeo_matrix_entries", "stochman", "stochman_batched", "straight"):
                e = c["excess_" + name]
                print(
                    f"  excess length vs dense, {name:24s} median {e['median']:+.2e}  mean {e['mean']:+.2e}  "
                    f"max {e['max']:+.2e}"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if pytest is not None:

    @pytest.mark.parametrize("M", [32, 64])
    def test_pairwise(benchmark, M: int) -> None:
        """The all-pairs layer under pytest-benchmark (``pytest bench/bench_pairwise.py
        --benchmark-only``): the same generator and codes as the script's runs, time only (peak
        memory and the StochMan comparison need the script's fresh processes)."""
        metric, Z = load(argparse.Namespace(generator=DIGITS), M)
        fastgeo.pairwise_distances(metric, Z[:4], progress=False)  # warm-up (lazy imports, graph)
        D, report = benchmark.pedantic(
            lambda: fastgeo.pairwise_distances(metric, Z, progress=False, return_report=True),
            rounds=1, warmup_rounds=0,
        )  # fmt: skip
        assert D.shape == (M, M)
        seconds = benchmark.stats.stats.min
        benchmark.extra_info.update(environment("cpu"))
        benchmark.extra_info.update(
            M=M, pairs=report.n_pairs, ms_per_geodesic=1e3 * seconds / report.n_pairs, dtype="float32",
            shape=f"M={M}, d={Z.shape[1]}, D={metric.data_dim}", not_converged=report.n_failed,
        )  # fmt: skip


if __name__ == "__main__":
    main()
