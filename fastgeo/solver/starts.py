"""The starts of a curve: the straight line, the paper's warm start on the RBF alone, a given
initialization, the shortest path on the latent graph (:mod:`fastgeo.solver.graph`), and the
explored start (a few Adam steps of the full energy from the straight line)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..curves import evaluate
from ..metric import ExpectedMetric
from .corridors import corridor_starts
from .first_order import adam
from .graph import LatentGraph
from .levenberg_marquardt import levenberg_marquardt
from .problem import MIN_ROWS, Grid, full_segments
from .result import EXPLORED, GIVEN, GRAPH, STRAIGHT, WARM, Work

WARM_TOL = 1e-4  # only a start: a loose tolerance, the full energy decides the rest
# Step of the explored start's Adam, in chords ||z1 - z0||: its first steps move every coefficient
# by about this much (0.01: one of five hard pairs of a d = 12 conv decoder missed its basin;
# 0.02-0.04 found all).
EXPLORE_LR = 0.02


def warm_start(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    grid: Grid,
    method: str,
    max_iter: int,
    tol: float,
    work: Work,
    secant: bool = True,
) -> tuple[Tensor, Tensor]:
    """The paper's warm start: the curve optimized against the RBF precision alone.
    Returns coefficients (B, m, d) and the iterations spent (B,).

    Energy of the embedding ``[sqrt(kappa) z, sigma(z)]``: sigma is flat and small on the data and
    changes fast at its edges, so minimizers stay on the ridges of the precision; the Euclidean
    term (kappa: squared decoder stretch of the straight line, per curve) keeps the problem
    well posed where sigma is constant.
    """
    B, d = z0.shape
    N = grid.n
    with torch.no_grad():
        # Both ends in one call of at least MIN_ROWS rows: BLAS takes other paths for tiny
        # matrices, and a curve's start must not depend on how many curves share its batch.
        ends = torch.cat([z0, z1])
        padded = torch.cat([ends, ends[:1].expand(max(0, MIN_ROWS - 2 * B), d)])
        mu = metric.decode(padded)
        dmu = mu[B : 2 * B] - mu[:B]
    work.add(evals=2 * B)
    dz2 = (z1 - z0).pow(2).sum(-1)
    kappa = torch.where(dz2 > 0, dmu.pow(2).sum(-1) / dz2.clamp(min=torch.finfo(dz2.dtype).tiny), 1.0)
    kappa = torch.where(kappa > 0, kappa, 1.0)
    prec = metric.precision
    sqrt_kappa = kappa.sqrt()

    def segments(coeffs: Tensor, idx: Tensor) -> Tensor:
        pts = evaluate(z0[idx], z1[idx], coeffs, grid.psi, grid.t)
        return kappa[idx, None] * (pts[:, 1:] - pts[:, :-1]).pow(2).sum(-1) + prec.segment_sqdist(pts)

    def parts(points: Tensor, idx: Tensor) -> list[tuple[Tensor, Tensor]]:
        b = idx.numel()
        sigma, j_sigma = prec.sigma_and_jacobian_t(points.reshape(b * N, d))
        sk = sqrt_kappa[idx][:, None, None]
        eye = torch.eye(d, dtype=points.dtype, device=points.device)
        euclid = (sk * points, (sk[..., None] * eye).expand(b, N, d, d))
        return [euclid, (sigma.reshape(b, N, -1), j_sigma.reshape(b, N, d, -1))]

    start = torch.zeros(B, grid.psi.shape[1], d, dtype=z0.dtype, device=z0.device)
    everyone = torch.arange(B, device=z0.device)
    tol = max(tol, WARM_TOL)
    if method == "paper":
        coeffs, _, _, it = adam(segments, start, segments(start, everyone), max_iter, tol, z0, z1)
    else:
        coeffs, _, _, it = levenberg_marquardt(parts, z0, z1, start, grid, max_iter, tol, secant=secant)
    return coeffs, it


def starts(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    m: int,
    fine: Grid,
    coarse: Grid,
    method: str,
    warm_iter: int,
    tol: float,
    init: Tensor | None,
    graph: LatentGraph | None,
    corridors: int,
    work: Work,
    secant: bool = True,
    explore_iter: int = 0,
) -> tuple[list[tuple[int, Tensor]], Tensor]:
    """Every start of every curve: [(start code of :data:`INIT_NAMES`, coefficients (B, m, d))],
    and the iterations spent making them (B,). The warm start runs on the ``coarse`` grid; graph
    paths are fitted on the ``fine`` one."""
    B, d = z0.shape
    iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
    found = [(STRAIGHT, torch.zeros(B, m, d, dtype=z0.dtype, device=z0.device))]
    if init is not None:
        found.append((GIVEN, init))
    if warm_iter and B > 0:
        warm, warm_it = warm_start(metric, z0, z1, coarse, method, warm_iter, tol, work, secant)
        iterations += warm_it
        found.append((WARM, warm))
    if explore_iter and B > 0:
        found.append((EXPLORED, explored_start(metric, z0, z1, coarse, explore_iter, work)))
    if graph is not None and B > 0 and corridors > 0:
        paths, evals = corridor_starts(graph, z0, z1, fine.psi, fine.t, corridors)
        found += [(GRAPH, c) for c in paths]
        work.add(evals=evals)
    return found, iterations


def explored_start(
    metric: ExpectedMetric, z0: Tensor, z1: Tensor, grid: Grid, iterations: int, work: Work
) -> Tensor:
    """The explored start: ``iterations`` Adam steps of the full energy on ``grid`` from the
    straight line, the best iterate per curve (B, m, d).

    Gauss-Newton from the straight line goes to the basin its first steps point at; where a
    decoder has several (a trained d = 12 conv decoder: 1.3-7.6 % longer curves on 2 of 16 pairs),
    Adam's first steps, about EXPLORE_LR chords along every coefficient's sign at once, often
    leave it for a shorter one. The race then takes the shorter of the starts. Costs
    ``iterations`` reverse-mode gradients on the coarse grid per curve."""
    B, d = z0.shape
    segments = full_segments(metric, z0, z1, grid, work)
    start = torch.zeros(B, grid.psi.shape[1], d, dtype=z0.dtype, device=z0.device)
    everyone = torch.arange(B, device=z0.device)
    with torch.no_grad():
        s = segments(start, everyone)
    coeffs, _, _, _ = adam(segments, start, s, iterations, 0.0, z0, z1, lr=EXPLORE_LR)
    return coeffs
