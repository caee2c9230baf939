"""A fixed synthetic generator for the benchmarks (no data files needed): a random smooth MLP
decoder mean (d = 2 -> D = 64, sigmoid pixels) and an RBF precision whose centers lie on a few
clusters, as a fitted RBF on encoded data would. Deterministic for a given seed."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..metric import ExpectedMetric
from ..rbf import RBFPrecision


def synthetic_generator(
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    d: int = 2,
    D: int = 64,
    clusters: int = 6,
    per_cluster: int = 8,
) -> tuple[ExpectedMetric, Tensor]:
    """(metric, cluster centres (clusters, d)); K = clusters * per_cluster RBF centers."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    mean = nn.Sequential(
        nn.Linear(d, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, D), nn.Sigmoid()
    )
    with torch.no_grad():
        for p in mean.parameters():
            # weights ~ 1.5 / sqrt(fan_in): curved enough that geodesics differ from lines
            scale = 1.5 / p.shape[-1] ** 0.5 if p.dim() == 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=g, device="cpu", dtype=torch.float64) * scale)
    cc = torch.randn(clusters, d, generator=g, device="cpu", dtype=torch.float64) * 2.0
    centers = cc[:, None] + 0.3 * torch.randn(
        clusters, per_cluster, d, generator=g, device="cpu", dtype=torch.float64
    )
    centers = centers.reshape(-1, d)
    K = centers.shape[0]
    prec = RBFPrecision(
        centers,
        torch.full((K,), 4.0, dtype=torch.float64),
        torch.rand(D, K, generator=g, device="cpu", dtype=torch.float64) * 50,
        1e-2,
    )
    metric = ExpectedMetric(mean.to(dtype=dtype, device=device), prec.to(dtype=dtype, device=device))
    return metric, cc.to(dtype=dtype, device=device)


def latent_codes(n: int, clusters: Tensor, seed: int = 1) -> Tensor:
    """n codes scattered around the cluster centres, as encoded data would be: (n, d)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randint(0, clusters.shape[0], (n,), generator=g, device="cpu")
    noise = 0.35 * torch.randn(n, clusters.shape[1], generator=g, device="cpu", dtype=torch.float64)
    return clusters.cpu().double()[idx].add(noise).to(clusters)


def pairs(n: int, clusters: Tensor, seed: int = 2) -> tuple[Tensor, Tensor]:
    """n end-point pairs (z0, z1), each (n, d): two thirds within a cluster, a third across."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    C, d = clusters.shape
    cc = clusters.cpu().double()
    a = torch.randint(0, C, (n,), generator=g, device="cpu")
    across = torch.arange(n) < n // 3
    b = torch.where(across, (a + 1 + torch.randint(0, C - 1, (n,), generator=g, device="cpu")) % C, a)
    z0 = cc[a] + 0.35 * torch.randn(n, d, generator=g, device="cpu", dtype=torch.float64)
    z1 = cc[b] + 0.35 * torch.randn(n, d, generator=g, device="cpu", dtype=torch.float64)
    return z0.to(clusters), z1.to(clusters)
