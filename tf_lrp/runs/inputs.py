"""The input side of ``tf-lrp explain``: lazy enumeration of inputs and their decoding.

Inputs are enumerated lazily, in a deterministic order (what ``--resume`` and shard numbering
rely on): the arguments in the order given; a directory depth-first with the entries of each
directory sorted by name (only the names of one directory are held at a time); a glob sorted;
a list file (``@paths.txt``) line by line. Every sample gets a sequence number in that order.
A problem found while enumerating (no such file, an ``.npy`` of the wrong shape, a taken output
name) is an entry too, so it is reported and recorded like a sample that fails to decode.

Decoding runs in a ``tf.data`` pipeline: chunks of entries are decoded in parallel (PIL and
``numpy`` inside ``tf.numpy_function``) and prefetched while the previous chunk is explained.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_lrp.runs.common import ARRAY_SUFFIX, IMAGE_MODES, IMAGE_SUFFIXES, InputProblem, shape_text

LIST_PREFIX = "@"
#: Chunks decoded at once by the tf.data pipeline (each chunk is one batch).
DECODE_THREADS = 2
_GLOB_CHARS = frozenset("*?[")
_SUFFIXES = (*IMAGE_SUFFIXES, ARRAY_SUFFIX)


def image_mode(shape: Sequence[int | None]) -> str | None:
    """The PIL mode images are converted to for a sample ``shape``; ``None``: not an image."""
    if len(shape) == 2:
        return "L"
    if len(shape) == 3:
        return IMAGE_MODES.get(shape[2])
    return None


@dataclass(frozen=True)
class InputSpec:
    """The model input one sample must match (no batch axis; ``None`` = any size)."""

    shape: tuple[int | None, ...]

    def matches(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            d is None or d == s for d, s in zip(self.shape, shape)
        )

    @property
    def fixed(self) -> bool:
        """Whether every dimension is known (samples can be stacked without grouping)."""
        return all(d is not None for d in self.shape)

    @property
    def image_mode(self) -> str | None:
        """The PIL mode images are converted to, ``None`` if the input is not an image."""
        return image_mode(self.shape)


@dataclass(frozen=True, slots=True)
class Entry:
    """One input sample (a file, or row ``index`` of an ``.npy`` batch), or a problem.

    ``seq`` numbers entries in enumeration order; ``name`` is the output name (a relative path
    without suffix); ``problem`` says why the entry cannot be used; ``explain=False`` asks only
    for its summary row (its files exist, ``--resume``).
    """

    seq: int
    name: str
    path: str
    index: int = -1
    problem: str | None = None
    explain: bool = True

    @property
    def label(self) -> str:
        return self.path if self.index < 0 else f"{self.path}[{self.index}]"

    @property
    def is_image(self) -> bool:
        return not self.path.lower().endswith(ARRAY_SUFFIX)


# ------------------------------------------------------------------------- enumeration


def _is_input_file(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(_SUFFIXES)


def _walk(root: str, prefix: str, visited: set) -> Iterator[tuple[str, str]]:
    """``(path, name)`` of the image and .npy files under ``root``, depth-first, by name."""
    try:
        stat = os.stat(root)
        key = (stat.st_dev, stat.st_ino)
        if key in visited:  # a symlink loop
            return
        visited.add(key)
        with os.scandir(root) as listing:
            children = sorted((e.name, e.is_dir()) for e in listing if not e.name.startswith("."))
    except OSError:
        return
    for name, is_dir in children:
        path = os.path.join(root, name)
        if is_dir:
            yield from _walk(path, f"{prefix}{name}/", visited)
        elif _is_input_file(name):
            yield path, prefix + os.path.splitext(name)[0]


def _list_file(path: str) -> Iterator[tuple[str, str]]:
    """``(path, name)`` per line of a list file (blank lines and ``#`` comments ignored);
    relative paths are relative to the list file's directory."""
    base = os.path.dirname(path)
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            target = line if os.path.isabs(line) else os.path.join(base, line)
            name = os.path.splitext(os.path.normpath(line))[0]
            if os.path.isabs(line) or name.startswith(".."):
                name = Path(line).stem
            yield target, name.replace(os.sep, "/")


def _glob(pattern: str) -> list[tuple[str, str]]:
    """``(path, name)`` of the files a glob matches, sorted; names relative to the pattern's
    fixed leading directory."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts))
    root = os.path.join(*parts[:fixed]) if fixed else "."
    matches = sorted(p for p in glob.iglob(pattern, recursive=True) if os.path.isfile(p))
    return [(p, os.path.splitext(os.path.relpath(p, root))[0].replace(os.sep, "/"))
            for p in matches]


def _files(raw: str) -> Iterator[tuple[str, str, str | None]]:
    """``(path, name, problem)`` for one command-line input."""
    if raw.startswith(LIST_PREFIX) and len(raw) > 1:
        listing = raw[1:]
        if not os.path.isfile(listing):
            yield listing, Path(listing).stem, "no such list file"
            return
        for path, name in _list_file(listing):
            yield path, name, None if os.path.exists(path) else "no such file or directory"
        return
    if os.path.isdir(raw):
        found = False
        for path, name in _walk(raw, "", set()):
            found = True
            yield path, name, None
        if not found:
            yield raw, Path(raw).name, "the directory holds no image or .npy files"
        return
    if os.path.exists(raw):
        yield raw, Path(raw).stem, None
        return
    if _GLOB_CHARS & set(raw):
        matches = [(p, n) for p, n in _glob(raw) if _is_input_file(os.path.basename(p))]
        if not matches:
            yield raw, raw, "the pattern matches no image or .npy files"
        for path, name in matches:
            yield path, name, None
        return
    yield raw, Path(raw).stem, "no such file or directory"


def open_array(path: str) -> np.ndarray:
    """An ``.npy`` file, memory-mapped; :class:`InputProblem` if it cannot be read."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise InputProblem(f"cannot be read as a .npy array ({err})") from None


def array_count(array: np.ndarray, spec: InputSpec) -> int | None:
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
        f"has shape {array.shape}; the model takes one sample of shape {shape_text(spec.shape)}"
        f" or a batch (n, {shape_text(spec.shape)[1:]}"
    )


def iter_entries(inputs: Sequence[str], spec: InputSpec) -> Iterator[Entry]:
    """Every sample of ``inputs`` as an :class:`Entry`, lazily, in a deterministic order.

    Directories are walked recursively (hidden entries and other suffixes ignored); a file
    named explicitly is always an entry (one that is not an image or ``.npy`` fails to decode
    with the reason). An output name already taken, e.g. ``a.png`` beside ``a.npy``, makes a
    problem entry. Memory: the names of one directory, and the set of output names given out.
    """
    seq, names, seen_roots = 0, set(), set()
    for raw in inputs:
        root = os.path.realpath(raw)
        if root in seen_roots and os.path.exists(raw):  # the same file or directory twice
            continue
        seen_roots.add(root)
        for path, name, problem in _files(raw):
            rows: Iterable[tuple[str, int]] = [(name, -1)]
            if problem is None and path.lower().endswith(ARRAY_SUFFIX):
                try:
                    count = array_count(open_array(path), spec)
                except InputProblem as err:
                    problem = str(err)
                else:
                    if count is not None:
                        rows = ((f"{name}_{i}", i) for i in range(count))
            for row_name, index in rows:
                if problem is None and row_name in names:
                    problem = (f"its output name {row_name!r} is taken by an earlier input; "
                               "rename one of them or explain them separately")
                    entry = Entry(seq, row_name, path, index, problem)
                    problem = None
                else:
                    entry = Entry(seq, row_name, path, index, problem)
                    names.add(row_name)
                seq += 1
                yield entry


# ---------------------------------------------------------------------------- decoding


def read_image(path: str, spec: InputSpec, scale: tuple[float, float]) -> np.ndarray:
    """An image file as a model input: channels converted, resized, scaled to ``scale``."""
    from PIL import Image, ImageOps

    mode = spec.image_mode
    if mode is None:
        raise InputProblem(
            f"is an image, but the model input {shape_text(spec.shape)} is not (height, width"
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


class Decoder:
    """Decodes entries to float32 samples; memory-maps the most recent ``.npy`` file."""

    def __init__(self, spec: InputSpec, scale: tuple[float, float]):
        self.spec, self.scale = spec, scale
        self._path: str | None = None
        self._array: np.ndarray | None = None

    def _row(self, path: str, index: int) -> np.ndarray:
        if path != self._path or self._array is None:
            self._array, self._path = None, None  # release the previous mapping first
            self._array, self._path = open_array(path), path
        data = self._array if index < 0 else self._array[index]
        if not self.spec.matches(data.shape):
            raise InputProblem(f"has shape {data.shape}; the model takes one sample of shape "
                               f"{shape_text(self.spec.shape)}")
        return np.array(data, dtype=np.float32)

    def rows(self, path: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of an ``.npy`` batch (checked when it was enumerated), float32."""
        if path != self._path or self._array is None:
            self._array, self._path = None, None
            self._array, self._path = open_array(path), path
        return np.asarray(self._array[lo:hi], dtype=np.float32)

    def __call__(self, path: str, index: int) -> np.ndarray:
        """One sample; :class:`InputProblem` names what is wrong with it."""
        if path.lower().endswith(ARRAY_SUFFIX):
            x = self._row(path, index)
        else:
            x = read_image(path, self.spec, self.scale)
        if not np.isfinite(x).all():
            raise InputProblem("contains NaN or Inf values")
        return x


#: One decoded chunk: ``(entry, sample or None, problem or None)`` in entry order.
Decoded = list[tuple[Entry, "np.ndarray | None", "str | None"]]


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_chunk(decoder: Decoder, chunk: list[Entry]) -> Decoded:
    out: Decoded = []
    for entry in chunk:
        if entry.problem is not None:
            out.append((entry, None, entry.problem))
            continue
        try:
            out.append((entry, decoder(entry.path, entry.index), None))
        except InputProblem as problem:
            out.append((entry, None, str(problem)))
    return out


def decoded_chunks(entries: Iterable[Entry], spec: InputSpec, scale: tuple[float, float],
                   chunk_size: int, parallel: int | None = None) -> Iterator[Decoded]:
    """Decode ``entries`` in chunks of ``chunk_size``, in order, ahead of the consumer.

    For a model with a fixed input shape the chunks go through a ``tf.data`` pipeline
    (``from_generator`` -> parallel ``map`` of a ``numpy_function`` -> ``prefetch``): up to
    ``parallel`` chunks (default: autotuned) are decoded while the consumer works on an earlier
    one. For a model that takes any size, samples of one chunk may differ in shape and are
    decoded in the calling thread.
    """
    if not spec.fixed:
        decoder = Decoder(spec, scale)
        for chunk in _chunks(entries, chunk_size):
            yield _decode_chunk(decoder, chunk)
        return

    import tensorflow as tf

    pending: deque[list[Entry]] = deque()
    by_seq: dict[int, Entry] = {}

    def generate():  # runs in a tf.data thread, ahead of the consumer
        for chunk in _chunks(entries, chunk_size):
            for entry in chunk:
                by_seq[entry.seq] = entry
            pending.append(chunk)
            yield np.array([e.seq for e in chunk], np.int64)

    def decode(seqs: np.ndarray):  # runs in parallel threads: few Python steps per sample
        decoder = Decoder(spec, scale)
        chunk = [by_seq[seq] for seq in seqs.tolist()]
        x = np.zeros((len(chunk), *spec.shape), np.float32)
        problems = [e.problem for e in chunk]
        i = 0
        while i < len(chunk):
            entry = chunk[i]
            j = i + 1  # a run of consecutive rows of one .npy batch: one slice
            while (j < len(chunk) and entry.index >= 0 and chunk[j].path == entry.path
                   and chunk[j].index == entry.index + (j - i) and chunk[j].problem is None):
                j += 1
            if entry.problem is None and j - i > 1:
                rows = decoder.rows(entry.path, entry.index, entry.index + j - i)
                x[i:j] = rows
                bad = ~np.isfinite(rows.reshape(j - i, -1)).all(axis=1)
                for k in np.flatnonzero(bad):
                    problems[i + k] = "contains NaN or Inf values"
            elif entry.problem is None:
                try:
                    x[i] = decoder(entry.path, entry.index)
                except InputProblem as err:
                    problems[i] = str(err)
            i = j
        return x, np.array([(p or "").encode("utf-8") for p in problems], dtype=object)

    dataset = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec([None], tf.int64))
    dataset = dataset.map(
        lambda seqs: tf.numpy_function(decode, [seqs], (tf.float32, tf.string), stateful=False),
        num_parallel_calls=parallel or DECODE_THREADS, deterministic=True).prefetch(1)
    # fixed, small parallelism: the explanation needs the cores; the autotuner's own thread
    # and buffers cost more than they gain here (measured on 2 cores)
    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.max_intra_op_parallelism = 1
    for x, problems in dataset.with_options(options).as_numpy_iterator():
        chunk = pending.popleft()
        for entry in chunk:
            by_seq.pop(entry.seq, None)
        yield [(entry, None if p else x[i], p.decode() if p else None)
               for i, (entry, p) in enumerate(zip(chunk, problems.tolist()))]


def decoded_batches(inputs: Sequence[str], spec, scale, batch_size: int, problems: list
                    ) -> Iterator[tuple[list[str], object]]:
    """``(names, batch)`` of the inputs that decode; the others go to ``problems``."""
    decoder = Decoder(spec, scale)
    names: list[str] = []
    rows: list = []
    for entry in iter_entries(inputs, spec):
        try:
            if entry.problem is not None:
                raise InputProblem(entry.problem)
            rows.append(decoder(entry.path, entry.index))
            names.append(entry.name)
        except InputProblem as problem:
            problems.append((entry.label, str(problem)))
        if len(rows) == batch_size:
            yield names, np.stack(rows)
            names, rows = [], []
    if rows:
        yield names, np.stack(rows)
