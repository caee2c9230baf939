"""Decoder means as the solver sees them: recognizing chains the stacked forward mode can
differentiate (:mod:`.recognize`), the stacked forward mode itself (:mod:`.forward_mode`), the
``torch.func`` fallback (:mod:`.generic`), and the adapter of saved means (:mod:`.flat`)."""

from .flat import FlatMean
from .forward_mode import MLPChain, jacobian_rows, mlp_chain
from .generic import generic_jacobian_rows

__all__ = ["FlatMean", "MLPChain", "generic_jacobian_rows", "jacobian_rows", "mlp_chain"]
