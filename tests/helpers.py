"""Helpers shared by the test files: seeded random inputs, random RBF parameters, the C++ kernel
requirement, and closeness checks with their tolerances stated once."""

from __future__ import annotations

import os

import pytest
import torch

from fastgeo.ops import availability

F64 = torch.float64


def randn(
    *shape: int,
    dtype: torch.dtype = F64,
    device: str | torch.device = "cpu",
    seed: int = 1,
    scale: float = 1.0,
) -> torch.Tensor:
    """``scale`` * N(0, 1) values of ``shape`` from a generator seeded with ``seed``, drawn in
    float64 then cast to ``dtype`` on ``device``: the same numbers (up to rounding) in either
    dtype, on any device."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=F64)).to(dtype=dtype, device=device)


def rbf_params(
    K: int,
    d: int,
    D: int,
    *,
    dtype: torch.dtype = F64,
    device: str | torch.device = "cpu",
    seed: int = 0,
    generator: torch.Generator | None = None,
    gammas: tuple[float, float] = (0.5, 1.5),
    weights: tuple[float, float] = (0.0, 1.0),
    zeta: tuple[float, float] = (0.5, 1.5),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random RBF parameters ``(centers, gammas, weights, zeta)`` of the precision
    ``beta(z) = W phi(z) + zeta``: centers (K, d) ~ N(0, 1); gammas (K,), weights (D, K) and
    zeta (D,) uniform in the ``[low, high)`` ranges given (``low == high``: a constant).

    Drawn in float64, in that order, from ``generator`` (or a fresh one seeded with ``seed``),
    then cast to ``dtype`` on ``device``: float32 and float64 tests see the same parameters.
    """
    g = torch.Generator().manual_seed(seed) if generator is None else generator

    def uniform(lo_hi: tuple[float, float], *shape: int) -> torch.Tensor:
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)

    centers = torch.randn(K, d, generator=g, dtype=F64)
    params = (centers, uniform(gammas, K), uniform(weights, D, K), uniform(zeta, D))
    return tuple(t.to(dtype=dtype, device=device) for t in params)  # type: ignore[return-value]


def require_cpu_kernels() -> None:
    """For the test modules of the C++ CPU kernels (call at import): skip the module when the
    extension was left out on purpose (``FASTGEO_NO_EXTENSION=1``, a pure-PyTorch install), and
    fail it, loudly, when it should be there and is not (a broken build must not pass as skipped)."""
    ok, why = availability()["cpu"]
    if ok:
        return
    if os.environ.get("FASTGEO_NO_EXTENSION", "0") == "1":
        pytest.skip(f"FASTGEO_NO_EXTENSION=1: no C++ CPU kernels ({why})", allow_module_level=True)
    pytest.fail(f"fastgeo._C (C++ CPU kernels) is not available: {why}", pytrace=False)


def assert_close_rel(
    actual: torch.Tensor,
    expected: torch.Tensor,
    rtol: float,
    *,
    atol_rel: float | None = None,
    atol: float = 0.0,
) -> None:
    """``actual`` equals ``expected`` (same shape and dtype) to ``rtol`` relative, with an
    absolute floor of ``atol_rel`` (default: ``rtol``) times the largest entry of ``expected``,
    plus ``atol``: entries near zero are judged against the scale of the whole tensor."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    floor = atol + (rtol if atol_rel is None else atol_rel) * scale
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=floor)


def assert_f32_accuracy(
    actual: torch.Tensor, ref32: torch.Tensor, ref64: torch.Tensor, floor: float = 1e-6
) -> None:
    """A float32 kernel result is as accurate as the float32 reference, within a factor 4.

    Both are compared with the float64 reference:
    ``max|actual - ref64| <= 4 max|ref32 - ref64| + floor max|ref64|``. The kernel and the
    reference sum the same terms in different orders; float32 rounding errors are relative to
    the largest terms summed, and some outputs cancel (differences of nearly equal sigmas,
    K = 1): the float32 reference's own error measures how hard each case is. The floor covers
    a reference that happens to be exact: 1e-6 (the default, ~10 float32 eps) for values, 1e-5
    for gradients.
    """
    assert actual.dtype == ref32.dtype == torch.float32, (actual.dtype, ref32.dtype)
    assert actual.shape == ref64.shape, (actual.shape, ref64.shape)
    if ref64.numel() == 0:
        return
    err = float((actual.double() - ref64).abs().max())
    err_ref = float((ref32.double() - ref64).abs().max())
    bound = 4 * err_ref + floor * float(ref64.abs().max())
    assert err <= bound, f"float32 error {err:.3e} > {bound:.3e} (float32 reference error {err_ref:.3e})"
