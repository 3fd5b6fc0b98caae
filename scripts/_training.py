"""Helpers shared by the training scripts (seeding, evaluation, atomic saving, reporting).

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
