"""Train the small decoder language model shipped for generation explanations.

    python scripts/train_lm.py

Writes ``saved_models/lm_retrieval.keras`` (a KerasHub ``LlamaCausalLM`` without preprocessor:
rotary position embedding, RMSNorm, SwiGLU MLP, grouped-query attention; 2 layers, hidden 64,
4 query heads and 2 key/value heads, MLP 128, vocabulary 36) and
``saved_models/lm_retrieval.vocab.txt`` (one word per line; :class:`tf_lrp.lm.WordTokenizer`
reads it beside the model).

Data: :mod:`tf_lrp.retrieval`, key-value retrieval and copying in equal parts (fresh samples
every epoch from seeded generators; held-out samples from another seed). The loss is the
next-token cross-entropy on the answer tokens only. Seed :data:`SEED`, op determinism on;
the script fails unless held-out greedy answers are :data:`MIN_ACCURACY` right (every token of
the answer, ``</s>`` included). Needs the ``hub`` extra (keras-hub). About 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import _training
import numpy as np

SEED = 0
MIN_ACCURACY = 0.97
CONFIG = dict(num_layers=2, hidden_dim=64, num_query_heads=4, num_key_value_heads=2,
              intermediate_dim=128, rope_max_wavelength=10000)


def build(vocabulary_size: int):
    import keras_hub

    backbone = keras_hub.models.LlamaBackbone(vocabulary_size=vocabulary_size, **CONFIG)
    return keras_hub.models.LlamaCausalLM(backbone, preprocessor=None)


def answers_right(model, samples) -> float:
    """Share of samples whose whole answer the model produces (teacher-forced argmax equals
    greedy decoding token by token when every earlier answer token is right)."""
    from tf_lrp import retrieval

    b = retrieval.batch(samples)
    logits = model.predict({"token_ids": b["token_ids"], "padding_mask": b["padding_mask"]},
                           batch_size=256, verbose=0)
    right = (np.argmax(logits, -1) == b["labels"]) | (b["weights"] == 0)
    return float(right.all(axis=1).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--per-epoch", type=int, default=8192)
    args = p.parse_args()
    import keras

    from tf_lrp import retrieval

    _training.set_seeds(SEED)
    model = build(len(retrieval.VOCABULARY))
    steps = args.epochs * args.per_epoch // 64
    schedule = keras.optimizers.schedules.CosineDecay(3e-4, steps, warmup_target=3e-3,
                                                      warmup_steps=steps // 20)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[], sampler="greedy")
    held_out = retrieval.make_samples(2000, seed=SEED + 1000)
    start = time.time()
    for epoch in range(args.epochs):
        b = retrieval.batch(retrieval.make_samples(args.per_epoch, seed=SEED + 1 + epoch))
        hist = model.fit({"token_ids": b["token_ids"], "padding_mask": b["padding_mask"]},
                         b["labels"], sample_weight=b["weights"], batch_size=64, epochs=1,
                         verbose=0)
        acc = answers_right(model, held_out)
        print(f"epoch {epoch + 1}: loss {hist.history['loss'][-1]:.4f}, held-out answers "
              f"{acc:.3f} ({time.time() - start:.0f} s)", flush=True)
        if acc >= 0.995:
            break
    acc = {task: answers_right(model, [s for s in held_out if s.task == task])
           for task in ("retrieval", "copy")}
    print("held-out answers right:", acc)
    if min(acc.values()) < MIN_ACCURACY:
        raise SystemExit(f"accuracy {acc} below {MIN_ACCURACY}")
    path = _training.SAVED_MODELS / "lm_retrieval.keras"
    size = _training.save_model(model, path)
    path.with_suffix(".vocab.txt").write_text("\n".join(retrieval.VOCABULARY) + "\n")
    print(f"wrote {path} ({size} bytes) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
