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
