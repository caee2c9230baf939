"""The CPU kernels agree with the reference over the whole range RBFPrecision accepts: huge and
tiny weights, tiny zeta (subnormal in float32), phi underflowing (to zero: no backend keeps a
subnormal feature)."""

import pytest
import torch
from helpers import require_cpu_kernels

import fastgeo
from fastgeo import reference
from fastgeo.ops import solver_ops

require_cpu_kernels()  # a broken build fails here; only FASTGEO_NO_EXTENSION=1 skips


def params(K, d, D, dtype, weight, zeta, gamma=1.0):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(K, d, generator=g, dtype=torch.float64).to(dtype)
    weights = (torch.rand(D, K, generator=g, dtype=torch.float64) * weight).to(dtype)
    return [centers, torch.full((K,), gamma, dtype=dtype), weights, torch.full((D,), zeta, dtype=dtype)]


def compare(got, want, ulps=8):
    """Equal non-finite entries (same inf / NaN pattern); finite ones within ``ulps`` relative
    rounding units (the kernels sum in another order, and a segment is a sum of squared
    differences of sigmas, which amplifies their last-bit differences)."""
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    inf = torch.isinf(want)
    assert torch.equal(torch.isinf(got), inf) and torch.equal(got[inf], want[inf])
    ok = torch.isfinite(want)
    eps = torch.finfo(got.dtype).eps
    tiny = torch.finfo(got.dtype).tiny
    err = (got[ok] - want[ok]).abs()
    bound = ulps * eps * want[ok].abs() + ulps * tiny * eps
    assert bool((err <= bound).all()), f"max excess {float((err - bound).max())}"


CASES = {
    "huge weights (3e38)": dict(weight=3e38, zeta=1.0),
    "tiny weights": dict(weight=1e-30, zeta=1e-3),
    "tiny zeta (1e-40, subnormal)": dict(weight=1.0, zeta=1e-40),
    "phi underflow (far points)": dict(weight=1.0, zeta=1e-30, gamma=30.0),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_match_reference_at_the_edges(case, dtype):
    p = params(3, 2, 7, dtype, **CASES[case])
    fastgeo.RBFPrecision(*p)  # inside the validated range
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(40, 2, generator=g, dtype=torch.float64) * 3).to(dtype)
    points = z.reshape(4, 10, 2)
    with fastgeo.use_backend("cpu"):
        beta = fastgeo.ops.rbf_precision(z, *p)
        seg = fastgeo.ops.rbf_segment_sqdist(points, *p)
        sigma, jac = solver_ops.rbf_sigma_jacobian(z, *p)
    compare(beta, reference.rbf_precision(z, *p))
    compare(sigma, reference.rbf_precision(z, *p).rsqrt())
    want = reference.rbf_segment_sqdist(points, *p)
    if dtype == torch.float32:
        # A segment is a sum of squared differences of sigmas: where neighbouring sigmas are huge
        # and close, float32 itself loses digits. The kernel must be as good as the float32
        # reference is, against the float64 truth.
        exact = reference.rbf_segment_sqdist(points.double(), *[t.double() for t in p])
        assert torch.equal(torch.isfinite(seg), torch.isfinite(want))
        ok = torch.isfinite(exact)
        err, ref_err = (seg.double() - exact)[ok].abs(), (want.double() - exact)[ok].abs()
        assert bool((err <= 4 * ref_err + 64 * torch.finfo(dtype).eps * exact[ok].abs()).all())
    else:
        compare(seg, want, ulps=64)
    _, want_jac = reference.rbf_sigma_jacobian(z, *p)
    assert torch.equal(torch.isfinite(jac), torch.isfinite(want_jac))
    compare(jac, want_jac, ulps=64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_features_that_would_be_subnormal_are_zero(dtype):
    """exp(-gamma r^2) below the smallest normal number is 0 in the reference and the kernels
    alike (subnormal operands slow every later product many times over): beta is zeta exactly
    there, even for a subnormal zeta, and the normal features next to them are kept."""
    tiny = torch.finfo(dtype).tiny
    r_edge = (-torch.log(torch.tensor(tiny, dtype=torch.float64))).sqrt().item()  # exp(-r^2) = tiny
    c = torch.zeros(1, 1, dtype=dtype)
    z = torch.tensor([[r_edge - 0.05], [r_edge + 0.05], [r_edge + 0.5], [r_edge + 3.0]], dtype=dtype)
    zeta = torch.full((1,), 1e-45 if dtype == torch.float32 else 5e-324, dtype=dtype)
    p = [c, torch.ones(1, dtype=dtype), torch.ones(1, 1, dtype=dtype), zeta]
    phi = reference.rbf_features(z, c, p[1])
    assert phi[0, 0] >= tiny and bool((phi[1:] == 0).all())
    with fastgeo.use_backend("cpu"):
        beta = fastgeo.ops.rbf_precision(z, *p)
    assert torch.equal(beta[1:], zeta.expand(3, 1))
    torch.testing.assert_close(beta, reference.rbf_precision(z, *p), rtol=1e-5, atol=0)


def test_zero_zeta_is_refused_and_kernels_agree_where_sigma_is_infinite():
    with pytest.raises(ValueError, match="zeta"):
        fastgeo.RBFPrecision(*params(2, 2, 3, torch.float32, 1.0, 0.0))
    p = params(2, 2, 3, torch.float32, 1.0, 0.0, gamma=50.0)  # raw op: phi underflows, beta = 0
    points = torch.full((1, 3, 2), 20.0)
    with fastgeo.use_backend("cpu"):
        got = fastgeo.ops.rbf_segment_sqdist(points, *p)
    compare(got, reference.rbf_segment_sqdist(points, *p))  # inf - inf: NaN in both


_RESERVED_SCRIPT = """
import torch, fastgeo
from fastgeo.ops import solver_ops
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmPeak")) // 1024
K = 200_000
g = torch.Generator().manual_seed(0)
c, gam = torch.randn(K, 2, generator=g), torch.rand(K, generator=g) + 0.1
W, zeta = torch.rand(1, K, generator=g), torch.rand(1, generator=g) + 0.1
x = torch.randn(1, 2, 2, generator=g, requires_grad=True)
before = peak()
fastgeo.ops.rbf_segment_sqdist(x, c, gam, W, zeta).sum().backward()
fastgeo.ops.rbf_precision(x[0], c, gam, W, zeta)
solver_ops.rbf_sigma_jacobian(x[0].detach(), c, gam, W, zeta)
print(peak() - before)
"""


def test_tiles_of_a_few_points_hold_no_more_rows_than_there_are():
    """K = 200,000 centers, two points: the kernels' per-thread tiles were sized for 1,024 rows of
    K features (~800 MB reserved per thread for 2 points)."""
    import subprocess
    import sys

    env = {**__import__("os").environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", _RESERVED_SCRIPT], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) < 200, out.stdout  # MiB of address space reserved
