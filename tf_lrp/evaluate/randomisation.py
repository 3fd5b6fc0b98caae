"""Model-parameter randomisation: does the explanation depend on the weights?

Model parameter randomisation test, MPRT (Adebayo et al. 2018, "Sanity Checks for Saliency
Maps"), :func:`model_randomisation`
    The layers with weights of a copy of the model are re-initialised, cumulatively, each from
    its own initializers: top-down (``order="top_down"``: from the output layer down, the
    paper's cascading test) or bottom-up (``order="bottom_up"``: from the input layer up,
    which Hedström et al. 2023 recommend: top-down randomisation keeps the lower layers'
    features, which a heatmap may legitimately still show, while bottom-up destroys them
    first). After each layer the explanation is recomputed by a freshly built analyzer (so
    seeded methods draw the same noise and only the model differs) and compared with the
    original by Spearman rank correlation per sample, of the signed maps and of their
    magnitudes. A method whose explanations stay similar when the weights are destroyed is not
    explaining the model: lower is better.

Efficient MPRT, eMPRT (Hedström, Weber, Lapuschkin & Höhne 2023, "Sanity Checks Revisited: An
Exploration to Repair the Model Parameter Randomisation Test"), :func:`efficient_mprt`
    Instead of comparing maps layer by layer, compare the *complexity* of the explanation of
    the original and of the fully randomised model: the relative rise
    ``(H(e_rand) - H(e)) / H(e)``, where ``H`` is the discrete entropy
    (:func:`explanation_entropy`): the Shannon entropy (natural log) of the histogram of the
    explanation's values (channels summed) in ``n_bins = 100`` equal-width bins spanning that
    explanation's own minimum to maximum, as Quantus' ``discrete_entropy``. An explanation of
    a random network should look like noise (high entropy), so a larger rise is better. The
    score is NaN for an explanation whose entropy is 0 (a constant map).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.evaluate._common import batched, progress_bar, spatial_relevance

__all__ = ["RANDOMISATION_ORDERS", "ComplexityRise", "Randomisation", "efficient_mprt",
           "explanation_entropy", "model_randomisation", "spearman"]

RANDOMISATION_ORDERS = ("top_down", "bottom_up")
#: Bins of :func:`explanation_entropy` (Quantus' default).
ENTROPY_BINS = 100


def spearman(a, b, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation of two explanations, per sample (channels summed).

    Parameters
    ----------
    a, b
        Explanations of the same shape ``(n, ...)``.
    absolute
        Compare the maps by magnitude (``|sum over channels|``), as in Adebayo et al.'s
        "absolute value" variant: a method whose sign flips but whose pattern stays is then
        still recognised as unchanged.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` correlations. Ranks are averaged over ties. If either map is constant the
        correlation is undefined; it is then 1.0 when the two maps are identical and 0.0
        otherwise.
    """
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare explanations of shapes {a.shape} and {b.shape}")
    a, b = spatial_relevance(a, a.ndim >= 3), spatial_relevance(b, b.ndim >= 3)
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


def explanation_entropy(relevance, n_bins: int = ENTROPY_BINS) -> np.ndarray:
    """Discrete entropy of each explanation (the complexity of eMPRT).

    Parameters
    ----------
    relevance
        ``(n, ...)`` explanations (the last axis is summed as channels when there are 3+ axes).
    n_bins
        Number of equal-width bins spanning each explanation's minimum to maximum (the maximum
        falls in the last bin).

    Returns
    -------
    numpy.ndarray
        ``(n,)``: ``-sum_b p_b ln p_b`` over the bins' shares ``p_b`` of the values; 0 for a
        constant map, ``ln(n_bins)`` at most.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise InputError(f"n_bins must be a positive integer, got {n_bins!r}")
    r = spatial_relevance(relevance, np.ndim(relevance) >= 3)
    n, size = r.shape
    lo, hi = r.min(axis=1, keepdims=True), r.max(axis=1, keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    bins = np.clip(np.floor((r - lo) / span * n_bins), 0, n_bins - 1).astype(np.int64)
    counts = np.bincount((bins + n_bins * np.arange(n)[:, None]).ravel(),
                         minlength=n * n_bins).reshape(n, n_bins)
    p = counts / size
    return -np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1)


@dataclasses.dataclass
class Randomisation:
    """Result of :func:`model_randomisation`.

    Attributes
    ----------
    layers
        Names of the randomised layers, in the order they were randomised.
    similarity
        ``(len(layers), n)``: Spearman correlation with the original explanation after layers
        ``0..i`` are randomised.
    similarity_abs
        The same for the magnitudes of the explanations (``spearman(..., absolute=True)``).
    complexity
        ``(len(layers) + 1, n)``: :func:`explanation_entropy` of the original explanation and
        after each step (``None`` if not computed).
    order
        ``"top_down"``, ``"bottom_up"`` or ``"custom"`` (layers given by name).
    """

    layers: list[str]
    similarity: np.ndarray
    similarity_abs: np.ndarray
    complexity: np.ndarray | None = None
    order: str = "top_down"

    def passes(self, threshold: float = 0.5) -> bool:
        """Whether, after all layers are randomised, the mean similarity of the signed maps and
        that of their magnitudes are both below ``threshold``.

        The threshold is a convention (Adebayo et al. give none); read the curves too.
        """
        return bool(max(self.similarity[-1].mean(), self.similarity_abs[-1].mean()) < threshold)

    @property
    def complexity_rise(self) -> np.ndarray:
        """``(n,)``: ``(H_last - H_original) / H_original``; the eMPRT score when every layer
        with weights was randomised (NaN where ``H_original`` is 0)."""
        if self.complexity is None:
            raise ValueError("this Randomisation has no complexity")
        return _rise(self.complexity[0], self.complexity[-1])


@dataclasses.dataclass
class ComplexityRise:
    """Result of :func:`efficient_mprt`: explanation entropies before and after randomising."""

    entropy_original: np.ndarray
    entropy_randomised: np.ndarray

    @property
    def score(self) -> np.ndarray:
        """``(n,)`` eMPRT: ``(H_rand - H_orig) / H_orig`` (higher is better; NaN if
        ``H_orig = 0``)."""
        return _rise(self.entropy_original, self.entropy_randomised)


def _rise(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.divide(after - before, before, out=np.full(before.shape, np.nan),
                     where=before > 0)


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


def _clone(model) -> tuple[object, dict, list[str]]:
    """A copy of ``model`` with its weights; its layers with weights by the original's names
    (forward order)."""
    import keras

    originals = _weighted_layers(model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    by_name = {layer.name: copy for layer, copy in zip(originals, _weighted_layers(clone))}
    return clone, by_name, [layer.name for layer in originals]


def _default_target(model, x, target):
    if target is not None:
        return target
    return batched(lambda b: np.asarray(model(b, training=False)), x, 256).argmax(axis=1)


def model_randomisation(
    model,
    method: Callable,
    x: np.ndarray,
    target=None,
    *,
    order: str = "top_down",
    layers: Sequence[str] | None = None,
    seed: int = 0,
    n_bins: int = ENTROPY_BINS,
    progress: bool = False,
    rebuild: bool = False,
) -> Randomisation:
    """Cascading model-parameter randomisation (Adebayo et al. 2018), top-down or bottom-up.

    Parameters
    ----------
    model
        The ``keras.Model``; it is not modified (a clone is randomised).
    method
        Factory ``model -> analyzer``, e.g. ``lambda m: tf_lrp.Analyzer(m, "epsilon_plus")``.
        It is called once: the re-initialised weights are assigned into the clone's
        variables, which the traced analyzer reads live (folded BatchNormalization included),
        so no step builds or traces again; an analyzer with a ``reseed()`` method (the
        :class:`~tf_lrp.baselines.Random` control) is reseeded before every step, as a fresh
        one would start. ``rebuild=True`` calls it again per randomised layer (for a method
        that reads weights when it is built, such as a custom layer's directly read weight).
    x
        A batch of inputs.
    target
        The explained output (kept fixed throughout); ``None``: the original model's argmax.
    order
        ``"top_down"`` (output layer first) or ``"bottom_up"`` (input layer first); every
        layer with weights is randomised, cumulatively.
    layers
        Names of the layers to randomise, in the order given (overrides ``order``).
    seed
        Seed of the new weights (the ``i``-th randomised layer uses ``seed + i``).
    n_bins
        Bins of the entropy recorded in :attr:`Randomisation.complexity`.
    progress
        Show a progress bar.

    Returns
    -------
    Randomisation
        Per step and sample: similarity of the signed maps and of the magnitudes, entropies.
    """
    if order not in RANDOMISATION_ORDERS:
        raise InputError(f"order must be one of {RANDOMISATION_ORDERS}, got {order!r}")
    clone, by_name, forward = _clone(model)
    if layers is not None:
        names, order = list(layers), "custom"
    else:
        names = forward[::-1] if order == "top_down" else forward
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InputError(f"no layer with weights named {unknown}; choose from {sorted(by_name)}")
    target = _default_target(model, x, target)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        analyzer = method(clone)

        def explain():
            if hasattr(analyzer, "reseed"):  # seeded methods start from their seed every step
                analyzer.reseed()
            return analyzer(x, target)

        original = explain()
        signed, magnitude = [], []
        complexity = [explanation_entropy(original, n_bins)]
        with progress_bar(len(names), f"randomising layers ({order})", progress) as bar:
            for i, name in enumerate(names):
                _reinitialise(by_name[name], seed + i)
                if rebuild:
                    analyzer = method(clone)
                relevance = explain()
                signed.append(spearman(original, relevance))
                magnitude.append(spearman(original, relevance, absolute=True))
                complexity.append(explanation_entropy(relevance, n_bins))
                bar.update(1)
    return Randomisation(names, np.stack(signed), np.stack(magnitude), np.stack(complexity),
                         order)


def efficient_mprt(
    model,
    method: Callable,
    x: np.ndarray,
    target=None,
    *,
    n_bins: int = ENTROPY_BINS,
    seed: int = 0,
) -> ComplexityRise:
    """Efficient MPRT (Hedström et al. 2023): the rise in explanation entropy from the original
    to the fully randomised model.

    Every layer with weights of a copy of ``model`` is re-initialised (in forward order, the
    ``i``-th with seed ``seed + i``: the final state of ``model_randomisation(...,
    order="bottom_up", seed=seed)``), so only two explanations are computed.

    Parameters
    ----------
    model
        The ``keras.Model``; it is not modified.
    method
        Factory ``model -> analyzer``.
    x
        A batch of inputs.
    target
        The explained output; ``None``: the original model's argmax.
    n_bins
        Bins of :func:`explanation_entropy`.
    seed
        Seed of the new weights.

    Returns
    -------
    ComplexityRise
        Per-sample entropies; ``.score`` is the per-sample eMPRT (higher is better).
    """
    clone, by_name, forward = _clone(model)
    target = _default_target(model, x, target)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ends in a softmax")
        original = explanation_entropy(method(clone)(x, target), n_bins)
        for i, name in enumerate(forward):
            _reinitialise(by_name[name], seed + i)
        randomised = explanation_entropy(method(clone)(x, target), n_bins)
    return ComplexityRise(original, randomised)
