"""What the solver returns: per-curve results of a batch of geodesics, and the work they cost."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ..curves import Curves

# The starts a curve can come from (GeodesicResult.init indexes this).
INIT_NAMES = ("straight", "warm", "given", "graph")
STRAIGHT, WARM, GIVEN, GRAPH = range(len(INIT_NAMES))


class Work:
    """Decoder work done by one call: latent points through the mean (``evals``), and latent
    points times directions pushed through it in forward mode (``jvps``)."""

    def __init__(self) -> None:
        self.evals = 0
        self.jvps = 0


@dataclass
class GeodesicResult:
    """Geodesics for a batch of B end-point pairs.

    Attributes:
        curves: the optimized :class:`fastgeo.curves.Curves`.
        lengths: (B,) discrete length ``sum_n sqrt(s_n)`` at ``n_points`` (the distances).
        energies: (B,) discrete energy at ``n_points``.
        converged: (B,) bool; False when the iteration limit was hit or the energy was not finite.
        iterations: (B,) int, optimizer iterations spent on each curve (all phases).
        init: (B,) int, index into :data:`INIT_NAMES` of the start each curve was taken from.
        straight_lengths: (B,) length of the straight line between the end points.
        n_points: points per curve used for the energy (the requested resolution).
        resolution: (B,) int, points per curve of each curve's energy and length: ``n_points``,
            or more where the resolution check re-solved an under-resolved curve.
        decoder_evals: latent points passed through the decoder mean (forward calls).
        decoder_jvps: latent points times directions pushed through the decoder in forward mode.
    """

    curves: Curves
    lengths: Tensor
    energies: Tensor
    converged: Tensor
    iterations: Tensor
    init: Tensor
    straight_lengths: Tensor
    n_points: int
    decoder_evals: int = 0
    decoder_jvps: int = 0
    options: dict = field(default_factory=dict)
    resolution: Tensor | None = None

    def points(self, n: int | None = None) -> Tensor:
        """The curves sampled at ``t = linspace(0, 1, n)`` (default ``n_points``): (B, n, d)."""
        return self.curves.points(self.n_points if n is None else n)

    @property
    def init_names(self) -> list[str]:
        """Per-curve name of the start the solution came from."""
        return [INIT_NAMES[i] for i in self.init.tolist()]

    def __len__(self) -> int:
        return self.lengths.shape[0]
