"""Train image VAEs shaped like real users' models and save them as fastgeo generators.

    python tests/data/make_real_generators.py                        # the two small ones
    python tests/data/make_real_generators.py conv5_small mlp12_small conv8_shapes
    python tests/data/make_real_generators.py --all                  # every generator (~30 min)
    python tests/data/make_real_generators.py --list                 # names and settings

Each generator is a VAE trained on a procedural image data set (:mod:`fastgeo.image_datasets`,
models from :mod:`fastgeo.demo.vaes`), then an RBF precision fitted on the encoder means
(``fastgeo.RBFPrecision.fit``), saved with ``fastgeo.save_generator`` with the training codes
and labels as extras (``{"latents": Z, "labels": y}``, float32 / int64), as
``tests/data/make_generators.py`` does for the 2-D ones.

The RBF precision of the large generators is fitted on a random subset of 4,000 training codes
(2,000 for D = 12,288: the fit's cost is M x K x D per step); all codes are saved as latents.

The small generators (files well under 1 MB, trained in about a minute) go to ``tests/data/`` and
are committed; the others go to ``bench/results/generators/`` (git-ignored): benchmarks call
:func:`build_generator` to make them when missing. Everything is deterministic for the seeds
below on one machine (the committed files were built with ``--threads 1``; the MLP files come
out bit-identical with 2 threads). On a machine whose cores other processes also use, pass
``--threads 1``: two threads that wait on each other ran up to 10x slower there.

Generators (name: decoder, data):

- ``conv5_small``: d = 5 conv decoder (16/8/8 channels), glyphs28, 4,000 images (small);
- ``mlp12_small``: d = 12 MLP 12-48-48-784, shapes28, 3,000 images (small);
- ``conv8_shapes``, ``conv8_glyphs``: d = 8 conv decoder (64/32/16 channels), 12,000 images;
- ``mlp16_glyphs``, ``mlp16_shapes``: d = 16 MLP 16-256-256-784, 10,000 images;
- ``mlp32_shapes``: d = 32 MLP 32-256-256-784;
- ``mlp64_glyphs``: d = 64 MLP 64-256-256-784; ``mlp128_shapes``: d = 128 MLP 128-256-256-784;
- ``mlp16_relu_shapes``, ``conv8_relu_glyphs``: the same d = 16 MLP with ReLU, the d = 8 conv
  decoder with LeakyReLU (piecewise-linear decoders, as many users train); ``mlp2_relu_glyphs``:
  a d = 2 MLP 2-256-256-784 with ReLU (a latent plane to look at);
- ``conv16_silu_shapes``: a d = 16 conv decoder with BatchNorm and SiLU, shapes28 (a
  decoder built differently from the others, as a held-out check);
- ``conv12_upsample_glyphs``: a d = 12 resize-convolution decoder (bilinear ``Upsample`` then
  ``Conv2d``, GroupNorm, GELU), glyphs28 (another held-out check);
- ``conv10_shuffle_mish_glyphs``: a d = 10 sub-pixel convolution decoder (``Conv2d`` then
  ``PixelShuffle``, InstanceNorm2d, Mish), glyphs28 (layers recognized later: a third check);
- ``conv32_color64``: d = 32 conv decoder with four transposed convolutions (64/32/16/8/8
  channels), color_shapes64 (D = 12,288), 6,000 images;
- ``mlp16_linear_glyphs``: the d = 16 MLP with a linear output layer (a Gaussian decoder, no
  sigmoid), glyphs28;
- ``mlp10_cells``: a d = 10 MLP 10-128-128-2000 with a linear output on single-cell-like
  expression profiles (``fastgeo.datasets.cells``: 2,000 genes, six cell types on a tree), as
  single-cell users train them.
"""

# No "from __future__ import annotations": the dataclass below then needs no entry in sys.modules,
# so that benchmarks can load this file with importlib.util.spec_from_file_location alone.
import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import fastgeo
from fastgeo import datasets, image_datasets
from fastgeo.demo import vae_training, vaes

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH_DIR = REPO / "bench" / "results" / "generators"


@dataclass(frozen=True)
class Spec:
    """How one generator is made."""

    data: str  # a function of fastgeo.image_datasets or fastgeo.datasets: (n, seed) -> (X, labels)
    n: int  # training images
    model: Callable[[], vaes.ImageVAE]  # built after torch.manual_seed(seed)
    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    num_centers: int = 64  # RBF centers
    rbf_points: int | None = 4000  # fit the RBF on a random subset this large (None: all points)
    rbf_steps: int = 500  # within ~0.1 nat per image of 2000 steps' likelihood
    seed: int = 0  # data, model, training and k-means seed
    small: bool = False  # committed to tests/data


MLP = {"epochs": 50, "batch_size": 128, "lr": 1e-3}  # the MLPs' training settings

SPECS: dict[str, Spec] = {
    "conv5_small": Spec(
        "glyphs28", 4000, lambda: vaes.conv_vae28(5, (16, 8, 8), hidden=64), epochs=60,
        num_centers=32, small=True,
    ),
    "mlp12_small": Spec(
        "shapes28", 3000, lambda: vaes.mlp_vae(784, 12, (48, 48)), epochs=200, num_centers=32, small=True,
    ),
    "conv8_shapes": Spec("shapes28", 12000, lambda: vaes.conv_vae28(8), epochs=30),
    "conv8_glyphs": Spec("glyphs28", 12000, lambda: vaes.conv_vae28(8), epochs=30, seed=1),
    "mlp16_glyphs": Spec("glyphs28", 10000, lambda: vaes.mlp_vae(784, 16), **MLP),
    "mlp16_shapes": Spec("shapes28", 10000, lambda: vaes.mlp_vae(784, 16), **MLP, seed=1),
    "mlp32_shapes": Spec("shapes28", 10000, lambda: vaes.mlp_vae(784, 32), **MLP),
    "mlp64_glyphs": Spec("glyphs28", 10000, lambda: vaes.mlp_vae(784, 64), **MLP),
    "mlp128_shapes": Spec("shapes28", 10000, lambda: vaes.mlp_vae(784, 128), **MLP, seed=5),
    "mlp16_relu_shapes": Spec(
        "shapes28", 10000, lambda: vaes.mlp_vae(784, 16, activation="relu"), **MLP, seed=2
    ),
    "conv8_relu_glyphs": Spec(
        "glyphs28", 12000, lambda: vaes.conv_vae28(8, activation="leaky_relu"), epochs=30, seed=2
    ),
    "mlp2_relu_glyphs": Spec(
        "glyphs28", 10000, lambda: vaes.mlp_vae(784, 2, activation="relu"), **MLP, seed=3
    ),
    "conv16_silu_shapes": Spec(
        "shapes28", 12000, lambda: vaes.conv_vae28(16, activation="silu", norm="batch"), epochs=30, seed=4
    ),
    "conv12_upsample_glyphs": Spec(
        "glyphs28", 12000, lambda: vaes.conv_vae28(12, activation="gelu", norm="group", upsample="bilinear"),
        epochs=30, seed=6,
    ),
    "conv10_shuffle_mish_glyphs": Spec(
        "glyphs28", 12000,
        lambda: vaes.conv_vae28(10, activation="mish", norm="instance", upsample="pixel_shuffle"),
        epochs=30, seed=7,
    ),
    "conv32_color64": Spec("color_shapes64", 6000, lambda: vaes.conv_vae64(32), epochs=30, rbf_points=2000),
    "mlp16_linear_glyphs": Spec(
        "glyphs28", 10000, lambda: vaes.mlp_vae(784, 16, output="linear"), **MLP, seed=8
    ),
    "mlp10_cells": Spec(
        "cells", 10000,
        lambda: vaes.mlp_vae(2000, 10, (128, 128), output="linear", init_var=0.05), **MLP, seed=9,
    ),
}  # fmt: skip

SMALL = [name for name, spec in SPECS.items() if spec.small]


def default_dir(name: str) -> Path:
    """Where ``name`` is saved by default: tests/data for the small ones, else bench/results."""
    return HERE if SPECS[name].small else BENCH_DIR


def build_generator(name: str, out_dir: str | Path | None = None, *, verbose: bool = True) -> Path:
    """Train generator ``name``, fit its RBF precision and save it as ``out_dir/<name>.safetensors``.

    Args:
        name: a key of :data:`SPECS`.
        out_dir: the folder (created if missing); default :func:`default_dir`.
        verbose: print the training time, loss, reconstruction error, active units, file size.
    Returns:
        the path written. Uses torch's current thread count (the command line sets it).
    """
    if name not in SPECS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(SPECS)}")
    spec = SPECS[name]
    out = Path(out_dir) if out_dir is not None else default_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.safetensors"

    t0, c0 = time.perf_counter(), time.process_time()
    make_data = getattr(image_datasets, spec.data, None) or getattr(datasets, spec.data)
    X, labels = make_data(spec.n, spec.seed)
    t_data = time.perf_counter() - t0
    torch.manual_seed(spec.seed)
    vae = spec.model()
    log = vae_training.train_vae(
        vae, X, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, seed=spec.seed, progress=False
    )
    stats = vae_training.evaluate_vae(vae, X, seed=spec.seed)
    Z = stats["latents"]
    t1 = time.perf_counter()
    if spec.rbf_points is not None and spec.rbf_points < spec.n:
        gen = torch.Generator().manual_seed(spec.seed)
        idx = torch.randperm(spec.n, generator=gen)[: spec.rbf_points]
        Zfit, Xfit = Z[idx], X[idx]
    else:
        Zfit, Xfit = Z, X
    prec = fastgeo.RBFPrecision.fit(
        Zfit, Xfit, vae.decoder_mean, num_centers=spec.num_centers, steps=spec.rbf_steps,
        progress=False, seed=spec.seed,
    )  # fmt: skip
    t_rbf = time.perf_counter() - t1
    # example_input: 8 codes (a copy, not a view of Z) suffice to capture the mean; with the default
    # example save_generator keeps the whole storage of its probe outputs, (2K, D) floats (a third
    # of the small files, 6 MB for D = 12,288), and torch.export keeps the example's storage.
    fastgeo.save_generator(
        path,
        fastgeo.ExpectedMetric(vae.decoder_mean, prec),
        example_input=Z[:8].clone(),
        extra={"latents": Z, "labels": labels},
    )
    if verbose:
        parts = [
            f"{name}: d={vae.latent_dim} D={vae.data_dim}",
            f"decoder {vae_training.count_parameters(vae.decoder_mean):,} params",
            f"data {spec.data} n={spec.n} ({t_data:.1f}s)",
            f"train {log.seconds:.0f}s (CPU {log.cpu_seconds:.0f}s, {log.steps} steps)",
            f"loss {log.final_loss:.1f}",
            f"-ELBO {stats['neg_elbo']:.1f} mse {stats['mse']:.4f} KL {stats['kl']:.1f}",
            f"active {stats['active_units']}/{vae.latent_dim}",
            f"RBF K={spec.num_centers} {t_rbf:.0f}s",
            f"{path} {path.stat().st_size / 1024:.0f} KiB",
            f"total {time.perf_counter() - t0:.0f}s (CPU {time.process_time() - c0:.0f}s)",
        ]
        print(" | ".join(parts), flush=True)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"generators (default: {' '.join(SMALL)})")
    parser.add_argument("--all", action="store_true", help="every generator")
    parser.add_argument("--list", action="store_true", help="list the generators and exit")
    parser.add_argument("--out-dir", type=Path, default=None, help="folder (default: per generator)")
    parser.add_argument(
        "--threads", type=int, default=2,
        help="torch threads (default 2; use 1 when other processes share the cores: two threads "
        "then wait on each other, up to 10x slower)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.list:
        for name, spec in SPECS.items():
            where = default_dir(name).relative_to(REPO)
            print(f"{name:16s} {spec.data:15s} n={spec.n:<6d} epochs={spec.epochs:<3d} -> {where}")
        return
    names = list(SPECS) if args.all else (args.names or SMALL)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        parser.error(f"unknown generator(s) {', '.join(unknown)}; known: {', '.join(SPECS)}")
    torch.set_num_threads(args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    for name in names:
        build_generator(name, args.out_dir)
    print(
        f"total {time.perf_counter() - t0:.0f}s (CPU {time.process_time() - c0:.0f}s) for {len(names)} "
        f"generator(s), {args.threads} threads"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
