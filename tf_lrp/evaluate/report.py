"""The quality report: every metric for a list of methods on a shipped data set, at its cost.

:func:`run_report` explains the true label of ``n`` held-out samples with each method and
scores the explanations by

- faithfulness: pixel-flipping AOPC with the data set's removal value and with a second one
  (default ``"blur"``: a Gaussian-blurred copy of the image), each with its random-order
  control; ROAD MoRF and LeRF (noisy linear imputation); IROF (8 x 8 grid superpixels; on the
  correctly classified samples only, as its curve is normalised by the class probability);
- localisation (data with masks): relevance mass and rank accuracy;
- randomisation: cascading top-down and bottom-up MPRT (Spearman of the signed maps and of the
  magnitudes) and efficient MPRT (the entropy rise after the top-down cascade has randomised
  every layer);
- conservation ``sum R / f(x)``;
- cost: milliseconds per explanation and the ratio to one plain gradient.

It writes ``quality_<model>_<data>.md`` (the tables and headline lines), ``.json`` (every
number, per-sample scores included), ``.png`` (the curves) and ``_cost.png`` (each headline
metric against the cost).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import mean_se, write_atomic
from tf_lrp.evaluate.conservation import conservation
from tf_lrp.evaluate.cost import relative_cost
from tf_lrp.evaluate.flipping import pixel_flipping
from tf_lrp.evaluate.irof import IROF_GRID, irof
from tf_lrp.evaluate.localisation import relevance_mass_accuracy, relevance_rank_accuracy
from tf_lrp.evaluate.methods import (
    DATASETS,
    METHODS,
    TOKEN_METHODS,
    _method_table,
    load_data,
    to_model_input,
)
from tf_lrp.evaluate.plots import plot_cost, plot_curves
from tf_lrp.evaluate.randomisation import model_randomisation
from tf_lrp.evaluate.road import ROAD_FRACTIONS
from tf_lrp.evaluate.road import road as road_curves
from tf_lrp.evaluate.tables import flattery, headline, metric_columns, table

__all__ = ["run_report"]

#: ROAD noise as a fraction of the data set's value range (``high - low``).
ROAD_NOISE = 0.01


def _curve(curves) -> dict:
    return {"fractions": curves.fractions, "curve": curves.outputs.mean(axis=0)}


def _composite_file(path):
    """A method factory: an Analyzer with the composite of the file at ``path``."""
    from tf_lrp import composites

    composite = composites.load(path)  # read (and checked) once, before any method runs

    def factory(model, setting, seed: int):
        import tf_lrp

        return tf_lrp.Analyzer(model, composite)

    return factory


def _evaluate_method(factory, model, setting, x, y, masks, explained, predictor, opts):
    """All metrics of one method: a dict of per-sample arrays (and curves, layers, cost)."""
    seed, progress = opts["seed"], opts["progress"]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        analyzer = factory(model, setting, seed)
        relevance = analyzer(x, y)
    curves = pixel_flipping(predictor, x, relevance, y, progress=progress, **opts["flip"])
    r = {"aopc": curves.aopc, "curve": _curve(curves),
         "ratio": conservation(relevance, explained).ratio}
    if opts["second"] is not None:
        curves = pixel_flipping(predictor, x, relevance, y, progress=progress,
                                **{**opts["flip"], "baseline": opts["second"]})
        r["aopc2"], r["curve2"] = curves.aopc, _curve(curves)
    if opts["road"]:
        for order in ("morf", "lerf"):
            curves = road_curves(predictor, x, relevance, y, order=order, progress=progress,
                                 **opts["road"])
            r[f"road_{order}"] = curves.aopc
            r["road_curve" if order == "morf" else "road_curve_lerf"] = _curve(curves)
    if opts["irof"]:  # normalised by p_0: only where the model is right (else p_0 may be ~0)
        scores = irof(predictor, x, relevance, y, baseline=setting.baseline, seed=seed,
                      batch_size=opts["flip"]["batch_size"], progress=progress).aopc
        r["irof"] = np.where(opts["correct"], scores, np.nan)
    if masks is not None:
        r["mass"] = relevance_mass_accuracy(relevance, masks)
        r["rank"] = relevance_rank_accuracy(relevance, masks, seed=seed)
    layers = {}
    for order in opts["sanity"]:
        k = opts["sanity_samples"] or len(x)
        check = model_randomisation(model, lambda m, f=factory: f(m, setting, seed), x[:k],
                                    y[:k], order=order, seed=seed, progress=progress)
        suffix = "" if order == "top_down" else "_bu"
        r["similarity" + suffix], r["similarity_abs" + suffix] = (check.similarity,
                                                                  check.similarity_abs)
        if order == "top_down":
            r["emprt"] = check.complexity_rise
            r["entropy"] = check.complexity[[0, -1]]
        layers[order] = check.layers
    if opts["cost_batch"]:
        batch = slice(0, min(len(x), opts["cost_batch"]))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ends in a softmax")
            cost = relative_cost(analyzer, predictor, x[batch], y[batch],
                                 repeats=opts["cost_repeats"])
        r.update(ms=cost.ms, reference_ms=cost.reference_ms, cost_ratio=cost.ratio,
                 cost_batch=cost.batch_size)
    return r, layers


def run_report(
    model_path,
    data: str,
    methods: Sequence[str] | None = None,
    n: int = 200,
    out_dir="evaluation",
    *,
    steps: int = 25,
    fraction: float = 0.5,
    patch_size: int | None = None,
    baseline=None,
    second_baseline="blur",
    road: bool = True,
    irof_metric: bool = True,
    sanity: bool = True,
    bottom_up: bool = True,
    sanity_samples: int | None = None,
    cost_batch: int = 32,
    cost_repeats: int = 5,
    composite_files: Sequence = (),
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[str, Path]:
    """Evaluate methods on a shipped data set: tables, JSON results and PNG plots.

    Parameters
    ----------
    model_path
        A model file (or a ``keras.Model``).
    data
        ``"digits"`` (test split; 28x28 or padded 32x32 by the model's input), ``"shapes"``
        (held-out seed :data:`tf_lrp.datasets.SHAPES_TEST_SEED`), ``"scenes"`` (held-out
        :func:`tf_lrp.datasets.make_scenes`, seed ``SCENES_TEST_SEED``, masks) or ``"tokens"``
        (held-out :func:`tf_lrp.datasets.make_tokens`, for models with token-id inputs; masks:
        the planted keywords).
    methods
        Names from :data:`METHODS`; default all (for tokens: :data:`TOKEN_METHODS`).
    n
        Number of samples (at most 450 for digits).
    out_dir
        Where ``quality_<model>_<data>.{md,json,png}`` and ``_cost.png`` are written (atomically).
    steps, fraction, patch_size
        Pixel flipping: ``fraction`` of the patches of ``patch_size`` pixels a side are removed in
        ``steps`` steps (default patch size: the data set's, 2 pixels; scenes 4; tokens 1).
    baseline
        Removal value (and the IntegratedGradients baseline) in the data set's range; default:
        the data set's (digits: -1, the background; shapes and scenes: ``"mean"``, each image's
        mean colour). A model that starts with a ``Rescaling`` layer (the shipped models: pixel
        values 0..255) gets the data, the bounds and the baselines mapped back through it.
    second_baseline
        The second removal value of pixel flipping (images only): ``"blur"`` (default: a
        Gaussian-blurred copy of each image, sigma = 1/16 of its side), ``"mean"``, a number in
        the data set's range (mapped like ``baseline``), or ``None`` to skip.
    road, irof_metric
        Run ROAD (MoRF and LeRF; noise 0.01 of the value range) and IROF (images only).
    sanity, bottom_up
        Run the top-down randomisation check and eMPRT (the slowest part), and the bottom-up
        cascade as well.
    sanity_samples
        Run the randomisation checks on the first ``sanity_samples`` samples only (``None``: all;
        on deep models each cascade explains the samples once per layer with weights).
    cost_batch, cost_repeats
        Cost: explanations of the first ``cost_batch`` samples are timed ``cost_repeats`` times
        (after a warm-up) between two timings of a plain gradient; 0 skips the cost.
    composite_files
        Composite files (:func:`tf_lrp.composites.load`, e.g. written by ``tf-lrp tune``), each
        evaluated as one more method named ``file:<stem>`` after ``methods``.
    seed
        Seed of the random order, tie-breaking, noise, random method and new weights.
    batch_size
        Largest batch of perturbed images per prediction.
    progress
        Show progress bars (on stderr).

    Returns
    -------
    table_markdown, figure_path
    """
    import tf_lrp
    from tf_lrp import analyzers

    if data not in DATASETS:
        raise InputError(f"data must be one of {sorted(DATASETS)}, got {data!r}")
    table_of_methods = _method_table()
    methods = list(methods or (TOKEN_METHODS if data == "tokens" else METHODS))
    for path in composite_files:
        name = f"file:{Path(path).stem}"
        table_of_methods[name] = (f"LRP {Path(path).stem} (file)", _composite_file(path))
        methods.append(name)
    unknown = [m for m in methods if m not in table_of_methods]
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if int(n) != n or n < 2:
        raise InputError(f"n must be an integer >= 2 (standard errors need two), got {n!r}")
    start = time.perf_counter()
    model = tf_lrp.load_model(model_path) if isinstance(model_path, (str, os.PathLike)) \
        else model_path
    setting = DATASETS[data]
    if baseline is not None:
        setting = dataclasses.replace(setting, baseline=baseline)
    setting = dataclasses.replace(setting, second=second_baseline if setting.images else None)
    patch_size = setting.patch_size if patch_size is None else patch_size
    x, y, masks = load_data(data, model, int(n))
    setting, x = to_model_input(setting, x, model)  # e.g. pixels 0..255 for Rescaling models
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        predictor = analyzers.Gradient(model)
    logits = predictor.predict(x)
    explained = logits[np.arange(len(y)), y]
    flip = dict(patch_size=patch_size, steps=steps, fraction=fraction,
                baseline=setting.baseline, seed=seed, batch_size=batch_size)
    second = setting.second
    road_settings = dict(fractions=ROAD_FRACTIONS, noise_std=ROAD_NOISE * (setting.high - setting.low),
                         seed=seed, batch_size=batch_size)
    opts = {"seed": seed, "progress": progress, "flip": flip, "second": second,
            "road": road_settings if road and setting.images else None,
            "irof": irof_metric and setting.images, "correct": logits.argmax(axis=1) == y,
            "sanity": (("top_down", "bottom_up") if bottom_up else ("top_down",)) if sanity
            else (), "sanity_samples": sanity_samples, "cost_batch": int(cost_batch), "cost_repeats": cost_repeats}
    controls = {"aopc": pixel_flipping(predictor, x, None, y, order="random", progress=progress,
                                       **flip)}
    if second is not None:
        controls["aopc2"] = pixel_flipping(predictor, x, None, y, order="random",
                                           progress=progress, **{**flip, "baseline": second})

    labels = {name: table_of_methods[name][0] for name in methods}
    results, layers = {}, {}
    for name in methods:
        method_start = time.perf_counter()
        results[name], found = _evaluate_method(table_of_methods[name][1], model, setting, x, y,
                                                masks, explained, predictor, opts)
        layers.update(found)
        results[name]["seconds"] = time.perf_counter() - method_start
        if progress:
            print(f"  {name}: {results[name]['seconds']:.1f} s", file=sys.stderr, flush=True)
    runtime = time.perf_counter() - start

    stem = f"quality_{Path(str(getattr(model, 'name', 'model'))).stem}_{data}"
    if isinstance(model_path, (str, os.PathLike)):
        stem = f"quality_{Path(model_path).stem}_{data}"
    out_dir = Path(out_dir)
    accuracy = float(np.mean(logits.argmax(1) == y))
    digest = _sha256(model_path)
    second_name = str(second)
    title = (f"{stem[8:]}: n={len(x)}, patch {patch_size}, {steps} steps to {fraction:.0%}, "
             f"baseline {setting.baseline}" + (f", second {second_name}" if second is not None else ""))
    aopc = {key: c.aopc for key, c in controls.items()}
    faithful, other = metric_columns(aopc, second_name)
    control_row = {faithful[0][0]: aopc["aopc"]}  # the random-order rows under "AOPC"
    if "aopc2" in aopc:
        control_row[faithful[2][0]] = aopc["aopc2"]
    markdown = "\n".join([
        f"{title}; accuracy on these samples {accuracy:.3f}"
        + (f"; model sha256 {digest[:12]}" if digest else ""), "",
        table(results, labels, faithful, control_row), "",
        table(results, labels, other), "",
        *headline(results, labels), *flattery(results, second_name)])
    figure = out_dir / f"{stem}.png"
    plot_curves(figure, title, results, controls, labels, layers, second_name)
    plot_cost(out_dir / f"{stem}_cost.png", title, results, labels)
    summary = {
        "model": str(model_path) if isinstance(model_path, (str, os.PathLike)) else model.name,
        "sha256": digest, "data": data, "n": len(x), "accuracy": accuracy,
        "settings": {**flip, "baseline": setting.baseline, "second_baseline": second,
                     "road": opts["road"] and {**road_settings,
                                               "fractions": list(ROAD_FRACTIONS)},
                     "irof_grid": IROF_GRID if opts["irof"] else None,
                     "cost_batch": opts["cost_batch"], "cost_repeats": cost_repeats,
                     "sanity_samples": min(sanity_samples or len(x), len(x)),
                     "composite_files": [str(p) for p in composite_files]},
        "runtime_seconds": runtime,
        "randomised_layers": layers.get("top_down"),
        "randomised_layers_bottom_up": layers.get("bottom_up"),
        "control_aopc": mean_se(aopc["aopc"]),
        "control_aopc_second": mean_se(aopc["aopc2"]) if "aopc2" in aopc else None,
        "methods": {name: _summarise(r) for name, r in results.items()},
    }
    write_atomic(out_dir / f"{stem}.json", (json.dumps(summary) + "\n").encode())
    write_atomic(out_dir / f"{stem}.md", (markdown + "\n").encode())
    return markdown, figure


def _sha256(model_path) -> str | None:
    if not isinstance(model_path, (str, os.PathLike)):
        return None
    import hashlib

    return hashlib.sha256(Path(model_path).read_bytes()).hexdigest()


def _summarise(r: dict) -> dict:
    """JSON-ready results of one method: mean and standard error, plus the per-sample scores."""
    out = {"seconds": r["seconds"], "curve": r["curve"]["curve"].tolist(),
           "fractions": r["curve"]["fractions"].tolist()}
    for key, name in (("curve2", "curve_second"), ("road_curve", "road_curve_morf"),
                      ("road_curve_lerf", "road_curve_lerf")):
        if key in r:
            out[name] = r[key]["curve"].tolist()
            out[f"{name}_fractions"] = r[key]["fractions"].tolist()
    for key, name in (("aopc", "aopc"), ("aopc2", "aopc_second"), ("road_morf", "road_morf"),
                      ("road_lerf", "road_lerf"), ("irof", "irof"), ("mass", "mass"),
                      ("rank", "rank"), ("emprt", "emprt"), ("ratio", "ratio")):
        if key in r:
            values = np.asarray(r[key], np.float64)
            out[name] = mean_se(values[np.isfinite(values)])
            out[f"{name}_per_sample"] = [None if not np.isfinite(v) else round(float(v), 4)
                                         for v in values]
    if "entropy" in r:
        out["entropy_original"] = mean_se(r["entropy"][0])
        out["entropy_randomised"] = mean_se(r["entropy"][1])
    for key in ("similarity", "similarity_abs", "similarity_bu", "similarity_abs_bu"):
        if key in r:
            out[f"{key}_per_layer"] = [mean_se(s) for s in r[key]]
            out[f"{key}_top_per_sample" if not key.endswith("_bu") else
                f"{key}_first_per_sample"] = np.round(r[key][0], 4).tolist()
            out[f"{key}_all_per_sample"] = np.round(r[key][-1], 4).tolist()
    if "ms" in r:
        out["cost"] = {"ms_per_explanation": r["ms"], "gradient_ms": r["reference_ms"],
                       "ratio": r["cost_ratio"], "batch_size": r["cost_batch"]}
    return out
