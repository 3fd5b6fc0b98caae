"""Evaluate attribution methods on a shipped model; same as ``tf-lrp evaluate``.

    python scripts/evaluate.py saved_models/shapes_resnet.keras --data shapes --out-dir benchmarks
    python scripts/evaluate.py saved_models/digits_lenet.h5 --data digits --methods lrp0 gradient

    python scripts/evaluate.py MODEL.keras --data scenes --no-road -n 100   # 64x64 scenes

Prints two tables (method x metric, mean +- standard error over the samples, each with the
cost in milliseconds per explanation and in gradients) and writes ``quality_<model>_<data>.png``
(pixel-flipping, ROAD and randomisation curves), ``_cost.png`` (each headline metric against the
cost), ``.json`` (all numbers) and ``.md`` (the tables) to ``--out-dir``. See
:mod:`tf_lrp.evaluate` for the metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tf_lrp.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
