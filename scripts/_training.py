"""Helpers shared by the training scripts (seeding, evaluation, atomic saving, reporting, and
putting the input preprocessing into the saved model).

The shipped models carry their preprocessing: each starts with a ``keras.layers.Rescaling``
layer, so its input is raw pixel values 0..255. The networks themselves are trained on scaled
data (digits in [-1, 1], shapes in [0, 1]); :func:`with_preprocessing` puts the Rescaling layer
in front of a trained network (same layers, same weights) and :func:`add_preprocessing`
converts an existing saved model that way without retraining (``--wrap-only`` of the scripts).

Importing this module puts the repository root on ``sys.path`` so the scripts run as
``python scripts/train_*.py`` without installing the package.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SAVED_MODELS = REPO_ROOT / "saved_models"
EXAMPLES = REPO_ROOT / "examples"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TensorFlow's ops deterministic."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def save_model(model, path: Path) -> int:
    """Save ``model`` without optimizer state to ``path`` atomically; return the file size.

    The model is rebuilt from its config (same layer names, never compiled) and given the
    trained weights, so neither ``.h5`` nor ``.keras`` files carry the optimizer's slots
    (``keras.models.clone_model`` keeps the compiled state and would not do).
    """
    export = type(model).from_config(model.get_config())
    export.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    export.save(tmp)
    os.replace(tmp, path)
    return path.stat().st_size


def fit_cosine(model, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float,
               batch_size: int = 64) -> None:
    """Adam with cosine learning-rate decay on sparse cross-entropy, shuffled batches."""
    import keras

    steps = epochs * -(-len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=2)
    print(f"  last epoch: loss {history.history['loss'][-1]:.4f}", flush=True)


def random_shifts(
    x: np.ndarray, max_shift: int, fill: float, rng: np.random.Generator
) -> np.ndarray:
    """Shift each image by up to ``max_shift`` pixels in y and x, filling with ``fill``."""
    n, h, w = x.shape[:3]
    padded = np.pad(
        x,
        ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
        constant_values=fill,
    )
    dy, dx = rng.integers(0, 2 * max_shift + 1, (2, n))
    return np.stack([padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long the block took."""
    start = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - start:.1f} s", flush=True)


def report(name: str, path: Path, test_accuracy: float, n_test: int, size: int) -> None:
    """Print the figures the model card in ``saved_models/README.md`` quotes."""
    print(
        f"{name}: held-out accuracy {test_accuracy:.4f} on {n_test} samples; "
        f"saved {path} ({size / 1024:.0f} KiB)",
        flush=True,
    )


def replace_examples(folder: Path, images, names, low: float, high: float) -> None:
    """Replace the PNG files in ``folder`` by ``images`` (values in [low, high]) named ``names``."""
    for old in folder.glob("*.png"):
        old.unlink()
    for image, name in zip(images, names, strict=True):
        save_png(image, folder / name, low, high)


def save_png(image: np.ndarray, path: Path, low: float, high: float) -> None:
    """Save an (h, w, 1) or (h, w, 3) image with values in [low, high] as an 8-bit PNG."""
    from PIL import Image

    scaled = np.round((np.asarray(image) - low) / (high - low) * 255.0)
    pixels = np.clip(scaled, 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------- preprocessing in the model

#: Name of the Rescaling layer put in front of the trained networks.
PREPROCESS_NAME = "preprocess"
#: Largest difference allowed between the predictions of a network on scaled data and of the
#: same network with its Rescaling layer on the raw pixels (float32 rounding of the rescaling).
PREDICTION_TOLERANCE = 1e-5


def to_pixels(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Data scaled to ``[low, high]`` as raw pixel values 0..255 (float32, not rounded)."""
    return ((np.asarray(x, np.float64) - low) * (255.0 / (high - low))).astype(np.float32)


def rescaling_for(low: float, high: float) -> tuple[float, float]:
    """``(scale, offset)`` of the Rescaling layer mapping 0..255 onto ``[low, high]``."""
    scale = (high - low) / 255.0
    return scale, low


def starts_with_rescaling(model) -> bool:
    """Whether the first layer after the input is a Rescaling layer (already converted)."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return bool(layers) and isinstance(layers[0], keras.layers.Rescaling)


def with_preprocessing(model, low: float, high: float):
    """``Input -> Rescaling(0..255 onto [low, high]) -> model's layers``, sharing its layers.

    The layers (and so the weights) are ``model``'s own; names, the model name and the input
    name are kept. A ``Sequential`` stays ``Sequential`` (what ``.h5`` files of the digit
    models hold); a functional model is rebuilt on a new input with ``keras.models.clone_model``
    reusing every layer, the layers that read the input reading it through the Rescaling layer.
    """
    import keras

    scale, offset = rescaling_for(low, high)
    shape = tuple(model.inputs[0].shape[1:])
    rescaling = keras.layers.Rescaling(scale, offset, name=PREPROCESS_NAME)
    if isinstance(model, keras.Sequential):
        return keras.Sequential([keras.Input(shape), rescaling, *model.layers], name=model.name)
    if len(model.inputs) != 1:
        raise ValueError(f"{model.name}: expected a single-input model")
    inputs = keras.Input(shape, name=model.inputs[0].name)
    rescaled = rescaling(inputs)

    def call(layer, *args, **kwargs):  # the layers that read the input read it rescaled
        args, kwargs = keras.tree.map_structure(lambda t: rescaled if t is inputs else t,
                                                (args, kwargs))
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, input_tensors=inputs,
                                    clone_function=lambda layer: layer, call_function=call)


def prediction_difference(wrapped, model, x: np.ndarray, low: float, high: float) -> float:
    """Largest |difference| of ``wrapped`` on the pixels of ``x`` and ``model`` on ``x``."""
    old = model.predict(x, batch_size=256, verbose=0)
    new = wrapped.predict(to_pixels(x, low, high), batch_size=256, verbose=0)
    return float(np.max(np.abs(new - old)))


def checked_preprocessing(model, low: float, high: float, x: np.ndarray):
    """:func:`with_preprocessing`, after checking its predictions on ``x`` (scaled data)."""
    wrapped = with_preprocessing(model, low, high)
    difference = prediction_difference(wrapped, model, x, low, high)
    print(f"{model.name}: with Rescaling on 0..255 pixels, predictions differ from the network "
          f"on [{low:g}, {high:g}] data by at most {difference:.2e} ({len(x)} samples)",
          flush=True)
    if not difference <= PREDICTION_TOLERANCE:
        raise SystemExit(f"{model.name}: predictions changed by {difference:.2e} "
                         f"(> {PREDICTION_TOLERANCE:g})")
    return wrapped


def add_preprocessing(path: Path, low: float, high: float, x: np.ndarray):
    """Convert the saved model ``path`` (trained on data in ``[low, high]``) to take pixels.

    Loads it, puts the Rescaling layer in front (:func:`with_preprocessing`), checks the
    predictions on ``x`` (scaled data), saves it in place (atomically, same format), loads the
    saved file back with :func:`tf_lrp.load_model` and checks its predictions again. A file
    that already starts with a Rescaling layer is left alone. Returns the converted model.
    """
    import tf_lrp

    model = tf_lrp.load_model(path)
    if starts_with_rescaling(model):
        print(f"{path}: already starts with a Rescaling layer; left unchanged", flush=True)
        return model
    wrapped = checked_preprocessing(model, low, high, x)
    size = save_model(wrapped, path)
    reloaded = tf_lrp.load_model(path)
    difference = prediction_difference(reloaded, model, x, low, high)
    if not (starts_with_rescaling(reloaded) and difference <= PREDICTION_TOLERANCE):
        raise SystemExit(f"{path}: the saved file does not reproduce the predictions "
                         f"({difference:.2e})")
    print(f"{path}: saved with its preprocessing ({size / 1024:.0f} KiB); reloaded, "
          f"predictions differ by at most {difference:.2e}", flush=True)
    return reloaded
