"""Train the LRP tutorial's two digit classifiers and write the quick-start examples.

    python scripts/train_digits.py              # train, save, write the examples
    python scripts/train_digits.py --wrap-only  # only add the preprocessing to the saved files

Writes ``saved_models/digits_mlp.h5`` (MLP 784-300-100-10 on 28x28 inputs) and
``saved_models/digits_lenet.h5`` (LeNet-5 with average pooling on 32x32 padded inputs),
both legacy HDF5 files saved by Keras 3 with a final softmax, trained on the "train"
split of :func:`tf_lrp.datasets.load_digits` (values in [-1, 1]) and evaluated on its "test"
split. The saved models carry their preprocessing: a ``Rescaling(1/127.5, offset=-1)`` layer
named ``preprocess`` in front of the trained network, so they take raw pixel values 0..255.
Then writes ``examples/digits/*.png`` and ``examples/digits_32.npy`` (pixel values 0..255,
float32): six test digits that both models classify correctly.

``--wrap-only`` converts saved models trained before the preprocessing was part of them (no
retraining): each file is loaded, given the Rescaling layer, checked (its predictions on the
test digits as pixels equal the old model's on the scaled digits to 1e-5) and saved in place;
then the examples are rewritten. Files that already start with a Rescaling layer are left alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _training
import numpy as np

SEED = 0
MIN_ACCURACY = 0.95
#: The range the networks are trained on; the saved models map pixels 0..255 onto it.
LOW, HIGH = -1.0, 1.0
EXAMPLE_CLASSES = (0, 1, 3, 4, 7, 9)


def build_mlp():
    """MLP 784-300-100-10 with ReLU; the input image is flattened by the first layer."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Flatten(name="flatten"),
            layers.Dense(300, activation="relu", name="dense1"),
            layers.Dense(100, activation="relu", name="dense2"),
            layers.Dense(10, activation="softmax", name="output"),
        ],
        name="digits_mlp",
    )


def build_lenet():
    """LeNet-5: conv 5x5 (6) - avg pool - conv 5x5 (16) - avg pool - 120 - 84 - 10."""
    import keras
    from keras import layers

    return keras.Sequential(
        [
            keras.Input((32, 32, 1)),
            layers.Conv2D(6, 5, activation="relu", name="conv1"),
            layers.AveragePooling2D(2, name="pool1"),
            layers.Conv2D(16, 5, activation="relu", name="conv2"),
            layers.AveragePooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(120, activation="relu", name="dense1"),
            layers.Dense(84, activation="relu", name="dense2"),
            layers.Dense(10, activation="softmax", name="output"),
        ],
        name="digits_lenet",
    )


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, max_shift: int) -> None:
    """Adam on cross-entropy; each epoch sees freshly shifted copies of the images."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    rng = np.random.default_rng(SEED)
    for _ in range(epochs):
        x_epoch = _training.random_shifts(x, max_shift, fill=-1.0, rng=rng) if max_shift else x
        history = model.fit(x_epoch, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
    print(f"  last epoch: loss {history.history['loss'][-1]:.4f}", flush=True)


def test_pixels(pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The test split as the saved models take it: pixel values 0..255 (float32)."""
    from tf_lrp.datasets import load_digits

    x, y = load_digits(split="test", pad=pad)
    return _training.to_pixels(x, LOW, HIGH), y


def fit_and_save(name: str, build, pad: int, args: argparse.Namespace):
    """Seed, build, train, evaluate and save one model with its preprocessing; return it.

    Seeding right before building makes each model's initial weights depend on ``SEED`` only,
    not on which other models the script built before it.
    """
    from tf_lrp.datasets import load_digits

    x_train, y_train = load_digits(split="train", pad=pad)
    x_test, y_test = load_digits(split="test", pad=pad)
    _training.set_seeds(SEED)
    model = build()
    with _training.timed(f"{name} training"):
        train(model, x_train, y_train, args.epochs, args.max_shift)
    model = _training.checked_preprocessing(model, LOW, HIGH, x_test)
    acc = _training.accuracy(model, *test_pixels(pad))
    path = args.output_dir / f"{name}.h5"
    size = _training.save_model(model, path)
    _training.report(name, path, acc, len(y_test), size)
    if acc < MIN_ACCURACY:
        raise SystemExit(f"{name}: accuracy {acc:.4f} is below {MIN_ACCURACY}")
    return model


def wrap_saved(name: str, pad: int, args: argparse.Namespace):
    """``--wrap-only``: add the preprocessing to the saved ``name.h5``; return the model."""
    from tf_lrp.datasets import load_digits

    x_test, y_test = load_digits(split="test", pad=pad)
    path = args.output_dir / f"{name}.h5"
    model = _training.add_preprocessing(path, LOW, HIGH, x_test)
    acc = _training.accuracy(model, *test_pixels(pad))
    _training.report(name, path, acc, len(y_test), path.stat().st_size)
    return model


def write_examples(models: dict, examples_dir: Path) -> None:
    """Six test digits (one per class in EXAMPLE_CLASSES) that every model gets right."""
    from tf_lrp.datasets import LENET_PAD

    x28, y = test_pixels(0)
    x32, _ = test_pixels(LENET_PAD)
    correct = np.ones(len(y), dtype=bool)
    for model, x in ((models["digits_mlp"], x28), (models["digits_lenet"], x32)):
        correct &= np.argmax(model.predict(x, verbose=0), axis=-1) == y
    chosen = sorted(int(np.flatnonzero(correct & (y == c))[0]) for c in EXAMPLE_CLASSES)
    _training.replace_examples(examples_dir / "digits", x28[chosen],
                               [f"test{i:03d}_label{y[i]}.png" for i in chosen], 0.0, 255.0)
    np.save(examples_dir / "digits_32.npy", x32[chosen])
    print(f"examples: test indices {chosen}, labels {y[chosen].tolist()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=_training.SAVED_MODELS)
    parser.add_argument("--examples-dir", type=Path, default=_training.EXAMPLES)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--max-shift", type=int, default=2, help="augmentation shift in pixels")
    parser.add_argument("--wrap-only", action="store_true",
                        help="do not train: add the Rescaling layer to the saved models in "
                             "--output-dir (checked, saved in place), then rewrite the examples")
    args = parser.parse_args(argv)

    from tf_lrp.datasets import LENET_PAD

    if args.wrap_only:
        models = {
            "digits_mlp": wrap_saved("digits_mlp", 0, args),
            "digits_lenet": wrap_saved("digits_lenet", LENET_PAD, args),
        }
    else:
        models = {
            "digits_mlp": fit_and_save("digits_mlp", build_mlp, 0, args),
            "digits_lenet": fit_and_save("digits_lenet", build_lenet, LENET_PAD, args),
        }
    write_examples(models, args.examples_dir)


if __name__ == "__main__":
    main()
