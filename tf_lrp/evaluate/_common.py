"""Helpers shared by the metrics: standard errors, batching, the predictor, removal values.

Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tf_lrp.errors import InputError

#: Largest number of perturbed images held in memory at once by the removal metrics.
MAX_IMAGES = 4096
#: Removal values given by name (see :func:`resolve_baseline`).
NAMED_BASELINES = ("mean", "blur")
#: ``"blur"``: the Gaussian's standard deviation as a fraction of the larger spatial side.
BLUR_SIGMA = 1 / 16


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``) of per-sample scores.

    Parameters
    ----------
    values
        Per-sample scores (any shape; flattened).

    Returns
    -------
    tuple of float
        ``(mean, standard error)``; NaN for what is undefined (no value, or one value's error).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def descending_order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row, the indices sorted by decreasing value; ties in random order."""
    return np.lexsort((rng.random(values.shape), -values), axis=-1)


def spatial_relevance(relevance, channels: bool) -> np.ndarray:
    """``(n, pixels)``: relevance summed over the channel axis (the last) where the input has
    one (``(n, ..., C)``; not images ``(n, H, W)`` or features ``(n, d)``)."""
    r = np.asarray(relevance, dtype=np.float64)
    if channels:
        r = r.sum(axis=-1)
    return r.reshape(r.shape[0], -1)


def predict_fn(predictor) -> Callable[[np.ndarray], np.ndarray]:
    """The explained output of a batch: an analyzer's ``predict`` (logits) or a callable."""
    if hasattr(predictor, "predict") and hasattr(predictor, "graph"):  # a tf_lrp analyzer
        return predictor.predict
    if callable(predictor):
        return lambda x: np.asarray(predictor(x))
    raise TypeError(
        "predictor must be a tf_lrp analyzer (its .predict gives the explained output, the "
        f"logits) or a callable mapping a batch to outputs; got {type(predictor).__name__}"
    )


def batched(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` applied to ``x`` in slices of at most ``batch_size`` samples, concatenated."""
    return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def targets(predict: Callable, x: np.ndarray, target, batch_size: int) -> np.ndarray:
    """``(n,)`` int64 targets: ``target`` broadcast, or each sample's highest output."""
    if target is None:
        target = batched(predict, x, batch_size).argmax(axis=1)
    return np.broadcast_to(np.asarray(target, dtype=np.int64), (x.shape[0],))


def blur(x: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """A Gaussian-blurred copy of every image (spatial axes only; borders: nearest pixel).

    ``sigma`` in pixels; default :data:`BLUR_SIGMA` times the larger spatial side.
    """
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x)
    if x.ndim < 3:
        raise InputError(f"'blur' needs images (batch, *spatial, channels); got shape {x.shape}")
    spatial = x.shape[1:-1]
    sigma = BLUR_SIGMA * max(spatial) if sigma is None else float(sigma)
    out = gaussian_filter(x.astype(np.float64), (0.0, *[sigma] * len(spatial), 0.0),
                          mode="nearest", truncate=3.0)
    return out.astype(x.dtype)


def resolve_baseline(baseline, x: np.ndarray) -> np.ndarray:
    """The replacement value as an array broadcastable to ``x``.

    A number; ``"mean"``: each sample's mean over its spatial axes, per channel (for
    ``(batch, features)`` input, the mean of its features); ``"blur"``: a Gaussian-blurred
    copy of each image (:func:`blur`, sigma = 1/16 of the larger side); or an array
    broadcastable to ``x`` or to one sample.
    """
    if isinstance(baseline, str):
        if baseline == "blur":
            return blur(x)
        if baseline != "mean":
            raise InputError(f"baseline must be a number, an array, 'mean' or 'blur', got "
                             f"{baseline!r}")
        axes = tuple(range(1, x.ndim - 1)) if x.ndim >= 3 else (1,)
        return x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)
    b = np.asarray(baseline, dtype=x.dtype)
    try:
        np.broadcast_shapes(b.shape, x.shape)
    except ValueError:
        raise InputError(
            f"baseline of shape {b.shape} does not broadcast to the input {x.shape}; pass a "
            "number, 'mean', 'blur', or an array of one sample's shape"
        ) from None
    if b.ndim == x.ndim and b.shape[0] not in (1, x.shape[0]):
        raise InputError(f"baseline has {b.shape[0]} samples for {x.shape[0]} inputs")
    return b.reshape((1,) * (x.ndim - b.ndim) + b.shape)


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


def write_atomic(path: Path, data: bytes | Callable) -> None:
    """Write ``path`` whole or not at all (:func:`tf_lrp.storage.atomic_write`), making its
    directory; ``data`` is the bytes, or a function writing to the binary stream."""
    from tf_lrp.storage import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data if callable(data) else lambda stream: stream.write(data))
