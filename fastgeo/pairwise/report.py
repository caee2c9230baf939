"""The per-pair status of a :func:`fastgeo.pairwise_distances` call."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..solver.defaults import HIGH_DIM
from ..solver.result import CONVERGED, STATUSES, UNSOLVED
from .chunks import no_finite_path


@dataclass
class PairwiseReport:
    """Per-pair status of a :func:`pairwise_distances` call.

    Attributes:
        status_code: (M, M) int8, or (M, P) with ``Y``: each pair's status, an index into
            :data:`fastgeo.solver.result.STATUSES` (see :attr:`status`, :attr:`converged`). Pairs
            that did not converge hold the best length found, never longer than the straight
            line. The diagonal and pairs of equal points are converged (distance exactly 0).
        iterations: (M, M) or (M, P) int32, solver iterations spent on each pair (exact and draft modes:
            -1 where no solve ran, on the diagonal and between equal codes; graph and chord modes:
            zeros, not kept per pair).
        n_pairs: entries computed (distinct unordered pairs of distinct codes for ``Z`` alone, ``M P``
            with ``Y``).
        n_converged, n_failed: how many of the entries solved as geodesics converged / did not
            (exact mode: all ``n_pairs`` but those holding a chain's length, status ``chain``;
            graph mode: the entries that are exact edges or sampled pairs; draft mode: the sampled
            pairs an exact geodesic shortened; chord mode: the sampled pairs; graph estimates,
            drafts (draft edges too) and chord estimates, status ``graph_estimate``, ``draft``
            and ``chord_estimate``, count in neither).
        chunk_size, chunks_total: the fixed chunk layout.
        chunks_computed: chunks solved by this call (this process, with ``torch.distributed``:
            all processes together).
        chunks_loaded: chunks read back from the checkpoint instead of solved.
        wall_time: seconds spent in the call.
        decoder_evals, decoder_jvps: decoder work of all chunks (loaded ones included: the
            work the matrix cost).
        graph_error: ``mode="graph"``: the measured excess of the graph distances over exact
            geodesics on a random sample (:class:`fastgeo.pairwise.EstimateError`); None in the
            other modes.
        draft_error: ``mode="draft"``: the same for the drafts; None in the other modes.
        chord_error: ``mode="chord"``: the relative error of the chord estimates on the sample,
            each pair predicted by the fit without it (leave-one-out; two-sided: see
            ``mean_abs`` and ``min``); None in the other modes.
        chord_fit: ``mode="chord"``: the fit (:class:`fastgeo.pairwise.chord_mode.ChordFit`).
        draft_chains: ``mode="draft"`` without ``Y``: entries a chain of drafts through other codes
            shortened (they hold its length, status ``draft``).
        graph_edges: ``mode="graph"``: geodesics solved as edges of the code graph.
        straight_shortcuts: ``mode="graph"``: entries whose straight segment was shorter than
            their chain of edges, and which hold its length (0 where segments were not measured).
        chain_check: exact mode without ``Y``: what the check against chains through a third code
            found and repaired (:class:`fastgeo.pairwise.chains.ChainCheck`); None otherwise.
            Entries holding a chain's length (status ``chain``) count in neither ``n_converged``
            nor ``n_failed``.
        options: the call's mode and options (``options["mode"]``, ``options["symmetric"]``, the
            solver options of its geodesics).
    """

    status_code: Tensor
    iterations: Tensor
    n_pairs: int
    n_converged: int
    n_failed: int
    chunk_size: int
    chunks_total: int
    chunks_computed: int
    chunks_loaded: int
    wall_time: float
    decoder_evals: int
    decoder_jvps: int
    options: dict = field(default_factory=dict)
    graph_error: Any = None
    draft_error: Any = None
    chord_error: Any = None
    chord_fit: Any = None
    draft_chains: int = 0
    graph_edges: int = 0
    straight_shortcuts: int = 0
    chain_check: Any = None

    @property
    def converged(self) -> Tensor:
        """(M, M) or (M, P) bool: ``status == "converged"``."""
        return self.status_code == CONVERGED

    @property
    def status(self) -> np.ndarray:
        """Status names per pair (numpy array of :data:`STATUSES`; compares elementwise)."""
        return np.array(STATUSES)[self.status_code.cpu().numpy().astype(np.int64)]

    def failed_pairs(self) -> Tensor:
        """(k, 2) indices ``(i, j)`` of the matrix's entries solved as geodesics that did not
        converge (``i < j`` without Y; estimates and drafts are not failures): the ``n_failed``
        pairs, and where ``Z`` has equal rows, their copies too (``n_failed`` counts the pairs of
        distinct codes: a row equal to an earlier one holds that row's entries)."""
        unsolved = torch.tensor(UNSOLVED, dtype=self.status_code.dtype, device=self.status_code.device)
        mask = ~self.converged & ~torch.isin(self.status_code, unsolved)
        if self.options.get("symmetric", False):
            mask = torch.triu(mask, diagonal=1)
        return mask.nonzero()

    def __repr__(self) -> str:
        # the dataclass's own printed both (M, M) tensors whole: pages of numbers in a notebook
        shape = tuple(self.status_code.shape)
        return f"PairwiseReport({shape[0]} x {shape[1]}: {self})"

    def __str__(self) -> str:
        mode = self.options.get("mode", "exact")
        if mode == "exact":
            chains = 0 if self.chain_check is None else self.chain_check.chain_entries
            equal = self.n_pairs - self.n_converged - self.n_failed - chains  # distance 0, nothing solved
            return (
                f"{self.n_pairs} geodesics, {self.n_converged} converged, {self.n_failed} not"
                + (f", {equal} between equal codes (0)" if equal > 0 else "")
                + (f", {chains} chains' lengths" if chains else "")
                + "; "
                f"{self.chunks_total} chunks of up to {self.chunk_size} ({self.chunks_computed} solved, "
                f"{self.chunks_loaded} loaded); {self.wall_time:.2f} s; "
                f"{self.decoder_evals} decoder evals, {self.decoder_jvps} decoder JVPs"
                + ("" if self.chain_check is None else f"; {self.chain_check}")
            )
        work = f"{self.wall_time:.2f} s; {self.decoder_evals} decoder evals, {self.decoder_jvps} decoder JVPs"
        if mode == "chord":
            reference = "exact geodesics" if self.chord_error is None else self.chord_error.reference
            head = (
                f"{self.n_pairs} pairs as chord estimates, fitted to {self.n_converged + self.n_failed} "
                f"{reference}"
            )
        elif mode == "draft":
            head = (
                f"{self.n_pairs} pairs as drafts (coarse curves) in {self.chunks_total} chunks of up to "
                f"{self.chunk_size} ({self.chunks_computed} solved, {self.chunks_loaded} loaded), "
                f"{self.draft_chains} shortened by chains of drafts"
            )
        else:
            head = f"{self.n_pairs} pairs from a graph of {self.graph_edges} edges" + (
                f" and {self.straight_shortcuts} straight segments" if self.straight_shortcuts else ""
            )
        error = {"chord": self.chord_error, "draft": self.draft_error}.get(mode, self.graph_error)
        label = {"chord": "chord estimates", "draft": "draft distances"}.get(mode, "graph distances")
        sampled = f"{label}: no pair sampled" if error is None else str(error)
        if self.n_pairs and not self.estimates_left:
            # The sample's pairs hold exact geodesics' lengths (where shorter): the matrix is exact.
            sampled += "; every pair was in the sample: no estimate is left in the matrix"
        elif error is not None and getattr(error, "every_pair", False):
            sampled += (
                "; every pair was in the sample: the entries left as estimates are chains shorter than "
                "their pair's solved geodesic"
            )
        return f"{head}; {sampled}; {work}"

    @property
    def estimates_left(self) -> bool:
        """Whether any entry holds an estimate (graph, draft or chord; statuses ``graph_estimate``,
        ``draft``, ``chord_estimate``, ``chain``) rather than a solved geodesic's length."""
        unsolved = torch.tensor(UNSOLVED, dtype=self.status_code.dtype, device=self.status_code.device)
        return bool(torch.isin(self.status_code, unsolved).any())


GRAPH_WARN = 0.05  # approximate modes: warn when the sample finds entries this much off on average


def warn_unfinished(
    n_failed: int, n_solved: int, n_inf: int, return_report: bool, unfinished: Tensor | None = None
) -> None:
    """Warn (at the caller of ``pairwise_distances``) of the geodesics that did not converge (their
    status codes: ``unfinished``, counted by status) and of the entries left inf (no finite path)."""
    if n_failed:
        which = "The report's status says which" if return_report else "return_report=True gives a mask"
        codes = torch.zeros(0, dtype=torch.long) if unfinished is None else unfinished.long().cpu()
        counts = torch.bincount(codes, minlength=len(STATUSES))
        kinds = ", ".join(f"{STATUSES[c]} {int(n)}" for c, n in enumerate(counts) if n)
        warnings.warn(
            f"fastgeo.pairwise_distances: {n_failed} of {n_solved} geodesics did not converge"
            f"{f' ({kinds})' if kinds else ''}; their "
            "entries hold the best length found (never longer than the straight line). "
            f"{which} (status per pair); raise max_iter, or (d >= 8) pass linearize='always' "
            "(a Gauss-Newton matrix at every step).",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    if n_inf:
        warnings.warn(no_finite_path("fastgeo.pairwise_distances", n_inf), RuntimeWarning, stacklevel=3)


def warn_estimates(extra: dict[str, Any], latent_dim: int) -> None:
    """Warn where the error sample finds the graph or draft distances ``GRAPH_WARN`` too long on
    average, or the chord estimates that far off."""
    graph, draft = extra.get("graph_error"), extra.get("draft_error")
    # With every pair in the sample the matrix holds no unchecked estimate: each entry is its
    # geodesic's length, or a chain shorter than it (the solve ended in a worse basin).
    graph = None if graph is None or graph.every_pair else graph
    draft = None if draft is None or draft.every_pair else draft
    if graph is not None and graph.pairs and graph.mean > GRAPH_WARN:
        warnings.warn(
            f"fastgeo.pairwise_distances: the graph distances are {100 * graph.mean:.1f} % above exact "
            f"geodesics on average on {graph.pairs} random pairs (95th percentile {100 * graph.p95:.1f} %): "
            + ("in high latent d chains of near codes zig-zag (more codes make longer chains: a d = 10 "
               "decoder's were 17 % above with 256 codes, 77 % with 10,000), and straight segments (if "
               "measured) cut across where the geodesics bend; mode='draft' (a coarse curve per pair) "
               "is within ~1 % for up to a few thousand codes, mode='chord' (estimates from the codes "
               "alone, fitted to the sample) within a few % for tens of thousands; "
               if latent_dim >= HIGH_DIM else
               "too few codes (chains bend around between them) or walls the edges cannot follow; ")
            + "use mode='exact' on the pairs that matter.",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    chord = extra.get("chord_error")
    if chord is not None and chord.pairs and chord.mean_abs > GRAPH_WARN:
        warnings.warn(
            f"fastgeo.pairwise_distances: the chord estimates are {100 * chord.mean_abs:.1f} % off exact "
            f"geodesics on average on {chord.pairs} random pairs (from {100 * chord.min:+.1f} % to "
            f"{100 * chord.max:+.1f} %): the geodesics wind far from their chords in feature space"
            + (" (in 2-D mode='graph' follows them)" if latent_dim < HIGH_DIM else "")
            + "; mode='draft' (a coarse curve per pair) is within ~1 % for up to a few thousand codes.",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    if draft is not None and draft.pairs and draft.mean > GRAPH_WARN:
        warnings.warn(
            f"fastgeo.pairwise_distances: the draft distances are {100 * draft.mean:.1f} % above exact "
            f"geodesics on average on {draft.pairs} random pairs (95th percentile {100 * draft.p95:.1f} %): "
            "the geodesics bend more than a coarse curve started from the straight line can follow; "
            "use mode='exact' on the pairs that matter.",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
