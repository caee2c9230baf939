"""Curves with fixed end points, as a linear combination of basis functions (DESIGN §1):

    c(t) = z0 + t (z1 - z0) + sum_j a_j psi_j(t),       t in [0, 1],   psi_j(0) = psi_j(1) = 0

Three bases share this form, so one solver handles them all:

- :class:`BSplineBasis` (the default): the ``m`` interior functions of a clamped uniform cubic
  B-spline with ``m + 2`` control points. With the control points ``P_i = line(tau_i) + a_i`` at
  the Greville abscissae ``tau_i`` (linear precision), the spline is exactly the form above. Local
  support: a coefficient moves the curve on at most four spans, so curves cannot wander where the
  metric is cheap, and the Gauss-Newton system is banded.
- :class:`PolynomialBasis`: ``psi_j(t) = t (t-1) P_{j-1}(2t-1)``, ``j = 1..m``, with ``P`` the
  Legendre or Chebyshev polynomials; ``m = 1`` is the paper's quadratic ``a t^2 + b t + c``.
- :class:`PiecewiseLinearBasis`: hat functions on ``n`` equispaced nodes, i.e. a free polyline
  whose ``n - 2`` interior nodes are the unknowns (the dense reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import _checks

MAX_BASIS = 1 << 20  # basis functions per axis: far beyond any curve's need (the solver's m <= 4096)


class PolynomialBasis:
    """``psi_j(t) = t (t-1) P_{j-1}(2t-1)`` for ``j = 1..m`` (``family``: legendre | chebyshev).

    Attributes: ``m``, ``family``."""

    def __init__(self, m: int, family: str = "legendre") -> None:
        m = _checks.integer("m (number of basis functions)", m, 1, MAX_BASIS)
        if family not in ("legendre", "chebyshev"):
            raise ValueError(f"family must be 'legendre' or 'chebyshev', got {family!r}")
        self.m = m
        self.family = family

    def __call__(self, t: Tensor) -> Tensor:
        """Basis values: t (n,) -> (n, m)."""
        _checks.tensor("t", t, ndim=1)
        x = 2 * t - 1
        polys = [torch.ones_like(x), x]
        for j in range(1, self.m - 1):
            if self.family == "legendre":  # (j+1) P_{j+1} = (2j+1) x P_j - j P_{j-1}
                polys.append(((2 * j + 1) * x * polys[j] - j * polys[j - 1]) / (j + 1))
            else:  # T_{j+1} = 2 x T_j - T_{j-1}
                polys.append(2 * x * polys[j] - polys[j - 1])
        return (t * (t - 1))[:, None] * torch.stack(polys[: self.m], dim=1)

    def __repr__(self) -> str:
        return f"PolynomialBasis(m={self.m}, family={self.family!r})"


class BSplineBasis:
    """The ``m`` interior basis functions of a clamped cubic B-spline with ``m + 2`` control points
    and uniform interior knots (``m - 1`` spans; ``m >= 2``): the default curves' basis.

    Attributes: ``m``; ``family`` (``"bspline"``); ``knots``, the clamped knot vector."""

    def __init__(self, m: int) -> None:
        m = _checks.integer("m (interior control points of the B-spline)", m, 2, MAX_BASIS)
        self.m = m
        self.family = "bspline"
        spans = m - 1
        self.knots = [0.0] * 4 + [i / spans for i in range(1, spans)] + [1.0] * 4

    def __call__(self, t: Tensor) -> Tensor:
        """Basis values: t (n,) in [0, 1] -> (n, m), by the Cox-de Boor recursion."""
        _checks.tensor("t", t, ndim=1)
        k = torch.tensor(self.knots, dtype=t.dtype, device=t.device)
        x = t[:, None]
        # Degree 0: the span containing t (t = 1 belongs to the last span).
        B = ((x >= k[:-1]) & (x < k[1:])).to(t.dtype)
        B[t >= 1, len(self.knots) - 5] = 1.0
        for p in range(1, 4):
            n = len(self.knots) - p - 1
            left = k[p : p + n] - k[:n]
            right = k[p + 1 : p + 1 + n] - k[1 : 1 + n]
            a = torch.where(left > 0, (x - k[:n]) / left.clamp(min=torch.finfo(t.dtype).tiny), 0.0)
            b = torch.where(
                right > 0, (k[p + 1 : p + 1 + n] - x) / right.clamp(min=torch.finfo(t.dtype).tiny), 0.0
            )
            B = a * B[:, :n] + b * B[:, 1 : n + 1]
        return B[:, 1:-1]  # the end control points are z0 and z1

    def __repr__(self) -> str:
        return f"BSplineBasis(m={self.m})"


class PiecewiseLinearBasis:
    """Hat functions of the ``n_nodes - 2`` interior nodes of ``n_nodes >= 3`` equispaced nodes on
    [0, 1]: the polylines of ``method="dense"``.

    Attributes: ``n_nodes``; ``m = n_nodes - 2``, the basis functions."""

    def __init__(self, n_nodes: int) -> None:
        n_nodes = _checks.integer("n_nodes", n_nodes, 3, MAX_BASIS + 2)
        self.n_nodes = n_nodes
        self.m = n_nodes - 2

    def __call__(self, t: Tensor) -> Tensor:
        """Basis values: t (n,) -> (n, n_nodes - 2).

        In units of the node spacing, times within rounding of a node snapped onto it: exact
        zeros where the neighbouring hats end (``1 - |t - t_j| / h`` leaves ~1e-16 there), so
        a grid through the nodes gives the Gauss-Newton matrix its true band (one block, not
        three: the dense oracle's banded steps cost a sixth)."""
        _checks.tensor("t", t, ndim=1)
        s = t * (self.n_nodes - 1)
        near = s.round()
        s = torch.where((s - near).abs() <= 16 * torch.finfo(t.dtype).eps * (self.n_nodes - 1), near, s)
        nodes = torch.arange(1, self.n_nodes - 1, dtype=t.dtype, device=t.device)
        return (1 - (s[:, None] - nodes[None, :]).abs()).clamp(min=0)

    def __repr__(self) -> str:
        return f"PiecewiseLinearBasis(n_nodes={self.n_nodes})"


Basis = BSplineBasis | PolynomialBasis | PiecewiseLinearBasis


def time_grid(n: int, like: Tensor) -> Tensor:
    """``t_n = n / (n_points - 1)``: the (n,) sampling grid of DESIGN §1."""
    return torch.linspace(0, 1, n, dtype=like.dtype, device=like.device)


def straight_line(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """The straight lines ``z0 + t (z1 - z0)``: z0, z1 (B, d) at times t (n,) -> (B, n, d)."""
    return z0[:, None, :] + t[None, :, None] * (z1 - z0)[:, None, :]


def evaluate(z0: Tensor, z1: Tensor, coeffs: Tensor, psi: Tensor, t: Tensor) -> Tensor:
    """Curve points: z0, z1 (B, d), coeffs (B, m, d), psi (n, m) at times t (n,) -> (B, n, d)."""
    # psi @ coeffs per curve (a batched matmul): each curve's points are computed the same way
    # whatever the batch (one GEMM over all curves would round differently with its width).
    return straight_line(z0, z1, t) + torch.matmul(psi, coeffs)


@dataclass
class Curves:
    """A batch of curves ``c_b(t) = z0_b + t (z1_b - z0_b) + sum_j coeffs[b, j] psi_j(t)``.

    Attributes:
        z0, z1: (B, d) end points; coeffs: (B, m, d); basis: the psi functions.
    """

    z0: Tensor
    z1: Tensor
    coeffs: Tensor
    basis: Basis

    def __post_init__(self) -> None:
        # Shapes only (no values, no host sync): the solver makes many of these.
        z0 = _checks.tensor("z0", self.z0, ndim=2)
        _checks.tensor("z1", self.z1, ndim=2)
        _checks.tensor("coeffs", self.coeffs, ndim=3)
        _checks.same_dtype_device([("z0", z0), ("z1", self.z1), ("coeffs", self.coeffs)])
        if not isinstance(self.basis, (BSplineBasis, PolynomialBasis, PiecewiseLinearBasis)):
            raise TypeError(
                "basis must be a fastgeo BSplineBasis, PolynomialBasis or PiecewiseLinearBasis, "
                f"got {type(self.basis).__name__}"
            )
        B, d = z0.shape
        want = (B, self.basis.m, d)
        if self.z1.shape != z0.shape or tuple(self.coeffs.shape) != want:
            raise ValueError(
                f"z0, z1 must be (B, d) and coeffs (B, m, d) with m = basis.m = {self.basis.m}: "
                f"got z0 {tuple(z0.shape)}, z1 {tuple(self.z1.shape)}, coeffs {tuple(self.coeffs.shape)}"
            )

    def points(self, n: int) -> Tensor:
        """The curves sampled at ``t = linspace(0, 1, n)``: (B, n, d); end points exact."""
        n = _checks.integer("n (points per curve)", n, 2)
        t = time_grid(n, self.z0)
        pts = evaluate(self.z0, self.z1, self.coeffs, self.basis(t), t)
        # Pin the end points bit-exactly (psi vanishes there, but rounding of z0 + 1 (z1 - z0) need not).
        pts[:, 0] = self.z0
        pts[:, -1] = self.z1
        return pts

    def at(self, t: Tensor) -> Tensor:
        """The curves at times t (n,) in [0, 1] (converted to the curves' dtype): (B, n, d); end
        points exact where t is 0 or 1."""
        t = _checks.tensor("t", t, ndim=1).to(self.z0)
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError("t must lie in [0, 1] (a curve runs from z0 at 0 to z1 at 1)")
        pts = evaluate(self.z0, self.z1, self.coeffs, self.basis(t), t)
        pts[:, t == 0] = self.z0[:, None]
        pts[:, t == 1] = self.z1[:, None]
        return pts

    def __len__(self) -> int:
        return self.z0.shape[0]


# Curves are plain data (tensors, ints, strings): torch.load's default (weights_only=True) may
# rebuild them, so that a saved GeodesicResult loads without trusting arbitrary code.
torch.serialization.add_safe_globals([Curves, BSplineBasis, PolynomialBasis, PiecewiseLinearBasis])


def fit_polyline(z0: Tensor, z1: Tensor, pts: Tensor, arc: Tensor, psi: Tensor, t: Tensor) -> Tensor:
    """Coefficients (B, m, d) of the curves that best fit polylines (least squares), resampled
    at the times t (n,) by ``arc``.

    Args:
        z0, z1: (B, d) end points; pts: (B, L, d) polyline vertices from z0 to z1.
        arc: (B, L) each vertex's time in [0, 1], non-decreasing (e.g. its arc length over the
            total, for about constant speed).
        psi: (n, m) the basis at t; t: (n,) times from 0 to 1.
    """
    B, d = z0.shape
    tiny = torch.finfo(z0.dtype).tiny
    tq = t.expand(B, -1).contiguous()
    hi = torch.searchsorted(arc.contiguous(), tq, right=True).clamp(1, arc.shape[1] - 1)
    lo = hi - 1
    a_lo, a_hi = arc.gather(1, lo), arc.gather(1, hi)
    frac = ((tq - a_lo) / (a_hi - a_lo).clamp(min=tiny)).clamp(0, 1)
    p_lo = pts.gather(1, lo[..., None].expand(-1, -1, d))
    p_hi = pts.gather(1, hi[..., None].expand(-1, -1, d))
    offset = (p_lo + frac[..., None] * (p_hi - p_lo) - straight_line(z0, z1, t))[:, 1:-1]
    return torch.linalg.pinv(psi[1:-1]) @ offset  # psi vanishes at the end points
