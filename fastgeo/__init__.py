"""fastgeo: batched geodesics and geodesic distances in VAE latent spaces under the expected
Riemannian metric of the stochastic decoder."""

from . import ops, reference
from ._backend import availability, current_backend, use_backend
from ._info import info

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "availability",
    "current_backend",
    "info",
    "ops",
    "reference",
    "use_backend",
]
