"""All-pairs geodesic distances: :func:`pairwise_distances` and its chunk layout, worker
processes, checkpoints, its approximate modes (the code graph, drafts) with their measured error,
and report; the k nearest neighbours of every code: :func:`nearest_neighbors`."""

from .driver import pairwise_distances
from .error_sample import EstimateError, GraphError
from .layout import Layout, triu_pairs
from .neighbors import NearestNeighbors, nearest_neighbors
from .report import PairwiseReport

__all__ = [
    "EstimateError",
    "GraphError",
    "Layout",
    "NearestNeighbors",
    "PairwiseReport",
    "nearest_neighbors",
    "pairwise_distances",
    "triu_pairs",
]
