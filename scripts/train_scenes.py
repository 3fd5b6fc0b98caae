"""Train the deep shipped models on the scenes task: a VGG-style and a ResNet-18-style CNN.

    python scripts/train_scenes.py --arch vgg       # saved_models/scenes_vgg.keras
    python scripts/train_scenes.py --arch resnet    # saved_models/scenes_resnet.keras

Data: :func:`tf_lrp.datasets.make_scenes` (64x64 RGB, textured backgrounds, 2-4 distractor
objects, one class-deciding shape with its ground-truth mask), ``seed=SCENES_TRAIN_SEED`` for
training and ``SCENES_TEST_SEED`` held out. Each epoch sees the training scenes under fresh
random rotations by multiples of 90 degrees and mirror images (the task is closed under them).

Architectures (every convolution is linear, bias-free and followed by BatchNormalization and
ReLU, so each BN folds into its convolution; the saved model starts with
``Rescaling(1/255)`` named ``preprocess`` and takes pixels 0..255):

``vgg``
    VGG-16's 13 convolutions in 5 blocks (2, 2, 3, 3, 3) of widths 16, 32, 64, 96, 128, each
    block closed by 2x2 max pooling (64 -> 2 pixels), then global average pooling, Dense(64,
    ReLU) and Dense(4, softmax).
``resnet``
    ResNet-18's layout: a 3x3 stem convolution (16 channels) with 2x2 max pooling, four stages
    of two basic blocks (two 3x3 convolutions and an identity or 1x1-projection shortcut
    joined by ``Add``) of widths 16, 32, 64, 128, the first block of stages 2-4 with stride 2,
    then global average pooling and Dense(4, softmax) (17 convolutions + 3 projections).

Both use Adam with a linear warm-up and cosine decay and fixed seeds; training on 2 CPU cores
takes about 15 minutes each (printed).
"""

from __future__ import annotations

import argparse

import _training
import numpy as np

SEED = 0
#: Scenes printed as progress during training (neither training nor held-out data).
VALIDATION_SEED = 2
MIN_ACCURACY = 0.95
LOW, HIGH = 0.0, 1.0
ARCHS = ("vgg", "resnet")


def conv_bn_relu(x, filters: int, name: str, strides: int = 1, relu: bool = True):
    """3x3 convolution without bias, BatchNormalization, then (optionally) ReLU."""
    from keras import layers

    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build_vgg(size: int = 64, n_classes: int = 4):
    """13 convolutions in blocks of 2, 2, 3, 3, 3, each followed by max pooling."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for b, (depth, width) in enumerate(zip((2, 2, 3, 3, 3), (16, 32, 64, 96, 128)), start=1):
        for i in range(1, depth + 1):
            x = conv_bn_relu(x, width, f"block{b}_{i}")
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="fc")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="scenes_vgg")


def basic_block(x, filters: int, name: str, strides: int = 1):
    """Two 3x3 convolutions and a shortcut (1x1 projection when the shape changes), Add, ReLU."""
    from keras import layers

    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                 name=f"{name}_proj_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = conv_bn_relu(x, filters, f"{name}_a", strides=strides)
    y = conv_bn_relu(y, filters, f"{name}_b", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_resnet(size: int = 64, n_classes: int = 4):
    """ResNet-18 layout: stem, 4 stages x 2 basic blocks, GAP, dense."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3), name="image")
    x = conv_bn_relu(inputs, 16, "stem")
    x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for s, width in enumerate((16, 32, 64, 128), start=1):
        x = basic_block(x, width, f"stage{s}_1", strides=1 if s == 1 else 2)
        x = basic_block(x, width, f"stage{s}_2")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name="scenes_resnet")


def dihedral(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image under one of the 8 rotations by multiples of 90 degrees, with or without a mirror."""
    out = np.empty_like(x)
    turns = rng.integers(0, 4, len(x))
    flips = rng.integers(0, 2, len(x)).astype(bool)
    for k in range(4):
        for flip in (False, True):
            sel = (turns == k) & (flips == flip)
            images = np.rot90(x[sel], k, axes=(1, 2))
            out[sel] = images[:, :, ::-1] if flip else images
    return out


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float,
          validation: tuple[np.ndarray, np.ndarray] | None = None,
          batch_size: int = 64, warmup_epochs: int = 1) -> None:
    """Adam, linear warm-up then cosine decay; fresh dihedral augmentation every epoch.

    ``validation`` is only printed (progress), never used to choose anything.
    """
    import keras

    steps_per_epoch = -(-len(x) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=(epochs - warmup_epochs) * steps_per_epoch,
        warmup_target=learning_rate, warmup_steps=warmup_epochs * steps_per_epoch,
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(SEED)
    for epoch in range(epochs):
        model.fit(dihedral(x, rng), y, batch_size=batch_size, epochs=epoch + 1,
                  initial_epoch=epoch, shuffle=True, verbose=2, validation_data=validation)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, required=True)
    parser.add_argument("--output-dir", type=_training.Path, default=_training.SAVED_MODELS)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    args = parser.parse_args(argv)

    from tf_lrp.datasets import SCENES_TEST_SEED, SCENES_TRAIN_SEED, make_scenes

    name = f"scenes_{args.arch}"
    path = args.output_dir / f"{name}.keras"
    with _training.timed("data generation"):
        x_train, y_train, _ = make_scenes(args.n_train, seed=SCENES_TRAIN_SEED)
        x_test, y_test, _ = make_scenes(args.n_test, seed=SCENES_TEST_SEED)
        x_val, y_val, _ = make_scenes(500, seed=VALIDATION_SEED)
    _training.set_seeds(SEED)
    model = (build_vgg if args.arch == "vgg" else build_resnet)()
    print(f"{name}: {model.count_params():,} parameters", flush=True)
    with _training.timed(f"{name} training"):
        train(model, x_train, y_train, args.epochs, args.learning_rate, (x_val, y_val))
    model = _training.checked_preprocessing(model, LOW, HIGH, x_test)
    size = _training.save_model(model, path)
    acc = _training.accuracy(model, _training.to_pixels(x_test, LOW, HIGH), y_test)
    _training.report(name, path, acc, len(y_test), size)
    if acc < MIN_ACCURACY:
        raise SystemExit(f"{name}: accuracy {acc:.4f} is below {MIN_ACCURACY}")


if __name__ == "__main__":
    main()
