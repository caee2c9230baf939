"""The solver's Gauss-Newton linearization (:mod:`fastgeo.solver.linearize`) against the oracle
:func:`fastgeo.reference.gauss_newton_system`: the embedding split into parts (features and
transposed Jacobians per part) gives the gradient and matrix of the concatenated features, in
float64 to 1e-12 relative and in float32 to float32 accuracy, on the edge shapes of
``test_gauss_newton`` (N = 2, d = 1, m = 1, F = 1, b = 0, many curves, realistic) and with one,
two and three parts; with ``own_extra`` the extra per-point term enters as
``sum_p psi_pj psi_pl S_p``. In a B-spline basis only the diagonals of blocks that are not zero are
summed: the same matrix as the reference and as the dense sums."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, assert_f32_accuracy
from test_gauss_newton import SHAPE_IDS, SHAPES, make_system

from fastgeo.curves import BSplineBasis, PolynomialBasis, time_grid
from fastgeo.reference import gauss_newton_system as reference_gauss_newton_system
from fastgeo.solver import linearize as linearize_module
from fastgeo.solver.linearize import (
    _block_diagonals,
    _dense_sums,
    assemble,
    linearize,
    point_products,
    point_weights,
    products_by_chunks,
)


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
    assert_float32_accuracy(*make_system(*shape))


def assert_float32_accuracy(f64, jac64, psi64):
    """float32 gradient and matrix (two parts) as accurate as the float32 reference."""
    f32, jac32, psi32 = (x.float() for x in (f64, jac64, psi64))
    _, grad, hess = linearize(split(f32, jac32, 2), psi32)
    grad_ref32, hess_ref32 = reference_gauss_newton_system(f32, jac32, psi32)
    grad64, hess64 = reference_gauss_newton_system(f64, jac64, psi64)
    assert_f32_accuracy(grad, grad_ref32, grad64)
    assert_f32_accuracy(hess, hess_ref32, hess64)


@pytest.mark.parametrize("basis", ["random", "bspline"])
def test_own_extra_enters_per_point(basis):
    b, N, d, F, m = (3, 9, 2, 5, 4) if basis == "random" else (2, 40, 3, 4, 10)
    f, jac, psi = make_system(b, N, d, F, m) if basis == "random" else bspline_system(b, N, d, F, m)
    _, v, G, C = point_products([(f, jac)])
    extra = torch.randn(b, N, d, d, dtype=torch.float64)
    _, hess = assemble(v, G, C, psi)
    _, hess_extra = assemble(v, G, C, psi, extra)
    want = torch.einsum("nj,nl,bnik->bjilk", psi, psi, extra).reshape(b, m * d, m * d)
    assert_close_rel(hess_extra - hess, want, 1e-12)


# B-spline bases: the matrix is summed diagonal of blocks by diagonal (index_add below
# DIAGONAL_ADD_MIN_DIM, strided diagonal views from it on); shapes (b, N, d, F, m).
BANDED = [(3, 48, 2, 5, 12), (2, 96, 3, 4, 24), (2, 24, 8, 6, 12), (1, 41, 9, 3, 10), (2, 96, 16, 7, 23)]


def bspline_system(b, N, d, F, m, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(b, N, F, generator=g, dtype=torch.float64).to(dtype)
    jac = torch.randn(b, N, d, F, generator=g, dtype=torch.float64).to(dtype)
    psi = BSplineBasis(m)(time_grid(N, torch.zeros(1, dtype=torch.float64))).to(dtype)
    return f, jac, psi


@pytest.mark.parametrize("shape", BANDED, ids=[str(s) for s in BANDED])
def test_bspline_band_equals_reference(shape):
    b, N, d, F, m = shape
    f, jac, psi = bspline_system(b, N, d, F, m)
    assert _block_diagonals(psi)[0] is not None, "a B-spline basis takes the band path"
    _, grad, hess = linearize(split(f, jac, 2), psi)
    grad_ref, hess_ref = reference_gauss_newton_system(f, jac, psi)
    assert_close_rel(grad, grad_ref, 1e-12)
    assert_close_rel(hess, hess_ref, 1e-12)
    # ... and the dense sums of every block give the same matrix
    _, v, G, C = point_products([(f, jac)])
    w = point_weights(N, psi)
    assert_close_rel(hess, _dense_sums(w[:, None, None] * G, C, psi), 1e-12)


@pytest.mark.parametrize("shape", BANDED[:3], ids=[str(s) for s in BANDED[:3]])
def test_bspline_band_float32_accuracy(shape):
    assert_float32_accuracy(*bspline_system(*shape))


def test_global_basis_sums_every_block():
    t = time_grid(32, torch.zeros(1, dtype=torch.float64))
    assert _block_diagonals(PolynomialBasis(6)(t)) == (None, None)
    assert _block_diagonals(BSplineBasis(4)(t)) == (None, None)  # 4 functions: every block shares a point


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 40 * 5 * 7 * 8, 1 << 40])
@pytest.mark.parametrize("b", [0, 1, 2, 7])
def test_products_by_chunks_equal_whole_batch(monkeypatch, chunk_bytes, b):
    """Chunks of 1, 3 and all curves (the first alone) give the whole batch's products, and each
    chunk sees its own curves' rows of ``idx``."""
    N, d, F = 40, 5, 7
    f, jac, _ = make_system(b, N, d, F, 3)
    parts = split(f, jac, 2)
    seen = []

    def parts_fn(points, idx):
        seen.append(idx.tolist())
        assert points.shape == (idx.numel(), N, d)
        return [(pf[idx], pj[idx]) for pf, pj in parts]

    monkeypatch.setattr(linearize_module, "CHUNK_BYTES", chunk_bytes)
    idx = torch.arange(b)
    chunked = products_by_chunks(parts_fn, torch.zeros(b, N, d, dtype=f.dtype), idx)
    whole = point_products(parts)
    for got, want in zip(chunked, whole, strict=True):
        assert got.shape == want.shape
        assert_close_rel(got, want, 1e-12)
    assert sum(seen, []) == list(range(b))
    if b == 0:  # one call, with no curves
        assert [len(x) for x in seen] == [0]
        return
    per_chunk = {1: 1, 3 * 40 * 5 * 7 * 8: 3, 1 << 40: b}[chunk_bytes]
    rest = [min(per_chunk, b - 1 - at) for at in range(0, b - 1, per_chunk)]
    assert [len(x) for x in seen] == [1, *rest]
