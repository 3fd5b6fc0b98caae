"""Concept atlas (top-N against brute force, crops, resume), attribution graphs (sums, a
hand-computed LRP-0 decomposition), concept figures (PNG of the documented size) and the
``tf-lrp concepts`` command on a tiny saved model."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import struct
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import concepts, rules
from tf_lrp.concepts.atlas import heatmap_box, position_box
from tf_lrp.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
X = np.random.default_rng(0).uniform(0, 1, (23, 8, 8, 3)).astype("float32")
LABELS = np.random.default_rng(1).integers(0, 3, 23)


def _conv_model(bias: bool = True) -> keras.Model:
    """c1 (conv, fused ReLU) -> c2 (conv) -> r2 (ReLU layer) -> max pooling -> Dense: c1 is a
    cut below c2."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 3))
    a = kl.Conv2D(4, 3, padding="same", activation="relu", use_bias=bias, name="c1")(inp)
    b = kl.ReLU(name="r2")(kl.Conv2D(5, 3, padding="same", use_bias=bias, name="c2")(a))
    out = kl.Dense(3, use_bias=bias, name="out")(kl.Flatten()(kl.MaxPooling2D()(b)))
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def analyzer():
    return tf_lrp.Analyzer(_conv_model(), "epsilon_plus")


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Brute-force top-n sample indices per channel: ``scores (samples, C) -> (C, n)``,
    largest first, ties to the earlier sample."""
    return np.stack([np.lexsort((np.arange(len(s)), -s))[:n] for s in scores.T])


# ---------------------------------------------------------------------------- atlas
def test_atlas_top_n_matches_brute_force(analyzer, tmp_path):
    atlas = concepts.build_atlas(analyzer, X, "c2", tmp_path, top_n=4, batch_size=5,
                                 crop="position", window=0.5)
    assert atlas.run == {"computed": 5, "skipped": 0} and atlas.finished and atlas.samples == 23
    # relevance maximisation: concept relevance over the whole data at once
    layer_r = analyzer.layerwise(X)["c2"]  # (23, 8, 8, 5)
    concept_r = layer_r.sum(axis=(1, 2))
    scores, samples = atlas.table("c2", "relevance")
    np.testing.assert_array_equal(samples, _top(concept_r, 4))
    np.testing.assert_allclose(scores, np.take_along_axis(concept_r.T, samples, 1), rtol=1e-5,
                               atol=1e-7)
    # activation maximisation, against Keras itself: the ReLU layer's output, its maximum
    acts = keras.Model(analyzer.model.input, analyzer.model.get_layer("r2").output)(X).numpy()
    act_max = acts.max(axis=(1, 2))
    a_scores, a_samples = atlas.table("c2", "activation")
    np.testing.assert_array_equal(a_samples, _top(act_max, 4))
    np.testing.assert_allclose(a_scores, np.take_along_axis(act_max.T, a_samples, 1), rtol=1e-5)
    predicted = analyzer.predict(X).argmax(axis=1)
    for c in (0, 3):
        for mode, maps in (("relevance", layer_r), ("activation", acts)):
            for ref in atlas.references("c2", c, mode):
                position = np.unravel_index(maps[ref.sample, ..., c].argmax(), (8, 8))
                assert ref.position == tuple(int(p) for p in position)
                assert ref.target == predicted[ref.sample]
                # a 4x4 window (half of 8) centred on the position, inside the input
                (y0, y1), (x0, x1) = ref.box
                assert y1 - y0 == 4 and x1 - x0 == 4 and y0 >= 0 and y1 <= 8 and x0 >= 0
                assert y0 <= position[0] < y1 and x0 <= position[1] < x1
                np.testing.assert_array_equal(ref.crop, X[ref.sample, y0:y1, x0:x1])


def test_atlas_heatmap_crops_hold_the_conditional_relevance(analyzer, tmp_path):
    atlas = concepts.build_atlas(analyzer, (X, LABELS), ["c2"], tmp_path, top_n=3,
                                 batch_size=8, target="label", mass=0.5, window=0.5,
                                 conditions_per_call=4)
    checked = 0
    for c in range(5):
        refs = atlas.references("c2", c)
        assert len(refs) == 3
        for ref in refs:
            assert ref.target == LABELS[ref.sample]
            heat = analyzer(X[ref.sample:ref.sample + 1], ref.target, conditions={"c2": [c]})[0]
            box = heatmap_box(heat, 2, 0.5, 0.5)
            (y0, y1), (x0, x1) = ref.box
            np.testing.assert_array_equal(ref.crop, X[ref.sample, y0:y1, x0:x1])
            if box is None:  # no positive relevance: the window at the position instead
                assert ref.box == position_box(ref.position, (8, 8), (8, 8, 3), 0.5, 2)
                continue
            assert ref.box == box
            positive = np.maximum(heat.sum(-1), 0)
            assert positive[y0:y1, x0:x1].sum() >= 0.5 * positive.sum() * (1 - 1e-6)
            checked += 1
    assert checked >= 5


def test_geometry_of_crop_boxes():
    # position 3 of a 4-grid on 16 pixels: centre 14, a window of 8 clamped to the border
    assert position_box((3, 0), (4, 4), (16, 16, 3), 0.5, 2) == ((8, 16), (0, 8))
    assert position_box((), (), (16, 16, 3), 0.5, 2) == ((0, 16), (0, 16))  # Dense: all
    heat = np.zeros((10, 10))
    heat[2, 3], heat[6, 7], heat[9, 9] = 5.0, 4.0, 1.0  # 90 % in the first two
    assert heatmap_box(heat, 2, 0.5, 0.5) == ((2, 3), (3, 4))  # one pixel holds 50 %
    assert heatmap_box(heat, 2, 0.8, 0.5) == ((2, 7), (3, 8))
    assert heatmap_box(heat, 2, 0.5, 1.0) == ((1, 3), (2, 4))  # grown to round(10 / 4) px
    assert heatmap_box(-heat, 2, 0.5, 0.5) is None


def _batches(x, size, fail_after=None):
    for b, lo in enumerate(range(0, len(x), size)):
        if b == fail_after:
            raise RuntimeError("interrupted")
        yield x[lo:lo + size]


def test_atlas_resumes_where_it_stopped_and_gives_the_same_atlas(analyzer, tmp_path):
    whole = concepts.build_atlas(analyzer, _batches(X, 6), ["c2", "c1"], tmp_path / "a",
                                 top_n=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        concepts.build_atlas(analyzer, _batches(X, 6, fail_after=2), ["c2", "c1"],
                             tmp_path / "b", top_n=3)
    partial = concepts.Atlas(tmp_path / "b")
    assert partial.samples == 12 and not partial.finished
    files = {p.relative_to(tmp_path / "b").as_posix()
             for p in (tmp_path / "b" / "crops").rglob("*.npy")}
    named = {r.file for layer in ("c1", "c2") for mode in concepts.MODES
             for c in range(partial.channels(layer))
             for r in partial.references(layer, c, mode, load=False)}
    assert files == named  # exactly the crops the checkpoint names
    resumed = concepts.build_atlas(analyzer, _batches(X, 6), ["c2", "c1"], tmp_path / "b",
                                   top_n=3)
    assert resumed.run == {"computed": 2, "skipped": 2}
    assert whole.run == {"computed": 4, "skipped": 0}
    index = [json.loads((tmp_path / d / "index.json").read_text()) for d in "ab"]
    assert index[0]["layers"] == index[1]["layers"] and index[1]["finished"]
    for ref_a in whole.references("c1", 2) + whole.references("c2", 4, "activation"):
        np.testing.assert_array_equal(ref_a.crop, np.load(tmp_path / "b" / ref_a.file))
    again = concepts.build_atlas(analyzer, _batches(X, 6), ["c2", "c1"], tmp_path / "b",
                                 top_n=3)
    assert again.run == {"computed": 0, "skipped": 4}


def test_atlas_refuses_other_data_or_options_on_resume(analyzer, tmp_path):
    with pytest.raises(RuntimeError):
        concepts.build_atlas(analyzer, _batches(X, 6, fail_after=1), "c2", tmp_path, top_n=3)
    with pytest.raises(InputError, match="batch 0 of the data differs"):
        concepts.build_atlas(analyzer, _batches(X[::-1].copy(), 6), "c2", tmp_path, top_n=3)
    with pytest.raises(InputError, match=r"top_n: 3 -> 2.*resume=False"):
        concepts.build_atlas(analyzer, _batches(X, 6), "c2", tmp_path, top_n=2)
    fresh = concepts.build_atlas(analyzer, _batches(X, 6), "c2", tmp_path, top_n=2,
                                 resume=False)
    assert fresh.run == {"computed": 4, "skipped": 0} and fresh.config["top_n"] == 2
    with pytest.raises(InputError, match="needs labels"):
        concepts.build_atlas(analyzer, X, "c2", tmp_path / "l", target="label")
    with pytest.raises(InputError, match="no layer named 'nope'"):
        concepts.build_atlas(analyzer, X, "nope", tmp_path / "n")


# ---------------------------------------------------------------------------- attribution graph
def test_attribution_graph_sums_to_the_channel_relevance_at_a_cut():
    """Bias-free ReLU convolutions under z+ conserve: c1 (a cut below c2) receives exactly the
    relevance of each conditioned c2 channel, split over its 4 channels."""
    an = tf_lrp.Analyzer(_conv_model(bias=False), "epsilon_plus")
    x = X[:4]
    g = concepts.attribution_graph(an, x, 1, "c2", [0, 2, 4], "c1", top_k=2)
    assert g.relevance.shape == (4, 3, 4) and g.channels.shape == (4, 3, 2)
    concept_r = an.concept_relevance(x, 1, "c2")
    np.testing.assert_allclose(g.total, concept_r[:, [0, 2, 4]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.relevance.sum(-1), g.total, rtol=1e-4,
                               atol=1e-6 * np.abs(g.total).max())
    assert np.abs(g.rest).max() <= 1e-4 * np.abs(g.total).max()
    # over every channel of c2, the contributions are c1's unconditioned concept relevance
    every = concepts.attribution_graph(an, x, 1, "c2", list(range(5)), "c1")
    np.testing.assert_allclose(every.relevance.sum(1), an.concept_relevance(x, 1, "c1"),
                               rtol=1e-4, atol=1e-6)
    # the top 2 are the two largest, largest first
    np.testing.assert_array_equal(g.channels, np.argsort(-g.relevance, -1)[..., :2])
    one = concepts.attribution_graph(an, x, 1, "c2", 2, "c1", top_k=2)
    assert one.channel == 2 and one.channels.shape == (4, 2)
    np.testing.assert_allclose(one.relevance, g.relevance[:, 1], rtol=1e-5, atol=1e-7)


def test_attribution_graph_equals_the_lrp0_decomposition_by_hand():
    """Dense d1 -> d2 -> out, ReLU, no biases, LRP-0: R_d2 = a2 * w3[:, t] and, conditioned on
    channel c of d2, R_d1[j] = a1[j] * w2[j, c] * R_d2[c] / z2[c]."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((6,))
    a1 = kl.Dense(5, activation="relu", use_bias=False, name="d1")(inp)
    a2 = kl.Dense(4, activation="relu", use_bias=False, name="d2")(a1)
    model = keras.Model(inp, kl.Dense(3, use_bias=False, name="out")(a2))
    x = np.random.default_rng(2).normal(size=(5, 6)).astype("float32")
    w1, w2, w3 = (model.get_layer(n).get_weights()[0].astype(np.float64) for n in ("d1", "d2", "out"))
    h1 = np.maximum(x @ w1, 0)
    z2 = h1 @ w2
    h2 = np.maximum(z2, 0)
    r2 = h2 * w3[:, 2]
    c = int(np.argmax(r2.sum(0)))
    expected = h1 * w2[:, c] * np.divide(r2[:, c], z2[:, c], out=np.zeros(5), where=z2[:, c] != 0)[:, None]
    g = concepts.attribution_graph(tf_lrp.Analyzer(model, rules.Zero()), x, 2, "d2", c, "d1",
                                   top_k=3)
    np.testing.assert_allclose(g.total, r2[:, c], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.relevance, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(g.values, -np.sort(-expected, axis=1)[:, :3], rtol=1e-4, atol=1e-6)


def test_attribution_graph_errors_name_the_problem(analyzer):
    with pytest.raises(InputError, match="not below"):
        concepts.attribution_graph(analyzer, X[:2], 0, "c1", 0, "c2")
    with pytest.raises(InputError, match="itself"):
        concepts.attribution_graph(analyzer, X[:2], 0, "c2", 0, "c2")
    with pytest.raises(InputError, match=r"0\.\.4"):
        concepts.attribution_graph(analyzer, X[:2], 0, "c2", 7, "c1")
    with pytest.raises(InputError, match="top_k"):
        concepts.attribution_graph(analyzer, X[:2], 0, "c2", 1, "c1", top_k=0)


# ---------------------------------------------------------------------------- figures
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_concept_figure_is_a_png_of_the_documented_size(analyzer, tmp_path):
    atlas = concepts.build_atlas(analyzer, X, "c2", tmp_path / "atlas", top_n=3,
                                 crop="position")
    paths, ex = concepts.concept_figures(analyzer, X[:2], "c2", tmp_path / "fig", top=5,
                                         atlas=atlas, refs=3, tile=1.0, dpi=40,
                                         names=["a", "sub/b"], input_range=(0, 1))
    assert paths == [tmp_path / "fig" / "a.png", tmp_path / "fig" / "sub" / "b.png"]
    for path in paths:
        assert _png_size(path) == ((2 + 3) * 40, (5 + 1) * 40)
    from PIL import Image

    with Image.open(paths[0]) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 10  # drawn, not blank
    # all 5 channels of c2 (a cut): conditional heatmaps sum to the heatmap, shares to 1
    np.testing.assert_allclose(ex.conditional.sum(1), ex.heatmap, rtol=1e-4,
                               atol=1e-5 * np.abs(ex.heatmap).max())
    np.testing.assert_allclose(ex.share.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(ex.channels, np.argsort(-analyzer.concept_relevance(
        X[:2], None, "c2"), 1))
    no_atlas, _ = concepts.concept_figures(analyzer, X[:1], "c2", tmp_path / "plain", top=1,
                                           tile=1.0, dpi=40)
    assert _png_size(no_atlas[0]) == (2 * 40, 2 * 40)


def test_concept_figures_refuse_inputs_that_are_not_images(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 5))  # five channels: not an image to draw
    model = keras.Model(inp, kl.Dense(2)(kl.Flatten()(kl.Conv2D(3, 3, name="c")(inp))))
    an = tf_lrp.Analyzer(model)
    with pytest.raises(InputError, match=r"image inputs.*\(6, 6, 5\)"):
        concepts.concept_figures(an, np.ones((1, 6, 6, 5), "float32"), "c", tmp_path)
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- CLI
def _command():
    from tf_lrp.cli import concepts as command

    parser = argparse.ArgumentParser(prog="tf-lrp")
    command.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_concepts_writes_figures_csv_and_an_atlas(tmp_path, capsys):
    model_path = tmp_path / "tiny.keras"
    _conv_model().save(model_path)
    np.save(tmp_path / "x.npy", X[:3])
    np.save(tmp_path / "refs.npy", X[3:])
    argv = ["concepts", str(model_path), str(tmp_path / "x.npy"), "--layer", "c2", "--top", "2",
            "--out", str(tmp_path / "out"), "--atlas", str(tmp_path / "atlas"),
            "--reference", str(tmp_path / "refs.npy"), "--reference-top", "3", "--refs", "2",
            "-q"]
    args = _command().parse_args(argv)
    assert args.handler(args) == 0
    for i in range(3):
        width, height = _png_size(tmp_path / "out" / f"x_{i}.png")
        assert (width, height) == (4 * 150, 3 * 150)  # 2 + 2 refs columns, 1 + 2 rows
    with open(tmp_path / "out" / "concepts.csv") as f:
        rows = list(csv.DictReader(f))
    an = tf_lrp.Analyzer(tf_lrp.load_model(model_path))
    relevance = an.concept_relevance(X[:3], None, "c2")
    assert [r["input"] for r in rows] == ["x_0", "x_0", "x_1", "x_1", "x_2", "x_2"]
    for i in range(3):
        top = np.argsort(-relevance[i])[:2]
        got = [r for r in rows if r["input"] == f"x_{i}"]
        assert [int(r["channel"]) for r in got] == top.tolist()
        np.testing.assert_allclose([float(r["relevance"]) for r in got], relevance[i, top],
                                   rtol=1e-4)
        np.testing.assert_allclose([float(r["share"]) for r in got],
                                   relevance[i, top] / relevance[i].sum(), rtol=1e-4)
    atlas = concepts.Atlas(tmp_path / "atlas")
    assert atlas.samples == 20 and atlas.finished and atlas.layers == ["c2"]
    np.testing.assert_array_equal(atlas.table("c2")[1], _top(an.concept_relevance(X[3:], None,
                                                                                  "c2"), 3))
    bad = _command().parse_args(["concepts", str(model_path), str(tmp_path / "x.npy"),
                                 "--layer", "nope", "--out", str(tmp_path / "o2"), "-q"])
    assert bad.handler(bad) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    missing = _command().parse_args(["concepts", str(model_path), str(tmp_path / "none.npy"),
                                     "--layer", "c2", "--out", str(tmp_path / "o3"), "-q"])
    assert missing.handler(missing) == 1  # skipped, reported
    assert "none" in capsys.readouterr().err


# ---------------------------------------------------------------------------- benchmark
def test_crp_benchmark_section_runs_on_a_tiny_model():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.crp_benchmark(_conv_model(), X[:2], "c2", k=3, repeats=2, warmup=0)
    assert result["max_abs_diff"] < 1e-5
    assert all(len(v) == 2 and min(v) > 0 for v in result["times_s"].values())
    assert result["ratio"] > 0 and "3 explanations" in bench.crp_table(result, 3)
    assert result["ratio_forward_shared"] < 1  # the forward pass is part of an explanation


def test_contribution_shares_divide_by_the_channel_total_and_are_nan_without_one():
    """``share = values / total``; a channel with no relevance (total 0) has no shares (NaN,
    not inf), a total of exactly 1 leaves the values as they are."""
    from tf_lrp.concepts.attribution import Contributions

    c = Contributions("c2", "c1", 0, total=np.array([0.0, 1.0, -2.0]),
                      relevance=np.zeros((3, 4)), channels=np.zeros((3, 2), np.int64),
                      values=np.array([[0.5, 0.25], [0.5, 0.25], [-1.0, 0.5]]))
    share = c.share
    assert np.isnan(share[0]).all()
    np.testing.assert_allclose(share[1:], [[0.5, 0.25], [0.5, -0.25]], rtol=1e-12)


def test_atlas_reads_labelled_batches_and_names_folded_layers(tmp_path):
    """A dataset of ``(x, labels)`` batches gives the atlas arrays give; a layer whose
    BatchNormalization was folded into it is found by either layer's name."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((8, 8, 3))
    a = kl.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = kl.ReLU()(kl.BatchNormalization(name="bn")(kl.Conv2D(5, 3, padding="same",
                                                              name="c2")(a)))
    model = keras.Model(inp, kl.Dense(3, name="out")(kl.Flatten()(kl.MaxPooling2D()(b))))
    an = tf_lrp.Analyzer(model, "epsilon_plus")
    options = dict(top_n=2, batch_size=4, target="label")
    x, y = X[:10], LABELS[:10]
    arrays = concepts.build_atlas(an, (x, y), ["c2"], tmp_path / "a", **options)
    batches = concepts.build_atlas(an, ((x[i:i + 4], y[i:i + 4]) for i in range(0, 10, 4)),
                                   ["c2"], tmp_path / "b", **options)
    assert arrays.layers == batches.layers == ["c2+bn"]
    index = json.loads((tmp_path / "a" / "index.json").read_text())["layers"]["c2+bn"]
    assert (index["layer"], index["channels"], index["grid"]) == ("c2", 5, [8, 8])
    assert arrays.layer_name("c2") == arrays.layer_name("bn") == "c2+bn"
    for c in range(5):
        want = [(r.sample, r.target) for r in arrays.references("c2", c, load=False)]
        assert [(r.sample, r.target) for r in batches.references("bn", c, load=False)] == want
        assert all(t == y[s] for s, t in want)


def test_every_public_name_of_the_packages_resolves():
    """``__all__`` of the packages with names loaded on first use: each name imports (a
    lazy-import table that points a name at the wrong submodule fails here, not in a user's
    session)."""
    import tf_lrp.evaluate
    import tf_lrp.visualize

    for package in (tf_lrp, concepts, tf_lrp.evaluate, tf_lrp.visualize):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"


def test_figure_images_drop_alpha_and_keep_grey():
    from tf_lrp.concepts.figures import _image

    rgba = np.random.default_rng(2).uniform(0, 255, (4, 5, 4))
    np.testing.assert_allclose(_image(rgba, (0, 255)), rgba[..., :3] / 255)
    grey = _image(np.arange(6.0).reshape(2, 3, 1), None)
    np.testing.assert_allclose(grey, np.arange(6.0).reshape(2, 3) / 5)


def test_boolean_channel_masks_condition_like_channel_lists():
    """A condition given as a boolean mask ``(n, k, channels)`` is the condition the channel
    lists give; a mask of another shape is refused with the expected shape."""
    an = tf_lrp.Analyzer(_conv_model(), "epsilon_plus")
    x = X[:2]
    lists = an.conditional(x, 1, {"c2": np.array([[0, 3], [4, 1]])})
    mask = np.zeros((2, 2, 5), bool)
    mask[0, 0, 0] = mask[0, 1, 3] = mask[1, 0, 4] = mask[1, 1, 1] = True
    np.testing.assert_allclose(an.conditional(x, 1, {"c2": mask}), lists, rtol=1e-6,
                               atol=1e-7 * np.abs(lists).max())
    with pytest.raises(InputError, match=r"expected \(2, k, 5\)"):
        an.conditional(x, 1, {"c2": np.zeros((2, 2, 4), bool)})


def test_dimmed_view_keeps_the_input_where_relevance_is_positive():
    """12 % of the input where the relevance is not positive, 100 % at its maximum, the
    square root of the relative relevance between; a grey input becomes three equal
    channels; relevance without a positive value dims everything."""
    from tf_lrp.concepts.figures import dimmed

    image = np.array([[0.5, 1.0], [0.25, 0.8]])
    relevance = np.array([[4.0, 1.0], [-3.0, 0.0]])
    want = image * (0.12 + 0.88 * np.array([[1.0, 0.5], [0.0, 0.0]]))
    got = dimmed(image, relevance)
    assert got.shape == (2, 2, 3)
    np.testing.assert_allclose(got, np.repeat(want[..., None], 3, axis=-1), rtol=1e-12)
    rgb = np.random.default_rng(1).uniform(0, 1, (2, 2, 3))
    per_channel = np.stack([relevance / 2, relevance / 2], axis=-1)  # summed over channels
    np.testing.assert_allclose(dimmed(rgb, per_channel), rgb * (0.12 + 0.88 * np.array(
        [[1.0, 0.5], [0.0, 0.0]]))[..., None], rtol=1e-12)
    np.testing.assert_allclose(dimmed(image, -np.abs(relevance))[..., 0], 0.12 * image)
    np.testing.assert_allclose(dimmed(image, relevance / 10), got, rtol=1e-12)  # relative


def _panel_centre(row: int, col: int, rows: int, cols: int, size: tuple[int, int]):
    """Pixel at the centre of subplot (row, col) for concept_figures' layout
    (``subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.08,
    hspace=0.3)``)."""
    w = 0.98 / (cols + 0.08 * (cols - 1))
    h = 0.94 / (rows + 0.3 * (rows - 1))
    x = 0.01 + col * w * 1.08 + w / 2
    y = 0.95 - row * h * 1.3 - h / 2
    return int(round((1 - y) * size[1])), int(round(x * size[0]))


def test_grey_inputs_and_crops_are_drawn_grey_on_their_range(tmp_path):
    """A single-channel model: the input panel and each reference crop are drawn in grey on
    the input range (a constant image of value v is the grey v * 255)."""
    from PIL import Image

    keras.utils.set_random_seed(6)
    inp = keras.Input((8, 8, 1))
    h = kl.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inp)
    h = kl.ReLU()(kl.Conv2D(4, 3, padding="same", name="c2")(h))
    an = tf_lrp.Analyzer(keras.Model(inp, kl.Dense(2)(kl.Flatten()(h))), "epsilon_plus")
    levels = np.linspace(0.2, 0.8, 6)
    x = (np.ones((6, 8, 8, 1)) * levels[:, None, None, None]).astype("float32")
    atlas = concepts.build_atlas(an, x, "c2", tmp_path / "atlas", top_n=2, crop="position")
    paths, ex = concepts.concept_figures(an, x[:1], "c2", tmp_path / "fig", top=1,
                                         atlas=atlas, refs=2, tile=1.0, dpi=100,
                                         input_range=(0, 1))
    with Image.open(paths[0]) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    size = (pixels.shape[1], pixels.shape[0])
    assert size == (400, 200)
    refs = atlas.references("c2", int(ex.channels[0, 0]), load=False)
    panels = [((0, 0), levels[0])] + [((1, 2 + k), levels[ref.sample])
                                      for k, ref in enumerate(refs[:2])]
    for (row, col), level in panels:
        y, xx = _panel_centre(row, col, 2, 4, size)
        np.testing.assert_allclose(pixels[y, xx], [level * 255] * 3, atol=3)
