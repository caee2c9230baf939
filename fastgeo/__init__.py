"""fastgeo: batched geodesics and geodesic distances in VAE latent spaces under the expected
Riemannian metric of the stochastic decoder.

Importing fastgeo registers its operators (``torch.ops.fastgeo.*``).
"""

import torch as _torch

from . import _version, datasets, image_datasets, ops, reference
from ._info import info
from ._version import __version__
from .curves import BSplineBasis, Curves, PiecewiseLinearBasis, PolynomialBasis
from .io import load_extra, load_generator, save_generator
from .metric import ExpectedMetric
from .ops import availability, current_backend, use_backend
from .pairwise import NearestNeighbors, PairwiseReport, nearest_neighbors, pairwise_distances
from .rbf import RBFPrecision
from .solver import GeodesicResult, LatentGraph, geodesics

_version.warn_if_torch_is_too_old(_torch.__version__)


def __getattr__(name: str):
    # fastgeo.plot needs matplotlib (an optional extra): imported on first use only.
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'fastgeo' has no attribute {name!r}")


__all__ = [
    "BSplineBasis",
    "Curves",
    "ExpectedMetric",
    "GeodesicResult",
    "LatentGraph",
    "NearestNeighbors",
    "PairwiseReport",
    "PiecewiseLinearBasis",
    "PolynomialBasis",
    "RBFPrecision",
    "__version__",
    "availability",
    "current_backend",
    "datasets",
    "geodesics",
    "image_datasets",
    "info",
    "load_extra",
    "load_generator",
    "nearest_neighbors",
    "ops",
    "pairwise_distances",
    "reference",
    "save_generator",
    "use_backend",
]
