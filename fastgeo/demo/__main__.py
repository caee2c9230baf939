"""``python -m fastgeo.demo [--out DIR] [--seed S] [--quick] [--no-progress]``."""

from __future__ import annotations

import argparse

from .run import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgeo.demo", description=__doc__)
    parser.add_argument("--out", default="fastgeo-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    args = parser.parse_args(argv)
    run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
