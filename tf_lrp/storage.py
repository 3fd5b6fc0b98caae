"""Atomic file writes: a file appears whole or not at all, also when the process is killed.

Used by the command line's writers (:mod:`tf_lrp.runs.outputs`) and the concept atlas
(:mod:`tf_lrp.concepts.atlas`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "temp_path"]


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (hidden: ``.<name>.<16 hex digits>.tmp``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its directory, ``fsync`` and :func:`os.replace`."""
    temp = temp_path(path)
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
