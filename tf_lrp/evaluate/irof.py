"""IROF: Iterative Removal Of Features (Rieger & Hansen 2020, "IROF: a low resource evaluation
metric for explanation methods").

The image is cut into superpixels; a superpixel's relevance is the **mean** relevance of its
pixels (summed over channels), so large segments are not favoured. Superpixels are replaced by
a removal value (default: each image's mean colour, the paper's choice) in order of decreasing
relevance (ties at random), one more at each of ``steps`` equal steps until all are gone. The
curve is the class probability (softmax of the explained outputs) normalised by the
unperturbed one, ``p_k / p_0``; the per-sample score is the area over it, computed as the mean
over the points ``k = 0..steps`` of ``1 - p_k / p_0`` (the ``k = 0`` term is 0), so a score
near 1 means the probability collapsed at once. Higher is better.

Segmentation: the paper uses SLIC superpixels. scikit-image is not a dependency, so the
default is a fixed grid of square cells (8 x 8 cells); pass ``segments`` as an integer array of
per-pixel labels (e.g. ``skimage.segmentation.slic`` of each image) to use real superpixels.
"""

from __future__ import annotations

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import descending_order, predict_fn, resolve_baseline, targets
from tf_lrp.evaluate.flipping import FlipCurves, removal_curves, segment_relevance

__all__ = ["IROF_GRID", "grid_segments", "irof"]

#: Default grid of :func:`irof`: cells per side.
IROF_GRID = 8


def grid_segments(height: int, width: int, cells: int = IROF_GRID) -> np.ndarray:
    """``(height, width)`` int labels of a ``cells x cells`` grid of (nearly) equal cells."""
    rows = np.arange(height) * cells // height
    cols = np.arange(width) * cells // width
    return rows[:, None] * cells + cols[None, :]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def irof(
    predictor,
    x: np.ndarray,
    relevance: np.ndarray,
    target=None,
    *,
    segments=None,
    steps: int | None = None,
    baseline="mean",
    probability: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FlipCurves:
    """Remove superpixels by mean relevance; the curve is the normalised class probability.

    Parameters
    ----------
    predictor
        A tf_lrp analyzer (its ``predict`` gives the logits) or a callable mapping a batch to
        ``(batch, outputs)``.
    x
        ``(n, H, W, C)`` channels-last images, or ``(n, H, W)``.
    relevance
        Same shape as ``x``.
    target
        The class to follow, one int or one per sample; ``None``: each sample's highest output.
    segments
        ``None``: an 8 x 8 grid; an int ``k``: a ``k x k`` grid; or integer labels ``(H, W)``
        (one segmentation for all images) or ``(n, H, W)``.
    steps
        Number of removal steps; default the largest number of segments of an image (one
        segment per step). Step ``k`` removes ``round(k / steps * count)`` segments.
    baseline
        Removal value (see :func:`~tf_lrp.evaluate.pixel_flipping`); default ``"mean"``.
    probability
        Follow the softmax probability of the outputs (the paper); ``False``: the raw output.
    seed
        Seed of the tie-breaking.
    batch_size
        Largest batch given to the predictor.
    progress
        Show a progress bar.

    Returns
    -------
    FlipCurves
        ``outputs`` are ``p_k / p_0`` (``(n, steps + 1)``, starting at 1); ``.aopc`` is the
        per-sample IROF score.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (3, 4):
        raise InputError(f"irof needs images (n, H, W, C) or (n, H, W); got shape {x.shape}")
    if np.shape(relevance) != x.shape:
        raise InputError(f"relevance has shape {np.shape(relevance)}, the input {x.shape}")
    n, h, w = x.shape[:3]
    if n == 0:
        raise InputError("irof needs at least one image")
    if segments is None or np.ndim(segments) == 0:
        labels = grid_segments(h, w, IROF_GRID if segments is None else int(segments))
    else:
        labels = np.asarray(segments)
        if labels.shape not in ((h, w), (n, h, w)) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"segments must be integer labels of shape {(h, w)} or "
                             f"{(n, h, w)}; got {labels.dtype} {labels.shape}")
    labels = np.broadcast_to(labels, (n, h, w)).reshape(n, h * w)
    # each image's segment ids as 0..count-1
    dense = np.stack([np.unique(row, return_inverse=True)[1].ravel() for row in labels])
    count = dense.max(axis=1) + 1
    steps = int(count.max()) if steps is None else steps
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    width = int(count.max())

    predict = predict_fn(predictor)
    target = targets(predict, x, target, batch_size)
    # segment relevance: mean over the pixels; absent ids (fewer segments) are ranked last
    seg_rel = segment_relevance(relevance, x.ndim == 4, dense, width, reduce="mean")
    seg_rel[np.arange(width)[None, :] >= count[:, None]] = -np.inf
    ranking = descending_order(seg_rel, np.random.default_rng(seed))
    fractions = np.arange(steps + 1) / steps
    base = resolve_baseline(baseline, x)

    def follow(batch):
        out = predict(batch)
        return _softmax(np.asarray(out, np.float64)) if probability else out

    # removal_curves takes one count per point for all samples; with segment counts that
    # differ between images, run the images of each count together
    outputs = np.empty((n, steps + 1))
    for c in np.unique(count):
        rows = np.flatnonzero(count == c)
        removed = np.round(fractions * c).astype(np.int64)
        sub_base = base if base.shape[0] == 1 else base[rows]
        outputs[rows] = removal_curves(follow, x[rows], dense[rows], ranking[rows], removed,
                                       sub_base, target[rows], batch_size, "IROF", progress)
    reference = outputs[:, :1]
    curves = np.divide(outputs, reference, out=np.ones_like(outputs), where=reference != 0)
    return FlipCurves(fractions, curves)
