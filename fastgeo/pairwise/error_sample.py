"""The error of an approximate distance matrix (:func:`fastgeo.pairwise_distances`' graph,
draft and chord modes), measured on a random sample of its pairs solved exactly.

The graph and draft modes' entries are upper bounds of the distance (chains of geodesics,
straight segments, coarse curves): the sample's relative excess ``estimate / exact - 1`` says how
far above the distances they are, as a distribution over pairs (:class:`EstimateError`), and the
sampled entries keep the shorter of both lengths (and the exact solve's status where it is the
shorter). The chord mode draws the same sample (:func:`draw_sample`) to fit its estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .layout import triu_index
from .pair_list import Solve, solve_pair_list

SAMPLE_SEED = 0  # the error sample is the same for the same inputs
# Relative difference within which a sampled pair's exact length and its estimate are one length:
# the exact solve's is kept (and its status: a geodesic solved, not an estimate left).
SAME = 1e-4
BELOW = 1e-4  # an error below -BELOW (not rounding) is printed: the line must not read as one-sided


@dataclass
class EstimateError:
    """Relative excess ``estimate / exact - 1`` of approximate distances (``label``: which) over
    exact geodesics on ``pairs`` random pairs: its mean, median, 95th percentile, largest and
    smallest value (negative where the estimate is below, or where the exact solve ended longer
    than an upper bound, in a worse basin), and the mean of its absolute value; ``unmeasured``:
    sampled pairs left out (chord mode: a pair alone fixing a coefficient of the fit has no
    leave-one-out estimate)."""

    pairs: int
    mean: float
    median: float
    p95: float
    max: float
    min: float
    label: str = "graph distances"
    mean_abs: float = float("nan")
    unmeasured: int = 0  # sampled pairs the error could not be measured on (chord mode: see below)
    every_pair: bool = False  # the sample held every pair of distinct codes: no estimate is unchecked
    reference: str = "exact geodesics"  # what the sample's pairs were solved as

    def __str__(self) -> str:
        left = f" ({self.unmeasured} sampled pairs without an estimate to compare)" if self.unmeasured else ""
        if not self.pairs:
            return f"{self.label}: no pair sampled" if not left else f"{self.label}: not measured{left}"
        two_sided = self.min < 0 and self.mean_abs > 2 * abs(self.mean)
        below = self.min < -BELOW  # an estimate below the distance (or an exact solve in a worse basin)
        which = "every pair (all sampled)" if self.every_pair else f"{self.pairs} random pairs"
        return (
            f"{self.label} over {self.reference} on {which}: "
            + (f"mean |error| {100 * self.mean_abs:.3f} %, " if two_sided else "")
            + f"mean {100 * self.mean:+.3f} %, median {100 * self.median:+.3f} %, "
            f"95th percentile {100 * self.p95:+.3f} %, max {100 * self.max:+.3f} %"
            + (f", min {100 * self.min:+.3f} %" if below else "")
            + left
        )


GraphError = EstimateError  # the name the graph mode's error had first


def node_indices(pts: Tensor, Y: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct ``nodes`` (n, d) of an all-pairs run over ``pts`` (M, d) (and ``Y`` (P, d)), and the
    node of each row and of each column: equal codes share a node (distance 0)."""
    if Y is None:
        rows = torch.arange(pts.shape[0], device=pts.device)
        return pts, rows, rows
    nodes, inverse = torch.unique(torch.cat([pts, Y]), dim=0, return_inverse=True)
    return nodes, inverse[: pts.shape[0]], inverse[pts.shape[0] :]


def sample_error(
    nodes: Tensor,
    rows: Tensor,
    cols: Tensor,
    symmetric: bool,
    solve: Solve,
    chunk_size: int,
    error_sample: int,
    out: Tensor,
    status: Tensor,
    show: bool,
    workers: int,
    label: str,
) -> tuple[EstimateError, int, int]:
    """``error_sample`` random pairs of distinct nodes (the entries ``out[i, j]`` (R, C) between
    ``nodes[rows[i]]`` and ``nodes[cols[j]]``; ``symmetric``: the strict upper triangle, mirrored)
    solved by ``solve`` in chunks of ``chunk_size`` over ``workers``: the entries' error, and the
    sampled entries set to the shorter length (with the exact solve's ``status`` where it is the
    shorter, or longer by less than :data:`SAME`). Returns the error and the sample's decoder
    evaluations and JVPs."""
    i, j, a, b = draw_sample(rows, cols, symmetric, error_sample)
    solved = solve_pair_list(nodes, a, b, solve, chunk_size, workers, show, "error sample", "pair")
    exact, st = solved.lengths, solved.status
    estimate = out[i.to(out.device), j.to(out.device)].double().cpu()
    excess = estimate / exact.clamp(min=torch.finfo(torch.float64).tiny) - 1
    # Every entry between the sampled codes (both orders, repeated codes) takes the exact length.
    ei, ej, s = entries_of_pairs(rows, cols, a, b)
    oi, oj, si, sj = ei.to(out.device), ej.to(out.device), ei.to(status.device), ej.to(status.device)
    held = out[oi, oj].double().cpu()
    shorter = exact[s] <= held * (1 + SAME)
    out[oi, oj] = torch.where(shorter, exact[s], held).to(out.dtype).to(out.device)
    kept = status[si, sj].long().cpu()
    status[si, sj] = torch.where(shorter, st[s].long().cpu(), kept).to(status.dtype).to(status.device)
    error = estimate_error(excess, label)
    error.every_pair = ei.numel() == distinct_pairs(rows, cols, symmetric) * (2 if symmetric else 1)
    return error, solved.decoder_evals, solved.decoder_jvps


def entries_of_pairs(rows: Tensor, cols: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every entry ``(i, j)`` of an (R, C) matrix between the nodes ``rows`` (R,) and ``cols`` (C,)
    that joins the nodes of a pair ``{a[s], b[s]}`` (k,), in either order (``a != b``): ``i, j`` and
    the pair ``s`` of each, int64 on the CPU. A symmetric matrix gets both ``(i, j)`` and ``(j, i)``;
    with ``Y`` a code repeated in ``Z`` or ``Y`` (or ``Y = Z``) gets all its entries."""
    rows, cols, a, b = rows.cpu(), cols.cpu(), a.cpu(), b.cpu()
    r_sorted, r_order = torch.sort(rows, stable=True)
    c_sorted, c_order = torch.sort(cols, stable=True)
    parts = []
    for x, y in ((a, b), (b, a)):
        r0 = torch.searchsorted(r_sorted, x)
        nr = torch.searchsorted(r_sorted, x, right=True) - r0
        c0 = torch.searchsorted(c_sorted, y)
        nc = torch.searchsorted(c_sorted, y, right=True) - c0
        s = torch.repeat_interleave(torch.arange(a.numel(), device="cpu"), nr * nc)
        starts = torch.cumsum(nr * nc, 0) - nr * nc
        t = torch.arange(s.numel(), device="cpu") - torch.repeat_interleave(starts, nr * nc)
        parts.append((r_order[r0[s] + t // nc[s]], c_order[c0[s] + t % nc[s]], s))
    return tuple(torch.cat(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def distinct_pairs(rows: Tensor, cols: Tensor, symmetric: bool) -> int:
    """Entries of the matrix between distinct nodes (``symmetric``: above the diagonal)."""
    R, C = rows.numel(), cols.numel()
    if symmetric:
        return R * (R - 1) // 2
    if not R or not C:
        return 0
    n = int(max(rows.max(), cols.max())) + 1
    equal = torch.bincount(rows.cpu(), minlength=n) * torch.bincount(cols.cpu(), minlength=n)
    return R * C - int(equal.sum())


def draw_sample(rows: Tensor, cols: Tensor, symmetric: bool, error_sample: int) -> tuple[Tensor, ...]:
    """Up to ``error_sample`` random distinct entries ``(i, j)`` of an (R, C) matrix between the
    nodes ``rows`` (R,) and ``cols`` (C,) (``symmetric``: ``i < j``), none between equal nodes
    (distance 0, nothing to measure) and one per pair of nodes, the same for the same inputs:
    ``i, j, rows[i], cols[j]`` (k,) int64 on the CPU."""
    R, C = rows.numel(), cols.numel()
    n_pairs = R * (R - 1) // 2 if symmetric else R * C
    g = torch.Generator(device="cpu").manual_seed(SAMPLE_SEED)
    if n_pairs <= 16 * error_sample:  # a sample near every pair: drawn without replacement
        k = torch.randperm(n_pairs, generator=g, device="cpu")
    else:
        k = torch.unique(torch.randint(n_pairs, (4 * error_sample,), generator=g, device="cpu"))
        k = k[torch.randperm(k.numel(), generator=g, device="cpu")].long()
    i, j = triu_index(R, k) if symmetric else (k // C, k % C)
    a, b = rows.cpu()[i], cols.cpu()[j]
    keep = (a != b).nonzero().squeeze(1)
    # One entry per pair of nodes: with Y, (i, j) and (j', i') may join the same two codes.
    n = int(max(rows.max(), cols.max())) + 1 if R and C else 1
    key = torch.minimum(a, b)[keep] * n + torch.maximum(a, b)[keep]
    _, inverse = torch.unique(key, return_inverse=True)
    n_keys = int(inverse.max()) + 1 if inverse.numel() else 0
    first = torch.full((n_keys,), keep.numel(), dtype=torch.int64, device="cpu")
    first = first.scatter_reduce(0, inverse, torch.arange(keep.numel(), device="cpu"), "amin")
    keep = keep[first.sort().values][:error_sample]
    return i[keep], j[keep], a[keep], b[keep]


def estimate_error(excess: Tensor, label: str) -> EstimateError:
    """The :class:`EstimateError` of relative errors ``excess`` (k,) float64."""
    if excess.numel() == 0:
        return EstimateError(0, *([float("nan")] * 5), label=label)
    q = torch.quantile(excess, torch.tensor([0.5, 0.95], dtype=excess.dtype, device=excess.device))
    values = (excess.mean(), q[0], q[1], excess.max(), excess.min())
    return EstimateError(
        excess.numel(), *(float(v) for v in values), label=label, mean_abs=float(excess.abs().mean())
    )
