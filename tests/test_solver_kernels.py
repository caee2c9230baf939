"""The solver's C++ kernels for the Levenberg-Marquardt iteration (``lm_propose``, ``lm_update``)
and for sigma with its Jacobian (``rbf_sigma_jacobian``), against their PyTorch references.

float64: equal to the reference to ~1e-10 relative, decisions (accept / status / ok / solved)
identical; float32: within stated tolerances of the float64 reference. ``opcheck`` on each op;
shapes include p = 1, an empty batch, failed factorizations, NaN trial energies and
non-contiguous inputs. The solver's results with the kernels equal those with the references.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close_rel, randn, rbf_params, require_cpu_kernels

import fastgeo
from fastgeo import reference

require_cpu_kernels()

ops = torch.ops.fastgeo
UPDATE_NAMES = ("accept", "status", "ok", "e", "length", "grad", "hess", "curv", "lam", "nu")


def _system(b: int, p: int, dtype: torch.dtype, seed: int = 0):
    """A batch of LM states: SPD Gauss-Newton matrices, small symmetric secant models."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    a = r(b, p, p)
    hess = a @ a.transpose(1, 2) / p + 0.1 * torch.eye(p, dtype=torch.float64)
    c = 0.005 * r(b, p, p)
    curv = c + c.transpose(1, 2)
    grad = r(b, p)
    lam = torch.rand(b, generator=g, dtype=torch.float64) * 1e-2
    return [x.to(dtype) for x in (grad, hess, curv, lam)]


def _update_args(b: int, p: int, dtype: torch.dtype, seed: int = 0):
    grad, hess, curv, lam = _system(b, p, torch.float64, seed)
    step, predicted, solved = reference.lm_propose(grad, hess, curv, lam, 23)
    g = torch.Generator().manual_seed(seed + 1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    e = 1 + torch.rand(b, generator=g, dtype=torch.float64)
    length = 1 + torch.rand(b, generator=g, dtype=torch.float64)
    # Trial energies: better, worse, barely better (settles), no change, NaN, ...
    pattern = torch.tensor([-0.1, 0.1, -1e-6, 0.0, float("nan"), -0.3], dtype=torch.float64)
    e_new = e + pattern.repeat(b // pattern.numel() + 1)[:b]
    l_new = length * (1 + 1e-3 * r(b))
    a = r(b, p, p)
    h_new = a @ a.transpose(1, 2) / p
    g_new, g_old = r(b, p), r(b, p)
    nu = torch.full((b,), 2.0, dtype=torch.float64)
    args = (e, length, e_new, l_new, grad, g_new, g_old, hess, h_new, curv, step, predicted, solved, lam, nu)
    return [x.to(dtype) if x.is_floating_point() else x for x in args]


@pytest.mark.parametrize("b,p", [(7, 24), (3, 1), (0, 4), (40, 12)], ids=["generic", "p=1", "B=0", "B=40"])
def test_lm_propose_matches_reference_float64(b, p):
    """lm_propose == reference in float64 (1e-10): steps, predicted decreases, solved flags; a
    failed factorization gives a zero step, flagged; p = 1 and B = 0 included."""
    grad, hess, curv, lam = _system(b, p, torch.float64)
    if b:
        lam[0] = -1e3  # an indefinite system: the factorization fails, a zero step
    got = ops.lm_propose(grad, hess, curv, lam, 47)
    want = reference.lm_propose(grad, hess, curv, lam, 47)
    assert torch.equal(got[2], want[2])
    if b:
        assert not bool(got[2][0]) and bool(got[2][1:].any())
        assert torch.equal(got[0][0], torch.zeros(p, dtype=torch.float64))
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-12)


def test_lm_propose_solves_the_damped_system():
    """Independent of the reference: (H + S + lam diag(scale)) step = -g where solved."""
    grad, hess, curv, lam = _system(5, 8, torch.float64, seed=3)
    step, predicted, solved = ops.lm_propose(grad, hess, curv, lam, 10)
    assert bool(solved.all())
    diag = torch.diagonal(hess, dim1=-2, dim2=-1)
    system = hess + curv + torch.diag_embed(lam[:, None] * (diag + 1e-12 * diag.amax(-1, keepdim=True)))
    torch.testing.assert_close(system @ step[..., None], -grad[..., None], rtol=1e-9, atol=1e-10)
    model = (grad * step).sum(-1) + 0.5 * (step * ((hess + curv) @ step[..., None])[..., 0]).sum(-1)
    torch.testing.assert_close(predicted, -10 * model)


def test_lm_propose_float32_and_non_contiguous():
    """float32: the same decisions as the float64 reference and steps within 1e-3; strided
    views of grad and lam and a transposed-strides hess give the contiguous inputs' result."""
    grad, hess, curv, lam = _system(6, 10, torch.float64, seed=5)
    want = reference.lm_propose(grad, hess, curv, lam, 47)
    g32, h32, c32, l32 = (x.float() for x in (grad, hess, curv, lam))
    got = ops.lm_propose(g32, h32, c32, l32, 47)
    assert torch.equal(got[2], want[2])
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-3, atol=1e-4)
    grad_nc = torch.stack([g32, -g32], -1)[..., 0]  # stride 2 over p
    lam_nc = torch.stack([l32, -l32], -1)[:, 0]  # stride 2
    h_nc = h32.transpose(1, 2).contiguous().transpose(1, 2)  # symmetric: same values, other strides
    assert not (grad_nc.is_contiguous() or lam_nc.is_contiguous() or h_nc.is_contiguous())
    got_nc = ops.lm_propose(grad_nc, h_nc, c32, lam_nc, 47)
    assert torch.equal(got_nc[2], got[2])
    torch.testing.assert_close(got_nc[0], got[0])
    torch.testing.assert_close(got_nc[1], got[1])


@pytest.mark.parametrize("b,p", [(12, 24), (6, 1), (0, 3)], ids=["generic", "p=1", "B=0"])
def test_lm_update_matches_reference_float64(b, p):
    """lm_update == reference in float64: identical decisions, states to 1e-10; both branches taken,
    a NaN trial energy rejected."""
    args = _update_args(b, p, torch.float64)
    got = ops.lm_update(*args, 1e-5, 30.0)
    want = reference.lm_update(*args, 1e-5, 30.0)
    _assert_same_update(got, want, rel=1e-10)
    if b:
        accept = got[0]
        assert bool(accept.any()) and bool((~accept).any())  # both branches exercised
        assert not bool(accept[4])  # a NaN trial energy is rejected


def test_lm_update_float32():
    """float32 lm_update: the float64 reference's decisions, states within 1e-4."""
    args64 = _update_args(12, 24, torch.float64, seed=2)
    args32 = [x.float() if x.is_floating_point() else x for x in args64]
    got = ops.lm_update(*args32, 1e-5, 30.0)
    want = reference.lm_update(*args64, 1e-5, 30.0)
    _assert_same_update(got, want, rel=1e-4)


def _assert_same_update(got, want, rel: float) -> None:
    """Identical decisions; states within ``rel`` of the largest entry (at least 1)."""
    for name, x, y in zip(UPDATE_NAMES, got, want, strict=True):
        if x.dtype == torch.bool:
            assert torch.equal(x, y), name
        else:
            assert x.shape == y.shape, name
            if y.numel():
                scale = y.abs().amax().clamp(min=1)
                assert float((x.double() - y.double()).abs().amax() / scale) <= rel, name


def test_lm_update_secant_condition():
    """Where the secant update applies, the new model satisfies S step = y_sharp (DGW)."""
    args = _update_args(6, 5, torch.float64, seed=4)
    e, _, e_new, _, grad, g_new, g_old, _, _, curv, step = args[:11]
    e_new.copy_(e - 0.1)  # all accepted
    g_new.copy_(grad + step * 3.0)  # y = 3 step: y . step > 0, the update is not skipped
    accept, *_, new_curv, _, _ = ops.lm_update(*args, 1e-5, 30.0)
    assert bool(accept.all())
    y_sharp = g_new - g_old
    torch.testing.assert_close((new_curv @ step[..., None])[..., 0], y_sharp, rtol=1e-8, atol=1e-10)


def test_lm_ops_opcheck():
    """torch.library.opcheck of lm_propose and lm_update."""
    grad, hess, curv, lam = _system(4, 6, torch.float64)
    torch.library.opcheck(ops.lm_propose, (grad, hess, curv, lam, 11))
    torch.library.opcheck(ops.lm_update, (*_update_args(6, 6, torch.float64), 1e-5, 30.0))


def test_lm_bad_inputs_name_the_argument():
    """Wrong shapes raise a ValueError, mixed dtypes and a non-bool solved a TypeError, naming the
    argument."""
    grad, hess, curv, lam = _system(3, 4, torch.float64)
    with pytest.raises(ValueError, match="hess must be"):
        ops.lm_propose(grad, hess[:, :3], curv, lam, 5)
    with pytest.raises(ValueError, match="lam must be"):
        ops.lm_propose(grad, hess, curv, lam[:2], 5)
    with pytest.raises(TypeError, match="dtype"):
        ops.lm_propose(grad, hess.float(), curv, lam, 5)
    args = _update_args(3, 4, torch.float64)
    args[12] = args[12].double()  # solved must be bool
    with pytest.raises(TypeError, match="solved"):
        ops.lm_update(*args, 1e-5, 30.0)


def _rbf(K: int, d: int, D: int, dtype: torch.dtype, seed: int = 0) -> fastgeo.RBFPrecision:
    """A random RBF precision: gammas in [0.5, 1.5), weights in [0, 5), zeta in [0.1, 1.1)."""
    return fastgeo.RBFPrecision(
        *rbf_params(K, d, D, dtype=dtype, seed=seed, weights=(0.0, 5.0), zeta=(0.1, 1.1))
    )


@pytest.mark.parametrize(
    "P,K,d,D",
    [(37, 5, 2, 7), (1, 1, 1, 1), (0, 3, 2, 4), (300, 64, 3, 64)],
    ids=["generic", "ones", "P=0", "tiles"],
)
def test_rbf_sigma_jacobian_matches_reference(P, K, d, D):
    """rbf_sigma_jacobian == reference (sigma 1e-12, Jacobian 1e-10), and the reference is
    autograd's Jacobian of sigma; P = 0, all-ones and many-tile shapes."""
    prec = _rbf(K, d, D, torch.float64)
    z = randn(P, d, seed=1, scale=1.5)
    sigma, jac = ops.rbf_sigma_jacobian(z, *prec.params())
    want_sigma, want_jac = reference.rbf_sigma_jacobian(z, *prec.params())
    assert sigma.shape == (P, D) and jac.shape == (P, d, D)
    torch.testing.assert_close(sigma, want_sigma, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(jac, want_jac, rtol=1e-10, atol=1e-13)
    if P:  # and the reference is the Jacobian of sigma (autograd, an independent oracle)
        auto = torch.autograd.functional.jacobian(lambda x: prec.sigma(x).sum(0), z)  # (D, P, d)
        torch.testing.assert_close(jac, auto.permute(1, 2, 0), rtol=1e-9, atol=1e-12)


def test_rbf_sigma_jacobian_float32_and_dispatch():
    """float32 through RBFPrecision.sigma_and_jacobian_t (column-major z) within 2e-6 / 2e-5 of
    float64; with gradients wanted the method runs the differentiable reference."""
    prec64 = _rbf(16, 2, 9, torch.float64, seed=2)
    prec32 = _rbf(16, 2, 9, torch.float32, seed=2)
    z = randn(200, 2, seed=3)
    with torch.no_grad():  # the method takes the kernel outside autograd
        want_sigma, want_jac = reference.rbf_sigma_jacobian(z, *prec64.params())
        sigma, jac = prec32.sigma_and_jacobian_t(z.float().t().contiguous().t())  # column-major z
    torch.testing.assert_close(sigma.double(), want_sigma, rtol=2e-6, atol=1e-7)
    assert_close_rel(jac.double(), want_jac, 2e-5, atol_rel=2e-6)
    # With gradients wanted, the method runs the differentiable reference.
    zz = z.float().requires_grad_(True)
    s, _ = prec32.sigma_and_jacobian_t(zz)
    assert s.requires_grad


def test_rbf_sigma_jacobian_opcheck():
    """torch.library.opcheck of rbf_sigma_jacobian."""
    prec = _rbf(6, 2, 5, torch.float64)
    z = torch.randn(11, 2, dtype=torch.float64)
    params = [x.detach() for x in prec.params()]  # the op is not differentiable
    torch.library.opcheck(ops.rbf_sigma_jacobian, (z, *params))


def test_solver_with_kernels_equals_solver_with_references():
    """geodesics() on CPU tensors with the kernels gives the reference path's result (float64)."""
    from analytic import bumpy_metric

    metric = bumpy_metric(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    z0 = 0.8 * (torch.rand(6, 2, generator=g, dtype=torch.float64) - 0.5)
    z1 = 0.8 * (torch.rand(6, 2, generator=g, dtype=torch.float64) - 0.5)
    with torch.no_grad():
        fast = fastgeo.geodesics(metric, z0, z1, graph=False)
        with fastgeo.use_backend("reference"):
            ref = fastgeo.geodesics(metric, z0, z1, graph=False)
    torch.testing.assert_close(fast.lengths, ref.lengths, rtol=1e-9, atol=1e-12)
    assert torch.equal(fast.converged, ref.converged)


def test_solver_kernels_refuse_backward():
    """No silent wrong gradients: backpropagating through a solver kernel raises."""
    prec = _rbf(4, 2, 3, torch.float64)
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    sigma, _ = ops.rbf_sigma_jacobian(z, *prec.params())
    with pytest.raises(RuntimeError, match="without a derivative"):
        sigma.sum().backward()
    f = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    grad, _ = ops.gauss_newton_system(
        f, torch.randn(2, 4, 2, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64), False
    )
    with pytest.raises(RuntimeError, match="without a derivative"):
        grad.sum().backward()


@pytest.mark.parametrize("p", [94, 155])
def test_large_systems_steps_do_not_depend_on_the_batch(p, one_thread):
    """Systems beyond the kernels (batched LAPACK) with p % 4 != 0: bit for bit alone and in a
    batch (LAPACK rounds by where a matrix starts in memory; without the padding of p to a
    multiple of 4, two of five curves differed at p = 94), and equal to the reference's step."""
    grad, hess, curv, lam = _system(5, p, torch.float64, seed=p)
    grad, hess, curv, lam = grad.float(), hess.float(), curv.float(), lam.float()
    step, predicted, solved = ops.lm_propose(grad, hess, curv, lam, 47)
    for k in range(5):
        alone = ops.lm_propose(grad[k : k + 1], hess[k : k + 1], curv[k : k + 1], lam[k : k + 1], 47)
        assert torch.equal(alone[0][0], step[k]) and torch.equal(alone[1][0], predicted[k]), k
    want = reference.lm_propose(grad.double(), hess.double(), curv.double(), lam.double(), 47)
    assert torch.equal(solved, want[2])
    torch.testing.assert_close(step.double(), want[0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("p", [24, 96], ids=["kernel", "reference (p > 64)"])
def test_a_state_without_secant_model_updates_as_with_a_zero_one(p):
    """solver_ops.lm_update with ``curv`` None (plain Gauss-Newton, the lagged mode) decides and
    updates exactly as with a zero model and keeps none; a trial that brings something to learn
    (grad_old_jacobian not grad) is refused."""
    from fastgeo.ops.solver_ops import LMState, LMTrial, lm_propose
    from fastgeo.ops.solver_ops import lm_update as update

    args = _update_args(12, p, torch.float64, seed=5)
    e, length, e_new, l_new, grad, g_new, _, hess, h_new, _, step, predicted, solved, lam, nu = args
    zero = torch.zeros_like(hess)
    trial = LMTrial(e_new, l_new, g_new, g_new, h_new, step, predicted, solved)
    with_zero = update(LMState(e, length, grad, hess, zero, lam, nu), trial, 1e-5, 30.0)
    without = update(LMState(e, length, grad, hess, None, lam, nu), trial, 1e-5, 30.0)
    assert without[3].curv is None and torch.equal(with_zero[3].curv, zero)
    for x, y in zip(with_zero[:3], without[:3], strict=True):
        assert torch.equal(x, y)
    for name in ("e", "length", "grad", "hess", "lam", "nu"):
        assert torch.equal(getattr(with_zero[3], name), getattr(without[3], name)), name
    assert without[3].rows(torch.tensor([1, 3])).curv is None
    for x, y in zip(
        lm_propose(grad, hess, zero, lam, 23), lm_propose(grad, hess, None, lam, 23), strict=True
    ):
        assert torch.equal(x, y)
    learning = LMTrial(e_new, l_new, g_new, g_new.clone(), h_new, step, predicted, solved)
    with pytest.raises(ValueError, match="grad_old_jacobian"):
        update(LMState(e, length, grad, hess, None, lam, nu), learning, 1e-5, 30.0)
