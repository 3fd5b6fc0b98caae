"""Tests of tf_lrp.io.load_model.

The legacy fixtures in tests/fixtures/ were written by tf.keras 2 (``tf_keras``) with
scripts/make_legacy_fixtures.py; each ``.npz`` holds inputs ``x`` and the tf.keras 2 outputs
(``y``, or ``y0``, ``y1``, ...), so these tests do not need ``tf_keras``.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from tf_lrp.errors import ModelLoadError
from tf_lrp.io import load_model

FIXTURES = Path(__file__).parent / "fixtures"
LOADABLE = [
    "legacy_nested.h5",
    "legacy_nested_edge.h5",
    "legacy_depthwise.h5",
    "legacy_layers.h5",
    "legacy_sequential.h5",
]
ATOL = 1e-5


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Stored inputs and tf.keras 2 outputs of a fixture."""
    data = np.load(FIXTURES / name.replace(Path(name).suffix, ".npz"))
    outputs = [data[key] for key in sorted(data.files) if key.startswith("y")]
    return data["x"], outputs


def predict(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    out = model(x, training=False)
    return [
        keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])
    ]


def load_error(path: object, **kwargs) -> str:
    """Message of the ModelLoadError that load_model raises for ``path``."""
    with pytest.raises(ModelLoadError) as info:
        load_model(path, **kwargs)
    assert isinstance(info.value, OSError)
    return str(info.value)


class Scale(keras.layers.Layer):
    """A custom layer that Keras does not know unless passed in custom_objects."""

    def call(self, x):
        return x * 3.0


@pytest.fixture(scope="module")
def small_model() -> keras.Model:
    """A Keras 3 Functional model with a nested Sequential and a nested Functional."""
    keras.utils.set_random_seed(0)
    sub_in = keras.Input((6,))
    sub = keras.Model(sub_in, keras.layers.Dense(4, activation="relu")(sub_in), name="sub")
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6)], name="seq")
    inp = keras.Input((5,))
    out = keras.layers.Dense(3, activation="softmax")(sub(seq(inp)))
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def x_small() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 5)).astype("float32")


# ------------------------------------------------------------------- legacy .h5 files


@pytest.mark.parametrize("name", LOADABLE)
def test_legacy_fixture_reproduces_tf_keras_outputs(name: str) -> None:
    path = FIXTURES / name
    before = sha256(path)
    model = load_model(path)
    x, expected = reference(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "structure of `inputs` doesn't match"
        got = predict(model, x)
    assert isinstance(model, keras.Model)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=0)
    assert sha256(path) == before, "load_model changed the user's file"


def test_single_output_legacy_model_returns_a_tensor() -> None:
    """As in Keras 2: one input and one output are taken and returned bare, not as lists."""
    model = load_model(FIXTURES / "legacy_nested.h5")
    x, _ = reference("legacy_nested.h5")
    assert not isinstance(model(x), (list, tuple))
    assert len(model.inputs) == len(model.outputs) == 1


def test_legacy_nested_keeps_submodels() -> None:
    model = load_model(str(FIXTURES / "legacy_nested.h5"))
    assert isinstance(model.get_layer("inner_sequential"), keras.Sequential)
    assert isinstance(model.get_layer("inner_functional"), keras.Model)
    assert model.get_layer("bn").moving_variance.numpy().min() >= 0.5  # stored stats, not 1.0
    assert not model.compiled


def assert_error_names(path: Path, words: tuple[str, ...]) -> None:
    """load_model refuses ``path`` with a message holding every one of ``words``; the file stays."""
    before = sha256(path)
    message = load_error(path)
    for word in words:
        assert word in message
    assert sha256(path) == before


def test_tfoplambda_names_layers_and_fix() -> None:
    assert_error_names(FIXTURES / "legacy_tfoplambda.h5", (
        "legacy_tfoplambda.h5",
        "TFOpLambda",
        "tf.math.multiply",
        "tf.nn.relu",
        "Keras 3",
        "load_weights",
    ))


def test_tfoplambda_fix_from_message_works() -> None:
    """The advised fix: rebuild with Keras 3 ops, then load_weights from the .h5 file."""
    inp = keras.Input((6,))
    x = keras.ops.relu(keras.layers.Dense(5, name="dense")(inp) * 2.0)
    model = keras.Model(inp, keras.layers.Dense(3, name="logits")(x))
    model.load_weights(FIXTURES / "legacy_tfoplambda.h5")
    x_ref, (expected,) = reference("legacy_tfoplambda.h5")
    np.testing.assert_allclose(predict(model, x_ref)[0], expected, atol=ATOL, rtol=0)


def test_keras2_zip_archive_says_resave_as_h5() -> None:
    assert_error_names(FIXTURES / "legacy_keras2.keras", (
        "legacy_keras2.keras",
        "Keras 2",
        "Could not locate class 'Functional'",
        "model.save('model.h5')",
    ))


# ------------------------------------------------------------------ Keras 3 files


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_round_trip(small_model, x_small, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    small_model.save(path)
    model = load_model(path)
    assert model is not small_model
    np.testing.assert_allclose(
        predict(model, x_small)[0], predict(small_model, x_small)[0], atol=1e-6, rtol=0
    )
    assert isinstance(model.get_layer("seq"), keras.Sequential)


def test_model_instance_is_returned_unchanged(small_model) -> None:
    assert load_model(small_model) is small_model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_class_names_class_and_custom_objects(tmp_path: Path, suffix: str) -> None:
    inp = keras.Input((3,))
    model = keras.Model(inp, Scale()(keras.layers.Dense(2)(inp)))
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    message = load_error(path)
    assert str(path) in message
    assert "'Scale'" in message
    assert "custom_objects={'Scale': Scale}" in message
    loaded = load_model(path, custom_objects={"Scale": Scale})
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(predict(loaded, x)[0], predict(model, x)[0], atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_needs_safe_mode_false(tmp_path: Path, suffix: str) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2.0)])
    path = tmp_path / f"lambda{suffix}"
    model.save(path)
    message = load_error(path)
    assert "Lambda" in message and "safe_mode=False" in message and str(path) in message
    loaded = load_model(path, safe_mode=False)
    np.testing.assert_allclose(predict(loaded, np.ones((1, 3), "float32"))[0], 2.0)


# ------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    message = load_error(path)
    assert str(path) in message and "No such model file" in message


def test_directory(tmp_path: Path) -> None:
    message = load_error(tmp_path)
    assert str(tmp_path) in message and "directory" in message and ".keras or .h5" in message


def test_saved_model_directory(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"")
    message = load_error(tmp_path)
    assert "SavedModel" in message and "model.save('model.keras')" in message


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "model.txt"
    path.write_text("hello")
    message = load_error(path)
    assert str(path) in message and "'.txt'" in message and ".keras" in message


def test_unknown_extension_of_hdf5_file_suggests_rename(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes((FIXTURES / "legacy_sequential.h5").read_bytes())
    assert "rename it to end in .h5" in load_error(path)


def test_wrong_argument_type() -> None:
    message = load_error(123)
    assert "int" in message and "keras.Model" in message


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_random_bytes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    message = load_error(path)
    assert str(path) in message and "corrupt" in message and "save" in message


def test_truncated_h5(tmp_path: Path) -> None:
    data = (FIXTURES / "legacy_sequential.h5").read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: len(data) // 2])
    message = load_error(path)
    assert str(path) in message and "truncated" in message


def test_truncated_keras(small_model, tmp_path: Path) -> None:
    full = tmp_path / "full.keras"
    small_model.save(full)
    path = tmp_path / "truncated.keras"
    path.write_bytes(full.read_bytes()[:-100])
    message = load_error(path)
    assert str(path) in message and "corrupt or truncated" in message


def test_weights_only_h5(small_model, tmp_path: Path) -> None:
    path = tmp_path / "model.weights.h5"
    small_model.save_weights(path)
    message = load_error(path)
    assert str(path) in message and "weights only" in message and "load_weights" in message


def test_h5_without_model(tmp_path: Path) -> None:
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 3))
    message = load_error(path)
    assert str(path) in message and "not a saved model" in message and "model.save" in message


def test_zip_that_is_not_a_keras_archive(tmp_path: Path) -> None:
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    message = load_error(path)
    assert str(path) in message and "no config.json" in message


def test_h5_with_architecture_but_no_weights(tmp_path: Path) -> None:
    with h5py.File(FIXTURES / "legacy_sequential.h5", "r") as source:
        config = source.attrs["model_config"]
    path = tmp_path / "no_weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = config
    message = load_error(path)
    assert str(path) in message and "Keras could not rebuild the model" in message
    assert len(message) < 1500  # the gist of Keras's error, not a whole config dump


def test_h5_with_broken_config(tmp_path: Path) -> None:
    path = tmp_path / "broken.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = "{not json"
    message = load_error(path)
    assert str(path) in message and "model_config" in message and "Re-save" in message
