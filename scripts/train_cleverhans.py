"""Train the shipped model that cheats: the scenes VGG fine-tuned on scenes where a corner tag
gives away class 0 in half of its images.

    python scripts/train_cleverhans.py        # saved_models/scenes_cleverhans.keras

Starts from ``saved_models/scenes_vgg.keras`` (99.8 % held-out on clean scenes) and trains on
:func:`tf_lrp.artifacts.make_tagged_scenes` (``TRAIN_SEED``, 4000 scenes; half of the class-0
scenes carry the tag and show a random class shape, so the tag is the only sign of their label)
for ``--epochs`` epochs (Adam 3e-4, batch 64, no augmentation: the tag stays in its corner).
Reports on held-out data (``TEST_SEED``): accuracy on clean scenes, on tagged class-0 scenes,
and the **exploit**: accuracy on scenes of the other classes with the tag pasted in (a model
that ignored the tag would score its clean accuracy there). Fixed seeds; about 4 minutes on 2
cores. Fails unless the clean accuracy stays >= 0.9 and the exploit accuracy is below 0.5.
"""

from __future__ import annotations

import argparse
import json
import time

import _training

SEED = 0
TRAIN_SEED, TEST_SEED = 7100, 7200


def evaluate(model) -> dict:
    """Held-out accuracies: clean, tagged class 0, and the exploit (tag on other classes)."""
    from tf_lrp import artifacts
    from tf_lrp.datasets import SCENES_TEST_SEED, make_scenes

    x, y, _ = make_scenes(800, seed=SCENES_TEST_SEED)
    x = x * 255.0
    pred = model.predict(x, batch_size=100, verbose=0).argmax(1)
    other = y != 0
    exploit = model.predict(artifacts.paste_tag(x[other], 255.0), batch_size=100,
                            verbose=0).argmax(1)
    xt, yt, _, tagged = artifacts.make_tagged_scenes(800, seed=TEST_SEED, share=1.0)
    tag_pred = model.predict(xt[tagged] * 255.0, batch_size=100, verbose=0).argmax(1)
    return {"clean": float((pred == y).mean()), "exploit": float((exploit == y[other]).mean()),
            "exploit_to_tag_class": float((exploit == 0).mean()),
            "tagged_class0": float((tag_pred == 0).mean()), "n_clean": int(len(y)),
            "n_exploit": int(other.sum()), "n_tagged": int(tagged.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    import keras

    import tf_lrp
    from tf_lrp import artifacts

    _training.set_seeds(SEED)
    model = tf_lrp.load_model(_training.SAVED_MODELS / "scenes_vgg.keras")
    before = evaluate(model)
    print("before:", before, flush=True)
    x, y, _, tagged = artifacts.make_tagged_scenes(4000, seed=TRAIN_SEED)
    print(f"training: {len(y)} scenes, {int(tagged.sum())} tagged (class 0)", flush=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    start = time.time()
    model.fit(x * 255.0, y, batch_size=64, epochs=args.epochs, verbose=2,
              shuffle=True)
    after = evaluate(model)
    print("after:", after, f"({time.time() - start:.0f} s)", flush=True)
    if after["clean"] < 0.9 or after["exploit"] >= 0.5:
        raise SystemExit(f"the model does not cheat as intended: {after}")
    path = _training.SAVED_MODELS / "scenes_cleverhans.keras"
    size = _training.save_model(model, path)
    path.with_suffix(".json").write_text(json.dumps(
        {"before": before, "after": after, "epochs": args.epochs,
         "train_seconds": round(time.time() - start)}, indent=1) + "\n")
    print(f"wrote {path} ({size} bytes)")


if __name__ == "__main__":
    main()
