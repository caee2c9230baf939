"""fastgeo's operators: ``torch.ops.fastgeo.*`` (registered when fastgeo is imported) and their
validated Python entry points, each resolved per device by one registry.

Public ops (DESIGN §2): :func:`rbf_precision`, :func:`segment_sqdist`, :func:`rbf_segment_sqdist`.
The solver's ops live in :mod:`fastgeo.ops.solver_ops`.
"""

from . import library  # noqa: F401  (loads fastgeo._C and registers fake, autograd, CUDA kernels)
from .public import rbf_precision, rbf_segment_sqdist, segment_sqdist
from .registry import availability, current_backend, use_backend

__all__ = [
    "availability",
    "current_backend",
    "rbf_precision",
    "rbf_segment_sqdist",
    "segment_sqdist",
    "use_backend",
]
