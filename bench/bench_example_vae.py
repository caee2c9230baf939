"""PyTorch's example VAE as users have it: fastgeo's default and ``fast``, StochMan's defaults
(batched) and the dense oracle on the same pairs, side by side in one process.

    OMP_NUM_THREADS=1 python bench/bench_example_vae.py --pairs 8 --seeds 0

The model is the VAE of the pytorch/examples repository, written here as it is there (784-400-20
encoder, ``decode(z) = sigmoid(fc4(relu(fc3(z))))``, d = 20: a ReLU MLP decoder whose mean is a
method of the module, not an ``nn.Sequential``), trained with its loss (binary cross-entropy plus
KL, Adam 1e-3, batch 128) on ``fastgeo.image_datasets.glyphs28`` (no download), and the RBF
precision fitted by ``RBFPrecision.fit`` on the encoder means. The trained generator is saved in
the safe format (``bench/results/generators/example_vae.safetensors``, reused). Lengths are
measured alike (``fastgeo.benchmarks.accuracy``, 1,024 points, float64); the dense oracle is
``method="dense"`` in float64 (about 10 minutes per 8 pairs on one loaded core). Each solver is
timed twice, alternating; the table gives the faster of the two.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from workloads import environment_line

import fastgeo
from fastgeo.benchmarks.accuracy import MEASURE_POINTS, measured_lengths, oracle_lengths
from fastgeo.benchmarks.pairs import pair_indices
from fastgeo.benchmarks.stochman_peer import stochman_geodesics
from fastgeo.image_datasets import glyphs28

PATH = Path(__file__).resolve().parent / "results" / "generators" / "example_vae.safetensors"


class ExampleVAE(nn.Module):
    """The VAE of pytorch/examples (vae/main.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def train(n: int = 10000, epochs: int = 15, seed: int = 0) -> Path:
    """Train the example VAE as its script does, fit the RBF precision, save the generator."""
    torch.manual_seed(seed)
    X, labels = glyphs28(n, seed)
    X = X.reshape(n, -1).float()
    vae = ExampleVAE()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for epoch in range(epochs):
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, 128):
            x = X[perm[i : i + 128]]
            recon, mu, logvar = vae(x)
            bce = F.binary_cross_entropy(recon, x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = bce + kld
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss)
        print(f"epoch {epoch + 1}: loss {total / n:.1f} per image", flush=True)
    vae.eval()
    with torch.no_grad():
        Z = vae.encode(X)[0]
    precision = fastgeo.RBFPrecision.fit(Z, X, vae.decode, num_centers=64, seed=seed, progress=False)
    PATH.parent.mkdir(parents=True, exist_ok=True)
    metric = fastgeo.ExpectedMetric(vae.decode, precision)
    fastgeo.save_generator(PATH, metric, extra={"latents": Z, "labels": labels})
    return PATH


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds of pairs")
    parser.add_argument("--retrain", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.retrain or not PATH.exists():
        train()
    metric = fastgeo.load_generator(PATH)
    extra = fastgeo.load_extra(PATH)
    m64 = metric.to(torch.float64)
    print(environment_line(1))
    print(metric.describe())
    peer = stochman_geodesics(metric, MEASURE_POINTS)
    print("| seed | method | ms / geodesic | StochMan / this | mean / worst excess % | statuses |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in map(int, args.seeds.split(",")):
        i0, i1 = pair_indices(extra["labels"], args.pairs, seed)
        z0, z1 = extra["latents"][i0], extra["latents"][i1]
        runs = {
            "fastgeo default": lambda a, b: fastgeo.geodesics(metric, a, b, progress=False),
            "fastgeo fast": lambda a, b: fastgeo.geodesics(metric, a, b, method="fast", progress=False),
        }
        if peer is not None:
            runs[peer[1]] = peer[0]
        best: dict[str, float] = {}
        out: dict[str, object] = {}
        for _ in range(2):
            for name, run in runs.items():
                t = time.perf_counter()
                with torch.no_grad() if name.startswith("fastgeo") else torch.enable_grad():
                    out[name] = run(z0, z1)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
        with torch.no_grad():
            dense = fastgeo.geodesics(m64, z0.double(), z1.double(), method="dense", progress=False)
            ref = oracle_lengths(m64, dense)
            for name, result in out.items():
                points = result.points(MEASURE_POINTS) if name.startswith("fastgeo") else result
                excess = 100 * (measured_lengths(m64, points.double()) / ref - 1)
                counts = Counter(result.status.tolist()) if name.startswith("fastgeo") else {}
                statuses = ", ".join(f"{s} {n}" for s, n in counts.items()) or "-"
                ratio = best[peer[1]] / best[name] if peer is not None else float("nan")
                print(
                    f"| {seed} | {name} | {1000 * best[name] / args.pairs:,.1f} | {ratio:.2f} | "
                    f"{float(excess.mean()):.3f} / {float(excess.max()):.3f} | {statuses} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
