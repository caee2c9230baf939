"""``fastgeo distances``: all-pairs geodesic distances under a saved generator, from the shell.

Every path and input is checked before any geodesic is solved; the outputs are written
atomically, the report first, so a failure leaves no partial or orphaned output; temporary files
of an earlier run killed while writing are removed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .._files import atomic_write, stale_temporaries
from ..pairwise import pairwise_distances
from ..pairwise.chord_mode import MIN_SAMPLE
from ..solver.result import STATUSES
from . import inputs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distances",
        help="all-pairs geodesic distances under a saved generator",
        description="Geodesic distances between every pair of latent codes (or every code and every "
        "code of --y) under a saved generator, written as a .npy matrix; exact by default, or "
        "approximate (--mode) with its error measured on a sample. Every input is checked before "
        "any geodesic is solved.",
    )
    p.add_argument("generator", help="generator file written by fastgeo.save_generator")
    p.add_argument("latents", help="(M, d) latent codes, .npy")
    p.add_argument("-o", "--output", required=True, help="output matrix, .npy: (M, M), or (M, P) with --y")
    p.add_argument("--y", default=None, help="optional (P, d) second set, .npy: the output is (M, P)")
    p.add_argument("--checkpoint", default=None, help="folder for a resumable run (exact and draft modes)")
    p.add_argument(
        "--mode",
        default="exact",
        choices=("exact", "graph", "draft", "chord"),
        help="exact: every pair solved; graph: geodesics to near codes only, other entries from "
        "shortest chains of them (upper bounds; thousands of codes in minutes, in low latent d); "
        "draft: every pair as a coarse curve (upper bounds, 8-15x faster than exact, ~1 %% above "
        "on average; up to a few thousand codes in latent d >= 4); chord: every pair estimated from "
        "its codes' decoded features and metric, fitted to the sample (no curve per pair; tens of "
        "thousands of codes in latent d >= 4, a few %% off on average); the error of each measured on "
        "a sample",
    )
    p.add_argument(
        "--neighbors",
        type=int,
        default=None,
        help="graph mode: edges per code (default 16; 0: straight segments only)",
    )
    p.add_argument(
        "--edges",
        choices=("draft", "exact"),
        default=None,
        help="graph mode: edges as coarse curves (draft, the default: 1.7-9.5x faster, the graph "
        "distances about as close) or as geodesics (exact)",
    )
    p.add_argument(
        "--straight",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="graph mode: also measure the straight segment of every pair and keep it where shorter "
        "than the chain (default: on in latent d >= 4 up to 2^21 pairs)",
    )
    p.add_argument(
        "--no-chains",
        action="store_true",
        help="exact mode: skip the check of every entry against chains of two entries through a third "
        "code (entries a chain beats are solved again from it, or take its length: status 'chain')",
    )
    inputs.add_workers_argument(p)
    p.add_argument(
        "--error-sample",
        type=int,
        default=None,
        help="graph, draft and chord modes: random pairs solved exactly to measure the error (chord: "
        "and to fit the estimates; at least 20; default 200)",
    )
    inputs.add_solver_arguments(p, chord_mode=True)
    p.add_argument("--chunk-size", type=int, default=None, help="pairs per chunk (default: from --memory-mb)")
    p.add_argument(
        "--memory-mb",
        type=float,
        default=None,
        help="solver memory per chunk, MiB (default: 1024 on the CPU, a quarter of free GPU memory up "
        "to 4096)",
    )
    p.add_argument(
        "--report", default=None, help="also save each pair's status, converged mask and iterations, .npz"
    )
    inputs.add_generator_arguments(p)
    p.set_defaults(func=run)


def _remove_stale_outputs(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            for tmp in stale_temporaries(p.parent, p.name):
                tmp.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    generator = inputs.readable_file("generator", args.generator)
    latents = inputs.readable_file("latents", args.latents)
    second = None if args.y is None else inputs.readable_file("--y", args.y)
    output = inputs.writable_file("--output", args.output, ".npy")
    report_path = None if args.report is None else inputs.writable_file("--report", args.report, ".npz")
    if report_path is not None and report_path.resolve() == output.resolve():
        raise inputs.InputError("--report and --output must be different files")
    read = (("the latents file", latents), ("--y", second), ("the generator", generator))
    for out_option, out_path in (("--output", output), ("--report", report_path)):
        for in_option, in_path in read:
            if out_path is not None and in_path is not None:
                inputs.distinct(out_option, out_path, in_option, in_path)
    device = inputs.device("--device", args.device)
    checkpoint = inputs.checkpoint_folder("--checkpoint", args.checkpoint)
    for out_option, out_path in (("--output", output), ("--report", report_path)):
        if out_path is not None and checkpoint is not None:
            inputs.distinct(out_option, out_path, "--checkpoint", checkpoint)
    inputs.only_in_mode("--no-chains", True if args.no_chains else None, args.mode, "exact")
    if args.no_chains and second is not None:
        raise inputs.InputError(
            "--no-chains is for a symmetric matrix (no --y): only there are chains checked"
        )
    inputs.only_in_mode("--neighbors", args.neighbors, args.mode, "graph")
    inputs.only_in_mode("--error-sample", args.error_sample, args.mode, "graph", "draft", "chord")
    inputs.only_in_mode("--straight", args.straight, args.mode, "graph")
    inputs.only_in_mode("--edges", args.edges, args.mode, "graph")
    inputs.only_in_mode("--checkpoint", args.checkpoint, args.mode, "exact", "draft")
    inputs.at_least("--chunk-size", args.chunk_size, 1)
    inputs.at_least("--neighbors", args.neighbors, 0)
    if args.neighbors == 0 and args.straight is False:  # (None: the library's default, checked there)
        raise inputs.InputError("--neighbors 0 needs --straight (no geodesics between codes: no bound)")
    inputs.at_least("--workers", args.workers, 1)
    inputs.at_least("--error-sample", args.error_sample, MIN_SAMPLE if args.mode == "chord" else 0)
    mode_options = {
        "neighbors": args.neighbors,
        "error_sample": args.error_sample,
        "straight": args.straight,
        "edges": args.edges,
    }
    mode_options = {k: v for k, v in mode_options.items() if v is not None}
    if args.no_chains:
        mode_options["chains"] = False
    memory_mb = inputs.positive("--memory-mb", args.memory_mb)
    options = inputs.solver_options_given(args)
    metric, Z, Y = inputs.generator_and_codes(generator, latents, second, device, args.trust, options)
    _remove_stale_outputs(output, report_path)

    budget = None if memory_mb is None else max(1, int(memory_mb * (1 << 20)))
    D, report = pairwise_distances(
        metric, Z, Y, mode=args.mode, workers=args.workers, checkpoint=checkpoint, chunk_size=args.chunk_size,
        memory_budget=budget, progress=not args.no_progress, return_report=True, **mode_options, **options,
    )  # fmt: skip
    if report_path is not None:
        fields = {
            "converged": report.converged.cpu().numpy(),
            "status": report.status_code.cpu().numpy(),
            "status_names": np.array(STATUSES),
            "iterations": report.iterations.cpu().numpy(),
        }
        atomic_write(report_path, lambda f: np.savez(f, **fields))
    matrix = D.cpu().numpy()
    atomic_write(output, lambda f: np.save(f, matrix))
    print(f"{output}: {tuple(D.shape)} distances; {report}", file=sys.stderr)
    return 0
