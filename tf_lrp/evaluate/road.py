"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci, Kasneci 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML).

Pixel flipping with a constant removal value leaks the *shape* of the removed region to the
model (a mean-coloured hole is itself a feature) and rewards explanations computed against the
same constant. ROAD removes pixels by **noisy linear imputation** instead: every removed pixel
``v_i`` is set to the weighted mean of its 8 neighbours,

    ``v_i = sum_j w_ij u_j / sum_j w_ij``,  ``w = 1/6`` for the 4 direct, ``1/12`` for the 4
    diagonal neighbours (only neighbours inside the image count),

where ``u_j`` is the neighbour's original value when it is kept and its unknown ``v_j`` when it
is removed too. This sparse linear system (one unknown per removed pixel; the same symmetric
positive definite matrix for every channel) is solved exactly by a sparse LU factorisation
(:func:`scipy.sparse.linalg.splu`), and Gaussian noise of standard deviation ``noise_std`` is
added to the imputed values only (the paper: 0.01 on its normalised images; here by default
0.01 of the batch's value range ``max(x) - min(x)``; the report uses 0.01 of the data set's
range ``high - low``).

Pixels are ranked by their relevance summed over channels (ties at random) and removed, for
each fraction ``p`` of the pixels in ``fractions`` (default 10 %, 20 %, ..., 90 %), from the
original image: most relevant first (``order="morf"``) or least relevant first (``"lerf"``).
The explained output (the target's logit) is recorded at ``p = 0`` and each fraction. The
per-sample score is the AOPC of these curves (:attr:`FlipCurves.aopc`, the mean over the
points of ``f(x) - f(x_p)``): for MoRF higher is better, for LeRF lower is better (removing
the least relevant pixels should change little). The paper reports accuracy curves; the mean
output drop keeps the scale of :func:`~tf_lrp.evaluate.pixel_flipping`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import (
    batched,
    descending_order,
    predict_fn,
    progress_bar,
    spatial_relevance,
    targets,
)
from tf_lrp.evaluate.flipping import FlipCurves

__all__ = ["NEIGHBOUR_WEIGHTS", "ROAD_FRACTIONS", "ROAD_ORDERS", "linear_imputation", "road"]

#: ``(row offset, column offset, weight)`` of the 8 neighbours in the imputation (the paper's).
NEIGHBOUR_WEIGHTS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
                     (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
ROAD_ORDERS = ("morf", "lerf")
#: The paper's removal fractions.
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def linear_imputation(image: np.ndarray, removed: np.ndarray, noise_std: float = 0.0,
                      rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Fill the ``removed`` pixels of one image by ROAD's noisy linear imputation.

    Parameters
    ----------
    image
        ``(H, W, C)`` or ``(H, W)``.
    removed
        ``(H, W)`` booleans: the pixels to replace (all channels). At least one pixel is kept.
    noise_std
        Standard deviation of the Gaussian noise added to the imputed values.
    rng
        A generator or seed for the noise.

    Returns
    -------
    numpy.ndarray
        A copy of ``image`` (same shape and dtype) with each removed pixel equal to the weighted
        mean of its neighbours (direct 1/6, diagonal 1/12; removed neighbours by their own
        imputed value), plus noise.
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import splu

    image = np.asarray(image)
    removed = np.asarray(removed, dtype=bool)
    h, w = removed.shape
    if image.shape[:2] != (h, w) or image.ndim not in (2, 3):
        raise InputError(f"image of shape {image.shape} does not match the mask {removed.shape}")
    flat = image.reshape(h * w, -1).astype(np.float64)
    gone = removed.ravel()
    idx = np.flatnonzero(gone)
    m = idx.size
    if m == 0:
        return image.copy()
    if m == h * w:
        raise InputError("linear imputation needs at least one kept pixel; every pixel is removed")
    variable = np.full(h * w, -1)
    variable[idx] = np.arange(m)
    r, c = np.divmod(idx, w)
    diagonal = np.zeros(m)
    rhs = np.zeros((m, flat.shape[1]))
    rows, cols, values = [np.arange(m)], [np.arange(m)], []
    for dr, dc, weight in NEIGHBOUR_WEIGHTS:
        rr, cc = r + dr, c + dc
        inside = np.flatnonzero((rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
        neighbour = rr[inside] * w + cc[inside]
        diagonal[inside] += weight
        unknown = gone[neighbour]
        rows.append(inside[unknown])
        cols.append(variable[neighbour[unknown]])
        values.append(np.full(int(unknown.sum()), -weight))
        rhs[inside[~unknown]] += weight * flat[neighbour[~unknown]]  # one entry per row here
    matrix = csc_matrix((np.concatenate([diagonal, *values]),
                         (np.concatenate(rows), np.concatenate(cols))), shape=(m, m))
    # symmetric positive definite: LU without pivoting, symmetric fill-reducing ordering
    factor = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True})
    solution = factor.solve(rhs).reshape(m, -1)
    if noise_std:
        solution = solution + np.random.default_rng(rng).normal(0.0, noise_std, solution.shape)
    out = flat.copy()
    out[idx] = solution
    return out.reshape(image.shape).astype(image.dtype)


def road(
    predictor,
    x: np.ndarray,
    relevance: np.ndarray,
    target=None,
    *,
    order: str = "morf",
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise_std: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> FlipCurves:
    """ROAD: remove pixels by relevance, impute them (noisy linear), record the output.

    Parameters
    ----------
    predictor
        A tf_lrp analyzer (its ``predict`` gives the explained output: logits) or a callable
        mapping a batch to ``(batch, outputs)``.
    x
        ``(n, H, W, C)`` channels-last images, or ``(n, H, W)``.
    relevance
        Same shape as ``x`` (summed over channels to rank the pixels).
    target
        The output to follow, one int or one per sample; ``None``: each sample's highest output
        on the unperturbed input.
    order
        ``"morf"``: most relevant first (higher AOPC is better); ``"lerf"``: least relevant
        first (lower is better).
    fractions
        Increasing fractions of the pixels to remove, each in (0, 1); the curves start at 0.
    noise_std
        Standard deviation of the noise on imputed pixels; default ``0.01 * (x.max() - x.min())``
        over the batch (0.01 for images in [0, 1], 2.55 for pixels 0..255).
    seed
        Seed of the tie-breaking and the noise.
    batch_size
        Largest batch given to the predictor.
    progress
        Show a progress bar.

    Returns
    -------
    FlipCurves
        ``fractions`` (with 0 first), ``outputs`` ``(n, len(fractions) + 1)`` and, as
        ``.aopc``, the per-sample mean output drop.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (3, 4):
        raise InputError(f"road needs images (n, H, W, C) or (n, H, W); got shape {x.shape}")
    if np.shape(relevance) != x.shape:
        raise InputError(f"relevance has shape {np.shape(relevance)}, the input {x.shape}")
    if order not in ROAD_ORDERS:
        raise InputError(f"order must be one of {ROAD_ORDERS}, got {order!r}")
    fractions = np.asarray(fractions, dtype=np.float64).ravel()
    if fractions.size == 0 or np.any((fractions <= 0) | (fractions >= 1)) \
            or np.any(np.diff(fractions) <= 0):
        raise InputError(f"fractions must increase within (0, 1), got {fractions.tolist()}")
    predict = predict_fn(predictor)
    n, h, w = x.shape[:3]
    target = targets(predict, x, target, batch_size)
    if noise_std is None:
        noise_std = 0.01 * float(x.max() - x.min()) if x.size else 0.0
    rng = np.random.default_rng(seed)
    score = spatial_relevance(relevance, x.ndim == 4)
    ranking = descending_order(score if order == "morf" else -score, rng)
    counts = np.round(fractions * h * w).astype(np.int64)

    outputs = np.empty((n, fractions.size + 1), dtype=np.float64)
    chunk = max(1, 1024 // (fractions.size + 1))
    with progress_bar(n, f"ROAD ({order})", progress) as bar:
        for lo in range(0, n, chunk):
            images = []
            for i in range(lo, min(n, lo + chunk)):
                images.append(x[i])
                for k in counts:
                    removed = np.zeros(h * w, dtype=bool)
                    removed[ranking[i, :k]] = True
                    images.append(linear_imputation(x[i], removed.reshape(h, w), noise_std, rng))
                bar.update(1)
            y = batched(predict, np.stack(images), batch_size)
            y = y.reshape(-1, fractions.size + 1, y.shape[-1])
            sl = slice(lo, lo + len(y))
            outputs[sl] = np.take_along_axis(y, target[sl][:, None, None], axis=2)[..., 0]
    return FlipCurves(np.r_[0.0, fractions], outputs)
