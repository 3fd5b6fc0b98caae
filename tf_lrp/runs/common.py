"""What the batch runs share (the command line and the Ray API alike): file names and columns,
the two errors, progress notes. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIX = ".npy"
INDEX_NAME = "index.csv"
#: Columns of ``index.csv`` (``--format shards``): ``shard`` is the shard file relative to the
#: output directory, ``row`` the sample's row in it.
INDEX_COLUMNS = ("input", "shard", "row", "predicted_class", "explained_class", "logit",
                 "relevance_sum")
SKIPPED_NAME = "skipped.csv"
#: Columns of ``skipped.csv``: every input that was skipped, and why.
SKIPPED_COLUMNS = ("input", "reason")
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class UsageError(Exception):
    """A bad option found after parsing; reported without a traceback, exit code 2."""


class InputProblem(Exception):
    """One input cannot be used; it is reported and skipped."""


def note(message: str, quiet: bool = False) -> None:
    """Print ``tf-lrp: message`` on stderr (through tqdm, so a progress bar stays intact)."""
    if not quiet:
        from tqdm import tqdm

        tqdm.write(f"tf-lrp: {message}", file=sys.stderr)


def shape_text(shape: Sequence[int | None]) -> str:
    """``(28, 28, 1)``; ``?`` for a dimension of any size."""
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"
