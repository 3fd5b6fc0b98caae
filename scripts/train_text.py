"""Train the LSTM and the small Transformer text classifiers on synthetic token sequences.

    python scripts/train_text.py                      # train both, save, write the examples
    python scripts/train_text.py --only transformer   # one of them (examples need both files)

Data: ``make_tokens(n_train, seed=TOKENS_TRAIN_SEED)`` for training and held-out
``make_tokens(n_test, seed=TOKENS_TEST_SEED)`` for the reported accuracy (see
:func:`tf_lrp.datasets.make_tokens`: 32 token ids, right-padded with 0, label decided by 1-2
planted keywords among negated keywords of other classes and filler). Writes

- ``saved_models/text_lstm.keras``: ``Embedding(mask_zero=True) -> LSTM -> Dense(softmax)``;
- ``saved_models/text_transformer.keras``: ``Embedding(mask_zero=True)``, ``+`` a fixed
  sinusoidal position constant (an op node), two post-LN encoder blocks
  (MultiHeadAttention self-attention, residual Add, LayerNormalization, Dense(gelu) -> Dense,
  residual Add, LayerNormalization), GlobalAveragePooling1D, Dense(softmax);
- ``examples/vocab.txt`` (one token per line, line ``i`` is id ``i``),
  ``examples/text_32.npy`` (int32, the first held-out sequences that both models classify
  correctly), ``examples/text_masks.npy`` (bool, their planted keywords) and
  ``examples/text_labels.npy`` (int64, their labels).

Padding: in the LSTM, the Embedding's mask makes the LSTM skip the padded steps, so padding
has no effect on its output. In the Transformer, Keras drops the mask at the ``x + pos`` op
node (an op node neither propagates nor consumes masks), so the attention layers attend to
padding positions and the pooling averages over all 32 positions; it was trained that way on
right-padded sequences and treats ``<pad>`` (with its position) as an ordinary token.

Seeds: each model is seeded (``keras.utils.set_random_seed`` and TensorFlow op determinism)
right before it is built. The Transformer must learn to look one position back for a negator
through the position code; from some seeds it settles at 92-98 % held-out instead (it
half-counts negators), so :func:`fit_first_good_seed` tries :data:`TRANSFORMER_SEEDS` in turn
until one reaches :data:`VALIDATION_TARGET` on validation sequences
(``make_tokens(n_val, seed=VALIDATION_SEED)``, neither training nor test data). Re-running
reproduces the models.

Only standard Keras layers and one ``ops.add`` node, no custom classes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _training
import numpy as np

#: Seeds tried in turn (see :func:`fit_first_good_seed`); the LSTM always succeeds with 0.
SEEDS = (0,)
#: The Transformer has to find the negators through the position code; from some seeds it
#: settles at 92-98 % instead (it counts negators), so seeds are tried until one gets there.
TRANSFORMER_SEEDS = (0, 1, 2, 3, 4, 5, 6, 7)
#: Validation accuracy at which a seed is accepted.
VALIDATION_TARGET = 0.98
#: ``make_tokens`` seed of the validation data that picks the seed (neither train nor test).
VALIDATION_SEED = 2
MIN_ACCURACY = 0.95
MODELS = ("lstm", "transformer")
#: Number of held-out sequences written to ``examples/``.
N_EXAMPLES = 8


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """The fixed sinusoidal position code of Vaswani et al. (2017), float32 ``(length, dim)``.

    ``P[p, 2i] = sin(p / 10000^(2i/dim))``, ``P[p, 2i+1] = cos(p / 10000^(2i/dim))``.
    """
    position = np.arange(length, dtype=np.float64)[:, None]
    frequency = 10000.0 ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
    code = np.zeros((length, dim))
    code[:, 0::2] = np.sin(position * frequency)
    code[:, 1::2] = np.cos(position * frequency[: dim // 2])
    return code.astype(np.float32)


def encoder_block(x, dim: int, heads: int, hidden: int, name: str):
    """Post-LN Transformer encoder block: attention, Add, LN, Dense(gelu) -> Dense, Add, LN."""
    from keras import layers

    attended = layers.MultiHeadAttention(heads, dim // heads, name=f"{name}_attention")(x, x)
    x = layers.Add(name=f"{name}_add1")([x, attended])
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm1")(x)
    h = layers.Dense(hidden, activation="gelu", name=f"{name}_ffn1")(x)
    h = layers.Dense(dim, name=f"{name}_ffn2")(h)
    x = layers.Add(name=f"{name}_add2")([x, h])
    return layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm2")(x)


def build_lstm(vocab_size: int, length: int, n_classes: int, dim: int = 32, units: int = 64):
    """Embedding(mask_zero=True) - LSTM - Dense(softmax)."""
    import keras
    from keras import layers

    tokens = keras.Input((length,), dtype="int32", name="tokens")
    x = layers.Embedding(vocab_size, dim, mask_zero=True, name="embedding")(tokens)
    x = layers.LSTM(units, name="lstm")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(tokens, outputs, name="text_lstm")


def build_transformer(
    vocab_size: int, length: int, n_classes: int, dim: int = 32, heads: int = 2,
    hidden: int = 64, blocks: int = 2, embedding_std: float = 0.3,
):
    """Embedding(mask_zero=True) + sinusoidal positions - 2 encoder blocks - GAP - Dense.

    The embeddings start from N(0, ``embedding_std``): with Keras's default (uniform in
    +-0.05) the position code (amplitude 1) drowns the token identities and training stalls
    at 89-97 % held-out accuracy; with 0.3 it reaches 99.5 % within 7 epochs.
    """
    import keras
    from keras import layers

    tokens = keras.Input((length,), dtype="int32", name="tokens")
    init = keras.initializers.RandomNormal(stddev=embedding_std)
    x = layers.Embedding(vocab_size, dim, mask_zero=True, embeddings_initializer=init,
                         name="embedding")(tokens)
    x = x + sinusoidal_positions(length, dim)  # an op node: Keras drops the mask here
    for b in range(blocks):
        x = encoder_block(x, dim, heads, hidden, f"block{b + 1}")
    x = layers.GlobalAveragePooling1D(name="gap")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(tokens, outputs, name="text_transformer")


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, learning_rate: float) -> None:
    """Adam with cosine learning-rate decay on cross-entropy, batch 64."""
    _training.fit_cosine(model, x, y, epochs, learning_rate)


def write_examples(models: dict, x: np.ndarray, y: np.ndarray, masks: np.ndarray,
                   examples_dir: Path) -> None:
    """The vocabulary and the first held-out sequences that every model classifies correctly."""
    from tf_lrp.datasets import TOKENS_VOCAB

    correct = np.ones(len(y), dtype=bool)
    for model in models.values():
        correct &= np.argmax(model.predict(x, verbose=0), axis=-1) == y
    chosen = np.flatnonzero(correct)[:N_EXAMPLES]
    examples_dir.mkdir(parents=True, exist_ok=True)
    (examples_dir / "vocab.txt").write_text("\n".join(TOKENS_VOCAB) + "\n", encoding="utf-8")
    np.save(examples_dir / "text_32.npy", x[chosen].astype(np.int32))
    np.save(examples_dir / "text_masks.npy", masks[chosen])
    np.save(examples_dir / "text_labels.npy", y[chosen])
    print(f"examples: held-out indices {chosen.tolist()}, labels {y[chosen].tolist()}",
          flush=True)


def fit_first_good_seed(build, fit, seeds, x_val, y_val, target: float, label: str):
    """Train ``build()`` with ``fit(model)`` from each seed in turn until one reaches ``target``.

    Every attempt is seeded with :func:`_training.set_seeds` right before ``build()``, so
    the result depends on the seeds alone. Returns ``(model, seed, attempts)``: the first
    model whose accuracy on the validation data ``(x_val, y_val)`` is at least ``target``
    (else the best one), and ``[(seed, validation accuracy, seconds), ...]``.
    """
    import time

    best, attempts = None, []
    for seed in seeds:
        _training.set_seeds(seed)
        model = build()
        print(f"{label}: seed {seed}, {model.count_params():,} parameters", flush=True)
        start = time.perf_counter()
        fit(model)
        seconds = time.perf_counter() - start
        acc = _training.accuracy(model, x_val, y_val)
        attempts.append((seed, acc, seconds))
        print(f"{label}: seed {seed}: validation accuracy {acc:.4f}, training {seconds:.1f} s",
              flush=True)
        if best is None or acc > best[1]:
            best = (model, acc, seed)
        if acc >= target:
            break
    return best[0], best[2], attempts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=_training.SAVED_MODELS)
    parser.add_argument("--examples-dir", type=Path, default=_training.EXAMPLES)
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-val", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs for every model (default: 6 LSTM, 15 Transformer)")
    parser.add_argument("--only", choices=MODELS, help="train only this model")
    args = parser.parse_args(argv)

    import keras

    from tf_lrp.datasets import (
        TOKENS_CLASSES,
        TOKENS_LENGTH,
        TOKENS_TEST_SEED,
        TOKENS_TRAIN_SEED,
        TOKENS_VOCAB,
        make_tokens,
    )

    with _training.timed("data generation"):
        x_train, y_train, _ = make_tokens(args.n_train, seed=TOKENS_TRAIN_SEED)
        x_val, y_val, _ = make_tokens(args.n_val, seed=VALIDATION_SEED)
        x_test, y_test, masks_test = make_tokens(args.n_test, seed=TOKENS_TEST_SEED)
    recipes = {  # builder, default epochs, learning rate, seeds tried in turn
        "lstm": (build_lstm, 6, 3e-3, SEEDS),
        "transformer": (build_transformer, 15, 2e-3, TRANSFORMER_SEEDS),
    }
    models = {}
    for name in MODELS:
        path = args.output_dir / f"text_{name}.keras"
        if args.only not in (None, name):
            models[name] = keras.models.load_model(path, compile=False) if path.exists() else None
            continue
        build, epochs, learning_rate, seeds = recipes[name]
        with _training.timed(f"text_{name} training"):
            model, seed, _ = fit_first_good_seed(
                lambda build=build: build(len(TOKENS_VOCAB), TOKENS_LENGTH, len(TOKENS_CLASSES)),
                lambda model, e=args.epochs or epochs, lr=learning_rate: train(
                    model, x_train, y_train, e, lr),
                seeds, x_val, y_val, VALIDATION_TARGET, f"text_{name}")
        size = _training.save_model(model, path)
        saved = keras.models.load_model(path, compile=False)
        acc = _training.accuracy(saved, x_test, y_test)
        _training.report(f"text_{name} (seed {seed})", path, acc, len(y_test), size)
        if acc < MIN_ACCURACY:
            raise SystemExit(f"text_{name}: accuracy {acc:.4f} is below {MIN_ACCURACY}")
        models[name] = saved
    if all(model is not None for model in models.values()):
        write_examples(models, x_test, y_test, masks_test, args.examples_dir)


if __name__ == "__main__":
    main()
