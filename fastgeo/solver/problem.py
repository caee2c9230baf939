"""The pieces every phase of the solver shares: the sampling grid of a curve basis, and the
embedded curve problem (features and their Jacobians, or squared segment lengths, of the curves
of a batch under the full metric)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..curves import Basis, evaluate, time_grid
from ..metric import ExpectedMetric
from .result import Work

# parts(points (b, N, d), idx (b,)) -> [(features (b, N, F_i), transposed Jacobians (b, N, d, F_i))]
Parts = Callable[[Tensor, Tensor], list[tuple[Tensor, Tensor]]]
# segments(coeffs (b, m, d), idx (b,)) -> squared segment lengths (b, N-1)
Segments = Callable[[Tensor, Tensor], Tensor]
# gradient(points (b, N, d), idx (b,)) -> squared segment lengths (b, N-1) and the gradient of
# sum_n s_n / 2 in the points (b, N, d)
PointGradient = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

MIN_ROWS = 64  # rows of the smallest decoder call (BLAS takes other paths for tiny matrices)


@dataclass(frozen=True)
class Grid:
    """A basis sampled at ``n`` equispaced times: t (n,), psi (n, m)."""

    t: Tensor
    psi: Tensor

    @classmethod
    def of(cls, basis: Basis, n: int, like: Tensor) -> Grid:
        t = time_grid(n, like)
        return cls(t, basis(t))

    @property
    def n(self) -> int:
        return self.t.shape[0]


def full_parts(metric: ExpectedMetric, work: Work, tangent_dtype: torch.dtype | None = None) -> Parts:
    """The embedding ``[mu, sigma]`` of the full metric as two parts: the decoder mean (up to an
    isometry of differences: :meth:`~fastgeo.metric.ExpectedMetric.mean_embedding`; stacked
    forward mode, its tangents pushed in ``tangent_dtype`` if given) and sigma (closed form), with
    their transposed Jacobians."""

    def parts(points: Tensor, idx: Tensor) -> list[tuple[Tensor, Tensor]]:
        b, N, d = points.shape
        work.add(jvps=b * N * d)
        flat = points.reshape(b * N, d)
        mu, j_mu = metric.mean_embedding_jacobian_rows(flat, tangent_dtype)  # (P, F), (d, P, F)
        sigma, j_sigma = metric.precision.sigma_and_jacobian_t(flat)  # (P, D), (P, d, D)
        F, D = mu.shape[-1], sigma.shape[-1]
        return [
            (mu.reshape(b, N, F), j_mu.permute(1, 0, 2).reshape(b, N, d, F)),
            (sigma.reshape(b, N, D), j_sigma.reshape(b, N, d, D)),
        ]

    return parts


def full_gradient(metric: ExpectedMetric, work: Work) -> PointGradient:
    """The gradient of the full metric's energy in the points of a batch of curves, by reverse
    mode through the decoder mean and sigma: one forward and one backward pass per point, whatever
    the latent dimension (a linearization pushes d tangents per point)."""

    def gradient(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        b, N, d = points.shape
        work.add(evals=b * N)
        flat = points.detach().reshape(b * N, d)
        # At least MIN_ROWS rows: a curve's result must not depend on how many curves share its call.
        pad = max(0, MIN_ROWS - b * N)
        flat = torch.cat([flat, flat[:1].expand(pad, d)]).requires_grad_(True)
        with torch.enable_grad():
            f = metric.features(flat)[: b * N].reshape(b, N, -1)
            s = (f[:, 1:] - f[:, :-1]).pow(2).sum(-1)
            (g,) = torch.autograd.grad(s.sum() / 2, flat)
        return s.detach(), g[: b * N].reshape(b, N, d)

    return gradient


def full_segments(metric: ExpectedMetric, z0: Tensor, z1: Tensor, grid: Grid, work: Work) -> Segments:
    """Squared segment lengths ``s_n`` of the full metric for curves ``idx`` (rows of z0, z1)."""

    def segments(coeffs: Tensor, idx: Tensor) -> Tensor:
        work.add(evals=idx.numel() * grid.n)
        return metric.segment_sqdist(evaluate(z0[idx], z1[idx], coeffs, grid.psi, grid.t))

    return segments
