"""The Triton kernels as implementations of the fastgeo operators, against the reference.

The functions of :mod:`fastgeo.triton` follow the operators' schemas (forward ops; backward ops
with ``output_mask``): on CUDA tensors they are the operators' CUDA kernels when the registry
picks Triton, under the operators' one autograd. Here each forward is compared with the
reference, and each backward (called exactly as the autograd formula calls it) with the
reference's autograd gradients, for every mask.

On a machine without a GPU the kernels run through Triton's interpreter on CPU tensors
(``TRITON_INTERPRET=1``, set below before the kernels are imported; ~1 ms per program instance,
so shapes stay small). With ``TRITON_INTERPRET=0`` and a GPU the same tests run natively on CUDA,
and the operators themselves run with ``use_backend("triton")`` (opcheck, gradcheck, compile).

Float32 tolerances (stated once): values rtol 1e-4 with atol 1e-6 * max|ref|; gradients rtol 1e-3
with atol 1e-5 * max|ref|: the kernels sum in a different order than the reference.
"""

import itertools
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before fastgeo.triton imports triton

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

import fastgeo  # noqa: E402
import fastgeo.triton as ftri  # noqa: E402
from fastgeo import reference  # noqa: E402

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


def tol(dtype: torch.dtype, ref: torch.Tensor, grad: bool = False) -> dict:
    scale = ref.abs().max().item() if ref.numel() else 0.0
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12 * (1 + scale)}
    return {"rtol": 1e-3, "atol": 1e-5 * scale} if grad else {"rtol": 1e-4, "atol": 1e-6 * scale}


def rbf_params(K: int, d: int, D: int, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(K, d, generator=g, dtype=torch.float64)
    gammas = 0.5 + torch.rand(K, generator=g, dtype=torch.float64)
    weights = torch.rand(D, K, generator=g, dtype=torch.float64)
    zeta = 0.05 + 0.1 * torch.rand(D, generator=g, dtype=torch.float64)
    return [t.to(dtype=dtype, device=DEVICE) for t in (centers, gammas, weights, zeta)]


def randn(*shape, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=DEVICE)


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
    torch.testing.assert_close(out, ref, **tol(dtype, ref))
    w = torch.linspace(0.5, 1.5, ref.numel(), dtype=dtype, device=DEVICE).reshape(ref.shape)
    leaves = [a.detach().clone().requires_grad_(i in diff) for i, a in enumerate(args)]
    want = torch.autograd.grad((ref_fn(*leaves) * w).sum(), [leaves[i] for i in diff], allow_unused=True)
    want = [torch.zeros_like(args[i]) if g is None else g for i, g in zip(diff, want, strict=True)]
    backward = getattr(ftri, f"{op}_backward")
    if op == "segment_sqdist":
        torch.testing.assert_close(backward(w, *args), want[0], **tol(dtype, want[0], grad=True))
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
                torch.testing.assert_close(got[i], wanted, **tol(dtype, wanted, grad=True))


# (B, N, d, K, D): edge cases N = 2, K = 1, D = 1, d = 1, and D spanning several chunks.
SHAPES = [(3, 5, 2, 7, 70), (2, 2, 1, 1, 1), (1, 4, 3, 20, 5), (2, 3, 5, 2, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rbf_segment_sqdist(shape, dtype):
    B, N, d, K, D = shape
    args = [randn(B, N, d, dtype=dtype), *rbf_params(K, d, D, dtype)]
    check_values_and_grads("rbf_segment_sqdist", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_rbf_precision(shape, dtype):
    B, N, d, K, D = shape
    args = [randn(B * N, d, dtype=dtype), *rbf_params(K, d, D, dtype)]
    check_values_and_grads("rbf_precision", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 70), (2, 2, 1), (1, 7, 300)])
def test_segment_sqdist(shape, dtype):
    check_values_and_grads("segment_sqdist", [randn(*shape, dtype=dtype)], dtype)


def test_non_contiguous_inputs():
    dtype = torch.float32
    points = randn(5, 4, 6, dtype=dtype).transpose(0, 1)[:, ::2, ::2]  # (4, 3, 3), odd strides
    centers, gammas, weights, zeta = rbf_params(9, 3, 11, dtype)
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
    params = rbf_params(3, 2, 4, dtype)
    check_values_and_grads("rbf_segment_sqdist", [randn(0, 5, 2, dtype=dtype), *params], dtype)
    check_values_and_grads("rbf_precision", [randn(0, 2, dtype=dtype), *params], dtype)
    check_values_and_grads("segment_sqdist", [randn(0, 3, 4, dtype=dtype)], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_centers(dtype):
    """K larger than the on-chip block: the kernels loop over K chunks (forced with block_k=16)."""
    B, N, d, K, D = 2, 4, 3, 40, 70
    points = randn(B, N, d, dtype=dtype)
    centers, gammas, weights, zeta = rbf_params(K, d, D, dtype)
    ref = reference.rbf_segment_sqdist(points, centers, gammas, weights, zeta)
    out = _rbf_segment_sqdist.forward(points, centers, gammas, weights, zeta, block_k=16)
    torch.testing.assert_close(out, ref, **tol(dtype, ref))
    grad = torch.linspace(0.5, 1.5, ref.numel(), dtype=dtype, device=DEVICE).reshape(ref.shape)
    leaves = [t.clone().requires_grad_() for t in (points, weights, zeta)]
    ref_grads = torch.autograd.grad(
        (reference.rbf_segment_sqdist(leaves[0], centers, gammas, leaves[1], leaves[2]) * grad).sum(), leaves
    )
    got = _rbf_segment_sqdist.backward(grad, points, centers, gammas, weights, zeta, True, True, block_k=16)
    for g, r in zip(got, ref_grads, strict=True):
        torch.testing.assert_close(g, r, **tol(dtype, r, grad=True))

    z = points.reshape(-1, d)
    beta_ref = reference.rbf_precision(z, centers, gammas, weights, zeta)
    beta = _rbf_precision.forward(z, centers, gammas, weights, zeta, block_k=16)
    torch.testing.assert_close(beta, beta_ref, **tol(dtype, beta_ref))
    gbeta = randn(*beta.shape, dtype=dtype, seed=5)
    zl = z.clone().requires_grad_()
    beta_l = reference.rbf_precision(zl, centers, gammas, weights, zeta)
    (gz_ref,) = torch.autograd.grad((beta_l * gbeta).sum(), zl)
    gz = _rbf_precision.backward_z(gbeta, z, centers, gammas, weights, block_k=16)
    torch.testing.assert_close(gz, gz_ref, **tol(dtype, gz_ref, grad=True))


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
    params = rbf_params(K, d, D, torch.float32)
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
    assert _rbf_segment_sqdist.DOT_PRECISION == "ieee"


def op_inputs(op: str, dtype):
    params = rbf_params(3, 2, 5, dtype)
    if op == "rbf_segment_sqdist":
        return [randn(2, 3, 2, dtype=dtype), *params]
    if op == "rbf_precision":
        return [randn(3, 2, dtype=dtype), *params]
    return [randn(2, 3, 4, dtype=dtype)]


def test_centers_grad_is_a_clear_error():
    params = rbf_params(3, 2, 5, torch.float32)
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
    leaves = [t.clone().requires_grad_(i in (0, 3, 4)) for i, t in enumerate(op_inputs(op, torch.float64))]
    with fastgeo.use_backend("triton"):
        assert torch.autograd.gradcheck(getattr(fastgeo.ops, op), leaves)


@on_gpu
@pytest.mark.parametrize("op", ["rbf_segment_sqdist", "rbf_precision", "segment_sqdist"])
def test_operator_opcheck(op):
    inputs = [t.requires_grad_(i in (0, 3)) for i, t in enumerate(op_inputs(op, torch.float32))]
    from fastgeo.ops import library

    with library.cuda_kernel("triton"):
        torch.library.opcheck(getattr(torch.ops.fastgeo, op).default, inputs)


@on_gpu
def test_operator_torch_compile(tmp_path, monkeypatch):
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
