"""Adapter from a Keras 3 model to a flat list of nodes.

The Keras private internals it needs (``_nodes_by_depth``, ``node.arguments``,
``Sequential._functional``) are reached through :mod:`tf_lrp.keras_adapter`, the one module
that touches them. Everything above this module sees :class:`Graph`: nodes in topological order, each with integer keys for its input and output
tensors and a ``call`` that re-runs the operation on new tensors.

Sequential models are walked through their functional twin, nested models (a model used as a
layer) are inlined with their inputs and outputs aliased to the outer node's, and a shared layer
gets one node per call (its name gets a ``:1``, ``:2`` ... suffix after the first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from tf_lrp import keras_adapter
from tf_lrp.errors import UnsupportedLayerError

Tensor = tf.Tensor


@dataclass
class Node:
    """One call of one operation.

    Attributes
    ----------
    name
        Unique name: the layer name, ``outer/inner`` inside nested models, ``name:i`` for the
        i-th further call of a shared layer; ``name/activation`` for a split-off activation.
    layer
        The Keras operation (layer or raw op) this node calls.
    inputs, outputs
        Keys of the tensors the node reads and writes.
    call
        ``call(list_of_input_tensors) -> list_of_output_tensors`` in inference mode.
    linear
        The node's :class:`tf_lrp.layers.Linear` part once canonizers have looked at it.
    kind
        ``"layer"``, or ``"activation"`` for an activation split off a Dense/Conv layer.
    roles
        The call argument each input is passed as (``"query"``, ``"initial_state"``, ...).
    options
        The call's keyword arguments that are not tensors (``use_causal_mask=True``).
    recurrent
        For a recurrent layer, its unrolled form (:class:`tf_lrp.recurrent.Recurrent`).
    """

    name: str
    layer: object
    inputs: list[int]
    outputs: list[int]
    call: Callable[[list[Tensor]], list[Tensor]]
    linear: object | None = None
    kind: str = "layer"
    roles: list[str] | None = None
    options: dict | None = None
    recurrent: object | None = None


@dataclass
class Graph:
    """A model as a flat, topologically ordered list of :class:`Node`."""

    nodes: list[Node]
    inputs: list[int]
    outputs: list[int]
    input_shapes: list[tuple]
    input_dtypes: list[str]
    input_names: list[str]
    output_names: list[str]
    shapes: dict[int, tuple] = field(default_factory=dict)
    #: keys of tensors that carry a Keras mask (``Embedding(mask_zero=True)``, ``Masking``)
    masked: set[int] = field(default_factory=set)
    _next_key: int = field(default=0, repr=False)

    def new_key(self) -> int:
        """A fresh tensor key (for canonizers that add tensors)."""
        self._next_key += 1
        return self._next_key

    def consumers(self) -> dict[int, list[Node]]:
        """Map each tensor key to the nodes that read it."""
        out: dict[int, list[Node]] = {}
        for node in self.nodes:
            for k in node.inputs:
                out.setdefault(k, []).append(node)
        return out

    def producer(self) -> dict[int, Node]:
        """Map each tensor key to the node that writes it."""
        return {k: node for node in self.nodes for k in node.outputs}


def _functional(model: keras.Model, name: str):
    """The functional graph of a model: itself, or a Sequential's functional twin."""
    fn = keras_adapter.functional_of(model)
    if fn is not None:
        return fn
    if isinstance(model, keras.Sequential):
        raise UnsupportedLayerError(
            f"Sequential model {name!r} is not built, so its layers have no graph to walk. "
            "Fix: give it an input shape (keras.Input(shape=...) as first layer) or call it "
            "once on a batch before explaining it."
        )
    raise UnsupportedLayerError(
        f"Model {name!r} ({type(model).__name__}) is a subclassed keras.Model whose call() "
        "cannot be walked layer by layer. Fix: build it with the functional API or as a "
        "keras.Sequential (the same layers work unchanged)."
    )


def build_graph(model: keras.Model) -> Graph:
    """Walk ``model`` (Functional, Sequential, nested) into a :class:`Graph`.

    Parameters
    ----------
    model
        A built Keras 3 model.

    Raises
    ------
    UnsupportedLayerError
        If the model (or a nested model) is subclassed or not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    fn = _functional(model, model.name)
    graph = Graph([], [], [], [], [], [], [])
    keys: dict[int, int] = {}
    for kt in fn.inputs:
        keys[id(kt)] = graph.new_key()
        graph.shapes[keys[id(kt)]] = tuple(kt.shape)
        graph.inputs.append(keys[id(kt)])
        graph.input_shapes.append(tuple(kt.shape[1:]))
        graph.input_dtypes.append(str(kt.dtype))
        graph.input_names.append(keras_adapter.tensor_name(kt))
    counts: dict[int, int] = {}
    _walk(fn, keys, "", graph, counts)
    graph.outputs = [keys[id(kt)] for kt in fn.outputs]
    graph.output_names = [keras_adapter.tensor_name(kt) for kt in fn.outputs]
    return graph


def _walk(fn, keys: dict[int, int], prefix: str, graph: Graph, counts: dict[int, int]) -> None:
    for node, inputs, outputs in keras_adapter.nodes_in_order(fn):
        op = node.operation
        in_keys = [keys[id(kt)] for kt in inputs]
        if isinstance(op, keras.Model):
            inner = _functional(op, prefix + op.name)
            for kt, k in zip(inner.inputs, in_keys):
                keys[id(kt)] = k
            _walk(inner, keys, prefix + op.name + "/", graph, counts)
            for kt_outer, kt_inner in zip(outputs, inner.outputs):
                keys[id(kt_outer)] = keys[id(kt_inner)]
            continue
        out_keys = []
        for kt in outputs:
            keys[id(kt)] = graph.new_key()
            graph.shapes[keys[id(kt)]] = tuple(kt.shape)
            out_keys.append(keys[id(kt)])
        n = counts.get(id(op), 0)
        counts[id(op)] = n + 1
        name = prefix + op.name + (f":{n}" if n else "")
        for kt, k in zip(outputs, out_keys):
            if keras_adapter.mask_of(kt) is not None:
                graph.masked.add(k)
        graph.nodes.append(Node(name, op, in_keys, out_keys, keras_adapter.node_call(node),
                                roles=keras_adapter.input_roles(node),
                                options=keras_adapter.static_kwargs(node)))
