"""Quantitative evaluation of explanations: faithfulness, localisation, randomisation, conservation.

Every metric returns one score per sample, so results are reported as mean +- standard error.

Pixel flipping / region perturbation (:func:`pixel_flipping`)
    Bach et al. (2015), Samek et al. (2017). The input is cut into square patches
    (``patch_size`` pixels a side; all channels of a pixel go together); a patch's relevance is the
    sum of its relevance. Patches are replaced by a baseline value in order of decreasing
    relevance ("most relevant first"; ties are broken at random), or in random order as a
    control, ``fraction`` of them over ``steps`` equal steps. The explained output (the target's
    logit) is recorded after every step; AOPC is the mean over the ``steps + 1`` points
    ``k = 0..steps`` of ``f(x) - f(x_k)`` (Samek et al.'s definition: the ``k = 0`` term is 0).
    A faithful explanation makes the output drop fast: higher AOPC is better.

Localisation (:func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy`)
    Arras et al. (2022), on data with a ground-truth mask (:func:`tf_lrp.datasets.make_shapes`).
    Relevance is summed over channels. Mass accuracy: the share of positive relevance inside
    the mask. Rank accuracy: with ``K`` = the mask's pixel count, the share of the ``K`` most
    relevant pixels that lie inside it. Both are 1.0 for an explanation equal to the mask.

Model randomisation (:func:`model_randomisation`)
    Adebayo et al. (2018), cascading: the layers with weights of a copy of the model are
    re-initialised from the top (output) layer down, cumulatively, each from its own
    initializers. After each layer the explanation is recomputed by a freshly built analyzer
    (so seeded methods draw the same noise and only the model differs) and compared with the
    original by Spearman rank correlation per sample. A method whose explanations stay similar
    when the weights are destroyed is not explaining the model: lower is better.

Conservation (:func:`conservation`)
    The sum of input relevance against the explained output ``f_c(x)``, per sample.

:func:`run_report` runs all of them for a list of methods on a shipped data set and writes a
markdown table, a JSON file of the results and a PNG plot; ``tf-lrp evaluate`` and
``scripts/evaluate.py`` call it through :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tf_lrp.errors import InputError, LRPError

__all__ = [
    "DATASETS",
    "METHODS",
    "TOKEN_METHODS",
    "Conservation",
    "FlipCurves",
    "Randomisation",
    "add_cli_arguments",
    "conservation",
    "main",
    "mean_se",
    "model_randomisation",
    "pixel_flipping",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "run_cli",
    "run_report",
    "spearman",
]

ORDERS = ("relevance", "random")
#: Largest number of perturbed images held in memory at once by :func:`pixel_flipping`.
_MAX_IMAGES = 4096


# ============================================================================ helpers
def mean_se(values) -> tuple[float, float]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``) of per-sample scores."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def _descending_order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per row, the indices sorted by decreasing value; ties in random order."""
    return np.lexsort((rng.random(values.shape), -values), axis=-1)


def _spatial_relevance(relevance: np.ndarray, x_ndim: int) -> np.ndarray:
    """``(n, pixels)``: relevance summed over the channel axis (the last, for 3+ axes)."""
    r = np.asarray(relevance, dtype=np.float64)
    if x_ndim >= 3:
        r = r.sum(axis=-1)
    return r.reshape(r.shape[0], -1)


def _predict_fn(predictor) -> Callable[[np.ndarray], np.ndarray]:
    if hasattr(predictor, "predict") and hasattr(predictor, "graph"):  # a tf_lrp analyzer
        return predictor.predict
    if callable(predictor):
        return lambda x: np.asarray(predictor(x))
    raise TypeError(
        "predictor must be a tf_lrp analyzer (its .predict gives the explained output, the "
        f"logits) or a callable mapping a batch to outputs; got {type(predictor).__name__}"
    )


def _batched(fn, x: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([fn(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _resolve_baseline(baseline, x: np.ndarray) -> np.ndarray:
    """The replacement value as an array broadcastable to ``x``.

    A number; ``"mean"``: each sample's mean over its spatial axes, per channel (for
    ``(batch, features)`` input, the mean of its features); or an array broadcastable to ``x``
    or to one sample.
    """
    if isinstance(baseline, str):
        if baseline != "mean":
            raise InputError(f"baseline must be a number, an array or 'mean', got {baseline!r}")
        axes = tuple(range(1, x.ndim - 1)) if x.ndim >= 3 else (1,)
        return x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)
    b = np.asarray(baseline, dtype=x.dtype)
    try:
        np.broadcast_shapes(b.shape, x.shape)
    except ValueError:
        raise InputError(
            f"baseline of shape {b.shape} does not broadcast to the input {x.shape}; pass a "
            "number, 'mean', or an array of one sample's shape"
        ) from None
    if b.ndim == x.ndim and b.shape[0] not in (1, x.shape[0]):
        raise InputError(f"baseline has {b.shape[0]} samples for {x.shape[0]} inputs")
    return b.reshape((1,) * (x.ndim - b.ndim) + b.shape)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# ============================================================================ pixel flipping
@dataclasses.dataclass
class FlipCurves:
    """Result of :func:`pixel_flipping`.

    Attributes
    ----------
    fractions
        ``(steps + 1,)``: fraction of patches removed after each step (starts at 0).
    outputs
        ``(n, steps + 1)``: the explained output of each sample after each step.
    """

    fractions: np.ndarray
    outputs: np.ndarray

    @property
    def aopc(self) -> np.ndarray:
        """``(n,)``: mean over steps ``k = 0..steps`` of ``f(x) - f(x_k)``."""
        return (self.outputs[:, :1] - self.outputs).mean(axis=1)


def _patch_index(spatial: tuple[int, ...], patch_size: int) -> tuple[np.ndarray, int]:
    """Patch id of every pixel (flattened) on a grid of ``patch_size`` squares, and the count."""
    counts = [-(-s // patch_size) for s in spatial]
    grids = np.meshgrid(*[np.arange(s) // patch_size for s in spatial], indexing="ij")
    return np.ravel_multi_index(grids, counts).ravel(), math.prod(counts)


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
        Replacement value: a number, ``"mean"`` (each image's mean colour) or an array
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
    predict = _predict_fn(predictor)
    n = x.shape[0]
    if target is None:
        target = _batched(predict, x, batch_size).argmax(axis=1)
    target = np.broadcast_to(np.asarray(target, dtype=np.int64), (n,))

    spatial = x.shape[1:-1] if x.ndim >= 3 else x.shape[1:]
    pixels, n_patches = _patch_index(spatial, int(patch_size))
    rng = np.random.default_rng(seed)
    if order == "random":
        ranking = np.argsort(rng.random((n, n_patches)), axis=1)
    else:
        pixel_rel = _spatial_relevance(relevance, x.ndim)
        rows = np.repeat(np.arange(n), pixels.size)
        patch_rel = np.bincount(rows * n_patches + np.tile(pixels, n), pixel_rel.ravel(),
                                minlength=n * n_patches).reshape(n, n_patches)
        ranking = _descending_order(patch_rel, rng)
    position = np.empty_like(ranking)
    position[np.arange(n)[:, None], ranking] = np.arange(n_patches)
    removed = np.round(np.linspace(0.0, fraction * n_patches, steps + 1)).astype(np.int64)

    flat = x.reshape(n, pixels.size, -1)
    base = np.broadcast_to(_resolve_baseline(baseline, x), x.shape).reshape(flat.shape)
    outputs = np.empty((n, steps + 1), dtype=np.float64)
    chunk = max(1, _MAX_IMAGES // (steps + 1))
    with _progress(n, f"pixel flipping ({order})", progress) as bar:
        for lo in range(0, n, chunk):
            sl = slice(lo, lo + chunk)
            gone = position[sl][:, pixels][:, None, :] < removed[None, :, None]  # (c, S+1, pix)
            images = np.where(gone[..., None], base[sl][:, None], flat[sl][:, None])
            images = images.reshape((-1,) + x.shape[1:])
            y = _batched(predict, images, batch_size).reshape(gone.shape[0], steps + 1, -1)
            outputs[sl] = np.take_along_axis(y, target[sl][:, None, None], axis=2)[..., 0]
            bar.update(gone.shape[0])
    return FlipCurves(removed / n_patches, outputs)


# ============================================================================ localisation
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

    Ties are broken at random (``seed``). Shapes as in :func:`relevance_mass_accuracy`.
    """
    r, m = _check_masks(relevance, masks)
    k = m.sum(axis=1)
    order = _descending_order(r, np.random.default_rng(seed))
    hits = np.take_along_axis(m, order, axis=1)
    top = np.arange(r.shape[1])[None, :] < k[:, None]
    return np.divide((hits & top).sum(axis=1), k, out=np.zeros(len(k)), where=k > 0)


# ============================================================================ randomisation
def spearman(a, b, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation of two explanations, per sample (channels summed).

    With ``absolute=True`` the maps are compared by magnitude (``|sum over channels|``), as in
    Adebayo et al.'s "absolute value" variant: a method whose sign flips but whose pattern
    stays is then still recognised as unchanged.
    Ranks are averaged over ties. If either map is constant the correlation is undefined; it is
    then 1.0 when the two maps are identical and 0.0 otherwise.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare explanations of shapes {a.shape} and {b.shape}")
    a, b = _spatial_relevance(a, a.ndim), _spatial_relevance(b, b.ndim)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    rho = np.divide((ra * rb).sum(axis=1), norm, out=np.zeros(len(a)), where=norm > 0)
    constant = norm == 0
    rho[constant] = np.all(a[constant] == b[constant], axis=1).astype(np.float64)
    return rho


@dataclasses.dataclass
class Randomisation:
    """Result of :func:`model_randomisation`.

    Attributes
    ----------
    layers
        Names of the randomised layers, in the order they were randomised (top first).
    similarity
        ``(len(layers), n)``: Spearman correlation with the original explanation after layers
        ``0..i`` are randomised.
    similarity_abs
        The same for the magnitudes of the explanations (``spearman(..., absolute=True)``).
    """

    layers: list[str]
    similarity: np.ndarray
    similarity_abs: np.ndarray

    def passes(self, threshold: float = 0.5) -> bool:
        """Whether, after all layers are randomised, the mean similarity of the signed maps and
        that of their magnitudes are both below ``threshold``.

        The threshold is a convention (Adebayo et al. give none); read the curves too.
        """
        return bool(max(self.similarity[-1].mean(), self.similarity_abs[-1].mean()) < threshold)


def _weighted_layers(model) -> list:
    """Layers with weights in forward order, nested models flattened."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_weighted_layers(layer))
        elif layer.weights:
            out.append(layer)
    return out


def _reinitialise(layer, seed: int) -> None:
    """Re-draw every weight of ``layer`` from its own initializer (seeded).

    A weight without an ``<name>_initializer`` attribute is drawn from a normal distribution
    with its current standard deviation.
    """
    import keras

    rng = np.random.default_rng(seed)
    for i, v in enumerate(layer.weights):
        name = v.name.split("/")[-1].split(":")[0]
        init = getattr(layer, f"{name}_initializer", None)
        if init is None:
            current = np.asarray(v)
            value = rng.normal(0.0, float(current.std()) or 0.05, current.shape)
        else:
            init = keras.initializers.get(init)
            config = init.get_config()
            if "seed" in config:
                config["seed"] = seed * 1000 + i
                init = type(init).from_config(config)
            value = np.asarray(init(tuple(v.shape), dtype=v.dtype))
        v.assign(value.astype(v.dtype))


def model_randomisation(
    model,
    method: Callable,
    x: np.ndarray,
    target=None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> Randomisation:
    """Cascading model-parameter randomisation (Adebayo et al. 2018).

    Parameters
    ----------
    model
        The ``keras.Model``; it is not modified (a clone is randomised).
    method
        Factory ``model -> analyzer``, e.g. ``lambda m: tf_lrp.Analyzer(m, "epsilon_plus")``.
        It is called once for the original and once per randomised layer.
    x
        A batch of inputs.
    target
        The explained output (kept fixed throughout); ``None``: the original model's argmax.
    layers
        Names of the layers to randomise, in the order given; default: every layer with weights,
        from the output layer down.
    seed
        Seed of the new weights.
    progress
        Show a progress bar.
    """
    import keras

    originals = _weighted_layers(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    by_name = {layer.name: copy for layer, copy in zip(originals, _weighted_layers(clone))}
    names = [layer.name for layer in reversed(originals)] if layers is None else list(layers)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InputError(f"no layer with weights named {unknown}; choose from {sorted(by_name)}")
    if target is None:
        target = _batched(lambda b: np.asarray(model(b, training=False)), x, 256).argmax(axis=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        original = method(clone)(x, target)
        signed, magnitude = [], []
        with _progress(len(names), "randomising layers", progress) as bar:
            for i, name in enumerate(names):
                _reinitialise(by_name[name], seed + i)
                relevance = method(clone)(x, target)
                signed.append(spearman(original, relevance))
                magnitude.append(spearman(original, relevance, absolute=True))
                bar.update(1)
    return Randomisation(names, np.stack(signed), np.stack(magnitude))


# ============================================================================ conservation
@dataclasses.dataclass
class Conservation:
    """Sum of input relevance and the explained output, per sample."""

    relevance_sum: np.ndarray
    output: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """``sum R / f_c(x)`` (1.0: conserved; below: absorbed, e.g. by biases or epsilon)."""
        return self.relevance_sum / self.output

    @property
    def error(self) -> np.ndarray:
        """``|sum R - f_c(x)|``."""
        return np.abs(self.relevance_sum - self.output)


def conservation(relevance, output) -> Conservation:
    """Compare the sum of each sample's relevance with its explained output ``output`` (``(n,)``)."""
    r = np.asarray(relevance, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64).ravel()
    if out.shape != (r.shape[0],):
        raise InputError(f"got {out.size} outputs for {r.shape[0]} explanations")
    return Conservation(r.reshape(r.shape[0], -1).sum(axis=1), out)


# ============================================================================ the report
@dataclasses.dataclass(frozen=True)
class Setting:
    """What a data set tells the methods and metrics: input bounds and the removal baseline."""

    low: float
    high: float
    baseline: float | str
    has_masks: bool
    patch_size: int = 2


#: Data sets of the report. Digits: background -1 is "no ink"; shapes: the image's mean colour
#: is (nearly) its background colour, so replacing a patch by it erases what was there.
#: Tokens: token flipping replaces a token by the padding token 0 (masked out by the shipped
#: text models), one token at a time; the masks are the planted keywords.
DATASETS = {
    "digits": Setting(low=-1.0, high=1.0, baseline=-1.0, has_masks=False),
    "shapes": Setting(low=0.0, high=1.0, baseline="mean", has_masks=True),
    "tokens": Setting(low=0.0, high=0.0, baseline=0.0, has_masks=True, patch_size=1),
}


def _lrp(composite_or_rule):
    def factory(model, setting: Setting, seed: int):
        import tf_lrp

        return tf_lrp.Analyzer(model, composite_or_rule(setting))

    return factory


def _baseline_method(name: str):
    def factory(model, setting: Setting, seed: int):
        from tf_lrp import analyzers, baselines

        if name == "smoothgrad":
            return baselines.SmoothGrad(model, seed=seed)
        if name == "integrated_gradients":
            return baselines.IntegratedGradients(model, baseline=setting.baseline)
        if name == "random":
            return baselines.Random(model, seed=seed)
        return getattr(analyzers, name)(model)

    return factory


def _method_table() -> dict[str, tuple[str, Callable]]:
    from tf_lrp import composites, rules

    return {
        "lrp0": ("LRP-0", _lrp(lambda s: rules.Zero())),
        "epsilon": ("LRP-ε (ε=0.25)", _lrp(lambda s: rules.Epsilon(0.25))),
        "epsilon_plus": ("EpsilonPlus", _lrp(lambda s: composites.EpsilonPlus())),
        "epsilon_gamma_box": ("EpsilonGammaBox",
                              _lrp(lambda s: composites.EpsilonGammaBox(s.low, s.high))),
        "epsilon_alpha2_beta1": ("EpsilonAlpha2Beta1",
                                 _lrp(lambda s: composites.EpsilonAlpha2Beta1())),
        "deep_taylor": ("DeepTaylor", _lrp(lambda s: composites.DeepTaylor(s.low, s.high))),
        "attn_lrp": ("AttnLRP", _lrp(lambda s: composites.AttnLRP())),
        "cp_lrp": ("CP-LRP", _lrp(lambda s: composites.CPLRP())),
        "gradient": ("Gradient", _baseline_method("Gradient")),
        "sensitivity": ("Sensitivity", _baseline_method("Sensitivity")),
        "gradient_x_input": ("Gradient×Input", _baseline_method("GradientXInput")),
        "smoothgrad": ("SmoothGrad (σ=0.15, n=50)", _baseline_method("smoothgrad")),
        "integrated_gradients": ("IntegratedGradients (50 steps)",
                                 _baseline_method("integrated_gradients")),
        "random": ("Random", _baseline_method("random")),
    }


#: Method names of the report, in table order (the keys of ``_method_table()``, spelled out so
#: that importing this module, e.g. for ``tf-lrp --help``, does not import TensorFlow).
METHODS = ("lrp0", "epsilon", "epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1",
           "deep_taylor", "attn_lrp", "cp_lrp", "gradient", "sensitivity", "gradient_x_input",
           "smoothgrad", "integrated_gradients", "random")
#: The methods of the report on token data (the image composites' first-layer rules and
#: bounds mean nothing for embeddings).
TOKEN_METHODS = ("attn_lrp", "cp_lrp", "epsilon", "gradient_x_input", "integrated_gradients",
                 "smoothgrad", "random")


def _load_data(data: str, model, n: int):
    from tf_lrp import datasets

    shape = tuple(model.inputs[0].shape[1:])
    if data == "tokens":
        if len(shape) != 1:
            raise InputError(f"--data tokens needs a model that takes token sequences (length,); "
                             f"this model takes {shape}")
        return datasets.make_tokens(n, length=shape[0] or datasets.TOKENS_LENGTH,
                                    seed=datasets.TOKENS_TEST_SEED)
    if data == "digits":
        sizes = {(28, 28, 1): 0, (32, 32, 1): datasets.LENET_PAD}
        if shape not in sizes:
            raise InputError(f"--data digits needs a model with input (28, 28, 1) or (32, 32, 1); "
                             f"this model takes {shape}")
        x, y = datasets.load_digits(pad=sizes[shape])
        if n > len(x):
            raise InputError(f"the digits test split has {len(x)} samples; asked for {n}")
        return x[:n], y[:n], None
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        raise InputError(f"--data shapes needs a model with a square RGB input; it takes {shape}")
    return datasets.make_shapes(n, size=shape[0], seed=datasets.SHAPES_TEST_SEED)


def _leading_rescaling(model) -> tuple[float, float] | None:
    """``(scale, offset)`` of a scalar ``Rescaling`` layer the model starts with, else ``None``.

    The shipped models start with one (they take pixel values 0..255); the data sets are in the
    range the network behind it was trained on, so they are mapped back through it.
    """
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not layers or not isinstance(layers[0], keras.layers.Rescaling):
        return None
    scale, offset = layers[0].scale, layers[0].offset
    if np.ndim(scale) or np.ndim(offset):
        return None
    return float(scale), float(offset)


def _to_model_input(setting: Setting, x: np.ndarray, model) -> tuple[Setting, np.ndarray]:
    """``x`` and the setting's bounds and numeric baseline in the model's input space."""
    rescaling = _leading_rescaling(model)
    if rescaling is None:
        return setting, x
    scale, offset = rescaling

    def back(v):
        return (np.asarray(v, np.float64) - offset) / scale

    baseline = setting.baseline if isinstance(setting.baseline, str) \
        else float(back(setting.baseline))
    setting = dataclasses.replace(setting, low=float(back(setting.low)),
                                  high=float(back(setting.high)), baseline=baseline)
    return setting, back(x).astype(np.float32)


def _fmt(values) -> str:
    m, se = mean_se(values)
    return "n/a" if math.isnan(m) else f"{m:.3f} ± {se:.3f}"


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _table(results: dict, control: np.ndarray, labels: dict) -> str:
    head = ("| method | AOPC ↑ | AOPC − random order ↑ | mass acc. ↑ | rank acc. ↑ | ρ top ↓ "
            "| ρ all ↓ | ρ abs top ↓ | ρ abs all ↓ | ΣR / f(x) |")
    lines = [head, "|" + "---|" * 10]
    for name, r in results.items():
        cells = [labels[name], _fmt(r["aopc"]), _fmt(r["aopc"] - control),
                 _fmt(r.get("mass", [])), _fmt(r.get("rank", []))]
        for key in ("similarity", "similarity_abs"):
            sanity = r.get(key)
            cells += [_fmt(sanity[0] if sanity is not None else []),
                      _fmt(sanity[-1] if sanity is not None else [])]
        cells.append(_fmt(r["ratio"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| *random order (control)* | " + _fmt(control) + " |" + " |" * 8)
    return "\n".join(lines)


#: (label, per-sample score, higher is better) of the headline comparisons.
_HEADLINE = (
    ("AOPC", lambda r: r["aopc"], True),
    ("relevance mass accuracy", lambda r: r.get("mass"), True),
    ("relevance rank accuracy", lambda r: r.get("rank"), True),
    ("randomisation, |ρ abs| after the top layer", lambda r: _at(r, "similarity_abs", 0), False),
    ("randomisation, |ρ abs| after all layers", lambda r: _at(r, "similarity_abs", -1), False),
    ("conservation, |ΣR / f(x) − 1|", lambda r: np.abs(r["ratio"] - 1.0), False),
)


def _at(r: dict, key: str, index: int):
    """Per-sample ``|rho|`` after randomising up to layer ``index`` (0: no resemblance left)."""
    return np.abs(r[key][index]) if key in r else None


def _headline(results: dict, labels: dict) -> list[str]:
    """Per metric: the best method(s) and their lead over the runner-up (paired per sample).

    Methods whose per-sample scores coincide (e.g. LRP-0 and Gradient x Input in ReLU networks)
    are reported together; a lead smaller than two standard errors is flagged.
    """
    lines = []
    for title, score, higher in _HEADLINE:
        scores = {n: np.asarray(score(r), np.float64) for n, r in results.items()
                  if score(r) is not None}
        if len(scores) < 2:
            continue
        sign = 1.0 if higher else -1.0
        ranked = sorted(scores, key=lambda n: -sign * scores[n].mean())
        best = scores[ranked[0]]
        tied = [n for n in ranked if np.allclose(scores[n], best, rtol=1e-4, atol=1e-6)]
        rest = [n for n in ranked if n not in tied]
        text = f"- {title} ({'higher' if higher else 'lower'} is better): " + \
            " = ".join(f"**{labels[n]}**" for n in tied) + f" {_fmt(best)}"
        if rest:
            gap = sign * (best - scores[rest[0]])
            text += f", ahead of {labels[rest[0]]} ({_fmt(scores[rest[0]])}) by {_fmt(gap)} " \
                    "(paired per sample)"
            mean, se = mean_se(gap)
            if not mean > 2 * se:
                text += " — within two standard errors: no clear winner"
        lines.append(text)
    return lines


_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
            "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000080", "#b8860b")


def _style(i: int) -> dict:
    """Line style of the ``i``-th method: LRP first (solid), then the baselines (dashed)."""
    return {"color": _COLOURS[i % len(_COLOURS)], "ls": "-" if i < 6 else "--"}


def _plot(path: Path, title: str, results: dict, control: FlipCurves, labels: dict,
          layers: list[str] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if layers else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 5.5), squeeze=False)
    ax = axes[0, 0]
    for i, (name, r) in enumerate(results.items()):
        ax.plot(r["fractions"], r["curve"], label=labels[name], **_style(i))
    ax.plot(control.fractions, control.outputs.mean(axis=0), ":", color="black", lw=2,
            label="random order (control)")
    ax.set(xlabel="fraction of patches removed", ylabel="mean explained output (logit)",
           title="pixel flipping, most relevant first")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for ax, key, what in zip(axes[0, 1:], ("similarity", "similarity_abs"),
                             ("signed maps", "magnitudes |R|")):
        steps = np.arange(len(layers) + 1)
        for i, (name, r) in enumerate(results.items()):
            if key in r:
                ax.plot(steps, np.r_[1.0, r[key].mean(axis=1)], marker="o", ms=3,
                        label=labels[name], **_style(i))
        ax.set_xticks(steps, ["original"] + layers, rotation=60, ha="right", fontsize=7)
        ax.set(ylabel="mean Spearman ρ with the original",
               title=f"cascading randomisation, top layer first: {what}", ylim=(-0.5, 1.05))
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
    sanity: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[str, Path]:
    """Evaluate methods on a shipped data set: table, JSON results and a PNG plot.

    Every method explains the true label of each sample. Metrics: AOPC of pixel flipping (and
    the random-order control), relevance mass and rank accuracy (shapes only: digits have no
    ground-truth masks), cascading randomisation (Spearman after the top layer and after all
    layers are randomised), and the conservation ratio ``sum R / f(x)``.

    Parameters
    ----------
    model_path
        A model file (or a ``keras.Model``).
    data
        ``"digits"`` (test split; 28x28 or padded 32x32 by the model's input), ``"shapes"``
        (held-out seed :data:`tf_lrp.datasets.SHAPES_TEST_SEED`) or ``"tokens"`` (held-out
        :func:`tf_lrp.datasets.make_tokens`, seed :data:`~tf_lrp.datasets.TOKENS_TEST_SEED`,
        for models with token-id inputs; masks: the planted keywords).
    methods
        Names from :data:`METHODS`; default all (for tokens: :data:`TOKEN_METHODS`).
    n
        Number of samples (at most 450 for digits).
    out_dir
        Where ``quality_<model>_<data>.{png,json,md}`` are written (atomically).
    steps, fraction, patch_size
        Pixel flipping: ``fraction`` of the patches of ``patch_size`` pixels a side are removed in
        ``steps`` steps (default patch size: 2 pixels; tokens: 1, token flipping).
    baseline
        Removal value (and the IntegratedGradients baseline) in the data set's range; default:
        the data set's (digits: -1, the background; shapes: ``"mean"``, each image's mean
        colour). A model that starts with a ``Rescaling`` layer (the shipped models: pixel
        values 0..255) gets the data, the bounds and the baseline mapped back through it.
    sanity
        Run the randomisation check (the slowest part).
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
    table = _method_table()
    methods = list(methods or (TOKEN_METHODS if data == "tokens" else METHODS))
    unknown = [m for m in methods if m not in table]
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
    patch_size = setting.patch_size if patch_size is None else patch_size
    x, y, masks = _load_data(data, model, int(n))
    setting, x = _to_model_input(setting, x, model)  # e.g. pixels 0..255 for Rescaling models
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        predictor = analyzers.Gradient(model)
    logits = predictor.predict(x)
    explained = logits[np.arange(len(y)), y]
    flip = dict(patch_size=patch_size, steps=steps, fraction=fraction,
                baseline=setting.baseline, seed=seed, batch_size=batch_size)
    control = pixel_flipping(predictor, x, None, y, order="random", progress=progress, **flip)

    labels = {name: table[name][0] for name in methods}
    results, layers = {}, None
    for name in methods:
        factory = table[name][1]
        method_start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*ends in a softmax")
            relevance = factory(model, setting, seed)(x, y)
        curves = pixel_flipping(predictor, x, relevance, y, progress=progress, **flip)
        r = {"aopc": curves.aopc, "curve": curves.outputs.mean(axis=0),
             "fractions": curves.fractions,
             "ratio": conservation(relevance, explained).ratio}
        if masks is not None:
            r["mass"] = relevance_mass_accuracy(relevance, masks)
            r["rank"] = relevance_rank_accuracy(relevance, masks, seed=seed)
        if sanity:
            check = model_randomisation(model, lambda m, f=factory: f(m, setting, seed), x, y,
                                        seed=seed, progress=progress)
            r["similarity"], r["similarity_abs"] = check.similarity, check.similarity_abs
            layers = check.layers
        r["seconds"] = time.perf_counter() - method_start
        results[name] = r
        if progress:
            print(f"  {name}: {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    runtime = time.perf_counter() - start

    stem = f"quality_{Path(str(getattr(model, 'name', 'model'))).stem}_{data}"
    if isinstance(model_path, (str, os.PathLike)):
        stem = f"quality_{Path(model_path).stem}_{data}"
    out_dir = Path(out_dir)
    accuracy = float(np.mean(logits.argmax(1) == y))
    digest = _sha256(model_path)
    title = (f"{stem[8:]}: n={len(x)}, patch {patch_size}, {steps} steps to {fraction:.0%}, "
             f"baseline {setting.baseline}")
    markdown = "\n".join([
        f"{title}; accuracy on these samples {accuracy:.3f}"
        + (f"; model sha256 {digest[:12]}" if digest else ""), "",
        _table(results, control.aopc, labels), "", *_headline(results, labels)])
    figure = out_dir / f"{stem}.png"
    _plot(figure, title, results, control, labels, layers)
    summary = {
        "model": str(model_path) if isinstance(model_path, (str, os.PathLike)) else model.name,
        "sha256": digest, "data": data, "n": len(x), "accuracy": accuracy,
        "settings": {**flip, "baseline": setting.baseline}, "runtime_seconds": runtime,
        "randomised_layers": layers,
        "control_aopc": mean_se(control.aopc),
        "methods": {name: _summarise(r) for name, r in results.items()},
    }
    _atomic_write(out_dir / f"{stem}.json",
                  lambda tmp: Path(tmp).write_text(json.dumps(summary) + "\n"))
    _atomic_write(out_dir / f"{stem}.md", lambda tmp: Path(tmp).write_text(markdown + "\n"))
    return markdown, figure


def _sha256(model_path) -> str | None:
    if not isinstance(model_path, (str, os.PathLike)):
        return None
    import hashlib

    return hashlib.sha256(Path(model_path).read_bytes()).hexdigest()


def _summarise(r: dict) -> dict:
    """JSON-ready results of one method: mean and standard error, plus the per-sample scores."""
    out = {"seconds": r["seconds"], "curve": r["curve"].tolist(), "fractions": r["fractions"].tolist()}
    for key in ("aopc", "mass", "rank", "ratio"):
        if key in r:
            out[key] = mean_se(r[key])
            out[f"{key}_per_sample"] = np.round(r[key], 4).tolist()
    for key in ("similarity", "similarity_abs"):
        if key in r:
            out[f"{key}_per_layer"] = [mean_se(s) for s in r[key]]
            out[f"{key}_top_per_sample"] = np.round(r[key][0], 4).tolist()
            out[f"{key}_all_per_sample"] = np.round(r[key][-1], 4).tolist()
    return out


# ============================================================================ command line
def _methods_arg(text: str) -> list[str]:
    return [m.strip().replace("-", "_") for m in text.split(",") if m.strip()]


def add_cli_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``tf-lrp evaluate`` to ``parser``; run them with :func:`run_cli`."""
    parser.add_argument("model", help="model file (.keras or .h5)")
    parser.add_argument("--data", required=True, choices=sorted(DATASETS),
                        help="evaluation data: digits (test split), shapes (held-out, masks) or "
                             "tokens (held-out token sequences, planted keywords as masks)")
    parser.add_argument("--methods", nargs="+", type=_methods_arg, default=None,
                        help=f"methods (space or comma separated; default all): {', '.join(METHODS)}")
    parser.add_argument("-n", "--samples", type=int, default=200, help="number of samples (200)")
    parser.add_argument("--out-dir", default="evaluation",
                        help="directory for the PNG plot, JSON results and table (evaluation/)")
    parser.add_argument("--steps", type=int, default=25, help="pixel-flipping steps (25)")
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="fraction of patches removed by the last step (0.5)")
    parser.add_argument("--patch-size", type=int, default=None,
                        help="patch side in pixels (2; tokens: 1)")
    parser.add_argument("--baseline", default=None,
                        help="removal value: a number or 'mean' (default: -1 digits, mean shapes)")
    parser.add_argument("--no-sanity", action="store_true",
                        help="skip the model-randomisation check (the slowest part)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    parser.add_argument("--batch-size", type=int, default=256, help="prediction batch size (256)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run the report for parsed :func:`add_cli_arguments` arguments; print the table."""
    baseline = args.baseline
    if baseline is not None and baseline != "mean":
        try:
            baseline = float(baseline)
        except ValueError:
            raise InputError(f"--baseline must be a number or 'mean', got {baseline!r}") from None
    methods = [m for group in args.methods for m in group] if args.methods else None
    start = time.perf_counter()
    markdown, figure = run_report(
        args.model, args.data, methods, args.samples, args.out_dir, steps=args.steps,
        fraction=args.fraction, patch_size=args.patch_size, baseline=baseline,
        sanity=not args.no_sanity, seed=args.seed, batch_size=args.batch_size,
        progress=not args.quiet,
    )
    print(markdown)
    print(f"\nplot: {figure}\nresults: {figure.with_suffix('.json')}\n"
          f"runtime: {time.perf_counter() - start:.0f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``tf-lrp evaluate`` / ``scripts/evaluate.py``: parse ``argv``, run, print; exit status."""
    parser = add_cli_arguments(argparse.ArgumentParser(
        prog="tf-lrp evaluate", description="Evaluate attribution methods on a model: pixel "
        "flipping (AOPC), localisation, cascading randomisation, conservation."))
    args = parser.parse_args(argv)
    try:
        return run_cli(args)
    except (LRPError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
