"""``--format shards``: relevance in shards of N samples, with an index.

Layout of the output directory::

    shards/shard-000000.npy   float32 (n, *sample_shape): the relevance of shard 0's samples
    shards/shard-000000.csv   its rows: input,row,predicted_class,...,error (skipped: error set)
    shards/manifest.json      shard size and sample shape (checked by --resume)
    index.csv                 input,shard,row,predicted_class,explained_class,logit,relevance_sum
    skipped.csv               input,reason

Shard ``k`` holds the entries numbered ``k*N .. k*N+N-1`` in input order (see
:mod:`tf_lrp.runs.inputs`); skipped entries have no row in the ``.npy``. A shard is done when its
``.csv`` exists (it is moved into place after its ``.npy``, both synced first). ``index.csv``
and ``skipped.csv`` are appended after each shard and rebuilt from the shard ``.csv`` files by
``--resume``. Read them with ``pandas.read_csv(out / "index.csv")`` and
``np.load(out / row.shard, mmap_mode="r")[row.row]``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tf_lrp.runs.common import INDEX_COLUMNS, INDEX_NAME, SKIPPED_COLUMNS, UsageError
from tf_lrp.runs.inputs import Entry
from tf_lrp.runs.outputs import (
    DurableBatch,
    Result,
    Skipped,
    atomic_write,
    csv_text,
    temp_path,
)

SHARD_DIR = "shards"
SHARD_COLUMNS = ("input", "row", "predicted_class", "explained_class", "logit",
                 "relevance_sum", "error")
_SHARD_FILE = re.compile(r"^shard-(\d{6,})\.(npy|csv)$")
_HEADER_BYTES = 256  # fixed, so the row count can be rewritten in place


def npy_header(shape: tuple[int, ...], dtype=np.float32) -> bytes:
    """A version 1.0 ``.npy`` header of exactly 256 bytes for a C-order array."""
    text = f"{{'descr': {np.dtype(dtype).str!r}, 'fortran_order': False, " \
           f"'shape': {tuple(shape)!r}, }}"
    body = text.ljust(_HEADER_BYTES - 10 - 1) + "\n"
    if len(body) != _HEADER_BYTES - 10:
        raise ValueError(f"sample shape {shape} is too long for a shard header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def shard_name(k: int, ext: str) -> str:
    return f"shard-{k:06d}.{ext}"


class _OpenShard:
    """The shard being filled: relevance rows streamed to a temporary ``.npy``."""

    def __init__(self, directory: Path, k: int, capacity: int, sample_shape: tuple[int, ...]):
        self.k, self.sample_shape = k, sample_shape
        self.path = directory / shard_name(k, "npy")
        self.temp = temp_path(self.path)
        self.stream = open(self.temp, "xb")  # noqa: SIM115 - closed by finish() or abort()
        self.stream.write(npy_header((capacity, *sample_shape)))
        self.n = 0
        self.rows: list[tuple[str, ...]] = []

    def add(self, result: Result, explained_text: str, skip: Skipped) -> tuple[str, ...] | None:
        entry = result.entry
        if result.problem is not None:
            skip(entry.label, result.problem, record=False)
            self.rows.append((entry.label, "", "", "", "", "", result.problem))
            return None
        relevance = np.ascontiguousarray(result.relevance, dtype=np.float32)
        if relevance.shape != self.sample_shape:
            raise UsageError(f"the relevance of {entry.label} has shape {relevance.shape}, not "
                             f"the shard's {self.sample_shape}")
        self.stream.write(relevance.tobytes())
        row = (entry.label, str(self.n), str(result.predicted), explained_text,
               repr(float(result.logit)), repr(float(np.sum(relevance, dtype=np.float64))), "")
        self.rows.append(row)
        self.n += 1
        return row

    def finish(self) -> None:
        self.stream.seek(0)
        self.stream.write(npy_header((self.n, *self.sample_shape)))
        self.stream.close()

    def abort(self) -> None:
        self.stream.close()
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.temp)


def _append(path: Path, columns, rows) -> None:
    """Append CSV rows (with the header if the file is new) and fsync."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", encoding="utf-8", newline="") as stream:
        stream.write(csv_text(columns, rows, header=new))
        stream.flush()
        os.fsync(stream.fileno())


class ShardSink:
    """Writes shards and keeps ``index.csv`` and ``skipped.csv`` (see the module docstring)."""

    def __init__(self, out: Path, shard_size: int, sample_shape: tuple[int, ...], resume: bool,
                 skip: Skipped):
        self.out, self.size, self.shape, self.skip = out, shard_size, tuple(sample_shape), skip
        self.dir = out / SHARD_DIR
        self.dir.mkdir(exist_ok=True)
        self.index, self.skipped_path = out / INDEX_NAME, skip.path
        self.explained = self.done = 0
        self.current: _OpenShard | None = None
        self.done_shards = self._recover() if resume else self._clear()
        self.committed: set[int] = set()
        self._write_manifest()

    # ------------------------------------------------------------------ start
    def _manifest(self) -> dict:
        return {"shard_size": self.size, "sample_shape": list(self.shape), "version": 1}

    def _write_manifest(self) -> None:
        text = json.dumps(self._manifest()).encode()
        atomic_write(self.dir / "manifest.json", lambda stream: stream.write(text))

    def _shard_files(self) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        for name in os.listdir(self.dir):
            match = _SHARD_FILE.match(name)
            if match:
                found.setdefault(int(match.group(1)), set()).add(match.group(2))
        return found

    def _clear(self) -> set[int]:
        for k, exts in self._shard_files().items():
            for ext in exts:
                os.remove(self.dir / shard_name(k, ext))
        for path in (self.index, self.skipped_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return set()

    def _recover(self) -> set[int]:
        """Done shards of an earlier run; half-written ones are removed; the index and the
        skipped list are rebuilt from the shard ``.csv`` files."""
        manifest = self.dir / "manifest.json"
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("shard_size") != self.size or old.get("sample_shape") != list(self.shape):
                raise UsageError(
                    f"--resume: {self.out} holds shards of {old.get('shard_size')} samples of "
                    f"shape {tuple(old.get('sample_shape') or ())}; this run makes "
                    f"{self.size} of {self.shape}. Resume with --shard-size "
                    f"{old.get('shard_size')} and the same model, or choose another --out")
        done = set()
        for k, exts in sorted(self._shard_files().items()):
            if "csv" in exts and "npy" in exts and self._consistent(k):
                done.add(k)
                continue
            for ext in exts:
                os.remove(self.dir / shard_name(k, ext))
        skipped = self._rebuild(done)
        self.skip.count += skipped  # still skipped: the exit code says so
        return done

    def _rebuild(self, shards: Iterable[int]) -> int:
        """Rewrite ``index.csv`` and ``skipped.csv`` from the ``.csv`` of ``shards``, in shard
        order; return the number of skipped rows."""
        index_rows, skipped_rows = [], []
        for k in sorted(shards):
            for row in self._rows(k):
                if row[-1]:
                    skipped_rows.append((row[0], row[-1]))
                else:
                    index_rows.append((row[0], f"{SHARD_DIR}/{shard_name(k, 'npy')}", *row[1:-1]))
        text = csv_text(INDEX_COLUMNS, index_rows).encode("utf-8")
        atomic_write(self.index, lambda stream: stream.write(text))
        self.skip.write(skipped_rows)
        return len(skipped_rows)

    def _rows(self, k: int) -> list[list[str]]:
        with open(self.dir / shard_name(k, "csv"), newline="", encoding="utf-8") as stream:
            reader = csv.reader(stream)
            if tuple(next(reader, ())) != SHARD_COLUMNS:
                return []
            return list(reader)

    def _consistent(self, k: int) -> bool:
        try:
            rows = self._rows(k)
            count = np.load(self.dir / shard_name(k, "npy"), mmap_mode="r").shape[0]
        except (OSError, ValueError, csv.Error):
            return False
        return bool(rows) and count == sum(1 for row in rows if not row[-1])

    # ------------------------------------------------------------------ run
    def plan(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        """The entries of shards not done yet."""
        for entry in entries:
            if entry.seq // self.size in self.done_shards:
                self.done += 1
            else:
                yield entry

    def write(self, results: list[Result], input_range: tuple[float, float]) -> None:
        for result in results:
            k = result.entry.seq // self.size
            if self.current is not None and self.current.k != k:
                self._commit()
            if self.current is None:
                self.current = _OpenShard(self.dir, k, self.size, self.shape)
            explained = "all" if result.explained is None else str(result.explained)
            if self.current.add(result, explained, self.skip) is not None:
                self.explained += 1

    def _commit(self) -> None:
        shard, self.current = self.current, None
        shard.finish()
        batch = DurableBatch(self.dir)
        try:
            batch.add_file(shard.temp, shard.path)
            batch.add(self.dir / shard_name(shard.k, "csv"),
                      csv_text(SHARD_COLUMNS, shard.rows).encode("utf-8"))
            batch.commit()
        except BaseException:
            batch.abort()
            raise
        self.committed.add(shard.k)
        good = [(r[0], f"{SHARD_DIR}/{shard.path.name}", *r[1:-1]) for r in shard.rows if not r[-1]]
        _append(self.index, INDEX_COLUMNS, good)
        bad = [(r[0], r[-1]) for r in shard.rows if r[-1]]
        if bad:
            _append(self.skipped_path, SKIPPED_COLUMNS, bad)

    def close(self, complete: bool = True) -> None:
        """Commit the last shard if the input stream ended; drop it if the run was cut short."""
        if self.current is None:
            if not self.index.exists():  # nothing at all: still an index with its header
                atomic_write(self.index, lambda s: s.write(csv_text(INDEX_COLUMNS, []).encode()))
            return
        if complete:
            self._commit()
        else:
            self.current.abort()
            self.current = None
        if self.committed and self.done_shards and min(self.committed) < max(self.done_shards):
            self._rebuild(self.done_shards | self.committed)  # appended out of shard order
