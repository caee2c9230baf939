"""``python -m fastgeo.demo [--out DIR] [--seed S] [--quick] [--no-progress]``: the demo, as
``fastgeo demo`` runs it (a user's mistake is one line, ``fastgeo: error: ...``, exit status 2)."""

from __future__ import annotations

import argparse
import sys

from .run import run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastgeo.demo", description=__doc__)
    parser.add_argument("--out", default="fastgeo-demo", help="output folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    args = parser.parse_args(argv)
    try:
        run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    except (ValueError, TypeError, OSError) as exc:
        first = str(exc).strip().splitlines()
        print(f"fastgeo: error: {first[0] if first else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
