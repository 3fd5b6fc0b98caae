"""Value-level tests of tf_lrp.visualize: colours, scaling, shapes, overlays, grids, PNG files."""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pytest
from PIL import Image

from tf_lrp import visualize
from tf_lrp.errors import InputError

WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)


def _sample_map() -> np.ndarray:
    """One 4x5 map: +2 at (1, 1), +1 at (2, 3), -1 at (0, 4), zero elsewhere."""
    relevance = np.zeros((4, 5), np.float32)
    relevance[1, 1], relevance[2, 3], relevance[0, 4] = 2.0, 1.0, -1.0
    return relevance


# --- reduce_channels --------------------------------------------------------------------


def test_reduce_channels_modes():
    relevance = np.array([[[3.0, -4.0, 0.0]]], np.float32)  # (1, 1, 3): channels last
    assert visualize.reduce_channels(relevance, mode="sum")[0, 0] == pytest.approx(-1.0)
    assert visualize.reduce_channels(relevance, mode="abs")[0, 0] == pytest.approx(7.0)
    assert visualize.reduce_channels(relevance, mode="norm")[0, 0] == pytest.approx(5.0)
    channels_first = np.moveaxis(relevance, -1, 0)  # (3, 1, 1)
    assert visualize.reduce_channels(channels_first, axis=0).shape == (1, 1)


def test_reduce_channels_rejects_unknown_mode_and_axis():
    with pytest.raises(InputError, match="sum"):
        visualize.reduce_channels(np.ones((2, 2, 3)), mode="mean")
    with pytest.raises(InputError, match="out of range"):
        visualize.reduce_channels(np.ones((2, 2, 3)), axis=3)


# --- normalize ----------------------------------------------------------------------------


def test_normalize_is_symmetric_per_sample():
    small = np.array([[-2.0, 1.0, 0.0]], np.float32)
    batch = np.concatenate([small, 1000.0 * small, -0.5 * small])
    scaled = visualize.normalize(batch)
    expected = np.array([-1.0, 0.5, 0.0], np.float32)
    np.testing.assert_allclose(scaled[0], expected)
    np.testing.assert_allclose(scaled[1], expected)  # same pattern, same picture
    np.testing.assert_allclose(scaled[2], -expected)  # the sign is kept, zero stays zero


def test_normalize_one_scale_for_the_batch():
    batch = np.array([[4.0, -2.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(
        visualize.normalize(batch, per_sample=False), [[1.0, -0.5], [0.25, 0.0]]
    )


def test_normalize_percentile_clips_and_falls_back_on_sparse_maps():
    values = np.concatenate([np.linspace(0.0, 1.0, 99), [100.0]]).astype(np.float32)
    clipped = visualize.normalize(values[None], percentile=90.0)[0]
    scale = np.percentile(values, 90.0)
    assert clipped[-1] == 1.0  # the outlier is clipped
    np.testing.assert_allclose(clipped[:50], values[:50] / scale, rtol=1e-5)
    sparse = np.zeros((1, 100), np.float32)
    sparse[0, 7] = -3.0  # the 90th percentile of |R| is 0: fall back to the maximum
    np.testing.assert_allclose(visualize.normalize(sparse, percentile=90.0)[0, 7], -1.0)


def test_normalize_keeps_zero_maps_zero_without_warnings():
    batch = np.zeros((3, 4, 4), np.float32)
    batch[1, 2, 2] = 5.0
    with np.errstate(all="raise"):
        scaled = visualize.normalize(batch)
        clipped = visualize.normalize(batch, percentile=99.0)
    for result in (scaled, clipped):
        assert np.all(np.isfinite(result))
        assert not result[0].any() and not result[2].any()
        assert result[1, 2, 2] == 1.0


def test_normalize_rejects_bad_input():
    with pytest.raises(InputError, match="NaN"):
        visualize.normalize(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="percentile"):
        visualize.normalize(np.ones((1, 3)), percentile=0.0)


# --- heatmap ------------------------------------------------------------------------------


def test_zero_gets_the_colormap_centre_colour():
    rgb = visualize.heatmap(np.zeros((2, 3, 3), np.float32))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3, 3)
    assert np.all(rgb == WHITE)  # "bwr" is exactly white at its centre


@pytest.mark.parametrize("name", ["seismic", "coolwarm", "RdBu_r"])
def test_zero_is_the_centre_of_other_diverging_colormaps(name):
    relevance = _sample_map()
    rgb = visualize.heatmap(relevance, cmap=name)[0]
    centre = np.array(matplotlib.colormaps[name](0.5)[:3]) * 255.0
    assert np.abs(rgb[0, 0].astype(float) - centre).max() <= 2.0  # (0, 0) has zero relevance
    positive_end = np.array(matplotlib.colormaps[name](1.0)[:3]) * 255.0
    np.testing.assert_allclose(rgb[1, 1], positive_end, atol=1.0)


def test_positive_map_is_red_where_positive_and_neutral_where_zero():
    relevance = np.abs(_sample_map())  # all >= 0
    rgb = visualize.heatmap(relevance)[0].astype(int)
    assert tuple(rgb[1, 1]) == RED  # the maximum: full red
    half = rgb[2, 3]  # half the maximum: red-ish, lighter than full red
    assert half[0] == 255 and half[1] == half[2] and 100 < half[1] < 160
    zero = relevance == 0
    assert np.all(rgb[zero] == WHITE)
    assert not np.any(rgb[..., 2] > rgb[..., 0])  # no blue anywhere


def test_negative_relevance_is_blue_and_mirrors_positive():
    rgb = visualize.heatmap(_sample_map())[0].astype(int)
    light_blue = rgb[0, 4]  # -1 in a map scaled by 2: half-way from white to blue
    assert light_blue[2] == 255 and light_blue[0] == light_blue[1] and 100 < light_blue[0] < 160
    mirrored = visualize.heatmap(-_sample_map())[0]
    assert tuple(mirrored[1, 1]) == BLUE
    np.testing.assert_array_equal(mirrored, rgb[..., ::-1])  # "bwr" is symmetric: swap R, B


def test_heatmap_scales_each_sample_on_its_own():
    relevance = np.stack([_sample_map(), 1e-4 * _sample_map(), 1e4 * _sample_map()])
    rgb = visualize.heatmap(relevance)
    np.testing.assert_array_equal(rgb[0], rgb[1])
    np.testing.assert_array_equal(rgb[0], rgb[2])


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((4, 5), {}, (1, 4, 5, 3)),
        ((2, 4, 5), {}, (2, 4, 5, 3)),
        ((2, 4, 5, 3), {}, (2, 4, 5, 3)),
        ((2, 3, 4, 5), {"channel_axis": 1}, (2, 4, 5, 3)),
    ],
)
def test_heatmap_shapes(shape, kwargs, expected):
    relevance = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    assert visualize.heatmap(relevance, **kwargs).shape == expected


def test_heatmap_sums_colour_channels():
    relevance = np.zeros((1, 2, 2, 3), np.float32)
    relevance[0, 0, 0] = [1.0, 1.0, 1.0]  # sum +3
    relevance[0, 1, 1] = [3.0, -1.0, -2.0]  # sum 0: cancels out
    rgb = visualize.heatmap(relevance)[0]
    assert tuple(rgb[0, 0]) == RED and tuple(rgb[1, 1]) == WHITE


@pytest.mark.parametrize("shape", [(7,), (1, 2, 3, 4, 5)])
def test_heatmap_rejects_1d_and_5d(shape):
    with pytest.raises(InputError, match="reshape"):
        visualize.heatmap(np.ones(shape, np.float32))


def test_heatmap_rejects_unknown_colormap():
    with pytest.raises(InputError, match="colormap"):
        visualize.heatmap(np.ones((2, 2)), cmap="no_such_map")


# --- overlay ------------------------------------------------------------------------------


def test_overlay_blends_min_max_scaled_image():
    heat = visualize.heatmap(np.ones((1, 1, 2), np.float32))  # two full-red pixels
    image = np.array([[[10.0, 30.0]]], np.float32)  # min-max: 0 and 1
    assert overlay_pixels(heat, image, 0.0) == [(0, 0, 0), (255, 255, 255)]
    assert overlay_pixels(heat, image, 1.0) == [RED, RED]
    assert overlay_pixels(heat, image, 0.5) == [(128, 0, 0), (255, 128, 128)]


def overlay_pixels(heat, image, alpha, **kwargs):
    return [tuple(p) for p in visualize.overlay(heat, image, alpha, **kwargs)[0, 0].astype(int)]


def test_overlay_input_range_and_layouts():
    heat = visualize.heatmap(np.zeros((2, 1, 2), np.float32))  # white
    image = np.array([[[0.0, 255.0]], [[51.0, 51.0]]], np.float32)
    fixed = visualize.overlay(heat, image[..., None], alpha=0.0, input_range=(0, 255))
    assert fixed[0, 0, 1, 0] == 255 and fixed[1, 0, 0, 0] == 51  # fixed range, not min-max
    assert visualize.overlay(heat, image, alpha=0.0)[1, 0, 0, 0] == 128  # constant: mid-grey
    colour = np.zeros((2, 1, 2, 3), np.float32)
    colour[..., 2] = 1.0  # blue image in [0, 1]
    blended = visualize.overlay(heat, colour, alpha=0.0, input_range=(0.0, 1.0))
    assert tuple(blended[0, 0, 0]) == BLUE
    single = visualize.overlay(heat[0], image[0], alpha=0.0)  # one sample, no batch axis
    assert single.shape == (1, 2, 3)


def test_overlay_rejects_mismatch():
    heat = visualize.heatmap(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="does not match"):
        visualize.overlay(heat, np.zeros((2, 3, 4)))
    with pytest.raises(InputError, match="does not match"):
        visualize.overlay(heat, np.zeros((2, 4, 4, 2)))
    with pytest.raises(InputError, match="alpha"):
        visualize.overlay(heat, np.zeros((2, 4, 4)), alpha=1.5)


# --- grid ---------------------------------------------------------------------------------


def test_grid_layout_and_padding():
    tiles = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(5)])
    canvas = visualize.grid(tiles, ncols=3, pad=1, pad_value=200)
    assert canvas.shape == (2 * 3 + 1, 3 * 4 + 1, 3) and canvas.dtype == np.uint8
    for index in range(5):
        row, col = divmod(index, 3)
        top, left = 1 + row * 3, 1 + col * 4
        assert np.all(canvas[top : top + 2, left : left + 3] == index)
    assert np.all(canvas[0] == 200) and np.all(canvas[:, 4] == 200)  # border and gutter
    assert np.all(canvas[4:6, 9:12] == 200)  # the empty sixth cell is padding
    assert np.count_nonzero(canvas != 200) == 5 * 2 * 3 * 3  # nothing but tiles and padding


def test_grid_defaults_and_errors():
    assert visualize.grid(np.zeros((4, 5, 5), np.uint8)).shape == (2 * 7 + 2, 2 * 7 + 2)
    with pytest.raises(InputError, match="non-empty"):
        visualize.grid(np.zeros((0, 5, 5, 3), np.uint8))
    with pytest.raises(InputError, match="images\\[None\\]"):
        visualize.grid(np.zeros((5, 5), np.uint8))


# --- save_png -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_save_png_round_trip_leaves_no_temp_files(tmp_path, channels):
    shape = (6, 7) if channels is None else (6, 7, channels)
    pixels = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    target = tmp_path / "out" / "map.png"  # the parent is created
    visualize.save_png(target, pixels)
    visualize.save_png(target, pixels)  # overwriting is fine too
    assert os.listdir(target.parent) == ["map.png"]
    with Image.open(target) as image:
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_save_png_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "map.png"
    target.write_bytes(b"old")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        visualize.save_png(target, np.zeros((2, 2, 3), np.uint8))
    assert os.listdir(tmp_path) == ["map.png"] and target.read_bytes() == b"old"


def test_save_png_rejects_batches_and_floats(tmp_path):
    with pytest.raises(InputError, match="grid"):
        visualize.save_png(tmp_path / "a.png", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        visualize.save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))
    assert os.listdir(tmp_path) == []


def test_save_png_accepts_a_batch_of_one(tmp_path):
    rgb = visualize.heatmap(_sample_map())  # (1, 4, 5, 3)
    visualize.save_png(tmp_path / "one.png", rgb)
    with Image.open(tmp_path / "one.png") as image:
        np.testing.assert_array_equal(np.asarray(image), rgb[0])
