"""Generators with known geodesics, shared by the tests."""

import torch
from helpers import rbf_params

import fastgeo


def constant_precision(d: int, D: int, dtype=torch.float64, zeta: float = 1.0) -> fastgeo.RBFPrecision:
    """sigma constant everywhere (weights 0): the metric is the mean's pull-back alone."""
    return fastgeo.RBFPrecision(
        torch.zeros(1, d, dtype=dtype), torch.ones(1, dtype=dtype), torch.zeros(D, 1, dtype=dtype), zeta
    )


def inverse_stereographic(z: torch.Tensor) -> torch.Tensor:
    """The plane onto the unit sphere: (..., 2) -> (..., 3); |z| < 1 is a geodesically convex cap."""
    r2 = (z * z).sum(-1, keepdim=True)
    return torch.cat([2 * z, 1 - r2], -1) / (1 + r2)


def sphere_metric(dtype=torch.float64) -> fastgeo.ExpectedMetric:
    return fastgeo.ExpectedMetric(inverse_stereographic, constant_precision(2, 3, dtype))


def great_circle(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    x0, x1 = inverse_stereographic(z0), inverse_stereographic(z1)
    return torch.arccos((x0 * x1).sum(-1).clamp(-1, 1))


def disc_points(B: int, radius: float, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    """B points uniformly in the disc |z| < radius: (B, 2)."""
    g = torch.Generator().manual_seed(seed)
    r = radius * torch.rand(B, 1, generator=g, dtype=dtype).sqrt()
    a = 2 * torch.pi * torch.rand(B, 1, generator=g, dtype=dtype)
    return torch.cat([r * a.cos(), r * a.sin()], -1)


class Linear(torch.nn.Module):
    """mu(z) = A z + b."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.A = torch.nn.Parameter(A)
        self.b = torch.nn.Parameter(b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.A.T + self.b


def bumpy_metric(dtype=torch.float64, seed: int = 0, d: int = 2, D: int = 6, K: int = 5):
    """A small nonlinear decoder with a non-trivial RBF precision."""
    g = torch.Generator().manual_seed(seed)  # drawn in float64 so both dtypes share one generator
    W1 = torch.randn(16, d, generator=g, dtype=torch.float64).to(dtype)
    W2 = (torch.randn(D, 16, generator=g, dtype=torch.float64) / 4).to(dtype)

    def mean(z):
        return torch.tanh(z @ W1.T) @ W2.T

    prec = fastgeo.RBFPrecision(
        *rbf_params(
            K, d, D, dtype=dtype, generator=g, gammas=(0.5, 1.5), weights=(0.0, 20.0), zeta=(0.05, 0.05)
        )
    )
    return fastgeo.ExpectedMetric(mean, prec)


def saved_generator_and_codes(folder, n_codes: int):
    """A small MLP generator saved in ``folder`` (gen.safetensors) and ``n_codes`` random codes
    (Z.npy), for the command-line tests: returns the generator's path."""
    import numpy as np

    torch.manual_seed(0)
    mean = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6)).double()
    metric = fastgeo.ExpectedMetric(mean, bumpy_metric().precision)
    gen = fastgeo.save_generator(folder / "gen.safetensors", metric)
    np.save(folder / "Z.npy", np.random.default_rng(0).normal(size=(n_codes, 2)))
    return gen
