"""The Gauss-Newton system of the curve energy (``fastgeo.gauss_newton``).

``gauss_newton_system`` runs the C++ op ``torch.ops.fastgeo.gauss_newton_system`` on CPU tensors;
``reference_gauss_newton_system`` (plain PyTorch) is its oracle. Checked:

- C++ op == reference: float64 to 1e-12 relative (of the largest entry), float32 against the
  float64 reference at least as accurate as the float32 reference within a factor 4 (plus a
  floor of 1e-6 of the largest entry, see ``helpers.assert_f32_accuracy``), on edge shapes (N = 2, d = 1,
  m = 1, F = 1, b = 0, many curves) and a realistic one, with random psi (non-zero at the end
  points, so the end-point terms count) and with the solver's polynomial basis;
- ``grad_only`` gives the same gradient and an empty (0,) matrix; non-contiguous and expanded
  inputs; the matrix is exactly symmetric;
- an independent oracle: autograd of ``sum_n ||f(c_{n+1}) - f(c_n)||^2 / 2`` in the curve
  coefficients (gradient; for a linear f the Gauss-Newton matrix is the exact Hessian, for a
  nonlinear f it is ``J_r^T J_r`` of the residuals);
- ``torch.library.opcheck``; bad arguments raise ValueError (shapes) or TypeError (dtypes) naming
  the argument; backend selection (``use_backend("reference")`` gives the reference bit for bit).
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, assert_f32_accuracy, randn, require_cpu_kernels

import fastgeo
from fastgeo.ops import registry
from fastgeo.ops.solver_ops import gauss_newton_system
from fastgeo.reference import gauss_newton_system as reference_gauss_newton_system

require_cpu_kernels()

op = torch.ops.fastgeo.gauss_newton_system

# (b, N, d, F, m): a generic case, the edge cases, many curves (spread over threads), realistic.
SHAPES = [
    (3, 7, 2, 5, 4),
    (3, 2, 2, 5, 4),
    (3, 7, 1, 5, 4),
    (3, 7, 2, 5, 1),
    (3, 7, 2, 1, 4),
    (0, 7, 2, 5, 4),
    (37, 9, 3, 10, 3),
    (4, 48, 2, 128, 12),
]
SHAPE_IDS = ["generic", "N=2", "d=1", "m=1", "F=1", "b=0", "many_curves", "realistic"]


def make_system(b, N, d, F, m, dtype=torch.float64, psi_kind="random", seed=0):
    """f (b, N, F), jac (b, N, d, F), psi (N, m): drawn in float64, then cast. ``psi_kind``
    "random" is non-zero at the end points, "basis" is fastgeo.PolynomialBasis(m) (zero there)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(b, N, F, generator=g, dtype=torch.float64)
    jac = torch.randn(b, N, d, F, generator=g, dtype=torch.float64)
    if psi_kind == "random":
        psi = torch.randn(N, m, generator=g, dtype=torch.float64)
    else:
        psi = fastgeo.PolynomialBasis(m)(torch.linspace(0, 1, N, dtype=torch.float64))
    return f.to(dtype), jac.to(dtype), psi.to(dtype)


# ----------------------------------------------------------------------------- op == reference


@pytest.mark.parametrize("psi_kind", ["random", "basis"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float64_equals_reference(shape, psi_kind):
    """Gradient (b, m d) and matrix (b, m d, m d) equal the reference to 1e-12 relative; the
    matrix is exactly symmetric; grad_only: the same gradient bit for bit and a (0,) matrix."""
    b, N, d, F, m = shape
    f, jac, psi = make_system(b, N, d, F, m, psi_kind=psi_kind)
    grad, hess = op(f, jac, psi, False)
    grad_ref, hess_ref = reference_gauss_newton_system(f, jac, psi)
    assert grad.shape == (b, m * d) and hess.shape == (b, m * d, m * d)
    assert_close_rel(grad, grad_ref, 1e-12)
    assert_close_rel(hess, hess_ref, 1e-12)
    assert torch.equal(hess, hess.transpose(1, 2))
    g_only, h_only = op(f, jac, psi, True)
    assert torch.equal(g_only, grad)
    assert h_only.shape == (0,) and h_only.dtype == torch.float64
    g_ref_only, h_ref_only = reference_gauss_newton_system(f, jac, psi, grad_only=True)
    assert torch.equal(g_ref_only, grad_ref) and h_ref_only.shape == (0,)
    if b and N > 2 and psi_kind == "random":  # a non-trivial system: the test can fail
        assert float(grad_ref.abs().max()) > 1e-3 and float(hess_ref.abs().max()) > 1e-3


@pytest.mark.parametrize("psi_kind", ["random", "basis"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_against_float64_reference(shape, psi_kind):
    """float32 kernel vs the float64 reference, as accurate as the float32 reference (factor 4)."""
    b, N, d, F, m = shape
    inputs32 = make_system(b, N, d, F, m, dtype=torch.float32, psi_kind=psi_kind)
    inputs64 = [t.double() for t in inputs32]
    grad, hess = op(*inputs32, False)
    grad32, hess32 = reference_gauss_newton_system(*inputs32)
    grad64, hess64 = reference_gauss_newton_system(*inputs64)
    assert_f32_accuracy(grad, grad32, grad64)
    assert_f32_accuracy(hess, hess32, hess64)
    g_only, h_only = op(*inputs32, True)
    assert torch.equal(g_only, grad) and h_only.shape == (0,) and h_only.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noncontiguous_and_expanded_inputs(dtype):
    """Strided feature columns, transposed Jacobian strides, a transposed psi and an expanded
    (stride-0) batch give the result of the contiguous copies."""
    b, N, d, F, m = 3, 6, 2, 5, 3
    f, jac, psi = make_system(b, N, d, 2 * F, m, dtype=dtype)
    cases = [
        (f[:, :, ::2], jac[..., ::2], psi),  # every other feature
        (f[..., :F], jac[..., :F].transpose(-1, -2).contiguous().transpose(-1, -2), psi.t().contiguous().t()),
        (f[:1, :, :F].expand(b, N, F), jac[:1, ..., :F].expand(b, N, d, F), psi),
        (f[:, 1:][:, ::1, :F], jac[:, 1:, :, :F], psi[1:]),  # storage offset
    ]
    for fi, ji, pi in cases:
        assert not (fi.is_contiguous() and ji.is_contiguous() and pi.is_contiguous())
        grad, hess = op(fi, ji, pi, False)
        grad_c, hess_c = op(fi.contiguous(), ji.contiguous(), pi.contiguous(), False)
        torch.testing.assert_close(grad, grad_c, rtol=0, atol=0)
        torch.testing.assert_close(hess, hess_c, rtol=0, atol=0)
        grad_ref, hess_ref = reference_gauss_newton_system(fi, ji, pi)
        rtol = 1e-5 if dtype == torch.float32 else 1e-12
        assert_close_rel(grad, grad_ref, rtol)
        assert_close_rel(hess, hess_ref, rtol)


# ----------------------------------------------------------------------------- independent oracle


def _curve_energy_setup(features, B=2, N=9, d=2, m=3, seed=3):
    """E(a) = sum_b sum_n ||features(c_{b,n+1}) - features(c_{b,n})||^2 / 2 for curves
    c_b(t) = z0_b + t (z1_b - z0_b) + sum_j a_{b,j} psi_j(t), a (B, m, d), float64."""
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(B, d, generator=g, dtype=torch.float64)
    z1 = torch.randn(B, d, generator=g, dtype=torch.float64)
    a = 0.5 * torch.randn(B, m, d, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, N, dtype=torch.float64)
    psi = fastgeo.PolynomialBasis(m)(t)

    def curve(coeffs):
        line = z0[:, None, :] + t[None, :, None] * (z1 - z0)[:, None, :]
        return line + torch.einsum("nj,bjd->bnd", psi, coeffs)

    def residuals(coeffs):
        x = features(curve(coeffs))
        return x[:, 1:] - x[:, :-1]  # (B, N-1, F)

    def energy(coeffs):
        return 0.5 * (residuals(coeffs) ** 2).sum()

    return a, psi, curve, residuals, energy


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_linear_features_exact_hessian(backend):
    """f(c) = A c (F x d): features f_n = A c_n, jac_n = A^T. The gradient equals autograd's and
    the Gauss-Newton matrix the exact Hessian (torch.autograd.functional.hessian), 1e-12
    relative; coefficients ordered (j, i) -> j d + i. Both the C++ op and the reference."""
    B, d, m, F = 2, 2, 3, 4
    A = randn(F, d, seed=5)
    a, psi, curve, _, energy = _curve_energy_setup(lambda c: c @ A.T, B=B, d=d, m=m)
    N = psi.shape[0]
    f = curve(a) @ A.T
    jac = A.T.expand(B, N, d, F)
    with fastgeo.use_backend(backend):
        grad, hess = gauss_newton_system(f, jac, psi)
    a_req = a.clone().requires_grad_(True)
    (grad_ad,) = torch.autograd.grad(energy(a_req), a_req)
    H = torch.autograd.functional.hessian(energy, a, vectorize=True).reshape(B, m * d, B, m * d)
    assert_close_rel(grad, grad_ad.reshape(B, m * d), 1e-12)
    for k in range(B):
        assert_close_rel(hess[k], H[k, :, k], 1e-12)
        for other in range(B):  # curves are independent: no cross-curve blocks
            if other != k:
                assert float(H[k, :, other].abs().max()) == 0.0
    assert float(grad.abs().max()) > 1e-2  # not at a stationary point: the test can fail


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_nonlinear_features_gradient_and_jr_t_jr(backend):
    """f(c) = tanh(c W^T + b): the gradient is exact for any f (autograd), the Gauss-Newton
    matrix is J_r^T J_r with J_r the Jacobian of the residuals in the coefficients (1e-12), not
    the Hessian. Both the C++ op and the reference."""
    B, d, m, F = 2, 2, 3, 5
    g = torch.Generator().manual_seed(6)
    W = torch.randn(F, d, generator=g, dtype=torch.float64)
    bias = torch.randn(F, generator=g, dtype=torch.float64)

    def features(c):
        return torch.tanh(c @ W.T + bias)

    a, psi, curve, residuals, energy = _curve_energy_setup(features, B=B, d=d, m=m)
    N = psi.shape[0]
    c = curve(a).reshape(-1, d)
    Jf = torch.autograd.functional.jacobian(lambda x: features(x).sum(0), c, vectorize=True)  # (F, B N, d)
    jac = Jf.permute(1, 2, 0).reshape(B, N, d, F)  # transposed Jacobians J_n (d x F)
    f = features(curve(a))
    with fastgeo.use_backend(backend):
        grad, hess = gauss_newton_system(f, jac, psi)
    a_req = a.clone().requires_grad_(True)
    (grad_ad,) = torch.autograd.grad(energy(a_req), a_req)
    assert_close_rel(grad, grad_ad.reshape(B, m * d), 1e-12)
    Jr = torch.autograd.functional.jacobian(residuals, a, vectorize=True)  # (B, N-1, F, B, m, d)
    for k in range(B):
        Jk = Jr[k, :, :, k].reshape(-1, m * d)
        assert_close_rel(hess[k], Jk.T @ Jk, 1e-12)
    H = torch.autograd.functional.hessian(energy, a, vectorize=True).reshape(B, m * d, B, m * d)
    assert float((hess[0] - H[0, :, 0]).abs().max()) > 1e-6  # not the Hessian: the oracles differ


# ----------------------------------------------------------------------------- opcheck, errors


def _opcheck_cases():
    return [
        ("generic", make_system(3, 7, 2, 5, 4), False),
        ("generic_grad_only", make_system(3, 7, 2, 5, 4), True),
        ("float32", make_system(2, 5, 3, 4, 2, dtype=torch.float32), False),
        ("b=0", make_system(0, 5, 2, 4, 2), False),
        ("N=2_grad_only", make_system(2, 2, 1, 3, 1), True),
    ]


@pytest.mark.parametrize("inputs,grad_only", [c[1:] for c in _opcheck_cases()],
                         ids=[c[0] for c in _opcheck_cases()])  # fmt: skip
def test_opcheck(inputs, grad_only):
    """Schema, fake (meta) kernel, autograd registration and AOT dispatch of the op."""
    torch.library.opcheck(op.default, (*inputs, grad_only))


def test_bad_arguments_raise_naming_the_argument():
    """Inconsistent shapes (b, N, F, m) and N < 2 raise a ValueError, mixed and integer dtypes a
    TypeError, naming the argument."""
    f, jac, psi = make_system(2, 5, 2, 4, 3)
    bad = [
        ((f[0], jac, psi), r"\bf must be \(B, N, F\)"),
        ((f, jac[0], psi), r"\bjac must be \(B, N, d, F\)"),
        ((f, jac[:, 1:], psi), r"\bjac must be"),  # N differs
        ((f, jac[:1], psi), r"\bjac must be"),  # b differs
        ((f, jac[..., 1:], psi), r"\bjac must be"),  # F differs
        ((f, jac, psi[1:]), r"\bpsi must be \(N, m\) with N = 5"),
        ((f, jac, psi[:, 0]), r"\bpsi must be"),
        ((f[:, :1], jac[:, :1], psi[:1]), r"N >= 2"),
        ((f, jac.float(), psi), r"dtype"),
        ((f, jac, psi.float()), r"dtype"),
        ((f.int(), jac.int(), psi.int()), r"\bf must be float32 or float64"),
    ]
    for args, pattern in bad:
        error = TypeError if "dtype" in pattern or "float32" in pattern else ValueError
        with pytest.raises(error, match=pattern):
            op(*args, False)


# ----------------------------------------------------------------------------- dispatch


def test_backend_selection():
    """Backends "auto" and "cpu" resolve the op to the C++ kernel on CPU tensors; "reference" to
    the reference, whose result it returns bit for bit."""
    f, jac, psi = make_system(3, 7, 2, 5, 4)
    expected = reference_gauss_newton_system(f, jac, psi)
    with fastgeo.use_backend("reference"):
        got = gauss_newton_system(f, jac, psi)
        got_g = gauss_newton_system(f, jac, psi, grad_only=True)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert torch.equal(got_g[0], expected[0]) and got_g[1].shape == (0,)
    for name, want in (("auto", "cpu"), ("cpu", "cpu"), ("reference", "reference")):
        with fastgeo.use_backend(name):
            assert registry.resolve("gauss_newton_system", f.device)[0] == want, name
            grad, hess = gauss_newton_system(f, jac, psi)
        assert_close_rel(grad, expected[0], 1e-12)
        assert_close_rel(hess, expected[1], 1e-12)
