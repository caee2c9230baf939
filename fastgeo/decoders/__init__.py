"""Decoder means as the solver sees them: their value and directional derivatives
(:func:`value_and_tangents`, :func:`jacobian_rows`). Chains of standard layers applied point by
point are recognized (:mod:`.recognize`: modules :mod:`.modules`, fx graphs :mod:`.graphs`, as
steps :mod:`.steps`) and differentiated by the stacked forward mode (:mod:`.forward_mode`,
layer by layer :mod:`.layers`); anything else by ``torch.func`` (:mod:`.generic`). Chains with
piecewise-linear activations get smooth stand-ins (:mod:`.smoothing`). The adapter of saved
means: :mod:`.flat`."""

from .flat import FlatMean
from .forward_mode import (
    MLPChain,
    StackedChain,
    activation_width,
    jacobian_rows,
    mlp_chain,
    stacked_chain,
    value_and_tangents,
)
from .generic import generic_jacobian_rows, generic_value_and_tangents
from .recognize import piecewise_linear, smoothed
from .smoothing import SmoothedChain

__all__ = [
    "FlatMean",
    "MLPChain",
    "SmoothedChain",
    "StackedChain",
    "activation_width",
    "generic_jacobian_rows",
    "generic_value_and_tangents",
    "jacobian_rows",
    "mlp_chain",
    "piecewise_linear",
    "smoothed",
    "stacked_chain",
    "value_and_tangents",
]
