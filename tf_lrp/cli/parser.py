"""Argument parsing of ``tf-lrp``: the parser, its argument types and :func:`main`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from tf_lrp.cli.common import (
    AUTO_SCALE,
    AUTO_ZOOM_PIXELS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_COMPOSITE,
    DEFAULT_SCALE,
    DEFAULT_SHARD_SIZE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    SCALES,
    UsageError,
    error,
    int_at_least,
    positive_int,
)
from tf_lrp.cli.modelsetup import rule_classes, rule_signature

_EPILOG_EXPLAIN = """\
examples:
  tf-lrp explain saved_models/digits_mlp.h5 examples/digits --out heatmaps
  tf-lrp explain saved_models/digits_lenet.h5 examples/digits_32.npy --out lenet \\
      --composite epsilon_gamma_box --target 3
  tf-lrp explain saved_models/shapes_resnet.keras examples/shapes --out shapes \\
      --composite epsilon_gamma_box --param gamma=0.5 --rule block1_conv=flat
  tf-lrp explain model.keras photos/ --out out --scale 0_1   # a model trained on [0, 1]
  tf-lrp explain model.keras photos/ --out out --resume      # continue an interrupted run
  tf-lrp explain model.keras 'store/**/*.jpg' @more.txt --out out --format shards
  tf-lrp explain model.keras store/ --out out --format shards --devices all   # every GPU
  tf-lrp explain model.keras /shared/store --out /shared/out --format shards --ray auto
  tf-lrp explain model.keras photos/ --out out --composite-file tuned.json  # 'tf-lrp tune'

inputs: image files, .npy arrays (one sample or a batch), directories (walked recursively,
  sorted by name), globs ('**' recursive; quote them) and @LIST files (one path per line,
  relative to the list's directory). They are read lazily: any number of inputs.

outputs (in --out DIR):
  <name>.npy    relevance, float32, the shape of one input sample
  <name>.png    heatmap (red positive, blue negative); for images, an overlay beside it
  summary.csv   input,predicted_class,explained_class,logit,relevance_sum
  skipped.csv   input,reason (only when inputs were skipped)
with --format shards instead:
  shards/shard-NNNNNN.npy  relevance of --shard-size samples, float32 (n, *sample shape)
  index.csv     input,shard,row,predicted_class,explained_class,logit,relevance_sum
    (pandas.read_csv(DIR/index.csv); np.load(DIR/shard, mmap_mode="r")[row])

image preprocessing: convert to the model's channel count, resize (bilinear) to its input
size, map 0..255 linearly to the input range: with --scale auto (default) 0..255 as they are
if the model starts with a Rescaling or Normalization layer, else [-1, 1] (with a warning).
.npy inputs are used as they are.
rules: --rule KEY=RULE[:param=value,...], KEY a layer class or layer name (repeatable), e.g.
  --rule Multiply=uniform_product --rule conv1=flat --rule Dense=epsilon:epsilon=0.1
writes are atomic and durable per batch (shards: per shard); --resume continues an
interrupted or killed run (per sample, or per shard), with the same inputs and options.
exit codes: 0 ok, 1 some inputs skipped (reported on stderr and in skipped.csv), 2 usage or
  model error, 130 interrupted.
"""

_EPILOG_INFO = """\
examples:
  tf-lrp info saved_models/digits_lenet.h5
  tf-lrp info saved_models/shapes_resnet.keras --composite epsilon_gamma_box
  tf-lrp info model.keras --rule MyLayer=pass --rule Dense=epsilon:epsilon=0.1

Lists the model's canonized nodes (BatchNormalization folded into the layer before it,
activations split off, a final softmax stripped), the rule each gets and the input range.
If no rule fits some layers, every layer is still listed, those are flagged UNSUPPORTED with
the reason, the fix (--rule CLASS=RULE) is printed and the exit code is 2.
"""

_EPILOG_COMPOSITES = """\
examples:
  tf-lrp composites
  tf-lrp explain model.h5 x.npy --out out --composite epsilon_gamma_box --param gamma=0.5

A rule name works as a composite too: that rule for every layer with weights.
A composite file (JSON: tf_lrp.composites.save, 'tf-lrp tune') is given with
--composite-file FILE.json instead of --composite.
--rule KEY=RULE[:param=value,...] gives one layer class or named layer another rule.
"""



_positive_int = positive_int


def _devices(text: str) -> str:
    if text.strip().lower() == "all":
        return "all"
    return str(_positive_int(text))
_class_index = int_at_least(0, "a class index (integer >= 0)")


def _param(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, e.g. gamma=0.5; got {text!r}")
    try:
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the value of {key.strip()!r} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class RuleOption:
    """One ``--rule KEY=RULE[:param=value,...]``: parsed and checked, built later (:func:`_overrides`)."""

    key: str
    rule: str
    params: tuple[tuple[str, float | bool], ...]
    text: str


_RULE_SYNTAX = ("expected CLASS_OR_LAYER_NAME=RULE[:param=value[,param=value]], e.g. "
                "Dense=epsilon:epsilon=0.1, conv1=flat or MyLayer=pass")


def _rule_value(text: str) -> float | bool:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return float(text)


def _rule_option(text: str) -> RuleOption:
    """An argparse type: ``KEY=RULE[:param=value,...]`` with a known rule and valid parameters."""
    key, sep, spec = text.partition("=")
    name, _, params_text = spec.partition(":")
    key, name = key.strip(), name.strip().replace("-", "_").lower()
    if not sep or not key or not name:
        raise argparse.ArgumentTypeError(f"{_RULE_SYNTAX}; got {text!r}")
    params: dict[str, float | bool] = {}
    for item in params_text.split(",") if params_text.strip() else []:
        param, sep, value = item.partition("=")
        if not sep or not param.strip():
            raise argparse.ArgumentTypeError(f"bad parameter {item!r} in {text!r}: {_RULE_SYNTAX}")
        try:
            params[param.strip()] = _rule_value(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"the value of {param.strip()!r} in {text!r} must be a number (or true/false), "
                f"got {value!r}") from None
    classes = rule_classes()
    if name not in classes:
        raise argparse.ArgumentTypeError(
            f"unknown rule {name!r} in {text!r}; rules: {', '.join(sorted(classes))} "
            "(see 'tf-lrp composites')")
    try:
        classes[name](**params)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(
            f"bad parameters for rule {name!r} in {text!r} ({err}); its parameters: "
            f"{rule_signature(classes[name])}") from None
    return RuleOption(key, name, tuple(params.items()), text)


def _cmd_explain(args) -> int:
    from tf_lrp.cli.explain import cmd_explain

    return cmd_explain(args)


def _cmd_info(args) -> int:
    from tf_lrp.cli.info import cmd_info

    return cmd_info(args)


def _cmd_composites(args) -> int:
    from tf_lrp.cli.composites import cmd_composites

    return cmd_composites(args)


def _cmd_evaluate(args) -> int:
    from tf_lrp.cli.common import engine

    engine()
    from tf_lrp import evaluate

    return evaluate.run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    """The ``tf-lrp`` argument parser (``explain``, ``composites``, ``info``, ``concepts``,
    ``evaluate``, ``tune``)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tf-lrp", formatter_class=fmt,
        description="Layer-wise Relevance Propagation for Keras 3 models.",
        epilog="run 'tf-lrp COMMAND --help' for the options and examples of a command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_opts = argparse.ArgumentParser(add_help=False)
    model_opts.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    which = model_opts.add_mutually_exclusive_group()
    which.add_argument(
        "--composite", default=None, metavar="NAME",
        help=f"composite or rule name (see 'tf-lrp composites'; default {DEFAULT_COMPOSITE})",
    )
    which.add_argument(
        "--composite-file", default=None, metavar="FILE.json",
        help="a composite file (JSON, e.g. written by 'tf-lrp tune' or "
             "tf_lrp.composites.save) instead of --composite",
    )
    model_opts.add_argument(
        "--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
        help="a numeric parameter of the composite, e.g. gamma=0.5 (repeatable); low/high of "
             "composites with bounds default to the input range",
    )
    model_opts.add_argument(
        "--rule", dest="rules", action="append", type=_rule_option, default=[],
        metavar="KEY=RULE[:P=V,...]",
        help="give the layers of class KEY, or the layer named KEY, the rule RULE with "
             "parameters P=V (repeatable; checked before the composite), e.g. "
             "Multiply=uniform_product, conv1=flat, Dense=epsilon:epsilon=0.1, MyLayer=pass",
    )
    model_opts.add_argument(
        "--scale", "--preprocess", dest="scale", choices=[AUTO_SCALE, *SCALES],
        default=DEFAULT_SCALE, metavar="RANGE",
        help=f"{', '.join([AUTO_SCALE, *SCALES])}: the input range image pixels 0..255 are "
             f"mapped to, also the default input bounds low/high. {AUTO_SCALE} (default): "
             "0..255 as they are if the model starts with a Rescaling or Normalization layer, "
             "else [-1, 1] with a warning",
    )
    model_opts.add_argument(
        "--output", dest="model_output", metavar="INDEX|NAME",
        help="which output of a multi-output model to explain",
    )
    model_opts.add_argument(
        "--allow-lambda", action="store_true",
        help="load Lambda layers (runs Python code stored in the file: trusted files only)",
    )
    model_opts.add_argument("-q", "--quiet", action="store_true",
                            help="no progress bar, notes or final summary line")

    explain = sub.add_parser(
        "explain", parents=[model_opts], formatter_class=fmt, epilog=_EPILOG_EXPLAIN,
        help="explain inputs, write heatmaps and relevance (per sample or in shards)",
        description="Explain inputs with LRP: one .png and one .npy per sample and a summary.csv, "
                    "or relevance shards and an index.csv (--format shards).",
    )
    explain.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files, .npy arrays, directories (recursive), globs, or "
                              "@LIST files of paths")
    explain.add_argument("--out", required=True, metavar="DIR", help="output directory")
    explain.add_argument("--target", type=_class_index, metavar="N",
                         help="explain class N for every input (default: the predicted class)")
    explain.add_argument("--start", choices=("output", "logodds", "all"), default="output",
                         help="relevance at the output: the class logit (default), its "
                              "log-odds, or all outputs at once")
    explain.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                         metavar="N", help=f"samples per step (default {DEFAULT_BATCH_SIZE})")
    explain.add_argument("--zoom", type=_positive_int, metavar="N",
                         help="enlarge the PNGs N times (default: up to about "
                              f"{AUTO_ZOOM_PIXELS} pixels)")
    explain.add_argument("--resume", action="store_true",
                         help="continue a run in DIR: skip samples whose files exist (shards: "
                              "shards that are complete)")
    explain.add_argument("--format", default=None, metavar="png,npy|shards",
                         help="per-sample files (png,npy, the default; or only png or npy; "
                              "token models: png,npy,csv,html by default), or shards: "
                              "relevance in .npy shards plus index.csv")
    explain.add_argument("--vocab", metavar="FILE", default=None,
                         help="token models: a vocabulary file, line i = token id i, to print "
                              "tokens in the .csv, .html and .png outputs")
    explain.add_argument("--shard-size", type=_positive_int, default=DEFAULT_SHARD_SIZE,
                         metavar="N", help=f"samples per shard (default {DEFAULT_SHARD_SIZE})")
    explain.add_argument("--devices", metavar="all|N", type=_devices,
                         help="split each batch over every device (all) or the first N: GPUs, "
                              "or logical CPU devices where there is no GPU "
                              "(tf.distribute.MirroredStrategy)")
    explain.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                         help="run on a Ray cluster: 'auto' (the cluster this machine belongs "
                              "to), ray://host:10001 or host:6379; without ADDRESS a local Ray "
                              "instance. Needs pip install 'tf_lrp[ray]'")
    explain.add_argument("--ray-actors", type=_positive_int, metavar="N",
                         help="with --ray: a fixed pool of N explaining actors (default: "
                              "autoscaling from 1 to what the cluster offers)")
    explain.add_argument("--ray-gpus", type=float, default=0.0, metavar="G",
                         help="with --ray: GPUs per actor (e.g. 1, or 0.5 to share a GPU)")
    explain.set_defaults(handler=_cmd_explain)

    info = sub.add_parser(
        "info", parents=[model_opts], formatter_class=fmt, epilog=_EPILOG_INFO,
        help="list the model's layers and the rule each gets",
        description="List the model's canonized layers and the LRP rule each gets.",
    )
    info.set_defaults(handler=_cmd_info)

    composites = sub.add_parser(
        "composites", formatter_class=fmt, epilog=_EPILOG_COMPOSITES,
        help="list the registered composites and rules with their parameters",
        description="List the registered composites and rules with their parameters.",
    )
    composites.set_defaults(handler=_cmd_composites, quiet=False)

    from tf_lrp import evaluate as evaluation  # numpy only at import time
    from tf_lrp.cli import concepts as concepts_command
    from tf_lrp.cli import generate as generate_command
    from tf_lrp.cli import prune as prune_command
    from tf_lrp.cli import spray as spray_command
    from tf_lrp.cli import tune as tune_command

    concepts_command.add_parser(sub)
    generate_command.add_parser(sub)
    prune_command.add_parser(sub)
    spray_command.add_parser(sub)
    tune_command.add_parser(sub)
    evaluate = sub.add_parser(
        "evaluate", formatter_class=fmt,
        help="score attribution methods: pixel flipping, ROAD, IROF, localisation, sanity "
             "checks, conservation, cost",
        description="Evaluate attribution methods on a model and print method x metric tables: "
                    "pixel flipping (AOPC, two removal values), ROAD, IROF, localisation (shapes, "
                    "scenes, tokens), top-down and bottom-up randomisation, efficient MPRT, "
                    "conservation, and each method's cost in milliseconds and in gradients; the "
                    "curves and the quality-against-cost plot are saved as PNGs.",
        epilog="example:\n  tf-lrp evaluate saved_models/shapes_resnet.keras --data shapes "
               "--methods epsilon_plus,gradient -n 200",
    )
    evaluation.add_cli_arguments(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tf-lrp`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    import sys

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        error("interrupted" + ("; run again with --resume to continue"
                               if args.command == "explain" else ""))
        return EXIT_INTERRUPTED
    except Exception as err:
        errors = sys.modules.get("tf_lrp.errors")
        if isinstance(err, UsageError) or (errors and isinstance(err, errors.LRPError)):
            error(str(err))
            return EXIT_ERROR
        raise
