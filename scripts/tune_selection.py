"""What the one-standard-error rule changes in tuning: the digit models, 200 test digits (pixels),
AOPC, budget 24; the argmax winner and the one-SE winner with their test scores.

    python scripts/tune_selection.py
"""
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
import tf_lrp
from tf_lrp import datasets, tuning

for name, data in [("digits_mlp", "digits"), ("digits_lenet", "digits")]:
    m = tf_lrp.load_model(f"saved_models/{name}.h5")
    size = 28 if name == "digits_mlp" else 32
    x, y = datasets.load_digits(split="test", size=size) if "size" in datasets.load_digits.__code__.co_varnames else datasets.load_digits(split="test")
    x = (np.asarray(x[:200]) + 1) * 127.5; y = np.asarray(y[:200])
    t = time.time()
    r = tuning.tune(m, x, y, budget=24, low=0.0, high=255.0, selection="argmax")
    from tf_lrp.tuning.search import _one_se
    sel = _one_se(r.best, [tr for tr in r.trials if tr.name != "search" and np.isfinite(tr.score)]) if r.best.name == "search" else r.best
    print(name, f"{time.time()-t:.0f}s", "argmax:", r.best.index, r.best.name, round(r.best.score,4), "test", round(r.test_score,4), "+-", round(r.test_se,4),
          "| one_se:", sel.index, sel.name, "test", r.presets.get(sel.name, (r.test_score, r.test_se)), flush=True)
