"""``fastgeo.nearest_neighbors``: the k geodesically nearest codes of every code, exact to the
solver's accuracy, from a few geodesics per code instead of all pairs.

Two codes' distance in feature space is a lower bound of their geodesic distance
(:mod:`.feature_bound`). Each code's candidates are taken in the order of that bound; once ``k``
of them are solved, every code whose bound is above the k-th shortest length found cannot be
nearer, and only the candidates below it are solved, in rounds, until none is left: the code is
*certified*. On the 2-D digits VAE 7-8 geodesics per code certify its 10 nearest among 1,000
codes, on a d = 16 image VAE ~31 among 256 (bench/RESULTS.md, "Nearest neighbours").
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _checks
from ..decoders.uses import one_use
from ..metric import ExpectedMetric
from ..solver.result import CONVERGED, STATUSES
from .chunks import dist_info, no_finite_path
from .feature_bound import FeatureBounds
from .pair_list import pair_solver, solve_pair_list
from .setup import build_latent_graph, check_inputs, check_memory_budget, chunk_size_for_budget
from .workers import check_workers

# Candidates per code in the first pass: the bound's order rarely has to go this deep (10-12 per
# code for k = 10 on trained VAEs); a code whose list runs out is given twice as many.
CANDIDATES = 4
MIN_CANDIDATES = 32


@dataclass
class NearestNeighbors:
    """The result of :func:`nearest_neighbors`, for ``M`` query codes and their ``k`` nearest.

    Unpacks as ``distances, indices`` (scikit-learn's order).

    Attributes:
        distances: (M, k) geodesic lengths, ascending per row (the metric's dtype).
        indices: (M, k) int64 indices into the references (``Y``, or ``Z`` itself without
            ``Y``; a code is never its own neighbour, but an equal code at another index is, at
            distance 0).
        status_code: (M, k) int8 status of each neighbour's geodesic, an index into
            :data:`fastgeo.solver.result.STATUSES` (see :attr:`status`, :attr:`converged`).
        certified: (M,) bool: every reference left out has a lower bound above the row's k-th
            distance (False only where ``max_candidates`` stopped the search first).
        pairs_solved: geodesics solved in all (each unordered pair once without ``Y``).
        rounds: rounds of solves until every row was certified.
        candidates: candidates per code the bound's order was read to (grown where a row needed
            more).
        wall_time: seconds spent in the call.
        decoder_evals, decoder_jvps: decoder work of the solves and the features.
    """

    distances: Tensor
    indices: Tensor
    status_code: Tensor
    certified: Tensor
    pairs_solved: int
    rounds: int
    candidates: int
    wall_time: float
    decoder_evals: int
    decoder_jvps: int

    def __iter__(self) -> Iterator[Tensor]:
        yield self.distances
        yield self.indices

    @property
    def status(self) -> np.ndarray:
        """(M, k) status names of :data:`fastgeo.solver.result.STATUSES`."""
        return np.array(STATUSES)[self.status_code.cpu().numpy().astype(np.int64)]

    @property
    def converged(self) -> Tensor:
        """(M, k) bool: the neighbour's geodesic converged."""
        return self.status_code == CONVERGED

    def __str__(self) -> str:
        M, k = self.indices.shape
        return (
            f"{k} nearest neighbours of {M} codes: {self.pairs_solved} geodesics "
            f"({self.pairs_solved / max(M, 1):.1f} per code) in {self.rounds} rounds, "
            f"{int(self.certified.sum())} of {M} rows certified, "
            f"{int(self.converged.sum())} of {M * k} neighbour geodesics converged, {self.wall_time:.1f} s"
        )


def nearest_neighbors(
    metric: ExpectedMetric,
    Z: Tensor,
    k: int = 10,
    Y: Tensor | None = None,
    *,
    max_candidates: int | None = None,
    workers: int | None = None,
    memory_budget: int | None = None,
    chunk_size: int | None = None,
    progress: bool | None = True,
    **solver_options: Any,
) -> NearestNeighbors:
    """The ``k`` geodesically nearest codes of every code of ``Z`` (among ``Z`` itself, or
    among ``Y``), exact to the solver's accuracy, without solving all pairs.

    Every code is decoded once; the distance of two codes' features ``[mu, sigma]`` is a lower
    bound of their geodesic distance. Per code, candidates are solved in the order of that bound
    until every code not solved has a bound above the k-th shortest geodesic found (module
    docstring): on trained VAEs about ``0.7 k`` geodesics per code in 2-D (pairs are shared)
    and ``3 k`` at d = 16, where :func:`pairwise_distances` solves ``(M - 1) / 2``. The lengths
    are those :func:`fastgeo.geodesics` gives each pair alone (with the same options), so the
    neighbours are the first ``k`` of the matrix's rows (equal lengths in the order of index).

    Args:
        metric: the expected metric.
        Z: (M, d) query codes.
        k: neighbours per code, at most ``M - 1`` (``P`` with ``Y``).
        Y: (P, d) reference codes; None: ``Z`` itself (a code is not its own neighbour).
        max_candidates: at most this many geodesics per code (>= k; default: no limit). A code
            whose bound has not ruled out every other code by then keeps the k nearest of its
            solved candidates and is not certified (``result.certified``; a warning counts them):
            for many codes in high d, where the bound is looser (d = 16: ~30 geodesics per code
            for k = 10 among 256 codes).
        workers: worker processes of one thread each (default: as many as torch's threads on a
            Linux CPU; see :func:`pairwise_distances`).
        memory_budget, chunk_size: the size of the solver's batches, as in
            :func:`pairwise_distances`.
        progress: a progress bar per round of solves (needs tqdm); None: as True.
        **solver_options: passed to every :func:`fastgeo.geodesics` call (``method``, ``tol``,
            ...).

    Returns:
        :class:`NearestNeighbors` (``distances, indices = nearest_neighbors(...)`` unpacks it).
        Memory: the features of all codes ((M + P) x 2D values) and ``M`` short candidate lists;
        never an (M, P) matrix.
    """
    with one_use():
        t_start = time.perf_counter()
        _checks.autograd_enabled("nearest_neighbors")
        _checks.outside_autocast("nearest_neighbors")
        Z, Y, options = check_inputs(nearest_neighbors, metric, Z, Y, solver_options)
        progress = _checks.boolean("progress", True if progress is None else progress)
        symmetric = Y is None
        M = Z.shape[0]
        P = M if symmetric else Y.shape[0]
        if M == 0:
            raise ValueError("Z holds no codes (shape (0, d)): there is nothing to find neighbours of")
        available = P - 1 if symmetric else P
        k = _checks.integer("k", k, 1)
        if k > available:
            what = "the other codes of Z" if symmetric else "the codes of Y"
            raise ValueError(f"k must be at most {available} ({what}), got {k}")
        if max_candidates is None:
            limit = available
        else:  # (any limit above the codes: all of them)
            limit = _checks.integer("max_candidates", max_candidates, k, maximum=None)
        limit = min(limit, available)  # more than there are: all (int64 arithmetic below)
        workers = check_workers(workers, metric.device, dist_info()[1] > 1)
        memory_budget = check_memory_budget(memory_budget)
        if chunk_size is None:
            chunk_size = chunk_size_for_budget(metric, options, memory_budget)
        chunk_size = _checks.integer("chunk_size", chunk_size, 1)
        options.setdefault("batch_size", chunk_size)
        graph_evals = build_latent_graph(metric, options, progress) if workers > 1 else 0
        nodes = Z if symmetric else torch.cat([Z, Y])
        bounds = FeatureBounds(metric, nodes, M, symmetric)
        solved = _Solved(nodes, M, P, symmetric)
        solve = pair_solver(metric, options)
        show = progress and dist_info()[0] == 0
        cap = min(available, max(CANDIDATES * k, MIN_CANDIDATES))
        rounds = 0
        while True:
            idx, lb, beyond = bounds.candidates(cap)
            while True:
                found = solved.lookup(idx)  # (M, cap) float64, NaN where not solved yet
                lengths = found.nan_to_num(nan=torch.inf)  # (a pair solved to inf stays solved)
                kth = lengths.sort(dim=1).values[:, k - 1]
                open_ = torch.isnan(found) & (lb < kth[:, None])
                known = (~torch.isnan(found)).sum(1)
                # The next candidates below the k-th length, per row: k, then as many as the row has
                # solved (a row whose bound is loose, a code across a wall from its nearest, may need
                # a hundred: in rounds that double, not k at a time), within its limit.
                quota = torch.minimum(known.clamp(min=k), limit - known)
                take = open_ & (open_.cumsum(1) <= quota[:, None])
                if not bool(take.any()):
                    break
                rounds += 1
                rows = take.nonzero()[:, 0]
                solved.solve(rows, idx[take], solve, chunk_size, workers, show, f"neighbours, round {rounds}")
            certified = ~open_.any(1) & (beyond >= kth)
            ran_out = ~certified & ~open_.any(1) & (known < limit)  # lists too short, not the limit
            if not bool(ran_out.any()) or cap == available:
                break
            cap = min(available, 2 * cap)
        by_index = idx.argsort(dim=1)  # ties broken by index, as in a row of the matrix
        order = by_index.gather(1, lengths.gather(1, by_index).argsort(dim=1, stable=True))[:, :k]
        indices = idx.gather(1, order)
        dist = lengths.gather(1, order)
        status = solved.status_of(indices)
        n_open = int((~certified).sum())
        if n_open:
            warnings.warn(
                f"fastgeo.nearest_neighbors: {n_open} of {M} codes reached max_candidates={limit} geodesics "
                "before the lower bound ruled out every other code: their neighbours are the k nearest of "
                "the candidates solved, not certified (result.certified); raise max_candidates.",
                RuntimeWarning,
                stacklevel=2,
            )
        n_inf = int(torch.isinf(dist).sum())
        if n_inf:
            warnings.warn(no_finite_path("fastgeo.nearest_neighbors", n_inf), RuntimeWarning, stacklevel=2)
        n_failed = int((status != CONVERGED).sum())
        if n_failed:
            warnings.warn(
                f"fastgeo.nearest_neighbors: {n_failed} of {M * k} neighbour geodesics did not converge; "
                "their distances are the best lengths found (the result's status says which); raise "
                "max_iter, or (d >= 8) pass linearize='always'.",
                RuntimeWarning,
                stacklevel=2,
            )
        return NearestNeighbors(
            distances=dist.to(metric.dtype).to(metric.device),
            indices=indices.to(metric.device),
            status_code=status.to(metric.device),
            certified=certified.to(metric.device),
            pairs_solved=solved.count,
            rounds=rounds,
            candidates=cap,
            wall_time=time.perf_counter() - t_start,
            decoder_evals=solved.decoder_evals + graph_evals + nodes.shape[0],
            decoder_jvps=solved.decoder_jvps,
        )


class _Solved:
    """The geodesics solved so far, by unordered pair of codes without ``Y`` (solved from the
    lower index to the higher) or by (query, reference) with ``Y``; a repeated code counts as its
    first copy (one solve, one length for all copies, as :func:`pairwise_distances` has them)."""

    def __init__(self, nodes: Tensor, M: int, P: int, symmetric: bool) -> None:
        self.nodes, self.M, self.P, self.symmetric = nodes, M, P, symmetric
        n = nodes.shape[0]
        inverse = torch.unique(nodes, dim=0, return_inverse=True)[1].cpu()
        first = torch.full((int(inverse.max()) + 1 if n else 0,), n, dtype=torch.int64, device="cpu")
        self.first = first.scatter_reduce(0, inverse, torch.arange(n, device="cpu"), "amin")[inverse]  # (n,)
        self.lengths: dict[int, float] = {}
        self.codes: dict[int, int] = {}
        self.count = self.decoder_evals = self.decoder_jvps = 0

    def _ends(self, rows: Tensor, refs: Tensor) -> tuple[Tensor, Tensor]:
        """Node indices of the pairs' two ends (first copies), in the order they are solved."""
        if self.symmetric:
            a, b = self.first[rows.cpu()], self.first[refs.cpu()]
            return torch.minimum(a, b), torch.maximum(a, b)
        return self.first[rows.cpu()], self.first[refs.cpu() + self.M]

    def _keys(self, rows: Tensor, refs: Tensor) -> list[int]:
        a, b = self._ends(rows, refs)
        return (a * self.nodes.shape[0] + b).tolist()

    def lookup(self, idx: Tensor) -> Tensor:
        """(M, cap) lengths of the pairs (row, idx[row, c]), NaN where not solved (inf is a
        length: no finite path between the two)."""
        rows = torch.arange(idx.shape[0], device=idx.device).repeat_interleave(idx.shape[1])
        found = [self.lengths.get(key, np.nan) for key in self._keys(rows, idx.reshape(-1))]
        return torch.tensor(found, dtype=torch.float64, device="cpu").reshape(idx.shape)

    def status_of(self, idx: Tensor) -> Tensor:
        """(M, k) int8 status codes of solved pairs (row, idx[row, c])."""
        rows = torch.arange(idx.shape[0], device="cpu").repeat_interleave(idx.shape[1])
        codes = [self.codes[key] for key in self._keys(rows, idx.reshape(-1).cpu())]
        return torch.tensor(codes, dtype=torch.int8, device="cpu").reshape(idx.shape)

    def solve(
        self, rows: Tensor, refs: Tensor, solve: Any, chunk_size: int, workers: int, show: bool, label: str
    ) -> None:
        """Solve the pairs (rows[n], refs[n]) not solved yet (each pair once)."""
        a, b = self._ends(rows, refs)
        keys, first = np.unique((a * self.nodes.shape[0] + b).numpy(), return_index=True)
        a, b = a[first], b[first]
        equal = (self.nodes[a] == self.nodes[b]).all(dim=1).cpu()  # equal codes: distance 0
        for key in keys[equal.numpy()].tolist():
            self.lengths[key], self.codes[key] = 0.0, CONVERGED
        a, b, keys = a[~equal], b[~equal], keys[~equal.numpy()]
        if not len(keys):
            return
        done = solve_pair_list(self.nodes, a, b, solve, chunk_size, workers, show, label, "pair")
        self.lengths.update(zip(keys.tolist(), done.lengths.tolist(), strict=True))
        self.codes.update(zip(keys.tolist(), done.status.tolist(), strict=True))
        self.count += len(keys)
        self.decoder_evals += done.decoder_evals
        self.decoder_jvps += done.decoder_jvps
