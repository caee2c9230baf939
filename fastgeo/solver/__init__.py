"""The batched geodesic solver: :func:`geodesics` and what it is made of (see
:mod:`fastgeo.solver.geodesics` for the story of a call)."""

from .geodesics import geodesics
from .graph import LatentGraph
from .graph_cache import GraphCache
from .options import SolverOptions, solver_options, working_memory_per_curve
from .result import INIT_NAMES, GeodesicResult

__all__ = [
    "INIT_NAMES",
    "GeodesicResult",
    "GraphCache",
    "LatentGraph",
    "SolverOptions",
    "geodesics",
    "solver_options",
    "working_memory_per_curve",
]
