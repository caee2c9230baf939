"""The solver's Gauss-Newton linearization (:mod:`fastgeo.solver.linearize`) against the oracle
:func:`fastgeo.reference.gauss_newton_system`: the embedding split into parts (features and
transposed Jacobians per part) gives the gradient and matrix of the concatenated features, in
float64 to 1e-12 relative and in float32 to float32 accuracy, on the edge shapes of
``test_gauss_newton`` (N = 2, d = 1, m = 1, F = 1, b = 0, many curves, realistic) and with one,
two and three parts; with ``own_extra`` the extra per-point term enters as
``sum_p psi_pj psi_pl S_p``."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, assert_f32_accuracy
from test_gauss_newton import SHAPE_IDS, SHAPES, make_system

from fastgeo.reference import gauss_newton_system as reference_gauss_newton_system
from fastgeo.solver.linearize import assemble, linearize, point_products


def split(f, jac, pieces):
    """The features cut into ``pieces`` parts along F (sizes as even as possible, none empty)."""
    F = f.shape[-1]
    bounds = torch.linspace(0, F, min(pieces, F) + 1).round().long().tolist()
    return [(f[..., lo:hi], jac[..., lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("pieces", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float64_equals_reference(shape, pieces):
    b, N, d, F, m = shape
    f, jac, psi = make_system(b, N, d, F, m)
    s, grad, hess = linearize(split(f, jac, pieces), psi)
    grad_ref, hess_ref = reference_gauss_newton_system(f, jac, psi)
    assert s.shape == (b, N - 1) and grad.shape == (b, m * d) and hess.shape == (b, m * d, m * d)
    assert_close_rel(s, (f[:, 1:] - f[:, :-1]).pow(2).sum(-1), 1e-12)
    assert_close_rel(grad, grad_ref, 1e-12)
    assert_close_rel(hess, hess_ref, 1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_accuracy(shape):
    b, N, d, F, m = shape
    f64, jac64, psi64 = make_system(b, N, d, F, m)
    f32, jac32, psi32 = (x.float() for x in (f64, jac64, psi64))
    _, grad, hess = linearize(split(f32, jac32, 2), psi32)
    grad_ref32, hess_ref32 = reference_gauss_newton_system(f32, jac32, psi32)
    grad64, hess64 = reference_gauss_newton_system(f64, jac64, psi64)
    assert_f32_accuracy(grad, grad_ref32, grad64)
    assert_f32_accuracy(hess, hess_ref32, hess64)


def test_own_extra_enters_per_point():
    b, N, d, F, m = 3, 9, 2, 5, 4
    f, jac, psi = make_system(b, N, d, F, m)
    _, v, G, C = point_products([(f, jac)])
    extra = torch.randn(b, N, d, d, dtype=torch.float64)
    _, hess = assemble(v, G, C, psi)
    _, hess_extra = assemble(v, G, C, psi, extra)
    want = torch.einsum("nj,nl,bnik->bjilk", psi, psi, extra).reshape(b, m * d, m * d)
    assert_close_rel(hess_extra - hess, want, 1e-12)
