"""The ``tf-lrp`` command: explain inputs from the shell, list composites, inspect a model.

::

    tf-lrp explain MODEL INPUT... --out DIR [options]
    tf-lrp composites
    tf-lrp info MODEL [--composite NAME]

``explain`` writes, for every input sample, ``DIR/<name>.npy`` (the relevance, float32, the
sample's shape) and ``DIR/<name>.png`` (the heatmap, enlarged ``--zoom`` times, default about
128 pixels), plus one ``DIR/summary.csv``. When the sample is an image (an image file, or an
array of shape ``(h, w)``, ``(h, w, 1)`` or ``(h, w, 3)``) an overlay of the heatmap on it is
drawn beside the heatmap; image files are drawn in their ``--scale`` range, arrays
contrast-stretched. Other shapes: a 1-D sample is drawn as a strip, ``(h, w, c)`` with the
channels summed, higher ranks as the channel-summed slices stacked vertically.

Inputs
------
- Image files (PNG, JPEG, BMP, GIF, TIFF, WebP): converted to the model's channel count
  (1: grayscale, 3: RGB, 4: RGBA), resized (bilinear) to the model's input height and width,
  then mapped linearly from 0..255 to the range ``--scale`` names (default ``minus1_1``,
  i.e. [-1, 1], what the shipped digit models take; ``0_1`` for the shapes model).
- ``.npy`` arrays, taken as they are (no scaling): one sample of the model's input shape
  (output name ``<stem>``) or a batch ``(n, *input_shape)`` (output names ``<stem>_<i>``).
- Directories: their image and ``.npy`` files (not recursive, sorted by name, hidden files and
  other extensions ignored).

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
cannot be loaded or explained (the message says why); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
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
DEFAULT_SCALE = "minus1_1"
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
  tf-lrp explain saved_models/shapes_resnet.keras examples/shapes --scale 0_1 --out shapes \\
      --composite epsilon_gamma_box --param gamma=0.5
  tf-lrp explain model.keras photos/ --out out --resume      # continue an interrupted run

outputs (in --out DIR):
  <name>.npy    relevance, float32, the shape of one input sample
  <name>.png    heatmap (red positive, blue negative); for images, an overlay beside it
  summary.csv   input,predicted_class,explained_class,logit,relevance_sum

image preprocessing: convert to the model's channel count, resize (bilinear) to its input
size, map 0..255 linearly to the --scale range. .npy inputs are used as they are.
exit codes: 0 ok, 1 some inputs skipped (reported on stderr), 2 usage or model error.
"""

_EPILOG_INFO = """\
examples:
  tf-lrp info saved_models/digits_lenet.h5
  tf-lrp info saved_models/shapes_resnet.keras --composite epsilon_gamma_box --scale 0_1

Lists the model's canonized nodes (BatchNormalization folded into the layer before it,
activations split off, a final softmax stripped) and the rule each gets. Exit code 2 if a
layer has no rule; the message names it.
"""

_EPILOG_COMPOSITES = """\
examples:
  tf-lrp composites
  tf-lrp explain model.h5 x.npy --out out --composite epsilon_gamma_box --param gamma=0.5

A rule name works as a composite too: that rule for every layer with weights.
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
             "composites with bounds default to the --scale range",
    )
    model_opts.add_argument(
        "--scale", "--preprocess", dest="scale", choices=list(SCALES), default=DEFAULT_SCALE,
        metavar="RANGE",
        help=f"{', '.join(SCALES)}: the value range image pixels 0..255 are mapped to "
             f"(default {DEFAULT_SCALE}); also the default input bounds low/high",
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
    """Print recorded warnings as one short line each; return whether a softmax was stripped."""
    stripped = False
    for w in caught:
        text = str(w.message)
        if "softmax" in text and "stripped" in text:
            stripped = True
            _note("note: the model ends in a softmax; the logits before it are explained", quiet)
        else:
            _note(f"warning: {text.splitlines()[0] if text else w.category.__name__}", quiet)
    return stripped


def _takes_bounds(signature: str) -> bool:
    return all(re.search(rf"[(,]\s*{p}\b", signature) for p in ("low", "high"))


def _composite(tf_lrp, args) -> Any:
    """The composite named by ``--composite`` with ``--param`` values (bounds from --scale)."""
    name = args.composite.replace("-", "_").lower()
    signatures = dict(tf_lrp.composites.describe())
    if name not in signatures:
        raise UsageError(
            f"unknown composite or rule {args.composite!r}; choose one of: "
            f"{', '.join(signatures)} (see 'tf-lrp composites')"
        )
    params = dict(args.param)
    if _takes_bounds(signatures[name]):
        low, high = SCALES[args.scale]
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


def _analyzer(tf_lrp, args, start: str = "output"):
    """Load the model and build the analyzer; return ``(analyzer, softmax_stripped)``.

    Raises
    ------
    tf_lrp.LRPError, UsageError
        If the model cannot be loaded or explained (reported by :func:`main`, exit 2).
    """
    composite = _composite(tf_lrp, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = tf_lrp.load_model(args.model, safe_mode=not args.allow_lambda)
            analyzer = tf_lrp.Analyzer(model, composite, start=start,
                                       output=_model_output(args.model_output))
        except tf_lrp.LRPError:
            raise
        except Exception as err:  # an engine bug or an exotic model: no traceback for users
            raise UsageError(f"cannot explain {args.model}: {type(err).__name__}: {err}") from err
    stripped = _report_warnings(caught, args.quiet)
    return analyzer, stripped


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
    print("low/high (input bounds of z^B) default to the --scale range, "
          f"{DEFAULT_SCALE} = {SCALES[DEFAULT_SCALE]}.")
    return EXIT_OK


# --------------------------------------------------------------------------------- info


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _cmd_evaluate(args) -> int:
    _engine()
    from tf_lrp import evaluate

    return evaluate.run_cli(args)


def _cmd_info(args) -> int:
    tf_lrp = _engine()
    analyzer, stripped = _analyzer(tf_lrp, args)
    graph = analyzer.graph
    print(f"model      {args.model} ({type(analyzer.model).__name__})")
    for name, shape, dtype in zip(graph.input_names, graph.input_shapes, graph.input_dtypes):
        print(f"input      {name}: {_shape_text(shape)} {dtype}")
    explained = analyzer.num_outputs if analyzer.num_outputs is not None else "?"
    print(f"explains   {explained} output values"
          + (" (logits: the final softmax is stripped)" if stripped else ""))
    print(f"composite  {analyzer.composite!r}")
    table = [("node", "layer", "rule"), *analyzer.rule_table()]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    print()
    for node, layer, rule in table:
        print(f"{node:<{widths[0]}}  {layer:<{widths[1]}}  {rule}")
    return EXIT_OK


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
    analyzer, _ = _analyzer(tf_lrp, args, start=args.start)
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
