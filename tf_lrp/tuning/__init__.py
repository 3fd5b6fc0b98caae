"""Tune the parameters of an LRP composite on a validation split (:func:`tune`).

After Pahde et al. (2023, "Optimizing explanations by network canonization and hyperparameter
search"): which composite explains a given model best is an empirical question, so its
parameters are searched for, measured by a metric of explanation quality. Here:

- **metric** (higher is better, one score per sample, averaged): ``"aopc"``, the area over the
  pixel-flipping curve (:func:`tf_lrp.evaluate.pixel_flipping`); ``"road"``, the AOPC of ROAD
  (:func:`tf_lrp.evaluate.road`, removal with noisy linear imputation); ``"mass"``, relevance
  mass accuracy against ground-truth masks (:func:`tf_lrp.evaluate.relevance_mass_accuracy`).
- **search space**: LRP-epsilon on Dense and every other layer with weights, epsilon
  log-uniform in [1e-6, 1]; the rule family of the convolutions (``"gamma"``, ``"z_plus"``,
  ``"alpha2_beta1"``, ``"alpha1_beta0"``: alpha=1, beta=0 *with* the bias in the
  denominator, since without it is z+); for gamma, one gamma per block of convolutions from
  :data:`GAMMAS` (the blocks: the convolutions in graph order cut into three nearly equal
  parts, lower, middle and upper; 0 is LRP-0 with a tiny stabiliser); the rule of the first
  layer (z^B with the input bounds, flat, w^2, or the same as its block). A model without
  convolutions (an MLP) is searched over epsilon and the first layer's rule; one that reads
  token ids over epsilon (its attention parts and normalizations keep AttnLRP's handling).
- **search**: the presets (:data:`IMAGE_PRESETS`; for models reading token ids
  :data:`TOKEN_PRESETS`) are the first trials, then points drawn at random (seeded), until
  ``budget`` trials are scored. The winner is the trial with the highest mean validation
  score (the earliest of equals), except that a searched trial must lead the best preset by
  more than one standard error of their paired per-sample differences, or the preset wins
  (the one-standard-error rule, ``selection="one_se"``; ``"argmax"`` turns it off): with 100
  validation samples a smaller lead is noise the search fitted.
- **honest reporting**: the samples are split into a validation part, on which every trial
  is scored, and a disjoint test part, which is used only after the search, to score the
  winner and the presets. The test scores are the ones to quote.

The winner is a composite file object (:func:`tf_lrp.composites.load`): the blocks are
resolved into the model's layer names, so the file needs no knowledge of layer positions::

    result = tf_lrp.tuning.tune(model, x, y, metric="aopc", budget=20, low=-1.0, high=1.0)
    print(result.report())
    result.save("tuned.json")
    analyzer = tf_lrp.Analyzer(model, composites.load("tuned.json"))

From the shell: ``tf-lrp tune MODEL --data digits|shapes|FILE.npz --metric aopc --budget 20
--out tuned.json``, then ``tf-lrp explain MODEL INPUT --composite-file tuned.json``.

The package: :mod:`~tf_lrp.tuning.space` (the layout of a model, the points of the search
space and their composite files), :mod:`~tf_lrp.tuning.scoring` (the metrics, the split) and
:mod:`~tf_lrp.tuning.search` (:func:`tune`).
"""

from __future__ import annotations

from tf_lrp.tuning.scoring import METRICS, score, split_indices
from tf_lrp.tuning.search import Trial, TuneResult, tune
from tf_lrp.tuning.space import (
    BLOCKS,
    CONV_RULES,
    EPSILON_RANGE,
    FIRST_RULES,
    GAMMAS,
    IMAGE_PRESETS,
    TOKEN_PRESETS,
    Layout,
    Point,
    layout,
    sample_point,
    spec_for,
)

__all__ = [
    "BLOCKS", "CONV_RULES", "EPSILON_RANGE", "FIRST_RULES", "GAMMAS", "IMAGE_PRESETS", "METRICS",
    "TOKEN_PRESETS", "Layout", "Point", "Trial", "TuneResult", "layout", "sample_point", "score",
    "spec_for", "split_indices", "tune",
]
