"""Attention layers as the operations they are made of, so that each gets its own rule.

:func:`expand` rewrites a ``keras.layers.MultiHeadAttention`` node into

``<name>/query``, ``<name>/key``, ``<name>/value``
    the input projections (``EinsumDense``: layers with weights; every rule applies);
``<name>/mask``
    the attention mask Keras derives from the inputs' masks, ``attention_mask`` and
    ``use_causal_mask`` (only where there is one; it receives no relevance);
``<name>/scores``
    :class:`AttentionScores`, the bilinear product ``(q / sqrt(d)) . k`` per head;
``<name>/softmax``
    :class:`AttentionSoftmax`, the (masked) softmax over the keys;
``<name>/context``
    :class:`AttentionContext`, the bilinear product ``A . v``;
``<name>/output``
    the output projection (``EinsumDense``).

A ``keras.layers.Attention`` node (dot-product scores, optionally scaled) and a
``keras.ops.dot_product_attention`` node (the fused attention of ``MultiHeadAttention``
subclasses and hand-written blocks; grouped-query heads repeated) become the scores, softmax
and context nodes alone. The nodes compute what the Keras layer computes
(inference mode). Their fixed handling is AttnLRP's (Achtibat et al., ICML 2024): the bilinear
products by :class:`Bilinear` (epsilon over the sum, then a uniform split between the two
factors, Prop. 3.3) and the softmax by :class:`AttnSoftmax` (Prop. 3.1). CP-LRP (attention
weights held constant) maps ``Bilinear(shares=(0.0, 1.0))`` to :class:`AttentionContext`
(:class:`tf_lrp.composites.CPLRP`).
"""

from __future__ import annotations

import tensorflow as tf
from keras import layers as kl

from tf_lrp import keras_adapter
from tf_lrp.graph import Graph, Node
from tf_lrp.rules import AttnSoftmax, Bilinear, HeldConstant, NoRelevance, Rule, UniformProduct

Tensor = tf.Tensor


# ----------------------------------------------------------------------------- parts
class AttentionPart:
    """A part of an attention layer: a named operation without weights (see module docstring)."""

    def __init__(self, name: str, layer):
        self.name = name
        self.layer = layer  # the Keras attention layer it belongs to

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AttentionScores(AttentionPart):
    """The query-key product of an attention layer (bilinear in its two inputs)."""

    bilinear = True


class AttentionSoftmax(AttentionPart):
    """The softmax over the keys (inputs: the scores, and the attention mask where there is one)."""


class AttentionContext(AttentionPart):
    """The product of the attention weights with the values (bilinear in its two inputs)."""

    bilinear = True


class AttentionMask(AttentionPart):
    """The boolean attention mask (no relevance reaches or leaves it)."""


# ----------------------------------------------------------------------------- rules
def default_rule(part: AttentionPart) -> Rule:
    """The fixed handling of an attention part (AttnLRP's)."""
    if isinstance(part, (AttentionScores, AttentionContext)):
        return Bilinear()
    if isinstance(part, AttentionSoftmax):
        return AttnSoftmax()
    if getattr(part, "held", None) is not None:  # tf_lrp.structure's products
        return HeldConstant() if part.held_by_default else UniformProduct()
    return NoRelevance()


# ----------------------------------------------------------------------------- expansion
def _unsupported() -> tuple[type, ...]:
    return tuple(c for c in (getattr(kl, "AdditiveAttention", None),
                             getattr(kl, "GroupQueryAttention", None)) if isinstance(c, type))


def check_layer(layer) -> str | None:
    """Why an attention layer cannot be explained (``None``: it can, or it is no attention)."""
    supported = "supported: MultiHeadAttention, Attention with score_mode='dot'"
    if isinstance(layer, _unsupported()):
        return f"is a {type(layer).__name__}, which tf_lrp does not expand ({supported})"
    if isinstance(layer, kl.MultiHeadAttention):
        if keras_adapter.attention_internals(layer).get("use_gate"):
            return f"is a gated MultiHeadAttention (use_gate=True) ({supported})"
    elif isinstance(layer, kl.Attention) and layer.score_mode != "dot":
        return (f"is an Attention layer with score_mode={layer.score_mode!r}, not a bilinear "
                f"product ({supported})")
    return None


def is_attention(layer) -> bool:
    """Whether ``layer`` is an attention layer :func:`expand` rewrites."""
    return isinstance(layer, (kl.MultiHeadAttention, kl.Attention)) and \
        not isinstance(layer, _unsupported())


_FUSED = keras_adapter.op_classes("DotProductAttention")
_EINSUM = keras_adapter.op_classes("Einsum")[0]


def expand(graph: Graph) -> Graph:
    """Rewrite every attention node into its parts (module docstring)."""
    nodes: list[Node] = []
    for node in graph.nodes:
        ok = node.kind == "layer" and is_attention(node.layer) and check_layer(node.layer) is None
        if ok and isinstance(node.layer, kl.MultiHeadAttention):
            nodes += _multi_head(graph, node)
        elif ok:
            nodes += _dot_attention(graph, node)
        elif isinstance(node.layer, _FUSED) and \
                not getattr(node.layer, "attn_logits_soft_cap", None):
            nodes += _fused(graph, node)
        else:
            nodes.append(node)
    graph.nodes = nodes
    return graph


def _role_keys(node: Node) -> dict[str, int]:
    roles = node.roles or [f"arg{i}" for i in range(len(node.inputs))]
    out: dict[str, int] = {}
    for role, key in zip(roles, node.inputs):
        out.setdefault(role, key)
    return out


def _linear_node(name: str, layer, inputs: list[int], outputs: list[int]) -> Node:
    from tf_lrp import layers as lrp_layers

    linear = lrp_layers.linear_part(layer)

    def call(values, linear=linear):
        return [linear.add_bias(linear.apply(values[0], linear.kernels()), linear.bias())]

    return Node(name, layer, inputs, outputs, call, linear)


def _multi_head(graph: Graph, node: Node) -> list[Node]:
    layer = node.layer
    parts = keras_adapter.attention_internals(layer)
    keys = _role_keys(node)
    opts = node.options or {}
    q_key, v_key = keys["query"], keys["value"]
    k_key = keys.get("key", v_key)
    am_key = keys.get("attention_mask")
    causal = bool(opts.get("use_causal_mask", False))
    masked = (bool({q_key, v_key, k_key} & graph.masked) or am_key is not None or causal
              or parts.get("sliding_window") is not None)
    new = graph.new_key
    q, k, v, scores, probs, ctx = (new() for _ in range(6))
    name = node.name
    out = [
        _linear_node(f"{name}/query", parts["query_dense"], [q_key], [q]),
        _linear_node(f"{name}/key", parts["key_dense"], [k_key], [k]),
        _linear_node(f"{name}/value", parts["value_dense"], [v_key], [v]),
    ]
    shared: dict = {}
    mask_inputs = [q_key, v_key, k_key] + ([am_key] if am_key is not None else [])
    mask_key = new() if masked else None
    if masked:
        def mask_call(values, explicit=am_key is not None):
            qv, vv, kv = values[0], values[1], values[2]
            qm, vm = keras_adapter.mask_of(qv), keras_adapter.mask_of(vv)
            km = keras_adapter.mask_of(kv) if kv is not vv else None
            shared["query_mask"] = qm
            mask = layer._compute_attention_mask(
                qv, vv, query_mask=qm, value_mask=vm, key_mask=km,
                attention_mask=values[3] if explicit else None, use_causal_mask=causal)
            return [tf.cast(mask, tf.bool) if mask is not None else
                    tf.ones((tf.shape(qv)[0], tf.shape(qv)[1], tf.shape(vv)[1]), tf.bool)]

        out.append(Node(f"{name}/mask", AttentionMask(f"{name}/mask", layer), mask_inputs,
                        [mask_key], mask_call))
    else:
        shared["query_mask"] = None
    scale = parts["inverse_sqrt_key_dim"]

    def scores_call(values):
        return [tf.einsum(parts["dot_product_equation"], values[1],
                          values[0] * tf.cast(scale, values[0].dtype))]

    def softmax_call(values):
        return [parts["masked_softmax"](values[0], values[1] if len(values) > 1 else None)]

    def context_call(values):
        return [tf.einsum(parts["combine_equation"], values[0], values[1])]

    softmax = AttentionSoftmax(f"{name}/softmax", layer)
    softmax.axes = lambda x: [a % len(x.shape) for a in parts["softmax_axes"]]
    out += [
        Node(f"{name}/scores", AttentionScores(f"{name}/scores", layer), [q, k], [scores],
             scores_call),
        Node(f"{name}/softmax", softmax, [scores] + ([mask_key] if masked else []), [probs],
             softmax_call),
        Node(f"{name}/context", AttentionContext(f"{name}/context", layer), [probs, v], [ctx],
             context_call),
    ]
    output = _linear_node(f"{name}/output", parts["output_dense"], [ctx], node.outputs[:1])
    plain_call = output.call

    def output_call(values):
        result = plain_call(values)
        if shared.get("query_mask") is not None:
            keras_adapter.set_mask(result[0], shared["query_mask"])
        return result

    output.call = output_call
    out.append(output)
    if len(node.outputs) > 1:  # return_attention_scores: the weights are an output too
        out.append(Node(f"{name}/weights", kl.Identity(name=f"{name}_weights"), [probs],
                        node.outputs[1:2], lambda values: [tf.identity(values[0])]))
    return out


def _dot_attention(graph: Graph, node: Node) -> list[Node]:
    layer = node.layer
    opts = node.options or {}
    keys = node.inputs  # [query, value, (key)] in order (the layer takes one list)
    q_key, v_key = keys[0], keys[1]
    k_key = keys[2] if len(keys) > 2 else v_key
    causal = bool(opts.get("use_causal_mask", False))
    new = graph.new_key
    scores, probs = new(), new()
    name = node.name

    def scores_call(values):
        s = tf.matmul(values[0], values[1], transpose_b=True)
        if layer.scale is not None:
            s = s * tf.cast(tf.convert_to_tensor(layer.scale), s.dtype)
        return [s]

    masked = bool({q_key, v_key} & graph.masked) or causal
    shared: dict = {}
    out = [Node(f"{name}/scores", AttentionScores(f"{name}/scores", layer), [q_key, k_key],
                [scores], scores_call)]
    mask_key = None
    if masked:
        mask_key = new()

        def mask_call(values):
            qv, vv = values
            shared["query_mask"] = keras_adapter.mask_of(qv)
            vm = keras_adapter.mask_of(vv)
            t_q, t_v = tf.shape(qv)[1], tf.shape(vv)[1]
            mask = tf.ones((tf.shape(qv)[0], t_q, t_v), tf.bool)
            if vm is not None:
                mask = mask & tf.cast(vm, tf.bool)[:, None, :]
            if causal:
                mask = mask & tf.linalg.band_part(tf.ones((t_q, t_v), tf.bool), -1, 0)[None]
            return [mask]

        out.append(Node(f"{name}/mask", AttentionMask(f"{name}/mask", layer), [q_key, v_key],
                        [mask_key], mask_call))

    def softmax_call(values):
        s = values[0]
        if len(values) > 1:
            s = tf.where(values[1], s, s - 1.0e9)
        return [tf.nn.softmax(s, axis=-1)]

    def context_call(values):
        y = tf.matmul(values[0], values[1])
        qm = shared.get("query_mask")
        if qm is not None:
            y = tf.where(tf.cast(qm, tf.bool)[:, :, None], y, tf.zeros_like(y))
            keras_adapter.set_mask(y, qm)
        return [y]

    softmax = AttentionSoftmax(f"{name}/softmax", layer)
    softmax.axes = lambda x: [len(x.shape) - 1]
    out += [
        Node(f"{name}/softmax", softmax, [scores] + ([mask_key] if masked else []), [probs],
             softmax_call),
        Node(f"{name}/context", AttentionContext(f"{name}/context", layer), [probs, v_key],
             node.outputs[:1], context_call),
    ]
    if len(node.outputs) > 1:
        out.append(Node(f"{name}/weights", kl.Identity(name=f"{name}_weights"), [probs],
                        node.outputs[1:2], lambda values: [tf.identity(values[0])]))
    return out


#: what masked scores become (as Keras's TensorFlow backend does): -0.7 * the float32 maximum
_LARGE_NEGATIVE = -0.7 * 3.4028234663852886e38


def _fused(graph: Graph, node: Node) -> list[Node]:
    """``keras.ops.dot_product_attention(query, key, value, bias, mask, scale, is_causal)``
    (``(batch, length, heads, dim)``; fewer key/value heads are repeated, grouped-query
    attention) as scores, softmax and context, computing what the operation computes."""
    op = node.layer
    keys = _role_keys(node)
    # attention pooling with a learned probe (SigLIP's head): the query is a constant the
    # call holds, and the scores are a linear map of the keys (LRP-0, as for MultiHeadAttention
    # flattened with a constant query)
    query = None if "query" in keys else (node.options or {}).get("query")
    if query is None and "query" not in keys or not {"key", "value"} <= set(keys):
        from tf_lrp.errors import UnsupportedLayerError

        raise UnsupportedLayerError(
            f"{node.name!r}: dot_product_attention with a constant key or value (inputs "
            f"{sorted(keys)}) has no rewrite into attention parts. Fix: compute the attention "
            "with keras.ops.einsum and a Softmax layer, which tf_lrp explains part by part")
    q_key, k_key, v_key = keys.get("query"), keys["key"], keys["value"]
    bias_key, mask_key = keys.get("bias"), keys.get("mask")
    scale = (node.options or {}).get("scale")
    causal = bool(getattr(op, "is_causal", False))
    new = graph.new_key
    scores, probs = new(), new()
    name = node.name

    def grouped(k, q):
        groups = q.shape[2] // k.shape[2] if q.shape[2] and k.shape[2] else 1
        return tf.repeat(k, groups, axis=2) if groups > 1 else k

    def scores_call(values):
        if query is not None:
            values = [tf.convert_to_tensor(query, values[0].dtype)] + values
        q, k = values[0], tf.cast(grouped(values[1], values[0]), values[0].dtype)
        s = tf.einsum("BTNH,BSNH->BNTS", q, k)
        factor = scale if scale is not None else tf.math.rsqrt(tf.cast(tf.shape(k)[-1],
                                                                        s.dtype))
        s = s * tf.cast(factor, s.dtype)
        return [s + tf.cast(values[2], s.dtype) if len(values) > 2 else s]

    def softmax_call(values):
        s = values[0]
        mask = tf.ones_like(s, tf.bool)
        if len(values) > 1:
            mask = tf.logical_and(mask, tf.cast(values[1], tf.bool))
        if causal:
            t, n = tf.shape(s)[2], tf.shape(s)[3]
            mask = tf.logical_and(mask, tf.linalg.band_part(tf.ones((t, n), tf.bool), -1, 0))
        if len(values) > 1 or causal:
            s = tf.where(mask, s, tf.constant(_LARGE_NEGATIVE, s.dtype))
        return [tf.nn.softmax(s, axis=-1)]

    def context_call(values):
        p, v = values[0], values[1]
        v = tf.repeat(v, p.shape[1] // v.shape[2], axis=2) if p.shape[1] and v.shape[2] and \
            p.shape[1] > v.shape[2] else v
        return [tf.einsum("BNTS,BSNH->BTNH", p, tf.cast(v, p.dtype))]

    softmax = AttentionSoftmax(f"{name}/softmax", op)
    softmax.axes = lambda x: [len(x.shape) - 1]
    if query is None:
        scores_node = Node(f"{name}/scores", AttentionScores(f"{name}/scores", op),
                           [q_key, k_key] + ([bias_key] if bias_key is not None else []),
                           [scores], scores_call)
    else:
        scores_node = Node(f"{name}/scores", _EINSUM("BTNH,BSNH->BNTS"),
                           [k_key] + ([bias_key] if bias_key is not None else []), [scores],
                           scores_call)
    return [
        scores_node,
        Node(f"{name}/softmax", softmax, [scores] + ([mask_key] if mask_key is not None else []),
             [probs], softmax_call),
        Node(f"{name}/context", AttentionContext(f"{name}/context", op), [probs, v_key],
             node.outputs[:1], context_call),
    ]


__all__ = [
    "AttentionContext", "AttentionMask", "AttentionPart", "AttentionScores",
    "AttentionSoftmax", "check_layer", "default_rule", "expand", "is_attention",
]
