"""Traced helpers on an analyzer's backward pass (one ``tf.function`` per analyzer and layers).

- :func:`layer_statistics`: per sample and channel of chosen layers, the relevance (summed over
  positions) and where it is largest, the activation's maximum and where it is; the resolved
  target, its logit and (optionally) the input heatmap. One forward and one backward pass.
- :func:`conditioned_relevance`: under conditions (masks, as in
  :meth:`tf_lrp.Analyzer.conditional`), the relevance per channel at chosen layers below.

Both read what :meth:`tf_lrp.Analyzer._backward` computes anyway (``keep_all=True``: the
relevance at every tensor). The forward values are those of the same backward pass: its
``_forward`` call is recorded while tracing (:func:`_backward_with_values`) instead of running
the forward pass a second time.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_lrp import weightless
from tf_lrp.concepts.conditions import condition_masks, condition_node
from tf_lrp.errors import InputError
from tf_lrp.graph import Graph, Node

_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_analyzer(analyzer) -> None:
    """``TypeError`` unless ``analyzer`` is an LRP :class:`tf_lrp.Analyzer`."""
    from tf_lrp.analyzer import Analyzer

    if not isinstance(analyzer, Analyzer):
        raise TypeError(f"concepts need an LRP tf_lrp.Analyzer, got {type(analyzer).__name__}; "
                        "build one with tf_lrp.Analyzer(model, composite)")


def _cached(analyzer, key: tuple, build: Callable[[], Callable]) -> Callable:
    functions = _FUNCTIONS.setdefault(analyzer, {})
    if key not in functions:
        functions[key] = build()
    return functions[key]


def _backward_with_values(analyzer, xs, targets, masks=None):
    """``(input relevance, relevance of every tensor, forward values)`` of one backward pass.

    The engine's ``_backward`` keeps the forward values to itself; while tracing, its
    ``_forward`` is shadowed by a recording wrapper on the instance (removed right after), so
    the values come from the pass that runs anyway.
    """
    recorded: dict = {}
    forward = analyzer._forward

    def recording(*args, **kwargs):
        values, z0s = forward(*args, **kwargs)
        recorded.setdefault("values", values)
        return values, z0s

    analyzer._forward = recording
    try:
        inputs, seen = analyzer._backward(xs, targets, keep_all=True, masks=masks)
    finally:
        del analyzer._forward
    return inputs, seen, recorded["values"]


def activation_key(graph: Graph, node: Node) -> int:
    """The tensor holding ``node``'s activation: its output, or the output of the activations
    (split off the layer, or ReLU-type layers) that alone read it, one after the other."""
    consumers = graph.consumers()
    key = node.outputs[0]
    while True:
        users = consumers.get(key, [])
        if len(users) != 1 or len(users[0].inputs) != 1 or len(users[0].outputs) != 1:
            return key
        user = users[0]
        is_activation = user.kind == "activation" or (
            weightless.handling(user.layer, 1) == weightless.PASS
            and not weightless.is_elementwise(user.layer))
        if not is_activation:
            return key
        key = user.outputs[0]


def spatial_shape(graph: Graph, node: Node) -> tuple[int | None, ...]:
    """The positions of ``node``'s output (its shape without batch and channel axes)."""
    return tuple(graph.shapes[node.outputs[0]][1:-1])


def _per_channel(t: tf.Tensor) -> tf.Tensor:
    """``(n, ..., C) -> (n, positions, C)`` as float32."""
    return tf.reshape(tf.cast(t, tf.float32), tf.stack([tf.shape(t)[0], -1, tf.shape(t)[-1]]))


def _statistics(analyzer, nodes: tuple[Node, ...], activations: tuple[int, ...],
                heatmap: bool, xs, targets):
    inputs, seen, values = _backward_with_values(analyzer, xs, targets)
    y = analyzer._output(values)
    resolved = tf.where(targets < 0, tf.argmax(y, axis=1, output_type=tf.int32), targets)
    out = {"target": resolved,
           "logit": tf.gather(tf.cast(y, tf.float32), resolved, axis=1, batch_dims=1)}
    if heatmap:
        out["heatmap"] = inputs[0]
    out["layers"] = {}
    for node, akey in zip(nodes, activations):
        key = node.outputs[0]
        r = _per_channel(seen[key] if key in seen else tf.zeros_like(values[key]))
        a = _per_channel(values[akey])
        out["layers"][node.name] = {
            "relevance": tf.reduce_sum(r, axis=1),
            "relevance_at": tf.argmax(r, axis=1, output_type=tf.int32),
            "activation": tf.reduce_max(a, axis=1),
            "activation_at": tf.argmax(a, axis=1, output_type=tf.int32),
        }
    return out


def layer_nodes(analyzer, layers: Sequence[str]) -> list[Node]:
    """The nodes of ``layers`` (names as :func:`condition_node` takes them), each once."""
    if isinstance(layers, str):
        layers = [layers]
    nodes: list[Node] = []
    for layer in layers:
        node = condition_node(analyzer.graph, layer)
        if len(analyzer.graph.shapes[node.outputs[0]]) < 2:
            raise InputError(f"layer {layer!r} has no channel axis to take concepts from")
        if node not in nodes:
            nodes.append(node)
    if not nodes:
        raise InputError("no layers given: name at least one layer (e.g. the last convolution)")
    return nodes


def layer_statistics(analyzer, layers: Sequence[str], heatmap: bool = False):
    """``step(x, target) -> dict`` of numpy arrays (see the module docstring).

    ``x`` is one batch; ``target`` as for the analyzer. Keys: ``"target"`` ``(n,)`` (the class
    explained), ``"logit"`` ``(n,)``, ``"heatmap"`` (with ``heatmap=True``) and ``"layers"``:
    per layer node name a dict of ``(n, channels)`` arrays: ``relevance``, ``relevance_at``
    (flat position of the largest relevance), ``activation`` (the largest), ``activation_at``.
    """
    check_analyzer(analyzer)
    nodes = tuple(layer_nodes(analyzer, layers))
    if len(analyzer.graph.inputs) != 1:
        raise InputError("concepts handle single-input models; this model has "
                         f"{len(analyzer.graph.inputs)} inputs")
    acts = tuple(activation_key(analyzer.graph, n) for n in nodes)
    fn = _cached(analyzer, ("statistics", tuple(n.name for n in nodes), heatmap), lambda: tf.function(
        functools.partial(_statistics, analyzer, nodes, acts, heatmap),
        input_signature=[analyzer._input_specs, tf.TensorSpec([None], tf.int32)], autograph=False))

    def step(x, target=None) -> dict:
        xs = analyzer._prepare(x)
        t = analyzer._targets(target, xs[0].shape[0])
        out = fn([tf.convert_to_tensor(xs[0])], tf.constant(t))
        return tf.nest.map_structure(lambda v: v.numpy(), out)

    return step


def _conditioned(analyzer, read: tuple[Node, ...], conditioned: tuple[Node, ...], xs, targets,
                 masks):
    _, seen, _ = _backward_with_values(analyzer, xs, targets, masks)
    out = {}
    for node in (*read, *conditioned):
        if node.outputs[0] not in seen:
            raise InputError(f"no relevance reaches layer {node.name!r} from the explained "
                             "output, so it has no concepts to condition on or read")
        out[node.name] = tf.reduce_sum(_per_channel(seen[node.outputs[0]]), axis=1)
    return out


def conditioned_relevance(analyzer, x, target, conditions, read: Sequence[str]
                          ) -> dict[str, np.ndarray]:
    """Relevance per channel ``(n, k, channels)`` at the ``read`` layers and at the conditioned
    layers themselves, under ``k`` conditions per sample (forms of
    :func:`tf_lrp.concepts.condition_masks`), in one traced call."""
    check_analyzer(analyzer)
    xs = analyzer._prepare(x)
    n = xs[0].shape[0]
    t = analyzer._targets(target, n)
    masks = condition_masks(analyzer.graph, conditions, n)
    names = tuple(sorted(masks))
    by_name = {node.name: node for node in analyzer.graph.nodes}
    reads = tuple(layer_nodes(analyzer, read))
    conditioned = tuple(by_name[name] for name in names)
    order = {node.name: i for i, node in enumerate(analyzer.graph.nodes)}
    top = max(names, key=order.get)
    for node in reads:
        if order[node.name] > order[top]:
            raise InputError(
                f"layer {node.name!r} is not below the conditioned layer {top!r}: relevance is "
                "read where the backward pass arrives after the condition; pick a layer closer "
                "to the input")
    key = ("conditioned", names, tuple(node.name for node in reads))
    fn = _cached(analyzer, key, lambda: tf.function(
        functools.partial(_conditioned, analyzer, reads, conditioned),
        input_signature=[analyzer._input_specs, tf.TensorSpec([None], tf.int32),
                         {name: tf.TensorSpec((None, None, masks[name].shape[2]), tf.bool)
                          for name in names}], autograph=False))
    k = next(iter(masks.values())).shape[1]
    out = fn([tf.convert_to_tensor(xs[0])], tf.constant(t),
             {name: tf.constant(np.ascontiguousarray(masks[name])) for name in names})
    return {name: v.numpy().reshape(n, k, -1) for name, v in out.items()}
