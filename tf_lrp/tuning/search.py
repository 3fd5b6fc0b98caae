"""The search: :func:`tune`, its :class:`Trial` and :class:`TuneResult`."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tf_lrp import composites
from tf_lrp.errors import InputError, LRPError
from tf_lrp.tuning.scoring import METRICS, Scorer, check_masks, mean_se, split_indices
from tf_lrp.tuning.space import (
    BLOCKS,
    IMAGE_PRESETS,
    TOKEN_PRESETS,
    Layout,
    layout,
    number_or_list,
    sample_point,
    spec_for,
)


@dataclasses.dataclass
class Trial:
    """One scored composite of the search.

    Attributes
    ----------
    index
        Its place in the search, from 1 (the presets first).
    name
        The preset's name, or ``"search"``.
    params
        :meth:`Point.params` (empty for a preset).
    spec
        Its composite-file object.
    score, se
        Mean validation score and its standard error.
    seconds
        What scoring it cost (building the analyzer, explaining, the metric).
    scores
        Per validation sample.
    error
        Why it could not be scored (then ``score`` is NaN), else ``None``.
    """

    index: int
    name: str
    params: dict
    spec: dict
    score: float
    se: float
    seconds: float
    scores: np.ndarray
    error: str | None = None


def _fmt(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f} ± {se:.4f}" if not math.isnan(se) else f"{mean:.4f}"


def _params_text(params: dict) -> str:
    parts = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()]
    return " ".join(parts)


@dataclasses.dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes
    ----------
    metric
        The metric (higher is better).
    trials
        Every trial, in order.
    best
        The winner: the highest mean validation score, or under the one-standard-error rule
        the best preset where the searched leader is within one paired standard error of it.
    test_score, test_se, test_scores
        The winner on the test split (mean, standard error, per sample).
    presets
        ``{name: (mean, se)}`` of the presets on the test split.
    validation_indices, test_indices
        The disjoint splits of the samples.
    spec
        The winner's composite-file object, with ``"meta"`` (scores, settings, the blocks).
    layout
        The model's :class:`Layout`.
    """

    metric: str
    trials: list[Trial]
    best: Trial
    test_score: float
    test_se: float
    test_scores: np.ndarray
    presets: dict[str, tuple[float, float]]
    validation_indices: np.ndarray
    test_indices: np.ndarray
    spec: dict
    layout: Layout

    @property
    def composite(self) -> composites.FileComposite:
        """The winner as a composite (for :class:`tf_lrp.Analyzer`)."""
        return composites.from_spec(self.spec)

    def save(self, path) -> Path:
        """Write the winner as a composite file (atomically); return the path."""
        return composites.save(self.spec, path)

    def table(self) -> str:
        """The trials: validation score ± standard error, cost and parameters."""
        lines = [f"{'trial':>5}  {'name':<22} {'validation ' + self.metric:<20} {'seconds':>7}  "
                 "parameters"]
        for t in self.trials:
            mark = "*" if t is self.best else " "
            value = _fmt(t.score, t.se) if t.error is None else f"failed: {t.error}"
            lines.append(f"{t.index:>5}{mark} {t.name:<22} {value:<20} {t.seconds:>7.1f}  "
                         f"{_params_text(t.params)}")
        return "\n".join(lines)

    def report(self) -> str:
        """The winner against the presets, on the validation and the disjoint test split."""
        n_val, n_test = len(self.validation_indices), len(self.test_indices)
        rows = [(f"tuned (trial {self.best.index}: {self.best.name})",
                 (self.best.score, self.best.se), (self.test_score, self.test_se))]
        by_name = {t.name: t for t in self.trials if t.name != "search"}
        rows += [(name, (by_name[name].score, by_name[name].se), test)
                 for name, test in self.presets.items()]
        width = max(len(r[0]) for r in rows)
        lines = [f"metric {self.metric} (higher is better); validation n={n_val}, "
                 f"test n={n_test} (disjoint; the search never saw it)",
                 f"{'composite':<{width}}  {'validation':<17}  test"]
        lines += [f"{name:<{width}}  {_fmt(*val):<17}  {_fmt(*test)}" for name, val, test in rows]
        if self.best.params:
            lines.append(f"tuned: {_params_text(self.best.params)}")
        return "\n".join(lines)


def file_sha256(path) -> str:
    """The SHA-256 of a file (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _bounds_kwargs(name: str, low, high) -> dict:
    try:
        cls = composites.presets._REGISTRY[name.replace("-", "_").lower()]
    except KeyError:
        return {}
    params = inspect.signature(cls).parameters
    return {"low": low, "high": high} if {"low", "high"} <= set(params) else {}


def _one_se(leader: Trial, presets: list[Trial]) -> Trial:
    """The best preset, unless ``leader`` leads it by more than one standard error of the
    paired per-sample differences (samples where either score is NaN left out)."""
    if not presets:
        return leader
    preset = max(presets, key=lambda t: t.score)
    d = leader.scores - preset.scores
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return leader
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    return leader if mean > se else preset


def tune(model, x, y=None, *, masks=None, metric: str = "aopc", budget: int = 20,
         validation=0.5, seed: int = 0, low=None, high=None,
         presets: Sequence[str] | None = None, baseline=0.0, patch_size: int | None = None,
         steps: int = 25, fraction: float = 0.5, batch_size: int = 256,
         on_trial: Callable[[Trial], None] | None = None, meta: dict | None = None,
         selection: str = "one_se") -> TuneResult:
    """Search composite parameters on a validation split; score the winner on a test split.

    Parameters
    ----------
    model
        A Keras model (single input), or the path of a model file (its SHA-256 is then stored
        in the result's ``meta``).
    x
        ``(n, ...)`` inputs in the model's input space.
    y
        ``(n,)`` the classes to explain and follow (default: the predicted classes).
    masks
        ``(n, H, W)`` ground-truth masks, for ``metric="mass"``.
    metric
        ``"aopc"`` (pixel flipping), ``"road"`` or ``"mass"`` (see :mod:`tf_lrp.tuning`).
    budget
        The number of trials, the presets included (at least as many as there are presets).
    validation
        The share of samples the search is scored on, or ``(validation, test)`` indices
        (:func:`split_indices`); the rest is the test split, used only after the search.
    seed
        Seed of the split, the random search and the metric's tie-breaking.
    low, high
        The input bounds of z^B (in the model's input space; numbers or arrays broadcastable
        to the input). Default: the smallest and largest value of the validation split.
    presets
        Registered composite names tried first (default :data:`IMAGE_PRESETS`, or
        :data:`TOKEN_PRESETS` for models reading token ids); a preset taking ``low``/``high``
        gets the bounds.
    baseline, patch_size, steps, fraction
        Pixel flipping (``"aopc"``): the removal value, the patch side (default 2 for images,
        else 1), the number of steps and the share of patches removed by the last.
    batch_size
        Largest batch of the metric's predictions.
    on_trial
        Called with every :class:`Trial` once it is scored (progress).
    meta
        Entries added to (or replacing) the ``"meta"`` of the result's composite file, e.g.
        ``{"model_sha256": ..., "data": ...}``.
    selection
        ``"one_se"`` (default): the one-standard-error rule in favour of the presets: when the
        highest-scoring trial is a searched one, the best preset replaces it unless the trial
        leads that preset by more than one standard error of their paired per-sample
        differences on the validation split (a lead smaller than its noise is noise fitted on
        100 samples). ``"argmax"``: the highest mean validation score.

    Returns
    -------
    TuneResult
        The winner (``.spec``, ``.composite``, ``.save(path)``), the trials (``.table()``)
        and the test scores of the winner and the presets (``.report()``).

    Raises
    ------
    tf_lrp.InputError
        For a bad metric, budget, split, missing masks, or when no trial could be scored.
    """
    import tf_lrp

    sha = None
    if isinstance(model, (str, os.PathLike)):
        sha = file_sha256(model)
        model = tf_lrp.load_model(model)
    x = np.asarray(x)
    n = len(x)
    if metric not in METRICS:
        raise InputError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if y is not None and len(y) != n:
        raise InputError(f"got {len(y)} labels for {n} samples")
    check_masks(metric, masks, n)
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise InputError(f"budget must be a positive number of trials, got {budget!r}")
    val, test = split_indices(n, validation, seed)
    where = layout(model)
    presets = list(presets if presets is not None else
                   (TOKEN_PRESETS if where.tokens else IMAGE_PRESETS))
    if budget < len(presets):
        raise InputError(f"budget {budget} is less than the {len(presets)} presets tried first "
                         f"({', '.join(presets)}); raise the budget or name fewer presets")
    x_val = x[val]
    low = float(x_val.min()) if low is None else low
    high = float(x_val.max()) if high is None else high
    if patch_size is None:
        patch_size = 2 if x.ndim == 4 else 1
    scorer = Scorer(model, metric, baseline=baseline, patch_size=patch_size, steps=steps,
                     fraction=fraction, seed=seed, batch_size=batch_size)

    def part(values, index):
        return None if values is None else np.asarray(values)[index]

    # ---- the search: validation samples only
    target_val = scorer.targets(x_val, part(y, val))
    candidates: list[tuple[str, dict, dict]] = []
    for name in presets:
        try:
            preset = composites.get(name, **_bounds_kwargs(name, low, high))
        except KeyError as err:
            raise InputError(str(err).strip("\"'")) from None
        candidates.append((name, {}, composites.to_spec(preset)))
    seen = {json.dumps(spec, sort_keys=True) for _, _, spec in candidates}
    rng = np.random.default_rng(seed)
    for _ in range(100 * budget):
        if len(candidates) >= budget:
            break
        point = sample_point(rng, where)
        spec = spec_for(point, where, low, high)
        key = json.dumps(spec, sort_keys=True)
        if key not in seen:
            seen.add(key)
            candidates.append(("search", point.params(), spec))
    trials = []
    for index, (name, params, spec) in enumerate(candidates, start=1):
        start, error = time.perf_counter(), None
        try:
            scores = np.asarray(scorer(composites.from_spec(spec), x_val, target_val,
                                       part(masks, val)), dtype=np.float64)
        except LRPError as err:
            scores, error = np.full(len(val), np.nan), str(err).splitlines()[0]
        trial = Trial(index, name, params, spec, *mean_se(scores),
                      time.perf_counter() - start, scores, error)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    scored = [t for t in trials if not math.isnan(t.score)]
    if not scored:
        raise InputError(f"no trial could be scored; the first failed with: {trials[0].error}")
    if selection not in ("one_se", "argmax"):
        raise InputError(f"selection must be 'one_se' or 'argmax', got {selection!r}")
    argmax = best = max(scored, key=lambda t: t.score)  # max keeps the earliest of equals
    if selection == "one_se" and best.name == "search":
        best = _one_se(best, [t for t in scored if t.name != "search"])

    # ---- after the search: the test split, for the winner and the presets
    x_test = x[test]
    target_test = scorer.targets(x_test, part(y, test))
    tested: dict[int, np.ndarray] = {}
    for trial in [best] + [t for t in trials if t.name != "search"]:
        if trial.index not in tested and trial.error is None:
            tested[trial.index] = np.asarray(scorer(
                composites.from_spec(trial.spec), x_test, target_test, part(masks, test)),
                dtype=np.float64)
    preset_scores = {t.name: mean_se(tested[t.index]) if t.index in tested else
                     (math.nan, math.nan) for t in trials if t.name != "search"}
    test_score, test_se = mean_se(tested[best.index])

    info = {
        "created_by": "tf_lrp.tuning.tune", "tf_lrp_version": tf_lrp.__version__,
        "model": getattr(model, "name", None), "model_sha256": sha,
        "metric": metric, "higher_is_better": True,
        "score": _finite(test_score), "score_se": _finite(test_se), "score_split": "test",
        "n_test": len(test), "validation_score": _finite(best.score),
        "validation_se": _finite(best.se), "n_validation": len(val),
        "trial": best.index, "name": best.name, "params": best.params,
        "selection": selection, "argmax_trial": argmax.index,
        "blocks": {b: list(names) for b, names in zip(BLOCKS, where.blocks)},
        "presets_test": {k: [_finite(m), _finite(s)] for k, (m, s) in preset_scores.items()},
        "settings": {"budget": int(budget), "seed": int(seed), "baseline": number_or_list(baseline),
                     "patch_size": patch_size, "steps": int(steps), "fraction": float(fraction),
                     "low": number_or_list(low), "high": number_or_list(high)},
    }
    spec = composites.to_spec(best.spec, meta={**info, **(meta or {})})
    return TuneResult(metric, trials, best, test_score, test_se, tested[best.index],
                      preset_scores, val, test, spec, where)

