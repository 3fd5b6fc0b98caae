"""Scoring composites with a metric of explanation quality, and the validation/test split."""

from __future__ import annotations

import warnings

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate import mean_se

__all__ = ["METRICS", "Scorer", "check_masks", "mean_se", "score", "split_indices"]

#: The metrics :func:`tf_lrp.tuning.tune` maximises.
METRICS = ("aopc", "road", "mass")


class Scorer:
    """Scores composites on samples with one metric and fixed settings.

    One predictor (:class:`tf_lrp.analyzers.Gradient`, its ``predict`` the model's logits)
    serves every metric call; each composite gets its own :class:`tf_lrp.Analyzer`.
    """

    def __init__(self, model, metric: str, *, baseline, patch_size: int | None, steps: int,
                 fraction: float, seed: int, batch_size: int):
        from tf_lrp import analyzers

        if metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        self.model, self.metric = model, metric
        self.settings = dict(baseline=baseline, patch_size=patch_size, steps=steps,
                             fraction=fraction, seed=seed, batch_size=batch_size)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ends in a softmax")
            self.predictor = analyzers.Gradient(model)

    def targets(self, x: np.ndarray, y) -> np.ndarray:
        """``y``, or the predicted classes of ``x``."""
        if y is not None:
            return np.asarray(y, dtype=np.int64)
        return self.predictor.predict(x).argmax(axis=1)

    def __call__(self, composite, x: np.ndarray, target: np.ndarray, masks) -> np.ndarray:
        """Per-sample scores of ``composite`` on ``x`` (higher is better)."""
        import tf_lrp
        from tf_lrp import evaluate

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ends in a softmax")
            analyzer = tf_lrp.Analyzer(self.model, composite)
        relevance = np.asarray(analyzer(x, target))
        s = self.settings
        if self.metric == "mass":
            return evaluate.relevance_mass_accuracy(relevance, masks)
        if self.metric == "aopc":
            patch = s["patch_size"] or (2 if np.ndim(x) == 4 else 1)
            return evaluate.pixel_flipping(
                self.predictor, x, relevance, target, patch_size=patch, steps=s["steps"],
                fraction=s["fraction"], baseline=s["baseline"], seed=s["seed"],
                batch_size=s["batch_size"]).aopc
        # ROAD brings its own removal (noisy linear imputation) and fractions
        return evaluate.road(self.predictor, x, relevance, target, seed=s["seed"],
                             batch_size=s["batch_size"]).aopc


def score(model, composite, x, y=None, *, masks=None, metric: str = "aopc", baseline=0.0,
          patch_size: int | None = None, steps: int = 25, fraction: float = 0.5, seed: int = 0,
          batch_size: int = 256) -> np.ndarray:
    """Per-sample scores of one composite, as :func:`tf_lrp.tuning.tune` computes them (higher is better).

    Parameters
    ----------
    model
        A Keras model.
    composite
        What :class:`tf_lrp.Analyzer` takes (a composite, a loaded composite file, a name).
    x, y, masks, metric, baseline, patch_size, steps, fraction, seed, batch_size
        As for :func:`tf_lrp.tuning.tune`.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` scores; their mean is the score :func:`tf_lrp.tuning.tune` reports.
    """
    x = np.asarray(x)
    scorer = Scorer(model, metric, baseline=baseline, patch_size=patch_size, steps=steps,
                     fraction=fraction, seed=seed, batch_size=batch_size)
    check_masks(metric, masks, len(x))
    return scorer(composite, x, scorer.targets(x, y), masks)


def check_masks(metric: str, masks, n: int) -> None:
    """:class:`~tf_lrp.InputError` unless the masks fit the metric and the ``n`` samples."""
    if metric == "mass" and masks is None:
        raise InputError("metric 'mass' (relevance mass accuracy) needs ground-truth masks: pass "
                         "masks=(n, H, W) booleans, or use metric='aopc'")
    if masks is not None and len(masks) != n:
        raise InputError(f"got {len(masks)} masks for {n} samples")


def split_indices(n: int, validation=0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint ``(validation, test)`` sample indices.

    Parameters
    ----------
    n
        Number of samples.
    validation
        The share of samples for validation, in (0, 1) (a seeded random permutation; both parts
        get at least 2 samples, for standard errors), or a pair of index sequences
        ``(validation, test)``, checked to be disjoint and in range.
    seed
        Seed of the permutation.

    Raises
    ------
    tf_lrp.InputError
        If the parts overlap, are too small or out of range.
    """
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 < validation < 1:
            raise InputError(f"validation must be a share in (0, 1) or (validation, test) "
                             f"indices, got {validation!r}")
        k = min(max(int(round(validation * n)), 2), n - 2)
        if n < 4:
            raise InputError(f"tuning needs at least 4 samples (2 for validation, 2 for test), "
                             f"got {n}")
        order = np.random.default_rng(seed).permutation(n)
        return np.sort(order[:k]), np.sort(order[k:])
    try:
        val, test = (np.asarray(part, dtype=np.int64).ravel() for part in validation)
    except (TypeError, ValueError):
        raise InputError("validation must be a share in (0, 1) or a pair of index sequences "
                         "(validation, test)") from None
    for name, part in (("validation", val), ("test", test)):
        if part.size == 0 or part.min() < 0 or part.max() >= n or np.unique(part).size != part.size:
            raise InputError(f"the {name} indices must be distinct and in 0..{n - 1}, at least one")
    if np.intersect1d(val, test).size:
        raise InputError(f"the validation and test indices overlap in "
                         f"{np.intersect1d(val, test).size} samples; they must be disjoint")
    return val, test
