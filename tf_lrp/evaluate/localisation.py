"""Localisation: does the relevance lie on the object that decides the class?

Arras, Osman & Samek (2022), "CLEVR-XAI: A benchmark dataset for the ground truth evaluation
of neural network explanations", on data with a ground-truth mask
(:func:`tf_lrp.datasets.make_shapes`, :func:`tf_lrp.datasets.make_scenes`, the planted
keywords of :func:`tf_lrp.datasets.make_tokens`). Relevance is summed over channels.

Relevance mass accuracy (:func:`relevance_mass_accuracy`)
    The share of the positive relevance that lies inside the mask.
Relevance rank accuracy (:func:`relevance_rank_accuracy`)
    With ``K`` = the mask's pixel count, the share of the ``K`` most relevant pixels that lie
    inside it.

Both are 1.0 for an explanation equal to the mask, and the mask's share of the image for a
random one; higher is better.
"""

from __future__ import annotations

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import descending_order

__all__ = ["relevance_mass_accuracy", "relevance_rank_accuracy"]


def _check_masks(relevance, masks) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks, dtype=bool)
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim == masks.ndim + 1:
        r = r.sum(axis=-1)
    if r.shape != masks.shape:
        raise InputError(
            f"relevance of shape {np.shape(relevance)} does not match masks {masks.shape}: "
            "expected the same shape, or one more (channel) axis"
        )
    n = masks.shape[0]
    return r.reshape(n, -1), masks.reshape(n, -1)


def relevance_mass_accuracy(relevance, masks) -> np.ndarray:
    """Share of positive relevance inside the mask, per sample (0 if none is positive).

    Parameters
    ----------
    relevance
        ``(n, H, W)`` or ``(n, H, W, C)`` (summed over channels first).
    masks
        ``(n, H, W)`` boolean ground truth.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` scores in [0, 1].
    """
    r, m = _check_masks(relevance, masks)
    positive = np.maximum(r, 0.0)
    total = positive.sum(axis=1)
    inside = (positive * m).sum(axis=1)
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def relevance_rank_accuracy(relevance, masks, seed: int = 0) -> np.ndarray:
    """Share of the ``K`` most relevant pixels inside the mask (``K`` = mask size), per sample.

    Parameters
    ----------
    relevance, masks
        As in :func:`relevance_mass_accuracy`.
    seed
        Seed of the random tie-breaking.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` scores in [0, 1] (0 for an empty mask).
    """
    r, m = _check_masks(relevance, masks)
    k = m.sum(axis=1)
    order = descending_order(r, np.random.default_rng(seed))
    hits = np.take_along_axis(m, order, axis=1)
    top = np.arange(r.shape[1])[None, :] < k[:, None]
    return np.divide((hits & top).sum(axis=1), k, out=np.zeros(len(k)), where=k > 0)
