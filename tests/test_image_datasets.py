"""The procedural image data sets (fastgeo.image_datasets): shapes, ranges, determinism."""

import pytest
import torch

from fastgeo import image_datasets as I

CASES = [
    (I.shapes28, 784, len(I.SHAPE_CLASSES)),
    (I.glyphs28, 784, I.GLYPH_CLASSES),
    (I.color_shapes64, 3 * 64 * 64, len(I.SHAPE_CLASSES)),
]
IDS = ["shapes28", "glyphs28", "color_shapes64"]


@pytest.mark.parametrize(("fn", "D", "k"), CASES, ids=IDS)
def test_shapes_dtypes_range(fn, D, k):
    X, y = fn(60, seed=3)
    assert X.shape == (60, D) and X.dtype == torch.float32
    assert y.shape == (60,) and y.dtype == torch.int64
    assert X.min() >= 0 and X.max() <= 1 and torch.isfinite(X).all()
    assert y.min() >= 0 and y.max() < k
    # every image shows something: not blank, not saturated
    assert (X.max(1).values > 0.5).all()
    assert (X.mean(1) < 0.9).all()


@pytest.mark.parametrize(("fn", "D", "k"), CASES, ids=IDS)
def test_deterministic_and_seeded(fn, D, k):
    X1, y1 = fn(30, seed=7)
    X2, y2 = fn(30, seed=7)
    X3, y3 = fn(30, seed=8)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, X3)
    assert not torch.equal(y1, y3)


@pytest.mark.parametrize(("fn", "D", "k"), CASES, ids=IDS)
def test_classes_balanced(fn, D, k):
    n = 3 * k + 2
    _, y = fn(n, seed=0)
    counts = torch.bincount(y, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_images_differ_within_and_across_classes():
    X, y = I.shapes28(120, seed=1)
    # no two images are the same (random pose) ...
    assert torch.cdist(X, X).add(torch.eye(120) * 1e3).min() > 0.5
    # ... and class means differ (the label is visible in the image)
    means = torch.stack([X[y == c].mean(0) for c in range(len(I.SHAPE_CLASSES))])
    assert torch.cdist(means, means).add(torch.eye(len(means)) * 1e3).min() > 0.5


def test_glyph_prototypes_fixed_across_seeds():
    # the classes are a property of the data set: the same label looks alike whatever the seed
    Xa, ya = I.glyphs28(200, seed=0)
    Xb, yb = I.glyphs28(200, seed=1)
    ma = torch.stack([Xa[ya == c].mean(0) for c in range(I.GLYPH_CLASSES)])
    mb = torch.stack([Xb[yb == c].mean(0) for c in range(I.GLYPH_CLASSES)])
    dist = torch.cdist(ma, mb)
    assert torch.equal(dist.argmin(1), torch.arange(I.GLYPH_CLASSES))


def test_color_channel_first():
    X, _ = I.color_shapes64(8, seed=0)
    img = X.view(8, 3, 64, 64)
    # background corners are smooth gradients: neighbouring pixels of one channel are close
    assert (img[:, :, 0, 0] - img[:, :, 0, 1]).abs().max() < 0.05
    # and the three channels are not copies of each other (colour)
    assert (img[:, 0] - img[:, 1]).abs().max() > 0.1


@pytest.mark.parametrize("fn", [I.shapes28, I.glyphs28, I.color_shapes64], ids=IDS)
def test_argument_errors(fn):
    for n in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="n must be"):
            fn(n, seed=0)
    for seed in (-1, 1.5, "0"):
        with pytest.raises(ValueError, match="seed must be"):
            fn(4, seed=seed)
    X, _ = fn(1, seed=None)  # fresh entropy is allowed
    assert X.shape[0] == 1
