"""Explanations split over the devices of one machine with a ``tf.distribute`` strategy.

>>> import tensorflow as tf, tf_lrp
>>> from tf_lrp import distribute
>>> strategy = distribute.strategy_for("all")            # every GPU (or None: one device)
>>> with distribute.scope(strategy):                       # weights mirrored on each device
...     analyzer = tf_lrp.Analyzer(tf_lrp.load_model("model.keras"), "epsilon_plus")
>>> relevance = distribute.explain(analyzer, x, strategy)  # each batch split over the devices

Each global batch is split into one near-equal part per replica; every replica runs the
analyzer's own traced function (the same graph as ``analyzer(x)``) on its part, on its device,
and the parts are concatenated in order. The result equals the single-device result up to
float32 rounding (other batch compositions pick other kernels). Building the analyzer inside
``strategy.scope()`` mirrors the model's weights on every device (on GPUs each device then
reads its own copy); an analyzer built outside still works, reading the weights from where
they live.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

__all__ = ["explain", "strategy_for", "scope"]

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def strategy_for(devices: str | int = "all") -> tf.distribute.Strategy | None:
    """A ``MirroredStrategy`` over ``devices`` of this machine, or ``None`` for one device.

    Parameters
    ----------
    devices
        ``"all"``: every GPU (every logical CPU device if there is no GPU); an integer ``n``:
        the first ``n`` of them.

    Returns
    -------
    tf.distribute.MirroredStrategy or None
        ``None`` when only one device would be used (no strategy needed).

    Raises
    ------
    ValueError
        If more devices are asked for than the machine has, or ``devices`` is not ``"all"`` or
        a positive integer.
    """
    gpus = tf.config.list_logical_devices("GPU")
    pool = gpus or tf.config.list_logical_devices("CPU")
    kind = "GPU" if gpus else "CPU"
    if devices == "all":
        n = len(pool)
    else:
        try:
            n = int(devices)
        except (TypeError, ValueError):
            n = 0
        if n < 1 or str(devices).strip() != str(n):
            raise ValueError(f"devices must be 'all' or a positive integer, got {devices!r}")
    if n > len(pool):
        raise ValueError(
            f"{n} devices asked for, but this machine has {len(pool)} {kind} device(s) "
            f"({', '.join(d.name for d in pool)}); use 'all' or at most {len(pool)}. To test "
            "on CPUs, split the CPU into logical devices before TensorFlow starts: "
            "tf.config.set_logical_device_configuration(tf.config.list_physical_devices('CPU')"
            "[0], [tf.config.LogicalDeviceConfiguration()] * 2)")
    if n <= 1:
        return None
    return tf.distribute.MirroredStrategy([d.name for d in pool[:n]])


def scope(strategy: tf.distribute.Strategy | None):
    """``strategy.scope()``, or a no-op context for ``None``: build models and analyzers in it."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _step(analyzer, strategy):
    """The traced step of ``analyzer`` under ``strategy``: per replica, relevance and logits."""
    per_analyzer = _STEPS.setdefault(analyzer, {})
    if strategy not in per_analyzer:
        owner = weakref.ref(analyzer)  # the cache must not keep the analyzer alive

        def replica(xs, targets):
            relevance, logits = owner()._explain_predict_fn(list(xs), targets)
            return tuple(relevance), logits

        @tf.function(reduce_retracing=True, autograph=False)
        def step(xs, targets):
            return strategy.run(replica, args=(xs, targets))

        per_analyzer[strategy] = step
    return per_analyzer[strategy]


def _split(strategy, arrays: list[np.ndarray], targets: np.ndarray):
    """Per-replica inputs and targets: near-equal consecutive parts of the batch, in replica
    order."""
    n = strategy.num_replicas_in_sync
    bounds = np.linspace(0, len(targets), n + 1).round().astype(int)

    def rows(ctx):
        return bounds[ctx.replica_id_in_sync_group], bounds[ctx.replica_id_in_sync_group + 1]

    def inputs(ctx):
        lo, hi = rows(ctx)
        return tuple(tf.constant(a[lo:hi]) for a in arrays)

    def target_part(ctx):
        lo, hi = rows(ctx)
        return tf.constant(targets[lo:hi])

    return (strategy.experimental_distribute_values_from_function(inputs),
            strategy.experimental_distribute_values_from_function(target_part))


def _explain_batch(analyzer, strategy, xs: list[np.ndarray], targets: np.ndarray):
    if strategy is None or len(targets) < strategy.num_replicas_in_sync:
        relevance, logits = analyzer._explain_predict_fn([tf.constant(a) for a in xs],
                                                         tf.constant(targets))
        return [r.numpy() for r in relevance], logits.numpy()
    relevance, logits = _step(analyzer, strategy)(*_split(strategy, xs, targets))
    parts_r = strategy.experimental_local_results(relevance)
    parts_y = strategy.experimental_local_results(logits)
    rel = [np.concatenate([np.asarray(p[i]) for p in parts_r]) for i in range(len(xs))]
    return rel, np.concatenate([np.asarray(p) for p in parts_y])


def _batches(data, target, batch_size: int | None) -> Iterator[tuple[object, object]]:
    if isinstance(data, tf.data.Dataset):
        for item in data.as_numpy_iterator():
            yield (item if isinstance(item, tuple) and len(item) == 2 else (item, target))
        return
    arrays = data if isinstance(data, (list, tuple)) else [data]
    n = len(arrays[0])
    step = batch_size or n
    t = None if target is None or np.ndim(target) == 0 else np.asarray(target)
    for lo in range(0, n, step):
        part = [a[lo:lo + step] for a in arrays]
        yield (part if isinstance(data, (list, tuple)) else part[0],
               target if t is None else t[lo:lo + step])


def explain(analyzer, data, strategy: tf.distribute.Strategy | None = None, target=None, *,
            batch_size: int | None = None, return_outputs: bool = False):
    """Explain ``data`` with ``analyzer``, each batch split over the devices of ``strategy``.

    Parameters
    ----------
    analyzer
        A :class:`tf_lrp.Analyzer` (or a baseline analyzer), ideally built inside
        ``strategy.scope()``.
    data
        A batch ``(n, *input_shape)`` (a list of batches for a multi-input model), or a
        ``tf.data.Dataset`` of such batches or of ``(batch, targets)`` pairs.
    strategy
        A ``tf.distribute`` strategy (e.g. from :func:`strategy_for`); ``None`` runs on one
        device.
    target
        As for ``analyzer(x, target)``: ``None`` explains each sample's highest output.
    batch_size
        Global batch size for an array input (default: the analyzer's, else all at once);
        each global batch is split over the replicas.
    return_outputs
        Also return the explained output (logits) of every sample.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray, or a tuple ``(relevance, logits)``
        float32 relevance of the shape of the input (a list for multi-input models).

    Raises
    ------
    tf_lrp.InputError
        If a batch does not fit the model, or a target is out of range.
    """
    rel_parts: list[list[np.ndarray]] = []
    logit_parts: list[np.ndarray] = []
    for batch, batch_target in _batches(data, target, batch_size or analyzer.batch_size):
        xs = analyzer._prepare(batch)
        targets = analyzer._targets(batch_target, xs[0].shape[0])
        relevance, logits = _explain_batch(analyzer, strategy, xs, targets)
        rel_parts.append(relevance)
        logit_parts.append(logits)
    if not rel_parts:
        raise ValueError("explain() got no data: the dataset is empty")
    relevance = [np.concatenate([p[i] for p in rel_parts]) for i in range(len(rel_parts[0]))]
    result = relevance[0] if len(relevance) == 1 else relevance
    return (result, np.concatenate(logit_parts)) if return_outputs else result
