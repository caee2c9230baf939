"""The pure-PyTorch reference of every fastgeo operator: the oracle each kernel is tested
against, and the ``"reference"`` backend of :func:`fastgeo.use_backend` (any device and dtype).

The functions take already-validated arguments in the operators' schemas (``zeta`` a tensor of
shape (D,)); :mod:`fastgeo.ops` checks them. The three public ops (DESIGN §2) are differentiable
by ordinary autograd and forward-mode AD; the solver's ops are plain functions of their inputs.
"""

from .gauss_newton import gauss_newton_system
from .levenberg_marquardt import banded_lm_propose, lm_propose, lm_update, secant_update
from .rbf import rbf_features, rbf_precision, rbf_segment_sqdist, rbf_sigma_jacobian
from .segments import segment_sqdist

__all__ = [
    "banded_lm_propose",
    "gauss_newton_system",
    "lm_propose",
    "lm_update",
    "rbf_features",
    "rbf_precision",
    "rbf_segment_sqdist",
    "rbf_sigma_jacobian",
    "secant_update",
    "segment_sqdist",
]
