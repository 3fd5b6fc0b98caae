"""Explanations on a Ray cluster with Ray Data (optional: ``pip install "tf_lrp[ray]"``).

Offline batch inference is what Ray Data does: ``map_batches`` with a stateful callable class
runs an actor pool (each actor loads the model once; GPUs per actor; failed tasks retried on a
restarted actor), streams blocks through the object store and spills them when memory is short.

>>> import ray
>>> from tf_lrp.ray import Explainer
>>> ds = ray.data.read_images("s3://bucket/images", size=(224, 224), mode="RGB")
>>> ds = ds.map_batches(Explainer, fn_constructor_kwargs={"model": "model.keras",
...                     "composite": "epsilon_plus"}, batch_size=64,
...                     compute=ray.data.ActorPoolStrategy(size=4), num_gpus=1)
>>> ds.write_parquet("s3://bucket/relevance")   # or explain_dataset(...) for tf_lrp shards

:func:`explain_dataset` is the one-call version (read, explain, write shards and
``index.csv``); ``tf-lrp explain ... --ray [ADDRESS]`` runs the command line's job on a cluster
(:class:`EntryEngine`: the inputs are enumerated and the outputs written on the driver, decoding
and explaining run in Ray tasks and actors, with ``--resume`` as in a local run).

The module is named after the library it wraps; inside it ``import ray`` is the Ray package
(absolute imports), and ``tf_lrp.ray`` is only imported on request.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import ray
    import ray.data
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tf_lrp.ray needs Ray Data: pip install 'tf_lrp[ray]' (or pip install 'ray[data]')"
    ) from err

__all__ = ["Explainer", "explain_dataset", "init", "EntryEngine", "Job"]

#: Output columns of :class:`Explainer` (besides the columns passed through).
COLUMNS = ("relevance", "predicted_class", "explained_class", "logit", "relevance_sum")
#: Entries per block of a run's one Ray Data job (the driver puts them in the object store
#: block by block, where they spill to disk if memory is short).
SPOOL_ROWS = 20_000


class Explainer:
    """A Ray Data callable class: explains batches with LRP, loading the model once per actor.

    Parameters
    ----------
    model
        Path of a ``.keras``/``.h5`` file, read by each actor (it must be readable there: a
        shared file system or object store mount), or a ``keras.Model`` (pickled to actors).
    composite
        A composite name (``"epsilon_gamma_box"``) or object, or a rule, as for
        :class:`tf_lrp.Analyzer`.
    column
        The input column (``"image"`` for ``read_images``, ``"data"`` for ``read_numpy``).
    target
        Explain this class for every row; ``None``: each row's predicted class.
    start, output, batch_size
        As for :class:`tf_lrp.Analyzer`.
    input_range
        For integer (``uint8`` image) columns: the range pixel values 0..255 are mapped to
        (default: as they are, for models that start with a ``Rescaling`` layer).
    valid_column
        A boolean column: rows where it is false are passed through unexplained (zero
        relevance, class -1).
    keep_input
        Keep the input column in the output (dropped by default: it is not needed downstream).
    safe_mode, custom_objects
        As for :func:`tf_lrp.load_model`.
    **composite_kwargs
        Parameters of a composite given by name (e.g. ``low``, ``high``).

    Returns
    -------
    Each call returns the batch's other columns plus ``relevance`` (float32, the input's
    shape), ``predicted_class``, ``explained_class`` (-1 for ``start="all"``), ``logit`` and
    ``relevance_sum``.
    """

    def __init__(self, model, composite: Any = "epsilon_plus", *, column: str = "image",
                 target: int | None = None, start: str = "output", output=None,
                 batch_size: int | None = None, input_range: tuple[float, float] | None = None,
                 valid_column: str | None = None, keep_input: bool = False,
                 safe_mode: bool = True, custom_objects: dict | None = None,
                 **composite_kwargs):
        import warnings

        import tf_lrp

        if isinstance(model, (str, Path)):
            model = tf_lrp.load_model(model, custom_objects=custom_objects, safe_mode=safe_mode)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*softmax")  # logits are explained
            self.analyzer = tf_lrp.Analyzer(model, composite, start=start, output=output,
                                            batch_size=batch_size, **composite_kwargs)
        self.column, self.target, self.start = column, target, start
        self.input_range, self.valid_column, self.keep_input = input_range, valid_column, keep_input

    def _inputs(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind in "iu" and self.input_range is not None:
            low, high = self.input_range
            return (low + x.astype(np.float32) * ((high - low) / 255.0)).astype(np.float32)
        return np.asarray(x, dtype=np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"Explainer: no column {self.column!r} in the batch (columns: "
                           f"{', '.join(batch)}); pass column=<the input column>")
        x = self._inputs(batch[self.column])
        n = len(x)
        valid = np.ones(n, bool) if self.valid_column is None else \
            np.asarray(batch[self.valid_column], bool)
        relevance = np.zeros(x.shape, np.float32)
        predicted = np.full(n, -1, np.int64)
        explained = np.full(n, -1, np.int64)
        logit = np.zeros(n, np.float64)
        if valid.any():
            xv = x[valid]
            y = self.analyzer.predict(xv)
            pred = np.argmax(y, axis=1)
            everything = self.start == "all"
            target = pred if self.target is None else np.full(len(xv), self.target)
            relevance[valid] = self.analyzer(xv, None if everything else target)
            predicted[valid] = pred
            explained[valid] = -1 if everything else target
            logit[valid] = y.sum(axis=1) if everything else y[np.arange(len(xv)), target]
        out = {k: v for k, v in batch.items() if k != self.column or self.keep_input}
        out.update(relevance=relevance, predicted_class=predicted, explained_class=explained,
                   logit=logit,
                   relevance_sum=relevance.reshape(n, -1).sum(axis=1, dtype=np.float64))
        return out


def init(address: str | None = None, **kwargs) -> None:
    """Connect to Ray once: ``address`` ``"auto"``, ``"ray://host:10001"`` or ``host:6379``;
    ``None`` or ``"local"`` starts a local instance. A no-op if Ray is already initialized."""
    if ray.is_initialized():
        return
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    ray.init(address=None if address in (None, "local") else address, **kwargs)


@contextlib.contextmanager
def _ordered():
    """Ray Data keeps block order (shards are numbered in input order); its progress bars and
    progress log lines are left to the caller's own progress display."""
    import logging

    context = ray.data.DataContext.get_current()
    options, logger = context.execution_options, logging.getLogger("ray.data")
    before = options.preserve_order, context.enable_progress_bars, logger.level
    options.preserve_order, context.enable_progress_bars = True, False
    logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        options.preserve_order, context.enable_progress_bars = before[:2]
        logger.setLevel(before[2])


def _compute(actors: int | None):
    if actors:
        return ray.data.ActorPoolStrategy(size=actors)
    return ray.data.ActorPoolStrategy(min_size=1, max_size=None)


def _explained(batch: dict[str, np.ndarray], i: int) -> int | None:
    value = int(batch["explained_class"][i])
    return None if value < 0 else value


# ------------------------------------------------------------------ one-call helper


def explain_dataset(model, source, out: str | Path, composite: Any = "epsilon_plus", *,
                    column: str | None = None, shard_size: int = 1000, batch_size: int = 32,
                    actors: int | None = None, num_gpus: float = 0.0,
                    input_range: tuple[float, float] | None = None, resume: bool = False,
                    explainer: type = Explainer, ray_remote_args: dict | None = None,
                    **explainer_kwargs) -> Path:
    """Read, explain and write shards in one call.

    Parameters
    ----------
    model
        Path of the model file (read by every actor) or a ``keras.Model``.
    source
        Image files, ``.npy`` arrays (one sample or a batch) or directories (walked
        recursively), one or a list: enumerated and decoded exactly as ``tf-lrp explain`` does
        (images converted to the model's channels and size), in one streaming Ray job; or a
        ``ray.data.Dataset`` (its ``column`` is explained as it is).
    out
        Output directory: ``shards/shard-NNNNNN.npy`` of ``shard_size`` rows and ``index.csv``
        (see :mod:`tf_lrp.runs.shards`), rows in the order of the source; inputs that cannot
        be decoded are listed in ``skipped.csv``.
    composite, **explainer_kwargs
        Passed to :class:`Explainer` (``column`` defaults to ``"image"`` for a Dataset).
    input_range
        The range pixel values 0..255 of image files (or ``uint8`` Dataset columns) are mapped
        to; default: as they are (models that start with a ``Rescaling`` layer).
    resume
        Keep the shards a previous (killed) run into ``out`` completed and explain only the
        rest, like ``tf-lrp explain --resume``. Needs files or directories as the source (a
        Dataset's rows have no numbering a second run could match).
    batch_size, actors, num_gpus
        Rows per ``map_batches`` call; a fixed actor pool (default: autoscaling from 1);
        GPUs per actor.
    explainer
        The callable class (a subclass of :class:`Explainer`, e.g. with extra columns).
    ray_remote_args
        More arguments for the actors (e.g. ``{"max_restarts": 3}``; by default Ray Data
        restarts a dead actor and retries its tasks).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    from tf_lrp.errors import InputError
    from tf_lrp.runs.inputs import InputSpec, iter_entries
    from tf_lrp.runs.outputs import Skipped, locked, output_dir, remove_temporaries
    from tf_lrp.runs.shards import ShardSink

    init()
    if isinstance(source, ray.data.Dataset):
        if resume:
            raise InputError("explain_dataset(resume=True) needs files or directories as the "
                             "source: the rows of a ray.data.Dataset have no numbering a second "
                             "run could match. Pass the paths, or run without resume")
        return _explain_rows(model, source, out, composite, column or "image", shard_size,
                             batch_size, actors, num_gpus, input_range, explainer,
                             ray_remote_args, explainer_kwargs)
    shape = _input_shape(model)
    if None in shape:
        raise InputError(f"explain_dataset needs a model with a fixed input shape; this one "
                         f"takes {shape}")
    spec = InputSpec(shape)
    paths = [str(p) for p in (source if isinstance(source, (list, tuple)) else [source])]
    scale = tuple(input_range) if input_range is not None else (0.0, 255.0)
    out = output_dir(str(out))
    with locked(out):
        remove_temporaries(out)
        skip = Skipped(out)
        sink = ShardSink(out, shard_size, shape, resume, skip)
        job = Job(shape=shape, scale=scale, batch_size=batch_size,
                  compute=_compute(actors), num_gpus=num_gpus, explainer=explainer,
                  explainer_kwargs={"model": model, "composite": composite, **explainer_kwargs},
                  keep_input=False, remote_args=ray_remote_args)
        complete = False
        try:
            for results in job.results(sink.plan(iter_entries(paths, spec))):
                sink.write(results, scale)
            complete = True
        finally:
            sink.close(complete)
    if sink.explained + sink.done + skip.count == 0:
        raise InputError(f"explain_dataset: the source {source!r} holds no inputs")
    return out


def _input_shape(model) -> tuple:
    import tf_lrp

    loaded = tf_lrp.load_model(model) if isinstance(model, (str, Path)) else model
    return tuple(loaded.input_shape[1:])


def _explain_rows(model, dataset, out, composite, column, shard_size, batch_size, actors,
                  num_gpus, input_range, explainer, ray_remote_args, explainer_kwargs) -> Path:
    """A ``ray.data.Dataset``: its ``column`` explained as it is, rows numbered in order."""
    from tf_lrp.runs.inputs import Entry
    from tf_lrp.runs.outputs import Result, Skipped, output_dir
    from tf_lrp.runs.shards import ShardSink

    out = output_dir(str(out))
    sink, seq = None, itertools.count()
    with _ordered():  # a Dataset keeps the DataContext it was created in
        dataset = dataset.map_batches(
            explainer, fn_constructor_kwargs={"model": model, "composite": composite,
                                              "column": column, "input_range": input_range,
                                              **explainer_kwargs},
            batch_size=batch_size, compute=_compute(actors), num_gpus=num_gpus or None,
            **(ray_remote_args or {}))
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if sink is None:
                sink = ShardSink(out, shard_size, batch["relevance"].shape[1:], False, Skipped(out))
            results = []
            for i in range(len(batch["relevance"])):
                number = next(seq)  # the row's place in the Dataset, not in its batch
                label = str(batch["path"][i]) if "path" in batch else f"{column}[{number}]"
                results.append(Result(Entry(number, label, label), None,
                                      batch["relevance"][i], int(batch["predicted_class"][i]),
                                      _explained(batch, i), float(batch["logit"][i])))
            sink.write(results, (0.0, 255.0))
    if sink is None:
        raise ValueError(f"explain_dataset: the source {dataset!r} holds no rows")
    sink.close()
    return out


# ------------------------------------------------------------------ the streaming job (the
# command line and explain_dataset over files)


def _decode(batch: dict[str, np.ndarray], shape: Sequence[int],
            scale: tuple[float, float]) -> dict[str, np.ndarray]:
    """A Ray task: decode a batch of entries exactly as a local run does."""
    from tf_lrp.runs.common import InputProblem
    from tf_lrp.runs.inputs import Decoder, InputSpec

    decoder = Decoder(InputSpec(tuple(shape)), scale)
    n = len(batch["seq"])
    x = np.zeros((n, *shape), np.float32)
    problems = [str(p) for p in batch["problem"]]
    for i in range(n):
        if problems[i]:
            continue
        try:
            x[i] = decoder(str(batch["path"][i]), int(batch["index"][i]))
        except InputProblem as err:
            problems[i] = str(err)
    return {"seq": batch["seq"], "x": x, "problem": np.array(problems, dtype=object),
            "ok": np.array([not p for p in problems])}


class Job:
    """One streaming Ray Data job over a run's entries; results come back to the driver in
    input order, each entry exactly once.

    The driver enumerates the entries into Arrow blocks of :data:`SPOOL_ROWS` rows in Ray's
    object store (spilled to disk when memory is short; the driver keeps only their
    references), and one job runs over them: decoding in Ray tasks, explaining in an actor
    pool that starts once. To put the results in order the driver reads the blocks back one at
    a time.
    """

    def __init__(self, *, shape: Sequence[int], scale: tuple[float, float],
                 batch_size: int, compute, num_gpus: float, explainer: type,
                 explainer_kwargs: dict, keep_input: bool, remote_args: dict | None = None):
        self.shape, self.scale = tuple(shape), scale
        self.batch_size, self.compute, self.num_gpus = batch_size, compute, num_gpus
        self.explainer, self.explainer_kwargs = explainer, explainer_kwargs
        self.keep_input, self.remote_args = keep_input, remote_args or {}

    def results(self, entries: Iterable) -> Iterator[list]:
        blocks = _spool(entries)
        if not blocks:
            return
        keep = self.keep_input
        with _ordered():  # a Dataset keeps the DataContext it was created in
            ds = ray.data.from_arrow_refs(blocks).map_batches(
                _decode, fn_kwargs={"shape": list(self.shape), "scale": self.scale},
                batch_size=self.batch_size, batch_format="numpy")
            ds = ds.map_batches(
                self.explainer,
                fn_constructor_kwargs={**self.explainer_kwargs, "column": "x",
                                       "valid_column": "ok", "keep_input": keep},
                batch_size=self.batch_size, batch_format="numpy", compute=self.compute,
                num_gpus=self.num_gpus or None, **self.remote_args)
            yield from _in_order(_spooled(blocks), (_rows(batch, keep) for batch in
                                                    ds.iter_batches(batch_size=None,
                                                                    batch_format="numpy")))


_SPOOL_COLUMNS = ("seq", "name", "path", "index", "problem", "explain")


def _spool(entries: Iterable) -> list:
    """Put ``entries`` in the object store as Arrow tables of :data:`SPOOL_ROWS` rows; return
    their references."""
    import pyarrow as pa

    blocks = []
    it = iter(entries)
    while chunk := list(itertools.islice(it, SPOOL_ROWS)):
        blocks.append(ray.put(pa.table({
            "seq": pa.array([e.seq for e in chunk], pa.int64()),
            "name": [e.name for e in chunk], "path": [e.path for e in chunk],
            "index": pa.array([e.index for e in chunk], pa.int64()),
            "problem": [e.problem or "" for e in chunk],
            "explain": pa.array([e.explain for e in chunk], pa.bool_())})))
    return blocks


def _spooled(blocks: Sequence) -> Iterator:
    """The entries of the blocks, in order, one block in memory at a time."""
    from tf_lrp.runs.inputs import Entry

    for ref in blocks:
        columns = ray.get(ref).to_pydict()
        for seq, name, path, index, problem, explain in zip(
                *(columns[c] for c in _SPOOL_COLUMNS)):
            yield Entry(seq, name, path, index, problem or None, explain)


def _rows(batch: dict[str, np.ndarray], keep: bool) -> list[tuple[int, dict]]:
    rows = []
    for i, seq in enumerate(batch["seq"].tolist()):
        problem = str(batch["problem"][i]) or None
        rows.append((seq, {"problem": problem} if problem else {
            "x": batch["x"][i] if keep else None, "relevance": batch["relevance"][i],
            "predicted": int(batch["predicted_class"][i]),
            "explained": _explained(batch, i), "logit": float(batch["logit"][i])}))
    return rows


def _in_order(entries: Iterable, batches: Iterable[list[tuple[int, dict]]]) -> Iterator[list]:
    """Results in the order of ``entries``, whatever order Ray returns them in (a retried task
    may come back late); each entry exactly once, or an error (never silently)."""
    from tf_lrp.runs.outputs import Result

    waiting: dict[int, dict] = {}
    expected = iter(entries)
    entry = next(expected, None)
    for rows in batches:
        for seq, fields in rows:
            if seq in waiting:
                raise RuntimeError(f"Ray returned entry {seq} twice")
            waiting[seq] = fields
        ready = []
        while entry is not None and entry.seq in waiting:
            fields = waiting.pop(entry.seq)
            if not entry.explain:
                fields["relevance"] = None
            ready.append(Result(entry, **fields))
            entry = next(expected, None)
        if ready:
            yield ready
    if entry is not None or waiting:
        missing = 1 + sum(1 for _ in expected) if entry is not None else 0
        example = entry.label if entry is not None else f"entry {min(waiting)}"
        raise RuntimeError(f"Ray returned no result for {missing} input(s) ({len(waiting)} "
                           f"unexpected), e.g. {example}; run again with --resume")


class EntryEngine:
    """``tf-lrp explain --ray``: the run's entries in one streaming :class:`Job` (decoded in Ray
    tasks, explained by an actor pool that starts once); results come back in input order to
    the driver, which writes them like a local run."""

    def __init__(self, args, setup, spec, *, scale: tuple[float, float], output):
        """``args``: the run's options (the ``tf-lrp explain`` namespace); ``scale``: the pixel
        range image files are mapped to; ``output``: which model output is explained."""
        if not spec.fixed:
            raise ValueError("--ray needs a model with a fixed input shape")
        self.args, self.setup, self.spec = args, setup, spec
        self.scale, self.output = scale, output
        self.address = args.ray

    def results(self, entries: Iterable) -> Iterator[list]:
        init(self.address)
        args = self.args
        job = Job(shape=self.spec.shape, scale=self.scale,
                  batch_size=args.batch_size, compute=_compute(args.ray_actors),
                  num_gpus=args.ray_gpus, explainer=Explainer,
                  explainer_kwargs={"model": str(args.model), "composite": self.setup.composite,
                                    "target": args.target, "start": args.start,
                                    "output": self.output, "safe_mode": not args.allow_lambda},
                  keep_input=args.format != "shards")  # per-sample PNGs overlay the input
        yield from job.results(entries)
