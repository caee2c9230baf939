"""Every CUDA kernel source compiles with nvcc (no GPU needed), and the CUDA backend, when built
and a GPU is present, matches the reference."""

import glob
import os
import shutil
import subprocess

import pytest
import torch
from helpers import assert_close_rel, rbf_params

import fastgeo
from fastgeo import reference

CUDA_DIR = os.path.join(os.path.dirname(__file__), "..", "csrc", "cuda")
SOURCES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")))
NVCC = shutil.which("nvcc")


def test_sources_exist():
    """The CUDA sources are where the build and the nvcc test look for them (csrc/cuda/*.cu)."""
    assert SOURCES, f"no .cu files under {CUDA_DIR}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: cannot compile the CUDA sources")
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_nvcc_compiles(source, tmp_path):
    """Each CUDA source compiles for sm_90 with nvcc, every warning an error."""
    obj = tmp_path / (os.path.basename(source) + ".o")
    cmd = [NVCC, "-c", "-arch=sm_90", "-std=c++17", "-O3", "-Werror", "all-warnings", source, "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


cuda_ok, cuda_reason = fastgeo.availability()["cuda"]
needs_cuda = pytest.mark.skipif(not cuda_ok, reason=f"cuda backend unavailable: {cuda_reason}")


def _params(K, d, D, dtype):
    """RBF parameters on the GPU: gammas in [0.5, 1.5), weights in [0, 1), zeta in [0.05, 0.15)."""
    return list(rbf_params(K, d, D, dtype=dtype, device="cuda", zeta=(0.05, 0.15)))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 5, 2, 7, 70), (2, 2, 1, 1, 1), (5, 32, 16, 128, 784), (0, 4, 2, 3, 5)])
def test_cuda_matches_reference(shape, dtype):
    """On a GPU: values and gradients of the three ops with the CUDA kernels equal the reference
    (float32 1e-4, float64 1e-10 relative), an empty batch included."""
    B, N, d, K, D = shape
    points = torch.randn(B, N, d, dtype=dtype, device="cuda")
    params = _params(K, d, D, dtype)
    x = torch.randn(B, N, D, dtype=dtype, device="cuda")
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    for fn, args, diff in [
        (fastgeo.ops.rbf_segment_sqdist, [points, *params], (0, 3, 4)),
        (fastgeo.ops.rbf_precision, [points.reshape(-1, d), *params], (0, 3, 4)),
        (fastgeo.ops.segment_sqdist, [x], (0,)),
    ]:
        res = {}
        for backend in ("cuda", "reference"):
            leaves = [a.detach().clone().requires_grad_(i in diff) for i, a in enumerate(args)]
            with fastgeo.use_backend(backend):
                out = fn(*leaves)
            grads = torch.autograd.grad(out.sum(), [leaves[i] for i in diff]) if out.numel() else ()
            res[backend] = (out.detach(), grads)
        (o, gs), (o_ref, gs_ref) = res["cuda"], res["reference"]
        assert_close_rel(o, o_ref, rtol, atol_rel=1e-2 * rtol)
        for g, g_ref in zip(gs, gs_ref, strict=True):
            assert_close_rel(g, g_ref, 10 * rtol, atol_rel=0.1 * rtol)


@needs_cuda
def test_cuda_opcheck():
    """On a GPU: torch.library.opcheck of the three operators with the CUDA kernels."""
    params = _params(3, 2, 5, torch.float32)
    points = torch.randn(2, 4, 2, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.fastgeo.rbf_segment_sqdist.default, (points, *params))
    torch.library.opcheck(torch.ops.fastgeo.rbf_precision.default, (points.detach()[0], *params))
    torch.library.opcheck(
        torch.ops.fastgeo.segment_sqdist.default, (torch.randn(2, 4, 6, device="cuda", requires_grad=True),)
    )


@needs_cuda
def test_cuda_gradcheck_float64():
    """On a GPU: gradcheck of rbf_segment_sqdist through the CUDA kernels, in points and weights."""
    params = _params(3, 2, 5, torch.float64)
    points = torch.randn(2, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    params[2].requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.fastgeo.rbf_segment_sqdist, (points, *params))


@needs_cuda
def test_cuda_torch_compile(tmp_path, monkeypatch):
    """On a GPU: torch.compile(fullgraph=True) of rbf_segment_sqdist gives the eager value and
    gradient, and the reference's value."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    params = _params(16, 2, 64, torch.float32)
    points = torch.randn(8, 32, 2, device="cuda")

    def energy(p):
        return torch.ops.fastgeo.rbf_segment_sqdist(p, *params).sum()

    p1, p2 = points.clone().requires_grad_(), points.clone().requires_grad_()
    e1, e2 = energy(p1), torch.compile(energy, fullgraph=True)(p2)
    torch.testing.assert_close(e2, e1)
    torch.testing.assert_close(torch.autograd.grad(e2, p2)[0], torch.autograd.grad(e1, p1)[0])
    ref = reference.rbf_segment_sqdist(points, *params).sum()
    torch.testing.assert_close(e1, ref, rtol=1e-4, atol=0)
