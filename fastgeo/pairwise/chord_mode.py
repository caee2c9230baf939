"""``pairwise_distances(mode="chord")``: every distance estimated from the codes alone, fitted to
exact geodesics on a sample, for matrices of tens of thousands of codes in latent d >= 4.

Each code is decoded once, with its metric tensor ``G = J^T J`` (d tangents). A pair's chord in
feature space ``c = ||f(z1) - f(z0)||`` (``f = [mu, sigma]``) bounds its distance from below
(:mod:`.feature_bound`), and the straight segment's length under the metric frozen at either end,
``a0 = sqrt(v^T G(z0) v)`` and ``a1`` (``v = z1 - z0``), says how the decoder stretches that
direction there, and shortest paths through the codes ``pF`` (feature space) and ``pZ`` (latent
space) say how far the chord strays from where the codes are (:mod:`.chord_paths`). The ratio of
the distance to the chord is fitted on the error sample's geodesics (solved by ``method="fast"``
unless the call names a method), by least squares in logs:

    log(distance / c) = w0 + w1 log(sqrt(a0 a1) / c) + w2 log c + w3 log |v|
                        + w4 log(pF / c) + w5 log(pZ / c)

and every other entry gets ``c`` times the predicted ratio (the covariates clamped near the
sample's range, the ratio to at least 1: the chord is a lower bound). The entries are neither
upper nor lower bounds; the report's ``chord_error`` gives the estimates' relative error on the
sample, each sampled pair predicted by the fit without it (leave-one-out), and the sampled
entries hold their solved lengths.

Why: in latent d >= 4 the graph mode's chains of near codes zig-zag (10,000 codes of a d = 10
decoder: 77 % above the geodesics on average), and drafts of every pair cost ~10-60 ms each.
10,000 codes of trained VAEs (d = 5-64, MLP and convolutional decoders; 100 held-out pairs):
mean |error| 1.3-3.4 % on the MLPs, 4.8 % and 5.3 % on two convolutional decoders (without the
paths 1.5-3.9 %, 5.3 % and 9.9 %); a 2-D digits VAE 2.1 % (1,000 codes; the graph mode's chains
0.95 %). bench/RESULTS.md, "Chord estimates" and "Chord estimates with paths through the codes".
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._progress import DELAY, call_bar
from ..metric import ExpectedMetric
from ..solver.result import CHORD_ESTIMATE, CONVERGED
from .chord_paths import path_graphs, path_lengths, path_rows
from .chunks import dist_info
from .code_graph import CodeGraph
from .error_sample import EstimateError, draw_sample, entries_of_pairs, estimate_error, node_indices
from .feature_bound import decoded_features
from .pair_list import pair_solver, solve_pair_list

MIN_SAMPLE = 20  # sampled pairs the fit needs (it has 6 coefficients)
# The sample's solver where the call names no method: fitted to `fast` curves (0.02-0.13 % longer on
# average than the default's, a few pairs in other basins) the estimates of 100 held-out pairs moved
# by <= 0.02 points of mean |error| (mlp16_shapes 3.33 -> 3.35 %, conv5_small 5.27 -> 5.26 %,
# conv8_shapes 5.46 -> 5.45 %) for 3.7-4.6x less CPU time in the sample (bench/RESULTS.md, "Distances
# differentiable in their end points; what did not pay").
CHORD_SAMPLE_METHOD = "fast"
N_COVARIATES = 5
PATHS = slice(3, 5)  # the covariates of paths through the codes (inf where the graphs do not join)
# Covariates are clamped to the sample's range widened by this much of its width on each side: the
# log-linear fit extrapolates a little, never far (on 48-64 pairs of seven trained VAEs, leave-one-
# out, no clamp, this one and none beyond the range differ by <= 0.07 points of mean |error|).
MARGIN = 0.25
BLOCK_BYTES = 1 << 27  # float64 working memory of one block of entries (differences, products)
JACOBIAN_BYTES = 1 << 28  # Jacobians of one block of codes' metric tensors


@dataclass
class ChordFit:
    """``log(distance / chord) = weights . [1, covariates]``, the covariates (k, 5) clamped to
    ``[lo, hi]`` (the sample's range, widened by :data:`MARGIN`) and the log-ratio to at least 0."""

    weights: Tensor
    lo: Tensor
    hi: Tensor

    def ratio(self, x: Tensor) -> Tensor:
        """Distance over chord for covariates ``x`` (..., 5) float64: (...)."""
        x = torch.maximum(torch.minimum(x, self.hi.to(x.device)), self.lo.to(x.device))
        w = self.weights.to(x.device)
        return (w[0] + x @ w[1:]).clamp(min=0).exp()


@dataclass
class Codes:
    """Every node as the chord mode holds it (float64, CPU): features ``F`` (n, f), metric
    tensors ``G`` (n, d, d), codes ``Z`` (n, d), and the feature- and latent-space neighbour
    ``graphs`` (:func:`.chord_paths.path_graphs`)."""

    F: Tensor
    G: Tensor
    Z: Tensor
    graphs: tuple[CodeGraph, CodeGraph]

    def paths(self, sources: Tensor) -> Tensor:
        """Shortest-path lengths (2, S, n) on both graphs from the nodes ``sources`` (S,)."""
        return path_lengths(self.graphs, sources)


def code_data(metric: ExpectedMetric, nodes: Tensor) -> Codes:
    """:class:`Codes` of ``nodes`` (n, d): each decoded once, with its metric tensor."""
    with torch.no_grad():
        F = decoded_features(metric, nodes).double().cpu()
    G = metric_tensors(metric, nodes).cpu()
    Z = nodes.double().cpu()
    return Codes(F, G, Z, path_graphs(F, G, Z))


def covariates(chord: Tensor, a0: Tensor, a1: Tensor, step: Tensor, paths: Tensor) -> Tensor:
    """The fit's covariates (..., 5) float64 of pairs with feature-space ``chord``, frozen-metric
    lengths ``a0``, ``a1``, latent distance ``step`` (all (...) float64, positive) and path
    lengths through the codes ``paths`` (2, ...) (feature and latent graph; inf: not joined)."""
    tiny = torch.finfo(torch.float64).tiny
    c, a, v = chord.clamp(min=tiny), (a0 * a1).clamp(min=tiny).sqrt(), step.clamp(min=tiny)
    return torch.stack([(a / c).log(), c.log(), v.log(), (paths[0] / c).log(), (paths[1] / c).log()], dim=-1)


def fit_ratio(x: Tensor, lengths: Tensor, chord: Tensor) -> tuple[ChordFit, Tensor]:
    """Least squares of ``log(lengths / chord)`` on ``[1, x]`` (x (k, 5) float64; pairs with a
    zero or non-finite length or chord left out; a path covariate that is inf, ends the graphs do
    not join, taken as the sample's largest), the covariates' clamp the sample's range widened
    by :data:`MARGIN` of its width on each side. Returns the fit and every usable pair's
    leave-one-out ratio (k,): the prediction, clamps included, of the fit on the other pairs (NaN
    for pairs left out, and where the others do not determine the fit). With fewer than
    :data:`MIN_SAMPLE` usable pairs, the intercept alone."""
    y = (lengths / chord).log()
    x = _unjoined_as_largest(x)
    ok = torch.isfinite(y) & torch.isfinite(x).all(1) & (lengths > 0) & (chord > 0)
    X = torch.cat([torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device), x], 1)
    if int(ok.sum()) < MIN_SAMPLE:
        X = X.clone()
        X[:, 1:] = 0  # too few pairs for the covariates: the mean log-ratio
    Xk, yk, xk = X[ok], y[ok], x[ok]
    loo = torch.full_like(y, float("nan"))
    if xk.shape[0] == 0:
        zeros = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        return ChordFit(torch.zeros(x.shape[1] + 1, dtype=torch.float64, device=x.device), zeros, zeros), loo
    inv = torch.linalg.pinv(Xk.T @ Xk)
    w = inv @ (Xk.T @ yk)
    lo, hi = _widened(xk.min(0).values, xk.max(0).values)
    # Without pair k (Sherman-Morrison): w - inv x_k r_k / (1 - h_k), its covariates clamped to
    # the other pairs' range.
    residual = yk - Xk @ w
    spread = Xk @ inv
    left = 1 - (spread * Xk).sum(1)  # 1 - leverage; 0 where pair k alone fixes a coefficient
    w_out = w - spread * (residual / left.clamp(min=1e-9))[:, None]
    lo_out, hi_out = _widened(*_others_range(xk))
    x_out = torch.maximum(torch.minimum(xk, hi_out), lo_out)
    pred = (w_out[:, 0] + (x_out * w_out[:, 1:]).sum(1)).clamp(min=0).exp()
    loo[ok] = torch.where(left > 1e-9, pred, torch.nan)
    return ChordFit(w, lo, hi), loo


def _unjoined_as_largest(x: Tensor) -> Tensor:
    """``x`` (k, 5) with each path covariate that is +inf replaced by its column's largest
    finite value (the clamp of :meth:`ChordFit.ratio` does the same to the sample's widened
    range)."""
    paths = x[:, PATHS]
    inf = torch.isposinf(paths)
    if not bool(inf.any()):
        return x
    largest = torch.where(torch.isfinite(paths), paths, -torch.inf).max(0).values
    x = x.clone()
    x[:, PATHS] = torch.where(inf & torch.isfinite(largest), largest, paths)
    return x


def _widened(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """``[lo, hi]`` widened by :data:`MARGIN` of its width on each side."""
    pad = MARGIN * (hi - lo)
    return lo - pad, hi + pad


def _others_range(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per row k of ``x`` (k, c): the columns' min and max over the other rows (k, c) (a row's
    own value where it is the only row)."""
    if x.shape[0] < 2:
        return x, x
    low, high = x.topk(2, dim=0, largest=False).values, x.topk(2, dim=0).values
    lo = torch.where(x == low[0], low[1], low[0])
    hi = torch.where(x == high[0], high[1], high[0])
    return lo, hi


def metric_tensors(metric: ExpectedMetric, nodes: Tensor) -> Tensor:
    """``G(z) = J^T J`` (n, d, d) float64 of every node, in blocks of nodes."""
    d, width = metric.latent_dim, 2 * metric.data_dim
    per = max(1, JACOBIAN_BYTES // (d * width * max(4, metric.dtype.itemsize)))
    with torch.no_grad():
        return torch.cat(
            [metric.metric_tensor(nodes[i : i + per]).double() for i in range(0, nodes.shape[0], per)]
        )


def _blocks(R: int, C: int, d: int, n: int, symmetric: bool) -> Iterator[tuple[slice, slice]]:
    """Blocks of entries (row slice, column slice) of at most :data:`BLOCK_BYTES` of
    differences, and of the rows' path lengths to all ``n`` nodes; symmetric: the blocks on and
    above the diagonal; row by row (the rows' paths are found once)."""
    side = max(1, min(int((BLOCK_BYTES / (8 * (d + 4))) ** 0.5), BLOCK_BYTES // (16 * n)))
    for r0 in range(0, R, side):
        for c0 in range(r0 if symmetric else 0, C, side):
            yield slice(r0, min(R, r0 + side)), slice(c0, min(C, c0 + side))


def _quad(v: Tensor, G: Tensor) -> Tensor:
    """``sqrt(v^T G v)`` for differences ``v`` (n, m, d) and one matrix per row ``G`` (n, d, d):
    (n, m)."""
    return ((v @ G) * v).sum(-1).clamp(min=0).sqrt()


def pair_covariates(codes: Codes, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """The chords (k,) and covariates (k, 5) of the pairs ``(a[k], b[k])`` of node indices."""
    F, G, Z = codes.F, codes.G, codes.Z
    chord = (F[a] - F[b]).norm(dim=-1)
    v = (Z[b] - Z[a])[:, None]
    a0, a1 = _quad(v, G[a])[:, 0], _quad(v, G[b])[:, 0]
    sources, row = torch.unique(a, return_inverse=True)
    paths = codes.paths(sources)[:, row, b]
    return chord, covariates(chord, a0, a1, v[:, 0].norm(dim=-1), paths)


def block_covariates(
    codes: Codes, r: Tensor, c: Tensor, paths: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`pair_covariates` of every pair of a block: rows ``r`` (R,) by columns ``c`` (C,):
    chords (R, C) and covariates (R, C, 5); ``paths`` (2, R, n): the rows' path lengths, if
    found already."""
    F, G, Z = codes.F, codes.G, codes.Z
    chord = torch.cdist(F[r], F[c])
    v = Z[c][None] - Z[r][:, None]  # (R, C, d)
    a0, a1 = _quad(v, G[r]), _quad(v.transpose(0, 1), G[c]).T
    paths = codes.paths(r) if paths is None else paths
    return chord, covariates(chord, a0, a1, v.norm(dim=-1), paths[:, :, c])


def _fill(
    fit: ChordFit,
    codes: Codes,
    rows: Tensor,
    cols: Tensor,
    symmetric: bool,
    out: Tensor,
    status: Tensor,
    show: bool,
    workers: int = 1,
) -> int:
    """Every entry of ``out`` (R, C): chord times the fitted ratio (inf where not finite), but 0
    between equal nodes (a code in both sets), with the status ``converged`` in ``status``;
    returns how many entries (pairs ``i < j`` where symmetric) are not finite. The rows' paths
    are found ``workers`` blocks of rows at a time, over as many processes."""
    R, C = out.shape
    blocks = list(_blocks(R, C, codes.Z.shape[1], codes.Z.shape[0], symmetric))
    row_blocks = list(dict.fromkeys((rs.start, rs.stop) for rs, _ in blocks))
    nonfinite = 0
    paths: dict[int, Tensor] = {}
    with call_bar(len(blocks), show, "chord estimates", "block", DELAY) as bar:
        for rs, cs in blocks:
            if rs.start not in paths:
                group = [b for b in row_blocks if b[0] >= rs.start][:workers]
                found = path_rows(codes.graphs, rows[rs.start : group[-1][1]], workers)
                paths = {lo: found[:, lo - rs.start : hi - rs.start] for lo, hi in group}
            chord, x = block_covariates(codes, rows[rs], cols[cs], paths[rs.start])
            est = chord * fit.ratio(x)
            equal = rows[rs][:, None] == cols[cs][None]
            est = torch.where(equal, torch.zeros_like(est), est)
            if bool(equal.any()):
                status[rs, cs][equal.to(status.device)] = CONVERGED
            bad = ~torch.isfinite(est)
            nonfinite += int((torch.triu(bad, 1) if symmetric and rs == cs else bad).sum())
            est = torch.where(bad, torch.full_like(est, torch.inf), est)
            if symmetric and rs == cs:  # exactly symmetric: the upper triangle mirrored
                est = torch.triu(est) + torch.triu(est, 1).T
            est = est.to(out.dtype).to(out.device)
            out[rs, cs] = est
            if symmetric:
                out[cs, rs] = est.T
            if bar is not None:
                bar.update(1)
    return nonfinite


def run_chord_mode(
    metric: ExpectedMetric,
    pts: Tensor,
    Y: Tensor | None,
    options: dict[str, Any],
    matrix: Tensor,
    chunk_size: int,
    error_sample: int,
    progress: bool,
    workers: int,
) -> tuple[Tensor, Tensor, Tensor, int, dict[str, Any]]:
    """Chord mode into ``matrix`` (distinct ``pts`` (M, d), optional ``Y`` (P, d)): the
    ``error_sample`` pairs solved by ``geodesics(**options)`` in chunks of ``chunk_size`` over
    ``workers``, the fit, every entry estimated. Returns the status codes (int8: the sample's
    solver statuses, ``chord_estimate`` elsewhere), iterations (zeros), the work counts, the world
    size and the report's extra fields."""
    show = progress and dist_info()[0] == 0
    symmetric = Y is None
    nodes, rows, cols = node_indices(pts, Y)
    codes = code_data(metric, nodes)
    _, _, a, b = draw_sample(rows, cols, symmetric, error_sample)
    solve = pair_solver(metric, options)
    solved = solve_pair_list(nodes, a, b, solve, chunk_size, workers, show, "error sample", "pair")
    chord, x = pair_covariates(codes, a, b)
    fit, loo = fit_ratio(x, solved.lengths, chord)
    status = torch.full(matrix.shape, CHORD_ESTIMATE, dtype=torch.int8, device=matrix.device)
    nonfinite = _fill(fit, codes, rows.cpu(), cols.cpu(), symmetric, matrix, status, show, workers)
    if nonfinite:
        warnings.warn(
            f"fastgeo.pairwise_distances: {nonfinite} chord estimates are not finite (inf in the matrix): "
            "the decoder's mean, sigma or their Jacobian is not finite at some codes",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    error = _loo_error(loo * chord, solved.lengths)
    method = options.get("method", "default")
    if method != "default":  # (the mode's own default is `fast`: its reports said "exact" of them)
        error.reference = f"geodesics by method={method!r}"
    # Sampled entries hold their geodesic; one that is not finite keeps a finite estimate.
    ei, ej, s = entries_of_pairs(rows, cols, a, b)  # both orders, repeated codes
    ii, jj, s = ei.to(matrix.device), ej.to(matrix.device), s.to(matrix.device)
    lengths, solved_status = solved.lengths.to(matrix.device)[s], solved.status.to(matrix.device)[s]
    exact = torch.isfinite(lengths) | ~torch.isfinite(matrix[ii, jj])
    ii, jj = ii[exact], jj[exact]
    matrix[ii, jj] = lengths[exact].to(matrix.dtype)
    status[ii, jj] = solved_status[exact].to(torch.int8)
    iterations = torch.zeros((), dtype=torch.int32, device=matrix.device).expand(matrix.shape)
    n = nodes.shape[0]
    counts = torch.tensor(
        [solved.decoder_evals + 2 * n, solved.decoder_jvps + n * metric.latent_dim, 0, 0], device="cpu"
    )
    extra = {"chord_error": error, "chord_fit": fit}
    return status, iterations, counts, dist_info()[1], extra


def _loo_error(estimate: Tensor, exact: Tensor) -> EstimateError:
    """The estimates' relative error on the sample (each predicted without its own pair)."""
    ok = torch.isfinite(estimate) & torch.isfinite(exact) & (exact > 0)
    error = estimate_error(estimate[ok] / exact[ok] - 1, "chord estimates")
    error.unmeasured = int((torch.isfinite(exact) & (exact > 0) & ~ok).sum())  # no leave-one-out estimate
    return error
