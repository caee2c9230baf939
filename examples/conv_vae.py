"""fastgeo on a convolutional VAE as users write one: train it, fit the decoder's variance, then
geodesics, their statuses and a small distance matrix.

Run: python examples/conv_vae.py [--quick] [--out DIR]

The VAE is plain PyTorch (your own model takes its place): an encoder to (mean, log-variance) and
a decoder mean from d = 8 latent codes to 1 x 28 x 28 images, trained on procedural shapes
(``fastgeo.image_datasets.shapes28``: no download). About two minutes on one CPU core
(``--quick``: about 20 s, a barely trained model, for a smoke test). With matplotlib installed,
``--out`` gets a figure of the two pairs whose geodesics differ most from the straight lines:
each decoded along its geodesic and along the straight line, between the two training images
(a model this small and this briefly trained draws stars and crosses as blobs: the figure shows
what it decodes, and the data's own images at the ends).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

import fastgeo
from fastgeo.image_datasets import SHAPE_CLASSES, shapes28


class ConvVAE(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ELU(),   # 28 -> 14
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ELU(),  # 14 -> 7
            nn.Flatten(), nn.Linear(32 * 7 * 7, 2 * d),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Linear(d, 32 * 7 * 7), nn.ELU(), nn.Unflatten(1, (32, 7, 7)),
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1), nn.ELU(),  # 7 -> 14
            nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1), nn.ELU(),   # 14 -> 28
            nn.Conv2d(8, 1, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip
        self.d = d

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h[:, : self.d], h[:, self.d :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)  # (P, 1, 28, 28): fastgeo flattens images itself


def train(vae: ConvVAE, x: torch.Tensor, epochs: int) -> None:
    """A plain Gaussian VAE with a fixed decoder variance (enough for an example)."""
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for epoch in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(x)).split(128):
            xb = x[batch]
            mu, logvar = vae.encode(xb)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = (vae.decode(z) - xb).pow(2).sum((1, 2, 3)) / (2 * 0.01)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.1f}")
    vae.eval()  # fastgeo refuses a decoder left in training mode


def pick_pairs(labels: torch.Tensor, n_pairs: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs of images: the even ones across classes, the odd ones within a class."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randperm(len(labels), generator=g)[:n_pairs]
    j = []
    for k, a in enumerate(i.tolist()):
        same = labels == labels[a]
        pool = (~same if k % 2 == 0 else same).nonzero().squeeze(1)
        pool = pool[pool != a]
        j.append(pool[torch.randint(len(pool), (1,), generator=g)])
    return i, torch.cat(j)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny data and training (a smoke test)")
    p.add_argument("--out", type=Path, default=None, help="folder for the figure (needs matplotlib)")
    args = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the solver's small batched ops gain little from threads
    n, epochs = (600, 1) if args.quick else (6000, 10)

    x, labels = shapes28(n, seed=0)
    x = x.view(n, 1, 28, 28)
    vae = ConvVAE(d=8)
    t = time.perf_counter()
    train(vae, x, epochs)
    print(f"trained in {time.perf_counter() - t:.0f} s")

    with torch.no_grad():
        codes = vae.encode(x)[0]  # the encoder means: where the data lies in latent space
    # The decoder's variance as an RBF precision fitted to the data (Arvanitidis et al., 2018):
    # small on the data, large away from it, so geodesics stay on the data.
    precision = fastgeo.RBFPrecision.fit(codes, x, vae.decode, steps=200 if args.quick else 1000)
    metric = fastgeo.ExpectedMetric(vae.decode, precision)
    print(metric.describe())  # how its Jacobians are taken (here: the stacked forward mode)

    i, j = pick_pairs(labels, 2 if args.quick else 4)
    z0, z1 = codes[i], codes[j]

    with torch.no_grad():
        t = time.perf_counter()
        res = fastgeo.geodesics(metric, z0, z1)  # the first call also builds the latent graph
        print(f"default: {time.perf_counter() - t:.1f} s for {len(i)} geodesics")
        t = time.perf_counter()
        coarse = fastgeo.geodesics(metric, z0, z1, method="fast")
        print(f"fast:    {time.perf_counter() - t:.1f} s")
    names = [f"{SHAPE_CLASSES[labels[a]]} -> {SHAPE_CLASSES[labels[b]]}" for a, b in zip(i, j, strict=True)]
    for k in range(len(i)):
        geo, fast, line = float(res.lengths[k]), float(coarse.lengths[k]), float(res.straight_lengths[k])
        print(f"pair {k} ({names[k]}): {geo:.4f} ({res.status[k]}), fast {fast:.4f} ({coarse.status[k]}), "
              f"line {line:.4f}")  # fmt: skip

    with torch.no_grad():
        distances = fastgeo.pairwise_distances(metric, codes[i], method="fast", progress=False)
    print(f"{len(i)} x {len(i)} distance matrix (method='fast'):")
    print(distances)

    if args.out is not None:
        _figure(vae, res, x[i], x[j], names, args.out)


def _figure(vae: ConvVAE, res, x0: torch.Tensor, x1: torch.Tensor, names: list[str], out: Path) -> None:
    """The two pairs whose geodesics are shortest against their straight lines: each decoded at
    9 points along its geodesic and along the line, between the training images of its ends."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: no figure")
        return
    steps = 9
    t = torch.linspace(0, 1, steps)[:, None]
    gain = 1 - res.lengths / res.straight_lengths
    shown = gain.argsort(descending=True)[:2].tolist()
    rows, titles = [], []
    with torch.no_grad():
        for k in shown:
            z0, z1 = res.curves.z0[k], res.curves.z1[k]
            rows.append(vae.decode(res.points(steps)[k]))  # along the geodesic
            rows.append(vae.decode(z0 + t * (z1 - z0)))  # along the straight line
            titles += [f"pair {k}, {names[k]}: geodesic ({100 * gain[k]:.1f} % shorter)", "straight line"]
    fig, axes = plt.subplots(len(rows), steps + 2, figsize=(steps + 2, 1.15 * len(rows) + 0.3))
    for r, imgs in enumerate(rows):
        k = shown[r // 2]
        cells = [x0[k, 0], *imgs[:, 0], x1[k, 0]]  # the data's images at both ends
        for c, img in enumerate(cells):
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
    axes[-1, 0].text(0.5, -0.15, "data", fontsize=7, ha="center", va="top", transform=axes[-1, 0].transAxes)
    axes[-1, -1].text(0.5, -0.15, "data", fontsize=7, ha="center", va="top", transform=axes[-1, -1].transAxes)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "conv_vae_paths.png", dpi=100, bbox_inches="tight")
    print(f"figure: {out / 'conv_vae_paths.png'}")


if __name__ == "__main__":
    main()
