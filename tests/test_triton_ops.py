"""The Triton kernels as implementations of the fastgeo operators, against the reference.

The functions of :mod:`fastgeo.triton` follow the operators' schemas (forward ops; backward ops
with ``output_mask``): on CUDA tensors they are the operators' CUDA kernels when the registry
picks Triton, under the operators' one autograd. Here each forward is compared with the
reference, and each backward (called exactly as the autograd formula calls it) with the
reference's autograd gradients, for every mask.

On a machine without a GPU the kernels run through Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, which conftest.py sets before fastgeo is first imported; ~1 ms per
program instance, so shapes stay small). With a GPU (and ``TRITON_INTERPRET`` unset or 0) the same
tests run natively on CUDA, and the operators themselves run with ``use_backend("triton")``
(opcheck, gradcheck, compile).

Tolerances (stated once, in ``TOL``; ``helpers.assert_close_rel``): float32 values rtol 1e-4 with
atol 1e-6 * max|ref|, gradients rtol 1e-3 with atol 1e-5 * max|ref| (the kernels sum in a
different order than the reference); float64 rtol 1e-10 with atol 1e-12 * (1 + max|ref|).
"""

import functools
import itertools
import os

import pytest
import torch
import triton  # noqa: F401 - in the test extra: without it this module errors, it does not skip
from helpers import assert_close_rel, rbf_params
from helpers import randn as _randn

import fastgeo
import fastgeo.triton as ftri
from fastgeo import reference

INTERPRET = ftri.INTERPRET
if INTERPRET:
    DEVICE = "cpu"
elif torch.cuda.is_available():
    DEVICE = "cuda"
else:
    pytest.skip(
        "TRITON_INTERPRET is not 1 and no CUDA device: nothing can run the kernels", allow_module_level=True
    )
on_gpu = pytest.mark.skipif(INTERPRET, reason="the operators run Triton on CUDA tensors only (needs a GPU)")

from fastgeo.triton import _rbf_precision, _rbf_segment_sqdist  # noqa: E402

DTYPES = [torch.float32, torch.float64]


# assert_close_rel arguments per (dtype, gradient?): see the module docstring.
TOL = {
    (torch.float32, False): {"rtol": 1e-4, "atol_rel": 1e-6},
    (torch.float32, True): {"rtol": 1e-3, "atol_rel": 1e-5},
    (torch.float64, False): {"rtol": 1e-10, "atol_rel": 1e-12, "atol": 1e-12},
    (torch.float64, True): {"rtol": 1e-10, "atol_rel": 1e-12, "atol": 1e-12},
}


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, grad: bool = False) -> None:
    assert_close_rel(actual, expected, **TOL[expected.dtype, grad])


def rbf(K: int, d: int, D: int, dtype):
    """RBF parameters on DEVICE: gammas in [0.5, 1.5), weights in [0, 1), zeta in [0.05, 0.15)."""
    return list(rbf_params(K, d, D, dtype=dtype, device=DEVICE, zeta=(0.05, 0.15)))


randn = functools.partial(_randn, device=DEVICE)


# Per op: the reference, the positions of the inputs the backward op takes (the schema), and
# the differentiable inputs whose gradients the tests compare.
OPS = {
    "rbf_precision": (reference.rbf_precision, (0, 1, 2, 3), (0, 3, 4)),
    "segment_sqdist": (reference.segment_sqdist, (0,), (0,)),
    "rbf_segment_sqdist": (reference.rbf_segment_sqdist, (0, 1, 2, 3, 4), (0, 3, 4)),
}


def check_values_and_grads(op: str, args, dtype):
    """Triton forward and backward of ``op`` vs the reference: output, and the gradients of the
    differentiable inputs for every output_mask over them (masked-off gradients are (0,))."""
    ref_fn, saved, diff = OPS[op]
    out = getattr(ftri, op)(*args)
    ref = ref_fn(*args)
    assert_matches(out, ref)
    w = torch.linspace(0.5, 1.5, ref.numel(), dtype=dtype, device=DEVICE).reshape(ref.shape)
    leaves = [a.detach().clone().requires_grad_(i in diff) for i, a in enumerate(args)]
    want = torch.autograd.grad((ref_fn(*leaves) * w).sum(), [leaves[i] for i in diff], allow_unused=True)
    want = [torch.zeros_like(args[i]) if g is None else g for i, g in zip(diff, want, strict=True)]
    backward = getattr(ftri, f"{op}_backward")
    if op == "segment_sqdist":
        assert_matches(backward(w, *args), want[0], grad=True)
        return
    for flags in itertools.product((False, True), repeat=len(diff)):
        mask = [False] * 5
        for i, f in zip(diff, flags, strict=True):
            mask[i] = f
        got = backward(w, *[args[i] for i in saved], mask)
        assert len(got) == 5
        for i, g in enumerate(got):
            if not mask[i]:
                assert g.shape == (0,), (op, mask, i)
        for i, wanted in zip(diff, want, strict=True):
            if mask[i]:
                assert_matches(got[i], wanted, grad=True)


# (B, N, d, K, D): edge cases N = 2, K = 1, D = 1, d = 1, and D spanning several chunks.
SHAPES = [(3, 5, 2, 7, 70), (2, 2, 1, 1, 1), (1, 4, 3, 20, 5), (2, 3, 5, 2, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rbf_segment_sqdist(shape, dtype):
    """rbf_segment_sqdist's Triton kernels against the reference: value, and gradients for every
    output mask."""
    B, N, d, K, D = shape
    args = [randn(B, N, d, dtype=dtype), *rbf(K, d, D, dtype)]
    check_values_and_grads("rbf_segment_sqdist", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rbf_precision(shape, dtype):
    """rbf_precision's Triton kernels against the reference: value, and gradients for every output
    mask."""
    B, N, d, K, D = shape
    args = [randn(B * N, d, dtype=dtype), *rbf(K, d, D, dtype)]
    check_values_and_grads("rbf_precision", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 70), (2, 2, 1), (1, 7, 300)])
def test_segment_sqdist(shape, dtype):
    """segment_sqdist's Triton kernels against the reference: value and gradient."""
    check_values_and_grads("segment_sqdist", [randn(*shape, dtype=dtype)], dtype)


def test_non_contiguous_inputs():
    """Strided, column-major and permuted inputs give the reference's values and gradients."""
    dtype = torch.float32
    points = randn(5, 4, 6, dtype=dtype).transpose(0, 1)[:, ::2, ::2]  # (4, 3, 3), odd strides
    centers, gammas, weights, zeta = rbf(9, 3, 11, dtype)
    centers = randn(3, 9, dtype=dtype).T  # (9, 3), column-major
    weights = weights.T.contiguous().T  # (11, 9) with strides (1, 11)
    zeta = torch.stack([zeta, zeta], 1)[:, 0]  # stride 2
    gammas = torch.stack([gammas, gammas], 1)[:, 1]
    assert not (points.is_contiguous() or centers.is_contiguous() or weights.is_contiguous())
    args = [points, centers, gammas.abs(), weights, zeta]
    check_values_and_grads("rbf_segment_sqdist", args, dtype)
    check_values_and_grads("rbf_precision", [points[:, 0], *args[1:]], dtype)
    x = randn(4, 9, 8, dtype=dtype).permute(1, 0, 2)[:, :, 1::2]
    check_values_and_grads("segment_sqdist", [x], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype):
    """B = 0: outputs and gradients of the right (empty) shapes."""
    params = rbf(3, 2, 4, dtype)
    check_values_and_grads("rbf_segment_sqdist", [randn(0, 5, 2, dtype=dtype), *params], dtype)
    check_values_and_grads("rbf_precision", [randn(0, 2, dtype=dtype), *params], dtype)
    check_values_and_grads("segment_sqdist", [randn(0, 3, 4, dtype=dtype)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_centers(dtype):
    """K larger than the on-chip block: the kernels loop over K chunks (forced with block_k=16)."""
    B, N, d, K, D = 2, 4, 3, 40, 70
    points = randn(B, N, d, dtype=dtype)
    centers, gammas, weights, zeta = rbf(K, d, D, dtype)
    ref = reference.rbf_segment_sqdist(points, centers, gammas, weights, zeta)
    out = _rbf_segment_sqdist.forward(points, centers, gammas, weights, zeta, block_k=16)
    assert_matches(out, ref)
    grad = torch.linspace(0.5, 1.5, ref.numel(), dtype=dtype, device=DEVICE).reshape(ref.shape)
    leaves = [t.clone().requires_grad_() for t in (points, weights, zeta)]
    ref_grads = torch.autograd.grad(
        (reference.rbf_segment_sqdist(leaves[0], centers, gammas, leaves[1], leaves[2]) * grad).sum(), leaves
    )
    got = _rbf_segment_sqdist.backward(grad, points, centers, gammas, weights, zeta, True, True, block_k=16)
    for g, r in zip(got, ref_grads, strict=True):
        assert_matches(g, r, grad=True)

    z = points.reshape(-1, d)
    beta_ref = reference.rbf_precision(z, centers, gammas, weights, zeta)
    beta = _rbf_precision.forward(z, centers, gammas, weights, zeta, block_k=16)
    assert_matches(beta, beta_ref)
    gbeta = randn(*beta.shape, dtype=dtype, seed=5)
    zl = z.clone().requires_grad_()
    beta_l = reference.rbf_precision(zl, centers, gammas, weights, zeta)
    (gz_ref,) = torch.autograd.grad((beta_l * gbeta).sum(), zl)
    gz = _rbf_precision.backward_z(gbeta, z, centers, gammas, weights, block_k=16)
    assert_matches(gz, gz_ref, grad=True)


def smooth_curves(B: int, N: int, d: int, dtype) -> torch.Tensor:
    """Straight curves with N points: neighbouring sigmas differ by ~1/N of sigma."""
    z0, z1 = randn(B, d, dtype=torch.float64, seed=3), randn(B, d, dtype=torch.float64, seed=4)
    t = torch.linspace(0, 1, N, dtype=torch.float64, device=DEVICE)[None, :, None]
    return (z0[:, None] + t * (z1 - z0)[:, None]).to(dtype)


def tf32(t: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 mantissa bits, nearest), as a TF32 tensor-core product would."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.mark.parametrize("N", [32, 128])
def test_float32_precision_on_dense_curves(N):
    """The float32 kernels match the float64 reference on finely sampled curves, within the same
    bound that TF32 products would violate (so the bound is tight enough to catch them)."""
    B, d, K, D = 2, 2, 16, 64
    points = smooth_curves(B, N, d, torch.float32)
    params = rbf(K, d, D, torch.float32)
    exact = reference.rbf_segment_sqdist(points.double(), *[p.double() for p in params])
    out = ftri.rbf_segment_sqdist(points, *params)
    rel = ((out.double() - exact).abs() / exact).max().item()
    assert rel < 1e-3, f"float32 kernel relative error {rel:.2e} at N = {N}"

    # What TF32 products would give: phi and W rounded to 10 mantissa bits before the product.
    centers, gammas, weights, zeta = params
    phi = reference.rbf_features(points.reshape(-1, d), centers, gammas)
    beta = tf32(phi) @ tf32(weights).T + zeta
    tf32_out = reference.segment_sqdist(beta.rsqrt().reshape(B, N, D))
    tf32_rel = ((tf32_out.double() - exact).abs() / exact).max().item()
    assert tf32_rel > 1e-3, f"TF32 emulation error {tf32_rel:.2e} would pass: tolerance too loose"
    # The default is "ieee"; FASTGEO_TRITON_DOT=tf32x3 (a GPU run measuring the candidate) must
    # pass the same accuracy bar above.
    assert _rbf_segment_sqdist.DOT_PRECISION == os.environ.get("FASTGEO_TRITON_DOT", "ieee")


def op_inputs(op: str, dtype):
    params = rbf(3, 2, 5, dtype)
    if op == "rbf_segment_sqdist":
        return [randn(2, 3, 2, dtype=dtype), *params]
    if op == "rbf_precision":
        return [randn(3, 2, dtype=dtype), *params]
    return [randn(2, 3, 4, dtype=dtype)]


def test_centers_grad_is_a_clear_error():
    """Asking the Triton backward for gradients of centers or gammas raises NotImplementedError
    naming them."""
    params = rbf(3, 2, 5, torch.float32)
    grad = randn(1, 2, dtype=torch.float32)
    with pytest.raises(NotImplementedError, match="centers/gammas"):
        ftri.rbf_segment_sqdist_backward(
            grad, randn(1, 3, 2, dtype=torch.float32), *params, [True, True, False, False, False]
        )


def test_implements_every_differentiable_operator():
    """The Triton module provides a kernel for every differentiable operator and its backward."""
    from fastgeo.ops import library

    assert set(ftri.OPS) == set(library.DIFFERENTIABLE + library.BACKWARD)
    for op in ftri.OPS:
        assert callable(getattr(ftri, op))


@on_gpu
@pytest.mark.parametrize("op", ["rbf_segment_sqdist", "rbf_precision", "segment_sqdist"])
def test_operator_gradcheck_float64(op):
    """On a GPU: gradcheck of each operator with the Triton kernels (float64)."""
    leaves = [t.clone().requires_grad_(i in (0, 3, 4)) for i, t in enumerate(op_inputs(op, torch.float64))]
    with fastgeo.use_backend("triton"):
        assert torch.autograd.gradcheck(getattr(fastgeo.ops, op), leaves)


@on_gpu
@pytest.mark.parametrize("op", ["rbf_segment_sqdist", "rbf_precision", "segment_sqdist"])
def test_operator_opcheck(op):
    """On a GPU: torch.library.opcheck of each operator with the Triton kernels."""
    inputs = [t.requires_grad_(i in (0, 3)) for i, t in enumerate(op_inputs(op, torch.float32))]
    from fastgeo.ops import library

    with library.cuda_kernel("triton"):
        torch.library.opcheck(getattr(torch.ops.fastgeo, op).default, inputs)


@on_gpu
def test_operator_torch_compile(tmp_path, monkeypatch):
    """On a GPU: torch.compile(fullgraph=True) of rbf_segment_sqdist with the Triton kernels gives
    the eager value and gradient."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    points, *params = op_inputs("rbf_segment_sqdist", torch.float32)

    def energy(p):
        return fastgeo.ops.rbf_segment_sqdist(p, *params).sum()

    with fastgeo.use_backend("triton"):
        compiled = torch.compile(energy, fullgraph=True, backend="aot_eager")
        p1, p2 = points.clone().requires_grad_(), points.clone().requires_grad_()
        e1, e2 = energy(p1), compiled(p2)
        torch.testing.assert_close(e2, e1)
        torch.testing.assert_close(torch.autograd.grad(e2, p2)[0], torch.autograd.grad(e1, p1)[0])


def test_kernels_compile_to_ptx(tmp_path):
    """Real Triton codegen for sm_90 (float32 and float64), in a process without the interpreter."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    root = os.path.join(os.path.dirname(__file__), "..")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(root), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "fastgeo.triton._ptx_check", "90"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if "No module named 'triton.backends.nvidia'" in proc.stderr:
        pytest.skip("this triton build has no NVIDIA backend")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_block_the_gpu_cannot_hold_is_halved():
    """A launch refused for shared memory (as a float64 backward with all 128 centers in one tile
    is on an H200) runs again with half the K block, down to MIN_BLOCK_K; the block that fitted is
    remembered per kernel, dtype and device; a block too large even at the minimum raises."""
    from triton.runtime.errors import OutOfResources

    from fastgeo.triton import _common

    tried = []

    def launch(limit):
        def run(bk, single):
            tried.append((bk, single))
            if bk > limit:
                raise OutOfResources(bk * 4096, limit * 4096, "shared memory")

        return run

    like = torch.zeros(1, dtype=torch.float64)
    _common._FITTED.clear()
    _common.launch_fitting("test", like, 100, None, launch(32))
    assert tried == [(128, True), (64, False), (32, False)]
    tried.clear()
    _common.launch_fitting("test", like, 100, None, launch(32))
    assert tried == [(32, False)]  # remembered
    tried.clear()
    _common.launch_fitting("test", like, 20, None, launch(32))
    assert tried == [(32, True)]  # another K: its own block
    with pytest.raises(OutOfResources):
        _common.launch_fitting("other", like, 100, None, launch(8))
    assert tried[-1] == (_common.MIN_BLOCK_K, False)
    _common._FITTED.clear()
