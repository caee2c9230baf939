"""What the solver returns: per-curve results of a batch of geodesics, and the work they cost."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._progress import pulse
from ..curves import Curves

INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# The starts a curve can come from (GeodesicResult.init indexes this).
# "smoothed": the curve solved first under the smoothed decoder (piecewise-linear means, solver/smoothing.py).
INIT_NAMES = ("straight", "warm", "given", "graph", "smoothed", "explored")
STRAIGHT, WARM, GIVEN, GRAPH, SMOOTHED, EXPLORED = range(len(INIT_NAMES))

# How a curve ended (GeodesicResult.status_code indexes this), and what that means.
# "graph_estimate", "chain", "draft" and "chord_estimate" are never a solver's:
# fastgeo.pairwise_distances gives them to entries that are upper bounds (lengths of chains of
# geodesics, of coarse curves) or estimates, not one curve solved to the solver's accuracy.
STATUSES = (
    "converged", "max_iter", "stalled", "nonfinite", "under_resolved", "straight_fallback", "graph_estimate",
    "chain", "draft", "chord_estimate",
)  # fmt: skip
(
    CONVERGED, MAX_ITER, STALLED, NONFINITE, UNDER_RESOLVED, STRAIGHT_FALLBACK, GRAPH_ESTIMATE, CHAIN, DRAFT,
    CHORD_ESTIMATE,
) = range(len(STATUSES))  # fmt: skip
# Entries of a distance matrix that hold no curve solved between their pair.
UNSOLVED = (GRAPH_ESTIMATE, CHAIN, DRAFT, CHORD_ESTIMATE)
MESSAGES = {
    "converged": "converged: the energy (or the length) changed by less than tol in a step",
    "max_iter": "stopped at the iteration limit max_iter before converging",
    "stalled": "stalled: steps kept failing although the local model predicted a gain (a non-smooth "
    "decoder, or rounding noise; raise tol or use float64)",
    "nonfinite": "the energy or its derivatives are not finite along this curve (NaN or inf from the "
    "decoder mean or the precision)",
    "under_resolved": "under-resolved: the curve steps over features of the metric between its points "
    "(the spline methods: even solved again at 4 x n_points; dense: between its polyline's nodes); raise "
    "n_points",
    "straight_fallback": "the optimized curve was longer than the straight line, which is returned "
    "instead (not a geodesic)",
    "graph_estimate": "the length of a chain of geodesics between nearby codes (pairwise_distances' "
    "graph mode): an upper bound of the distance, not optimized as one curve",
    "chain": "the length of a chain of two geodesics through a third code, shorter than the curve solved "
    "between the pair from every start, the chain's own included (pairwise_distances): an upper bound "
    "of the distance, not one optimized curve",
    "draft": "the length of a coarse curve from a few Gauss-Newton steps, or of a chain of them through "
    "other codes (pairwise_distances' draft mode): an upper bound of the distance, typically within a few "
    "percent, not solved to the solver's accuracy",
    "chord_estimate": "an estimate from the pair's chord in feature space (a lower bound of the distance) "
    "and the metric at its two codes, fitted to exact geodesics on a sample (pairwise_distances' chord "
    "mode): neither an upper nor a lower bound, typically within a few percent; no curve solved",
}


class Work:
    """Decoder work done by one call: latent points through the mean (``evals``), and latent
    points times directions pushed through it in forward mode (``jvps``)."""

    def __init__(self) -> None:
        self.evals = 0
        self.jvps = 0

    def add(self, evals: int = 0, jvps: int = 0) -> None:
        """Counts decoder work as it is done (and redraws the call's progress bar, if any)."""
        self.evals += evals
        self.jvps += jvps
        pulse(evals + jvps)


@dataclass
class GeodesicResult:
    """Geodesics for a batch of B end-point pairs, with a status per curve (like
    ``scipy.optimize``'s results). ``torch.save(res, path)`` stores it; ``torch.load(path)``
    reads it back with PyTorch's default ``weights_only=True`` (plain data, no code runs).

    Attributes:
        curves: the optimized :class:`fastgeo.curves.Curves` (with subdivision, every curve in the
            B-spline with its spans halved once per level: ``4 m - 3`` functions at the default's
            two levels, see :mod:`fastgeo.solver.subdivide`).
        lengths: (B,) the distances: each curve's length, measured on a grid fine enough that
            its estimated error is below 1e-4 relative (see ``length_errors``). Differentiable
            in the end points where ``z0`` or ``z1`` required a gradient (the envelope theorem,
            :mod:`fastgeo.solver.end_gradients`); otherwise plain tensors.
        length_errors: (B,) estimated absolute error of ``lengths`` (in the units of the
            lengths; divide by ``lengths`` for the relative one) against the curve's continuous
            length: a third of the change from the grid before (the error falls ~4x per doubling).
        energies: (B,) discrete energy of each curve at its resolution (``resolution`` points).
        status_code: (B,) int8, index into :data:`STATUSES` (see :attr:`status`, :attr:`message`).
        iterations: (B,) int, optimizer iterations spent on each curve (all phases).
        init: (B,) int, index into :data:`INIT_NAMES` of the start each curve was taken from.
        straight_lengths: (B,) length of the straight line between the end points, measured the
            same way to 1e-3 relative (to 3.3e-5 where within 1 % of ``lengths``).
        n_points: points per curve used for the energy (the requested resolution).
        resolution: (B,) int, points per curve of each curve's optimization: ``n_points``, or more
            where the resolution check re-solved an under-resolved curve, and twice that where
            subdivision solved it on in the finer basis.
        measure_points: (B,) int, points of the grid each length was measured on.
        decoder_evals: latent points passed through the decoder mean (forward calls).
        decoder_jvps: latent points times directions pushed through the decoder in forward mode.
        options: the options the call used, resolved (method, basis, n_points, tol, max_iter,
            subdivide, ``"fresh tangents"``, ``"smoothed_first"``, ...).
    """

    curves: Curves
    lengths: Tensor
    energies: Tensor
    status_code: Tensor
    iterations: Tensor
    init: Tensor
    straight_lengths: Tensor
    n_points: int
    decoder_evals: int = 0
    decoder_jvps: int = 0
    options: dict = field(default_factory=dict)
    resolution: Tensor | None = None
    length_errors: Tensor | None = None
    measure_points: Tensor | None = None

    def points(self, n: int | Tensor | None = None) -> Tensor:
        """The curves sampled at ``t = linspace(0, 1, n)`` (default ``n_points``), or at the times
        ``n`` given as a 1-D float tensor in [0, 1]: (B, n, d)."""
        if isinstance(n, Tensor) and n.dim() == 1:
            return self.curves.at(n)
        return self.curves.points(self.n_points if n is None else n)

    @property
    def converged(self) -> Tensor:
        """(B,) bool: ``status == "converged"``."""
        return self.status_code == CONVERGED

    @property
    def status(self) -> np.ndarray:
        """(B,) status names of :data:`STATUSES` (a numpy array: ``res.status == "converged"``
        compares elementwise)."""
        return np.array(STATUSES)[self.status_code.cpu().numpy().astype(np.int64)]

    @property
    def message(self) -> list[str]:
        """Per curve, what its status means."""
        return [MESSAGES[s] for s in self.status]

    @property
    def init_names(self) -> list[str]:
        """Per-curve name of the start the solution came from."""
        return [INIT_NAMES[i] for i in self.init.tolist()]

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def __repr__(self) -> str:
        """One line: the curves, their statuses and the range of their lengths (not the tensors)."""
        B = len(self)
        names, counts = np.unique(self.status, return_counts=True)
        statuses = ", ".join(f"{n} {c}" for n, c in zip(names.tolist(), counts.tolist(), strict=True))
        low, high = self.lengths.detach().aminmax() if B else (None, None)
        lengths = f", lengths {float(low):.6g}-{float(high):.6g}" if B else ""
        d = self.curves.z0.shape[-1]
        method = self.options.get("method", "?")
        return f"GeodesicResult({B} curves, d={d}, method={method!r}: {statuses or 'none'}{lengths})"

    def select(self, idx: Tensor | int | slice) -> GeodesicResult:
        """The results of curves ``idx`` (a (K,) index tensor or list, a (B,) bool mask, a slice,
        or one index: a result of one curve), in that order; the work counters stay those of the
        whole call."""
        kinds = (Tensor, numbers.Integral, slice, list, tuple, np.ndarray)
        if not isinstance(idx, kinds) or isinstance(idx, bool):
            what = "a (K,) integer index, a (B,) bool mask, a slice or an int"
            raise TypeError(f"idx must be {what}, got {idx!r}")
        if isinstance(idx, slice):
            idx = torch.tensor(range(len(self))[idx], dtype=torch.long)  # any step, negative too
        if isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
            idx = [int(idx)]
        if isinstance(idx, Tensor) and idx.dim() == 0 and idx.dtype in INDEX_DTYPES:
            idx = idx.reshape(1)  # one curve, as an int
        empty = isinstance(idx, (list, tuple)) and len(idx) == 0
        try:
            idx = torch.as_tensor(idx, device=self.lengths.device, dtype=torch.long if empty else None)
        except (ValueError, TypeError, RuntimeError) as e:  # ragged lists, objects
            what = "a (K,) integer index, a (B,) bool mask or an int"
            raise TypeError(f"idx must be {what}, got {idx!r}") from e
        if idx.dtype == torch.bool:
            if idx.shape != self.lengths.shape:
                raise ValueError(f"a mask idx must have shape ({len(self)},), got {tuple(idx.shape)}")
            idx = idx.nonzero().squeeze(1)
        if idx.dim() != 1 or idx.is_floating_point() or idx.is_complex():
            raise TypeError(f"idx must be a (K,) integer index, a (B,) bool mask or an int, got {idx!r}")
        idx = idx.long()  # torch indexes with int8/int16 not at all, and with uint8 as a mask
        if idx.numel() and not bool(((idx >= -len(self)) & (idx < len(self))).all()):
            raise IndexError(f"idx holds indices outside the {len(self)} curves: {idx.tolist()}")
        c = self.curves
        rows = {
            name: None if getattr(self, name) is None else getattr(self, name)[idx]
            for name in (
                "lengths", "energies", "status_code", "iterations", "init", "straight_lengths",
                "resolution", "length_errors", "measure_points",
            )
        }  # fmt: skip
        curves = Curves(c.z0[idx], c.z1[idx], c.coeffs[idx], c.basis)
        return dataclasses.replace(self, curves=curves, options=dict(self.options), **rows)


# A result is plain data (tensors, numbers, strings, Curves): torch.load(path) reads it back with
# PyTorch's default weights_only=True.
torch.serialization.add_safe_globals([GeodesicResult])
