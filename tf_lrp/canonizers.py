"""Canonizers: rewrite the node list into a form LRP rules apply to, without changing the output.

They run in this order (:func:`canonize`):

0. :func:`expand_attention` rewrites MultiHeadAttention and Attention layers into their
   projections, scores, softmax and context (:mod:`tf_lrp.attention`), and
   :func:`unroll_recurrent` gives SimpleRNN/LSTM/GRU layers their unrolled form
   (:mod:`tf_lrp.recurrent`), Bidirectional ones as two layers and their merge.
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
6. :func:`mark_parts`: the attention products, attention softmax, normalizing factors and
   gated units of flattened custom layers, recognised by structure (:mod:`tf_lrp.structure`).
"""

from __future__ import annotations

import dataclasses
import warnings

from keras import layers as kl

from tf_lrp import attention, recurrent, structure, weightless
from tf_lrp import layers as lrp_layers
from tf_lrp.graph import Graph, Node


def expand_attention(graph: Graph) -> Graph:
    """Rewrite attention layers into their parts (:func:`tf_lrp.attention.expand`)."""
    return attention.expand(graph)


def _recurrent_node(name: str, layer, seq: list[int], states: list[int], mask: list[int],
                    outputs: list[int], flip_output: bool = False) -> Node:
    """A node running ``layer`` unrolled; inputs: the sequence, initial states, the mask."""
    unit = recurrent.Recurrent(layer, flip_output=flip_output, initial_states=len(states),
                               mask_input=bool(mask))

    def call(values, unit=unit):
        return unit.forward(values)[0]

    return Node(name, layer, seq + states + mask, outputs, call,
                roles=["sequences"] + ["initial_state"] * len(states) + ["mask"] * len(mask),
                recurrent=unit)


def _split_roles(node: Node, roles: list[str]) -> tuple[list[int], list[int], list[int]]:
    seq = [k for k, r in zip(node.inputs, roles) if r not in ("initial_state", "mask")][:1]
    states = [k for k, r in zip(node.inputs, roles) if r == "initial_state"]
    mask = [k for k, r in zip(node.inputs, roles) if r == "mask"][:1]
    return seq, states, mask


def unroll_recurrent(graph: Graph) -> Graph:
    """Give every SimpleRNN/LSTM/GRU node its unrolled form; expand Bidirectional wrappers into
    the forward layer, the backward layer (its sequence output flipped back to input order)
    and their merge (``concat``: Concatenate, ``sum``: Add, ``ave``: Average, ``mul``:
    Multiply; ``None``: both outputs as they are). Layers that cannot be unrolled are left
    as they are (:func:`tf_lrp.recurrent.check_layer` says why when rules are assigned)."""
    nodes: list[Node] = []
    for node in graph.nodes:
        layer = node.layer
        roles = node.roles or ["sequences"] * len(node.inputs)
        if node.kind != "layer":
            nodes.append(node)
        elif isinstance(layer, recurrent.RECURRENT) and recurrent.check_layer(layer) is None:
            seq, states, mask = _split_roles(node, roles)
            nodes.append(_recurrent_node(node.name, layer, seq, states, mask, node.outputs))
        elif isinstance(layer, kl.Bidirectional) and \
                recurrent.check_layer(layer.forward_layer) is None and \
                recurrent.check_layer(layer.backward_layer) is None:
            nodes += _bidirectional(graph, node, roles)
        else:
            nodes.append(node)
    graph.nodes = nodes
    return graph


def _bidirectional(graph: Graph, node: Node, roles: list[str]) -> list[Node]:
    layer = node.layer
    fwd, bwd = layer.forward_layer, layer.backward_layer
    seq, states, mask = _split_roles(node, roles)
    half = len(states) // 2
    n_states = 2 if isinstance(fwd, kl.LSTM) else 1
    outs = list(node.outputs)
    merged, state_outs = outs[: 2 if layer.merge_mode is None else 1], outs[len(outs) - (
        2 * n_states if layer.return_state else 0):]
    if layer.merge_mode is None:
        y_f, y_b = merged
    else:
        y_f, y_b = graph.new_key(), graph.new_key()
    f_states, b_states = state_outs[:len(state_outs) // 2], state_outs[len(state_outs) // 2:]
    out = [
        _recurrent_node(f"{node.name}/forward", fwd, seq, states[:half], mask,
                        [y_f, *f_states]),
        _recurrent_node(f"{node.name}/backward", bwd, seq, states[half:], mask,
                        [y_b, *b_states], flip_output=layer.return_sequences),
    ]
    if layer.merge_mode is not None:
        merge = {"concat": kl.Concatenate(axis=-1), "sum": kl.Add(), "ave": kl.Average(),
                 "mul": kl.Multiply()}[layer.merge_mode]
        out.append(Node(f"{node.name}/merge", merge, [y_f, y_b], merged,
                        lambda values, merge=merge: [merge(list(values))]))
    return out


def attach_linear_parts(graph: Graph) -> Graph:
    """Set ``node.linear`` for every node whose layer has a known linear part."""
    for node in graph.nodes:
        if node.linear is None and node.kind == "layer":
            if isinstance(node.layer, kl.Embedding) and (node.options or {}).get("reverse"):
                node.linear = lrp_layers.reversed_embedding(node.layer)  # a tied LM head
            else:
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


def mark_parts(graph: Graph) -> Graph:
    """Mark the attention, normalization and gating parts of flattened blocks by structure
    (:func:`tf_lrp.structure.mark_parts`)."""
    return structure.mark_parts(graph)


def canonize(graph: Graph) -> Graph:
    """Run every canonizer in order (see the module docstring)."""
    for step in (expand_attention, unroll_recurrent, attach_linear_parts, split_activations,
                 strip_softmax, fold_batchnorm, linearize_normalizations, mark_parts):
        graph = step(graph)
    return graph


__all__ = [
    "attach_linear_parts",
    "expand_attention",
    "unroll_recurrent",
    "canonize",
    "fold_batchnorm",
    "linearize_normalizations",
    "mark_parts",
    "split_activations",
    "strip_softmax",
]
