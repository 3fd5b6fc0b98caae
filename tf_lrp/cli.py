"""The ``tf-lrp`` command: explain inputs from the shell, list composites, inspect a model.

::

    tf-lrp explain MODEL INPUT... --out DIR [options]
    tf-lrp composites
    tf-lrp info MODEL [--composite NAME] [--rule KEY=RULE ...]

``explain`` writes, for every input sample, ``DIR/<name>.npy`` (the relevance, float32, the
sample's shape) and ``DIR/<name>.png`` (the heatmap, enlarged ``--zoom`` times, default about
128 pixels), plus one ``DIR/summary.csv``. When the sample is an image (an image file, or an
array of shape ``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)``) an overlay of the heatmap on it is
drawn beside the heatmap; image files are drawn in their input range, arrays
contrast-stretched. Other shapes: a 1-D sample is drawn as a strip, ``(h, w, c)`` with the
channels summed, higher ranks as the channel-summed slices stacked vertically.

Inputs
------
- Image files (PNG, JPEG, BMP, GIF, TIFF, WebP): converted to the model's channel count
  (1: grayscale, 3: RGB, 4: RGBA), resized (bilinear) to the model's input height and width,
  then mapped linearly from 0..255 to the model's input range.
- ``.npy`` arrays, taken as they are (no scaling): one sample of the model's input shape
  (output name ``<stem>``) or a batch ``(n, *input_shape)`` (output names ``<stem>_<i>``).
- Directories: their image and ``.npy`` files (not recursive, sorted by name, hidden files and
  other extensions ignored).

The input range
---------------
The preprocessing belongs with the model. With ``--scale auto`` (the default), a model that
starts with a ``Rescaling`` or ``Normalization`` layer (before its first layer with weights;
the shipped models do) takes raw pixel values: image files are fed as 0..255. A model without
one gets [-1, 1], with a warning that the range is assumed (``--scale minus1_1|0_1|0_255``
names it). The input bounds ``low``/``high`` of composites and rules with bounds (z^B:
``epsilon_gamma_box``, ``deep_taylor``, ``z_box``) default to the same range, in the model's
input space (the engine maps them through the preprocessing layers). The range used is
printed (``input range [0, 255] (the model starts with Rescaling)``).

Rules for single layers
-----------------------
``--rule KEY=RULE[:param=value[,param=value]]`` (repeatable) gives the layers that ``KEY``
names the rule ``RULE`` (see ``tf-lrp composites``), before the composite decides:
``KEY`` is a layer class (``Dense``, ``Multiply``, ``MyLayer``; also Keras op classes such as
``Add`` for ``x + y``) or a layer name (``conv1``). Examples: ``--rule Multiply=uniform_product``,
``--rule conv1=flat``, ``--rule Dense=epsilon:epsilon=0.1``, ``--rule MyLayer=pass``. The same
as ``composites.Overrides(composite, [(KEY, rule), ...])`` in Python. A layer name wins over a
class name; of several ``--rule`` for the same key, the last wins. A key that names no layer and
no layer class of the model is an error.

An input that cannot be read, has the wrong shape, holds NaN/Inf or whose output name is taken
by an earlier input is reported on stderr and skipped; the others still run.

Outputs and ``--resume``
------------------------
Every file is written atomically (a temporary file in ``DIR``, then :func:`os.replace`): an
interrupted run leaves complete files only. The ``.npy`` and ``.png`` files are the record of
what is done; ``summary.csv`` is derived from them and is rewritten whole (merged, atomically)
at the end of the run, on interruption, and every 30 s during long runs. With ``--resume`` a
sample whose ``.png`` and ``.npy`` both exist is not explained again and its files are not
touched; its row is kept from the existing ``summary.csv`` (rows of files not in this run are
kept too), and if the row is missing (a run killed before it wrote the CSV) it is rebuilt
from a forward pass and the existing ``.npy``. ``--resume`` trusts existing files: use it
with the same model and options. Without ``--resume`` everything given is explained again
and ``summary.csv`` lists this run only.

Exit codes: 0 all inputs explained; 1 some inputs skipped; 2 usage error, or a model that
cannot be loaded or explained (the message says why; ``tf-lrp info MODEL`` then lists every
layer and flags the ones no rule fits); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import inspect
import io
import os
import re
import secrets
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["main", "build_parser", "SCALES", "SUMMARY_COLUMNS"]

EXIT_OK, EXIT_SKIPPED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130

#: ``--scale`` choices: the range 0..255 pixel values are mapped to.
SCALES: dict[str, tuple[float, float]] = {
    "minus1_1": (-1.0, 1.0),
    "0_1": (0.0, 1.0),
    "0_255": (0.0, 255.0),
}
#: ``--scale auto``: 0_255 for a model that starts with one of these layer classes (before its
#: first layer with weights), otherwise ASSUMED_SCALE with a warning.
AUTO_SCALE = "auto"
PREPROCESSING_LAYERS = ("Rescaling", "Normalization")
PREPROCESSED_SCALE = "0_255"
ASSUMED_SCALE = "minus1_1"
DEFAULT_SCALE = AUTO_SCALE
DEFAULT_COMPOSITE = "epsilon_plus"
DEFAULT_BATCH_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIX = ".npy"
SUMMARY_NAME = "summary.csv"
#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = ("input", "predicted_class", "explained_class", "logit", "relevance_sum")
CSV_CHECKPOINT_SECONDS = 30.0
AUTO_ZOOM_PIXELS = 128  # auto zoom: integer factor bringing the larger side close to this
STRIP_HEIGHT = 16  # most rows a 1-D relevance vector is drawn with
_IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}

_EPILOG_EXPLAIN = """\
examples:
  tf-lrp explain saved_models/digits_mlp.h5 examples/digits --out heatmaps
  tf-lrp explain saved_models/digits_lenet.h5 examples/digits_32.npy --out lenet \\
      --composite epsilon_gamma_box --target 3
  tf-lrp explain saved_models/shapes_resnet.keras examples/shapes --out shapes \\
      --composite epsilon_gamma_box --param gamma=0.5 --rule block1_conv=flat
  tf-lrp explain model.keras photos/ --out out --scale 0_1   # a model trained on [0, 1]
  tf-lrp explain model.keras photos/ --out out --resume      # continue an interrupted run

outputs (in --out DIR):
  <name>.npy    relevance, float32, the shape of one input sample
  <name>.png    heatmap (red positive, blue negative); for images, an overlay beside it
  summary.csv   input,predicted_class,explained_class,logit,relevance_sum

image preprocessing: convert to the model's channel count, resize (bilinear) to its input
size, map 0..255 linearly to the input range: with --scale auto (default) 0..255 as they are
if the model starts with a Rescaling or Normalization layer, else [-1, 1] (with a warning).
.npy inputs are used as they are.
rules: --rule KEY=RULE[:param=value,...], KEY a layer class or layer name (repeatable), e.g.
  --rule Multiply=uniform_product --rule conv1=flat --rule Dense=epsilon:epsilon=0.1
exit codes: 0 ok, 1 some inputs skipped (reported on stderr), 2 usage or model error.
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
--rule KEY=RULE[:param=value,...] gives one layer class or named layer another rule.
"""


class UsageError(Exception):
    """A bad option found after parsing; reported without a traceback, exit code 2."""


class InputProblem(Exception):
    """One input cannot be used; it is reported and skipped."""


# ------------------------------------------------------------------------------------ parser


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, described as ``what`` in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_class_index = _int_at_least(0, "a class index (integer >= 0)")


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


def _rule_classes() -> dict[str, type]:
    """``tf_lrp.rules.RULES`` (imports TensorFlow, quietly)."""
    _engine()
    from tf_lrp import rules

    return dict(rules.RULES)


def _rule_signature(cls: type) -> str:
    return f"{cls.__name__}{inspect.signature(cls, eval_str=True)}"


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
    classes = _rule_classes()
    if name not in classes:
        raise argparse.ArgumentTypeError(
            f"unknown rule {name!r} in {text!r}; rules: {', '.join(sorted(classes))} "
            "(see 'tf-lrp composites')")
    try:
        classes[name](**params)
    except (TypeError, ValueError) as err:
        raise argparse.ArgumentTypeError(
            f"bad parameters for rule {name!r} in {text!r} ({err}); its parameters: "
            f"{_rule_signature(classes[name])}") from None
    return RuleOption(key, name, tuple(params.items()), text)


def build_parser() -> argparse.ArgumentParser:
    """The ``tf-lrp`` argument parser (``explain``, ``composites``, ``info``, ``evaluate``)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="tf-lrp", formatter_class=fmt,
        description="Layer-wise Relevance Propagation for Keras 3 models.",
        epilog="run 'tf-lrp COMMAND --help' for the options and examples of a command.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    model_opts = argparse.ArgumentParser(add_help=False)
    model_opts.add_argument("model", metavar="MODEL", help="a .keras or .h5 model file")
    model_opts.add_argument(
        "--composite", default=DEFAULT_COMPOSITE, metavar="NAME",
        help=f"composite or rule name (see 'tf-lrp composites'; default {DEFAULT_COMPOSITE})",
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
        help="explain inputs, write heatmaps, relevance arrays and summary.csv",
        description="Explain inputs with LRP: one .png and one .npy per sample, one summary.csv.",
    )
    explain.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="image files, .npy arrays, or directories of them")
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
                         help="skip samples whose .png and .npy exist in DIR")
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

    evaluate = sub.add_parser(
        "evaluate", formatter_class=fmt,
        help="score attribution methods: pixel flipping, localisation, sanity check, conservation",
        description="Evaluate attribution methods on a model and print a method x metric table: "
                    "pixel flipping (AOPC), localisation (shapes), cascading randomisation and "
                    "conservation; the pixel-flipping curves are saved as a PNG.",
        epilog="example:\n  tf-lrp evaluate saved_models/shapes_resnet.keras --data shapes "
               "--methods epsilon_plus,gradient -n 200",
    )
    evaluation.add_cli_arguments(evaluate)
    evaluate.set_defaults(handler=_cmd_evaluate)
    return parser


# ------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tf-lrp`` with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse already printed
        return stop.code if isinstance(stop.code, int) else EXIT_ERROR
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        _error("interrupted" + ("; run again with --resume to continue"
                                if args.command == "explain" else ""))
        return EXIT_INTERRUPTED
    except Exception as err:
        errors = sys.modules.get("tf_lrp.errors")
        if isinstance(err, UsageError) or (errors and isinstance(err, errors.LRPError)):
            _error(str(err))
            return EXIT_ERROR
        raise


def _error(message: str) -> None:
    print(f"tf-lrp: error: {message}", file=sys.stderr)


def _note(message: str, quiet: bool = False) -> None:
    if not quiet:
        from tqdm import tqdm

        tqdm.write(f"tf-lrp: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------- engine


@contextlib.contextmanager
def _stderr_fd_captured() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file; replay it if the block raises.

    TensorFlow's C++ start-up messages (written before absl logging is initialised) ignore
    ``TF_CPP_MIN_LOG_LEVEL``; this keeps them off the terminal while TensorFlow is imported.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        saved = None
    if saved is None:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


def _engine():
    """Import TensorFlow and tf_lrp with TensorFlow's log noise kept down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0"):
        with _stderr_fd_captured():
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs happen here
    import tf_lrp

    return tf_lrp


def _report_warnings(caught: list[warnings.WarningMessage], quiet: bool) -> bool:
    """Print recorded warnings as one short line each (repeats once); return whether a softmax
    was stripped."""
    stripped, seen = False, set()
    for w in caught:
        text = str(w.message)
        line = text.splitlines()[0] if text else w.category.__name__
        if line in seen:
            continue
        seen.add(line)
        if "softmax" in text and "stripped" in text:
            stripped = True
            _note("note: the model ends in a softmax; the logits before it are explained", quiet)
        else:
            _note(f"warning: {line}", quiet)
    return stripped


def _takes_bounds(signature: str) -> bool:
    return all(re.search(rf"[(,]\s*{p}\b", signature) for p in ("low", "high"))


def _composite(tf_lrp, args, input_range: tuple[float, float]) -> Any:
    """The composite named by ``--composite`` with ``--param`` values (bounds: ``input_range``)."""
    name = args.composite.replace("-", "_").lower()
    signatures = dict(tf_lrp.composites.describe())
    if name not in signatures:
        raise UsageError(
            f"unknown composite or rule {args.composite!r}; choose one of: "
            f"{', '.join(signatures)} (see 'tf-lrp composites')"
        )
    params = dict(args.param)
    if _takes_bounds(signatures[name]):
        low, high = input_range
        params.setdefault("low", low)
        params.setdefault("high", high)
    try:
        return tf_lrp.composites.get(name, **params)
    except (TypeError, ValueError) as err:
        raise UsageError(
            f"bad --param for {name!r} ({err}); its parameters: {signatures[name]}"
        ) from None


def _model_output(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.isdigit() else text


@dataclass
class _Setup:
    """A loaded model and what the options decide for it (before an analyzer is built)."""

    model: Any
    graph: Any  # the canonized tf_lrp.graph.Graph
    scale: str  # a key of SCALES
    scale_reason: str
    assumed: bool  # --scale auto found no preprocessing layer, and the range matters: a guess
    composite: Any
    caught: list[warnings.WarningMessage]

    @property
    def input_range(self) -> tuple[float, float]:
        return SCALES[self.scale]

    def range_text(self) -> str:
        low, high = self.input_range
        return f"[{low:g}, {high:g}] ({self.scale_reason})"

    def report_range(self, quiet: bool, to_stdout: bool = False) -> None:
        """The input range line (a note on stderr, or on stdout for ``info``); the warning
        about an assumed range is printed even with ``--quiet``."""
        if to_stdout:
            print(f"input range {self.range_text()}")
        else:
            _note(f"input range {self.range_text()}", quiet)
        if self.assumed:
            low, high = self.input_range
            _note(f"warning: the model carries no preprocessing (no {' or '.join(PREPROCESSING_LAYERS)}"
                  f" layer before its first layer with weights): image pixels 0..255 are mapped "
                  f"to [{low:g}, {high:g}] and input bounds default to it. If the model was "
                  "trained on another range, pass --scale 0_1 or --scale 0_255 (or give the "
                  "model a keras.layers.Rescaling layer at its start)")


def _preprocessing_layer(graph) -> str | None:
    """The class of the Rescaling/Normalization layer every first layer with weights is reached
    through from the model input (only layers without weights in between), or ``None``."""
    import keras

    from tf_lrp import plan

    classes = tuple(getattr(keras.layers, name) for name in PREPROCESSING_LAYERS)
    chains = plan.input_chains(graph)
    found = []
    for node in graph.nodes:
        if plan.is_weighted(node) and node.name in chains:
            layers = [n.layer for n in chains[node.name][1] if isinstance(n.layer, classes)]
            if not layers:
                return None
            found.append(type(layers[0]).__name__)
    return found[0] if found else None


def _resolve_scale(args, graph) -> tuple[str, str, bool]:
    """``(scale, why, assumed)`` for ``--scale`` (``auto``: from the model's first layers)."""
    if args.scale != AUTO_SCALE:
        return args.scale, f"--scale {args.scale}", False
    layer = _preprocessing_layer(graph)
    if layer is not None:
        return PREPROCESSED_SCALE, f"the model starts with {layer}", False
    return ASSUMED_SCALE, "assumed: the model carries no preprocessing; see --scale", True


def _uses_bounds(tf_lrp, args) -> bool:
    """Whether the composite or a ``--rule`` takes input bounds (low/high)."""
    name = args.composite.replace("-", "_").lower()
    signature = dict(tf_lrp.composites.describe()).get(name, "")
    return _takes_bounds(signature) or any(
        {"low", "high"} <= set(inspect.signature(tf_lrp.rules.RULES[o.rule]).parameters)
        for o in args.rules)


def _keras_layer_names(model) -> set[str]:
    """Names of every layer of ``model``, nested models' layers included."""
    import keras

    names, stack = set(), list(model.layers)
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    return names


def _overrides(tf_lrp, args, base, setup_graph, model, input_range) -> Any:
    """``base``, or ``composites.Overrides(base, ...)`` with the ``--rule`` options.

    A layer name wins over a class name; of several ``--rule`` for the same key, the last.

    Raises
    ------
    UsageError
        If a key names no layer and no layer class of the model.
    """
    if not args.rules:
        return base
    nodes = [n for n in setup_graph.nodes if n.kind == "layer"]
    names = {getattr(n.layer, "name", None) for n in nodes}
    classes = {type(n.layer).__name__ for n in nodes}
    for option in args.rules:
        if option.key in names or option.key in classes:
            continue
        if option.key in _keras_layer_names(model):
            raise UsageError(
                f"--rule {option.text}: the layer {option.key!r} has no node of its own in the "
                "explained graph (a BatchNormalization folded into the layer before it, or an "
                "input layer); map the rule to the layer it belongs to (see 'tf-lrp info "
                f"{args.model}')")
        raise UsageError(
            f"--rule {option.text}: no layer of the model is named {option.key!r} and none is "
            f"of class {option.key!r}; its layer classes: {', '.join(sorted(classes))} (its "
            f"layer names: 'tf-lrp info {args.model}')")
    rule_classes = tf_lrp.rules.RULES
    ordered = [o for o in reversed(args.rules) if o.key in names] + \
              [o for o in reversed(args.rules) if o.key not in names]
    mapping = []
    for option in ordered:
        cls = rule_classes[option.rule]
        params = dict(option.params)
        if {"low", "high"} <= set(inspect.signature(cls).parameters):
            params.setdefault("low", input_range[0])
            params.setdefault("high", input_range[1])
        mapping.append((option.key, cls(**params)))
    return tf_lrp.composites.Overrides(base, mapping)


def _setup(tf_lrp, args) -> _Setup:
    """Load the model, decide the input range and build the composite with the ``--rule``s.

    Raises
    ------
    tf_lrp.LRPError, UsageError
        If the model cannot be loaded or the options do not fit it (exit 2).
    """
    from tf_lrp import canonizers, graph

    _composite(tf_lrp, args, SCALES[ASSUMED_SCALE])  # a bad name fails before the model loads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = tf_lrp.load_model(args.model, safe_mode=not args.allow_lambda)
            canonized = canonizers.canonize(graph.build_graph(model))
        except tf_lrp.LRPError:
            raise
        except Exception as err:  # an engine bug or an exotic model: no traceback for users
            raise UsageError(f"cannot explain {args.model}: {type(err).__name__}: {err}") from err
    scale, why, assumed = _resolve_scale(args, canonized)
    # the guess matters where image files can be fed, or for input bounds
    assumed = assumed and (any(InputSpec(tuple(s)).image_mode for s in canonized.input_shapes)
                           or _uses_bounds(tf_lrp, args))
    composite = _overrides(tf_lrp, args, _composite(tf_lrp, args, SCALES[scale]), canonized,
                           model, SCALES[scale])
    args.scale = scale  # what image files are scaled to from here on
    return _Setup(model, canonized, scale, why, assumed, composite, list(caught))


def _analyzer(tf_lrp, args, start: str = "output", setup: _Setup | None = None):
    """Build the analyzer; return ``(analyzer, softmax_stripped, setup)``.

    Raises
    ------
    tf_lrp.LRPError, UsageError
        If the model cannot be loaded or explained (reported by :func:`main`, exit 2).
    """
    setup = setup or _setup(tf_lrp, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            analyzer = tf_lrp.Analyzer(setup.model, setup.composite, start=start,
                                       output=_model_output(args.model_output))
        except tf_lrp.UnsupportedLayerError as err:
            raise UsageError(f"{err}\n'tf-lrp info {args.model}' lists every layer and the "
                             "rule it gets") from err
        except tf_lrp.LRPError:
            raise
        except Exception as err:  # an engine bug or an exotic model: no traceback for users
            raise UsageError(f"cannot explain {args.model}: {type(err).__name__}: {err}") from err
    stripped = _report_warnings(setup.caught + list(caught), args.quiet)
    return analyzer, stripped, setup


# --------------------------------------------------------------------------- composites


def _cmd_composites(args) -> int:
    tf_lrp = _engine()
    # describe() renders postponed annotations as strings: show them unquoted
    entries = [(name, re.sub(r": '([^']*)'", r": \1", signature))
               for name, signature in tf_lrp.composites.describe()]
    width = max(len(name) for name, _ in entries)
    print("composites (--composite NAME, parameters with --param KEY=VALUE):")
    for name, signature in entries:
        if not signature.startswith("rules."):
            print(f"  {name:<{width}}  {signature}")
    print("rules (a rule name as --composite: that rule for every layer with weights):")
    for name, signature in entries:
        if signature.startswith("rules."):
            print(f"  {name:<{width}}  {signature[len('rules.'):]}")
    print("low/high (input bounds of z^B) default to the model's input range: [0, 255] if it "
          "starts with a Rescaling or Normalization layer, else [-1, 1] (--scale names another).")
    print("--rule KEY=RULE[:param=value,...] gives the layer class or named layer KEY a rule, "
          "e.g. --rule Dense=epsilon:epsilon=0.1.")
    return EXIT_OK


# --------------------------------------------------------------------------------- info


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _cmd_evaluate(args) -> int:
    _engine()
    from tf_lrp import evaluate

    return evaluate.run_cli(args)


def _print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    table = [("node", "layer", "rule"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    print()
    for node, layer, rule in table:
        print(f"{node:<{widths[0]}}  {layer:<{widths[1]}}  {rule}")


def _cmd_info(args) -> int:
    tf_lrp = _engine()
    from tf_lrp import plan

    setup = _setup(tf_lrp, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = plan.rule_plan(setup.model, setup.composite)
    unsupported = [row for row in rows if row.rule is None]
    if not unsupported:
        analyzer, stripped, _ = _analyzer(tf_lrp, args, setup=setup)
    else:
        stripped = _report_warnings(setup.caught + list(caught), args.quiet)
    graph = setup.graph
    print(f"model      {args.model} ({type(setup.model).__name__})")
    for name, shape, dtype in zip(graph.input_names, graph.input_shapes, graph.input_dtypes):
        print(f"input      {name}: {_shape_text(shape)} {dtype}")
    setup.report_range(args.quiet, to_stdout=True)
    if not unsupported:
        explained = analyzer.num_outputs if analyzer.num_outputs is not None else "?"
        print(f"explains   {explained} output values"
              + (" (logits: the final softmax is stripped)" if stripped else ""))
    print(f"composite  {setup.composite!r}")
    _print_table([(row.node, row.layer, row.rule or f"UNSUPPORTED: {row.reason}")
                  for row in rows])
    if unsupported:
        _error(_unsupported_text(unsupported, tf_lrp.rules.RULES))
        return EXIT_ERROR
    return EXIT_OK


def _unsupported_text(rows, rule_classes) -> str:
    """The error of ``info`` for layers no rule fits: which ones, and the ``--rule`` fix."""
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row.layer, []).append(row.node)
    listed = "; ".join(f"{cls} ({', '.join(repr(n) for n in nodes)})"
                       for cls, nodes in by_class.items())
    example = next(iter(by_class))
    count = len(rows)
    return (
        f"no LRP rule fits {count} layer{'s' if count > 1 else ''} (flagged UNSUPPORTED above): "
        f"{listed}\n"
        f"fix: map a rule to the layer class or layer name with --rule, e.g. --rule "
        f"{example}=pass (relevance passes unchanged: right for elementwise layers); rules: "
        f"{', '.join(sorted(rule_classes))} (parameters: 'tf-lrp composites'). In Python: "
        "composites.Overrides(composite, "
        f"[({example!r}, rules.Pass())]). A custom layer with weights is described once with "
        "tf_lrp.layers.register_linear."
    )


# ------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class InputSpec:
    """The model input one sample must match (no batch axis; ``None`` = any size)."""

    shape: tuple[int | None, ...]

    def matches(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            d is None or d == s for d, s in zip(self.shape, shape)
        )

    @property
    def image_mode(self) -> str | None:
        """The PIL mode images are converted to, ``None`` if the input is not an image."""
        if len(self.shape) == 2:
            return "L"
        if len(self.shape) == 3:
            return _IMAGE_MODES.get(self.shape[2])
        return None


@dataclass(frozen=True)
class Sample:
    """One input sample: a file, or one entry of an ``.npy`` batch."""

    name: str
    path: Path
    index: int | None = None

    @property
    def label(self) -> str:
        return str(self.path) if self.index is None else f"{self.path}[{self.index}]"

    @property
    def is_image(self) -> bool:
        return self.path.suffix.lower() != ARRAY_SUFFIX


def _expand(inputs: Sequence[str], skip: Callable[[str, str], None]) -> list[Path]:
    """Files named by ``inputs``: files as given, directories' image/.npy files sorted."""
    files, seen = [], set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            entries = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".")
                and p.suffix.lower() in (*IMAGE_SUFFIXES, ARRAY_SUFFIX)
            )
            if not entries:
                skip(raw, "the directory holds no image or .npy files")
        elif path.exists():
            entries = [path]
        else:
            skip(raw, "no such file or directory")
            continue
        for entry in entries:
            key = entry.resolve()
            if key not in seen:
                seen.add(key)
                files.append(entry)
    return files


def _open_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise InputProblem(f"cannot be read as a .npy array ({err})") from None


def _array_count(array: np.ndarray, spec: InputSpec) -> int | None:
    """``None`` for one sample of the input shape, ``n`` for a batch; else :class:`InputProblem`."""
    if array.dtype.kind not in "biuf":
        raise InputProblem(f"has dtype {array.dtype}; expected numbers")
    if spec.matches(array.shape):
        return None
    if array.ndim == len(spec.shape) + 1 and spec.matches(array.shape[1:]):
        if array.shape[0] == 0:
            raise InputProblem("is an empty batch")
        return array.shape[0]
    raise InputProblem(
        f"has shape {array.shape}; the model takes one sample of shape {_shape_text(spec.shape)}"
        f" or a batch (n, {_shape_text(spec.shape)[1:]}"
    )


def _samples(files: list[Path], spec: InputSpec, skip: Callable[[str, str], None]) -> list[Sample]:
    """One :class:`Sample` per image and per entry of each ``.npy`` batch, names unique."""
    samples: list[Sample] = []
    owner: dict[str, str] = {}
    for path in files:
        entries: list[tuple[str, int | None]] = [(path.stem, None)]
        if path.suffix.lower() == ARRAY_SUFFIX:
            try:
                count = _array_count(_open_array(path), spec)
            except InputProblem as problem:
                skip(str(path), str(problem))
                continue
            if count is not None:
                entries = [(f"{path.stem}_{i}", i) for i in range(count)]
        for name, index in entries:
            sample = Sample(name, path, index)
            if name in owner:
                skip(sample.label, f"its output name {name!r} is taken by {owner[name]}; "
                                   "rename one of them or explain them separately")
                continue
            owner[name] = sample.label
            samples.append(sample)
    return samples


def _read_image(path: Path, spec: InputSpec, scale: tuple[float, float]) -> np.ndarray:
    """An image file as a model input: channels converted, resized, scaled to ``scale``."""
    from PIL import Image, ImageOps

    mode = spec.image_mode
    if mode is None:
        raise InputProblem(
            f"is an image, but the model input {_shape_text(spec.shape)} is not (height, width"
            "[, 1|3|4 channels]); pass the input as a .npy array"
        )
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert(mode)
            height, width = spec.shape[0] or image.height, spec.shape[1] or image.width
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32)
    except Exception as err:  # PIL raises many types for corrupt or foreign files
        raise InputProblem(f"cannot be read as an image ({err})") from None
    if len(spec.shape) == 3 and pixels.ndim == 2:
        pixels = pixels[..., None]
    low, high = scale
    return (low + pixels * ((high - low) / 255.0)).astype(np.float32)


class _Arrays:
    """Memory-mapped ``.npy`` files, the most recent one kept open."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._array: np.ndarray | None = None

    def sample(self, sample: Sample) -> np.ndarray:
        if sample.path != self._path or self._array is None:
            self._array, self._path = None, None  # release the previous mapping first
            self._array, self._path = _open_array(sample.path), sample.path
        data = self._array if sample.index is None else self._array[sample.index]
        return np.array(data, dtype=np.float32)


def _load(sample: Sample, spec: InputSpec, scale, arrays: _Arrays) -> np.ndarray:
    x = _read_image(sample.path, spec, scale) if sample.is_image else arrays.sample(sample)
    if not np.isfinite(x).all():
        raise InputProblem("contains NaN or Inf values")
    return x


# ----------------------------------------------------------------------------- outputs


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its directory and :func:`os.replace`."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def _relevance_map(relevance: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A 2-D(+channels) map to colour, and the image to overlay it on (``None``: no overlay)."""
    if relevance.ndim == 1:
        rows = min(STRIP_HEIGHT, -(-relevance.size // 8))  # about 8:1, at most STRIP_HEIGHT
        return np.repeat(relevance[None], rows, axis=0), None
    if relevance.ndim == 2:
        return relevance, x
    if relevance.ndim == 3:
        return relevance, x if x.shape[-1] in (1, 3) else None
    return relevance.sum(axis=-1).reshape(-1, relevance.shape[-2]), None  # slices stacked


def _picture(relevance: np.ndarray, x: np.ndarray, input_range, zoom: int | None) -> np.ndarray:
    """The PNG of one sample: heatmap, and the overlay beside it when the sample is an image."""
    from tf_lrp import visualize

    rmap, image = _relevance_map(relevance, x)
    heat = visualize.heatmap(rmap[None])
    tiles = [heat[0]]
    if image is not None:
        tiles.append(visualize.overlay(heat, image[None], input_range=input_range)[0])
    factor = zoom or max(1, AUTO_ZOOM_PIXELS // max(heat.shape[1:3]))
    tiles = [t.repeat(factor, axis=0).repeat(factor, axis=1) for t in tiles]
    return tiles[0] if len(tiles) == 1 else visualize.grid(np.stack(tiles), ncols=2, pad=2)


class _Summary:
    """``summary.csv``: rows by input name, rewritten whole and atomically."""

    def __init__(self, path: Path, order: list[str], rows: dict[str, dict[str, str]]):
        self.path, self.order, self.rows = path, order, rows
        self._written = time.monotonic()

    @staticmethod
    def read(path: Path, quiet: bool) -> dict[str, dict[str, str]]:
        if not path.exists():
            return {}
        try:
            with open(path, newline="", encoding="utf-8") as stream:
                reader = csv.DictReader(stream)
                if tuple(reader.fieldnames or ()) != SUMMARY_COLUMNS:
                    raise csv.Error(f"columns {reader.fieldnames} are not {list(SUMMARY_COLUMNS)}")
                return {row["input"]: row for row in reader}
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            _note(f"warning: ignoring the existing {path} ({err}); its rows are rebuilt", quiet)
            return {}

    def write(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, SUMMARY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        listed = [n for n in self.order if n in self.rows]
        for name in listed + [n for n in self.rows if n not in set(listed)]:
            writer.writerow(self.rows[name])
        _atomic_write(self.path, lambda stream: stream.write(text.getvalue().encode("utf-8")))
        self._written = time.monotonic()

    def checkpoint(self) -> None:
        if time.monotonic() - self._written > CSV_CHECKPOINT_SECONDS:
            self.write()


# ----------------------------------------------------------------------------- explain


@dataclass
class _Run:
    """Everything one ``explain`` run shares."""

    analyzer: Any
    spec: InputSpec
    out: Path
    args: argparse.Namespace
    summary: _Summary
    skip: Callable[[str, str], None]
    arrays: _Arrays
    explained: int = 0

    @property
    def scale(self) -> tuple[float, float]:
        return SCALES[self.args.scale]

    def row(self, name: str, y: np.ndarray, target: int, relevance_sum: float) -> dict[str, str]:
        everything = self.args.start == "all"
        return {
            "input": name,
            "predicted_class": str(int(np.argmax(y))),
            "explained_class": "all" if everything else str(target),
            "logit": repr(float(y.sum() if everything else y[target])),
            "relevance_sum": repr(relevance_sum),
        }

    def batch(self, chunk: list[tuple[Sample, bool]]) -> None:
        """Explain (or, for ``False`` entries, only summarise) a chunk of samples."""
        groups: dict[tuple[int, ...], list[tuple[Sample, bool, np.ndarray]]] = {}
        for sample, explain in chunk:
            try:
                x = _load(sample, self.spec, self.scale, self.arrays)
            except InputProblem as problem:
                self.skip(sample.label, str(problem))
                continue
            groups.setdefault(x.shape, []).append((sample, explain, x))
        for group in groups.values():  # one group unless the model takes any image size
            self._group(group)

    def _group(self, group: list[tuple[Sample, bool, np.ndarray]]) -> None:
        x = np.stack([item[2] for item in group])
        y = self._call(self.analyzer.predict, x)
        targets = np.full(len(x), self.args.target) if self.args.target is not None \
            else np.argmax(y, axis=1)
        todo = np.array([explain for _, explain, _ in group])
        relevance = iter(self._call(self.analyzer, x[todo], targets[todo]) if todo.any() else ())
        for i, (sample, explain, xi) in enumerate(group):
            if explain:
                r = next(relevance).astype(np.float32)
                self._write(sample, r, xi)
                self.explained += 1
                total = float(np.sum(r, dtype=np.float64))
            else:
                total = self._existing_sum(sample)
                if total is None:
                    continue
            self.summary.rows[sample.name] = self.row(sample.name, y[i], int(targets[i]), total)

    def _call(self, fn, *arguments):
        errors = sys.modules["tf_lrp.errors"]
        try:
            return fn(*arguments)
        except errors.LRPError:
            raise
        except Exception as err:
            raise UsageError(f"explaining with {self.args.model} failed: "
                             f"{type(err).__name__}: {err}") from err

    def _write(self, sample: Sample, relevance: np.ndarray, x: np.ndarray) -> None:
        from tf_lrp import visualize

        _atomic_write(self.out / f"{sample.name}.npy", lambda stream: np.save(stream, relevance))
        input_range = self.scale if sample.is_image else None
        visualize.save_png(self.out / f"{sample.name}.png",
                           _picture(relevance, x, input_range, self.args.zoom))

    def _existing_sum(self, sample: Sample) -> float | None:
        try:
            return float(np.sum(np.load(self.out / f"{sample.name}.npy"), dtype=np.float64))
        except Exception as err:
            self.skip(sample.label, f"its existing {sample.name}.npy cannot be read ({err}); "
                                    "delete it and run again")
            return None


def _input_spec(analyzer) -> InputSpec:
    shapes = analyzer.graph.input_shapes
    if len(shapes) != 1:
        raise UsageError(
            f"the model has {len(shapes)} inputs ({', '.join(analyzer.graph.input_names)}); "
            "tf-lrp explain handles single-input models: use tf_lrp.Analyzer from Python"
        )
    return InputSpec(tuple(shapes[0]))


def _check_target(analyzer, target: int | None) -> None:
    n = analyzer.num_outputs
    if target is not None and n is not None and target >= n:
        raise UsageError(f"--target {target} is out of range: the model explains {n} outputs "
                         f"(classes 0..{n - 1})")


def _output_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output directory {path}: {err}") from None
    return out


def _plan(samples: list[Sample], out: Path, resume: bool,
          old_rows: dict[str, dict[str, str]]) -> list[tuple[Sample, bool]]:
    """``(sample, explain)`` pairs still to do; ``explain=False``: only its summary row."""
    work = []
    for sample in samples:
        done = resume and all((out / f"{sample.name}{ext}").is_file() for ext in (".png", ".npy"))
        if not done:
            work.append((sample, True))
        elif sample.name not in old_rows:
            work.append((sample, False))  # files exist, row lost: rebuild the row only
    return work


def _cmd_explain(args) -> int:
    from tqdm import tqdm

    skipped: list[str] = []

    def skip(label: str, why: str) -> None:
        skipped.append(label)
        tqdm.write(f"tf-lrp: skipped {label}: {why}", file=sys.stderr)

    tf_lrp = _engine()
    analyzer, _, setup = _analyzer(tf_lrp, args, start=args.start)
    setup.report_range(args.quiet)
    spec = _input_spec(analyzer)
    _check_target(analyzer, args.target)
    out = _output_dir(args.out)
    samples = _samples(_expand(args.inputs, skip), spec, skip)

    old_rows = _Summary.read(out / SUMMARY_NAME, args.quiet) if args.resume else {}
    summary = _Summary(out / SUMMARY_NAME, [s.name for s in samples], dict(old_rows))
    work = _plan(samples, out, args.resume, old_rows)
    run = _Run(analyzer, spec, out, args, summary, skip, _Arrays())

    bar = tqdm(total=len(work), unit="sample", file=sys.stderr,
               disable=args.quiet or not sys.stderr.isatty())
    try:
        for lo in range(0, len(work), args.batch_size):
            chunk = work[lo:lo + args.batch_size]
            run.batch(chunk)
            bar.update(len(chunk))
            summary.checkpoint()
    finally:
        bar.close()
        summary.write()
    if not args.quiet:
        resumed = len(samples) - sum(1 for _, explain in work if explain)
        print(f"tf-lrp: {run.explained} explained, {resumed} already done, {len(skipped)} "
              f"skipped; outputs in {out}")
    return EXIT_SKIPPED if skipped else EXIT_OK
