"""fastgeo on your own decoder: geodesics and a distance matrix in a few lines.

Run: python examples/own_decoder.py
"""

import torch

import fastgeo

torch.manual_seed(0)
d, D, K = 2, 16, 32

# Your decoder mean: any differentiable callable (..., d) -> (..., D), e.g. a trained nn.Module.
decoder_mean = torch.nn.Sequential(torch.nn.Linear(d, 64), torch.nn.Tanh(), torch.nn.Linear(64, D))

# The decoder variance as an RBF precision network, beta(z) = W phi(z) + zeta.
latents = torch.randn(200, d)  # e.g. your encoder's means
precision = fastgeo.RBFPrecision(
    centers=latents[:K], gammas=torch.full((K,), 2.0), weights=torch.rand(D, K) * 50, zeta=1e-2
)
metric = fastgeo.ExpectedMetric(decoder_mean, precision)

with torch.no_grad():
    res = fastgeo.geodesics(metric, latents[:8], latents[8:16])
print("geodesic lengths:     ", res.lengths)
print("straight-line lengths:", res.straight_lengths)
print("all converged:        ", bool(res.converged.all()))

dist = fastgeo.pairwise_distances(metric, latents[:10])
print("10 x 10 distance matrix, symmetric:", bool((dist == dist.T).all()))
