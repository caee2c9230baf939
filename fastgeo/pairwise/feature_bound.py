"""A lower bound of geodesic distances, free once every code is decoded.

The discrete length of a curve is ``sum_n ||f(c_(n+1)) - f(c_n)||`` with ``f = [mu, sigma]``
(DESIGN §1), at least ``||f(z1) - f(z0)||`` by the triangle inequality, and so is the length of
any smooth curve: two codes' distance in feature space bounds their geodesic distance from below.
Between near codes of trained VAEs it is 0.83-1.0 of the geodesic distance (0.92-1.0 in 2-D),
between far ones 0.2-0.9 (bench/RESULTS.md, "Nearest neighbours").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..metric import ExpectedMetric

# The bound is computed from features rounded in the metric's dtype: it is lowered by this many
# units of rounding of both codes' feature norms (and a relative 1e-6 for the float64 distances),
# so that rounding never rules out a code that is nearer.
ROUNDING_UNITS = 16
RELATIVE_MARGIN = 1e-6
ROW_BLOCK = 512  # codes per block of the bound's distance rows (and of decoding)
COL_BLOCK = 4096  # codes per block of the bound's columns (features in float64)


def decoded_features(metric: ExpectedMetric, z: Tensor) -> Tensor:
    """``[mu, sigma](z)`` up to an isometry of differences (:meth:`ExpectedMetric.embedding`:
    fewer values where the mean ends with a widening linear layer) (N, F + D), in the metric's
    dtype, decoded in blocks of codes."""
    return torch.cat([metric.embedding(z[i : i + ROW_BLOCK]) for i in range(0, z.shape[0], ROW_BLOCK)])


def finite_features(metric: ExpectedMetric, nodes: Tensor, M: int, symmetric: bool) -> Tensor:
    """The features ``[mu, sigma]`` of ``nodes`` (N, d): the M codes of Z, then (unless
    ``symmetric``) those of Y. ValueError naming the codes where they are not finite (no curve
    from such a code has a length)."""
    if nodes.shape[0] == 0:
        return nodes.new_zeros(0, 2 * metric.data_dim)
    with torch.no_grad():
        features = decoded_features(metric, nodes)
    bad = (~torch.isfinite(features).all(1)).nonzero()[:, 0].tolist()
    if bad:
        names = [f"Z[{i}]" if i < M or symmetric else f"Y[{i - M}]" for i in bad[:3]]
        raise ValueError(
            f"the metric's features [mu, sigma] are not finite at {len(bad)} code(s), e.g. "
            f"{', '.join(names)} = {nodes[bad[0]].tolist()}: the decoder mean is NaN or inf there "
            "(check it, and the RBF precision's zeta > 0)"
        )
    return features


class FeatureBounds:
    """Lower bounds of the geodesic distances from the queries (the first ``M`` of ``nodes``
    (N, d)) to the references (all nodes, or those after the first ``M``): their features'
    distances, lowered by a rounding margin."""

    def __init__(self, metric: ExpectedMetric, nodes: Tensor, M: int, symmetric: bool) -> None:
        features = finite_features(metric, nodes, M, symmetric)  # NaN bounds would certify rows never solved
        eps = torch.finfo(metric.dtype).eps
        self.queries = features[:M]
        self.refs = features if symmetric else features[M:]
        self.symmetric = symmetric
        norms = features.double().norm(dim=1).cpu()
        self.q_norm = norms[:M]
        self.r_norm = norms if symmetric else norms[M:]
        self.eps = eps

    def candidates(self, cap: int) -> tuple[Tensor, Tensor, Tensor]:
        """Per query its ``cap`` references of lowest bound: indices (M, cap) int64 and bounds
        (M, cap) float64, ascending, and the bound (M,) of every reference not in its list (the
        lowest of them; inf where the list holds them all)."""
        M, P = self.queries.shape[0], self.refs.shape[0]
        idx, lb, beyond = [], [], []
        for r0 in range(0, M, ROW_BLOCK):
            q = self.queries[r0 : r0 + ROW_BLOCK].double()
            blocks = [torch.cdist(q, self.refs[c : c + COL_BLOCK].double()) for c in range(0, P, COL_BLOCK)]
            row = torch.cat(blocks, dim=1).cpu()
            margin = ROUNDING_UNITS * self.eps * (self.q_norm[r0 : r0 + ROW_BLOCK, None] + self.r_norm[None])
            row = (row * (1 - RELATIVE_MARGIN) - margin).clamp(min=0)
            if self.symmetric:  # a code is not its own neighbour
                diag = torch.arange(r0, r0 + q.shape[0], device=row.device)
                row[diag - r0, diag] = torch.inf
            n = min(cap + 1, P)
            values, where = row.topk(n, dim=1, largest=False, sorted=True)
            idx.append(where[:, :cap])
            lb.append(values[:, :cap])
            rest = (
                values[:, cap]
                if n > cap
                else torch.full((q.shape[0],), torch.inf, dtype=torch.float64, device=values.device)
            )
            beyond.append(rest)
        return torch.cat(idx), torch.cat(lb), torch.cat(beyond)
