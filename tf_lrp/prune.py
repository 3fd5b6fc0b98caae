"""Pruning by explaining (Yeom et al., Pattern Recognition 2021): remove the convolution
filters that matter least for a few reference samples, and get a smaller Keras model.

:func:`filter_scores` ranks every prunable filter by a criterion:

* ``"lrp"``: its relevance (:meth:`tf_lrp.Analyzer.parameter_relevance`, ``per="filter"``:
  kernel and bias relevance of the filter) for each reference sample's explained class,
  summed over the samples (composite ``"epsilon_plus"`` by default: z+ on convolutions, as the
  paper);
* ``"weight"``: the L1 norm of its kernel (Li et al. 2017);
* ``"gradient"``: the summed ``|d y_c / d w|`` over its kernel entries and samples;
* ``"taylor"``: ``|sum w * d y_c / d w|`` over its kernel and bias, summed over the samples
  (first-order Taylor estimate of the change when the filter is removed; Molchanov et al.).

:func:`prune` removes the lowest-scored ``ratio`` of every prunable layer's filters (at least
one filter stays per layer). The same share per layer, not one ranking over all layers: scores
of layers of different widths are not on one scale (a filter's share of a 512-filter layer's
relevance is smaller than of a 64-filter layer's), and a global ranking empties the widest
layers first (on the shipped VGG: 50 % accuracy after removing 20 % of the filters).

Which filters are prunable: a ``Conv2D`` whose output reaches, through channel-preserving layers
only (``BatchNormalization``, activations, pooling, dropout), nothing but other ``Conv2D``
layers, or a ``Dense`` layer after ``GlobalAveragePooling2D``/``Flatten``. A convolution whose
channels meet others in an ``Add`` (the residual stream of a ResNet), a ``Concatenate`` or the
model's output is left alone: :func:`prunable_layers` says which and why. Removing a filter
removes its bias, its BatchNormalization channel and the next layer's input channel with it;
the result is a plain Keras model of the same structure with fewer filters, saved and loaded
like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from tf_lrp.errors import InputError

__all__ = ["CRITERIA", "Prunable", "filter_scores", "prunable_layers", "prune"]

CRITERIA = ("lrp", "weight", "gradient", "taylor")
_PASS = (keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.Activation,
         keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.MaxPooling2D,
         keras.layers.AveragePooling2D, keras.layers.Dropout, keras.layers.SpatialDropout2D)
_FLATTEN = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
            keras.layers.Flatten)


@dataclass
class Prunable:
    """The layers of a model whose filters :func:`prune` may remove.

    Attributes
    ----------
    layers
        Prunable ``Conv2D`` layer names, in model order.
    followers
        Per prunable layer: the channel-preserving layers after it (their channels go too).
    consumers
        Per prunable layer: ``(name, kind)`` of the layers reading its channels (``"conv"``, or
        ``"dense"``: a Dense after global pooling or a Flatten, whose rows are
        ``(positions, channels)`` flattened, one position after global pooling).
    skipped
        Conv2D layers left alone, with the reason.
    """

    layers: list[str] = field(default_factory=list)
    followers: dict[str, list[str]] = field(default_factory=dict)
    consumers: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _readers(model) -> dict[str, list[str]]:
    """Layer name -> names of the layers that read its output (in this model)."""
    out: dict[str, list[str]] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for t in node.input_tensors:
                src = t._keras_history.operation.name
                if src in out and layer.name not in out[src]:
                    out[src].append(layer.name)
    return out


def prunable_layers(model) -> Prunable:
    """Which convolutions' filters can be removed (module docstring)."""
    if not isinstance(model, keras.Model) or not hasattr(model, "_inbound_nodes"):
        raise InputError("prune takes a built functional or Sequential keras.Model")
    readers = _readers(model)
    outputs = {t._keras_history.operation.name for t in model.outputs}
    result = Prunable()
    for layer in model.layers:
        if type(layer) is not keras.layers.Conv2D:
            continue
        if layer.groups != 1:
            result.skipped[layer.name] = "grouped convolution"
            continue
        followers, consumers, reason = [], [], None
        frontier = [layer.name]
        while frontier and reason is None:
            name = frontier.pop()
            if name in outputs:
                reason = "its channels are a model output"
                break
            for reader in readers[name]:
                r = model.get_layer(reader)
                if type(r) is keras.layers.Conv2D and r.groups == 1:
                    consumers.append((reader, "conv"))
                elif isinstance(r, _PASS):
                    followers.append(reader)
                    frontier.append(reader)
                elif isinstance(r, _FLATTEN):
                    nxt = readers[reader]
                    if len(nxt) == 1 and type(model.get_layer(nxt[0])) is keras.layers.Dense \
                            and reader not in outputs:
                        followers.append(reader)
                        consumers.append((nxt[0], "dense"))
                    else:
                        reason = f"{reader!r} is not followed by exactly one Dense layer"
                else:
                    reason = f"its channels reach {type(r).__name__} {reader!r}"
                    break
        if reason is None and not consumers:
            reason = "no layer reads its channels"
        if reason is None:
            result.layers.append(layer.name)
            result.followers[layer.name] = followers
            result.consumers[layer.name] = consumers
        else:
            result.skipped[layer.name] = reason
    return result


def _targets(model, x, target):
    if target is not None:
        return np.broadcast_to(np.asarray(target), (len(x),)).astype(np.int32)
    return np.argmax(model.predict(x, verbose=0, batch_size=64).reshape(len(x), -1), axis=1)


def _weight_gradients(model, x, targets, layers: list[str]) -> dict:
    import tensorflow as tf

    variables = {n: model.get_layer(n).kernel for n in layers}
    biases = {n: model.get_layer(n).bias for n in layers if model.get_layer(n).use_bias}
    g_kernel = {n: np.zeros(v.shape) for n, v in variables.items()}
    g_abs = {n: np.zeros(v.shape) for n, v in variables.items()}
    g_bias = {n: np.zeros(v.shape) for n, v in biases.items()}
    for i, t in enumerate(targets):  # per-sample gradients for |d y / d w|: a tape each
        with tf.GradientTape() as tape:
            y = tf.reshape(model(x[i:i + 1], training=False), (-1,))[int(t)]
        grads = tape.gradient(y, list(variables.values()) + list(biases.values()))
        for n, g in zip(variables, grads[:len(variables)]):
            g = g.numpy()
            g_kernel[n] += g
            g_abs[n] += np.abs(g)
        for n, g in zip(biases, grads[len(variables):]):
            g_bias[n] += g.numpy()
    return {"kernel": g_kernel, "abs": g_abs, "bias": g_bias}


def filter_scores(model, reference_data, criterion: str = "lrp", *, composite="epsilon_plus",
                  target=None, prunable: Prunable | None = None) -> dict[str, np.ndarray]:
    """Per prunable layer, one score per filter (larger: more important; module docstring).

    Parameters
    ----------
    model
        The model (single input).
    reference_data
        The reference samples, ``(n, *input_shape)``.
    criterion
        One of :data:`CRITERIA`.
    composite
        The LRP composite (``"lrp"`` only).
    target
        The explained class per sample (default: each sample's predicted class).
    """
    if criterion not in CRITERIA:
        raise InputError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    prunable = prunable or prunable_layers(model)
    x = np.asarray(reference_data, np.float32)
    if criterion == "weight":
        return {n: np.abs(model.get_layer(n).kernel.numpy()).reshape(-1, model.get_layer(n)
                                                                     .filters).sum(0)
                for n in prunable.layers}
    targets = _targets(model, x, target)
    if criterion == "lrp":
        from tf_lrp.analyzer import Analyzer

        per = Analyzer(model, composite).parameter_relevance(x, target=targets, per="filter")
        missing = [n for n in prunable.layers if n not in per]
        if missing:
            raise InputError(f"no parameter relevance for {missing}: their rule does not "
                             "propagate through their weights")
        return {n: np.asarray(per[n], np.float64) for n in prunable.layers}
    grads = _weight_gradients(model, x, targets, prunable.layers)
    out = {}
    for n in prunable.layers:
        layer = model.get_layer(n)
        if criterion == "gradient":
            out[n] = grads["abs"][n].reshape(-1, layer.filters).sum(0)
        else:  # taylor
            t = (layer.kernel.numpy() * grads["kernel"][n]).reshape(-1, layer.filters).sum(0)
            if n in grads["bias"]:
                t = t + layer.bias.numpy() * grads["bias"][n]
            out[n] = np.abs(t)
    return out


def _keep(scores: dict[str, np.ndarray], ratio: float) -> dict[str, np.ndarray]:
    """Filters kept per layer: each layer loses its ``round(ratio * filters)`` lowest-scored
    filters (at least one stays)."""
    keep = {}
    for name, s in scores.items():
        drop = min(int(round(ratio * len(s))), len(s) - 1)
        order = np.argsort(np.asarray(s, np.float64), kind="stable")
        keep[name] = np.sort(order[drop:])
    return keep


def prune(model, reference_data=None, ratio: float = 0.5, criterion: str = "lrp", *,
          composite="epsilon_plus", target=None, scores: dict | None = None) -> keras.Model:
    """A new model without the lowest-ranked ``ratio`` of the prunable convolution filters.

    Parameters
    ----------
    model
        A functional or Sequential Keras model.
    reference_data
        Samples the criterion is computed on (not needed for ``"weight"`` or given ``scores``).
    ratio
        The share of each prunable layer's filters to remove, in [0, 1).
    criterion, composite, target
        See :func:`filter_scores`.
    scores
        Precomputed :func:`filter_scores` (to prune one ranking at several ratios).

    Returns
    -------
    keras.Model
        The same architecture with fewer filters and the remaining weights; ``ratio=0`` gives
        a model with the original's outputs.
    """
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"ratio must be in [0, 1), got {ratio}")
    prunable = prunable_layers(model)
    if not prunable.layers:
        raise InputError(f"model {model.name!r} has no prunable convolution: "
                         f"{prunable.skipped or 'no Conv2D layers'}")
    if scores is None:
        if reference_data is None and criterion != "weight":
            raise InputError(f"criterion {criterion!r} needs reference_data")
        scores = filter_scores(model, reference_data, criterion, composite=composite,
                               target=target, prunable=prunable)
    keep = _keep({n: scores[n] for n in prunable.layers}, ratio)
    return _rebuild(model, prunable, keep)


def _rebuild(model, prunable: Prunable, keep: dict[str, np.ndarray]) -> keras.Model:
    config = model.get_config()
    for entry in config["layers"]:
        name = entry["config"]["name"]
        entry.pop("build_config", None)  # built again from the new channel counts
        if name in keep:
            entry["config"]["filters"] = int(len(keep[name]))
    small = type(model).from_config(config)
    out_keep = dict(keep)
    in_keep: dict[str, tuple[np.ndarray, str, int]] = {}
    for name in prunable.layers:
        for f in prunable.followers[name]:
            out_keep[f] = keep[name]
        for consumer, kind in prunable.consumers[name]:
            channels = model.get_layer(name).filters
            in_keep[consumer] = (keep[name], kind, channels)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = [np.asarray(w) for w in weights]
        if layer.name in in_keep:
            k, kind, channels = in_keep[layer.name]
            if kind == "conv":
                new[0] = new[0][:, :, k, :]
            else:  # a Dense: rows (positions, channels) flattened (one position after pooling)
                rows = new[0].reshape(-1, channels, new[0].shape[-1])
                new[0] = rows[:, k, :].reshape(-1, new[0].shape[-1])
        if layer.name in out_keep:
            k = out_keep[layer.name]
            if isinstance(layer, keras.layers.Conv2D):
                new[0] = new[0][..., k]
                if layer.use_bias:
                    new[1] = new[1][k]
            elif isinstance(layer, keras.layers.BatchNormalization):
                new = [w[k] for w in new]
        small.get_layer(layer.name).set_weights(new)
    return small
