"""The parts of flattened blocks, recognised by structure, not by class.

Custom layers are flattened into Keras sublayers and ``keras.ops`` nodes (:mod:`tf_lrp.flatten`).
A hand-written attention or normalization is then a handful of generic operations; this
canonizer finds what they are by how they are connected, and marks the nodes with the parts of
:mod:`tf_lrp.attention` (and two more), so that every composite maps its rules to them as it
does for ``MultiHeadAttention``:

* an ``einsum``/``matmul`` of two tensors that both depend on the input is bilinear: the
  product of a softmax's output (through dropout, casts, reshapes) with another tensor is an
  :class:`~tf_lrp.attention.AttentionContext` (weights first), any other an
  :class:`~tf_lrp.attention.AttentionScores`; with one tensor (the other operand a weight or a
  constant) it is a linear map and keeps LRP-0's fixed handling;
* a softmax whose output reaches such a context product is an
  :class:`~tf_lrp.attention.AttentionSoftmax` (AttnLRP's softmax rule; a mask it is called with
  gets no relevance);
* a product or quotient with a **normalizing factor** (the output of ``rsqrt``, ``sqrt`` or
  ``reciprocal``, also scaled, cast or reshaped) is a :class:`NormalizingProduct`: the factor is
  held constant (RMSNorm in its KerasHub forms, Gemma's ``1 + w`` scale, T5's norm, a
  hand-written LayerNorm; AttnLRP Prop. 3.4, as LXT does);
* a product of an activation's output with another tensor (``silu(gate) * up``, GeGLU) is a
  :class:`GatedProduct`: AttnLRP splits it uniformly (Prop. 3.2), CP-LRP holds the activated
  gate constant. Products with a gate in [0, 1] (sigmoid) keep the signal-take-all rule.

Nodes computed from integer model inputs alone other than through an ``Embedding`` (position
ids, masks and ALiBi biases from the padding mask) are marked ``constant``: relevance reaching
them stays there. Nodes whose outputs only ever feed held factors, masks or constants (the
variance of a norm) are marked ``inert``: they receive no relevance, so they need no rule.
"""

from __future__ import annotations

from keras import layers as kl

from tf_lrp import keras_adapter, weightless
from tf_lrp.attention import (
    AttentionContext,
    AttentionMask,
    AttentionPart,
    AttentionScores,
    AttentionSoftmax,
)
from tf_lrp.graph import Graph, Node

_op = keras_adapter.op_classes
_BILINEAR = _op("Einsum", "Matmul")
_SOFTMAX_OPS = _op("Softmax")
_NORMALIZERS = _op("Rsqrt", "Sqrt", "Reciprocal")
_POWER = _op("Power")
#: ``ops.power(v, e)`` with these constant exponents is a normalizing factor (Gemma4's norm)
_NORMALIZING_EXPONENTS = (-1.0, -0.5, 0.5)
_PRODUCTS = (kl.Multiply, *_op("Multiply"))
_QUOTIENTS = _op("Divide", "TrueDivide")
#: activations whose output lies in [0, 1]: such a factor is a gate (signal-take-all)
_GATES = {"sigmoid", "hard_sigmoid", "softmax"}


class NormalizingProduct(AttentionPart):
    """``x * c`` or ``x / c`` with ``c`` a normalizing factor; ``held``: the factor's inputs."""

    held_by_default = True

    def __init__(self, name: str, layer, held: tuple[int, ...]):
        super().__init__(name, layer)
        self.held = held


class GatedProduct(AttentionPart):
    """``act(gate) * up`` of a gated linear unit; ``held``: the activated gate's input (held
    constant by CP-LRP only; AttnLRP splits the product uniformly)."""

    held_by_default = False

    def __init__(self, name: str, layer, held: tuple[int, ...]):
        super().__init__(name, layer)
        self.held = held


def _is_softmax(node: Node) -> bool:
    return node.kind == "layer" and (weightless.is_softmax(node.layer)
                                     or isinstance(node.layer, _SOFTMAX_OPS))


def _softmax_axes(layer):
    axis = getattr(layer, "axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return lambda x: [a % len(x.shape) for a in axes]


def _origin(key: int, producer: dict, kinds: tuple[str, ...]) -> Node | None:
    """The node a tensor comes from, followed back through single-input nodes whose fixed
    handling is one of ``kinds`` (dropout, casts, reshapes: ``ROUTE``)."""
    node = producer.get(key)
    while node is not None and len(node.inputs) == 1 and node.linear is None and \
            weightless.handling(node.layer, 1) in kinds and node.kind == "layer":
        node = producer.get(node.inputs[0])
    return node


def _activation_name(node: Node) -> str | None:
    if node.kind == "activation":
        return weightless.activation_name(node.layer)
    if node.linear is None and weightless.handling(node.layer, 1) == weightless.PASS:
        return weightless._function_name(node.layer)
    return None


def _is_root(node: Node) -> bool:
    """``ops.power(v, e)`` with a constant exponent ``e`` of -1, -1/2 or 1/2."""
    exponent = (node.options or {}).get("x2")
    return isinstance(node.layer, _POWER) and isinstance(exponent, (int, float)) and \
        float(exponent) in _NORMALIZING_EXPONENTS


def mark_parts(graph: Graph) -> Graph:
    """Mark the parts described in the module docstring (a canonizer)."""
    producer = graph.producer()
    route = (weightless.ROUTE,)
    normalizing: set[int] = set()
    for node in graph.nodes:
        layer = node.layer
        if node.kind != "layer" or isinstance(layer, AttentionPart):
            continue
        # normalizing factors, followed through casts, reshapes and scalings by constants
        if len(node.inputs) == 1 and (isinstance(layer, _NORMALIZERS) or _is_root(node)):
            normalizing.update(node.outputs)
            continue
        if len(node.inputs) == 1 and node.inputs[0] in normalizing and node.linear is None and \
                weightless.handling(layer, 1) in (weightless.ROUTE, weightless.PROPORTIONAL):
            normalizing.update(node.outputs)
            continue
        if isinstance(layer, _BILINEAR) and len(node.inputs) == 2:
            _bilinear(node, producer)
            continue
        if isinstance(layer, _PRODUCTS + _QUOTIENTS) and len(node.inputs) >= 2:
            held = tuple(i for i, k in enumerate(node.inputs) if k in normalizing)
            quotient = isinstance(layer, _QUOTIENTS)
            if held and len(held) < len(node.inputs) and (not quotient or held == (1,)):
                if all(k in normalizing for k in node.inputs):
                    normalizing.update(node.outputs)
                    continue
                node.layer = NormalizingProduct(node.name, layer, held)
            elif not quotient and len(node.inputs) == 2:
                origins = [_origin(k, producer, route) for k in node.inputs]
                names = [None if o is None else _activation_name(o) for o in origins]
                acts = [i for i, n in enumerate(names) if n not in (None, "linear")]
                # act(gate) * up: one factor an activation (not a [0, 1] gate), the other
                # straight from a layer with weights (the up projection)
                if len(acts) == 1 and names[acts[0]] not in _GATES:
                    up = origins[1 - acts[0]]
                    if up is not None and up.linear is not None and up.kind == "layer":
                        node.layer = GatedProduct(node.name, layer, (acts[0],))
    _mark_integer_derived(graph)
    _mark_inert(graph)
    return graph


def _mark_integer_derived(graph: Graph) -> None:
    """Mark as ``constant`` the nodes computed from integer or boolean model inputs alone (token
    ids, padding masks) other than through an ``Embedding``: position ids, ALiBi biases and
    masks derived from the padding mask are not features, so relevance that reaches them
    stays there (as it does on a bias) instead of flowing into the mask."""
    derived = {k for k, dtype in zip(graph.inputs, graph.input_dtypes)
               if not dtype.startswith(("float", "bfloat"))}
    for node in graph.nodes:
        lookup = isinstance(node.layer, kl.Embedding) and node.linear is None
        if node.inputs and all(k in derived for k in node.inputs) and not lookup and \
                node.kind == "layer" and node.recurrent is None:
            derived.update(node.outputs)
            node.constant = True


def _bilinear(node: Node, producer: dict) -> None:
    origins = [_origin(k, producer, (weightless.ROUTE,)) for k in node.inputs]
    soft = [i for i, o in enumerate(origins) if o is not None and
            (_is_softmax(o) or isinstance(o.layer, AttentionSoftmax))]
    layer = node.layer
    if not soft:
        node.layer = AttentionScores(node.name, layer)
        return
    source = origins[soft[0]]
    if not isinstance(source.layer, AttentionSoftmax):
        part = AttentionSoftmax(source.name, source.layer)
        part.axes = _softmax_axes(source.layer)
        source.layer = part
    if soft[0] == 1:  # the weights first, as the context rules expect
        call = node.call
        node.inputs = node.inputs[::-1]
        node.call = lambda values, call=call: call(values[::-1])
        if node.roles:
            node.roles = node.roles[::-1]
    node.layer = AttentionContext(node.name, layer)


def _gives_none(consumer: Node, position: int, inert: set[str]) -> bool:
    """Whether ``consumer`` passes no relevance to its input at ``position``."""
    layer = consumer.layer
    if consumer.name in inert or consumer.constant or isinstance(layer, AttentionMask):
        return True
    if isinstance(layer, NormalizingProduct) and position in layer.held:
        return True
    if isinstance(layer, AttentionSoftmax) or (consumer.kind == "layer" and
                                               isinstance(layer, kl.Softmax)):
        return position >= 1  # the mask
    return weightless.handling(layer, len(consumer.inputs)) == weightless.NONE


def _mark_inert(graph: Graph) -> None:
    consumers: dict[int, list[tuple[Node, int]]] = {}
    for node in graph.nodes:
        for i, k in enumerate(node.inputs):
            consumers.setdefault(k, []).append((node, i))
    outputs = set(graph.outputs)
    inert: set[str] = set()
    for node in reversed(graph.nodes):
        if any(k in outputs for k in node.outputs):
            continue
        if all(all(_gives_none(c, i, inert) for c, i in consumers.get(k, []))
               for k in node.outputs):
            inert.add(node.name)
            node.inert = True


__all__ = ["GatedProduct", "NormalizingProduct", "mark_parts"]
