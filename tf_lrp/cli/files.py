"""``--format png,npy`` (the default): one ``<name>.png`` and one ``<name>.npy`` per sample and
``summary.csv``. For token models also ``<name>.csv`` (position, token id, token, relevance)
and ``<name>.html`` (the tokens coloured by relevance), and the PNG shows the coloured tokens.

The files are the record of what is done: a sample whose requested files all exist is done for
``--resume``. Each batch's files are made durable together (:class:`~tf_lrp.runs.outputs.DurableBatch`)
before their rows enter the summary; ``summary.csv`` is derived from the files and rewritten
whole (atomically) every 30 s, at the end and on interruption; a row lost to a crash is rebuilt
on ``--resume`` from a forward pass and the existing ``.npy``.
"""

from __future__ import annotations

import io
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from tf_lrp.cli.common import (
    AUTO_ZOOM_PIXELS,
    CSV_CHECKPOINT_SECONDS,
    STRIP_HEIGHT,
    SUMMARY_COLUMNS,
    SUMMARY_NAME,
)
from tf_lrp.runs.inputs import Entry
from tf_lrp.runs.outputs import (
    DurableBatch,
    Result,
    Skipped,
    atomic_write,
    csv_text,
    npy_bytes,
    read_csv,
)

FORMATS = ("png", "npy")


def relevance_maps(relevance: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """For a batch of samples of one shape: 2-D(+channels) maps to colour, and the images to
    overlay them on (``None``: no overlay)."""
    n, shape = len(relevance), relevance.shape[1:]
    if len(shape) == 1:
        rows = min(STRIP_HEIGHT, -(-shape[0] // 8))  # about 8:1, at most STRIP_HEIGHT
        return np.repeat(relevance[:, None], rows, axis=1), None
    if len(shape) == 2:
        return relevance, x
    if len(shape) == 3:
        return relevance, x if x.shape[-1] in (1, 3) else None
    return relevance.sum(axis=-1).reshape(n, -1, shape[-2]), None  # slices stacked


def pictures(relevance: np.ndarray, x: np.ndarray, input_range, zoom: int | None) -> list:
    """The PNG images of a batch of samples of one shape: heatmap, and the overlay beside it
    when the samples are images. Heatmaps are normalized per sample, so a batch gives what
    each sample alone gives."""
    from tf_lrp import visualize

    rmaps, images = relevance_maps(relevance, x)
    heat = visualize.heatmap(rmaps)
    tiles = [heat]
    if images is not None:
        tiles.append(visualize.overlay(heat, images, input_range=input_range))
    factor = zoom or max(1, AUTO_ZOOM_PIXELS // max(heat.shape[1:3]))
    tiles = [t.repeat(factor, axis=1).repeat(factor, axis=2) for t in tiles]
    if len(tiles) == 1:
        return list(tiles[0])
    return [visualize.grid(np.stack([a, b]), ncols=2, pad=2) for a, b in zip(*tiles)]


def picture(relevance: np.ndarray, x: np.ndarray, input_range, zoom: int | None) -> np.ndarray:
    """The PNG image of one sample (see :func:`pictures`)."""
    return pictures(relevance[None], x[None], input_range, zoom)[0]


def encode_png(rgb_uint8: np.ndarray) -> bytes:
    """PNG bytes of one uint8 image (fast zlib level: heatmaps compress well anyway)."""
    from PIL import Image

    pixels = rgb_uint8[..., 0] if rgb_uint8.ndim == 3 and rgb_uint8.shape[-1] == 1 else rgb_uint8
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG", compress_level=1)
    return stream.getvalue()


def summary_row(name: str, result: Result, relevance_sum: float) -> tuple[str, ...]:
    return (name, str(result.predicted),
            "all" if result.explained is None else str(result.explained),
            repr(float(result.logit)), repr(float(relevance_sum)))


class Summary:
    """``summary.csv``: one row per input name, in input order, rewritten whole and atomically.

    Rows are kept as tuples of strings keyed by name (about 200 bytes each); rows of an earlier
    run for inputs not in this run follow this run's, in their old order.
    """

    def __init__(self, path: Path, old: dict[str, tuple[str, ...]]):
        self.path, self.old = path, old
        self.rows: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._written = time.monotonic()
        self._lock = threading.Lock()  # rows of finished samples are added by the input thread

    @staticmethod
    def read(path: Path, quiet: bool) -> dict[str, tuple[str, ...]]:
        rows = read_csv(path, SUMMARY_COLUMNS, quiet) or []
        return {row[0]: tuple(row) for row in rows}

    def add(self, seq: int, row: tuple[str, ...]) -> None:
        with self._lock:
            self.rows[row[0]] = (seq, row)

    def write(self) -> None:
        with self._lock:
            rows = list(self.rows.values())
        ordered = [row for _, row in sorted(rows, key=lambda item: item[0])]
        ordered += [row for name, row in self.old.items() if name not in self.rows]
        text = csv_text(SUMMARY_COLUMNS, ordered).encode("utf-8")
        atomic_write(self.path, lambda stream: stream.write(text))
        self._written = time.monotonic()

    def checkpoint(self) -> None:
        if time.monotonic() - self._written > CSV_CHECKPOINT_SECONDS:
            self.write()


class FileSink:
    """Writes per-sample files and keeps ``summary.csv`` and ``skipped.csv``."""

    def __init__(self, out: Path, formats: tuple[str, ...], resume: bool, skip: Skipped,
                 zoom: int | None, quiet: bool, tokens: bool = False,
                 vocab: list[str] | None = None):
        self.out, self.formats, self.resume, self.skip, self.zoom = out, formats, resume, skip, zoom
        self.tokens, self.vocab = tokens, vocab
        self.summary = Summary(out / SUMMARY_NAME, Summary.read(out / SUMMARY_NAME, quiet)
                               if resume else {})
        self.explained = self.done = 0
        self._dirs: set[Path] = {out}
        self._executor = None

    def _path(self, name: str, ext: str) -> Path:
        return self.out / f"{name}.{ext}"

    def plan(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        """The entries still to do; with ``--resume`` a finished sample is left out (its old
        row kept), or sent for its summary row only when the row was lost."""
        for entry in entries:
            if not self.resume or entry.problem is not None or not all(
                    self._path(entry.name, ext).is_file() for ext in self.formats):
                yield entry
                continue
            self.done += 1
            old = self.summary.old.get(entry.name)
            if old is not None:
                self.summary.add(entry.seq, old)
            elif "npy" in self.formats:
                yield Entry(entry.seq, entry.name, entry.path, entry.index, explain=False)
            else:
                self.done -= 1  # no .npy to take the relevance sum from: explain it again
                yield entry

    def write(self, results: list[Result], input_range: tuple[float, float]) -> None:
        """Write one batch durably, then record its rows."""
        batch, rows = DurableBatch(self.out), []
        try:
            for result in results:
                entry = result.entry
                if result.problem is not None:
                    self.skip(entry.label, result.problem)
                    continue
                if not entry.explain:
                    total = self._existing_sum(entry)
                    if total is not None:
                        rows.append((entry.seq, summary_row(entry.name, result, total)))
                    continue
                relevance = result.relevance.astype(np.float32, copy=False)
                self._mkdir(entry.name)
                if "npy" in self.formats:
                    batch.add(self._path(entry.name, "npy"), npy_bytes(relevance))
                if "csv" in self.formats:
                    batch.add(self._path(entry.name, "csv"), self._token_csv(result, relevance))
                if "html" in self.formats:
                    batch.add(self._path(entry.name, "html"), self._token_html(result, relevance))
                total = float(np.sum(relevance, dtype=np.float64))
                rows.append((entry.seq, summary_row(entry.name, result, total)))
            if "png" in self.formats:
                self._pngs(batch, [r for r in results if r.problem is None and r.entry.explain],
                           input_range)
            batch.commit()
        except BaseException:
            batch.abort()
            raise
        for seq, row in rows:
            self.summary.add(seq, row)
        self.explained += sum(1 for r in results if r.problem is None and r.entry.explain)
        self.summary.checkpoint()

    def _word(self, token: int) -> str:
        if self.vocab is not None and 0 <= token < len(self.vocab):
            return self.vocab[token]
        return str(token)

    def _token_csv(self, result: Result, relevance: np.ndarray) -> bytes:
        tokens = np.asarray(result.x).astype(np.int64).ravel()
        rows = [(i, t, self._word(int(t)), f"{float(r):.8g}")
                for i, (t, r) in enumerate(zip(tokens, relevance.ravel()))]
        return csv_text(("position", "token_id", "token", "relevance"), rows).encode("utf-8")

    def _caption(self, result: Result) -> str:
        return f"{result.entry.name}: class {result.explained}, logit {result.logit:.4g}"

    def _token_html(self, result: Result, relevance: np.ndarray) -> bytes:
        from tf_lrp import visualize

        tokens = np.asarray(result.x).astype(np.int64)
        return visualize.tokens_html(tokens[None], relevance[None], self.vocab,
                                     labels=[self._caption(result)],
                                     title=f"Token relevance: {result.entry.name}"
                                     ).encode("utf-8")

    def _pngs(self, batch: DurableBatch, results: list[Result], input_range) -> None:
        """Draw the heatmaps of samples of one shape together; encode the PNGs in threads
        (zlib releases the GIL)."""
        if self.tokens:
            from tf_lrp import visualize

            for r in results:
                image = visualize.tokens_png(np.asarray(r.x).astype(np.int64)[None],
                                             r.relevance[None], self.vocab,
                                             labels=[self._caption(r)])
                batch.add(self._path(r.entry.name, "png"), encode_png(image))
            return
        groups: dict[tuple, list[Result]] = {}
        for r in results:
            groups.setdefault((r.relevance.shape, r.x.shape, r.entry.is_image), []).append(r)
        images, paths = [], []
        for (_, _, is_image), group in groups.items():
            images += pictures(np.stack([r.relevance for r in group]),
                               np.stack([r.x for r in group]),
                               input_range if is_image else None, self.zoom)
            paths += [self._path(r.entry.name, "png") for r in group]
        for path, data in zip(paths, self._pool().map(encode_png, images)):
            batch.add(path, data)

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)),
                                                thread_name_prefix="tf-lrp-png")
        return self._executor

    def _mkdir(self, name: str) -> None:
        parent = self._path(name, "npy").parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)

    def _existing_sum(self, entry: Entry) -> float | None:
        try:
            total = float(np.sum(np.load(self._path(entry.name, "npy")), dtype=np.float64))
        except Exception as err:
            self.skip(entry.label, f"its existing {entry.name}.npy cannot be read ({err}); "
                                   "delete it and run again")
            return None
        return total if math.isfinite(total) else None

    def close(self, complete: bool = True) -> None:
        """Write ``summary.csv`` and ``skipped.csv`` (also after an interruption: every row
        is of a committed batch)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.summary.write()
        self.skip.write()
