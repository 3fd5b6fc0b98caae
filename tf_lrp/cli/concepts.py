"""``tf-lrp concepts``: the top concepts of a layer per input, drawn (Concept Relevance
Propagation).

::

    tf-lrp concepts MODEL INPUT... --layer NAME --out DIR [--top 5] [--target C]
                    [--atlas ATLAS [--reference DATA...]]

For every input sample, ``DIR/<name>.png`` shows the input and its heatmap, then the ``--top``
most relevant channels of ``--layer`` (largest concept relevance), each with its conditional
heatmap and, with ``--atlas``, its reference crops from a concept atlas
(:func:`tf_lrp.concepts.build_atlas`); ``DIR/concepts.csv`` lists the concepts with their
relevance and share. ``--reference DATA...`` builds the atlas in ``ATLAS`` from those inputs
first (or continues it: the atlas is resumable; a finished one is reused as it is). Atlas
references are ranked for each reference sample's own predicted class.

Inputs are read as ``tf-lrp explain`` reads them (image files, ``.npy`` samples or batches,
directories, globs, ``@LIST`` files; ``--scale``). Exit codes: 0 all inputs drawn, 1 some
skipped (reported), 2 usage error or a model or layer that cannot be explained.

The command is two functions, :func:`add_parser` and :func:`run`, so the ``tf-lrp`` parser
can wire it in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tf_lrp.cli.common import (
    AUTO_SCALE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COMPOSITE,
    EXIT_OK,
    EXIT_SKIPPED,
    SCALES,
    UsageError,
    engine,
    error,
    guarded,
    int_at_least,
    note,
    positive_int,
)

CSV_NAME = "concepts.csv"
#: Columns of ``concepts.csv``: one row per sample and concept.
CSV_COLUMNS = ("input", "explained_class", "logit", "layer", "rank", "channel", "relevance",
               "share")

_EPILOG = """\
examples:
  tf-lrp concepts saved_models/shapes_resnet.keras examples/shapes --layer block3_conv \\
      --out concepts --composite epsilon_gamma_box
  tf-lrp concepts saved_models/shapes_resnet.keras examples/shapes_32.npy --layer block3_conv \\
      --out concepts --atlas atlas --reference reference_images/ --top 3

outputs (in --out DIR): <name>.png per input sample, concepts.csv
  (input,explained_class,logit,layer,rank,channel,relevance,share)
"""


_class_index = int_at_least(0, "a class index (integer >= 0)")


def _param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key.strip():
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected key=value with a number, e.g. gamma=0.5; got {text!r}") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``concepts`` command to ``subparsers`` (from ``add_subparsers``); return it."""
    p = subparsers.add_parser(
        "concepts", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        help="draw the top concepts (channels) of a layer per input, with reference samples",
        description="Concept Relevance Propagation: per input, the most relevant channels of a "
                    "layer, their conditional heatmaps and reference crops from an atlas.")
    p.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, .npy arrays, directories, globs or @LIST files")
    p.add_argument("--layer", required=True, metavar="NAME",
                   help="the layer whose channels are the concepts (e.g. the last convolution)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--top", type=positive_int, default=5, metavar="K",
                   help="concepts per input (default 5)")
    p.add_argument("--target", type=_class_index, metavar="C",
                   help="explain class C (default: the predicted class)")
    p.add_argument("--atlas", metavar="DIR",
                   help="a concept atlas (tf_lrp.concepts.build_atlas) for reference crops")
    p.add_argument("--reference", action="append", default=[], metavar="DATA",
                   help="build (or continue) the --atlas from these inputs first (repeatable)")
    p.add_argument("--reference-top", type=positive_int, default=8, metavar="N",
                   help="reference samples kept per channel when building the atlas (default 8)")
    p.add_argument("--refs", type=int, default=4, metavar="N",
                   help="reference crops drawn per concept (default 4)")
    p.add_argument("--composite", default=DEFAULT_COMPOSITE, metavar="NAME",
                   help=f"composite or rule name (default {DEFAULT_COMPOSITE})")
    p.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="a numeric parameter of the composite (repeatable)")
    p.add_argument("--scale", choices=[AUTO_SCALE, *SCALES], default=AUTO_SCALE,
                   metavar="RANGE", help="the input range of image files, as for tf-lrp explain")
    p.add_argument("--output", dest="model_output", metavar="INDEX|NAME",
                   help="which output of a multi-output model to explain")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"samples per step (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--allow-lambda", action="store_true",
                   help="load Lambda layers (runs code stored in the file: trusted files only)")
    p.add_argument("-q", "--quiet", action="store_true", help="no notes or summary line")
    p.set_defaults(handler=run, command="concepts", rules=[])
    return p


def _run(args: argparse.Namespace) -> int:
    if args.reference and not args.atlas:
        raise UsageError("--reference builds an atlas: give its directory with --atlas DIR")
    if args.refs < 0:
        raise UsageError(f"--refs must be >= 0, got {args.refs}")
    for name, value in (("rules", []), ("model_output", None), ("allow_lambda", False),
                        ("quiet", False), ("param", []), ("batch_size", DEFAULT_BATCH_SIZE)):
        if not hasattr(args, name):
            setattr(args, name, value)
    tf_lrp = engine()
    from tf_lrp import concepts
    from tf_lrp.cli.modelsetup import build_analyzer, setup_model
    from tf_lrp.errors import InputError
    from tf_lrp.runs.inputs import InputSpec, decoded_batches
    from tf_lrp.runs.outputs import atomic_write, csv_text

    analyzer, _, setup = build_analyzer(tf_lrp, args, setup=setup_model(tf_lrp, args))
    setup.report_range(args.quiet)
    if len(analyzer.graph.input_shapes) != 1:
        raise UsageError(f"the model has {len(analyzer.graph.input_shapes)} inputs; tf-lrp "
                         "concepts handles single-input models (use tf_lrp.concepts from Python)")
    layer = concepts.conditions.condition_node(analyzer.graph, args.layer).name
    spec = InputSpec(tuple(analyzer.graph.input_shapes[0]))
    scale = SCALES[args.scale]
    problems: list[tuple[str, str]] = []
    atlas = None
    if args.reference:
        try:
            atlas = concepts.build_atlas(
                analyzer, (x for _, x in decoded_batches(args.reference, spec, scale,
                                                         args.batch_size, problems)),
                [layer], args.atlas, top_n=args.reference_top)
        except InputError as err:
            if "resume=False" not in str(err):
                raise
            raise UsageError(f"{err}. From the command line: remove {args.atlas} or pass "
                             "another --atlas to build a new one") from None
        note(f"atlas {args.atlas}: {atlas.samples} reference samples ({atlas.run['computed']} "
             f"batches computed, {atlas.run['skipped']} already done)", args.quiet)
    elif args.atlas:
        atlas = concepts.Atlas(args.atlas)
        atlas.layer_name(layer)  # fails early, naming the layers it has
    references = len(problems)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, drawn = [], 0
    for names, x in decoded_batches(args.inputs, spec, scale, args.batch_size, problems):
        _, ex = concepts.concept_figures(
            analyzer, x, layer, out, target=args.target, top=args.top, atlas=atlas,
            refs=args.refs, names=names, input_range=scale)
        for i, name in enumerate(names):
            rows += [(name, int(ex.target[i]), f"{ex.logit[i]:.6g}", layer, j + 1,
                      int(ex.channels[i, j]), f"{ex.relevance[i, j]:.6g}",
                      f"{ex.share[i, j]:.6g}") for j in range(ex.channels.shape[1])]
        drawn += len(names)
    for label, reason in problems:
        error(f"{label}: {reason}; skipped")
    atomic_write(out / CSV_NAME, lambda f: f.write(csv_text(CSV_COLUMNS, rows).encode()))
    if not args.quiet:
        print(f"tf-lrp: {drawn} inputs drawn, {len(problems) - references} skipped; figures "
              f"and {CSV_NAME} in {out}")
    return EXIT_SKIPPED if problems else EXIT_OK


#: Run ``tf-lrp concepts``; return the exit code (errors are printed, exit 2).
run = guarded(_run)
