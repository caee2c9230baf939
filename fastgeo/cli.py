"""The ``fastgeo`` command: ``info``, ``demo``, ``distances``, ``bench``."""

from __future__ import annotations

import argparse
import sys


def _info(args: argparse.Namespace) -> int:
    from ._info import info

    print(info())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    return 0


def _distances(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ._files import atomic_write
    from .io import load_generator
    from .pairwise import pairwise_distances

    metric = load_generator(args.generator, device=args.device)
    Z = torch.from_numpy(np.load(args.latents)).to(dtype=metric.dtype, device=metric.device)
    Y = None
    if args.y is not None:
        Y = torch.from_numpy(np.load(args.y)).to(dtype=metric.dtype, device=metric.device)
    options = {k: v for k, v in (("method", args.method), ("m", args.m), ("n_points", args.n_points),
                                 ("max_iter", args.max_iter), ("tol", args.tol)) if v is not None}
    D, report = pairwise_distances(
        metric, Z, Y, checkpoint=args.checkpoint, chunk_size=args.chunk_size,
        memory_budget=None if args.memory_mb is None else int(args.memory_mb * (1 << 20)),
        progress=not args.no_progress, return_report=True, **options,
    )
    atomic_write(args.output, lambda f: np.save(f, D.cpu().numpy()))
    if args.report is not None:
        atomic_write(args.report, lambda f: np.savez(
            f, converged=report.converged.cpu().numpy(), iterations=report.iterations.cpu().numpy()))
    print(f"{args.output}: {tuple(D.shape)} distances; {report}", file=sys.stderr)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmarks.runner import main as bench_main

    return bench_main(args.layer, args.quick, args.out, device=args.device, threads=args.threads,
                      tiny=args.tiny)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgeo", description="Batched geodesics in VAE latent spaces (expected Riemannian metric)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="versions, threads, and the backend each op uses")
    p.set_defaults(func=_info)
    p = sub.add_parser("demo", help="two-moons VAE: fit the RBF, compute geodesics, draw the figure")
    p.add_argument("--out", default="fastgeo-demo", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_demo)
    p = sub.add_parser("distances", help="all-pairs geodesic distances under a saved generator")
    p.add_argument("generator", help="generator file written by fastgeo.save_generator")
    p.add_argument("latents", help="(M, d) latent codes, .npy")
    p.add_argument("-o", "--output", required=True, help="output (M, M) matrix, .npy")
    p.add_argument("--y", default=None, help="optional (P, d) second set, .npy: the output is (M, P)")
    p.add_argument("--checkpoint", default=None, help="folder for a resumable run")
    p.add_argument("--method", default=None, choices=("default", "paper", "dense"))
    p.add_argument("--m", type=int, default=None, help="basis functions per latent dimension")
    p.add_argument("--n-points", type=int, default=None, help="points per curve in the energy")
    p.add_argument("--max-iter", type=int, default=None, help="iteration limit per phase")
    p.add_argument("--tol", type=float, default=None, help="relative energy tolerance")
    p.add_argument("--chunk-size", type=int, default=None, help="pairs per chunk")
    p.add_argument("--memory-mb", type=float, default=None, help="solver memory per chunk, MiB")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--report", default=None, help="also save the converged mask and iterations, .npz")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_distances)
    p = sub.add_parser("bench", help="benchmarks: ops, solver, all-pairs; table, results.json, plots")
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute on 2 cores)")
    p.add_argument("--layer", action="extend", nargs="+", choices=("ops", "solver", "pairwise"),
                   default=None, help="layers to run (default: all)")  # fmt: skip
    p.add_argument("--out", default="fastgeo-bench", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke-test sizes, for tests
    p.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
