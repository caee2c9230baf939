"""fastgeo: batched geodesics and geodesic distances in VAE latent spaces under the expected
Riemannian metric of the stochastic decoder."""

from . import ops, reference
from ._backend import availability, current_backend, use_backend
from ._info import info
from .curves import Curves, PiecewiseLinearBasis, PolynomialBasis
from .distances import pairwise_distances
from .metric import ExpectedMetric
from .rbf import RBFPrecision
from .solve import GeodesicResult, geodesics

__version__ = "0.1.0"

__all__ = [
    "Curves",
    "ExpectedMetric",
    "GeodesicResult",
    "PiecewiseLinearBasis",
    "PolynomialBasis",
    "RBFPrecision",
    "__version__",
    "availability",
    "current_backend",
    "geodesics",
    "info",
    "ops",
    "pairwise_distances",
    "reference",
    "use_backend",
]
