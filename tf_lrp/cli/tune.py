"""``tf-lrp tune``: search composite parameters on a validation split, score the winner and the
presets on a disjoint test split, and save the winner as a composite file.

::

    tf-lrp tune MODEL --data digits|shapes|scenes|tokens|FILE.npz --metric aopc|road|mass \\
        --budget 20 --out tuned.json [-n 200] [--seed 0] [--validation 0.5]
    tf-lrp explain MODEL INPUT... --out DIR --composite-file tuned.json

The search is :func:`tf_lrp.tuning.tune`; this module loads the model and the data and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tf_lrp.cli.common import EXIT_OK, UsageError, engine, note, positive_int

_EPILOG = """\
examples:
  tf-lrp tune saved_models/digits_lenet.h5 --data digits --metric aopc --budget 20 \\
      --out lenet_tuned.json
  tf-lrp tune saved_models/shapes_resnet.keras --data shapes --metric mass --out tuned.json
  tf-lrp tune model.keras --data samples.npz --low 0 --high 1 --out tuned.json
  tf-lrp explain saved_models/digits_lenet.h5 examples/digits --out heatmaps \\
      --composite-file lenet_tuned.json

data: a data set of 'tf-lrp evaluate' (its held-out samples, mapped into the model's input
  space as there; bounds and removal value from the data set), or an .npz file with 'x'
  (inputs in the model's input space), optional 'y' (classes to explain; default: the
  predicted ones) and 'masks' (for --metric mass).
search: the presets first (--presets), then random points: epsilon on Dense layers
  (1e-6..1), the convolutions' rule (gamma per third of the convolutions, z+, alpha2-beta1,
  alpha1-beta0) and the first layer's rule (z^B, flat, w^2 or as its block). Every trial is
  scored on the validation split; the winner and the presets are then scored on the test
  split, which the search never sees. The winner is written as a composite file (JSON), with
  its scores and the settings under "meta".
"""


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1), e.g. 0.5; got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [n.strip().replace("-", "_").lower() for n in text.split(",") if n.strip()]


#: :data:`tf_lrp.tuning.METRICS`, spelled out so that building the parser (``tf-lrp --help``)
#: does not import TensorFlow.
METRICS = ("aopc", "road", "mass")


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``tf-lrp tune`` to the subparsers ``sub``."""
    p = sub.add_parser(
        "tune", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        help="search composite parameters on validation data; save the best as a composite file",
        description="Search LRP composite parameters with a metric of explanation quality on a "
                    "validation split, report the winner against the presets on a disjoint test "
                    "split, and save it as a composite file (for --composite-file).")
    p.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    p.add_argument("--data", required=True, metavar="NAME|FILE.npz",
                   help="a data set of 'tf-lrp evaluate' (digits, shapes, scenes, tokens) or an "
                        ".npz with x, optional y and masks")
    p.add_argument("--metric", choices=METRICS, default="aopc",
                   help="aopc (pixel flipping, default), road, or mass (relevance mass accuracy; "
                        "needs masks)")
    p.add_argument("--budget", type=positive_int, default=20, metavar="N",
                   help="trials, the presets included (default 20)")
    p.add_argument("--out", required=True, metavar="FILE.json",
                   help="the composite file to write")
    p.add_argument("-n", "--n", "--samples", dest="n", type=positive_int, default=200,
                   metavar="N", help="samples, split into validation and test (default 200)")
    p.add_argument("--validation", type=_share, default=0.5, metavar="SHARE",
                   help="the share of samples for validation (default 0.5); the rest is the "
                        "test split")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the split, the search and the metric (default 0)")
    p.add_argument("--presets", type=_names, default=None, metavar="A,B,...",
                   help="composites tried first (default: epsilon_plus, epsilon_gamma_box, "
                        "epsilon_alpha2_beta1, epsilon_plus_flat, deep_taylor; token models: "
                        "attn_lrp, cp_lrp)")
    p.add_argument("--low", type=float, default=None,
                   help="input bounds of z^B in the model's input space (default: the data "
                        "set's; .npz: the validation split's smallest value)")
    p.add_argument("--high", type=float, default=None, help="see --low")
    p.add_argument("--baseline", default=None, metavar="VALUE|mean",
                   help="aopc: the removal value (default: the data set's; .npz: 0)")
    p.add_argument("--patch-size", type=positive_int, default=None, metavar="N",
                   help="aopc: patch side (default: the data set's; .npz: 2 for images, else 1)")
    p.add_argument("--steps", type=positive_int, default=25, help="aopc: steps (default 25)")
    p.add_argument("--fraction", type=float, default=0.5,
                   help="aopc: share of patches removed by the last step (default 0.5)")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="N",
                   help="largest batch of the metric's predictions (default 256)")
    p.add_argument("--allow-lambda", action="store_true",
                   help="load Lambda layers (runs code stored in the file: trusted files only)")
    p.add_argument("--selection", choices=["one_se", "argmax"], default="one_se",
                   help="one_se (default): a searched winner must lead the best preset by more "
                        "than one paired standard error; argmax: the best validation mean")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=cmd_tune, command="tune")
    return p


@dataclass
class Data:
    """Samples to tune on and what the data set says about them (``None``: the defaults)."""

    x: Any
    y: Any
    masks: Any
    low: float | None
    high: float | None
    baseline: float | str | None
    patch_size: int | None
    text: str


def load_data(data: str, model, n: int) -> Data:
    """``n`` samples of a data set of ``tf-lrp evaluate`` (as it loads them), or of an .npz."""
    import numpy as np

    from tf_lrp.evaluate import DATASETS

    path = Path(data)
    if data in DATASETS and not path.exists():
        from tf_lrp.evaluate import methods

        x, y, masks = methods.load_data(data, model, n)
        setting, x = methods.to_model_input(DATASETS[data], x, model)
        bounded = getattr(setting, "images", True)
        return Data(x, y, masks, setting.low if bounded else None,
                    setting.high if bounded else None, setting.baseline,
                    setting.patch_size, f"{data} (held-out, {len(x)} samples)")
    if path.suffix.lower() != ".npz":
        raise UsageError(f"--data {data}: expected a data set ({', '.join(sorted(DATASETS))}) or "
                         "an .npz file with x (and optional y, masks)")
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as err:
        raise UsageError(f"--data {data}: cannot be read ({err})") from None
    if "x" not in arrays:
        raise UsageError(f"--data {data}: no array 'x' (it has {', '.join(arrays) or 'none'})")
    x = arrays["x"][:n]
    return Data(x, arrays["y"][:n] if "y" in arrays else None,
                arrays["masks"][:n] if "masks" in arrays else None, None, None, None, None,
                f"{path.name} ({len(x)} samples)")


def _baseline(text: str | None):
    if text is None or text == "mean":
        return text
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--baseline must be a number or 'mean', got {text!r}") from None


def cmd_tune(args) -> int:
    """Run ``tf-lrp tune``; return the exit code."""
    baseline = _baseline(args.baseline)
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise UsageError(f"--out {args.out}: a composite file is JSON; name it *.json")
    if (args.low is None) != (args.high is None):
        raise UsageError("give both --low and --high, or neither")
    tf_lrp = engine()
    from tf_lrp import tuning
    from tf_lrp.tuning.search import file_sha256

    model = tf_lrp.load_model(args.model, safe_mode=not args.allow_lambda)
    data = load_data(args.data, model, args.n)
    low = args.low if args.low is not None else data.low
    high = args.high if args.high is not None else data.high
    note(f"tuning on {data.text}: metric {args.metric}, budget {args.budget}, validation "
         f"share {args.validation:g}, seed {args.seed}", args.quiet)

    def progress(trial) -> None:
        if args.quiet:
            return
        value = f"{trial.score:.4f} ± {trial.se:.4f}" if trial.error is None else \
            f"failed ({trial.error})"
        params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial.params.items())
        print(f"trial {trial.index}/{args.budget} {trial.name:<22} {args.metric} {value}"
              f"  ({trial.seconds:.1f} s)  {params}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    result = tuning.tune(
        model, data.x, data.y, masks=data.masks, metric=args.metric, budget=args.budget,
        validation=args.validation, seed=args.seed, low=low, high=high,
        presets=args.presets, baseline=baseline if baseline is not None else
        (data.baseline if data.baseline is not None else 0.0),
        patch_size=args.patch_size or data.patch_size, steps=args.steps,
        fraction=args.fraction, batch_size=args.batch_size, on_trial=progress,
        meta={"model": Path(args.model).name, "model_sha256": file_sha256(args.model),
              "data": args.data}, selection=args.selection)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    print(result.report())
    print(f"wrote {out} ({time.perf_counter() - start:.0f} s); use it with "
          f"'tf-lrp explain {args.model} INPUT... --composite-file {out}'")
    return EXIT_OK
