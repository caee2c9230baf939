"""The block-banded Levenberg-Marquardt step (plain Gauss-Newton in a B-spline basis, the lagged
mode at d >= 8): the C++ kernel ``torch.ops.fastgeo.banded_lm_propose`` and its reference against
the dense reference :func:`fastgeo.reference.lm_propose`.

float64: equal to ~1e-10 relative; float32: within 1e-4 of the float64 reference on well-conditioned
systems; a failed factorization gives a zero step, flagged, and leaves the other curves alone;
a curve's step is bit for bit the same alone and in a batch; ``opcheck``; the bandwidth read from
the basis covers every entry the linearization can fill; the solver's curves with the banded step
equal those with the dense one.
"""

from __future__ import annotations

import os

import pytest
import torch
from analytic import bumpy_metric
from helpers import assert_close_rel, require_cpu_kernels

import fastgeo
from fastgeo import reference
from fastgeo.curves import BSplineBasis, PiecewiseLinearBasis, PolynomialBasis, time_grid
from fastgeo.ops import registry, solver_ops
from fastgeo.ops.band import banded_matvec, block_bandwidth
from fastgeo.solver import levenberg_marquardt as lm
from fastgeo.solver import options
from fastgeo.solver.linearize import assemble


def kernel(*args):
    """The C++ kernel (the test fails where the extension should be built and is not)."""
    require_cpu_kernels()
    return torch.ops.fastgeo.banded_lm_propose(*args)


IMPLEMENTATIONS = [
    pytest.param(kernel, id="kernel"),
    pytest.param(reference.banded_lm_propose, id="reference"),
]


def _banded_system(b: int, m: int, d: int, N: int, seed: int = 0):
    """Gradient and Gauss-Newton matrix of random Jacobians through the B-spline grid, so the
    band is the one the solver sees; returns grad (b, m d), hess, lam (b,), band."""
    g = torch.Generator().manual_seed(seed)
    psi = BSplineBasis(m)(time_grid(N, torch.zeros(1, dtype=torch.float64)))
    J = torch.randn(b, N, d, d + 3, generator=g, dtype=torch.float64)
    G = J @ J.transpose(-1, -2)
    C = J[:, :-1] @ J[:, 1:].transpose(-1, -2)
    v = torch.randn(b, N, d, generator=g, dtype=torch.float64)
    grad, hess = assemble(v, G, C, psi)
    lam = 10.0 ** torch.linspace(-8, 0, b, dtype=torch.float64)
    return grad, hess, lam, block_bandwidth(psi)


@pytest.mark.parametrize("banded_lm_propose", IMPLEMENTATIONS)
@pytest.mark.parametrize(
    "b,m,d,N",
    [(4, 16, 5, 64), (3, 11, 1, 24), (2, 13, 7, 40), (1, 9, 3, 17), (2, 10, 33, 40), (1, 6, 64, 24)],
)
def test_banded_step_matches_the_dense_reference_float64(banded_lm_propose, b, m, d, N):
    grad, hess, lam, band = _banded_system(b, m, d, N)
    want = reference.lm_propose(grad, hess, torch.zeros_like(hess), lam, N - 1)
    # Entries outside the band are not read (NaN there changes nothing).
    outside = (torch.arange(m * d)[:, None] // d - torch.arange(m * d)[None] // d).abs() > band
    got = banded_lm_propose(grad, hess.masked_fill(outside, torch.nan), lam, N - 1, d, band)
    assert torch.equal(got[2], want[2]) and bool(got[2].all())
    assert_close_rel(got[0], want[0], 1e-10)
    assert_close_rel(got[1], want[1], 1e-10)


@pytest.mark.parametrize("banded_lm_propose", IMPLEMENTATIONS)
def test_banded_step_float32_is_within_tolerance_of_float64(banded_lm_propose):
    grad, hess, lam, band = _banded_system(4, 16, 6, 64, seed=1)
    lam = lam.clamp(min=1e-3)  # conditioning a float32 solve can carry to 1e-4
    want = reference.lm_propose(grad, hess, torch.zeros_like(hess), lam, 63)
    got = banded_lm_propose(grad.float(), hess.float(), lam.float(), 63, 6, band)
    assert_close_rel(got[0].double(), want[0], 1e-4)
    assert_close_rel(got[1].double(), want[1], 1e-4)


@pytest.mark.parametrize("banded_lm_propose", IMPLEMENTATIONS)
@pytest.mark.parametrize("d", [4, 40])  # register tiles, and GEMMs from d = 32
def test_a_failed_factorization_gives_a_zero_step_and_spares_the_others(banded_lm_propose, d):
    grad, hess, lam, band = _banded_system(3, 12, d, 48, seed=2)
    at = 5 * d + 3  # a row in the middle block, beyond the first panel of a GEMM-factored block
    hess[1, at, :] = hess[1, :, at] = 0.0
    hess[1, at, at] = -1.0  # indefinite
    lam[1] = 0.0
    step, predicted, solved = banded_lm_propose(grad, hess, lam, 47, d, band)
    assert solved.tolist() == [True, False, True]
    assert bool((step[1] == 0).all()) and float(predicted[1]) == 0.0
    want = reference.lm_propose(grad, hess, torch.zeros_like(hess), lam, 47)
    assert_close_rel(step[[0, 2]], want[0][[0, 2]], 1e-10)


def test_block_bandwidth_bounds_the_assembled_matrix():
    """Every block the linearization fills lies within the band read from the basis, and the band
    is no wider than needed (cubic B-splines: basis functions 4 apart meet across a segment)."""
    for m, N in ((16, 64), (12, 24), (24, 96)):
        grad, hess, _, band = _banded_system(1, m, 2, N, seed=m)
        blocks = hess.reshape(m, 2, m, 2).abs().sum((1, 3))
        j = torch.arange(m)
        reach = (j[:, None] - j[None, :]).abs()
        assert float(blocks[reach > band].abs().max()) == 0.0
        assert float(blocks[reach == band].abs().max()) > 0.0
        assert band == 4
    legendre = PolynomialBasis(8)(time_grid(32, torch.zeros(1)))
    assert block_bandwidth(legendre) == 7  # global support: the whole matrix


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_polylines_have_their_true_band(dtype):
    """The dense oracle's hats sampled on a grid through their nodes (and on the grid with every
    segment halved) are exactly zero where a neighbour's hat ends: band 1, as the polyline's
    block-tridiagonal system has (rounding once left ~1e-16 there: band 3 and 2). A coarser grid
    really couples hats two apart."""
    basis = PiecewiseLinearBasis(128)
    like = torch.zeros(1, dtype=dtype)
    for n, band in ((128, 1), (255, 1), (64, 3)):
        psi = basis(time_grid(n, like))
        assert block_bandwidth(psi) == band, n
        assert bool(((psi == 0) | (psi > 1e-3)).all())
    at_nodes = basis(time_grid(128, like))
    assert torch.equal(at_nodes[1:-1], torch.eye(126, dtype=dtype))


def test_the_dispatcher_takes_the_banded_path_only_where_it_pays(monkeypatch):
    calls = _spy_banded_steps(monkeypatch, lambda args: args[-2:])
    grad, hess, lam, band = _banded_system(2, 24, 8, 96)  # p = 192
    zero = torch.zeros_like(hess)
    solver_ops.lm_propose(grad, hess, zero, lam, 63, (8, band))
    solver_ops.lm_propose(grad, hess, zero, lam, 63, None)  # secant model in use
    solver_ops.lm_propose(grad, hess, zero, lam, 63, (8, 12))  # 2 * 12 + 1 >= 24 blocks: all of it
    small = _banded_system(2, 7, 8, 28)  # p = 56: the dense C++ kernel
    solver_ops.lm_propose(small[0], small[1], torch.zeros_like(small[1]), small[2], 27, (8, 2))
    narrow = _banded_system(2, 23, 3, 92)  # p = 69 in blocks of 3: banded too (10x faster than dense)
    solver_ops.lm_propose(narrow[0], narrow[1], torch.zeros_like(narrow[1]), narrow[2], 91, (3, band))
    assert calls == [(8, band), (3, band)]
    with fastgeo.use_backend("reference"):  # the oracle's banded step is the masked dense reference
        got = solver_ops.lm_propose(grad, hess, zero, lam, 63, (8, band))
    want = reference.lm_propose(grad, hess, zero, lam, 63)
    assert_close_rel(got[0], want[0], 1e-10)


@pytest.mark.parametrize("b,m,d,N", [(3, 16, 5, 64), (2, 11, 1, 24), (1, 9, 3, 17), (2, 5, 4, 20)])
def test_banded_product_equals_the_full_one(b, m, d, N):
    """H x from the band alone equals the full product (the band as wide as the matrix included,
    m = 5); entries outside the band are not read."""
    grad, hess, _, band = _banded_system(b, m, d, N, seed=m)
    x = torch.randn(b, m * d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = (hess * x[:, None, :]).sum(-1)
    got = banded_matvec(hess, x, d, band)
    assert_close_rel(got, want, 1e-12)
    if 2 * band + 1 < m:
        outside = (torch.arange(m * d)[:, None] // d - torch.arange(m * d)[None] // d).abs() > band
        assert_close_rel(banded_matvec(hess.masked_fill(outside, torch.nan), x, d, band), want, 1e-12)


def test_blocks_must_divide_the_unknowns():
    grad, hess, lam, band = _banded_system(1, 9, 4, 36)
    with pytest.raises(ValueError, match="block"):
        reference.banded_lm_propose(grad[:, :34], hess[:, :34, :34], lam, 35, 4, band)
    with pytest.raises(ValueError, match="block must divide"):
        kernel(grad[:, :34], hess[:, :34, :34], lam, 35, 4, band)
    with pytest.raises(ValueError, match="hess must be"):
        kernel(grad, hess[:, :35], lam, 35, 4, band)
    with pytest.raises(TypeError, match="dtype"):
        kernel(grad, hess.float(), lam, 35, 4, band)


@pytest.mark.parametrize("d", [5, 32])  # register tiles, GEMMs
def test_banded_lm_propose_opcheck(d):
    """torch.library.opcheck of banded_lm_propose (and its empty batch)."""
    require_cpu_kernels()
    grad, hess, lam, band = _banded_system(3, 12, d, 48)
    torch.library.opcheck(torch.ops.fastgeo.banded_lm_propose, (grad, hess, lam, 47, d, band))
    step, predicted, solved = kernel(grad[:0], hess[:0], lam[:0], 47, d, band)
    assert step.shape == (0, 12 * d) and predicted.shape == (0,) and solved.shape == (0,)


@pytest.mark.parametrize("d", [9, 40])
def test_a_non_finite_system_is_flagged_not_leaked(d):
    """NaN inside the band of one curve, inf in another's gradient: zero steps, solved False; the
    others as the reference's."""
    grad, hess, lam, band = _banded_system(3, 12, d, 48, seed=4)
    hess[0, 3 * d + 30, 3 * d + 31] = hess[0, 3 * d + 31, 3 * d + 30] = torch.nan
    grad[2, 5] = torch.inf
    step, predicted, solved = kernel(grad, hess, lam, 47, d, band)
    assert solved.tolist() == [False, True, False]
    assert bool((step[[0, 2]] == 0).all()) and bool(torch.isfinite(step).all())
    want = reference.lm_propose(grad[1:2], hess[1:2], torch.zeros_like(hess[1:2]), lam[1:2], 47)
    assert_close_rel(step[1:2], want[0], 1e-10)


def _spy_banded_steps(monkeypatch, record) -> list:
    """The solver's banded steps (calls of the op banded_lm_propose through the registry), each
    recorded as ``record(args)`` (the op's arguments) in the list returned."""
    calls = []
    original = registry.call

    def spy(op, device, *args, **kwargs):
        if op == "banded_lm_propose":
            calls.append(record(args))
        return original(op, device, *args, **kwargs)

    monkeypatch.setattr(registry, "call", spy)
    return calls


def test_the_solvers_curves_do_not_change_with_the_banded_step(monkeypatch):
    """Lagged mode at d = 8 with 24 basis functions (p = 192): the banded step and the dense one
    give the same curves (to float64 rounding over the iterations: the two round differently at
    every step, and curves stop where a step changes the energy by less than 1e-10, so along a
    flat valley their lengths part by up to ~1e-8 relative)."""
    d = 8
    metric = bumpy_metric(d=d, D=12, K=7)
    g = torch.Generator().manual_seed(1)
    z0, z1 = (torch.randn(3, d, generator=g, dtype=torch.float64) for _ in range(2))
    calls = _spy_banded_steps(monkeypatch, lambda args: args[-2:])
    opts = {"linearize": "lagged", "m": 24, "n_points": 96, "subdivide": False, "progress": False}
    with torch.no_grad():
        banded = fastgeo.geodesics(metric, z0, z1, **opts)
        assert calls, "the banded step was taken"
        # A band as wide as the matrix: the dispatcher solves it densely.
        monkeypatch.setattr(lm, "block_bandwidth", lambda psi: psi.shape[1])
        calls.clear()
        dense = fastgeo.geodesics(metric, z0, z1, **opts)
        assert not calls
    assert banded.options["secant"] is False
    assert list(banded.status) == list(dense.status)
    assert_close_rel(banded.lengths, dense.lengths, 2e-8)


@pytest.mark.parametrize("d", [5, 8, 9, 17, 32, 33, 64])
def test_a_curves_step_does_not_depend_on_its_batch(d):
    """Bit for bit alone and in a batch (odd blocks, and two threads where there are two: set
    here, since the test workers run one thread each)."""
    grad, hess, lam, band = _banded_system(5, 16, d, 64, seed=d)
    grad, hess, lam = grad.float(), hess.float(), lam.float().clamp(min=1e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        step, predicted, _ = kernel(grad, hess, lam, 63, d, band)
        for k in range(5):
            alone = kernel(grad[k : k + 1], hess[k : k + 1], lam[k : k + 1], 63, d, band)
            assert torch.equal(alone[0][0], step[k]) and torch.equal(alone[1][0], predicted[k]), k
    finally:
        torch.set_num_threads(threads)


def test_the_dense_oracle_takes_banded_steps_from_d_8(monkeypatch):
    """method="dense" at d >= 8: plain Gauss-Newton steps on the polylines' block-tridiagonal
    systems (banded), the same lengths as with the secant model (dense systems) to 1e-5 (plain
    Gauss-Newton stops a few 1e-6 longer on one of these pairs: its last steps are short); at
    d < 8 the secant model stays."""
    d = 8
    metric = bumpy_metric(d=d, D=12, K=7)
    g = torch.Generator().manual_seed(2)
    z0, z1 = (torch.randn(2, d, generator=g, dtype=torch.float64) for _ in range(2))
    calls = _spy_banded_steps(monkeypatch, lambda args: (args[0].shape[-1], args[-2]))  # (unknowns, block)
    with torch.no_grad():
        # 48-node polylines of this bumpy metric grow by more than 1 % at their midpoints (flagged
        # under_resolved); the steps, not the resolution, are compared here (and not the starts:
        # no latent graph).
        opts = {"method": "dense", "n_points": 48, "check_resolution": False, "graph": False}
        opts["progress"] = False
        banded = fastgeo.geodesics(metric, z0, z1, **opts)
        assert banded.options["secant"] is False
        assert (46 * d, d) in calls, "the polylines' steps (46 free nodes) were banded, blocks of d"
        monkeypatch.setattr(options, "LAGGED_MIN_DIM", 9)  # the secant model at d = 8 as before
        secant = fastgeo.geodesics(metric, z0, z1, **opts)
        assert secant.options["secant"] is True
    assert list(banded.status) == list(secant.status) == ["converged"] * 2
    assert_close_rel(banded.lengths, secant.lengths, 1e-5)
    small = fastgeo.geodesics(bumpy_metric(d=2), z0[:, :2], z1[:, :2], method="dense", n_points=16)
    assert small.options["secant"] is True


@pytest.mark.parametrize("banded_lm_propose", IMPLEMENTATIONS)
def test_a_band_wider_than_the_matrix_is_the_full_matrix(banded_lm_propose):
    """band = 2**63 - 1 overflowed the kernel's index arithmetic (another step, no error)."""
    grad, hess, lam, _ = _banded_system(2, 9, 3, 17)
    want = banded_lm_propose(grad, hess, lam, 16, 3, 8)
    got = banded_lm_propose(grad, hess, lam, 16, 3, 2**63 - 1)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
