"""Write small model files as Keras 2 (``tf_keras``) users wrote them, for the loader tests.

Run once by hand (the outputs are checked in, so the tests never need ``tf_keras``)::

    python scripts/make_legacy_fixtures.py [--out tests/fixtures]

Every model is written next to an ``.npz`` holding a few inputs (``x``) and the
``tf_keras`` model's outputs for them (``y``, or ``y0``, ``y1``, ... for several outputs).
Weights are drawn from a seeded generator, so the files are reproducible.

This script imports only ``tf_keras`` (Keras 2), never Keras 3: keep it that way and do not
set ``TF_USE_LEGACY_KERAS`` globally.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as k  # noqa: E402
from tf_keras import layers  # noqa: E402

SEED = 1234
N_SAMPLES = 4
MAX_BYTES = 200_000
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def randomize_weights(model: k.Model, rng: np.random.Generator) -> None:
    """Give every weight a seeded random value (BatchNormalization statistics included)."""
    for weight in model.weights:
        shape = tuple(weight.shape)
        if "moving_variance" in weight.name or "gamma" in weight.name:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        weight.assign(value.astype("float32"))


def nested_model() -> k.Model:
    """A Functional model using a nested Sequential and a nested Functional, with BatchNorm."""
    inner_seq = k.Sequential(
        [
            layers.Conv2D(4, 3, activation="relu", name="seq_conv"),
            layers.MaxPooling2D(2, name="seq_pool"),
            layers.Flatten(name="seq_flatten"),
        ],
        name="inner_sequential",
    )
    fin = k.Input((36,), name="fun_input")
    fhid = layers.Dense(8, activation="relu", name="fun_dense")(fin)
    inner_fun = k.Model(fin, layers.Dense(6, name="fun_out")(fhid), name="inner_functional")

    inp = k.Input((8, 8, 1), name="image")
    x = layers.Conv2D(3, 3, padding="same", name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = inner_seq(x)
    x = inner_fun(x)
    out = layers.Dense(3, activation="softmax", name="probs")(x)
    return k.Model(inp, out, name="legacy_nested")


def nested_edge_model() -> k.Model:
    """Nesting corner cases: a shared sub-model, a sub-model two levels deep, outputs of sub-models."""
    deep_in = k.Input((4,), name="deep_input")
    deepest = k.Sequential([layers.Dense(4, activation="tanh", name="deep_dense")], name="deepest")
    deep = k.Model(deep_in, layers.Dense(4, name="deep_out")(deepest(deep_in)), name="deep")
    head = k.Sequential([layers.Dense(2, name="head_dense")], name="head")

    inp = k.Input((4,), name="features")
    a = deep(inp)
    b = deep(layers.Dense(4, name="pre")(inp))  # second call of the shared sub-model
    merged = layers.Add(name="add")([a, b])
    return k.Model(inp, [head(merged), deep(merged)], name="legacy_nested_edge")


def depthwise_model() -> k.Model:
    """Conv2D, DepthwiseConv2D, SeparableConv2D, pooling and Dense."""
    inp = k.Input((12, 12, 2), name="image")
    x = layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="depthwise")(x)
    x = layers.SeparableConv2D(6, 3, activation="relu", name="separable")(x)
    x = layers.MaxPooling2D(2, name="max_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(3, name="logits")(x)
    return k.Model(inp, out, name="legacy_depthwise")


def layers_model() -> k.Model:
    """Other layers whose Keras 2 configs Keras 3 rejects: transposed, separable and
    depthwise 1-D convolutions, spatial dropout."""
    inp = k.Input((6, 6, 2), name="image")
    x = layers.Conv2DTranspose(3, 3, name="conv_transpose")(inp)
    x = layers.SpatialDropout2D(0.2, name="spatial_dropout_2d")(x)
    x = layers.Conv2D(2, 2, strides=2, name="conv")(x)
    x = layers.Reshape((16, 2), name="reshape")(x)
    x = layers.SeparableConv1D(4, 3, activation="relu", name="separable_1d")(x)
    x = layers.DepthwiseConv1D(3, name="depthwise_1d")(x)
    x = layers.SpatialDropout1D(0.2, name="spatial_dropout_1d")(x)
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    out = layers.Dense(2, name="logits")(x)
    return k.Model(inp, out, name="legacy_layers")


def sequential_model() -> k.Model:
    """A plain Sequential MLP ending in softmax."""
    return k.Sequential(
        [
            k.Input((10,)),
            layers.Dense(16, activation="relu", name="hidden1"),
            layers.Dense(8, activation="relu", name="hidden2"),
            layers.Dense(4, activation="softmax", name="probs"),
        ],
        name="legacy_sequential",
    )


def tfoplambda_model() -> k.Model:
    """Raw TensorFlow ops on Keras tensors: Keras 2 records them as TFOpLambda layers."""
    inp = k.Input((6,), name="features")
    x = layers.Dense(5, name="dense")(inp)
    x = x * 2.0  # -> TFOpLambda "tf.math.multiply"
    x = tf.nn.relu(x)  # -> TFOpLambda "tf.nn.relu"
    out = layers.Dense(3, name="logits")(x)
    return k.Model(inp, out, name="legacy_tfoplambda")


def keras2_zip_model() -> k.Model:
    """A small Functional model saved in the ``.keras`` zip format of Keras 2."""
    inp = k.Input((5,), name="features")
    out = layers.Dense(2, name="logits")(layers.Dense(4, activation="relu", name="hidden")(inp))
    return k.Model(inp, out, name="legacy_keras2_zip")


FIXTURES: dict[str, Callable[[], k.Model]] = {
    "legacy_nested.h5": nested_model,
    "legacy_nested_edge.h5": nested_edge_model,
    "legacy_depthwise.h5": depthwise_model,
    "legacy_layers.h5": layers_model,
    "legacy_sequential.h5": sequential_model,
    "legacy_tfoplambda.h5": tfoplambda_model,
    "legacy_keras2.keras": keras2_zip_model,
}


def input_shapes(model: k.Model) -> list[tuple[int, ...]]:
    return [tuple(t.shape[1:]) for t in model.inputs]


def reference_arrays(model: k.Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs ``x`` and the model's outputs ``y`` (``y0``, ``y1``, ... for several outputs)."""
    (shape,) = input_shapes(model)
    x = rng.normal(0.0, 1.0, (N_SAMPLES, *shape)).astype("float32")
    outputs = model(x, training=False)
    if isinstance(outputs, (list, tuple)):
        return {"x": x, **{f"y{i}": np.asarray(o) for i, o in enumerate(outputs)}}
    return {"x": x, "y": np.asarray(outputs)}


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    tmp = path.with_name(f".tmp-{path.stem}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_fixture(out_dir: Path, filename: str, build: Callable[[], k.Model]) -> None:
    k.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = build()
    randomize_weights(model, rng)
    arrays = reference_arrays(model, rng)

    model_path = out_dir / filename
    write_atomically(model_path, lambda tmp: model.save(tmp))
    npz_path = model_path.with_suffix(".npz")

    def save_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    write_atomically(npz_path, save_npz)
    for path in (model_path, npz_path):
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SystemExit(f"{path} is {size} bytes, over the {MAX_BYTES}-byte budget")
        print(f"wrote {path} ({size} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = parser.parse_args(argv)
    if os.environ.get("TF_USE_LEGACY_KERAS"):
        print("note: TF_USE_LEGACY_KERAS is set; this script does not need it", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    for filename, build in FIXTURES.items():
        write_fixture(args.out, filename, build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
