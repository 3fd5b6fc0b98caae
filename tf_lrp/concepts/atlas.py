"""Concept atlas: for every channel of chosen layers, the samples of a dataset where it matters.

For each channel, the top-N samples by **relevance** (relevance maximisation: the channel's
concept relevance for the explained class, summed over positions) and by **activation**
(activation maximisation: the channel's largest activation), each with the crop of the input
where the channel is relevant or active. Built in one pass over the data, batch by batch
(streaming top-N: memory holds the top-N and their crops, never the dataset), stored in a
directory and resumable:

::

    DIR/index.json                                  what is done and the top-N (the record)
    DIR/crops/<i>_<layer>/<mode>/c<channel>_s<sample>.npy   one input crop per entry

``index.json`` is rewritten atomically after each batch (every ``checkpoint_every`` batches);
crops are written (and synced) before the index that names them, and files no index names any
more are removed after it. A run that is interrupted leaves the last checkpoint; the next call
with the same directory, model, options and data skips the batches it records (their data is
checked against the recorded SHA-1 of each batch) and goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tf_lrp.concepts._trace import check_analyzer, layer_nodes, layer_statistics, spatial_shape
from tf_lrp.errors import InputError
from tf_lrp.storage import atomic_write

__all__ = ["MODES", "Atlas", "Reference", "build_atlas"]

#: The two rankings of an atlas.
MODES = ("relevance", "activation")
#: How relevance references are cropped (activation references always by position).
CROPS = ("heatmap", "position")
INDEX = "index.json"
FORMAT = 1


# ---------------------------------------------------------------------------- files
def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` (and its directory) atomically (:func:`tf_lrp.storage.atomic_write`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: stream.write(data))


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    stream = io.BytesIO()
    np.save(stream, np.ascontiguousarray(array), allow_pickle=False)
    return stream.getvalue()


@contextlib.contextmanager
def _locked(directory: Path):
    """An exclusive lock on ``directory`` for one builder at a time (POSIX; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(directory / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another process is building the atlas in {directory}; wait for "
                             "it or use another directory") from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Reference:
    """One reference sample of a channel.

    Attributes
    ----------
    sample
        Its position in the dataset (0-based, in iteration order).
    score
        The channel's relevance in it (``"relevance"``) or its largest activation.
    target
        The class explained for it.
    position
        Where in the layer's positions the channel's relevance (activation) is largest.
    box
        The crop in the input: ``(start, stop)`` per spatial input axis.
    crop
        The input crop, in the model's input space (``None`` if not loaded).
    """

    sample: int
    score: float
    target: int
    position: tuple[int, ...]
    box: tuple[tuple[int, int], ...]
    file: str
    crop: np.ndarray | None = field(default=None, compare=False, repr=False)


class Atlas:
    """A concept atlas on disk (see :func:`build_atlas`).

    Parameters
    ----------
    directory
        The directory :func:`build_atlas` wrote.

    Attributes
    ----------
    config
        The options it was built with. ``samples``: samples processed; ``finished``: whether
        the whole dataset was; ``run``: batches computed and skipped by the call that returned
        it (``{}`` when just opened).
    """

    def __init__(self, directory: str | os.PathLike, run: dict | None = None):
        self.directory = Path(directory)
        path = self.directory / INDEX
        if not path.exists():
            raise InputError(f"no concept atlas in {self.directory} (no {INDEX}); build one with "
                             "tf_lrp.concepts.build_atlas(analyzer, data, layers, directory)")
        index = json.loads(path.read_text())
        if index.get("format") != FORMAT:
            raise InputError(f"{path} has format {index.get('format')!r}; this tf_lrp reads "
                             f"format {FORMAT}: rebuild the atlas")
        self._index = index
        self.config: dict = index["config"]
        self.samples: int = index["samples"]
        self.finished: bool = index["finished"]
        self.run = run or {}

    @property
    def layers(self) -> list[str]:
        """Node names of the layers in the atlas."""
        return list(self._index["layers"])

    def layer_name(self, layer: str) -> str:
        """The node name for ``layer`` (a node name, or a layer name as a condition takes it)."""
        entries = self._index["layers"]
        if layer in entries:
            return layer
        found = [name for name, e in entries.items() if layer in (e["layer"], *name.split("+"))]
        if not found:
            raise InputError(f"the atlas in {self.directory} has no layer {layer!r}; it has "
                             f"{', '.join(entries)}. Build one for it with build_atlas(..., "
                             f"layers=[{layer!r}])")
        return found[0]

    def channels(self, layer: str) -> int:
        """The number of channels of ``layer``."""
        return self._index["layers"][self.layer_name(layer)]["channels"]

    def references(self, layer: str, channel: int, mode: str = "relevance",
                   load: bool = True) -> list[Reference]:
        """The reference samples of ``channel`` of ``layer``, best first.

        Parameters
        ----------
        layer, channel
            Which channel.
        mode
            ``"relevance"`` (relevance maximisation) or ``"activation"``.
        load
            Load the crops (``Reference.crop``).
        """
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        entry = self._index["layers"][self.layer_name(layer)]
        if not 0 <= int(channel) < entry["channels"]:
            raise InputError(f"channel {channel} is out of range: {layer!r} has channels "
                             f"0..{entry['channels'] - 1}")
        out = []
        for e in entry[mode][int(channel)]:
            crop = np.load(self.directory / e["file"], allow_pickle=False) if load else None
            out.append(Reference(e["sample"], e["score"], e["target"], tuple(e["position"]),
                                 tuple(tuple(b) for b in e["box"]), e["file"], crop))
        return out

    def table(self, layer: str, mode: str = "relevance") -> tuple[np.ndarray, np.ndarray]:
        """``(scores, samples)``, each ``(channels, top_n)``, best first; empty slots are
        ``nan`` and ``-1``."""
        entry = self._index["layers"][self.layer_name(layer)]
        top_n = self.config["top_n"]
        scores = np.full((entry["channels"], top_n), np.nan)
        samples = np.full((entry["channels"], top_n), -1, np.int64)
        for c, refs in enumerate(entry[mode]):
            for j, e in enumerate(refs):
                scores[c, j], samples[c, j] = e["score"], e["sample"]
        return scores, samples


# ---------------------------------------------------------------------------- data
def _as_batch(item) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(item, dict):
        raise InputError("dataset batches must be arrays or (x, labels) tuples, not dicts")
    if isinstance(item, (tuple, list)):
        if len(item) not in (1, 2, 3):
            raise InputError(f"a dataset batch tuple has {len(item)} parts; expected x or "
                             "(x, labels) (a third part, sample weights, is ignored)")
        x, y = item[0], item[1] if len(item) > 1 else None
    else:
        x, y = item, None
    return np.asarray(x), None if y is None else np.asarray(y)


def _batches(dataset, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Batches of ``dataset``: an array (split into ``batch_size``), an ``(x, labels)`` tuple
    of arrays, a ``tf.data.Dataset`` or any iterable of batches."""
    if isinstance(dataset, tuple) and len(dataset) == 2 and all(
            isinstance(a, np.ndarray) for a in dataset):
        x, y = dataset
        if len(x) != len(y):
            raise InputError(f"x has {len(x)} samples and labels {len(y)}")
    elif isinstance(dataset, np.ndarray):
        x, y = dataset, None
    else:
        iterate = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") \
            else dataset
        if not isinstance(iterate, Iterable):
            raise InputError(f"dataset must be an array, an (x, labels) tuple of arrays or an "
                             f"iterable of batches; got {type(dataset).__name__}")
        for item in iterate:
            yield _as_batch(item)
        return
    for lo in range(0, len(x), batch_size):
        yield x[lo:lo + batch_size], None if y is None else y[lo:lo + batch_size]


def _digest(x: np.ndarray, y: np.ndarray | None) -> str:
    h = hashlib.sha1(str((x.shape, x.dtype.str)).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def _weights_digest(model) -> str:
    h = hashlib.sha1()
    for w in model.weights:
        h.update(np.ascontiguousarray(np.asarray(w)).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- geometry
def position_box(position: Sequence[int], layer_shape: Sequence[int], input_shape: Sequence[int],
                 window: float, axes: int) -> tuple[tuple[int, int], ...]:
    """A window of ``window`` times the input size per spatial axis, centred where
    ``position`` of the layer's grid falls when the grid is stretched over the input (the
    first ``len(layer_shape)`` input axes); for a layer without positions (Dense), the whole
    extent of the first ``axes`` input axes."""
    if not layer_shape:
        return tuple((0, int(s)) for s in input_shape[:axes])
    box = []
    for p, s_layer, s_in in zip(position, layer_shape, input_shape):
        size = min(s_in, max(1, round(window * s_in)))
        centre = (p + 0.5) * s_in / s_layer
        lo = int(min(max(round(centre - size / 2), 0), s_in - size))
        box.append((lo, lo + size))
    return tuple(box)


def heatmap_box(heatmap: np.ndarray, spatial: int, mass: float, window: float
                ) -> tuple[tuple[int, int], ...] | None:
    """The bounding box of the fewest input positions that hold ``mass`` of the positive
    relevance (other axes summed), grown to at least ``window / 4`` of the input per axis
    around its centre; ``None`` if no relevance is positive."""
    h = heatmap.reshape(*heatmap.shape[:spatial], -1).sum(axis=-1) if heatmap.ndim > spatial \
        else heatmap
    positive = np.maximum(h, 0).ravel()
    total = positive.sum()
    if not total > 0:
        return None
    order = np.argsort(-positive, kind="stable")
    count = int(np.searchsorted(np.cumsum(positive[order]), mass * total) + 1)
    coords = np.unravel_index(order[:min(count, len(order))], h.shape)
    box = []
    for axis_coords, s_in in zip(coords, h.shape):
        lo, hi = int(axis_coords.min()), int(axis_coords.max()) + 1
        least = min(s_in, max(1, round(window / 4 * s_in)))
        if hi - lo < least:
            lo = int(min(max((lo + hi - least) // 2, 0), s_in - least))
            hi = lo + least
        box.append((lo, hi))
    return tuple(box)


def _crop(x: np.ndarray, box: Sequence[tuple[int, int]]) -> np.ndarray:
    return x[tuple(slice(lo, hi) for lo, hi in box)]


# ---------------------------------------------------------------------------- building
def _layer_dir(i: int, name: str) -> str:
    return f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.+-]', '_', name)}"


class _TopN:
    """Streaming top-N of one layer and one mode: arrays ``(channels, N)``."""

    def __init__(self, channels: int, top_n: int, spatial: int, box_axes: int):
        self.score = np.full((channels, top_n), -np.inf)
        self.sample = np.full((channels, top_n), -1, np.int64)
        self.target = np.full((channels, top_n), -1, np.int64)
        self.position = np.zeros((channels, top_n, spatial), np.int64)
        self.box = np.zeros((channels, top_n, box_axes, 2), np.int64)

    def merge(self, score, sample, target, position) -> np.ndarray:
        """Merge candidates ``(channels, m)``; return the mask of new entries ``(channels, N)``.
        Ties go to the earlier sample, so the result does not depend on batch boundaries."""
        n = self.score.shape[1]
        all_score = np.concatenate([self.score, score], axis=1)
        all_sample = np.concatenate([self.sample, sample], axis=1)
        order = np.lexsort((np.where(all_sample < 0, np.iinfo(np.int64).max, all_sample),
                            -all_score), axis=1)[:, :n]
        self.score = np.take_along_axis(all_score, order, axis=1)
        self.sample = np.take_along_axis(all_sample, order, axis=1)
        self.target = np.take_along_axis(np.concatenate([self.target, target], axis=1), order,
                                          axis=1)
        self.position = np.take_along_axis(
            np.concatenate([self.position, position], axis=1), order[..., None], axis=1)
        boxes = np.concatenate([self.box, np.zeros((*score.shape, *self.box.shape[2:]),
                                                   np.int64)], axis=1)
        self.box = np.take_along_axis(boxes, order[..., None, None], axis=1)
        return order >= n

    def set_box(self, c: int, j: int, box) -> None:
        self.box[c, j] = np.asarray(box, np.int64).reshape(-1, 2)

    def entries(self, files) -> list[list[dict]]:
        out = []
        for c in range(self.score.shape[0]):
            out.append([{"sample": int(self.sample[c, j]), "score": float(self.score[c, j]),
                         "target": int(self.target[c, j]),
                         "position": [int(p) for p in self.position[c, j]],
                         "box": self.box[c, j].tolist(), "file": files(c, int(self.sample[c, j]))}
                        for j in range(self.score.shape[1]) if self.sample[c, j] >= 0])
        return out

    @classmethod
    def from_entries(cls, entries: list[list[dict]], top_n: int, spatial: int,
                     box_axes: int) -> _TopN:
        top = cls(len(entries), top_n, spatial, box_axes)
        for c, refs in enumerate(entries):
            for j, e in enumerate(refs):
                top.score[c, j], top.sample[c, j], top.target[c, j] = \
                    e["score"], e["sample"], e["target"]
                top.position[c, j] = e["position"]
                top.set_box(c, j, e["box"])
        return top


def _unravel(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Flat positions ``(n, C)`` -> ``(C, n, len(shape))``."""
    if not shape:
        return np.zeros((flat.shape[1], flat.shape[0], 0), np.int64)
    return np.stack(np.unravel_index(flat.T, shape), axis=-1).astype(np.int64)


def _conditional_heatmaps(analyzer, x, targets, layer: str, pairs: list[tuple[int, int]],
                          per_call: int) -> dict[tuple[int, int], np.ndarray]:
    """Conditional heatmaps of ``(sample row, channel)`` pairs, ``per_call`` at most per
    traced call (rows grouped by how many channels they need, so padding stays small)."""
    rows: dict[int, list[int]] = {}
    for i, c in pairs:
        rows.setdefault(i, []).append(c)
    pieces = [(i, cs[lo:lo + per_call]) for i, cs in rows.items()
              for lo in range(0, len(cs), per_call)]
    pieces.sort(key=lambda p: -len(p[1]))
    out = {}
    while pieces:
        k = len(pieces[0][1])
        group = pieces[:max(1, per_call // k)]
        pieces = pieces[len(group):]
        idx = np.array([cs + [cs[-1]] * (k - len(cs)) for _, cs in group], np.int64)
        sel = [i for i, _ in group]
        heat = analyzer.conditional(x[sel], targets[sel], {layer: idx})
        for g, (i, cs) in enumerate(group):
            for j, c in enumerate(cs):
                out[i, c] = heat[g, j]
    return out


def build_atlas(model_or_analyzer, dataset, layers: str | Sequence[str],
                directory: str | os.PathLike, *, top_n: int = 8, target=None,
                composite=None, batch_size: int = 32, crop: str = "heatmap",
                window: float = 0.5, mass: float = 0.5, conditions_per_call: int = 64,
                resume: bool = True, checkpoint_every: int = 1) -> Atlas:
    """Build (or continue) a concept atlas of ``layers`` over ``dataset`` in ``directory``.

    Parameters
    ----------
    model_or_analyzer
        A :class:`tf_lrp.Analyzer`, or a model / model file (explained with ``composite``).
    dataset
        Samples in the model's input space: an array ``(n, *input_shape)`` (split into
        ``batch_size``), an ``(x, labels)`` tuple of arrays, a ``tf.data.Dataset`` or any
        iterable of batches (arrays or ``(x, labels)`` tuples). Iterated once, in order; the
        sample numbers in the atlas are positions in that order.
    layers
        Layer (or node) names with a channel axis, e.g. ``"block3_conv"``.
    directory
        Where the atlas goes (created if needed).
    top_n
        References per channel and mode.
    target
        The class relevance is computed for: ``None`` (each sample's predicted class), an
        integer, or ``"label"`` (the labels the dataset yields; one-hot labels are argmaxed).
    composite
        With a model: the composite (default: the analyzer's, ``EpsilonPlus``).
    batch_size
        Batch size for an array dataset.
    crop
        ``"heatmap"`` (default): a relevance reference is cropped to the bounding box of the
        input positions that hold ``mass`` of its conditional heatmap's positive relevance
        (grown to at least ``window / 4`` of the input; the conditional heatmaps of the
        samples entering a top-N are computed in batches of ``conditions_per_call``).
        ``"position"``: like activation references, a window of ``window`` times the input
        size centred where the channel's relevance (activation) is largest in its layer,
        that position mapped to the input by scaling (no further computation).
    resume
        Continue the atlas in ``directory`` (default): batches it records are skipped (their
        data must match: SHA-1 per batch), a finished atlas is returned as it is. ``False``
        starts over (the directory's atlas is replaced).
    checkpoint_every
        Batches between writes of the index (1: after every batch).

    Returns
    -------
    Atlas
        With ``run == {"computed": batches computed, "skipped": batches skipped}``.

    Notes
    -----
    The activation is the layer's output after its activation function (a fused activation,
    or ReLU-type layers that alone follow it, as ``Conv -> BatchNorm -> ReLU``); relevance is
    the same before and after them. Both rankings come from one forward and one backward
    pass per batch; the backward pass stops at the lowest chosen layer (the rest is pruned
    from the traced graph), so only ``crop="heatmap"`` pays for passes down to the input.

    Raises
    ------
    InputError
        If a layer is unknown or has no channels, the data does not fit the model, labels are
        missing for ``target="label"``, or the directory holds an atlas built with other
        options or other data (the message names the difference; use ``resume=False`` or
        another directory).
    """
    from tf_lrp.analyzer import Analyzer

    analyzer = model_or_analyzer if isinstance(model_or_analyzer, Analyzer) else \
        Analyzer(model_or_analyzer, composite)
    check_analyzer(analyzer)
    if crop not in CROPS:
        raise InputError(f"crop must be one of {CROPS}, got {crop!r}")
    for name, value, low in (("top_n", top_n, 1), ("batch_size", batch_size, 1),
                             ("checkpoint_every", checkpoint_every, 1),
                             ("conditions_per_call", conditions_per_call, 1)):
        if int(value) != value or value < low:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not 0 < window <= 1 or not 0 < mass <= 1:
        raise InputError(f"window and mass must lie in (0, 1]; got {window}, {mass}")
    if not (target is None or target == "label" or (np.ndim(target) == 0 and
                                                     np.asarray(target).dtype.kind in "iu")):
        raise InputError(f"target must be None, an integer class or 'label'; got {target!r}")
    nodes = layer_nodes(analyzer, [layers] if isinstance(layers, str) else layers)
    graph = analyzer.graph
    input_shape = tuple(graph.input_shapes[0])
    grids = {n.name: spatial_shape(graph, n) for n in nodes}
    if any(d is None for d in input_shape) or any(d is None for g in grids.values() for d in g):
        raise InputError(f"the model takes inputs of any size {input_shape}; an atlas needs "
                         "a fixed input size (rebuild the model with a fixed keras.Input shape)")
    config = {
        "model": analyzer.model.name, "weights_sha1": _weights_digest(analyzer.model),
        "composite": repr(analyzer.composite), "start": analyzer.start,
        "layers": [n.name for n in nodes], "top_n": int(top_n),
        "target": target if target is None or target == "label" else int(target),
        "crop": crop, "window": float(window), "mass": float(mass),
        "input_shape": list(input_shape),
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        return _build(analyzer, dataset, nodes, directory, config, grids, batch_size,
                      conditions_per_call, resume, checkpoint_every)


def _build(analyzer, dataset, nodes, directory: Path, config, grids, batch_size, per_call,
           resume, checkpoint_every) -> Atlas:
    top_n, target, crop = config["top_n"], config["target"], config["crop"]
    window, mass = config["window"], config["mass"]
    dirs = {n.name: _layer_dir(i, n.name) for i, n in enumerate(nodes)}
    input_shape = tuple(config["input_shape"])
    # spatial input axes: those the layer's positions map onto; for Dense all but the last
    axes = {n.name: len(grids[n.name]) or max(len(input_shape) - 1, 1) for n in nodes}

    def crop_file(name: str, mode: str, c: int, sample: int) -> str:
        return f"crops/{dirs[name]}/{mode}/c{c:05d}_s{sample:09d}.npy"

    index_path = directory / INDEX
    done: list[dict] = []
    tops: dict[tuple[str, str], _TopN] = {}
    if resume and index_path.exists():
        index = json.loads(index_path.read_text())
        old = index.get("config", {})
        changed = [k for k in config if old.get(k) != config[k]]
        if index.get("format") != FORMAT or changed:
            what = ", ".join(f"{k}: {old.get(k)!r} -> {config[k]!r}" for k in changed) or \
                f"format {index.get('format')!r}"
            raise InputError(f"{directory} holds an atlas built with other options ({what}); "
                             "pass resume=False to replace it, or use another directory")
        if index["finished"]:
            return Atlas(directory, {"computed": 0, "skipped": len(index["batches"])})
        done = index["batches"]
        for name, entry in index["layers"].items():
            for mode in MODES:
                tops[name, mode] = _TopN.from_entries(entry[mode], top_n, len(grids[name]),
                                                      axes[name])
    elif index_path.exists():
        index_path.unlink()  # starting over: the old index must not outlive its crops
    _clean(directory, tops, crop_file)
    step = layer_statistics(analyzer, [n.name for n in nodes])
    channels = {n.name: int(analyzer.graph.shapes[n.outputs[0]][-1]) for n in nodes}
    for n in nodes:
        for mode in MODES:
            tops.setdefault((n.name, mode), _TopN(channels[n.name], top_n, len(grids[n.name]),
                                                  axes[n.name]))
    pending: dict[str, np.ndarray] = {}
    samples = sum(b["size"] for b in done)
    computed = skipped = since = 0

    def checkpoint(finished: bool) -> None:
        layers_out = {n.name: {"layer": n.name.split("+")[0], "channels": channels[n.name],
                               "grid": list(grids[n.name]),
                               **{mode: tops[n.name, mode].entries(
                                   lambda c, s, name=n.name, mode=mode: crop_file(name, mode, c, s))
                                  for mode in MODES}}
                      for n in nodes}
        wanted = {e["file"] for entry in layers_out.values() for mode in MODES
                  for refs in entry[mode] for e in refs}
        for file in sorted(wanted & set(pending)):
            _write_atomic(directory / file, _npy_bytes(pending[file]))
        pending.clear()
        index = {"format": FORMAT, "config": config, "samples": samples, "finished": finished,
                 "batches": done, "layers": layers_out}
        _write_atomic(index_path, json.dumps(index, indent=1).encode())
        _clean(directory, tops, crop_file)

    for b, (x, labels) in enumerate(_batches(dataset, batch_size)):
        digest = _digest(x, labels)
        if b < len(done):
            if done[b]["sha1"] != digest:
                raise InputError(
                    f"batch {b} of the data differs from the batch {b} recorded in "
                    f"{directory / INDEX}: resuming needs the same data in the same order "
                    "(and batch size); pass resume=False to start over")
            skipped += 1
            continue
        xs = analyzer._prepare(x)[0]
        n = xs.shape[0]
        if target == "label":
            if labels is None:
                raise InputError("target='label' needs labels: pass (x, labels) or batches "
                                 "of (x, labels)")
            t = labels.argmax(axis=-1) if labels.ndim == 2 else labels
        else:
            t = target
        stats = step(xs, t)
        resolved = stats["target"].astype(np.int64)
        ids = samples + np.arange(n)
        for node in nodes:
            s = stats["layers"][node.name]
            grid = grids[node.name]
            for mode in MODES:
                top = tops[node.name, mode]
                shape = (top.score.shape[0], n)
                new = top.merge(s[mode].T.astype(np.float64), np.broadcast_to(ids, shape),
                                np.broadcast_to(resolved, shape), _unravel(s[f"{mode}_at"], grid))
                entering = np.argwhere(new)
                heat = {}
                if mode == "relevance" and crop == "heatmap" and len(entering):
                    pairs = sorted({(int(top.sample[c, j] - samples), int(c))
                                    for c, j in entering})
                    heat = _conditional_heatmaps(analyzer, xs, resolved, node.name, pairs,
                                                 per_call)
                for c, j in entering:
                    i = int(top.sample[c, j] - samples)
                    box = None
                    if (i, int(c)) in heat:
                        box = heatmap_box(heat[i, int(c)], axes[node.name], mass, window)
                    if box is None:
                        box = position_box(top.position[c, j], grid, input_shape, window,
                                           axes[node.name])
                    top.set_box(c, j, box)
                    pending[crop_file(node.name, mode, int(c), int(top.sample[c, j]))] = \
                        _crop(xs[i], box)
        done.append({"size": int(n), "sha1": digest})
        samples += n
        computed += 1
        since += 1
        if since >= checkpoint_every:
            checkpoint(False)
            since = 0
    checkpoint(True)
    return Atlas(directory, {"computed": computed, "skipped": skipped})


def _clean(directory: Path, tops: dict, crop_file) -> None:
    """Remove crop files no entry names and temporary files (an interrupted run's)."""
    root = directory / "crops"
    if not root.exists():
        return
    wanted = {crop_file(name, mode, c, int(s)) for (name, mode), top in tops.items()
              for c, row in enumerate(top.sample) for s in row if s >= 0}
    for path in root.rglob("*"):
        if path.is_file() and path.relative_to(directory).as_posix() not in wanted:
            path.unlink()
