"""``fastgeo neighbors``: the k geodesically nearest codes of every code under a saved generator,
from the shell (:func:`fastgeo.nearest_neighbors`).

Every path and input is checked before any geodesic is solved; the output is written atomically.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .._files import atomic_write, stale_temporaries
from ..pairwise import nearest_neighbors
from ..solver.result import STATUSES
from . import inputs


def add_parser(sub: argparse._SubParsersAction) -> None:
    about = "the k geodesically nearest codes of every code under a saved generator"
    p = sub.add_parser(
        "neighbors",
        help=about,
        description=f"Find {about}: exact to the solver's accuracy, from a few geodesics per code "
        "(candidates in the order of a lower bound of the distance, until it rules out every other code).",
    )
    p.add_argument("generator", help="generator file written by fastgeo.save_generator")
    p.add_argument("latents", help="(M, d) latent codes, .npy")
    p.add_argument("-k", type=int, default=10, help="neighbours per code (default: %(default)s)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help=".npz: indices, distances, status (codes; status_names), converged (M, k each), certified (M,)",
    )
    p.add_argument("--y", default=None, help="optional (P, d) reference codes, .npy: neighbours among them")
    p.add_argument(
        "--max-candidates",
        type=int,
        default=None,
        help="at most this many geodesics per code (>= k): codes stopped by it are not certified",
    )
    inputs.add_workers_argument(p)
    inputs.add_solver_arguments(p)
    inputs.add_generator_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    generator = inputs.readable_file("generator", args.generator)
    latents = inputs.readable_file("latents", args.latents)
    second = None if args.y is None else inputs.readable_file("--y", args.y)
    output = inputs.writable_file("--output", args.output, ".npz")
    for option, path in (("the latents file", latents), ("--y", second), ("the generator", generator)):
        if path is not None:
            inputs.distinct("--output", output, option, path)
    device = inputs.device("--device", args.device)
    inputs.at_least("-k", args.k, 1)
    inputs.at_least("--max-candidates", args.max_candidates, args.k)
    inputs.at_least("--workers", args.workers, 1)
    options = inputs.solver_options_given(args)

    metric, Z, Y = inputs.generator_and_codes(generator, latents, second, device, args.trust, options)
    if Z.shape[0] == 0:
        raise inputs.InputError(f"the latents file {str(latents)!r} holds no codes")
    available = Z.shape[0] - 1 if Y is None else Y.shape[0]
    if args.k > available:
        what = "the other codes of the latents file" if Y is None else "the codes of --y"
        raise inputs.InputError(f"-k must be at most {available} ({what}), got {args.k}")
    for tmp in stale_temporaries(output.parent, output.name):
        tmp.unlink(missing_ok=True)

    res = nearest_neighbors(
        metric, Z, args.k, Y, max_candidates=args.max_candidates, workers=args.workers,
        progress=not args.no_progress, **options,
    )  # fmt: skip
    fields = {
        "certified": res.certified.cpu().numpy(),
        "indices": res.indices.cpu().numpy(),
        "distances": res.distances.cpu().numpy(),
        "status": res.status_code.cpu().numpy(),
        "status_names": np.array(STATUSES),
        "converged": res.converged.cpu().numpy(),
    }
    atomic_write(output, lambda f: np.savez(f, **fields))
    print(f"{output}: {res}", file=sys.stderr)
    return 0
