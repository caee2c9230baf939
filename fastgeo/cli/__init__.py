"""The ``fastgeo`` command: ``info``, ``demo``, ``distances``, ``neighbors``, ``convert``, ``bench``.

Errors a user can fix (bad paths, inputs, options, files) are reported as one line,
``fastgeo: error: ...``, with exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import functools
import os
import select
import sys
import warnings
from collections.abc import Callable
from typing import Any

from . import convert, distances, inputs, neighbors


def _info(args: argparse.Namespace) -> int:
    from .._info import info

    print(info())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    inputs.output_folder("--out", args.out)
    inputs.at_least("--seed", args.seed, 0)
    if args.seed >= 1 << 64:
        raise inputs.InputError(f"--seed must be below 2**64, got {args.seed}")
    run_demo(out_dir=args.out, seed=args.seed, quick=args.quick, progress=not args.no_progress)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from ..benchmarks.runner import main as bench_main

    inputs.output_folder("--out", args.out)
    inputs.device("--device", args.device)
    inputs.at_least("--threads", args.threads, 1)
    return bench_main(
        args.layer, args.quick, args.out, device=args.device, threads=args.threads, tiny=args.tiny
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastgeo", description="Batched geodesics in VAE latent spaces (expected Riemannian metric)."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True)
    about = "versions, threads, and the backend each op uses"
    p = sub.add_parser("info", help=about, description=f"Print {about}.")
    p.set_defaults(func=_info)
    p = sub.add_parser(
        "demo",
        help="two-moons VAE: fit the RBF, compute geodesics, draw the figure",
        description="Train a small VAE on two moons, fit its RBF precision, compute eight geodesics "
        "(--quick: two) and print their table and write the saved generator and the paper's Figure 1 "
        "to --out.",
    )
    p.add_argument("--out", default="fastgeo-demo", help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="tiny settings, for a smoke test")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or stage lines")
    p.set_defaults(func=_demo)
    distances.add_parser(sub)
    neighbors.add_parser(sub)
    convert.add_parser(sub)
    about = "benchmarks: ops, solver, all-pairs; table, results.json, plots"
    p = sub.add_parser(
        "bench",
        help=about,
        description="Run the benchmarks, each side by side in one run: ops (the C++ kernels against "
        "the PyTorch reference, forward and backward), solver (fastgeo's methods and StochMan's "
        "defaults, if installed, on 48 pairs (--quick: 24) of a synthetic 2-D MLP generator: time and "
        "excess length over the shortest curve known per pair, method='dense' in float64 included) "
        "and pairwise (all-pairs modes). The table goes to stdout; results.json and PNG plots to "
        "--out. --quick takes two to four minutes on 2 CPU cores, the full run (larger sizes, more "
        "rounds) several times that.",
    )
    p.add_argument("--quick", action="store_true", help="small sizes (two to four minutes on 2 CPU cores)")
    p.add_argument("--layer", action="extend", nargs="+", choices=("ops", "solver", "pairwise"),
                   default=None, help="layers to run (default: all)")  # fmt: skip
    p.add_argument("--out", default="fastgeo-bench", help="output folder (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every layer (default: the ops at 1 and at torch's count, "
                   "the solver and pairwise layers at 1)")  # fmt: skip
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke-test sizes, for tests
    p.set_defaults(func=_bench)
    return parser


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text + (" (fastgeo --debug ... for details)" if len(lines) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (2 for a user error, 130 when interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.formatwarning
    if not args.debug:  # one line each, not the file and source line of the library that warned
        warnings.formatwarning = functools.partial(_warning_line, shown)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("fastgeo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as exc:
        if not args.debug and _stdout_closed():
            return 141  # the reader of stdout left (fastgeo demo | head): quietly
        if args.debug:
            raise
        print(f"fastgeo: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"fastgeo: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = shown


def _stdout_closed() -> bool:
    """Whether stdout's reader has left (a pipe whose reading end is closed); if so stdout is
    pointed at the null device, so that the interpreter's last flush of it does not raise again."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        closed = any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no descriptor, or no poll on this platform
        return False
    if closed:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    return closed


def _warning_line(
    fallback: Callable[..., str], message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> str:
    """fastgeo's warnings (by their text or the file that raised them) as one line; another
    library's as ``fallback`` formats them (where it was raised says more)."""
    text, filename = str(message), str(args[0] if args else kwargs.get("filename", ""))
    if not (text.startswith("fastgeo") or filename.startswith(_PACKAGE)):
        return fallback(message, category, *args, **kwargs)
    return f"{category.__name__}: {text if text.startswith('fastgeo') else 'fastgeo: ' + text}\n"


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # fastgeo's own files


if __name__ == "__main__":
    sys.exit(main())
