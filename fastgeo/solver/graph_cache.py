"""The metric's latent graphs, kept: each :class:`~fastgeo.solver.graph.LatentGraph` is built once
per metric (and draw) on first use and rebuilt when the decoder, the precision or the latents
change (:class:`GraphCache`).

The caches live on the metric itself (an attribute its pickles leave out): tables weakly keyed by
the metric held it alive through the graph's reference back (``LatentGraph.metric``), so no metric
that built a graph was ever freed, with its decoder and cached shortest-path rows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._progress import phase
from ..metric import ExpectedMetric
from .graph import LatentGraph

CACHE_ATTRIBUTE = "_graph_caches"  # the metric's attribute holding its caches, one per draw


class GraphCache:
    """The :class:`LatentGraph` of one metric, built on first use and rebuilt when the decoder,
    the precision or the latents change (trained in place, or replaced): the key holds the
    metric's :meth:`~fastgeo.ExpectedMetric.probe` outputs, whatever holds the parameters."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed  # the graph's sampling seed (a draw other than 0: the dense oracle's starts)
        self._latents: Tensor | None = None
        self._probe: tuple[Tensor, Tensor] | None = None  # the probe and the precision's fingerprint
        self.graph: LatentGraph | None = None

    def get(self, metric: ExpectedMetric, latents: Tensor | None) -> tuple[LatentGraph, bool]:
        """(the graph, whether it was built by this call)."""
        probe = (metric.probe(4), metric.precision.fingerprint())
        fresh = (
            self.graph is None
            or not _same_latents(latents, self._latents)
            or not all(torch.equal(a, b) for a, b in zip(probe, self._probe, strict=True))
        )
        if fresh:
            draw = f", draw {self.seed}" if self.seed else ""
            with phase(f"building the latent graph (once per metric{draw})"):
                self.graph = LatentGraph(metric, latents, seed=self.seed)
            # Compared by value: a tensor's address and version counter say nothing of codes
            # written through a numpy array sharing its memory, or of a new tensor at a freed address.
            self._latents = None if latents is None else latents.detach().clone()
            self._probe = probe
        return self.graph, fresh


def _same_latents(a: Tensor | None, b: Tensor | None) -> bool:
    """Whether ``a`` and ``b`` are the same codes by value (None is only None)."""
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a.detach(), b)


def cached_graph(metric: ExpectedMetric, latents: Tensor | None, seed: int = 0) -> tuple[LatentGraph, bool]:
    """The metric's graph for these latents (drawn with ``seed``) from its :class:`GraphCache`,
    and whether it was built now (its edges then cost decoder evaluations)."""
    caches = metric.__dict__.setdefault(CACHE_ATTRIBUTE, {})
    return caches.setdefault(seed, GraphCache(seed)).get(metric, latents)


def graph_cache(metric: ExpectedMetric, seed: int = 0) -> GraphCache | None:
    """The metric's :class:`GraphCache` of draw ``seed``, if one was made."""
    return metric.__dict__.get(CACHE_ATTRIBUTE, {}).get(seed)


def forget_graphs(metric: ExpectedMetric) -> None:
    """Drop the metric's latent graphs (the next call builds them again: timing a first call)."""
    metric.__dict__.pop(CACHE_ATTRIBUTE, None)
