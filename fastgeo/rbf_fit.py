"""Fitting the RBF precision network to data: the recipe of Arvanitidis, Hansen & Hauberg
(ICLR 2018) that the paper follows.

1. centers: k-means on the encoder's latent means;
2. one bandwidth per center from its cluster's spread,
   ``gamma_k = 0.5 / (a * mean_{i in k} ||z_i - c_k||)^2`` (``a`` = ``bandwidth_scale``);
3. weights ``W >= 0`` (parametrized as ``W = exp(V)``) maximizing the Gaussian log-likelihood of
   the training data with the decoder mean held fixed,
   ``log p(x | z) = sum_D [0.5 log beta(z) - 0.5 beta(z) (x - mu(z))^2] + const``,
   ``beta = W phi(z) + zeta``, ``zeta`` fixed.

``zeta`` is the precision far from the data (``sigma -> 1 / sqrt(zeta)`` there): keep it small
so that leaving the data is expensive under the expected metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from . import _checks, _mean_checks
from ._progress import DELAY, progress_iter
from .reference import rbf_features

DEFAULT_CENTERS = 64  # RBF centers where the caller names none (fewer training points: one each)
DECODE_ROWS = 1024  # latents decoded at once
CHUNK_ELEMENTS = 1 << 22  # (M, D) precisions made at once in a step (16 MB in float32)


def kmeans(x: Tensor, k: int, seed: int = 0, iters: int = 100) -> tuple[Tensor, Tensor]:
    """k-means (k-means++ seeding, then Lloyd iterations), deterministic for a given seed.

    Args:
        x: (M, d) points, M >= k.
        k: number of clusters (>= 1).
        seed: seed of the k-means++ seeding.
        iters: maximum number of Lloyd iterations (stops early when the assignment is stable).
    Returns:
        centers (k, d) and assignment (M,) int64 in [0, k). A cluster left empty by Lloyd's
        update keeps its previous center.
    """
    _checks.tensor("x", x, ndim=2)
    k = _checks.integer("k", k, 1)
    seed = _checks.seed("seed", seed, allow_none=False)
    iters = _checks.integer("iters", iters, 0)
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k = {k} points, got {x.shape[0]}")
    _checks.finite("x", x)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # Centered: torch.cdist's matrix-product distances lose float32 digits on points far from the
    # origin (codes offset by 1,000: a fifth of them assigned to a center not their nearest).
    offset = x.detach().mean(0)
    x = x.detach() - offset
    # k-means++: each next center drawn with probability ~ squared distance to the chosen ones.
    first = int(torch.randint(x.shape[0], (1,), generator=gen, device="cpu"))
    centers = [x[first]]
    d2 = (x - x[first]).pow(2).sum(-1)
    for _ in range(1, k):
        w = d2.cpu().double()
        idx = int(torch.multinomial(w / w.sum(), 1, generator=gen)) if w.sum() > 0 else int(w.argmax())
        centers.append(x[idx])
        d2 = torch.minimum(d2, (x - x[idx]).pow(2).sum(-1))
    c = torch.stack(centers)
    assign = torch.cdist(x, c).argmin(-1)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        c = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        new = torch.cdist(x, c).argmin(-1)
        if torch.equal(new, assign):
            break
        assign = new
    return c + offset, assign


def fit_rbf_parameters(
    latents: Tensor,
    data: Tensor,
    mean: Callable[[Tensor], Tensor],
    *,
    num_centers: int | None = None,
    bandwidth_scale: float = 1.5,
    zeta: float = 1e-3,
    steps: int = 1000,
    lr: float = 0.05,
    progress: bool | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Fit the parameters of an RBF precision to training data (Arvanitidis et al., 2018);
    :meth:`fastgeo.RBFPrecision.fit` builds the network from them.

    Args:
        latents: (M, d) latent codes of the training data (the encoder's means).
        data: (M, D) the training data (images (M, C, H, W) are flattened to rows).
        mean: the decoder mean (M, d) -> (M, D) (or images, as ``data``); held fixed (evaluated
            once per point, ``DECODE_ROWS`` points at a time, without grad).
        num_centers: K, the number of RBF centers (k-means clusters); at most M. Default:
            ``DEFAULT_CENTERS`` (64), or M where there are fewer training points.
        bandwidth_scale: ``a`` in ``gamma_k = 0.5 / (a * spread_k)^2``, ``spread_k`` the mean
            distance of cluster k's points to its center. Larger ``a``: wider, smoother bumps
            (Arvanitidis et al. use ``a ~ 1-2``). A cluster with zero spread (a single point,
            or copies of one) takes the median spread of the others, or half the median distance
            between neighbouring centers where that is larger.
        zeta: the precision floor, ``sigma = 1 / sqrt(zeta)`` far from the data. Small (the
            default 1e-3: sigma ~ 32 off the data) makes leaving the data expensive.
        steps: full-batch Adam steps on the log-weights.
        lr: Adam learning rate (on ``V = log W``, so steps are relative changes of W).
        progress: a tqdm progress bar (if tqdm is installed): None (default) once the fit has run
            10 s, True at once, False none.
        seed: seed of the k-means seeding.
    Returns:
        centers (K, d), gammas (K,), weights (D, K) >= 0 and the given zeta, in the dtype and on
        the device of ``latents``.
    """
    _checks.tensor("latents", latents, ndim=2)
    _checks.tensor("data", data, min_ndim=2)
    point_shape = data.shape[1:]
    data = data.flatten(1)  # images: one row of D values per training point
    _checks.same_dtype_device([("latents", latents), ("data", data)])
    if latents.shape[0] != data.shape[0]:
        raise ValueError(
            f"latents and data must have one row per training point, got {latents.shape[0]} and "
            f"{data.shape[0]} rows"
        )
    if latents.shape[0] == 0 or latents.shape[1] == 0:
        raise ValueError(f"latents must be (M, d) with M >= 1 and d >= 1, got shape {tuple(latents.shape)}")
    if data.shape[1] == 0:
        raise ValueError(f"data must hold D >= 1 values per point, got shape {(data.shape[0], *point_shape)}")
    if num_centers is None:
        num_centers = min(DEFAULT_CENTERS, latents.shape[0])
    num_centers = _checks.integer("num_centers", num_centers, 1)
    if num_centers > latents.shape[0]:
        raise ValueError(f"num_centers = {num_centers} exceeds the number of points {latents.shape[0]}")
    bandwidth_scale = _checks.positive_float("bandwidth_scale", bandwidth_scale)
    if isinstance(zeta, Tensor):
        raise TypeError("zeta must be a number here (one floor for every output; build fastgeo.RBFPrecision "
                        "from the fitted parameters for a per-output zeta)")  # fmt: skip
    zeta = _checks.positive_float("zeta", zeta)
    if zeta < torch.finfo(latents.dtype).tiny:
        raise ValueError(f"zeta = {zeta:g} is 0 in {latents.dtype} (the smallest normal number is "
                         f"{torch.finfo(latents.dtype).tiny:g})")  # fmt: skip
    steps = _checks.integer("steps", steps, 0)
    lr = _checks.positive_float("lr", lr)
    if progress is not None:
        _checks.boolean("progress", progress)
    seed = _checks.seed("seed", seed, allow_none=False)
    if not callable(mean):
        raise TypeError(f"mean must be a callable (the decoder mean), got {type(mean).__name__}")
    mean = _mean_checks.uncompiled(mean)
    _mean_checks.eval_mode("mean", mean)
    latents, data = latents.detach(), data.detach()
    _checks.finite("latents", latents)
    _checks.finite("data", data)
    # A method or a function around a decoder left in training mode: random, or batch-dependent.
    three = latents[:3]
    out = _mean_checks.call("mean", mean, three, "the latents")
    if isinstance(out, Tensor) and out.shape[:1] == three.shape[:1]:
        first = _mean_checks.call("mean", mean, three[:1], "the latents")
        _mean_checks.deterministic("mean", mean, three, out, first)

    centers, assign = kmeans(latents, num_centers, seed=seed)
    spread = torch.zeros(num_centers, dtype=latents.dtype, device=latents.device).index_add_(
        0, assign, (latents - centers[assign]).norm(dim=-1)
    ) / torch.bincount(assign, minlength=num_centers).clamp(min=1).to(latents.dtype)
    # A spread of rounding size (identical codes split between clusters) counts as zero too.
    rounding = ROUNDING_ULPS * torch.finfo(latents.dtype).eps * latents.abs().max()
    scale = (latents - latents.mean(0)).norm(dim=-1).mean()
    positive = spread > rounding
    # Where few clusters hold several codes (M a little above K) those are k-means' merges of the
    # closest codes, whose spreads are far below the codes' spacing: 2-D codes, K = 64, M = 66 had
    # 12x the gammas of M = 64 and holes in the precision between neighbouring codes.
    fallback = _spacing(centers, scale, rounding)
    if bool(positive.any()):
        fallback = torch.maximum(spread[positive].median(), fallback)
    spread = torch.where(positive, spread, fallback)
    gammas = 0.5 / (bandwidth_scale * spread).pow(2)
    if not bool(torch.isfinite(gammas).all() & (gammas > 0).all()):
        raise ValueError(
            f"bandwidth_scale = {bandwidth_scale:g} gives bandwidths {latents.dtype} cannot hold "
            f"(cluster spreads {float(spread.min()):.3g} to {float(spread.max()):.3g})"
        )
    m = latents.shape[0]
    rows = max(1, CHUNK_ELEMENTS // (num_centers * latents.shape[1]))  # (rows, K, d) differences at once

    phi = torch.cat([rbf_features(latents[lo : lo + rows], centers, gammas) for lo in range(0, m, rows)])
    per_dim, phi_resid = _residual_statistics(latents, data, point_shape, mean, phi)
    # The residuals a center sees, per dimension, are at least the floor's: where the mean
    # reproduces a dimension exactly around a center (a ReLU or clamped output at 0 on a class whose
    # pixel is 0, a whole border pixel) the likelihood has no maximum and that weight would grow
    # with every step until it overflows.
    per_dim, floor = _floored(per_dim, data)
    phi_resid = torch.maximum(phi_resid, floor * phi.sum(0)[:, None])
    # Start where every data point gets roughly the precision 1 / (mean squared residual).
    target = 1.0 / per_dim  # (D,)
    if float(target.median()) < zeta:
        warnings.warn(
            f"RBFPrecision.fit: the mean's squared residuals are {float(per_dim.median()):.3g} per "
            f"dimension (median), a precision below zeta = {zeta:g}: the fitted precision is about zeta "
            "everywhere and carries no information about the data. Is the data on the decoder's "
            "scale (images in 0-255 against a mean in [0, 1]?), or zeta too large?",
            UserWarning, stacklevel=3,
        )  # fmt: skip
    coverage = phi.sum(-1).mean().clamp(min=torch.finfo(phi.dtype).tiny)
    log_w = (target / coverage).log()[:, None].expand(-1, num_centers).clone()
    opt = torch.optim.Adam([log_w], lr=lr)
    # Older torch's Adam makes its step counters on the default device, not the weights'.
    with torch.device(log_w.device):
        delay = 0.0 if progress else DELAY
        for _ in progress_iter(range(steps), progress is not False, "fit RBF precision", delay):
            log_w.grad = nll_gradient(phi, log_w, phi_resid.T, zeta)
            opt.step()
    if not bool(torch.isfinite(log_w).all()):
        raise ValueError(
            f"the fit diverged (weights not finite) with lr={lr!r}: try a smaller lr, or float64 latents "
            "and data"
        )
    return centers, gammas, log_w.exp(), zeta


def rbf_nll(phi: Tensor, log_w: Tensor, resid2: Tensor, zeta: float) -> Tensor:
    """The fit's objective (the reference for :func:`nll_gradient`): the Gaussian negative
    log-likelihood of the data under the fixed mean, constants dropped, averaged over the M points.

    Args:
        phi: (M, K) RBF features of the latents; log_w: (D, K) log-weights ``V``;
        resid2: (M, D) squared residuals ``(x - mu(z))^2``; zeta: the precision floor.
    Returns:
        () ``mean_m sum_D [0.5 beta r - 0.5 log beta]``, ``beta = phi exp(V)^T + zeta``.
    """
    beta = phi @ log_w.exp().T + zeta
    return (0.5 * beta * resid2 - 0.5 * beta.log()).sum(-1).mean()


def nll_gradient(phi: Tensor, log_w: Tensor, phi_resid: Tensor, zeta: float) -> Tensor:
    """The gradient of :func:`rbf_nll` in ``log_w`` (D, K) without its (M, D) autograd graph:
    ``0.5 / M * W * (phi_resid - (1 / beta)^T phi)``, the residuals entering only through
    ``phi_resid = resid2^T phi`` (D, K), the (M, D) precisions made a few columns at a time
    (``CHUNK_ELEMENTS`` at once), so memory stays flat in D and no step passes over the data."""
    w = log_w.exp()
    m, dims = phi.shape[0], w.shape[0]
    inv_beta_phi = torch.empty_like(w)
    width = max(1, CHUNK_ELEMENTS // max(m, 1))
    for lo in range(0, dims, width):
        inv_beta = torch.addmm(phi.new_tensor(zeta), phi, w[lo : lo + width].T).reciprocal_()  # (M, c)
        torch.mm(inv_beta.T, phi, out=inv_beta_phi[lo : lo + width])
    return (0.5 / m) * w * (phi_resid - inv_beta_phi)


def _residual_statistics(
    latents: Tensor, data: Tensor, point_shape: torch.Size, mean: Callable[[Tensor], Tensor], phi: Tensor
) -> tuple[Tensor, Tensor]:
    """The squared residuals of the fixed mean, reduced as the fit needs them: their mean per
    dimension (D,) and ``phi^T resid2`` (K, D). The mean is called on DECODE_ROWS latents at a
    time (it is checked to be in eval mode: the rows do not interact), so neither its activations
    nor the (M, D) residuals are held for all points at once."""
    m, dims = data.shape
    per_dim = data.new_zeros(dims)
    phi_resid = data.new_zeros(phi.shape[1], dims)
    for lo in range(0, m, DECODE_ROWS):
        rows = slice(lo, lo + DECODE_ROWS)
        count = data[rows].shape[0]
        decoded = _mean_checks.call("mean", mean, latents[rows], "the latents")  # held fixed
        ok = isinstance(decoded, Tensor) and decoded.dim() >= 1 and decoded.shape[0] == count
        images = ok and decoded.dim() > 2 and len(point_shape) > 1
        # A singleton axis (a grayscale channel) on one side only lays the values out alike.
        relaid = images and _squeezed(decoded.shape[1:]) != _squeezed(point_shape)
        if not ok or decoded[0].numel() != dims or relaid:
            got = tuple(decoded.shape) if isinstance(decoded, Tensor) else type(decoded).__name__
            if isinstance(decoded, Tensor) and m > DECODE_ROWS:
                got = f"{got} for {count} of them"
            same_size = images and decoded[0].numel() == dims
            layout = (
                f" (the data's images are {tuple(point_shape)}: the same values in another layout, "
                "channels last against channels first? permute the data to the decoder's layout)"
                if same_size
                else ""
            )
            error = ValueError if isinstance(decoded, Tensor) else TypeError  # (as ExpectedMetric says)
            raise error(
                f"mean must map the (M, d) latents to (M, D) = {(m, dims)} (or to images of D "
                f"values each, as data), got {got}{layout}{_mean_checks.not_a_tensor_hint(decoded)}"
            )
        if decoded.dtype != data.dtype:
            raise TypeError(
                f"mean returns {decoded.dtype} for {data.dtype} latents and data: convert the decoder "
                "(or the data) so that they match"
            )
        resid2 = (data[rows] - decoded.reshape(count, dims)).pow(2)  # (rows, D)
        _checks.finite("the decoder's residuals", resid2)
        per_dim += resid2.sum(0)
        phi_resid.addmm_(phi[rows].T, resid2)
    return per_dim / m, phi_resid


# Cluster spreads (and distances between centers) below this many units in the last place of the
# largest code coordinate are rounding: identical codes whose centers' means do not round exactly.
# A spread measured relative to the codes' spacing instead (1e-4 of it) took tight but genuine
# clusters for copies: wide fallback bumps, a precision higher between the clusters than on them.
ROUNDING_ULPS = 64


# A data dimension the decoder reproduces exactly (a border pixel that is 0 in every image and in
# every decoded one; or only around some centers) has no maximum-likelihood precision: it grows
# until the weights overflow. A center's squared residuals are taken as at least this share of the
# mean over all dimensions instead (the trained image VAEs' least reproduced pixels sit 30x above
# it or more: their fits are unchanged).
EXACT_FLOOR = 1e-8


def _floored(per_dim: Tensor, data: Tensor) -> tuple[Tensor, Tensor]:
    """The mean squared residual per dimension (D,) with exactly reproduced dimensions raised to
    the floor (the others unchanged, bit for bit), and the floor; a mean that reproduces all of
    the data (M, D) exactly is floored relative to the data's variance."""
    floor = EXACT_FLOOR * per_dim.mean()
    if not bool(floor > 0):
        floor = EXACT_FLOOR * data.var(0, correction=0).mean()
    if not bool(floor > 0):
        raise ValueError("data is constant and the mean reproduces it exactly: there is no variance to fit")
    return torch.maximum(per_dim, floor), floor


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def _spacing(centers: Tensor, scale: Tensor, rounding: Tensor) -> Tensor:
    """A spread for clusters of one code each (no spread measured: as many centers as codes): half
    the median distance from a center to its nearest other one, in the codes' own units (the
    codes' mean distance to their mean where all centers coincide; 1 where that is ``rounding``
    size too)."""
    gaps = torch.cdist(centers, centers)
    gaps.fill_diagonal_(torch.inf)
    nearest = gaps.min(1).values
    nearest = nearest[torch.isfinite(nearest) & (nearest > rounding)]
    if nearest.numel():
        return 0.5 * nearest.median()
    return scale if bool(scale > rounding) else scale.new_tensor(1.0)


__all__ = ["fit_rbf_parameters", "kmeans", "nll_gradient", "rbf_nll"]
