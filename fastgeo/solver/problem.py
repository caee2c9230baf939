"""The pieces every phase of the solver shares: the sampling grid of a curve basis, and the
embedded curve problem (features and their Jacobians, or squared segment lengths, of the curves
of a batch under the full metric)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..curves import Basis, evaluate, time_grid
from ..metric import ExpectedMetric
from .result import Work

# features_jac(points (b, N, d), idx (b,)) -> features (b N, F), transposed Jacobians (b N, d, F)
FeaturesJacobian = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# segments(coeffs (b, m, d), idx (b,)) -> squared segment lengths (b, N-1)
Segments = Callable[[Tensor, Tensor], Tensor]


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


def full_features(metric: ExpectedMetric, work: Work) -> FeaturesJacobian:
    """Features ``[mu, sigma]`` and their transposed Jacobians of the full metric."""

    def features_jac(points: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        work.jvps += points.shape[0] * points.shape[1] * points.shape[2]
        return metric.features_and_jacobian_t(points.reshape(-1, points.shape[-1]))

    return features_jac


def full_segments(metric: ExpectedMetric, z0: Tensor, z1: Tensor, grid: Grid, work: Work) -> Segments:
    """Squared segment lengths ``s_n`` of the full metric for curves ``idx`` (rows of z0, z1)."""

    def segments(coeffs: Tensor, idx: Tensor) -> Tensor:
        work.evals += idx.numel() * grid.n
        return metric.segment_sqdist(evaluate(z0[idx], z1[idx], coeffs, grid.psi, grid.t))

    return segments
