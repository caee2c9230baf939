"""The pure-PyTorch reference against independent loop-based formulas, and its gradients."""

import math

import pytest
import torch
from helpers import randn, rbf_params

import fastgeo
from fastgeo import reference


def random_rbf(K, d, D):
    """RBF parameters (float64): gammas in [0.5, 1.5), weights in [0, 1), zeta in [0.1, 1.1)."""
    return rbf_params(K, d, D, zeta=(0.1, 1.1))


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
    """reference.rbf_precision equals beta written with Python loops (1e-12), K = d = D = 1
    included."""
    params = random_rbf(K, d, D)
    z = randn(4, d)
    beta = reference.rbf_precision(z, *params)
    expected = torch.tensor([loop_beta(z[p], *params) for p in range(4)], dtype=torch.float64)
    torch.testing.assert_close(beta, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("B,N,D", [(1, 2, 1), (3, 5, 4)])
def test_segment_sqdist_matches_loops(B, N, D):
    """reference.segment_sqdist equals ||x_{n+1} - x_n||^2 written with loops (1e-12)."""
    x = randn(B, N, D)
    out = reference.segment_sqdist(x)
    for b in range(B):
        for n in range(N - 1):
            expected = sum((float(x[b, n + 1, i]) - float(x[b, n, i])) ** 2 for i in range(D))
            assert abs(float(out[b, n]) - expected) < 1e-12


def test_rbf_segment_sqdist_matches_loops():
    """reference.rbf_segment_sqdist equals ||sigma(c_{n+1}) - sigma(c_n)||^2 with sigma =
    beta^(-1/2) from the loops (1e-12)."""
    params = random_rbf(3, 2, 4)
    pts = randn(2, 4, 2)
    out = reference.rbf_segment_sqdist(pts, *params)
    for b in range(2):
        sig = [[v**-0.5 for v in loop_beta(pts[b, n], *params)] for n in range(4)]
        for n in range(3):
            expected = sum((sig[n + 1][i] - sig[n][i]) ** 2 for i in range(4))
            assert abs(float(out[b, n]) - expected) < 1e-12


def test_reference_gradcheck():
    """The reference's autograd gradients pass gradcheck in every input."""
    centers, gammas, weights, zeta = (p.requires_grad_() for p in random_rbf(3, 2, 4))
    z = randn(5, 2).requires_grad_()
    pts = randn(2, 4, 2, seed=2).requires_grad_()
    x = randn(2, 4, 3, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(reference.rbf_precision, (z, centers, gammas, weights, zeta))
    assert torch.autograd.gradcheck(reference.rbf_segment_sqdist, (pts, centers, gammas, weights, zeta))
    assert torch.autograd.gradcheck(reference.segment_sqdist, (x,))


def test_ops_entry_points_use_reference_when_forced(monkeypatch):
    """use_backend("reference") routes fastgeo.ops to the reference and is undone on exit; leading
    batch dimensions are kept; a scalar zeta is broadcast to (D,)."""
    from fastgeo.ops import registry

    ran, resolve = [], registry.resolve

    def spy(*args, **kwargs):
        name, fn = resolve(*args, **kwargs)
        ran.append(name)
        return name, fn

    monkeypatch.setattr(registry, "resolve", spy)
    params = random_rbf(3, 2, 4)
    z = randn(2, 3, 2)  # leading batch dims are kept
    with fastgeo.use_backend("reference"):
        beta = fastgeo.ops.rbf_precision(z, *params)
        assert fastgeo.current_backend() == "reference"
    assert ran == ["reference"]  # (the kernels compute the same values: which ran is asked here)
    assert fastgeo.current_backend() == "auto"
    fastgeo.ops.rbf_precision(z, *params)
    assert ran[-1] == ("cpu" if fastgeo.availability()["cpu"][0] else "reference")
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
    """use_backend refuses an unknown backend name."""
    with pytest.raises(ValueError, match="backend"):
        with fastgeo.use_backend("fortran"):
            pass
