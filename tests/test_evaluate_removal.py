"""ROAD, IROF and the blurred removal value on cases computed by hand.

- Noisy linear imputation: a single removed pixel becomes the weighted mean of its neighbours
  (direct 1/6, diagonal 1/12; at a corner or edge renormalised over the neighbours inside the
  image); two adjacent removed pixels solve a 2x2 system; noise touches only imputed pixels.
- ROAD: a model reading two pixels, whose removal order is fixed by the relevance, gives the
  MoRF curve from those imputations; LeRF removes pixels the model ignores (flat curve).
- IROF: a logistic model on a 2x2 grid of superpixels gives the probability curve by hand.
- "blur": a constant image is its own blur (nothing changes when it is the removal value).
"""

from __future__ import annotations

import numpy as np
import pytest

from tf_lrp import evaluate
from tf_lrp.errors import InputError

D, S = 1 / 12, 1 / 6  # diagonal and direct neighbour weights of the paper


def _image(h=4, w=4, c=1):
    # squares: neither constant nor linear, so an imputation is never right by accident
    return (np.arange(h * w * c, dtype=np.float64) ** 2).reshape(h, w, c)


# ------------------------------------------------------------------------------ imputation
def test_single_removed_pixel_is_the_weighted_mean_of_its_neighbours():
    img = _image(4, 5, 2)
    removed = np.zeros((4, 5), bool)
    removed[1, 2] = True
    out = evaluate.linear_imputation(img, removed)
    expected = (D * (img[0, 1] + img[0, 3] + img[2, 1] + img[2, 3])
                + S * (img[0, 2] + img[2, 2] + img[1, 1] + img[1, 3]))  # weights sum to 1
    np.testing.assert_allclose(out[1, 2], expected, rtol=1e-12)
    keep = ~removed
    np.testing.assert_array_equal(out[keep], img[keep])  # known pixels are fixed

    corner = np.zeros((4, 5), bool)
    corner[0, 0] = True  # three neighbours inside: (0,1), (1,0) direct and (1,1) diagonal
    want = (S * img[0, 1] + S * img[1, 0] + D * img[1, 1]) / (S + S + D)
    np.testing.assert_allclose(evaluate.linear_imputation(img, corner)[0, 0], want, rtol=1e-12)


def test_adjacent_removed_pixels_are_solved_together_and_noise_only_touches_them():
    img = _image()[..., 0]  # (H, W): one channel without an axis
    removed = np.zeros((4, 4), bool)
    removed[1, 1] = removed[2, 2] = True  # diagonal neighbours of each other
    # v11 = s11 + D v22 and v22 = s22 + D v11, s = weighted sum over the known neighbours
    s11 = D * (img[0, 0] + img[0, 2] + img[2, 0]) + S * (img[0, 1] + img[1, 0] + img[1, 2]
                                                          + img[2, 1])
    s22 = D * (img[1, 3] + img[3, 1] + img[3, 3]) + S * (img[1, 2] + img[2, 1] + img[2, 3]
                                                          + img[3, 2])
    v11 = (s11 + D * s22) / (1 - D * D)
    v22 = s22 + D * v11
    out = evaluate.linear_imputation(img, removed)
    assert out.shape == img.shape
    np.testing.assert_allclose([out[1, 1], out[2, 2]], [v11, v22], rtol=1e-12)

    noisy = evaluate.linear_imputation(img, removed, noise_std=0.5, rng=3)
    np.testing.assert_array_equal(noisy[~removed], img[~removed])
    noise = np.random.default_rng(3).normal(0.0, 0.5, (2, 1))[:, 0]  # one draw per unknown
    np.testing.assert_allclose([noisy[1, 1], noisy[2, 2]], [v11, v22] + noise, rtol=1e-12)


def test_imputation_needs_a_kept_pixel():
    with pytest.raises(InputError, match="at least one kept pixel"):
        evaluate.linear_imputation(np.ones((3, 3, 1)), np.ones((3, 3), bool))


# ------------------------------------------------------------------------------ ROAD
def test_road_curves_by_hand():
    x = _image()[None].astype(np.float32)  # (1, 4, 4, 1)
    relevance = np.linspace(0.0, 1.0, 16).reshape(1, 4, 4, 1)  # unique, no ties
    relevance[0, 1, 1] = 5.0      # most relevant
    relevance[0, 2, 2] = 4.0      # second
    relevance[0, 3, 3] = -1.0     # least relevant
    relevance[0, 0, 0] = -0.5     # second least

    def predict(batch):  # reads only the two most relevant pixels
        return (batch[:, 1, 1, 0] + batch[:, 2, 2, 0]).astype(np.float64)[:, None]

    img = x[0, ..., 0].astype(np.float64)
    s11 = D * (img[0, 0] + img[0, 2] + img[2, 0]) + S * (img[0, 1] + img[1, 0] + img[1, 2]
                                                          + img[2, 1])
    s22 = D * (img[1, 3] + img[3, 1] + img[3, 3]) + S * (img[1, 2] + img[2, 1] + img[2, 3]
                                                          + img[3, 2])
    one = s11 + D * img[2, 2] + img[2, 2]  # only (1, 1) removed: (2, 2) is known
    v11 = (s11 + D * s22) / (1 - D * D)
    two = v11 + s22 + D * v11
    f0 = img[1, 1] + img[2, 2]
    curves = evaluate.road(predict, x, relevance, 0, fractions=(1 / 16, 2 / 16), noise_std=0.0)
    np.testing.assert_allclose(curves.fractions, [0, 1 / 16, 2 / 16])
    np.testing.assert_allclose(curves.outputs[0], [f0, one, two], rtol=1e-5)
    np.testing.assert_allclose(curves.aopc, [(0 + f0 - one + f0 - two) / 3], rtol=1e-5)
    # the same image without a channel axis, (n, H, W): its relevance is already per pixel
    flat = evaluate.road(lambda b: predict(b[..., None]), x[..., 0], relevance[..., 0], 0,
                         fractions=(1 / 16, 2 / 16), noise_std=0.0)
    np.testing.assert_allclose(flat.outputs[0], [f0, one, two], rtol=1e-5)
    lerf = evaluate.road(predict, x, relevance, 0, order="lerf", fractions=(1 / 16, 2 / 16),
                         noise_std=0.0)
    np.testing.assert_allclose(lerf.outputs[0], f0)  # (3,3) and (0,0) are not read
    assert lerf.aopc[0] == 0.0
    # default noise: 0.01 of the value range; seeded, so reproducible and different
    a = evaluate.road(predict, x, relevance, 0, fractions=(1 / 16, 2 / 16), seed=1)
    b = evaluate.road(predict, x, relevance, 0, fractions=(1 / 16, 2 / 16), seed=1)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert 0 < abs(a.outputs[0, 1] - one) < 5 * 0.01 * (img.max() - img.min())


def test_road_errors():
    x = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(InputError, match="images"):
        evaluate.road(lambda b: b[:, :1], np.zeros((2, 5)), np.zeros((2, 5)), 0)
    with pytest.raises(InputError, match="fractions"):
        evaluate.road(lambda b: b.reshape(2, -1), x, x, 0, fractions=(0.5, 1.0))
    with pytest.raises(InputError, match="order"):
        evaluate.road(lambda b: b.reshape(2, -1), x, x, 0, order="random")


# ------------------------------------------------------------------------------ IROF
def test_irof_by_hand():
    """Logits ``[s, 0]``, ``s = sum w x`` with ``x = 1`` and ``w`` constant on each 2x2 cell."""
    per_pixel = np.array([[2.0, -1.0], [0.5, 1.0]])  # cells 0, 1 (top), 2, 3 (bottom)
    w = np.kron(per_pixel, np.ones((2, 2)))[..., None]  # (4, 4, 1)
    x = np.ones((1, 4, 4, 1), np.float32)

    def predict(batch):
        s = (batch.astype(np.float64) * w).reshape(len(batch), -1).sum(axis=1)
        return np.stack([s, np.zeros_like(s)], axis=1)

    # cells removed (baseline 0) by mean relevance 2 > 1 > 0.5 > -1: s = 10, 2, -2, -4, 0
    s = np.array([10.0, 2.0, -2.0, -4.0, 0.0])
    p = 1 / (1 + np.exp(-s))
    curves = evaluate.irof(predict, x, x * w, 0, segments=2, baseline=0.0)
    np.testing.assert_allclose(curves.fractions, np.arange(5) / 4)
    np.testing.assert_allclose(curves.outputs[0], p / p[0], rtol=1e-12)
    np.testing.assert_allclose(curves.aopc, [np.mean(1 - p / p[0])], rtol=1e-12)
    # the same cells given as labels (any ids), for all images or per image
    labels = evaluate.grid_segments(4, 4, 2) * 7 + 3
    np.testing.assert_array_equal(evaluate.grid_segments(4, 4, 2)[::2, ::2], [[0, 1], [2, 3]])
    for segments in (labels, labels[None]):
        same = evaluate.irof(predict, x, x * w, 0, segments=segments, baseline=0.0)
        np.testing.assert_allclose(same.outputs, curves.outputs, rtol=1e-12)
    raw = evaluate.irof(predict, x, x * w, 0, segments=2, baseline=0.0, probability=False)
    np.testing.assert_allclose(raw.outputs[0], s / s[0], rtol=1e-12)


def test_irof_ranks_unequal_segments_by_mean_per_image():
    """Segments of unequal size, and images with different numbers of segments: the order is
    by mean relevance (by sum it would differ in both images), each image on its own grid of
    removed counts."""
    w = np.zeros((2, 4, 4, 1))
    labels = np.zeros((2, 4, 4), int)
    # image 0: a 2x2 corner (4 pixels, relevance 1 each: mean 1, sum 4), the rest (12 pixels,
    # 0.5 each: mean 0.5, sum 6) -> by mean the corner goes first
    labels[0] = 9
    labels[0, :2, :2] = 5
    w[0, ..., 0] = np.where(labels[0] == 5, 1.0, 0.5)
    # image 1: columns 0 | 1-2 | 3 with relevance -1, 0.25, 0.4 per pixel: means 0.4 > 0.25 > -1
    # (sums 1.6 < 2): column 3, then columns 1-2, then column 0
    labels[1] = np.array([0, 1, 1, 2])[None, :]
    w[1, ..., 0] = np.array([-1.0, 0.25, 0.25, 0.4])[None, :]
    x = np.ones((2, 4, 4, 1), np.float32) * np.array([1.0, 2.0])[:, None, None, None]

    def predict(batch):  # s = sum w x / x: the image is told by its pixel value (1 or 2)
        flat = batch.astype(np.float64).reshape(len(batch), -1)
        which = np.where(flat.max(axis=1) > 1.5, 1, 0)
        level = np.maximum(flat.max(axis=1), 1.0)
        s = (flat * w.reshape(2, -1)[which]).sum(axis=1) / level
        return np.stack([s, np.zeros_like(s)], axis=1)

    curves = evaluate.irof(predict, x, w, 0, segments=labels, baseline=0.0)
    # steps = 3 (the most segments); image 0 removes round(k/3 * 2) = 0, 1, 1, 2 segments
    s = np.array([[10.0, 6.0, 6.0, 0.0], [-0.4, -2.0, -4.0, 0.0]])
    p = 1 / (1 + np.exp(-s))
    np.testing.assert_allclose(curves.fractions, np.arange(4) / 3)
    np.testing.assert_allclose(curves.outputs, p / p[:, :1], rtol=1e-12)
    np.testing.assert_allclose(curves.aopc, np.mean(1 - p / p[:, :1], axis=1), rtol=1e-12)
    # the same images without a channel axis, (n, H, W): the same curves
    flat = evaluate.irof(lambda b: predict(b[..., None]), x[..., 0], w[..., 0], 0,
                         segments=labels, baseline=0.0)
    np.testing.assert_allclose(flat.outputs, curves.outputs, rtol=1e-12)


def test_irof_segment_errors():
    x = np.ones((1, 4, 4, 1), np.float32)
    with pytest.raises(InputError, match="segments"):
        evaluate.irof(lambda b: b.reshape(1, -1), x, x, 0, segments=np.zeros((3, 3), int))


# ------------------------------------------------------------------------------ blur
def test_blur_removal_value():
    rng = np.random.default_rng(0)
    x = np.broadcast_to(rng.random((2, 1, 1, 3)), (2, 16, 16, 3)).astype(np.float32)

    def predict(batch):
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    flat = evaluate.pixel_flipping(predict, x, None, 0, order="random", steps=4, baseline="blur")
    np.testing.assert_allclose(flat.outputs, np.repeat(flat.outputs[:, :1], 5, axis=1),
                               rtol=1e-5)  # a constant image is its own blur
    impulse = np.zeros((1, 33, 33, 1), np.float32)
    impulse[0, 16, 16, 0] = 1.0
    blurred = evaluate.pixel_flipping(predict, impulse, impulse, 0, steps=1, fraction=1.0,
                                      baseline="blur")
    assert blurred.outputs[0, 1] == pytest.approx(1.0, abs=1e-5)  # a blur keeps the mass
    with pytest.raises(InputError, match="'blur' needs images"):
        evaluate.pixel_flipping(predict, np.ones((2, 5), np.float32), None, 0, order="random",
                                baseline="blur")
