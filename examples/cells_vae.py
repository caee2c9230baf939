"""fastgeo on a single-cell-like VAE: a Gaussian decoder of 2,000 genes, geodesic distances
between cells, and how their nearest neighbours compare with Euclidean ones in latent space.

Run: python examples/cells_vae.py [--quick]

The data are procedural (``fastgeo.datasets.cells``: six cell types along a branching tree of
gene programs, counts library-size normalized and ``log1p``-transformed, as single-cell data are
prepared); the VAE is plain PyTorch (your own model takes its place) with a linear output layer,
a Gaussian decoder. Such a decoder's last layer widens (128 -> 2,000 genes), and fastgeo measures
curves through its 128 x 128 triangular factor: the same lengths at a fraction of the cost
(``metric.describe()`` says so). Then an approximate 600 x 600 matrix from straight segments
(these geodesics are nearly straight), its error measured on a sample, and one of all 6,000
cells estimated from their decoded features (``mode="chord"``). About three minutes on one CPU
core (``--quick``: about 20 s, a barely trained model, for a smoke test).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import fastgeo
from fastgeo.datasets import cells


class GaussianVAE(nn.Module):
    def __init__(self, genes: int, d: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(genes, hidden), nn.ELU(), nn.Linear(hidden, 2 * d))
        self.decoder = nn.Sequential(
            nn.Linear(d, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, genes)
        )
        self.d = d

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return h[:, : self.d], h[:, self.d :]


def train(vae: GaussianVAE, x: torch.Tensor, epochs: int, noise_var: float = 0.2) -> None:
    """A Gaussian VAE with a fixed decoder variance (enough for an example)."""
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(128):
            xb = x[batch]
            mu, logvar = vae.encode(xb)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            rec = (vae.decoder(z) - xb).pow(2).sum(1) / (2 * noise_var)
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = (rec + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    vae.eval().requires_grad_(False)


def same_type_neighbours(dist: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of cells whose nearest other cell (by ``dist`` (M, M)) is of their own type."""
    dist = dist.clone().fill_diagonal_(float("inf"))
    return float((labels[dist.argmin(1)] == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small, barely trained model (smoke test)")
    args = parser.parse_args()
    n, genes, epochs, m = (1500, 500, 3, 12) if args.quick else (6000, 2000, 30, 36)
    m_many, sample = (40, 8) if args.quick else (600, 50)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    x, labels = cells(n, seed=0, genes=genes)
    vae = GaussianVAE(genes)
    train(vae, x, epochs)
    with torch.no_grad():
        z = vae.encode(x)[0]
    seconds = time.perf_counter() - t0
    print(f"trained a d = {vae.d} Gaussian VAE on {n} cells x {genes} genes in {seconds:.0f} s")

    precision = fastgeo.RBFPrecision.fit(z, x, vae.decoder, num_centers=32, steps=200, progress=False)
    metric = fastgeo.ExpectedMetric(vae.decoder, precision)
    print(metric.describe())

    # m cells, as many of each type as m allows: every pair's geodesic distance.
    pick = torch.cat([(labels == k).nonzero()[: m // 6, 0] for k in range(6)])
    dist, report = fastgeo.pairwise_distances(metric, z[pick], progress=False, return_report=True)
    print(f"{len(pick)} x {len(pick)} geodesic distance matrix: {report}")
    euclid = torch.cdist(z[pick], z[pick])
    ratio = (dist / euclid).triu(1)
    low, high = float(ratio[ratio > 0].min()), float(ratio.max())
    print(f"geodesic / Euclidean latent distance: {low:.2f}-{high:.2f}")
    print(
        f"nearest cell of the same type: geodesic {same_type_neighbours(dist.double(), labels[pick]):.2f}, "
        f"Euclidean in latent space {same_type_neighbours(euclid.double(), labels[pick]):.2f}"
    )

    # Many more cells, approximately: every entry the length of its pair's straight segment (the
    # graph mode with no edges; these geodesics are nearly straight), its error measured on a
    # sample of pairs solved exactly.
    many = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:m_many]
    approx, report = fastgeo.pairwise_distances(
        metric, z[many], mode="graph", neighbors=0, straight=True, error_sample=sample,
        progress=False, return_report=True,
    )  # fmt: skip
    print(f"{m_many} x {m_many} approximate matrix: {report}")
    print(f"nearest cell of the same type there: {same_type_neighbours(approx.double(), labels[many]):.2f}")

    # Every cell: each entry estimated from its two cells' decoded features and metric tensors,
    # fitted to a sample of pairs solved exactly (no curve per pair; estimates, not bounds).
    t0 = time.perf_counter()
    every, report = fastgeo.pairwise_distances(
        metric, z, mode="chord", error_sample=max(20, sample), progress=False, return_report=True
    )
    print(f"{n} x {n} chord estimates in {time.perf_counter() - t0:.0f} s: {report.chord_error}")
    print(f"nearest cell of the same type there: {same_type_neighbours(every.double(), labels):.2f}")


if __name__ == "__main__":
    main()
