"""All-pairs geodesic distances: :func:`pairwise_distances` and its chunk layout, checkpoints
and report."""

from .driver import pairwise_distances
from .layout import Layout, triu_pairs
from .report import PairwiseReport

__all__ = ["Layout", "PairwiseReport", "pairwise_distances", "triu_pairs"]
