"""The pure-PyTorch reference against independent loop-based formulas, and its gradients."""

import math

import pytest
import torch

import fastgeo
from fastgeo import reference


def random_rbf(K, d, D, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(K, d, generator=g, dtype=dtype)
    gammas = torch.rand(K, generator=g, dtype=dtype) + 0.5
    weights = torch.rand(D, K, generator=g, dtype=dtype)
    zeta = torch.rand(D, generator=g, dtype=dtype) + 0.1
    return centers, gammas, weights, zeta


def loop_beta(z, centers, gammas, weights, zeta):
    """beta for one point, written with Python loops from DESIGN §1."""
    K, d = centers.shape
    D = weights.shape[0]
    out = []
    for i in range(D):
        total = float(zeta[i])
        for k in range(K):
            sq = sum((float(z[a]) - float(centers[k, a])) ** 2 for a in range(d))
            total += float(weights[i, k]) * math.exp(-float(gammas[k]) * sq)
        out.append(total)
    return out


@pytest.mark.parametrize("K,d,D", [(1, 1, 1), (3, 2, 4), (5, 3, 2)])
def test_rbf_precision_matches_loops(K, d, D):
    params = random_rbf(K, d, D)
    z = torch.randn(4, d, dtype=torch.float64)
    beta = reference.rbf_precision(z, *params)
    expected = torch.tensor([loop_beta(z[p], *params) for p in range(4)], dtype=torch.float64)
    torch.testing.assert_close(beta, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B,N,D", [(1, 2, 1), (3, 5, 4)])
def test_segment_sqdist_matches_loops(B, N, D):
    x = torch.randn(B, N, D, dtype=torch.float64)
    out = reference.segment_sqdist(x)
    for b in range(B):
        for n in range(N - 1):
            expected = sum((float(x[b, n + 1, i]) - float(x[b, n, i])) ** 2 for i in range(D))
            assert abs(float(out[b, n]) - expected) < 1e-12


def test_rbf_segment_sqdist_matches_loops():
    params = random_rbf(3, 2, 4)
    pts = torch.randn(2, 4, 2, dtype=torch.float64)
    out = reference.rbf_segment_sqdist(pts, *params)
    for b in range(2):
        sig = [[v ** -0.5 for v in loop_beta(pts[b, n], *params)] for n in range(4)]
        for n in range(3):
            expected = sum((sig[n + 1][i] - sig[n][i]) ** 2 for i in range(4))
            assert abs(float(out[b, n]) - expected) < 1e-12


def test_reference_gradcheck():
    centers, gammas, weights, zeta = (p.requires_grad_() for p in random_rbf(3, 2, 4))
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    pts = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(reference.rbf_precision, (z, centers, gammas, weights, zeta))
    assert torch.autograd.gradcheck(reference.rbf_segment_sqdist, (pts, centers, gammas, weights, zeta))
    assert torch.autograd.gradcheck(reference.segment_sqdist, (x,))


def test_ops_entry_points_use_reference_when_forced():
    params = random_rbf(3, 2, 4)
    z = torch.randn(2, 3, 2, dtype=torch.float64)  # leading batch dims are kept
    with fastgeo.use_backend("reference"):
        beta = fastgeo.ops.rbf_precision(z, *params)
        assert fastgeo.current_backend() == "reference"
    assert fastgeo.current_backend() == "auto"
    assert beta.shape == (2, 3, 4)
    torch.testing.assert_close(beta.reshape(6, 4), reference.rbf_precision(z.reshape(6, 2), *params))
    # scalar zeta is broadcast to (D,)
    c, g, w, _ = params
    with fastgeo.use_backend("reference"):
        torch.testing.assert_close(
            fastgeo.ops.rbf_precision(z, c, g, w, 0.5),
            fastgeo.ops.rbf_precision(z, c, g, w, torch.full((4,), 0.5, dtype=torch.float64)),
        )


def test_use_backend_rejects_unknown_name():
    with pytest.raises(ValueError, match="backend"):
        with fastgeo.use_backend("fortran"):
            pass
