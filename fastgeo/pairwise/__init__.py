"""All-pairs geodesic distances: :func:`pairwise_distances` and its chunk layout, worker
processes, checkpoints, the code graph of its graph mode, and report."""

from .driver import pairwise_distances
from .graph_mode import GraphError
from .layout import Layout, triu_pairs
from .report import PairwiseReport

__all__ = ["GraphError", "Layout", "PairwiseReport", "pairwise_distances", "triu_pairs"]
