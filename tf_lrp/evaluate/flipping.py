"""Pixel flipping / region perturbation (Bach et al. 2015; Samek et al. 2017).

The input is cut into square patches (``patch_size`` pixels a side; all channels of a pixel go
together); a patch's relevance is the sum of its relevance. Patches are replaced by a removal
value (the *baseline*: a number, each image's mean colour, a blurred copy of the image, or an
array) in order of decreasing relevance ("most relevant first"; ties broken at random), or in
random order as a control, ``fraction`` of them over ``steps`` equal steps. The explained output
(the target's logit) is recorded after every step. AOPC ("area over the perturbation curve") is
the mean over the ``steps + 1`` points ``k = 0..steps`` of ``f(x) - f(x_k)`` (Samek et al.'s
definition: the ``k = 0`` term is 0). A faithful explanation makes the output drop fast: higher
AOPC is better.

The removal value matters: an explanation computed against the same reference (Integrated
Gradients from the removal value) is flattered. :mod:`tf_lrp.evaluate.road` removes pixels by
noisy linear imputation instead, and :mod:`tf_lrp.evaluate.irof` removes superpixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import (
    MAX_IMAGES,
    batched,
    descending_order,
    predict_fn,
    progress_bar,
    resolve_baseline,
    spatial_relevance,
    targets,
)

__all__ = ["ORDERS", "FlipCurves", "pixel_flipping"]

ORDERS = ("relevance", "random")


@dataclasses.dataclass
class FlipCurves:
    """Result of :func:`pixel_flipping` (and of :func:`~tf_lrp.evaluate.road`,
    :func:`~tf_lrp.evaluate.irof`).

    Attributes
    ----------
    fractions
        ``(steps + 1,)``: fraction of patches (pixels, segments) removed at each point; starts
        at 0.
    outputs
        ``(n, steps + 1)``: the explained output of each sample at each point.
    """

    fractions: np.ndarray
    outputs: np.ndarray

    @property
    def aopc(self) -> np.ndarray:
        """``(n,)``: mean over the points ``k = 0..steps`` of ``f(x) - f(x_k)``."""
        return (self.outputs[:, :1] - self.outputs).mean(axis=1)


def _patch_index(spatial: tuple[int, ...], patch_size: int) -> tuple[np.ndarray, int]:
    """Patch id of every pixel (flattened) on a grid of ``patch_size`` squares, and the count."""
    counts = [-(-s // patch_size) for s in spatial]
    grids = np.meshgrid(*[np.arange(s) // patch_size for s in spatial], indexing="ij")
    return np.ravel_multi_index(grids, counts).ravel(), math.prod(counts)


def segment_relevance(relevance, channels: bool, segments: np.ndarray, count: int,
                      reduce: str = "sum") -> np.ndarray:
    """``(n, count)``: the relevance of each segment (sum or mean over its pixels).

    ``segments`` is ``(pixels,)`` (one segmentation for all) or ``(n, pixels)`` of ids
    ``0..count-1``.
    """
    pixel_rel = spatial_relevance(relevance, channels)
    n = pixel_rel.shape[0]
    ids = np.broadcast_to(segments, pixel_rel.shape) + count * np.arange(n)[:, None]
    total = np.bincount(ids.ravel(), pixel_rel.ravel(), minlength=n * count).reshape(n, count)
    if reduce == "mean":
        size = np.bincount(ids.ravel(), minlength=n * count).reshape(n, count)
        total = np.divide(total, size, out=np.zeros_like(total), where=size > 0)
    return total


def removal_curves(predict, x: np.ndarray, segments: np.ndarray, ranking: np.ndarray,
                   removed: np.ndarray, base: np.ndarray, target: np.ndarray,
                   batch_size: int, desc: str, progress: bool) -> np.ndarray:
    """``(n, len(removed))``: the target output after the first ``removed[k]`` segments of
    each sample's ``ranking`` are replaced by ``base``.

    ``segments``: ``(pixels,)`` or ``(n, pixels)`` segment ids; ``ranking``: ``(n, count)``
    segment ids in removal order; ``base``: the replacement, broadcast to ``x``.
    """
    n, points = x.shape[0], len(removed)
    position = np.empty_like(ranking)
    position[np.arange(n)[:, None], ranking] = np.arange(ranking.shape[1])
    segments = np.broadcast_to(segments, (n, segments.shape[-1]))
    flat = x.reshape(n, segments.shape[1], -1)
    base = np.broadcast_to(base, x.shape).reshape(flat.shape)
    outputs = np.empty((n, points), dtype=np.float64)
    chunk = max(1, MAX_IMAGES // points)
    with progress_bar(n, desc, progress) as bar:
        for lo in range(0, n, chunk):
            sl = slice(lo, lo + chunk)
            rank_of_pixel = np.take_along_axis(position[sl], segments[sl], axis=1)
            gone = rank_of_pixel[:, None, :] < removed[None, :, None]  # (c, points, pixels)
            images = np.where(gone[..., None], base[sl][:, None], flat[sl][:, None])
            images = images.reshape((-1,) + x.shape[1:])
            y = batched(predict, images, batch_size).reshape(gone.shape[0], points, -1)
            outputs[sl] = np.take_along_axis(y, target[sl][:, None, None], axis=2)[..., 0]
            bar.update(gone.shape[0])
    return outputs


def pixel_flipping(
    predictor,
    x: np.ndarray,
    relevance: np.ndarray | None = None,
    target=None,
    *,
    order: str = "relevance",
    patch_size: int = 1,
    steps: int = 25,
    fraction: float = 1.0,
    baseline=0.0,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FlipCurves:
    """Remove patches in order of decreasing relevance (or at random); record the output.

    Parameters
    ----------
    predictor
        A tf_lrp analyzer (its ``predict`` gives the explained output: logits) or a callable
        mapping a batch to ``(batch, outputs)``.
    x
        ``(n, *spatial, channels)`` channels-last images (the last axis is channels when ``x``
        has 3+ axes) or ``(n, features)``.
    relevance
        Same shape as ``x``; required for ``order="relevance"``.
    target
        The output to follow, one int or one per sample; ``None``: each sample's highest output
        on the unperturbed input.
    order
        ``"relevance"`` (most relevant first) or ``"random"`` (the control).
    patch_size
        Side of the square patches (1: single pixels/features).
    steps
        Number of perturbation steps.
    fraction
        Fraction of all patches removed by the last step, in (0, 1].
    baseline
        Replacement value: a number, ``"mean"`` (each image's mean colour), ``"blur"`` (a
        Gaussian-blurred copy of each image, sigma = 1/16 of its larger side) or an array
        broadcastable to ``x``.
    seed
        Seed of the random order and of the tie-breaking.
    batch_size
        Largest batch given to the predictor.
    progress
        Show a progress bar.

    Returns
    -------
    FlipCurves
        Curves (``n`` x ``steps + 1``) and, as ``.aopc``, the per-sample AOPC.
    """
    x = np.asarray(x, dtype=np.float32)
    if order not in ORDERS:
        raise InputError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "relevance" and relevance is None:
        raise InputError("order='relevance' needs the relevance; pass it, or use order='random'")
    if relevance is not None and np.shape(relevance) != x.shape:
        raise InputError(f"relevance has shape {np.shape(relevance)}, the input {x.shape}")
    if int(steps) != steps or steps < 1 or int(patch_size) != patch_size or patch_size < 1:
        raise InputError(f"steps and patch_size must be positive integers, got {steps}, {patch_size}")
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], got {fraction!r}")
    predict = predict_fn(predictor)
    n = x.shape[0]
    target = targets(predict, x, target, batch_size)

    spatial = x.shape[1:-1] if x.ndim >= 3 else x.shape[1:]
    pixels, n_patches = _patch_index(spatial, int(patch_size))
    rng = np.random.default_rng(seed)
    if order == "random":
        ranking = np.argsort(rng.random((n, n_patches)), axis=1)
    else:
        ranking = descending_order(segment_relevance(relevance, x.ndim >= 3, pixels, n_patches), rng)
    removed = np.round(np.linspace(0.0, fraction * n_patches, steps + 1)).astype(np.int64)
    outputs = removal_curves(predict, x, pixels, ranking, removed, resolve_baseline(baseline, x),
                             target, batch_size, f"pixel flipping ({order})", progress)
    return FlipCurves(removed / n_patches, outputs)
