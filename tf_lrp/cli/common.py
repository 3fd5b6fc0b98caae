"""What every part of the ``tf-lrp`` command shares: constants, errors, messages, the engine.

Nothing here imports TensorFlow at import time: ``tf-lrp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from tf_lrp.runs.common import (  # noqa: F401 (the command line's names for them)
    ARRAY_SUFFIX,
    IMAGE_MODES,
    IMAGE_SUFFIXES,
    INDEX_COLUMNS,
    INDEX_NAME,
    SKIPPED_COLUMNS,
    SKIPPED_NAME,
    InputProblem,
    UsageError,
    note,
    shape_text,
)

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
DEFAULT_SHARD_SIZE = 1000
SUMMARY_NAME = "summary.csv"
#: Columns of ``summary.csv`` (``--format png,npy``).
SUMMARY_COLUMNS = ("input", "predicted_class", "explained_class", "logit", "relevance_sum")
CSV_CHECKPOINT_SECONDS = 30.0
AUTO_ZOOM_PIXELS = 128  # auto zoom: integer factor bringing the larger side close to this
STRIP_HEIGHT = 16  # most rows a 1-D relevance vector is drawn with


def error(message: str) -> None:
    """Print ``tf-lrp: error: message`` on stderr."""
    print(f"tf-lrp: error: {message}", file=sys.stderr)


@contextlib.contextmanager
def stderr_fd_captured() -> Iterator[None]:
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


def engine():
    """Import TensorFlow and tf_lrp with TensorFlow's log noise kept down; return ``tf_lrp``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and os.environ["TF_CPP_MIN_LOG_LEVEL"] not in ("", "0"):
        with stderr_fd_captured():
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs happen here
    import tf_lrp

    return tf_lrp


def int_at_least(minimum: int, what: str):
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


#: argparse type: an integer >= 1.
positive_int = int_at_least(1, "a positive integer")


def guarded(body):
    """A command's handler: ``body(args)`` with usage errors and tf_lrp's errors printed as
    ``tf-lrp: error: ...`` and exit code 2."""

    def handler(args) -> int:
        from tf_lrp.errors import LRPError

        try:
            return body(args)
        except (UsageError, LRPError) as err:
            error(str(err))
            return EXIT_ERROR

    handler.__doc__ = body.__doc__
    return handler
