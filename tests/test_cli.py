"""Tests of the ``tf-lrp`` command line (tf_lrp.cli), run in-process through ``cli.main``.

One subprocess run (``python -m tf_lrp``) proves the entry point; everything else calls
``main([...])`` and reads the files it writes. The shipped models carry their preprocessing (a
Rescaling layer first): the digits MLP takes 28x28x1 pixel values 0..255.
"""

from __future__ import annotations

import csv
import importlib.metadata
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_lrp import Analyzer, cli, composites, load_model, rules, visualize
from tf_lrp.cli import files as cli_files
from tf_lrp.datasets import SHAPES_CLASSES, load_digits

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "saved_models" / "digits_mlp.h5"
LENET = ROOT / "saved_models" / "digits_lenet.h5"
SHAPES = ROOT / "saved_models" / "shapes_resnet.keras"
DIGITS = ROOT / "examples" / "digits"
PNGS = sorted(DIGITS.glob("*.png"))
SHAPE_PNGS = sorted((ROOT / "examples" / "shapes").glob("*.png"))
SAMPLE_SHAPE = (28, 28, 1)
# 28x28 images, auto zoom 128 // 28 = 4, heatmap and overlay side by side, 2 px padding
PNG_SIZE = (2 * 28 * 4 + 3 * 2, 28 * 4 + 2 * 2)  # PIL (width, height)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        assert tuple(reader.fieldnames) == cli.SUMMARY_COLUMNS
        return list(reader)


def assert_rows_match(rows, expected) -> None:
    """Same inputs and classes; numbers equal up to float32 batch-composition noise."""
    assert [r["input"] for r in rows] == [r["input"] for r in expected]
    for row, ref in zip(rows, expected):
        assert row["predicted_class"] == ref["predicted_class"]
        assert row["explained_class"] == ref["explained_class"]
        for column in ("logit", "relevance_sum"):
            assert float(row[column]) == pytest.approx(float(ref[column]), rel=1e-5, abs=1e-6)


def assert_relevance_close(actual, expected) -> None:
    """Equal up to float32 noise: the same explanation computed in other batches (oneDNN picks
    other kernels for other batch sizes; observed differences are below 1e-6 of the maximum)."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def outputs(out: Path) -> dict[str, int]:
    """mtime (ns) of every .png/.npy in ``out``, by file name."""
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix in (".png", ".npy")}


def png_as_input(path: Path) -> np.ndarray:
    """A digit PNG as the shipped digit models take it: pixel values 0..255."""
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32)[..., None]


@keras.saving.register_keras_serializable(package="tf_lrp_test_cli")
class Squash(keras.layers.Layer):
    """A custom elementwise layer tf_lrp has no rule for (raw TensorFlow: not flattened)."""

    def call(self, x):
        return tf.tanh(x) * 2.0


@pytest.fixture(scope="module")
def mlp():
    return load_model(MLP)


@pytest.fixture(scope="module")
def analyzer(mlp):
    with pytest.warns(UserWarning, match="softmax"):
        return Analyzer(mlp, "epsilon_plus")


@pytest.fixture(scope="module")
def batch():
    """Three test digits as pixel values 0..255 (the data set is in [-1, 1])."""
    return (load_digits(split="test")[0][:3] + 1.0) * 127.5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, batch):
    folder = tmp_path_factory.mktemp("inputs")
    np.save(folder / "batch.npy", batch)
    np.save(folder / "single.npy", batch[0])
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, inputs):
    """One explain run: the example PNGs (a directory), a batch .npy and a single-sample .npy."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = cli.main(["explain", str(MLP), str(DIGITS), str(inputs / "batch.npy"),
                     str(inputs / "single.npy"), "--out", str(out), "--batch-size", "4", "-q"])
    return code, out


EXPECTED_NAMES = [p.stem for p in PNGS] + ["batch_0", "batch_1", "batch_2", "single"]


def test_explain_writes_one_png_and_npy_per_sample(digits_run):
    code, out = digits_run
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    expected = sorted([f"{n}.png" for n in EXPECTED_NAMES] + [f"{n}.npy" for n in EXPECTED_NAMES]
                      + ["summary.csv"])
    assert files == expected  # and no temporary files left behind
    for name in EXPECTED_NAMES:
        with Image.open(out / f"{name}.png") as image:
            assert image.size == PNG_SIZE and image.mode == "RGB"
        relevance = np.load(out / f"{name}.npy")
        assert relevance.shape == SAMPLE_SHAPE and relevance.dtype == np.float32


def test_relevance_equals_the_analyzer(digits_run, analyzer, batch):
    _, out = digits_run
    saved = np.stack([np.load(out / f"batch_{i}.npy") for i in range(3)])
    assert_relevance_close(saved, analyzer(batch))
    # the same sample as batch_0, explained in another step of the run (other batch neighbours)
    assert_relevance_close(np.load(out / "single.npy"), saved[0])
    # images: grayscale, 28x28 already, pixels 0..255 fed as they are (the model rescales)
    x = np.stack([png_as_input(p) for p in PNGS])
    saved = np.stack([np.load(out / f"{p.stem}.npy") for p in PNGS])
    assert_relevance_close(saved, analyzer(x))


def test_png_shows_heatmap_and_overlay(digits_run, inputs, batch):
    _, out = digits_run
    relevance = np.load(out / "batch_1.npy")
    heat = visualize.heatmap(relevance[None])[0].repeat(4, axis=0).repeat(4, axis=1)
    picture = np.asarray(Image.open(out / "batch_1.png"))
    np.testing.assert_array_equal(picture[2:114, 2:114], heat)
    assert not np.array_equal(picture[2:114, 116:228], heat)  # the overlay differs
    assert (picture[:2] == 255).all() and (picture[:, 114:116] == 255).all()  # white padding


def test_summary_rows(digits_run, analyzer, batch):
    _, out = digits_run
    rows = read_summary(out)
    assert [r["input"] for r in rows] == EXPECTED_NAMES
    for row in rows:
        total = np.load(out / f"{row['input']}.npy").sum(dtype=np.float64)
        assert float(row["relevance_sum"]) == pytest.approx(total, rel=1e-12, abs=1e-12)
        assert row["explained_class"] == row["predicted_class"]
    for row, png in zip(rows, PNGS):  # the example digits are classified correctly
        assert row["predicted_class"] == png.stem.split("label")[1]
    logits = analyzer.predict(batch)
    by_name = {r["input"]: r for r in rows}
    for i in range(3):
        row = by_name[f"batch_{i}"]
        assert int(row["predicted_class"]) == int(np.argmax(logits[i]))
        assert float(row["logit"]) == pytest.approx(float(logits[i].max()), rel=1e-5)


def test_resume_skips_finished_samples(digits_run, tmp_path, capsys, inputs):
    _, done = digits_run
    out = tmp_path / "out"
    shutil.copytree(done, out)
    before, rows_before = outputs(out), read_summary(out)
    half_done = PNGS[2].stem
    (out / f"{half_done}.png").unlink()  # its .npy alone does not count as done
    code, stdout, _ = run(capsys, "explain", MLP, DIGITS, inputs / "batch.npy",
                          inputs / "single.npy", "--out", out, "--resume")
    assert code == 0 and "tf-lrp: 1 explained, 9 already done, 0 skipped" in stdout
    after = outputs(out)
    assert {n for n in before if before[n] != after.get(n)} == {f"{half_done}.png",
                                                                f"{half_done}.npy"}
    assert_rows_match(read_summary(out), rows_before)
    rows_before = read_summary(out)
    # a second resume run over part of the inputs touches nothing and keeps every row
    before = after
    code, stdout, err = run(capsys, "explain", MLP, DIGITS, "--out", out, "--resume")
    assert code == 0 and "tf-lrp: 0 explained, 6 already done" in stdout and "skipped:" not in err
    assert outputs(out) == before
    assert read_summary(out) == rows_before


def test_resume_rebuilds_lost_summary_rows(digits_run, tmp_path, capsys, inputs):
    _, done = digits_run
    out = tmp_path / "out"
    shutil.copytree(done, out)
    rows, before = read_summary(out), outputs(out)
    (out / "summary.csv").unlink()  # e.g. a run killed before it wrote the CSV
    code, stdout, _ = run(capsys, "explain", MLP, DIGITS, inputs / "batch.npy",
                          inputs / "single.npy", "--out", out, "--resume", "--batch-size", "5")
    assert code == 0 and "0 explained" in stdout
    assert outputs(out) == before
    rebuilt = read_summary(out)
    assert_rows_match(rebuilt, rows)
    # the relevance sums come from the existing .npy files: exactly the same text
    assert [r["relevance_sum"] for r in rebuilt] == [r["relevance_sum"] for r in rows]


def test_rerun_recomputes_without_resume_and_skips_with_it(tmp_path, capsys, mlp, inputs):
    """Existing outputs are skipped only with --resume; without it a run redoes every sample."""
    out = tmp_path / "out"
    sources = [inputs / "single.npy", PNGS[0]]
    names = ["single", PNGS[0].stem]
    x = np.stack([np.load(inputs / "single.npy"), png_as_input(PNGS[0])])
    code, _, _ = run(capsys, "explain", MLP, *sources, "--out", out, "--target", "3", "-q")
    assert code == 0
    first = {n: np.load(out / f"{n}.npy") for n in names}

    # the same directory again, another target and composite, no --resume: all recomputed
    code, stdout, _ = run(capsys, "explain", MLP, *sources, "--out", out, "--target", "5",
                          "--composite", "epsilon_gamma_box")
    assert code == 0 and "tf-lrp: 2 explained, 0 already done" in stdout
    with pytest.warns(UserWarning, match="softmax"):
        expected = Analyzer(mlp, "epsilon_gamma_box", low=0.0, high=255.0)(x, target=5)
    for i, name in enumerate(names):
        second = np.load(out / f"{name}.npy")
        assert_relevance_close(second, expected[i])
        assert np.abs(second - first[name]).max() > 0.1 * np.abs(second).max()  # overwritten
    assert [r["explained_class"] for r in read_summary(out)] == ["5", "5"]
    rows, before = read_summary(out), outputs(out)
    contents = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".npy")}

    # with --resume (and yet another target) the finished samples are left alone
    code, stdout, _ = run(capsys, "explain", MLP, *sources, "--out", out, "--target", "7",
                          "--resume")
    assert code == 0 and "tf-lrp: 0 explained, 2 already done" in stdout
    assert outputs(out) == before
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".npy")} \
        == contents
    assert read_summary(out) == rows  # rows kept as they were: explained class 5


def test_interrupted_run_leaves_complete_files(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_encode_png, calls = cli_files.encode_png, []

    def encode_png_then_interrupt(image):
        calls.append(image)
        if len(calls) == 3:  # the first sample of the second batch
            raise KeyboardInterrupt
        return real_encode_png(image)

    monkeypatch.setattr(cli_files, "encode_png", encode_png_then_interrupt)
    code, _, err = run(capsys, "explain", MLP, DIGITS, "--out", out, "--batch-size", "2")
    assert code == cli.EXIT_INTERRUPTED and "--resume" in err
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files
    assert [r["input"] for r in read_summary(out)] == [p.stem for p in PNGS[:2]]
    monkeypatch.undo()
    code, stdout, _ = run(capsys, "explain", MLP, DIGITS, "--out", out, "--resume")
    assert code == 0 and "tf-lrp: 4 explained, 2 already done" in stdout
    assert [r["input"] for r in read_summary(out)] == [p.stem for p in PNGS]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.npy"

    def write_half(stream):
        stream.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cli._atomic_write(target, write_half)
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_reported_and_skipped(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PNGS[0], folder / "good.png")
    (folder / "corrupt.png").write_bytes(PNGS[1].read_bytes()[:60])
    np.save(folder / "wrong.npy", np.zeros((5, 5), np.float32))
    nan = np.zeros((2, *SAMPLE_SHAPE), np.float32)
    nan[1, 3, 3, 0] = np.nan
    np.save(folder / "nan.npy", nan)
    (folder / "notes.txt").write_text("not an image")  # ignored inside a directory...
    out = tmp_path / "out"
    code, _, err = run(capsys, "explain", MLP, folder, folder / "notes.txt",  # ...not if named
                       "--out", out, "-q")
    assert code == 1
    reported = [line for line in err.splitlines() if "skipped" in line]
    assert len(reported) == 4, err
    assert any("corrupt.png" in line and "cannot be read as an image" in line for line in reported)
    assert any("wrong.npy" in line and "(5, 5)" in line and "(28, 28, 1)" in line
               for line in reported)
    assert any("nan.npy[1]" in line and "NaN" in line for line in reported)
    assert any("notes.txt" in line and "image" in line for line in reported)
    assert "Traceback" not in err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["good.npy", "good.png", "nan_0.npy", "nan_0.png", "skipped.csv",
                       "summary.csv"]
    assert [r["input"] for r in read_summary(out)] == ["good", "nan_0"]
    with open(out / "skipped.csv", newline="", encoding="utf-8") as stream:
        listed = {row["input"]: row["reason"] for row in csv.DictReader(stream)}
    assert set(listed) == {str(folder / "corrupt.png"), str(folder / "wrong.npy"),
                           f"{folder / 'nan.npy'}[1]", str(folder / "notes.txt")}
    assert "cannot be read as an image" in listed[str(folder / "corrupt.png")]
    assert "NaN" in listed[f"{folder / 'nan.npy'}[1]"]


def test_duplicate_output_names_are_skipped(tmp_path, capsys, batch):
    np.save(tmp_path / "test000_label1.npy", batch[0])
    code, _, err = run(capsys, "explain", MLP, PNGS[0], tmp_path / "test000_label1.npy",
                       "--out", tmp_path / "out", "-q")
    assert code == 1 and "is taken by" in err
    assert (tmp_path / "out" / "test000_label1.npy").exists()


def test_target_start_and_scale_options(tmp_path, capsys, mlp, inputs):
    out = tmp_path / "out"
    code, _, _ = run(capsys, "explain", MLP, inputs / "single.npy", PNGS[0], "--out", out,
                     "--target", "3", "--start", "logodds", "--scale", "0_1", "-q")
    assert code == 0
    with pytest.warns(UserWarning, match="softmax"):
        reference = Analyzer(mlp, start="logodds")
    x = np.stack([np.load(inputs / "single.npy"), png_as_input(PNGS[0]) / 255.0])
    expected = reference(x, target=3)
    assert_relevance_close(np.load(out / "single.npy"), expected[0])
    assert_relevance_close(np.load(out / f"{PNGS[0].stem}.npy"), expected[1])
    assert {r["explained_class"] for r in read_summary(out)} == {"3"}


def test_shipped_shapes_model_explained_with_default_flags(tmp_path, capsys):
    """The shapes model starts with Rescaling(1/255): image files are fed as pixels 0..255, and
    the held-out examples are classified as their file names say."""
    model = load_model(SHAPES)
    out = tmp_path / "out"
    code, _, err = run(capsys, "explain", SHAPES, SHAPE_PNGS[0].parent, "--out", out)
    assert code == 0, err
    assert "input range [0, 255] (the model starts with Rescaling)" in err
    assert "warning" not in err
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) for p in SHAPE_PNGS])
    with pytest.warns(UserWarning, match="softmax"):
        expected = Analyzer(model)(x)
    for png, relevance in zip(SHAPE_PNGS, expected):
        assert_relevance_close(np.load(out / f"{png.stem}.npy"), relevance)
    rows = read_summary(out)
    assert [r["input"] for r in rows] == [p.stem for p in SHAPE_PNGS]
    labels = [p.stem.split("_", 1)[1] for p in SHAPE_PNGS]
    assert [SHAPES_CLASSES[int(r["predicted_class"])] for r in rows] == labels

    # z^B bounds default to the input range in the model's input space: [0, 255]
    arrays = ROOT / "examples" / "shapes_32.npy"
    code, _, _ = run(capsys, "explain", SHAPES, arrays, "--out", tmp_path / "box",
                     "--composite", "epsilon_gamma_box", "-q")
    assert code == 0
    with pytest.warns(UserWarning, match="softmax"):
        expected = Analyzer(model, "epsilon_gamma_box", low=0.0, high=255.0)(np.load(arrays))
    for i, relevance in enumerate(expected):
        assert_relevance_close(np.load(tmp_path / "box" / f"shapes_32_{i}.npy"), relevance)
    assert [SHAPES_CLASSES[int(r["predicted_class"])] for r in read_summary(tmp_path / "box")] \
        == labels


def test_model_without_preprocessing_gets_minus1_1_with_a_warning(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Conv2D(2, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(hidden)))
    model.save(tmp_path / "plain.keras")
    code, _, err = run(capsys, "explain", tmp_path / "plain.keras", PNGS[0], "--out",
                       tmp_path / "o", "--composite", "epsilon_gamma_box", "-q")
    assert code == 0
    assert "warning: the model carries no preprocessing" in err and "--scale 0_1" in err
    expected = Analyzer(model, "epsilon_gamma_box", low=-1.0, high=1.0)(
        png_as_input(PNGS[0])[None] / 127.5 - 1.0)
    assert_relevance_close(np.load(tmp_path / "o" / f"{PNGS[0].stem}.npy"), expected[0])
    # a named range: no warning, and the line says where it comes from
    code, _, err = run(capsys, "explain", tmp_path / "plain.keras", PNGS[0], "--out",
                       tmp_path / "o2", "--scale", "minus1_1")
    assert code == 0 and "warning" not in err and "input range [-1, 1] (--scale minus1_1)" in err


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A model with a custom layer and a sigmoid gate: Squash(Dense(x)) * sigmoid(Dense(x))."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    signal = Squash(name="my_squash")(keras.layers.Dense(5, name="d1")(inputs))
    gate = keras.layers.Dense(5, activation="sigmoid", name="gate")(inputs)
    hidden = keras.layers.Multiply(name="mul")([signal, gate])
    model = keras.Model(inputs, keras.layers.Dense(3, name="top")(hidden))
    folder = tmp_path_factory.mktemp("gated")
    model.save(folder / "gated.keras")
    np.save(folder / "x.npy", np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32))
    return folder


def _rule_case(name, request):
    """(model file, input .npy, CLI options, composite with the overrides, composite without)."""
    if name == "dense_epsilon":
        inputs = request.getfixturevalue("inputs")
        return (MLP, inputs / "batch.npy", ["--rule", "Dense=epsilon:epsilon=0.1"],
                composites.Overrides(composites.EpsilonPlus(), [("Dense", rules.Epsilon(0.1))]),
                composites.EpsilonPlus())
    if name == "name_beats_class":
        inputs = request.getfixturevalue("inputs")
        return (MLP, inputs / "batch.npy",
                ["--rule", "output=zero", "--rule", "Dense=epsilon:epsilon=0.1"],
                composites.Overrides(composites.EpsilonPlus(),
                                     [("output", rules.Zero()), ("Dense", rules.Epsilon(0.1))]),
                composites.Overrides(composites.EpsilonPlus(), [("Dense", rules.Epsilon(0.1))]))
    if name == "first_layer_flat":
        box = composites.EpsilonGammaBox(low=0.0, high=255.0)
        return (LENET, ROOT / "examples" / "digits_32.npy",
                ["--composite", "epsilon_gamma_box", "--rule", "conv1=flat"],
                composites.Overrides(box, [("conv1", rules.Flat())]), box)
    folder = request.getfixturevalue("gated")  # custom layer and gate
    squash = composites.Overrides(composites.EpsilonPlus(), [("Squash", rules.Pass())])
    return (folder / "gated.keras", folder / "x.npy",
            ["--rule", "Squash=pass", "--rule", "Multiply=uniform_product"],
            composites.Overrides(composites.EpsilonPlus(), [("Squash", rules.Pass()),
                                                            ("Multiply", rules.UniformProduct())]),
            squash)


@pytest.mark.parametrize("case", ["dense_epsilon", "name_beats_class", "first_layer_flat",
                                  "custom_layer_and_product"])
def test_rule_option_equals_overrides(case, request, tmp_path, capsys):
    """--rule KEY=RULE[:p=v] changes the relevance exactly as composites.Overrides does."""
    model_path, x_path, options, composite, without = _rule_case(case, request)
    out = tmp_path / "out"
    code, _, err = run(capsys, "explain", model_path, x_path, "--out", out, "-q", *options)
    assert code == 0, err
    x = np.load(x_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        model = load_model(model_path)
        expected = Analyzer(model, composite)(x)
        other = Analyzer(model, without)(x)
    saved = np.stack([np.load(out / f"{x_path.stem}_{i}.npy") for i in range(len(x))])
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert np.abs(saved - other).max() > 1e-3 * np.abs(other).max()  # the rule made a difference


def test_any_image_size_and_flat_inputs(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(images)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(hidden))
    keras.Model(images, logits).save(tmp_path / "fcn.keras")
    vectors = keras.Input((12,))
    logits = keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(vectors))
    keras.Model(vectors, logits).save(tmp_path / "flat.keras")
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "b.jpg")
    np.save(tmp_path / "v.npy", rng.normal(size=(2, 12)).astype(np.float32))

    # any input size: each image keeps its own (RGB from grayscale), one batch per size
    code, _, _ = run(capsys, "explain", tmp_path / "fcn.keras", tmp_path / "a.png",
                     tmp_path / "b.jpg", "--out", tmp_path / "o1", "--start", "all", "-q")
    assert code == 0
    assert np.load(tmp_path / "o1" / "a.npy").shape == (20, 30, 3)
    assert np.load(tmp_path / "o1" / "b.npy").shape == (16, 16, 3)
    assert Image.open(tmp_path / "o1" / "a.png").size == (2 * 30 * 4 + 6, 20 * 4 + 4)
    assert Image.open(tmp_path / "o1" / "b.png").size == (2 * 16 * 8 + 6, 16 * 8 + 4)
    assert {r["explained_class"] for r in read_summary(tmp_path / "o1")} == {"all"}

    # flat inputs: drawn as a strip; an image cannot feed such a model and is skipped
    code, _, err = run(capsys, "explain", tmp_path / "flat.keras", tmp_path / "v.npy",
                       tmp_path / "a.png", "--out", tmp_path / "o2", "-q")
    assert code == 1 and "a.png" in err and "pass the input as a .npy array" in err
    assert np.load(tmp_path / "o2" / "v_1.npy").shape == (12,)
    assert Image.open(tmp_path / "o2" / "v_1.png").size == (12 * 10, 2 * 10)
    assert [r["input"] for r in read_summary(tmp_path / "o2")] == ["v_0", "v_1"]


def info_table(out: str) -> dict[str, list[str]]:
    """``tf-lrp info`` rows after the blank line: node -> [layer class, rule]."""
    rows = out.split("\n\n", 1)[1].splitlines()[1:]
    return {line.split()[0]: line.split(None, 2)[1:] for line in rows if line}


def test_info_lists_nodes_and_rules(capsys):
    code, out, err = run(capsys, "info", MLP, "--composite", "epsilon_gamma_box",
                         "--scale", "0_1", "--param", "gamma=0.5", "--param", "epsilon=0.1")
    assert code == 0
    assert "(28, 28, 1)" in out and "10 output values" in out
    assert "input range [0, 1] (--scale 0_1)" in out
    assert "softmax is stripped" in out and err.count("softmax") == 1  # one short note
    table = info_table(out)
    assert table["preprocess"] == ["Rescaling", "Pass()"]
    assert table["flatten"] == ["Flatten", "Route()"]
    assert table["dense1"] == ["Dense", "ZBox(low=0.0, high=1.0)"]  # bounds from --scale
    assert table["dense2"] == ["Dense", "Epsilon(epsilon=0.1, bias=True)"]
    assert table["dense1/activation"] == ["activation", "Pass()"]


def test_info_input_range_comes_from_the_model(tmp_path, capsys):
    """--scale auto (default): a model starting with Rescaling takes pixels 0..255, and the
    z^B bounds are [0, 255] in its input space; a model without preprocessing gets [-1, 1]
    with a warning."""
    code, out, err = run(capsys, "info", SHAPES, "--composite", "epsilon_gamma_box")
    assert code == 0 and "warning" not in err
    assert "input range [0, 255] (the model starts with Rescaling)" in out
    assert info_table(out)["block1_conv+block1_bn"] == ["Conv2D", "ZBox(low=0.0, high=255.0)"]

    inputs = keras.Input((8, 8, 3))
    normalized = keras.layers.Normalization(mean=[120.0, 110.0, 100.0],
                                            variance=[3600.0, 3500.0, 3400.0])(inputs)
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(normalized))
    keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(tmp_path / "normalized.keras")
    code, out, err = run(capsys, "info", tmp_path / "normalized.keras", "--composite",
                         "deep_taylor")
    assert code == 0 and "warning" not in err
    assert "input range [0, 255] (the model starts with Normalization)" in out
    assert info_table(out)["conv"] == ["Conv2D", "ZBox(low=0.0, high=255.0)"]

    hidden = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(2)(hidden)).save(tmp_path / "plain.keras")
    code, out, err = run(capsys, "info", tmp_path / "plain.keras", "--composite", "deep_taylor")
    assert code == 0
    assert "input range [-1, 1] (assumed: the model carries no preprocessing" in out
    assert "warning: the model carries no preprocessing" in err and "--scale" in err
    assert info_table(out)["conv"] == ["Conv2D", "ZBox(low=-1.0, high=1.0)"]


def test_info_flags_unsupported_layers(tmp_path, capsys):
    inputs = keras.Input((6, 6, 1))
    hidden = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    hidden = Squash(name="my_squash")(hidden)
    hidden = keras.layers.Flatten(name="flat")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="top")(hidden))
    model.save(tmp_path / "custom.keras")
    code, out, err = run(capsys, "info", tmp_path / "custom.keras", "--scale", "0_1")
    assert code == 2 and "Traceback" not in err
    table = info_table(out)
    assert list(table) == ["conv", "my_squash", "flat", "top"]  # every layer is listed
    assert table["my_squash"][0] == "Squash"
    assert table["my_squash"][1].startswith("UNSUPPORTED: ")
    assert table["conv"] == ["Conv2D", "ZPlus()"] and table["top"][1].startswith("Epsilon(")
    assert "my_squash" in err and "Squash" in err and "--rule Squash=pass" in err
    assert "epsilon, flat, gamma, held_constant, pass" in err  # the rule names

    code, out, err = run(capsys, "info", tmp_path / "custom.keras", "--scale", "0_1",
                         "--rule", "Squash=pass")
    assert code == 0, err
    assert info_table(out)["my_squash"] == ["Squash", "Pass()"]


def test_composites_lists_names_and_parameters(capsys):
    from tf_lrp import composites

    code, out, _ = run(capsys, "composites")
    assert code == 0
    for name in composites.names():
        assert f"  {name} " in out
    assert "EpsilonGammaBox(low=-1.0, high=1.0, epsilon: float = 0.25" in out
    assert "z_box" in out and "ZBox(low=-1.0, high=1.0)" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["explain", "no/such/model.h5", str(PNGS[0]), "--out", "unused"], "No such model file"),
        (["info", str(MLP), "--composite", "nope"], "unknown composite or rule 'nope'"),
        (["info", str(MLP), "--param", "gamma=0.5"], "bad --param for 'epsilon_plus'"),
        (["explain", str(MLP), str(PNGS[0]), "--out", "unused", "--target", "10"],
         "out of range"),
        (["explain", str(MLP), str(PNGS[0]), "--out", "unused", "--param", "gamma=high"],
         "must be a number"),
        (["explain", str(MLP), str(PNGS[0])], "--out"),
        (["info", str(MLP), "--rule", "Dense=nope"],
         "unknown rule 'nope' in 'Dense=nope'; rules: alpha_beta, "),
        (["explain", str(MLP), str(PNGS[0]), "--out", "unused", "--rule", "Dense=epsilon:gamma=1"],
         "bad parameters for rule 'epsilon'"),
        (["info", str(MLP), "--rule", "Dense=epsilon:epsilon=big"], "must be a number"),
        (["info", str(MLP), "--rule", "Dense"], "expected CLASS_OR_LAYER_NAME=RULE"),
        (["explain", str(MLP), str(PNGS[0]), "--out", "unused", "--rule", "Conv2D=flat"],
         "no layer of the model is named 'Conv2D' and none is of class 'Conv2D'; its layer "
         "classes: Dense, Flatten, Rescaling"),
        (["info", str(SHAPES), "--rule", "block1_bn=flat"], "has no node of its own"),
    ],
)
def test_errors_exit_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "unused").exists()


def test_help_has_examples(capsys):
    code, out, _ = run(capsys, "explain", "--help")
    assert code == 0 and "examples:" in out and "--resume" in out and "minus1_1" in out


def test_entry_point(tmp_path):
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("tf-lrp") == "tf_lrp.cli:main"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "tf_lrp", "explain", str(MLP), str(PNGS[0]),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "1 explained" in result.stdout
    assert "note: the model ends in a softmax" in result.stderr
    assert (tmp_path / "out" / f"{PNGS[0].stem}.png").exists()


def test_token_model_writes_per_token_tables_pages_and_pictures(tmp_path, capsys):
    """A token model: integer .npy in, per-sample .npy/.csv/.html/.png out (the default for
    token models), tokens printed through --vocab, relevance equal to the Python API's."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), dtype="int32")
    e = keras.layers.Embedding(5, 4, mask_zero=True)(inp)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(4)(e)))
    model_path = tmp_path / "tokens.keras"
    model.save(model_path)
    tokens = np.array([[1, 2, 4, 3, 0, 0], [4, 4, 1, 2, 3, 1]], dtype=np.int32)
    np.save(tmp_path / "seq.npy", tokens)
    (tmp_path / "vocab.txt").write_text("<pad>\nalpha\nbeta\n<b>gamma</b>\ndelta\n")
    out = tmp_path / "out"
    code, _, err = run(capsys, "explain", str(model_path), str(tmp_path / "seq.npy"), "--out",
                       str(out), "--composite", "attn_lrp", "--vocab", str(tmp_path / "vocab.txt"))
    assert code == 0, err
    assert "token ids" in err and "input range" not in err
    want = Analyzer(model, "attn_lrp")(tokens)
    for i in range(2):
        got = np.load(out / f"seq_{i}.npy")
        np.testing.assert_allclose(got, want[i], rtol=1e-5, atol=1e-6 * np.abs(want).max())
        rows = list(csv.DictReader((out / f"seq_{i}.csv").open()))
        assert [int(r["token_id"]) for r in rows] == tokens[i].tolist()
        assert rows[0]["token"] == ["alpha", "delta"][i]
        np.testing.assert_allclose([float(r["relevance"]) for r in rows], got, rtol=1e-6)
        html = (out / f"seq_{i}.html").read_text()
        assert "&lt;b&gt;gamma&lt;/b&gt;" in html and "<b>gamma" not in html
        assert (out / f"seq_{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.load(out / "seq_0.npy")[4:], 0.0)  # padding


def test_csv_and_html_formats_need_a_token_model(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((28, 28, 1), np.float32))
    code, _, err = run(capsys, "explain", str(MLP), str(tmp_path / "x.npy"), "--out",
                       str(tmp_path / "o"), "--format", "npy,csv")
    assert code == 2 and "token" in err
