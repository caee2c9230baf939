"""Small synthetic data sets for examples and tests (numpy only: no scikit-learn dependency)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import _checks

__all__ = ["cells", "two_moons"]

# The lift to D > 2 is a property of the data set, not of the sample: one fixed map per D,
# whatever the sampling seed, so that two samples of the same data set are comparable.
_LIFT_SEED = 20180501


def two_moons(
    n: int = 1000,
    noise: float = 0.05,
    seed: int | None = 0,
    *,
    dim: int = 2,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Two interleaved half circles (the paper's Figure 1 data).

    Moon 0 is the upper arc ``(cos t, sin t)``, moon 1 the lower arc
    ``(1 - cos t, 0.5 - sin t)``, ``t ~ U[0, pi]``; each point gets isotropic Gaussian noise of
    standard deviation ``noise`` and the points are shuffled. Moon 0 gets ``ceil(n / 2)`` points.

    With ``dim > 2`` the planar points ``p`` are lifted by a fixed random smooth map
    ``x = Q[:, :2] p + Q[:, 2:] (0.5 sin(A p + b))``, ``Q`` a random (dim, dim) orthogonal matrix:
    the nonlinear part lies in the orthogonal complement of the plane, so the map is injective
    (projecting onto ``Q[:, :2]`` gives ``p`` back) but curved, and a decoder has to learn it.
    The map depends on ``dim`` only, not on ``seed``.

    Args:
        n: number of points (>= 2).
        noise: standard deviation of the planar noise (>= 0).
        seed: seed of the sample (``None``: fresh entropy).
        dim: data dimension D (>= 2).
        dtype: floating dtype of ``X``.
    Returns:
        ``X`` (n, dim) of ``dtype`` and ``labels`` (n,) int64 in {0, 1}.

    Example::

        X, y = fastgeo.datasets.two_moons(1000, noise=0.05, seed=0)   # (1000, 2), (1000,)
    """
    n = _checks.integer("n", n, 2)
    noise = _checks.nonnegative_float("noise", noise)
    seed = _checks.seed("seed", seed)
    dim = _checks.integer("dim", dim, 2)
    dtype = _checks.float_dtype("dtype", dtype)
    rng = np.random.default_rng(seed)
    n0 = (n + 1) // 2
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t[:n0]), np.sin(t[:n0])], axis=1)
    lower = np.stack([1.0 - np.cos(t[n0:]), 0.5 - np.sin(t[n0:])], axis=1)
    points = np.concatenate([upper, lower]) + noise * rng.standard_normal((n, 2))
    labels = np.concatenate([np.zeros(n0, dtype=np.int64), np.ones(n - n0, dtype=np.int64)])
    order = rng.permutation(n)
    points, labels = points[order], labels[order]
    if dim > 2:
        points = _lift(points, dim)
    return torch.from_numpy(points).to(dtype), torch.from_numpy(labels)


def _lift(p: np.ndarray, dim: int) -> np.ndarray:
    """The fixed smooth injective map R^2 -> R^dim of :func:`two_moons`: (n, 2) -> (n, dim)."""
    rng = np.random.default_rng(_LIFT_SEED + dim)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    a = rng.standard_normal((dim - 2, 2)) * 1.5  # frequencies ~ the moons' curvature scale
    b = rng.uniform(0.0, 2 * np.pi, size=dim - 2)
    bend = 0.5 * np.sin(p @ a.T + b)
    return p @ q[:, :2].T + bend @ q[:, 2:].T


# The tree of cell types of :func:`cells` (edges between program-space nodes; one type per edge):
# a root type, a branch point, two lineages with one more split, and a type apart.
_CELL_TREE = ((0, 1), (1, 2), (1, 3), (3, 4), (3, 5), (0, 6))
_CELLS_SEED = 20240611  # the programs and genes: a property of the data set, not of the sample


def cells(
    n: int = 10000,
    seed: int | None = 0,
    *,
    genes: int = 2000,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Single-cell-like expression profiles: cells along a branching tree of six cell types in a
    5-D space of gene programs, read out as Poisson counts of ``genes`` genes, library-size
    normalized and ``log1p``-transformed (the usual preprocessing of single-cell RNA data).

    A cell of type ``e`` (an edge a -> b of the tree) sits at ``(1 - t) P_a + t P_b`` plus
    Gaussian noise (sd 0.15), ``t ~ U[0, 1]``; its genes' log-rates are a fixed random smooth map
    of that position (tanh of 16 programs, mixed per gene, a per-gene baseline; about a third of
    the genes respond), the library size varies by cell (log-normal, ~2,000 counts). The tree,
    programs and genes depend on ``genes`` only, not on ``seed``.

    Args:
        n: cells (>= 2).
        seed: seed of the sample (``None``: fresh entropy).
        genes: D (>= 2).
        dtype: floating dtype of ``X``.
    Returns:
        ``X`` (n, genes) of ``dtype``, values in [0, log(1 + 1e4)] ~ [0, 9.2], and ``labels``
        (n,) int64 in 0..5.
    """
    n = _checks.integer("n", n, 2)
    seed = _checks.seed("seed", seed)
    genes = _checks.integer("genes", genes, 2)
    dtype = _checks.float_dtype("dtype", dtype)
    fixed = np.random.default_rng(_CELLS_SEED + genes)
    nodes = fixed.standard_normal((7, 5)) * 1.2
    programs_w = fixed.standard_normal((5, 16)) * 0.8
    programs_b = fixed.standard_normal(16) * 0.5
    responds = fixed.uniform(size=genes) < 0.35
    mixing = fixed.standard_normal((16, genes)) * 0.9 * responds
    baseline = fixed.normal(-8.0, 1.5, size=genes)  # log-fraction of the library per gene

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(_CELL_TREE)
    rng.shuffle(labels)
    ends = np.array(_CELL_TREE)[labels]
    t = rng.uniform(size=(n, 1))
    position = (1 - t) * nodes[ends[:, 0]] + t * nodes[ends[:, 1]] + 0.15 * rng.standard_normal((n, 5))
    log_rate = baseline + np.tanh(position @ programs_w + programs_b) @ mixing
    fraction = np.exp(log_rate - log_rate.max(axis=1, keepdims=True))
    fraction /= fraction.sum(axis=1, keepdims=True)
    library = np.exp(rng.normal(np.log(2000.0), 0.3, size=(n, 1)))
    counts = rng.poisson(fraction * library)
    size = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    x = np.log1p(counts / size * 1e4)
    return torch.from_numpy(x).to(dtype), torch.from_numpy(labels.astype(np.int64))
