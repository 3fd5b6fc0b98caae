"""``tf-lrp prune``: a smaller model without the convolution filters that matter least.

::

    tf-lrp prune MODEL --data INPUT... --ratio 0.5 [--criterion lrp] [--composite NAME]
                 --out SMALL.keras

Ranks the prunable filters on the reference inputs (read as ``tf-lrp explain`` reads them:
``.npy`` batches, image files, directories) by the criterion (:mod:`tf_lrp.prune`: ``lrp``,
``weight``, ``gradient``, ``taylor``; each input's predicted class is explained), removes the
lowest ``--ratio`` of them and saves the smaller model (written to a temporary file and moved
into place). Exit codes: 0 saved, 2 usage error or a model that cannot be pruned.
"""

from __future__ import annotations

import argparse

from tf_lrp.cli.common import (
    AUTO_SCALE,
    EXIT_OK,
    SCALES,
    UsageError,
    guarded,
    note,
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``prune`` command to ``subparsers``; return it."""
    from tf_lrp.prune import CRITERIA

    p = subparsers.add_parser(
        "prune", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="remove the least relevant convolution filters (pruning by explaining)",
        description="Rank convolution filters by their relevance (or weight, gradient, "
                    "Taylor) on reference inputs and save a model without the lowest ones.",
        epilog="example:\n  tf-lrp prune saved_models/scenes_vgg.keras --data refs.npy "
               "--ratio 0.3 --out vgg_small.keras")
    p.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    p.add_argument("--data", nargs="+", required=True, metavar="INPUT",
                   help="reference inputs (.npy, image files, directories)")
    p.add_argument("--ratio", type=float, required=True,
                   help="share of the prunable filters to remove, in [0, 1)")
    p.add_argument("--criterion", choices=CRITERIA, default="lrp")
    p.add_argument("--composite", default="epsilon_plus", metavar="NAME",
                   help="LRP composite for --criterion lrp (default epsilon_plus)")
    p.add_argument("--scale", choices=[AUTO_SCALE, *SCALES], default=AUTO_SCALE,
                   metavar="RANGE", help="the input range of image files, as for tf-lrp explain")
    p.add_argument("--out", required=True, metavar="FILE", help="the pruned model (.keras)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(handler=run, command="prune")
    return p


def _run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    import numpy as np

    from tf_lrp import canonizers, prune
    from tf_lrp.cli.modelsetup import resolve_scale
    from tf_lrp.graph import build_graph
    from tf_lrp.io import load_model
    from tf_lrp.runs.inputs import InputSpec, decoded_batches

    if not 0.0 <= args.ratio < 1.0:
        raise UsageError(f"--ratio must be in [0, 1), got {args.ratio}")
    if not str(args.out).endswith(".keras"):
        raise UsageError(f"--out must name a .keras file, got {args.out!r}")
    model = load_model(args.model)
    spec = InputSpec(tuple(model.inputs[0].shape[1:]))
    # image files are scaled as tf-lrp explain scales them (--scale auto: from the model's
    # preprocessing layers)
    scale = resolve_scale(args, canonizers.canonize(build_graph(model)))[0]
    problems: list = []
    batches = [x for _, x in decoded_batches(args.data, spec, SCALES[scale], 256, problems)]
    if problems:
        raise UsageError(f"{len(problems)} reference input(s) could not be read: {problems[:3]}")
    if not batches:
        raise UsageError("no reference inputs")
    x = np.concatenate(batches)
    small = prune.prune(model, x, ratio=args.ratio, criterion=args.criterion,
                        composite=args.composite)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.keras")
    small.save(tmp)
    os.replace(tmp, out)
    note(f"{args.criterion}: {model.count_params():,} -> {small.count_params():,} parameters "
         f"({len(x)} reference inputs); wrote {out}", args.quiet)
    return EXIT_OK


#: Run ``tf-lrp prune``; return the exit code (errors are printed, exit 2).
run = guarded(_run)
