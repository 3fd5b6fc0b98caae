"""Tests of tf_lrp.datasets, the shipped models in saved_models/ and the examples/ inputs.

The shipped models carry their preprocessing: each starts with a Rescaling layer and takes raw
pixel values 0..255 (the data sets are in [-1, 1] for digits and [0, 1] for shapes; the
example arrays hold the pixel values).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tf_lrp.datasets import (
    LENET_PAD,
    SCENES_CLASSES,
    SCENES_TEST_SEED,
    SCENES_TRAIN_SEED,
    SHAPES_CLASSES,
    SHAPES_TEST_SEED,
    SHAPES_TRAIN_SEED,
    digits_split_indices,
    load_digits,
    make_scenes,
    make_shapes,
)
from tf_lrp.errors import InputError

REPO = Path(__file__).resolve().parents[1]
SAVED_MODELS = REPO / "saved_models"
EXAMPLES = REPO / "examples"


# --------------------------------------------------------------------------- digits


@pytest.mark.parametrize(("split", "n"), [("train", 1347), ("test", 450), ("all", 1797)])
def test_digits_shape_dtype_range(split, n):
    x, y = load_digits(split=split)
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert x.min() == -1.0 and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    # Zero ink maps to exactly -1 (bicubic overshoot is clipped); corners are background.
    assert np.mean(x == -1.0) > 0.25
    assert np.all(x[:, 0, 0, 0] < -0.9)


def test_digits_padding_frames_the_28x28_digits():
    x28, y28 = load_digits()
    x32, y32 = load_digits(pad=LENET_PAD)
    assert x32.shape == (450, 32, 32, 1)
    # exact: the same 28x28 drawing, then padded
    np.testing.assert_array_equal(x32[:, 2:-2, 2:-2], x28)
    np.testing.assert_array_equal(y32, y28)
    border = np.ones((32, 32), dtype=bool)
    border[2:-2, 2:-2] = False
    assert np.all(x32[:, border] == -1.0)


def test_digits_other_size_is_upsampled_from_the_same_digits():
    x56, y56 = load_digits(size=56)
    x28, y28 = load_digits()
    assert x56.shape == (450, 56, 56, 1)
    np.testing.assert_array_equal(y56, y28)
    # Block means of the 28x28 image and the 56x56 image of the same digit agree coarsely.
    coarse = lambda x, k: x[..., 0].reshape(len(x), 4, k, 4, k).mean(axis=(2, 4))  # noqa: E731
    assert np.abs(coarse(x56, 14) - coarse(x28, 7)).mean() < 0.05


def test_digits_have_an_mnist_style_margin():
    """As in MNIST, the digit fills the central 20x20 of the 28x28 image."""
    x, _ = load_digits(split="all")
    margin = np.ones((28, 28), bool)
    margin[4:24, 4:24] = False
    assert np.all(x[:, margin, 0] == -1.0)
    assert np.all(x[:, 4:24, 4:24, 0].max(axis=(1, 2)) > 0.5)


def test_digits_split_disjoint_stratified_and_stable():
    train, test = digits_split_indices()
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1797))
    _, y_all = load_digits(split="all")
    _, y_test = load_digits(split="test")
    np.testing.assert_array_equal(y_all[test], y_test)
    # Stratified: every class has a quarter of its samples (±1) in the test split.
    for c in range(10):
        assert abs(np.sum(y_test == c) - 0.25 * np.sum(y_all == c)) <= 1
    # Pinned: "held-out" must mean the same samples for every model ever shipped.
    assert test[:8].tolist() == [21, 24, 28, 34, 35, 37, 39, 42]
    assert int(test.sum()) == 423_769
    # A different seed gives a different split of the same size.
    other_train, other_test = digits_split_indices(seed=1)
    assert len(other_test) == 450 and not np.array_equal(other_test, test)


def test_digits_are_deterministic_and_independent_copies():
    x1, y1 = load_digits(split="train")
    x1[:] = 0.0
    y1[:] = 0
    x2, y2 = load_digits(split="train")
    x3, y3 = load_digits(split="train")
    np.testing.assert_array_equal(x2, x3)  # the same computation twice: exact
    np.testing.assert_array_equal(y2, y3)
    assert x2.min() == -1.0 and y2.max() == 9


@pytest.mark.parametrize(
    "kwargs",
    [{"split": "val"}, {"size": 4}, {"pad": -1}, {"seed": -1}, {"size": 28.0}, {"pad": True}],
)
def test_digits_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        load_digits(**kwargs)


# --------------------------------------------------------------------------- scenes


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(60, seed=3)


def test_scenes_shape_dtype_range_balance(scenes):
    x, y, masks = scenes
    assert x.shape == (60, 64, 64, 3) and x.dtype == np.float32
    assert y.dtype == np.int64 and masks.shape == (60, 64, 64) and masks.dtype == bool
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(y), [15, 15, 15, 15])
    assert SCENES_CLASSES == SHAPES_CLASSES


def test_scenes_mask_is_one_uniform_object_on_a_textured_background_with_distractors(scenes):
    x, _, masks = scenes
    area = masks.sum(axis=(1, 2))
    # scale 0.09-0.14 of 64 px: a cross of r = 5.8 px covers ~40 px, a circle of 9 px ~254 px
    assert area.min() >= 30 and area.max() <= 300
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()
    for image, mask in zip(x, masks, strict=True):
        inside = image[mask]
        assert inside.std(axis=0).max() < 0.06  # one colour + noise (std 0.04)
        ring = np.zeros_like(mask)  # pixels 1-2 px around the object: never a distractor
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ring |= np.roll(mask, (dy, dx), axis=(0, 1))
        ring &= ~mask
        assert np.linalg.norm(image[ring].mean(axis=0) - inside.mean(axis=0)) > 0.25
        # Outside the object: texture (not one colour) and other objects (colours far from
        # the background mean) cover more than the noise alone would.
        outside = image[~mask]
        assert outside.std(axis=0).max() > 0.06
    # Distractors: on average more "object-coloured" pixels outside the mask than inside it.
    far = [np.linalg.norm(im[~m] - np.median(im[~m], axis=0), axis=1) > 0.45
           for im, m in zip(x, masks, strict=True)]
    assert np.mean([f.sum() for f in far]) > np.mean(masks.sum(axis=(1, 2)))


def test_scenes_deterministic_prefix_and_seeds(scenes):
    # exact: sample i is drawn by the same code from the same (seed, i) in every call
    prefix = make_scenes(7, seed=3)
    for a, b in zip(scenes, prefix, strict=True):
        np.testing.assert_array_equal(a[:7], b)
    assert SCENES_TRAIN_SEED != SCENES_TEST_SEED
    x_train, _, _ = make_scenes(4, seed=SCENES_TRAIN_SEED)
    x_test, _, _ = make_scenes(4, seed=SCENES_TEST_SEED)
    assert not np.any(np.all(x_train[:, None] == x_test[None], axis=(2, 3, 4)))
    x_shapes, _, _ = make_shapes(4, size=64, seed=3)
    assert not np.array_equal(x_shapes, scenes[0][:4])


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"size": 16}, {"seed": -2}])
def test_scenes_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError, match=next(iter(kwargs))):
        make_scenes(**{"n": 2, **kwargs})


# --------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(200, seed=3)


def test_shapes_shape_dtype_range(shapes):
    x, y, masks = shapes
    assert x.shape == (200, 32, 32, 3) and x.dtype == np.float32
    assert y.shape == (200,) and y.dtype == np.int64
    assert masks.shape == (200, 32, 32) and masks.dtype == bool
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert set(np.unique(y)) == set(range(len(SHAPES_CLASSES)))
    assert SHAPES_CLASSES == ("circle", "square", "triangle", "cross")


def test_shapes_class_balance(shapes):
    _, y, _ = shapes
    np.testing.assert_array_equal(np.bincount(y), [50, 50, 50, 50])
    _, y_odd, _ = make_shapes(10, seed=3)
    counts = np.bincount(y_odd, minlength=4)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1


def test_shapes_masks_are_non_empty_inside_and_uniformly_coloured(shapes):
    x, _, masks = shapes
    area = masks.sum(axis=(1, 2))
    assert area.min() >= 0.03 * 32 * 32 and area.max() <= 0.5 * 32 * 32
    # Shapes keep a margin: no mask pixel on the image border.
    assert not masks[:, [0, -1], :].any() and not masks[:, :, [0, -1]].any()
    for image, mask in zip(x, masks, strict=True):
        inside = image[mask]
        # One colour plus noise (std 0.04) inside the mask ...
        assert inside.std(axis=0).max() < 0.06
        # ... that stands out from the background (the most common colour outside).
        outside = image[~mask]
        assert np.linalg.norm(np.median(outside, axis=0) - inside.mean(axis=0)) > 0.3


def test_shapes_deterministic_prefix_stable_and_seed_dependent(shapes):
    # exact: sample i is drawn by the same code from the same (seed, i) in every call
    again = make_shapes(200, seed=3)
    for a, b in zip(shapes, again, strict=True):
        np.testing.assert_array_equal(a, b)
    prefix = make_shapes(37, seed=3)
    for a, b in zip(shapes, prefix, strict=True):
        np.testing.assert_array_equal(a[:37], b)
    other = make_shapes(200, seed=4)
    assert not np.array_equal(other[0], shapes[0])
    assert not np.array_equal(other[2], shapes[2])


def test_shapes_train_and_test_seeds_differ():
    assert SHAPES_TRAIN_SEED != SHAPES_TEST_SEED
    x_train, _, _ = make_shapes(8, seed=SHAPES_TRAIN_SEED)
    x_test, _, _ = make_shapes(8, seed=SHAPES_TEST_SEED)
    assert not np.any(np.all(x_train[:, None] == x_test[None], axis=(2, 3, 4)))


def test_shapes_other_size_and_empty():
    x, y, masks = make_shapes(4, size=64, seed=0)
    assert x.shape == (4, 64, 64, 3) and masks.shape == (4, 64, 64)
    assert masks.sum(axis=(1, 2)).min() >= 0.03 * 64 * 64
    x0, y0, m0 = make_shapes(0)
    assert x0.shape == (0, 32, 32, 3) and y0.shape == (0,) and m0.shape == (0, 32, 32)


@pytest.mark.parametrize(("kwargs", "name"), [({"n": -1}, "n"), ({"n": 2, "size": 8}, "size")])
def test_shapes_bad_arguments_raise_input_error(kwargs, name):
    with pytest.raises(InputError, match=name):
        make_shapes(**kwargs)


# --------------------------------------------------------------------------- shipped models


def digit_pixels(x: np.ndarray) -> np.ndarray:
    """Digits in [-1, 1] as the pixel values 0..255 the shipped digit models take (the
    computation of scripts/_training.to_pixels)."""
    return ((x.astype(np.float64) + 1.0) * 127.5).astype(np.float32)


def shape_pixels(x: np.ndarray) -> np.ndarray:
    """Shapes in [0, 1] as the pixel values 0..255 the shipped shapes model takes (the
    computation of scripts/_training.to_pixels)."""
    return (x.astype(np.float64) * 255.0).astype(np.float32)


MODELS = {
    # file: (held-out data, as pixels, minimum accuracy, the range the trained network expects)
    "digits_mlp.h5": (lambda: load_digits(split="test"), digit_pixels, 0.95, (-1.0, 1.0)),
    "digits_lenet.h5": (lambda: load_digits(split="test", pad=LENET_PAD), digit_pixels, 0.95,
                        (-1.0, 1.0)),
    "shapes_resnet.keras": (lambda: make_shapes(400, seed=SHAPES_TEST_SEED)[:2], shape_pixels,
                            0.90, (0.0, 1.0)),
    "shapes_vit.keras": (lambda: make_shapes(400, seed=SHAPES_TEST_SEED)[:2], shape_pixels,
                         0.93, (0.0, 1.0)),
    "scenes_vgg.keras": (lambda: make_scenes(400, seed=SCENES_TEST_SEED)[:2], shape_pixels,
                         0.95, (0.0, 1.0)),
    "scenes_resnet.keras": (lambda: make_scenes(400, seed=SCENES_TEST_SEED)[:2], shape_pixels,
                            0.95, (0.0, 1.0)),
}


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_shipped_model_accuracy(filename):
    keras = pytest.importorskip("keras")
    path = SAVED_MODELS / filename
    assert path.stat().st_size < 5 * 2**20
    model = keras.models.load_model(path, compile=False)
    assert model.layers[-1].activation is keras.activations.softmax
    data, to_pixels, threshold, (low, high) = MODELS[filename]
    # the preprocessing is part of the model: Rescaling maps 0..255 onto [low, high]
    first = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)][0]
    assert isinstance(first, keras.layers.Rescaling) and first.name == "preprocess"
    np.testing.assert_allclose([first.scale, first.offset], [(high - low) / 255.0, low])
    x, y = data()
    predictions = model.predict(to_pixels(x), batch_size=256, verbose=0)
    np.testing.assert_allclose(predictions.sum(axis=-1), 1.0, rtol=1e-5)
    accuracy = np.mean(np.argmax(predictions, axis=-1) == y)
    assert accuracy >= threshold, f"{filename}: held-out accuracy {accuracy:.3f}"


# --------------------------------------------------------------------------- examples


def test_digit_examples_match_the_test_split():
    from PIL import Image

    x28, y = load_digits(split="test")
    x32, _ = load_digits(split="test", pad=LENET_PAD)
    files = sorted((EXAMPLES / "digits").glob("*.png"))
    assert len(files) == 6
    indices = []
    for file in files:
        index, label = map(int, re.fullmatch(r"test(\d+)_label(\d)\.png", file.name).groups())
        pixels = np.asarray(Image.open(file))
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
        assert label == y[index]
        np.testing.assert_allclose(pixels / 127.5 - 1.0, x28[index, ..., 0], atol=0.5 / 127.5)
        indices.append(index)
    arrays = np.load(EXAMPLES / "digits_32.npy")  # pixel values 0..255 (float32, not rounded)
    assert arrays.dtype == np.float32 and arrays.min() == 0.0 and arrays.max() == 255.0
    # exact: the file was written from load_digits by the same computation
    # (scripts/train_digits.py with scripts/_training.to_pixels)
    np.testing.assert_array_equal(arrays, digit_pixels(x32[indices]))


def test_shape_examples_match_the_held_out_shapes():
    from PIL import Image

    x, y, masks = make_shapes(40, seed=SHAPES_TEST_SEED)
    files = sorted((EXAMPLES / "shapes").glob("*.png"))
    indices = [int(re.fullmatch(r"test(\d+)_\w+\.png", f.name).group(1)) for f in files]
    assert sorted(SHAPES_CLASSES[y[i]] for i in indices) == sorted(SHAPES_CLASSES)
    assert [f.name.split("_", 1)[1][:-4] for f in files] == [SHAPES_CLASSES[y[i]] for i in indices]
    arrays = np.load(EXAMPLES / "shapes_32.npy")  # pixel values 0..255 (float32, not rounded)
    assert arrays.dtype == np.float32 and arrays.min() >= 0.0 and arrays.max() <= 255.0
    # exact: written from make_shapes by the same computation (scripts/train_shapes.py with
    # scripts/_training.to_pixels)
    np.testing.assert_array_equal(arrays, shape_pixels(x[indices]))
    np.testing.assert_array_equal(np.load(EXAMPLES / "shapes_masks.npy"), masks[indices])
    for file, image in zip(files, arrays, strict=True):  # the PNGs are the arrays, rounded
        pixels = np.asarray(Image.open(file).convert("RGB"), np.float32)
        np.testing.assert_allclose(pixels, image, rtol=0, atol=0.5 + 1e-3)


@pytest.mark.parametrize(("filename", "arrays"), [("digits_lenet.h5", "digits_32.npy"),
                                                  ("shapes_resnet.keras", "shapes_32.npy")])
def test_shipped_models_classify_the_example_arrays(filename, arrays):
    """The example arrays are held-out samples the models get right, fed as pixels 0..255."""
    import tf_lrp

    model = tf_lrp.load_model(SAVED_MODELS / filename)
    predicted = np.argmax(model.predict(np.load(EXAMPLES / arrays), verbose=0), axis=-1)
    folder = EXAMPLES / ("digits" if filename.startswith("digits") else "shapes")
    names = [f.stem.split("_", 1)[1] for f in sorted(folder.glob("*.png"))]
    expected = [int(n[len("label"):]) if n.startswith("label") else SHAPES_CLASSES.index(n)
                for n in names]
    assert predicted.tolist() == expected
