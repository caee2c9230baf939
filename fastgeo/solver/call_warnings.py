"""Warnings a :func:`fastgeo.geodesics` call gives its caller: inputs it leaves unused, and curves
with no finite length (once, from the outermost call: not again from the library's own calls, nor
from the chunks of an all-pairs run, which reports them itself)."""

from __future__ import annotations

import warnings

from torch import Tensor

from ..decoders.uses import depth
from .defaults import SPLINE_METHODS
from .graph import LatentGraph
from .options import SolverOptions
from .result import NONFINITE, GeodesicResult

NO_FINITE_LENGTH = r"fastgeo\.geodesics: \d+ of \d+ curves have no finite length"  # (its start, for filters)


def warn_unused_graph_inputs(graph: object, latents: Tensor | None, opts: SolverOptions) -> None:
    """Warn where ``latents`` or a given :class:`LatentGraph` (the graph starts' nodes) go unused:
    ``graph=False``, a given graph (its own nodes), method ``"paper"``, ``corridors=0``; from a
    call of the user's (the library's own calls pass them on: the pairs a hair apart split off)."""
    if depth() > 1:
        return
    if latents is not None and graph is False:
        warnings.warn("fastgeo.geodesics: latents are nodes of the latent graph; graph=False ignores "
                      "them", UserWarning, stacklevel=3)  # fmt: skip
    elif latents is not None and isinstance(graph, LatentGraph):
        warnings.warn("fastgeo.geodesics: latents are nodes of the latent graph the call builds; a given "
                      "graph keeps its own nodes and ignores them (pass them to fastgeo.LatentGraph)",
                      UserWarning, stacklevel=3)  # fmt: skip
    elif (latents is not None or isinstance(graph, LatentGraph)) and (
        opts.method == "paper" or (opts.method in SPLINE_METHODS and opts.corridors == 0)
    ):
        given = "latents feed" if latents is not None else "graph feeds"
        why = "method='paper' starts from straight lines" if opts.method == "paper" else "corridors=0"
        warnings.warn(f"fastgeo.geodesics: {given} the latent graph's starts, which {why} leaves "
                      "out: ignored", UserWarning, stacklevel=3)  # fmt: skip


def warn_nonfinite(res: GeodesicResult) -> None:
    """Warn where curves of ``res`` have no finite length (status ``nonfinite``), from a call of
    the user's (within one :func:`fastgeo.decoders.uses.one_use` of its own)."""
    bad = int((res.status_code == NONFINITE).sum())
    if bad and depth() <= 1:
        warnings.warn(
            f"fastgeo.geodesics: {bad} of {len(res)} curves have no finite length (status nonfinite: the "
            "decoder mean or the precision is NaN or inf along them); their lengths are NaN",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
