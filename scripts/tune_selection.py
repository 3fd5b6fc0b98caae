"""What the one-standard-error rule changes in tuning: the digit models, 200 test digits (pixels),
AOPC, budget 24; the argmax winner and the one-SE winner with their test scores.

    python scripts/tune_selection.py
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import tf_lrp
from tf_lrp import datasets, tuning
from tf_lrp.tuning.search import _one_se


def main() -> None:
    warnings.filterwarnings("ignore")
    for name, size in (("digits_mlp", 28), ("digits_lenet", 32)):
        model = tf_lrp.load_model(f"saved_models/{name}.h5")
        x, y = datasets.load_digits(split="test", size=size)
        x, y = (np.asarray(x[:200]) + 1) * 127.5, np.asarray(y[:200])
        start = time.time()
        r = tuning.tune(model, x, y, budget=24, low=0.0, high=255.0, selection="argmax")
        presets = [t for t in r.trials if t.name != "search" and np.isfinite(t.score)]
        chosen = _one_se(r.best, presets) if r.best.name == "search" else r.best
        test = r.presets.get(chosen.name, (r.test_score, r.test_se))
        print(f"{name} ({time.time() - start:.0f} s): argmax trial {r.best.index} "
              f"({r.best.name}, validation {r.best.score:.4f}), test {r.test_score:.4f} ± "
              f"{r.test_se:.4f} | one_se: trial {chosen.index} ({chosen.name}), test "
              f"{test[0]:.4f} ± {test[1]:.4f}", flush=True)


if __name__ == "__main__":
    main()
