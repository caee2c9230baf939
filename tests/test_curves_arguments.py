"""Curves a user builds (to measure a curve of their own, or a result's curves re-made): shapes,
dtypes and the basis checked when made, not deep inside a matrix product later."""

import pytest
import torch

import fastgeo


def test_curves_of_mismatched_parts_are_refused_by_name():
    z0, z1 = torch.zeros(2, 3), torch.ones(2, 3)
    basis = fastgeo.BSplineBasis(5)
    curves = fastgeo.Curves(z0, z1, torch.zeros(2, 5, 3), basis)
    assert torch.equal(curves.points(4)[:, -1], z1)
    with pytest.raises(ValueError, match=r"coeffs \(B, m, d\) with m = basis.m = 5"):
        fastgeo.Curves(z0, z1, torch.zeros(2, 4, 3), basis)
    with pytest.raises(ValueError, match=r"got z0 \(2, 3\), z1 \(3, 3\)"):
        fastgeo.Curves(z0, torch.ones(3, 3), torch.zeros(2, 5, 3), basis)
    with pytest.raises(TypeError, match="z1 has dtype torch.float64 but z0 has torch.float32"):
        fastgeo.Curves(z0, z1.double(), torch.zeros(2, 5, 3), basis)
    with pytest.raises(TypeError, match="basis must be a fastgeo BSplineBasis"):
        fastgeo.Curves(z0, z1, torch.zeros(2, 5, 3), 5)
    with pytest.raises(ValueError, match="coeffs must have 3 dimensions"):
        fastgeo.Curves(z0, z1, torch.zeros(5, 3), basis)
    with pytest.raises(TypeError, match="z0 must be a torch.Tensor"):
        fastgeo.Curves([0.0, 0.0, 0.0], z1, torch.zeros(2, 5, 3), basis)


def test_bases_check_their_size_and_times():
    """A basis took numpy integers nowhere else refused, and its values at an int, a 0-d or a 2-D
    t failed in torch.finfo, indexing, or returned (n, m, k) silently."""
    import numpy as np

    assert fastgeo.BSplineBasis(np.int64(5)).m == 5 and fastgeo.PolynomialBasis(np.int32(3)).m == 3
    assert fastgeo.PiecewiseLinearBasis(np.int64(6)).m == 4
    for make, small in (
        (fastgeo.BSplineBasis, 1),
        (fastgeo.PolynomialBasis, 0),
        (fastgeo.PiecewiseLinearBasis, 2),
    ):
        with pytest.raises(ValueError, match="must be an integer >="):
            make(small)
        with pytest.raises(TypeError, match="must be an integer"):
            make(2.5)
        basis = make(5)
        assert basis(torch.linspace(0, 1, 7)).shape == (7, basis.m)
        for t, error in (
            (torch.tensor([0, 1]), TypeError),
            (torch.tensor(0.5), ValueError),
            (torch.rand(2, 2), ValueError),
        ):
            with pytest.raises(error, match="t must"):
                basis(t)
