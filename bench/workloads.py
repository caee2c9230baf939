"""The work every benchmark layer measures, defined once, so that ops, solver and all-pairs
figures describe the same problems.

- Generators: the shipped VAEs of ``tests/data`` (``two_moons``: D = 10, K = 48; ``digits``:
  D = 64, K = 64; latent d = 2), float32, with their training latent codes and labels.
- Pairs: ``PAIRS`` = 48 end-point pairs of training codes per generator, a third across classes
  (the solver layer; the all-pairs layer takes all pairs of a random subset of the same codes).
- Op shapes: the digits generator's own RBF parameters on curves between its latent codes
  (``*_digits`` cases), and the paper-sized synthetic shapes (D = 784) beside them.
- Real-model generators (``REAL_GENERATORS``): image VAEs shaped like users' models (latent
  d = 8-128, MLP and convolutional decoders, D = 784; ``conv32_color64``: D = 12,288), trained by
  ``tests/data/make_real_generators.py`` on procedural images, built on first use into
  ``bench/results/generators`` (git-ignored; minutes each); those whose training does not
  reproduce bit for bit across machines are kept in ``bench/generators`` (the d = 8 conv ones,
  and the d = 16-64 MLPs: trained on another CPU they came out with other weights, and the dense
  oracles of ``bench/oracle`` are keyed by the file).

Import it from a benchmark in this folder (``import workloads``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

import fastgeo
from fastgeo.benchmarks.pairs import pair_indices as benchmark_pairs
from fastgeo.io import load_extra

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
# Generators kept under version control because training them again does not reproduce their
# weights on another machine (the d = 8 conv ones), so that their kept dense oracles stay valid.
KEPT_GENERATORS = Path(__file__).resolve().parent / "generators"
GENERATORS = ("two_moons", "digits")
PAIRS = 48
DTYPE = torch.float32

# Op shapes. B curves of N points (rbf_precision: P points). "generator" cases take K, d, D and
# the RBF parameters from that generator, and the curves are straight lines between its codes.
OPS_CASES: dict[str, dict] = {
    "segment_sqdist": dict(op="segment_sqdist", B=4096, N=32, D=784),
    "segment_sqdist_digits": dict(op="segment_sqdist", B=4096, N=32, D=64, generator="digits"),
    "rbf_segment_sqdist_D784": dict(op="rbf_segment_sqdist", B=4096, N=32, d=2, K=64, D=784),
    "rbf_segment_sqdist_digits": dict(
        op="rbf_segment_sqdist", B=4096, N=32, d=2, K=64, D=64, generator="digits"
    ),
    "rbf_precision": dict(op="rbf_precision", P=16384, d=2, K=64, D=784),
    "rbf_precision_digits": dict(op="rbf_precision", P=16384, d=2, K=64, D=64, generator="digits"),
}


# name: latent dimension, decoder, data (tests/data/make_real_generators.py has the details)
REAL_GENERATORS = {
    "conv5_small": "d = 5, conv, glyphs",
    "mlp12_small": "d = 12, MLP, shapes",
    "conv8_shapes": "d = 8, conv, shapes",
    "conv8_glyphs": "d = 8, conv, glyphs",
    "mlp16_shapes": "d = 16, MLP, shapes",
    "mlp16_glyphs": "d = 16, MLP, glyphs",
    "mlp32_shapes": "d = 32, MLP, shapes",
    "mlp64_glyphs": "d = 64, MLP, glyphs",
    "mlp128_shapes": "d = 128, MLP, shapes",
    "conv16_silu_shapes": "d = 16, conv with BatchNorm and SiLU, shapes",
    "conv12_upsample_glyphs": "d = 12, conv with bilinear upsampling, GroupNorm and GELU, glyphs",
    "conv10_shuffle_mish_glyphs": "d = 10, conv with PixelShuffle, InstanceNorm and Mish, glyphs",
    "conv32_color64": "d = 32, conv, color shapes 64x64x3 (D = 12,288)",
    "mlp16_relu_shapes": "d = 16, MLP with ReLU, shapes",
    "conv8_relu_glyphs": "d = 8, conv with LeakyReLU, glyphs",
    "mlp2_relu_glyphs": "d = 2, MLP with ReLU, glyphs",
    "mlp16_linear_glyphs": "d = 16, MLP with a linear output (Gaussian decoder), glyphs",
    "mlp10_cells": "d = 10, MLP 10-128-128-2000 with a linear output, single-cell-like expression",
}


def generator_path(name: str) -> Path:
    """The file of a shipped generator, of a real-model one (trained first if missing), or
    ``name`` itself where it is a generator file of one's own (:func:`own_file`)."""
    if name in REAL_GENERATORS:
        return _real_generator_path(name)
    own = own_file(name)
    if own is not None:
        return own
    if name not in GENERATORS:
        raise ValueError(
            f"generator must be one of {GENERATORS + tuple(REAL_GENERATORS)} or a generator file "
            "(.safetensors / .pt2, saved by fastgeo.save_generator with extras latents and labels), "
            f"got {name!r}"
        )
    return DATA / f"{name}.safetensors"


def own_file(name: str) -> Path | None:
    """``name`` as the path of an existing generator file of one's own (a ``.safetensors`` or
    ``.pt2`` file of :func:`fastgeo.save_generator`, with extras ``latents`` (M, d) and ``labels``
    (M,) for the pairs), else None."""
    path = Path(name).expanduser()
    return path if path.suffix in (".safetensors", ".pt2") and path.is_file() else None


def generator_label(name: str) -> str:
    """A generator's name in file names and tables: a file of one's own by its stem."""
    return name if own_file(name) is None else Path(name).stem


def generator_fingerprint(path: Path) -> bytes:
    """The bytes of a generator file with its metadata in sorted key order: what identifies the
    generator (the oracles of ``bench/oracle`` are keyed by it). safetensors writes the metadata
    in a different order on every save, so the same weights trained again give other file bytes;
    the header keeps its length, so the data offsets are unchanged."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}
    ordered.update(header)
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    return raw[:8] + text.ljust(n) + raw[8 + n :]


def present_generator_path(name: str) -> Path | None:
    """The file of generator ``name`` if it is on this machine (shipped, kept or trained), else
    None: never trains one."""
    if name not in REAL_GENERATORS:
        return generator_path(name) if name in GENERATORS or own_file(name) is not None else None
    kept = KEPT_GENERATORS / f"{name}.safetensors"
    if kept.exists():
        return kept
    path = _generator_maker().default_dir(name) / f"{name}.safetensors"
    return path if path.exists() else None


def _generator_maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_real_generators", DATA / "make_real_generators.py")
    assert spec is not None and spec.loader is not None
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker


def _real_generator_path(name: str) -> Path:
    path = present_generator_path(name)
    if path is not None:
        return path
    maker = _generator_maker()
    print(f"\n[{name}] training the generator (once; saved to {maker.default_dir(name)})", flush=True)
    return maker.build_generator(name)


@cache
def generator(name: str) -> tuple[fastgeo.ExpectedMetric, Tensor, Tensor]:
    """(metric, latent codes (M, d), labels (M,)) of a shipped generator, float32."""
    path = generator_path(name)
    extra = load_extra(path)
    if "latents" not in extra:
        raise ValueError(
            f"{path}: the benchmarks take their pairs from the training codes the generator file keeps; "
            "save it with fastgeo.save_generator(path, metric, extra={'latents': Z, 'labels': y}) "
            "(labels optional: classes, for a third of the pairs across them)"
        )
    latents = extra["latents"].to(DTYPE)
    labels = extra.get("labels")
    if labels is None:  # no classes: pairs of any codes
        labels = torch.zeros(latents.shape[0], dtype=torch.long)
    return fastgeo.load_generator(path), latents, labels


def pair_indices(labels: Tensor, n: int = PAIRS, seed: int = 0) -> tuple[list[int], list[int]]:
    """n index pairs (i != j) into the codes: the first n // 3 across classes, the rest within."""
    return benchmark_pairs(labels, n, seed)


def solver_pairs(name: str, n: int = PAIRS, seed: int = 0) -> tuple[Tensor, Tensor]:
    """End points (z0, z1), each (n, d), of the solver layer on generator ``name``."""
    _, Z, labels = generator(name)
    I, J = pair_indices(labels, n, seed)
    return Z[I], Z[J]


def curve_points(name: str, B: int, N: int, seed: int = 0) -> Tensor:
    """(B, N, d) points on straight lines between random pairs of the generator's codes."""
    _, Z, _ = generator(name)
    g = torch.Generator().manual_seed(seed)
    i, j = torch.randint(Z.shape[0], (2, B), generator=g)
    t = torch.linspace(0, 1, N, dtype=Z.dtype)
    return Z[i, None, :] + t[None, :, None] * (Z[j] - Z[i])[:, None, :]


def environment_line(threads: int | None = None) -> str:
    """Where a result ran, for the head of every printed table: fastgeo version and commit,
    torch and triton versions, CPU model and cores, threads."""
    from fastgeo.benchmarks.timing import environment

    env = environment("cpu")
    return (
        f"fastgeo {env['fastgeo_version']} (commit {env['git_commit']}), torch {env['torch_version']}, "
        f"triton {env['triton_version']}, cpu {env['cpu_model']} ({env['cpu_count']} cores), "
        f"threads {env['threads'] if threads is None else threads}"
    )


def generator_table(
    doc: str, generators: str, header: str, row: Callable[[str, int, int, int], str], pairs: int = 16
) -> None:
    """The main of a script that prints one markdown row per generator at one thread: options
    ``--generators`` (default ``generators``), ``--pairs``, ``--rounds``, ``--seed``; ``header`` the
    table's head line after the environment line, ``row(name, pairs, rounds, seed)`` each row."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--generators", default=generators)
    parser.add_argument("--pairs", type=int, default=pairs)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{environment_line(1)}, float32, median of {args.rounds} rounds (CPU time)")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for name in args.generators.split(","):
        print(row(name, args.pairs, args.rounds, args.seed), flush=True)


def results_dir() -> Path:
    """Where the benchmark files write their tables and plots: ``$FASTGEO_BENCH_OUT`` or
    ``bench/results`` (created)."""
    import os

    out = Path(os.environ.get("FASTGEO_BENCH_OUT", Path(__file__).resolve().parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    return out
