"""The output side shared by both formats: atomic and durable writes, the output directory's
lock and clean-up, CSV files, the skipped list and the progress display.

Durability in batches: the files of one batch are written to temporary files (no sync each),
then made durable together with **one** ``syncfs(2)`` of the output file system (Linux; one
``fsync`` per file elsewhere), then moved into place with :func:`os.replace` and the directories
synced once. A crash or ``SIGKILL`` at any point leaves complete files only; temporary files
left behind are removed by the next run (which holds the directory's lock).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tf_lrp.runs.common import SKIPPED_COLUMNS, SKIPPED_NAME, UsageError, note
from tf_lrp.runs.inputs import Entry
from tf_lrp.storage import atomic_write, temp_path  # noqa: F401 (re-exported)

TEMP_PATTERN = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp$")


@dataclass(slots=True)
class Result:
    """What the engine made of one entry: relevance (``None`` for a summary-row-only entry),
    the predicted and explained class (``None``: all outputs), the explained logit, or the
    problem that made it skip."""

    entry: Entry
    x: np.ndarray | None = None
    relevance: np.ndarray | None = None
    predicted: int = -1
    explained: int | None = None
    logit: float = 0.0
    problem: str | None = None


def _libc_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    return function


_SYNCFS = _libc_syncfs()


def sync_files(paths: Sequence[Path], root: Path) -> None:
    """Make the contents of ``paths`` durable: one ``syncfs`` of ``root``'s file system on
    Linux, an ``fsync`` per file elsewhere (or where ``syncfs`` fails)."""
    if _SYNCFS is not None and paths:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sync_directories(directories: Iterable[Path]) -> None:
    """``fsync`` directories, so renames in them are durable (no-op where unsupported)."""
    for directory in directories:
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


class DurableBatch:
    """Files written together: temporary files first, one sync, then all renamed into place."""

    def __init__(self, root: Path):
        self.root = root
        self._items: list[tuple[Path, Path]] = []

    def add(self, path: Path, data: bytes) -> None:
        temp = temp_path(path)
        self._items.append((temp, path))
        with open(temp, "xb") as stream:
            stream.write(data)

    def add_file(self, temp: Path, path: Path) -> None:
        """A temporary file written by the caller (closed), to be renamed to ``path``."""
        self._items.append((temp, path))

    def commit(self) -> None:
        """Sync every file once, rename them into place, sync their directories."""
        if not self._items:
            return
        sync_files([temp for temp, _ in self._items], self.root)
        for temp, path in self._items:
            os.replace(temp, path)
        sync_directories({path.parent for _, path in self._items})
        self._items.clear()

    def abort(self) -> None:
        for temp, _ in self._items:
            with contextlib.suppress(FileNotFoundError):
                os.remove(temp)
        self._items.clear()


def npy_bytes(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


# ------------------------------------------------------------------ the output directory


def output_dir(path: str) -> Path:
    """``--out``: created if missing; :class:`UsageError` if it is a file or cannot be made."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output directory {path}: {err}") from None
    return out


@contextlib.contextmanager
def locked(out: Path):
    """Hold an exclusive lock on the directory ``out`` (``flock`` on the directory itself: no
    lock file to leave behind; released by the kernel when the process dies, even on SIGKILL).

    Raises
    ------
    UsageError
        If another ``tf-lrp explain`` writes to ``out``.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another tf-lrp explain is writing to {out}; wait for it to end "
                             "or choose another --out") from None
        yield
    finally:
        os.close(fd)


def remove_temporaries(out: Path) -> int:
    """Delete temporary files an interrupted run left under ``out``; return how many."""
    removed = 0
    for root, dirs, files in os.walk(out):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if TEMP_PATTERN.match(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                removed += 1
    return removed


# --------------------------------------------------------------------------------- CSV


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]], header: bool = True) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows(rows)
    return text.getvalue()


def read_csv(path: Path, columns: Sequence[str], quiet: bool) -> list[list[str]] | None:
    """The rows of a CSV file with exactly ``columns``; ``None`` (with a warning) if it is
    unreadable or has other columns, ``[]`` if it does not exist."""
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            if tuple(header or ()) != tuple(columns):
                raise csv.Error(f"columns {header} are not {list(columns)}")
            return [row for row in reader if len(row) == len(columns)]
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        note(f"warning: ignoring the existing {path} ({err}); its rows are rebuilt", quiet)
        return None


class Skipped:
    """Inputs skipped in this run: reported on stderr at once, listed in ``skipped.csv``."""

    def __init__(self, out: Path):
        self.path = out / SKIPPED_NAME
        self.rows: list[tuple[str, str]] = []
        self.count = 0

    def __call__(self, label: str, reason: str, record: bool = True) -> None:
        from tqdm import tqdm

        self.count += 1
        tqdm.write(f"tf-lrp: skipped {label}: {reason}", file=sys.stderr)
        if record:
            self.rows.append((label, reason))

    def write(self, rows: Sequence[tuple[str, str]] | None = None) -> None:
        """``skipped.csv`` with ``rows`` (default: this run's); removed when there are none."""
        rows = self.rows if rows is None else rows
        if not rows:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
            return
        text = csv_text(SKIPPED_COLUMNS, rows).encode("utf-8")
        atomic_write(self.path, lambda stream: stream.write(text))


# ---------------------------------------------------------------------------- progress


class Progress:
    """A tqdm bar (samples/s and ETA) on a terminal; on a log, a line every ``log_seconds``.

    The total is counted in a background thread (enumeration only, no decoding), so the run
    starts at once and the ETA appears when the count is known.
    """

    def __init__(self, count: Callable[[], int] | None, quiet: bool, log_seconds: float = 60.0):
        from tqdm import tqdm

        self.start = time.monotonic()
        self.quiet, self.log_seconds = quiet, log_seconds
        self.n, self.total = 0, None
        self._logged = self.start
        self.bar = tqdm(total=None, unit="sample", file=sys.stderr, dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty())
        if count is not None and not quiet:
            threading.Thread(target=self._count, args=(count,), daemon=True).start()

    def _count(self, count: Callable[[], int]) -> None:
        try:
            total = count()
        except Exception:  # the run itself reports problems with the inputs
            return
        self.total = total
        if not self.bar.disable:
            self.bar.total = total
            self.bar.refresh()

    def update(self, n: int) -> None:
        self.n += n
        self.bar.update(n)
        now = time.monotonic()
        if self.bar.disable and not self.quiet and now - self._logged >= self.log_seconds:
            self._logged = now
            rate = self.n / max(now - self.start, 1e-9)
            left = ""
            if self.total:
                eta = max(self.total - self.n, 0) / max(rate, 1e-9)
                left = f" of {self.total}, ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
            note(f"{self.n} samples{left} ({rate:.1f} samples/s)")

    def close(self) -> float:
        """Close the bar; return the seconds since the start."""
        self.bar.close()
        return time.monotonic() - self.start
