"""tf_lrp.summary and tf_lrp.callbacks: write TensorBoard events, read them back, check images."""

from __future__ import annotations

import io
import sys
from collections import defaultdict
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tf_lrp.callbacks
from tf_lrp import summary, visualize
from tf_lrp.callbacks import HeatmapCallback
from tf_lrp.errors import InputError, LRPError


def read_images(log_dir: Path) -> dict[str, dict[int, np.ndarray]]:
    """Return {tag: {step: uint8 images (k, h, w, c)}} from all event files under log_dir."""
    images: dict[str, dict[int, np.ndarray]] = defaultdict(dict)
    for path in sorted(log_dir.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "images"
                width, height, *pngs = value.tensor.string_val
                decoded = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in pngs])
                assert decoded.shape[1:3] == (int(height), int(width))
                assert event.step not in images[value.tag], "one image set per tag and step"
                images[value.tag][event.step] = decoded
    return dict(images)


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=(5, 6, 7, 1)).astype(np.float32)
    inputs = rng.uniform(0, 255, size=(5, 6, 7, 1)).astype(np.float32)
    return relevance, inputs


# --- summary.heatmaps ---------------------------------------------------------------------


def test_heatmaps_writes_heatmap_and_overlay_tags(tmp_path, batch):
    relevance, inputs = batch
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in (0, 10):
            assert summary.heatmaps("lrp", relevance, step, inputs=inputs, max_outputs=3)
    writer.close()
    images = read_images(tmp_path)
    assert set(images) == {"lrp/heatmap", "lrp/overlay"}
    for tag in images:
        assert set(images[tag]) == {0, 10}
        assert images[tag][0].shape == (3, 6, 7, 3)  # max_outputs samples, RGB
    # PNG is lossless: the events hold exactly what visualize draws.
    expected_heat = visualize.heatmap(relevance[:3])
    np.testing.assert_array_equal(images["lrp/heatmap"][10], expected_heat)
    expected_overlay = visualize.overlay(expected_heat, inputs[:3])
    np.testing.assert_array_equal(images["lrp/overlay"][0], expected_overlay)


def test_heatmaps_without_inputs_and_with_flat_features(tmp_path):
    flat = np.random.default_rng(1).normal(size=(2, 12)).astype(np.float32)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default(), tf.name_scope("val"):
        summary.heatmaps("flat", flat, step=3, image_shape=(3, 4), max_outputs=5)
    writer.close()
    images = read_images(tmp_path)
    assert list(images) == ["val/flat/heatmap"]
    assert images["val/flat/heatmap"][3].shape == (2, 3, 4, 3)  # fewer samples than max_outputs


def test_heatmaps_channels_first_inputs(tmp_path):
    relevance = np.zeros((1, 3, 4, 5), np.float32)
    relevance[0, :, 1, 2] = 1.0  # channels first: (n, c, h, w)
    inputs = np.ones((1, 3, 4, 5), np.float32)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        summary.heatmaps("cf", relevance, 0, inputs=inputs, channel_axis=1)
    writer.close()
    images = read_images(tmp_path)
    heat = images["cf/heatmap"][0]
    assert heat.shape == (1, 4, 5, 3) and tuple(heat[0, 1, 2]) == (255, 0, 0)
    assert images["cf/overlay"][0].shape == (1, 4, 5, 3)


def test_heatmaps_without_default_writer_returns_false(batch):
    assert summary.heatmaps("lrp", batch[0], step=0) is False


def test_heatmaps_rejects_bad_shapes_before_writing(tmp_path, batch):
    relevance, inputs = batch
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        with pytest.raises(InputError, match="image_shape"):
            summary.heatmaps("lrp", relevance.reshape(5, -1), step=0)
        with pytest.raises(InputError, match="does not match"):
            summary.heatmaps("lrp", relevance, step=0, inputs=inputs[:, :5])
        with pytest.raises(InputError, match="max_outputs"):
            summary.heatmaps("lrp", relevance, step=0, max_outputs=0)
    writer.close()
    assert read_images(tmp_path) == {}


def test_missing_tensorboard_names_the_fix(monkeypatch, batch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # makes `import tensorboard` fail
    with pytest.raises(LRPError, match="pip install tensorboard"):
        summary.heatmaps("lrp", batch[0], step=0)
    with pytest.raises(LRPError, match="pip install tensorboard"):
        HeatmapCallback(batch[0], "unused")


# --- HeatmapCallback ----------------------------------------------------------------------


def test_callback_validates_arguments():
    with pytest.raises(InputError, match="image_shape"):
        HeatmapCallback(np.zeros((2, 10), np.float32), "unused")
    with pytest.raises(InputError, match="every_n_epochs"):
        HeatmapCallback(np.zeros((2, 4, 4), np.float32), "unused", every_n_epochs=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train a tiny conv net for two epochs with two callbacks (every epoch, every 2nd)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = (x[:, :4].sum(axis=(1, 2, 3)) > 0).astype(np.int32)  # learnable: top half's sign
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    root = tmp_path_factory.mktemp("logs")
    built = []
    factory = tf_lrp.callbacks._make_analyzer

    def counting_factory(*args, **kwargs):  # the real factory, counted
        built.append(args[1])
        return factory(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_lrp.callbacks, "_make_analyzer", counting_factory)
        every = HeatmapCallback(x[:3], root / "every", target=1, input_range=(-3.0, 3.0))
        second = HeatmapCallback(x[:3], root / "second", every_n_epochs=2, overlay=False)
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[every, second])
    return {"root": root, "built": built, "callbacks": (every, second), "x": x}


def test_callback_writes_one_image_set_per_epoch(trained):
    images = read_images(trained["root"] / "every" / "lrp")
    assert set(images) == {"lrp/heatmap", "lrp/overlay"}
    for tag in images:
        assert sorted(images[tag]) == [0, 1]  # steps are 0-based epochs
        for step in (0, 1):
            assert images[tag][step].shape == (3, 8, 8, 3) and images[tag][step].dtype == np.uint8


def test_callback_every_n_epochs(trained):
    images = read_images(trained["root"] / "second" / "lrp")
    assert list(images) == ["lrp/heatmap"]  # overlay=False
    assert sorted(images["lrp/heatmap"]) == [1]  # epoch 2 only


def test_callback_heatmaps_follow_the_training(trained):
    heat = read_images(trained["root"] / "every" / "lrp")["lrp/heatmap"]
    for step in (0, 1):
        assert (heat[step] != 255).any(axis=-1).mean() > 0.5  # not blank: real relevance
    assert not np.array_equal(heat[0], heat[1])  # the weights changed, so did the heatmaps


def test_callback_builds_the_analyzer_once_and_closes_writer(trained):
    assert trained["built"] == ["epsilon_plus", "epsilon_plus"]  # one per callback, not per epoch
    for callback in trained["callbacks"]:
        assert callback._writer is None  # closed on_train_end
    every = trained["callbacks"][0]
    # the very call the callback makes (same analyzer, same 3 samples, same target, final
    # weights), so the same relevance and the same picture
    relevance = every.analyzer(trained["x"][:3], target=1)
    np.testing.assert_array_equal(
        visualize.heatmap(relevance),
        read_images(trained["root"] / "every" / "lrp")["lrp/heatmap"][1],
    )  # the last epoch's heatmaps are those of the final weights
