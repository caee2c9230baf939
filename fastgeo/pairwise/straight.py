"""Straight segments between codes, measured: shortcuts of the graph mode in latent dimension >= 4.

A straight segment is a curve, so its length bounds the distance from above, as a chain of the code
graph's geodesics does. In d >= 4 few codes are much nearer to each other than the rest, and chains
through them zig-zag, while the straight segment between the ends is often far shorter than the
chain. On 256 codes, against exact geodesics on 200 random pairs (bench/RESULTS.md, "Straight
segments in the graph mode"): a d = 10 decoder with a linear last layer (``mlp10_cells``) 16.9 %
above on average with chains alone, 2.2 % with the segments; a d = 16 sigmoid MLP (``mlp16_shapes``)
39.1 % and 21.8 %; the 2-D digits VAE 1.01 % and 0.87 %. A segment costs one forward pass on 17-65
points and no tangents: 0-14 % more time in d >= 10 beside edges solved as geodesics (drafts, the
graph mode's default edges since, cost less), and 1.36x in 2-D, where the default leaves them out.

Each segment is measured (:func:`fastgeo.solver.measure.measure`) to the relative error the
solver measures its straight lines to (``LINE_RTOL``, 1e-3: graph distances are estimates, a few
percent off), and its length taken with the error estimate added: a discrete length grows
towards the curve's length as points are added, so the sum is the best estimate of the
segment's length, and not below a geodesic's on an edge whose chain is the edge itself.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ..curves import Curves, PolynomialBasis
from ..metric import ExpectedMetric
from ..solver.defaults import HIGH_DIM
from ..solver.fallback import LINE_RTOL
from ..solver.measure import measure
from ..solver.result import GRAPH_ESTIMATE, Work
from .pair_list import Solve

START_POINTS = 17
MAX_PAIRS = 1 << 21  # by default measured for up to this many pairs (M ~ 2,000 codes)
CHUNK = 4096  # segments per chunk (the measurement bounds its own memory)
BLOCK = 1 << 21  # pairs listed at once (~50 bytes each): blocks of rows beyond it


def straight_solver(metric: ExpectedMetric) -> Solve:
    """``solve(z0, z1)``: the record of a chunk of straight segments (lengths with their error
    estimate added, inf where not finite; status ``graph_estimate``; decoder evaluations)."""
    return functools.partial(_measure, metric)


def _measure(metric: ExpectedMetric, z0: Tensor, z1: Tensor) -> dict[str, Any]:
    B, d = z0.shape
    work = Work()
    curves = Curves(z0, z1, z0.new_zeros(B, 1, d), PolynomialBasis(1))  # zero coefficients: straight
    start = torch.full((B,), START_POINTS, dtype=torch.long, device=z0.device)
    with torch.no_grad():
        lengths, errors, _ = measure(metric, curves, start, work, rtol=LINE_RTOL)
    upper = (lengths + errors).double()
    upper = torch.where(torch.isfinite(upper), upper, torch.full_like(upper, torch.inf))
    status = torch.full((B,), GRAPH_ESTIMATE, dtype=torch.int64, device=z0.device)
    return {"lengths": upper, "status": status, "decoder_evals": work.evals, "decoder_jvps": 0}


def default_on(latent_dim: int, n_pairs: int) -> bool:
    """Whether the graph mode measures straight segments by default: in d >= 4 (in d <= 3 the
    codes are dense and chains within ~1 % of the geodesics; segments there cross the walls chains
    go around) and up to ``MAX_PAIRS`` pairs (their cost grows as M^2, the edges' as M)."""
    return latent_dim >= HIGH_DIM and n_pairs <= MAX_PAIRS
