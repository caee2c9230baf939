"""The ``fastgeo`` command: ``info``, ``demo``."""

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
