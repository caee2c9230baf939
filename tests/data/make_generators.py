"""Train the small generators that tests and benchmarks share, and save them next to this file.

    python tests/data/make_generators.py            # both
    python tests/data/make_generators.py moons      # two-moons only (numpy); digits needs scikit-learn

Each file holds a self-contained generator in the safe format (the decoder's structure as data
and its tensors in safetensors, see ``fastgeo.save_generator``) and the training latent codes and
labels, in float32:

- ``two_moons.safetensors``: two moons lifted to D = 10, a 2-D latent VAE, RBF precision with 48 centers;
- ``digits.safetensors``: the 8x8 digits of scikit-learn (D = 64, pixels in [0, 1]), a 2-D latent VAE,
  RBF precision with 64 centers.

``two_moons.pt2`` is the two-moons generator in fastgeo's first format (a torch.export archive, a
code file): kept to test loading with ``trust=True`` and ``fastgeo convert``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import fastgeo
from fastgeo.datasets import two_moons
from fastgeo.demo.vae import train_vae

HERE = Path(__file__).resolve().parent


def build(X: torch.Tensor, labels: torch.Tensor, num_centers: int, seed: int, hidden: int, steps: int):
    vae = train_vae(X, hidden=hidden, steps=steps, seed=seed, progress=False)
    with torch.no_grad():
        Z = vae.encode(X)[0]
    prec = fastgeo.RBFPrecision.fit(
        Z, X, vae.decoder_mean, num_centers=num_centers, progress=False, seed=seed
    )
    return vae.decoder_mean, prec, Z, labels


def save(name: str, mean, prec, Z, labels) -> None:
    path = HERE / f"{name}.safetensors"
    fastgeo.save_generator(path, fastgeo.ExpectedMetric(mean, prec), extra={"latents": Z, "labels": labels})
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def moons() -> None:
    X, y = two_moons(1000, noise=0.05, seed=0, dim=10)
    save("two_moons", *build(X, y, num_centers=48, seed=0, hidden=64, steps=3000))


def digits() -> None:
    from sklearn.datasets import load_digits

    data = load_digits()
    X = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    save("digits", *build(X, y, num_centers=64, seed=0, hidden=128, steps=4000))


if __name__ == "__main__":
    which = sys.argv[1:] or ["moons", "digits"]
    for name in which:
        {"moons": moons, "digits": digits}[name]()
