"""Train the small residual CNN on synthetic shapes.

    python scripts/train_shapes.py              # train, save, write the examples
    python scripts/train_shapes.py --wrap-only  # only add the preprocessing to the saved file

Writes ``saved_models/shapes_resnet.keras``: a functional CNN with Conv (linear, no
bias) -> BatchNormalization -> ReLU blocks (so every BN folds into its convolution),
one residual ``Add`` block, max pooling, global average pooling and a Dense softmax
over :data:`tf_lrp.datasets.SHAPES_CLASSES`. Trained on
``make_shapes(n_train, seed=SHAPES_TRAIN_SEED)`` (values in [0, 1]), evaluated on held-out
``make_shapes(n_test, seed=SHAPES_TEST_SEED)``. The saved model carries its preprocessing: a
``Rescaling(1/255)`` layer named ``preprocess`` in front of the trained network, so it takes
raw pixel values 0..255. Also writes ``examples/shapes/*.png``, ``examples/shapes_32.npy``
(pixel values 0..255, float32) and ``examples/shapes_masks.npy``: one held-out image per
class that the model classifies correctly, with its ground-truth mask.

``--wrap-only`` converts a saved model trained before the preprocessing was part of it (no
retraining): the file is loaded, given the Rescaling layer, checked (its predictions on the
held-out shapes as pixels equal the old model's on [0, 1] to 1e-5) and saved in place; then
the examples are rewritten. A file that already starts with a Rescaling layer is left alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _training
import numpy as np

SEED = 0
MIN_ACCURACY = 0.90
#: The range the network is trained on; the saved model maps pixels 0..255 onto it.
LOW, HIGH = 0.0, 1.0


def conv_bn_relu(x, filters: int, name: str, relu: bool = True):
    """3x3 convolution without bias or activation, BatchNormalization, then ReLU."""
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build_model(size: int = 32, n_classes: int = 4):
    """conv16 - pool - conv32 - [conv32 - conv32 + skip] - pool - conv64 - GAP - dense."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = conv_bn_relu(inputs, 16, "block1")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = conv_bn_relu(x, 32, "block2")
    shortcut = x
    x = conv_bn_relu(x, 32, "res_a")
    x = conv_bn_relu(x, 32, "res_b", relu=False)
    x = layers.Add(name="res_add")([shortcut, x])
    x = layers.ReLU(name="res_relu")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = conv_bn_relu(x, 64, "block3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="shapes_resnet")


def train(model, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    """Adam with cosine learning-rate decay on cross-entropy."""
    _training.fit_cosine(model, x, y, epochs, 2e-3)


def write_examples(
    model, x: np.ndarray, y: np.ndarray, masks: np.ndarray, examples_dir: Path
) -> None:
    """One correctly classified held-out image per class, as PNG and as arrays.

    ``x`` holds pixel values 0..255, what the saved ``model`` takes.
    """
    from tf_lrp.datasets import SHAPES_CLASSES

    correct = np.argmax(model.predict(x, verbose=0), axis=-1) == y
    chosen = sorted(int(np.flatnonzero(correct & (y == c))[0]) for c in range(len(SHAPES_CLASSES)))
    _training.replace_examples(examples_dir / "shapes", x[chosen],
                               [f"test{i:03d}_{SHAPES_CLASSES[y[i]]}.png" for i in chosen],
                               0.0, 255.0)
    np.save(examples_dir / "shapes_32.npy", x[chosen])
    np.save(examples_dir / "shapes_masks.npy", masks[chosen])
    print(f"examples: held-out indices {chosen}, labels {y[chosen].tolist()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=_training.SAVED_MODELS)
    parser.add_argument("--examples-dir", type=Path, default=_training.EXAMPLES)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--wrap-only", action="store_true",
                        help="do not train: add the Rescaling layer to the saved model in "
                             "--output-dir (checked, saved in place), then rewrite the examples")
    args = parser.parse_args(argv)

    from tf_lrp.datasets import SHAPES_TEST_SEED, SHAPES_TRAIN_SEED, make_shapes

    path = args.output_dir / "shapes_resnet.keras"
    with _training.timed("data generation"):
        if not args.wrap_only:
            x_train, y_train, _ = make_shapes(args.n_train, seed=SHAPES_TRAIN_SEED)
        x_test, y_test, masks_test = make_shapes(args.n_test, seed=SHAPES_TEST_SEED)
    pixels = _training.to_pixels(x_test, LOW, HIGH)
    if args.wrap_only:
        model = _training.add_preprocessing(path, LOW, HIGH, x_test)
        size = path.stat().st_size
    else:
        _training.set_seeds(SEED)
        model = build_model()
        with _training.timed("shapes_resnet training"):
            train(model, x_train, y_train, args.epochs)
        model = _training.checked_preprocessing(model, LOW, HIGH, x_test)
        size = _training.save_model(model, path)
    acc = _training.accuracy(model, pixels, y_test)
    _training.report("shapes_resnet", path, acc, len(y_test), size)
    if acc < MIN_ACCURACY:
        raise SystemExit(f"shapes_resnet: accuracy {acc:.4f} is below {MIN_ACCURACY}")
    write_examples(model, pixels, y_test, masks_test, args.examples_dir)


if __name__ == "__main__":
    main()
