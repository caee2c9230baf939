"""StochMan's default geodesic solver (``connecting_geodesic``) on our metric, all pairs in one
batched call: the peer every benchmark compares with (``pip install stochman``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..metric import ExpectedMetric


def stochman_geodesics(
    metric: ExpectedMetric, n_points: int
) -> tuple[Callable[[Tensor, Tensor], Tensor], str] | None:
    """``(run, label)``: ``run(z0, z1)`` (B, d) each -> StochMan's curves sampled at ``n_points``
    equispaced times (B, n_points, d), detached; None if stochman is not importable."""
    try:
        import stochman
        from stochman.manifold import EmbeddedManifold
    except ImportError:
        return None

    class Generator(EmbeddedManifold):
        """The generator as an embedded manifold: embed = [mu, sigma] has our energy (x2)."""

        def embed(self, c: Tensor, jacobian: bool = False) -> Tensor:
            return metric.features(c)

    manifold = Generator()

    def run(z0: Tensor, z1: Tensor) -> Tensor:
        t = torch.linspace(0, 1, n_points, dtype=z0.dtype, device=z0.device)
        curve, _ = manifold.connecting_geodesic(z0.clone(), z1.clone())
        with torch.no_grad():
            return curve(t).reshape(z0.shape[0], n_points, -1).detach()

    return run, f"StochMan {stochman.__version__}"
