"""Every CUDA kernel source compiles with nvcc (no GPU needed), and the CUDA backend, when built
and a GPU is present, matches the reference."""

import glob
import os
import shutil
import subprocess

import pytest
import torch

import fastgeo
from fastgeo import reference

CUDA_DIR = os.path.join(os.path.dirname(__file__), "..", "csrc", "cuda")
SOURCES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")))
NVCC = shutil.which("nvcc")


def test_sources_exist():
    assert SOURCES, f"no .cu files under {CUDA_DIR}"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: cannot compile the CUDA sources")
@pytest.mark.parametrize("source", SOURCES, ids=os.path.basename)
def test_nvcc_compiles(source, tmp_path):
    obj = tmp_path / (os.path.basename(source) + ".o")
    cmd = [NVCC, "-c", "-arch=sm_90", "-std=c++17", "-O3", "-Werror", "all-warnings", source, "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert obj.stat().st_size > 0


cuda_ok, cuda_reason = fastgeo.availability()["cuda"]
needs_cuda = pytest.mark.skipif(not cuda_ok, reason=f"cuda backend unavailable: {cuda_reason}")


def _params(K, d, D, dtype):
    g = torch.Generator().manual_seed(0)
    c = torch.randn(K, d, generator=g, dtype=torch.float64)
    gam = 0.5 + torch.rand(K, generator=g, dtype=torch.float64)
    w = torch.rand(D, K, generator=g, dtype=torch.float64)
    z = 0.05 + 0.1 * torch.rand(D, generator=g, dtype=torch.float64)
    return [t.to(dtype=dtype, device="cuda") for t in (c, gam, w, z)]


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 5, 2, 7, 70), (2, 2, 1, 1, 1), (5, 32, 16, 128, 784), (0, 4, 2, 3, 5)])
def test_cuda_matches_reference(shape, dtype):
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
        scale = o_ref.abs().max().item() if o_ref.numel() else 0.0
        torch.testing.assert_close(o, o_ref, rtol=rtol, atol=rtol * 1e-2 * scale)
        for g, g_ref in zip(gs, gs_ref, strict=True):
            torch.testing.assert_close(g, g_ref, rtol=10 * rtol, atol=rtol * 0.1 * g_ref.abs().max().item())


@needs_cuda
def test_cuda_opcheck():
    params = _params(3, 2, 5, torch.float32)
    points = torch.randn(2, 4, 2, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.fastgeo.rbf_segment_sqdist.default, (points, *params))
    torch.library.opcheck(torch.ops.fastgeo.rbf_precision.default, (points.detach()[0], *params))
    torch.library.opcheck(torch.ops.fastgeo.segment_sqdist.default,
                          (torch.randn(2, 4, 6, device="cuda", requires_grad=True),))


@needs_cuda
def test_cuda_gradcheck_float64():
    params = _params(3, 2, 5, torch.float64)
    points = torch.randn(2, 3, 2, dtype=torch.float64, device="cuda", requires_grad=True)
    params[2].requires_grad_()
    assert torch.autograd.gradcheck(torch.ops.fastgeo.rbf_segment_sqdist, (points, *params))


@needs_cuda
def test_cuda_torch_compile(tmp_path, monkeypatch):
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
