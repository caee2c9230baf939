"""Procedural image data sets: small stand-ins for MNIST-like and CelebA-like training data,
generated on the fly (numpy only, deterministic for a seed), to train VAEs whose decoders look
like the ones real users bring (convolutional, D = 784 or 12,288).

Every function returns ``(X, labels)``:

- ``X`` (n, D) float32, pixels in [0, 1], each image flattened in PyTorch's channel-first order
  ``(C, H, W)``, i.e. ``X.view(n, C, H, W)`` gives the images back (``nn.Flatten`` of a
  convolutional decoder's output has the same order);
- ``labels`` (n,) int64 in ``[0, num_classes)``, balanced (class counts differ by at most 1)
  and shuffled.

The data sets:

- :func:`shapes28`: 28x28 grayscale filled or outlined geometric shapes (6 classes);
- :func:`glyphs28`: 28x28 grayscale pen strokes, "handwritten" glyphs (10 classes);
- :func:`color_shapes64`: 64x64 RGB coloured shapes on gradient backgrounds (6 classes).

Shapes are drawn from exact signed distance functions and anti-aliased by pixel coverage
(``clip(0.5 - sdf, 0, 1)`` with the distance in pixels), so images vary smoothly with the
random position, scale and rotation: the data lie near a smooth low-dimensional manifold, as
a VAE assumes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

SHAPE_CLASSES = ("disc", "ring", "square", "triangle", "cross", "star")
"""Class names of :func:`shapes28` and :func:`color_shapes64`, in label order."""

GLYPH_CLASSES = 10
"""Number of classes of :func:`glyphs28`."""

# The glyph prototypes are a property of the data set, not of the sample: one fixed set of
# strokes, whatever the sampling seed (as the lift of fastgeo.datasets.two_moons).
_GLYPH_SEED = 20140101
_CHUNK = 512  # images rendered at a time (bounds the (chunk, H, W, segments) temporaries)


def _check_args(n: object, seed: object) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(n,) int64 labels with counts differing by at most 1, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % k)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (size, size) x 2, in pixels, origin at the image centre."""
    c = np.arange(size, dtype=np.float64) - (size - 1) / 2
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


def _to_local(x, y, cx, cy, angle, scale):
    """Image coordinates -> shape coordinates (translate, rotate by -angle, divide by scale).

    ``x, y`` (H, W); the others (m,); returns (m, H, W) x 2 in units of ``scale`` pixels.
    """
    dx = x[None] - cx[:, None, None]
    dy = y[None] - cy[:, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return (c * dx + s * dy) / scale[:, None, None], (-s * dx + c * dy) / scale[:, None, None]


def _sd_star(px, py, n: int, m: float):
    """Exact signed distance to a regular star or polygon of circumradius 1 (Inigo Quilez's
    ``sdStar``): ``n`` points, ``m`` in [2, n] its pointiness (``m = 2``: a regular polygon)."""
    an, en = np.pi / n, np.pi / m
    acx, acy = np.cos(an), np.sin(an)
    ecx, ecy = np.cos(en), np.sin(en)
    bn = np.mod(np.arctan2(px, py), 2 * an) - an
    r = np.hypot(px, py)
    qx, qy = r * np.cos(bn) - acx, r * np.abs(np.sin(bn)) - acy
    t = np.clip(-(qx * ecx + qy * ecy), 0.0, acy / ecy)
    qx, qy = qx + ecx * t, qy + ecy * t
    return np.hypot(qx, qy) * np.sign(qx)


def _sd_box(px, py, bx: float, by: float):
    qx, qy = np.abs(px) - bx, np.abs(py) - by
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def _shape_sdf(label: np.ndarray, px, py):
    """Signed distance (shape units, circumradius ~1) of each image's class: (m, H, W)."""
    out = np.empty_like(px)
    for k, name in enumerate(SHAPE_CLASSES):
        sel = label == k
        if not sel.any():
            continue
        x, y = px[sel], py[sel]
        if name in ("disc", "ring"):
            sd = np.hypot(x, y) - 1.0
        elif name == "square":
            sd = _sd_star(x, y, 4, 2.0)
        elif name == "triangle":
            # centroid-centred equilateral triangle, a bit larger to match the others' areas
            sd = _sd_star(x / 1.2, y / 1.2, 3, 2.0) * 1.2
        elif name == "cross":
            sd = np.minimum(_sd_box(x, y, 1.0, 0.3), _sd_box(x, y, 0.3, 1.0))
        else:  # star
            sd = _sd_star(x, y, 5, 3.0)
        out[sel] = sd
    return out


def _shape_coverage(
    rng: np.random.Generator,
    labels: np.ndarray,
    size: int,
    *,
    min_r: float,
    max_r: float,
    stroke: tuple[float, float],
    ring_stroke: tuple[float, float],
) -> np.ndarray:
    """Anti-aliased coverage (m, size, size) in [0, 1] of one random shape per image.

    Radius (pixels) uniform in [min_r, max_r], the circle of that radius inside the image (an
    outline's stroke and the corners of triangles and crosses may reach the border), uniform
    rotation; rings are always outlined (stroke width uniform in ``ring_stroke`` pixels), discs
    always filled, the other classes filled or outlined (stroke width uniform in ``stroke``
    pixels) with probability 1/2.
    """
    m = labels.shape[0]
    radius = rng.uniform(min_r, max_r, m)
    room = size / 2 - radius - 1.0
    cx, cy = rng.uniform(-room, room), rng.uniform(-room, room)
    angle = rng.uniform(0.0, 2 * np.pi, m)
    ring = np.asarray(SHAPE_CLASSES) == "ring"
    disc = np.asarray(SHAPE_CLASSES) == "disc"
    u = rng.random(m)
    width = np.where(
        ring[labels],
        ring_stroke[0] + u * (ring_stroke[1] - ring_stroke[0]),
        stroke[0] + u * (stroke[1] - stroke[0]),
    )
    outline = np.where(ring[labels], True, np.where(disc[labels], False, rng.random(m) < 0.5))
    x, y = _grid(size)
    px, py = _to_local(x, y, cx, cy, angle, radius)
    sd = _shape_sdf(labels, px, py) * radius[:, None, None]  # back to pixels
    sd = np.where(outline[:, None, None], np.abs(sd) - width[:, None, None] / 2, sd)
    return np.clip(0.5 - sd, 0.0, 1.0)


def shapes28(n: int = 10000, seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """28x28 grayscale geometric shapes, 6 classes (:data:`SHAPE_CLASSES`): disc, ring, square,
    triangle, cross, five-pointed star.

    Each image has one white shape on black: circumradius uniform in [5, 11] pixels, position
    uniform with the circumcircle inside the frame (strokes and some corners reach the border:
    in about a quarter of the images, rings in half), rotation uniform, intensity uniform in [0.6, 1];
    squares, triangles, crosses and stars are filled or outlined (stroke 1.5-3 pixels) with
    probability 1/2, rings are outlined (stroke 2-4 pixels), discs filled. Anti-aliased.

    Args:
        n: number of images (>= 1).
        seed: seed of the sample (``None``: fresh entropy).
    Returns:
        ``X`` (n, 784) float32 in [0, 1] (``X.view(n, 1, 28, 28)`` for the images) and
        ``labels`` (n,) int64 in [0, 6), balanced.
    """
    _check_args(n, seed)
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, len(SHAPE_CLASSES))
    out = np.empty((n, 28 * 28), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        lab = labels[a : a + _CHUNK]
        m = lab.shape[0]
        cov = _shape_coverage(rng, lab, 28, min_r=5.0, max_r=11.0, stroke=(1.5, 3.0), ring_stroke=(2.0, 4.0))
        intensity = rng.uniform(0.6, 1.0, m)
        out[a : a + m] = (cov * intensity[:, None, None]).reshape(m, -1)
    return torch.from_numpy(out), torch.from_numpy(labels)


def _glyph_prototypes() -> list[list[np.ndarray]]:
    """The 10 fixed glyph prototypes: each a list of 1-2 strokes, a stroke (k, 2) control
    points of a Catmull-Rom spline in [-1, 1]^2 (y down)."""
    rng = np.random.default_rng(_GLYPH_SEED)
    protos = []
    for _ in range(GLYPH_CLASSES):
        # main stroke: a random walk of 5-6 points with smooth turning, rescaled to the box
        k = int(rng.integers(5, 7))
        heading = rng.uniform(0, 2 * np.pi)
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.3)
        flip = int(rng.integers(2, k)) if rng.random() < 0.4 else k  # S-shaped: turn reverses
        pts = [np.zeros(2)]
        for i in range(k - 1):
            if i == flip:
                turn = -turn
            heading += turn + rng.normal(0.0, 0.5)
            pts.append(pts[-1] + np.array([np.cos(heading), np.sin(heading)]))
        main = np.array(pts)
        main -= (main.max(0) + main.min(0)) / 2
        main /= np.abs(main).max() + 1e-9
        strokes = [0.9 * main]
        if rng.random() < 0.6:  # a second, straight-ish stroke across the first (like "t", "x")
            a, b = rng.uniform(-0.8, 0.8, 2), rng.uniform(-0.8, 0.8, 2)
            while np.linalg.norm(b - a) < 0.9:
                b = rng.uniform(-0.8, 0.8, 2)
            strokes.append(np.array([a, (a + b) / 2 + rng.normal(0, 0.1, 2), b]))
        protos.append(strokes)
    return protos


def _catmull_rom(ctrl: np.ndarray, per_segment: int) -> np.ndarray:
    """Points along the uniform Catmull-Rom spline through ``ctrl`` (m, k, 2) -> (m, S, 2)."""
    p = np.concatenate([2 * ctrl[:, :1] - ctrl[:, 1:2], ctrl, 2 * ctrl[:, -1:] - ctrl[:, -2:-1]], 1)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    t2, t3 = t * t, t * t * t
    segs = []
    for i in range(1, p.shape[1] - 2):
        p0, p1, p2, p3 = (p[:, i + j, None, :] for j in (-1, 0, 1, 2))
        c1, c2, c3 = -p0 + p2, 2 * p0 - 5 * p1 + 4 * p2 - p3, -p0 + 3 * p1 - 3 * p2 + p3
        segs.append(p1 + 0.5 * (c1 * t + c2 * t2 + c3 * t3))
    segs.append(ctrl[:, -1:, :])
    return np.concatenate(segs, 1)


def _polyline_distance(x, y, pts: np.ndarray) -> np.ndarray:
    """Distance (m, H, W) of each pixel to the polyline ``pts`` (m, S, 2)."""
    pts = pts.astype(np.float32)
    x, y = x.astype(np.float32), y.astype(np.float32)
    a, b = pts[:, :-1], pts[:, 1:]  # (m, S-1, 2)
    ab = b - a
    ab2 = np.maximum((ab**2).sum(-1), 1e-12)  # (m, S-1)
    qx = x.reshape(1, -1, 1) - a[:, None, :, 0]  # (m, HW, S-1)
    qy = y.reshape(1, -1, 1) - a[:, None, :, 1]
    t = np.clip((qx * ab[:, None, :, 0] + qy * ab[:, None, :, 1]) / ab2[:, None], 0.0, 1.0)
    dx = qx - t * ab[:, None, :, 0]
    dy = qy - t * ab[:, None, :, 1]
    return np.sqrt((dx * dx + dy * dy).min(-1)).reshape(-1, *x.shape)


def glyphs28(n: int = 10000, seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """28x28 grayscale "handwritten" glyphs, 10 classes: pen strokes around fixed prototypes.

    Each class has a fixed prototype of one or two smooth strokes (Catmull-Rom splines through
    5-6 control points, the same for every seed). A sample jitters every control point
    (Gaussian, 0.08 of the half-width), then applies a random affine map (scale 8-11 pixels,
    rotation +-0.35 rad, shear +-0.3, aspect 0.8-1.2, shift +-2.5 pixels) and draws the strokes
    with a pen of width 1.6-3.2 pixels and intensity 0.7-1, anti-aliased. Thin open curves:
    structurally unlike the solid blobs of :func:`shapes28`.

    Args:
        n: number of images (>= 1).
        seed: seed of the sample (``None``: fresh entropy).
    Returns:
        ``X`` (n, 784) float32 in [0, 1] (``X.view(n, 1, 28, 28)`` for the images) and
        ``labels`` (n,) int64 in [0, 10), balanced.
    """
    _check_args(n, seed)
    rng = np.random.default_rng(seed)
    protos = _glyph_prototypes()
    labels = _balanced_labels(rng, n, GLYPH_CLASSES)
    x, y = _grid(28)
    out = np.zeros((n, 28, 28), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        lab = labels[a : a + _CHUNK]
        m = lab.shape[0]
        scale = rng.uniform(8.0, 11.0, m)
        aspect = rng.uniform(0.8, 1.2, m)
        rot = rng.uniform(-0.35, 0.35, m)
        shear = rng.uniform(-0.3, 0.3, m)
        shift = rng.uniform(-2.5, 2.5, (m, 2))
        width = rng.uniform(1.6, 3.2, m)
        intensity = rng.uniform(0.7, 1.0, m)
        c, s = np.cos(rot), np.sin(rot)
        # A = R(rot) @ [[scale*aspect, shear*scale], [0, scale/aspect]]
        sx, sy = scale * aspect, scale / aspect
        A = np.stack(
            [
                np.stack([c * sx, c * shear * scale - s * sy], -1),
                np.stack([s * sx, s * shear * scale + c * sy], -1),
            ],
            -2,
        )  # (m, 2, 2)
        dist = np.full((m, 28, 28), np.inf)
        for stroke in range(2):
            has = np.array([len(protos[k]) > stroke for k in lab])
            if not has.any():
                continue
            for k in np.unique(lab[has]):
                sel = np.flatnonzero(has & (lab == k))
                ctrl = protos[k][stroke][None] + rng.normal(0.0, 0.08, (sel.size, *protos[k][stroke].shape))
                pts = _catmull_rom(ctrl, 6)  # (s, S, 2) in prototype units
                pts = np.einsum("mij,msj->msi", A[sel], pts) + shift[sel, None, :]
                dist[sel] = np.minimum(dist[sel], _polyline_distance(x, y, pts))
        cov = np.clip(0.5 + width[:, None, None] / 2 - dist, 0.0, 1.0)
        out[a : a + m] = cov * intensity[:, None, None]
    return torch.from_numpy(out.reshape(n, -1)), torch.from_numpy(labels)


def _hsv_to_rgb(h, s, v):
    """Vectorized HSV -> RGB, all (m,) in [0, 1]: (m, 3)."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    )  # (6, m, 3)
    return table[i, np.arange(h.shape[0])]


def color_shapes64(n: int = 6000, seed: int | None = 0) -> tuple[Tensor, Tensor]:
    """64x64 RGB coloured shapes on smooth gradient backgrounds, 6 classes by shape
    (:data:`SHAPE_CLASSES`, as :func:`shapes28`).

    Background: a linear gradient in a random direction between two random muted colours
    (saturation 0-0.4, value 0.15-0.55). Foreground: one shape of circumradius 14-26 pixels,
    random position (its circumcircle inside the frame; strokes and corners may reach the border) and
    rotation, in a bright saturated colour of random
    hue (saturation 0.6-1, value 0.75-1), filled or outlined (stroke 3-6 pixels; rings 4-8) as in
    :func:`shapes28`, anti-aliased, alpha-blended over the background. The colour carries no
    class information: the label is the shape.

    Args:
        n: number of images (>= 1).
        seed: seed of the sample (``None``: fresh entropy).
    Returns:
        ``X`` (n, 12288) float32 in [0, 1], channel-first (``X.view(n, 3, 64, 64)`` for the
        images; ``.permute(0, 2, 3, 1)`` for matplotlib), and ``labels`` (n,) int64 in [0, 6),
        balanced.
    """
    _check_args(n, seed)
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, len(SHAPE_CLASSES))
    x, y = _grid(64)
    out = np.empty((n, 3, 64, 64), dtype=np.float32)
    for a in range(0, n, _CHUNK):
        lab = labels[a : a + _CHUNK]
        m = lab.shape[0]
        bg0 = _hsv_to_rgb(rng.random(m), rng.uniform(0, 0.4, m), rng.uniform(0.15, 0.55, m))
        bg1 = _hsv_to_rgb(rng.random(m), rng.uniform(0, 0.4, m), rng.uniform(0.15, 0.55, m))
        fg = _hsv_to_rgb(rng.random(m), rng.uniform(0.6, 1.0, m), rng.uniform(0.75, 1.0, m))
        theta = rng.uniform(0, 2 * np.pi, m)
        proj = (np.cos(theta)[:, None, None] * x + np.sin(theta)[:, None, None] * y) / 64 + 0.5
        t = np.clip(proj, 0.0, 1.0)[:, None]  # (m, 1, 64, 64)
        bg = bg0[:, :, None, None] * (1 - t) + bg1[:, :, None, None] * t
        alpha = _shape_coverage(
            rng, lab, 64, min_r=14.0, max_r=26.0, stroke=(3.0, 6.0), ring_stroke=(4.0, 8.0)
        )[:, None]
        out[a : a + m] = bg * (1 - alpha) + fg[:, :, None, None] * alpha
    return torch.from_numpy(out.reshape(n, -1)), torch.from_numpy(labels)


__all__ = ["GLYPH_CLASSES", "SHAPE_CLASSES", "color_shapes64", "glyphs28", "shapes28"]
