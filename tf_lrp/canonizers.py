"""Canonizers: rewrite the node list into a form LRP rules apply to, without changing the output.

They run in this order (:func:`canonize`):

1. :func:`attach_linear_parts` gives every node with weights its :class:`~tf_lrp.layers.Linear`.
2. :func:`split_activations`: ``Dense(..., activation="relu")`` becomes a linear node and an
   activation node, so the rule sees the pre-activation and relevance passes the activation.
3. :func:`strip_softmax`: a softmax that produces a model output is removed (with a warning), so
   explanations are of the logits.
4. :func:`fold_batchnorm`: a BatchNormalization whose input comes only from a kernel layer with a
   linear activation is folded into that kernel, ``W' = W * s``, ``b' = (b - mean) * s + beta``
   with ``s = gamma / sqrt(var + eps)``. The fold is computed from the live variables inside the
   traced function, so it follows a model that keeps training. A BatchNormalization that
   cannot be folded stays an elementwise affine layer (relevance passes it).
5. :func:`linearize_normalizations`: LayerNormalization, GroupNormalization and
   UnitNormalization compute the same output with their normalizing scale held constant.
"""

from __future__ import annotations

import dataclasses
import warnings

from keras import layers as kl

from tf_lrp import layers as lrp_layers
from tf_lrp import weightless
from tf_lrp.graph import Graph, Node


def attach_linear_parts(graph: Graph) -> Graph:
    """Set ``node.linear`` for every node whose layer has a known linear part."""
    for node in graph.nodes:
        if node.linear is None and node.kind == "layer":
            node.linear = lrp_layers.linear_part(node.layer)
    return graph


def _linear_call(linear) -> callable:
    def call(values):
        return [linear.add_bias(linear.apply(values[0], linear.kernels()), linear.bias())]

    return call


def split_activations(graph: Graph) -> Graph:
    """Split the activation off every linear node into a node of its own."""
    nodes: list[Node] = []
    for node in graph.nodes:
        linear = node.linear
        if linear is None or isinstance(node.layer, kl.BatchNormalization):
            nodes.append(node)
            continue
        if linear.activation is None:
            nodes.append(
                Node(node.name, node.layer, node.inputs, node.outputs, _linear_call(linear), linear)
            )
            continue
        z = graph.new_key()
        graph.shapes[z] = graph.shapes[node.outputs[0]]
        act = linear.activation
        linear.activation = None
        nodes.append(Node(node.name, node.layer, node.inputs, [z], _linear_call(linear), linear))
        nodes.append(
            Node(
                node.name + "/activation",
                act,
                [z],
                node.outputs,
                lambda values, act=act: [act(values[0])],
                kind="activation",
            )
        )
    graph.nodes = nodes
    return graph


def strip_softmax(graph: Graph) -> Graph:
    """Remove a softmax that directly produces a model output; warn that logits are explained."""
    producer = graph.producer()
    for i, out in enumerate(graph.outputs):
        node = producer.get(out)
        if node is None or not weightless.is_softmax(node.layer):
            continue
        warnings.warn(
            f"The output {graph.output_names[i]!r} ends in a softmax ({node.name}); tf_lrp "
            "explains the logits before it (the softmax is stripped). This is the usual LRP "
            "practice: the softmax is not a layer relevance can be propagated through.",
            stacklevel=4,
        )
        graph.outputs[i] = node.inputs[0]
        graph.nodes.remove(node)
    return graph


def _foldable_producer(graph: Graph, bn: Node, producer: dict, consumers: dict) -> Node | None:
    src = producer.get(bn.inputs[0])
    if src is None or src.linear is None or isinstance(src.layer, kl.BatchNormalization):
        return None
    if src.linear.activation is not None or len(src.outputs) != 1:
        return None
    if len(consumers.get(src.outputs[0], [])) != 1 or src.outputs[0] in graph.outputs:
        return None
    axis = bn.layer.axis if isinstance(bn.layer.axis, int) else bn.layer.axis[0]
    rank = len(graph.shapes[bn.inputs[0]])
    if axis % rank != src.linear.channel_axis % rank:
        return None
    return src


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each BatchNormalization into the kernel layer that feeds only it."""
    producer, consumers = graph.producer(), graph.consumers()
    for bn in [n for n in graph.nodes if isinstance(n.layer, kl.BatchNormalization)]:
        src = _foldable_producer(graph, bn, producer, consumers)
        if src is None:
            continue
        graph.nodes.remove(bn)
        src.linear = _folded(src.linear, bn.layer)
        src.call = _linear_call(src.linear)
        src.name = f"{src.name}+{bn.name}"
        src.outputs = bn.outputs
        producer = graph.producer()
    return graph


def _folded(linear, bn_layer):
    kernels, bias = linear.kernels, linear.bias

    def folded_kernels():
        s, _ = lrp_layers.batchnorm_affine(bn_layer)
        return linear.scale_output(kernels(), s)

    def folded_bias():
        s, t = lrp_layers.batchnorm_affine(bn_layer)
        b = bias()
        return t if b is None else b * s + t

    return dataclasses.replace(linear, kernels=folded_kernels, bias=folded_bias)


def linearize_normalizations(graph: Graph) -> Graph:
    """Hold the normalizing scale of LayerNormalization, GroupNormalization and
    UnitNormalization constant (``tf.stop_gradient``): the same output, and a vector-Jacobian
    product that is the transpose of the linear map ``x -> gamma (x - mean) / sigma + beta``."""
    for node in graph.nodes:
        fn = lrp_layers.linearized_normalization(node.layer) if node.kind == "layer" else None
        if fn is not None:
            node.call = lambda values, fn=fn: [fn(values[0])]
    return graph


def canonize(graph: Graph) -> Graph:
    """Run every canonizer in order (see the module docstring)."""
    for step in (attach_linear_parts, split_activations, strip_softmax, fold_batchnorm,
                 linearize_normalizations):
        graph = step(graph)
    return graph


__all__ = [
    "attach_linear_parts",
    "canonize",
    "fold_batchnorm",
    "linearize_normalizations",
    "split_activations",
    "strip_softmax",
]
