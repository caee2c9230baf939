"""Curves too short for float32: solved in float64.

A segment's squared length is a difference of features, ``||f(c_(n+1)) - f(c_n)||^2``, and each
feature carries the decoder's rounding, about ``eps |f|``. On a curve whose segments are not long
against it (codes 1e-5 to 1e-2 apart on trained VAEs in float32) the energy the solver minimizes
is mostly rounding: the solve wanders (100+ iterations), ends ``under_resolved`` or
``straight_fallback``, and lengths measured on fine grids add the rounding of every segment (a
2-D digits VAE: codes 1e-5 apart came out 10-15x their length, flagged converged). Such curves
are solved in float64 by a copy of the metric (its mean must be an ``nn.Module`` or a method of
one; otherwise they are solved in float32 as before), their results returned in float32 with the
others'.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..curves import Curves, straight_line, time_grid
from ..discrete import feature_segments, length_from_segments
from ..metric import ExpectedMetric
from .measure import float64_metric
from .options import SolverOptions
from .result import GeodesicResult

# A curve is short when its straight line's n - 1 segments' rounding, (n - 1) eps |f|, exceeds
# this share of its length. On a 2-D digits VAE (D = 64) codes 1e-2 apart (ratio ~6e-3) ended
# straight_fallback in float32, 1e-3 apart under_resolved, 1e-5 apart up to 14x long; pairs of
# near neighbours among 1,000 of its codes with ratios 7e-4 to 1e-3 still ended straight_fallback
# (their float32 solves wander by 1e-4 in length), none below 2e-4. Routed at 2e-4: 180 of 400
# such pairs, all converged, 1.2x faster than their float32 solves (which take noise for
# progress); 1 of the 48 training pairs of the issue-15 sample; none of the d >= 5 generators'
# (their ratios 6e-6 to 1.2e-5). bench/RESULTS.md, "Codes a hair apart".
NOISE_ABOVE = 2e-4


PROBE_POINTS = 9  # the straight line's length and feature scale are taken on this many points


def solved_apart(
    metric: ExpectedMetric,
    z0: Tensor,
    z1: Tensor,
    opts: SolverOptions,
    asked: dict[str, Any],
    init: Tensor | None,
    graph: object,
    latents: Tensor | None,
    progress: bool | None,
    solve: Callable[..., GeodesicResult],
) -> GeodesicResult | None:
    """The result of a float32 call (z0, z1: (B, d); ``asked``: its options as the user gave them;
    ``init``: its checked start coefficients (B, m, d) or None) with its short curves solved by
    ``solve`` (:func:`fastgeo.geodesics`) on a float64 copy of the metric and the others as asked;
    None where there is nothing to split (no short curve, another dtype, or no float64
    copy): the call goes on as it is."""
    if metric.dtype != torch.float32 or z0.shape[0] == 0:
        return None
    short = (rounding_ratios(metric, z0, z1, opts.n_points) > NOISE_ABOVE) & ~(z0 == z1).all(-1)
    if not bool(short.any()):
        return None
    metric64 = float64_metric(metric)
    if metric64 is None:
        _warn_rounding(int(short.sum()), z0.shape[0])
        return None
    rest, few = (~short).nonzero().squeeze(1), short.nonzero().squeeze(1)
    # At the call's tolerance: rounding, not the stopping rule, is what float64 fixes.
    float64_options = {**asked, "tol": opts.tol, "graph": False, "progress": False}
    if init is not None:
        float64_options["init"] = init[few].double()
    try:
        short_ones = solve(metric64, z0[few].double(), z1[few].double(), **float64_options)
    except (TypeError, RuntimeError):  # a decoder that converts but does not run in float64
        _warn_rounding(len(few), z0.shape[0])
        return None
    rest_init = None if init is None else init[rest]
    long_ones = solve(
        metric, z0[rest], z1[rest], init=rest_init, graph=graph, latents=latents, progress=progress, **asked
    )
    return merged([(rest, long_ones), (few, short_ones)], z0, z1)


def rounding_ratios(metric: ExpectedMetric, z0: Tensor, z1: Tensor, n: int) -> Tensor:
    """(B,): ``(n - 1) eps |f|_max / L`` for curves of n points, with the straight line's length
    L and largest feature norm taken on PROBE_POINTS points (on few points the rounding barely
    adds to L; inf where L = 0)."""
    pts = straight_line(z0, z1, time_grid(PROBE_POINTS, z0))  # (B, PROBE_POINTS, d)
    with torch.no_grad():
        f = metric.features(pts)
    length = length_from_segments(feature_segments(f))
    scale = f.norm(dim=-1).amax(-1)
    return (n - 1) * torch.finfo(f.dtype).eps * scale / length


def _warn_rounding(short: int, total: int) -> None:
    """Short curves left in float32: their lengths (and end gradients) are mostly rounding."""
    warnings.warn(
        f"fastgeo.geodesics: {short} of {total} pairs are so close that float32 rounding of the "
        "decoder is not small against their segments (lengths up to ~10x long, gradients off), and "
        "no float64 copy of the metric could be made or run (its mean is not an nn.Module, or fails "
        "in float64): make the metric in float64 (metric.to(torch.float64)) or pass the mean as a module",
        RuntimeWarning, stacklevel=4,
    )  # fmt: skip


def merged(parts: list[tuple[Tensor, GeodesicResult]], z0: Tensor, z1: Tensor) -> GeodesicResult:
    """One result for the B curves of a call (z0, z1: (B, d), its dtype) from results of some of
    its rows each, ``(rows, result)``, in row order; options from the first part, every nonempty
    part in one basis."""
    B = z0.shape[0]
    solved = [(rows, res) for rows, res in parts if rows.numel()]
    basis = solved[0][1].curves.basis if solved else parts[0][1].curves.basis
    out: dict[str, Tensor | None] = {}
    names = (
        "lengths", "energies", "status_code", "iterations", "init", "straight_lengths",
        "resolution", "length_errors", "measure_points",
    )  # fmt: skip
    for name in names:
        ref = getattr(parts[0][1], name)
        if ref is None:
            out[name] = None
            continue
        dtype = z0.dtype if ref.is_floating_point() else ref.dtype
        full = torch.zeros(B, dtype=dtype, device=z0.device)
        for rows, res in solved:
            full[rows] = getattr(res, name).to(dtype)
        out[name] = full
    coeffs = z0.new_zeros(B, basis.m, z0.shape[1])
    for rows, res in solved:
        if res.curves.coeffs.shape[1:] != coeffs.shape[1:]:
            raise AssertionError("the parts of a call are solved with the same options: one basis")
        coeffs[rows] = res.curves.coeffs.to(z0.dtype)
    return dataclasses.replace(
        parts[0][1],
        curves=Curves(z0, z1, coeffs, basis),
        decoder_evals=sum(res.decoder_evals for _, res in parts),
        decoder_jvps=sum(res.decoder_jvps for _, res in parts),
        **out,
    )
