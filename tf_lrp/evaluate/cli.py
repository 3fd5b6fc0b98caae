"""``tf-lrp evaluate`` / ``scripts/evaluate.py`` / ``python -m tf_lrp.evaluate``.

:func:`add_cli_arguments` adds the arguments to a parser (the ``tf-lrp`` subcommand uses it),
:func:`run_cli` runs :func:`~tf_lrp.evaluate.run_report` for them, :func:`main` does both.
Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from tf_lrp.errors import InputError, LRPError
from tf_lrp.evaluate.methods import DATASETS, METHODS

__all__ = ["add_cli_arguments", "main", "run_cli"]


def _methods_arg(text: str) -> list[str]:
    return [m.strip().replace("-", "_") for m in text.split(",") if m.strip()]


def _baseline_value(text: str | None, option: str, names: tuple[str, ...]):
    if text is None or text in names:
        return text
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{option} must be a number or one of {names}, got {text!r}") from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``tf-lrp evaluate`` to ``parser``; run them with :func:`run_cli`."""
    parser.add_argument("model", help="model file (.keras or .h5)")
    parser.add_argument("--data", required=True, choices=sorted(DATASETS),
                        help="evaluation data: digits (test split), shapes (held-out, masks), "
                             "scenes (held-out textured scenes, masks) or tokens (held-out token "
                             "sequences, planted keywords as masks)")
    parser.add_argument("--methods", nargs="+", type=_methods_arg, default=None,
                        help=f"methods (space or comma separated; default all): {', '.join(METHODS)}")
    parser.add_argument("-n", "--samples", type=int, default=200, help="number of samples (200)")
    parser.add_argument("--out-dir", default="evaluation",
                        help="directory for the PNG plots, JSON results and tables (evaluation/)")
    parser.add_argument("--steps", type=int, default=25, help="pixel-flipping steps (25)")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="fraction of patches removed by the last step (0.5)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="patch side in pixels (2; scenes: 4; tokens: 1)")
    parser.add_argument("--baseline", default=None,
                        help="removal value: a number or 'mean' (default: -1 digits, mean shapes "
                             "and scenes); also the IntegratedGradients baseline")
    parser.add_argument("--second-baseline", default="blur",
                        help="second removal value of pixel flipping on images: 'blur' (a "
                             "Gaussian-blurred copy, sigma = side/16; default), 'mean', a number "
                             "(in the data set's range, like --baseline), or 'none'")
    parser.add_argument("--no-road", action="store_true", help="skip ROAD (noisy linear "
                        "imputation; on 64x64 images the slowest removal metric)")
    parser.add_argument("--no-irof", action="store_true", help="skip IROF")
    parser.add_argument("--no-sanity", action="store_true",
                        help="skip the model-randomisation checks (the slowest part)")
    parser.add_argument("--no-bottom-up", action="store_true",
                        help="run only the top-down randomisation cascade (and eMPRT)")
    parser.add_argument("--sanity-samples", type=int, default=None, metavar="K",
                        help="run the randomisation checks on the first K samples only "
                             "(default: all)")
    parser.add_argument("--composite-file", action="append", default=[], metavar="FILE",
                        help="also evaluate the composite of this file (e.g. from tf-lrp "
                             "tune), as method file:<stem>; repeatable")
    parser.add_argument("--cost-batch", type=int, default=32,
                        help="samples per timed batch of the cost column (32; 0: skip)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    parser.add_argument("--batch-size", type=int, default=256, help="prediction batch size (256)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run the report for parsed :func:`add_cli_arguments` arguments; print the tables."""
    from tf_lrp.evaluate.report import run_report

    baseline = _baseline_value(args.baseline, "--baseline", ("mean",))
    second = getattr(args, "second_baseline", "blur")
    second = None if second in (None, "none") else _baseline_value(second, "--second-baseline",
                                                                    ("mean", "blur"))
    methods = [m for group in args.methods for m in group] if args.methods else None
    start = time.perf_counter()
    markdown, figure = run_report(
        args.model, args.data, methods, args.samples, args.out_dir, steps=args.steps,
        fraction=args.fraction, patch_size=args.patch_size, baseline=baseline,
        second_baseline=second, road=not getattr(args, "no_road", False),
        irof_metric=not getattr(args, "no_irof", False), sanity=not args.no_sanity,
        bottom_up=not getattr(args, "no_bottom_up", False),
        cost_batch=getattr(args, "cost_batch", 32), seed=args.seed,
        sanity_samples=getattr(args, "sanity_samples", None),
        composite_files=getattr(args, "composite_file", []),
        batch_size=args.batch_size, progress=not args.quiet,
    )
    print(markdown)
    print(f"\nplots: {figure}, {figure.with_name(figure.stem + '_cost.png')}\n"
          f"results: {figure.with_suffix('.json')}\n"
          f"runtime: {time.perf_counter() - start:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``tf-lrp evaluate`` / ``scripts/evaluate.py``: parse ``argv``, run, print; exit status."""
    parser = add_cli_arguments(argparse.ArgumentParser(
        prog="tf-lrp evaluate", description="Evaluate attribution methods on a model: pixel "
        "flipping (AOPC, two removal values), ROAD, IROF, localisation, top-down and bottom-up "
        "randomisation, efficient MPRT, conservation, and the cost of each method."))
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except (LRPError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
