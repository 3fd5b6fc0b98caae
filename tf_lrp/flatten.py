"""Custom layers explained by what they compute: flattened into their sublayers and ops.

A layer that is not a Keras built-in (KerasHub's ``TransformerEncoder``, ``LlamaTransformerDecoder``,
``MBConvBlock``, a user's block) and whose ``call`` is written with ``keras.ops`` and Keras
sublayers is called once on fresh symbolic inputs shaped like its node's inputs. Its sublayers
and ops then record nodes of their own (:func:`tf_lrp.keras_adapter.symbolic_call`), and the
graph holds those instead of the layer: every part gets the rule that fits it, named
``<layer>/<part>`` (so a ``LayerMap`` key or ``--rule`` can name ``encoder_0/self_attention/query``).
Flattening recurses into custom sublayers and into nested models.

What cannot be flattened keeps the layer as one node with the reason (:class:`Flattened`):

* ``tf.*`` calls on symbolic tensors, Python control flow on tensor values: refused with the
  exception's text;
* a layer whose output does not depend on its inputs' values (KerasHub's ``PositionEmbedding``
  reads its input only for its shape): kept whole, marked constant, and gets no relevance
  (its output absorbs its share, like a bias);
* a layer whose body needs sizes that are unknown when the model is walked (a causal mask built
  with ``ops.arange(sequence_length)``): flattened again once the sizes are known
  (:class:`tf_lrp.base.BaseAnalyzer` builds the graph for the shape of the first input it sees).

Flattened nodes compute the same values as the layer (tested against the layer's own output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras

from tf_lrp import keras_adapter

#: how Keras says a body used TensorFlow directly or branched on a value (no sizes help)
_STRUCTURAL = ("TensorFlow function", "as a boolean")
#: the words a refusal of that kind carries
STRUCTURAL = "calls TensorFlow directly or branches on values"


def is_builtin(op) -> bool:
    """Whether ``op`` is a Keras built-in layer or operation (not a subclass defined elsewhere)."""
    return type(op).__module__.startswith(("keras.", "keras_core."))


def is_custom(op) -> bool:
    """Whether ``op`` is a layer tf_lrp flattens: not a Keras built-in, not a model, and without
    a linear part registered with :func:`tf_lrp.layers.register_linear`."""
    from tf_lrp import layers as lrp_layers

    if not isinstance(op, keras.layers.Layer) or isinstance(op, keras.Model) or is_builtin(op):
        return False
    return lrp_layers.linear_part(op) is None


def flattens(op, node) -> bool:
    """Whether ``node`` (a call of ``op``) is flattened: ``op`` is a custom layer, or a Keras
    attention layer called in a way its rewrite into parts does not cover (a constant query,
    as in attention pooling with a learned probe)."""
    if is_custom(op):
        return True
    if isinstance(op, keras.layers.MultiHeadAttention):
        return "query" not in keras_adapter.input_roles(node)
    return False


@dataclass
class Flattened:
    """The outcome of flattening one node.

    Attributes
    ----------
    inputs
        The fresh symbolic inputs, in the order of the node's input tensors (empty on failure).
    nodes
        ``(node, input KerasTensors, output KerasTensors)`` of the recorded parts, in order.
    outputs
        The output KerasTensors (one per output of the layer).
    constant
        The layer's output does not depend on its inputs' values (no parts recorded).
    reason
        Why the layer could not be flattened (``None``: it was, or it is constant).
    shape_dependent
        The failure may go away once the inputs' unknown sizes (the batch's too) are known.
    paths
        ``id(node) -> "sublayer/inner"``: the custom sublayers a recorded node was inlined from.
    """

    inputs: list
    nodes: list
    outputs: list
    constant: bool = False
    reason: str | None = None
    shape_dependent: bool = False
    paths: dict = field(default_factory=dict)


def flatten(op, node, shapes: list[tuple] | None = None, own_call: bool = True,
            keep=None) -> Flattened:
    """Record the parts ``op`` is made of for one call (``node``) of it.

    Parameters
    ----------
    op
        A custom layer (:func:`is_custom`) or a model.
    node
        The recorded call of ``op`` to flatten.
    shapes
        Shapes of the fresh inputs (batch axis ``None``); default: the node's.
    own_call
        ``True``: record the parts of ``op.call``; ``False``: call ``op`` itself (a model
        re-called on inputs of known sizes, whose layers then record nodes with those sizes).
    keep
        ``keep(sublayer, path)``: a custom sublayer to record whole; every other custom
        sublayer is inlined as it is called (its parts recorded in its place, tagged with its
        path), so that what it returns besides tensors (``None`` caches) does not matter.
    """
    shapes = shapes or [tuple(kt.shape) for kt in node.input_tensors]
    unknown = any(d is None for s in shapes for d in s)  # the batch axis included
    paths: dict = {}

    def inline(layer, path: str) -> bool:
        return is_custom(layer) and not (keep and keep(layer, path))

    try:
        inputs, outputs = keras_adapter.symbolic_call(op, node, shapes, own_call=own_call,
                                                      inline=inline, paths=paths)
    except Exception as exc:  # whatever the body does that symbolic tensors cannot
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first[:80]}{'...' if len(first) > 80 else ''}"
        structural = any(m in first for m in _STRUCTURAL)
        return Flattened([], [], [], reason=f"could not be flattened into its parts ({text})"
                         + (f"; {STRUCTURAL}" if structural else ""),
                         shape_dependent=unknown and not structural)
    if not any(isinstance(o, keras.KerasTensor) for o in outputs):
        return Flattened(inputs, [], outputs, constant=True)
    if not all(isinstance(o, keras.KerasTensor) for o in outputs):
        return Flattened([], [], [], reason="returns tensors that do not come from its inputs "
                         "next to ones that do")
    try:
        nodes = keras_adapter.recorded_nodes(inputs, outputs)
    except ValueError as exc:
        return Flattened([], [], [], reason=f"could not be flattened into its parts ({exc})")
    return Flattened(inputs, nodes, outputs, paths=paths)


__all__ = ["Flattened", "flatten", "flattens", "is_builtin", "is_custom"]
