import numpy as np
import pytest
import torch

from fastgeo.datasets import two_moons


def test_two_moons_shapes_dtypes_and_labels():
    """(n, 2) float32 points and int64 labels, the two moons as even as n allows; dtype is honoured."""
    X, y = two_moons(101, noise=0.05, seed=0)
    assert X.shape == (101, 2) and X.dtype == torch.float32
    assert y.shape == (101,) and y.dtype == torch.int64
    assert int((y == 0).sum()) == 51 and int((y == 1).sum()) == 50
    X64, _ = two_moons(10, seed=0, dtype=torch.float64)
    assert X64.dtype == torch.float64


def test_two_moons_deterministic_and_seed_dependent():
    """The same seed gives the same sample, another seed another."""
    a = two_moons(200, 0.1, seed=3, dim=5)
    b = two_moons(200, 0.1, seed=3, dim=5)
    c = two_moons(200, 0.1, seed=4, dim=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_two_moons_noise_free_points_lie_on_the_half_circles():
    """Without noise the points lie on the two half circles: the upper one centred at 0, the lower
    one at (1, 0.5)."""
    X, y = two_moons(400, noise=0.0, seed=1, dtype=torch.float64)
    upper, lower = X[y == 0], X[y == 1]
    assert torch.allclose(upper.norm(dim=1), torch.ones(len(upper), dtype=torch.float64))
    assert bool((upper[:, 1] >= 0).all())
    centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose((lower - centre).norm(dim=1), torch.ones(len(lower), dtype=torch.float64))
    assert bool((lower[:, 1] <= 0.5).all())


def test_lift_is_injective_and_curved():
    """dim > 2 lifts the planar sample: the plane is recovered by a linear projection, but the lift
    is not affine."""
    P, _ = two_moons(300, 0.05, seed=2, dtype=torch.float64)
    X, _ = two_moons(300, 0.05, seed=2, dim=6, dtype=torch.float64)
    assert X.shape == (300, 6)
    # Same planar sample: the lift is a function of the planar points, recoverable by a projection.
    proj, *_ = np.linalg.lstsq(X.numpy(), P.numpy(), rcond=None)
    assert np.abs(X.numpy() @ proj - P.numpy()).max() < 1e-8
    # ... but not affine: a linear fit from the plane misses the extra dimensions.
    A = np.hstack([P.numpy(), np.ones((300, 1))])
    coef, *_ = np.linalg.lstsq(A, X.numpy(), rcond=None)
    assert np.abs(A @ coef - X.numpy()).max() > 0.05


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 1}, {"n": 2.5}, {"n": True}, {"noise": -0.1}, {"noise": float("inf")}, {"noise": True},
        {"noise": "a"}, {"dim": 1}, {"dtype": torch.int64}, {"dtype": np.float32}, {"dtype": "float32"},
        {"seed": -1}, {"seed": 1.5}, {"seed": True}, {"seed": 1 << 64},
    ],
)  # fmt: skip
def test_two_moons_rejects_bad_arguments_by_name(kwargs):
    """Sizes, noise, seed and dtype are checked, each error naming its argument."""
    args = {"n": 10, "noise": 0.1, "seed": 0, **kwargs}
    with pytest.raises((ValueError, TypeError), match=next(iter(kwargs))):
        two_moons(**args)


def test_two_moons_and_cells_take_numpy_integers():
    X, y = two_moons(np.int64(10), seed=np.int64(3), dim=np.int64(3))
    assert X.shape == (10, 3) and torch.equal(X, two_moons(10, seed=3, dim=3)[0])
    from fastgeo.datasets import cells

    assert cells(np.int64(12), seed=np.uint32(1), genes=np.int16(20))[0].shape == (12, 20)


def test_cells_shapes_determinism_and_structure():
    """Log-normalized counts (non-negative, sparse), six balanced types, the same sample for a
    seed; the genes depend on ``genes`` only: two samples share the expression of each type."""
    from fastgeo.datasets import cells

    X, y = cells(600, seed=0, genes=300)
    assert X.shape == (600, 300) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert bool((X >= 0).all()) and 0.02 < float((X > 0).float().mean()) < 0.6
    assert torch.equal(y.bincount(), torch.full((6,), 100))
    a, b = cells(600, seed=0, genes=300), cells(600, seed=1, genes=300)
    assert torch.equal(a[0], X) and not torch.equal(b[0], X)
    # the types differ in expression, alike in both samples (a fixed tree of programs)
    means_a = torch.stack([a[0][a[1] == k].mean(0) for k in range(6)])
    means_b = torch.stack([b[0][b[1] == k].mean(0) for k in range(6)])
    between = torch.cdist(means_a, means_a).triu(1)
    assert float((means_a - means_b).norm(dim=1).max()) < 0.5 * float(between[between > 0].min())


@pytest.mark.parametrize(
    "kw", [{"n": 1}, {"genes": 1}, {"genes": True}, {"n": 2.5}, {"seed": -2}, {"dtype": np.float64}]
)
def test_cells_argument_errors(kw):
    from fastgeo.datasets import cells

    with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        cells(**kw)
