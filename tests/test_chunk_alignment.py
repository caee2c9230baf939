"""A curve's decoder Jacobians do not depend on its batch when the stacked forward mode works
through the points in chunks: chunks start where the points would be in one pass (multiples of
the products' row blocks). Chunks of any size started mid-block: a creeping curve of a held-out
d = 12 VAE converged 1.1 % apart alone and in a batch of 107 (bench/RESULTS.md, "A ninth
session")."""

import torch
from torch import nn

import fastgeo
from fastgeo.decoders import forward_mode


def test_a_curves_jacobians_are_the_same_alone_and_in_a_chunked_batch(monkeypatch):
    torch.manual_seed(0)
    d, width, D, N = 12, 128, 60, 24
    decoder = nn.Sequential(
        nn.Linear(d, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, D), nn.Sigmoid()
    ).eval()
    g = torch.Generator().manual_seed(1)
    precision = fastgeo.RBFPrecision(
        torch.randn(8, d, generator=g), torch.ones(8), torch.rand(D, 8, generator=g), 0.1
    )
    metric = fastgeo.ExpectedMetric(decoder, precision)
    points = torch.randn(20, N, d, generator=g)
    metric.mean_embedding_jacobian_rows(points[0])  # (the chain learns its widest step)
    # chunks of 13 points (before rounding to whole row blocks): (d + 1) stacked rows of `width`
    monkeypatch.setitem(forward_mode.CHUNK_BYTES, "cpu", 13 * (d + 1) * width * 4)
    value, rows = metric.mean_embedding_jacobian_rows(points.reshape(-1, d))
    for q in (1, 7, 19):
        alone_value, alone_rows = metric.mean_embedding_jacobian_rows(points[q])
        assert torch.equal(value[q * N : (q + 1) * N], alone_value), q
        assert torch.equal(rows[:, q * N : (q + 1) * N], alone_rows), q
