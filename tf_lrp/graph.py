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

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import tensorflow as tf

from tf_lrp import flatten, keras_adapter
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
    #: why the node's custom layer could not be flattened (:mod:`tf_lrp.flatten`)
    refusal: str | None = None
    #: the node's output does not depend on its inputs' values (no relevance reaches them)
    constant: bool = False
    #: no relevance reaches the node's outputs (they only feed masks and held factors)
    inert: bool = False


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
    #: a custom layer could not be flattened while some input sizes were unknown
    #: (:class:`tf_lrp.base.BaseAnalyzer` then builds the graph per input shape)
    needs_shapes: bool = False
    #: the batch size the graph was built for (``None``: any)
    batch: int | None = None
    #: node names given so far (they are unique)
    taken: set[str] = field(default_factory=set, repr=False)
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


def build_graph(model: keras.Model, input_shapes: list[tuple] | None = None,
                keep: Callable[[object, str], bool] | None = None,
                batch: int | None = None) -> Graph:
    """Walk ``model`` (Functional, Sequential, nested; custom layers flattened) into a
    :class:`Graph`.

    Parameters
    ----------
    model
        A built Keras 3 model.
    input_shapes
        Sizes of the model's inputs without the batch axis, where the model leaves some open
        (a sequence length): the model is then called once on symbolic inputs of these sizes,
        and every layer is walked as called on them. ``None``: the model's own graph.
    keep
        ``keep(layer, node_name)``: whether a custom layer stays one node instead of being
        flattened (a composite maps a rule to it by class or name).
    batch
        With ``input_shapes``: the batch size too (for custom layers that tile a class token to
        the batch); the graph then runs on batches of that size only.

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
    inputs, outputs = list(fn.inputs), list(fn.outputs)
    names = [keras_adapter.tensor_name(kt) for kt in inputs]
    out_names = [keras_adapter.tensor_name(kt) for kt in outputs]
    graph.batch = batch
    if input_shapes is not None:
        call = keras_adapter.functional_node(fn)
        done = flatten.flatten(fn, call, [(batch, *s) for s in input_shapes], own_call=True,
                               keep=keep)
        if done.reason:
            raise UnsupportedLayerError(f"model {model.name!r} could not be called on inputs of "
                                        f"shape {input_shapes}: {done.reason}")
        inputs, outputs, triples, paths = done.inputs, done.outputs, done.nodes, done.paths
        # sizes that symbolic shapes lose (an EinsumDense declares ``None`` for the sequence)
        # are learnt by running every node once on a small batch of zeros
        values = {}
    else:
        triples = list(keras_adapter.nodes_in_order(fn))
        values, paths = None, {}
    for kt, name in zip(inputs, names):
        keys[id(kt)] = graph.new_key()
        graph.shapes[keys[id(kt)]] = tuple(kt.shape)
        graph.inputs.append(keys[id(kt)])
        graph.input_shapes.append(tuple(kt.shape[1:]))
        graph.input_dtypes.append(str(kt.dtype))
        graph.input_names.append(name)
        if values is not None:
            values[keys[id(kt)]] = tf.zeros((batch or 2, *kt.shape[1:]), kt.dtype)
    _walk(triples, keys, "", graph, {}, {}, values, keep, paths)
    graph.outputs = [keys[id(kt)] for kt in outputs]
    graph.output_names = out_names
    return graph


_IDENTITIES = keras_adapter.op_classes("ConvertToTensor", "Cast", "Identity")


def _op_name(op, prefix: str, counts: dict, used: dict, taken: set) -> str:
    """A node name unique in the graph: a layer's own name (``:i`` for its i-th further call);
    a raw operation's Keras name at the top level (as before flattening existed) and, inside a
    flattened layer, its class in snake case numbered within the block (``norm/multiply``,
    ``norm/multiply_1``), stable across builds unlike Keras's global counters."""
    if isinstance(op, keras.layers.Layer) or not prefix:
        n = counts.get(id(op), 0)
        counts[id(op)] = n + 1
        name = prefix + op.name + (f":{n}" if n else "")
    else:
        base = prefix + re.sub(r"(?<!^)(?=[A-Z])", "_", type(op).__name__).lower()
        n = used.get(base, 0)
        used[base] = n + 1
        name = base + (f"_{n}" if n else "")
    unique, i = name, 1
    while unique in taken:  # two sublayers of one block may share a name
        i += 1
        unique = f"{name}#{i}"
    taken.add(unique)
    return unique


def _walk(triples, keys: dict[int, int], prefix: str, graph: Graph, counts: dict[int, int],
          used: dict[str, int], values: dict | None = None,
          keep: Callable[[object, str], bool] | None = None, paths: dict | None = None
          ) -> None:
    """Add the nodes of ``triples`` to ``graph``, flattening custom layers and nested models.

    ``values`` (a graph built for known input sizes): every tensor's value on a batch of zeros,
    whose sizes replace the unknown ones of the symbolic shapes a custom layer is flattened
    with.
    """
    outer = prefix
    for node, inputs, outputs in triples:
        op = node.operation
        in_keys = [keys[id(kt)] for kt in inputs]
        inlined = (paths or {}).get(id(node))  # the custom sublayers it was recorded inside
        prefix = outer + inlined + "/" if inlined else outer
        sizes = None if values is None or not all(k in values for k in in_keys) else \
            [(graph.batch, *values[k].shape[1:]) for k in in_keys]
        if isinstance(op, keras.Model):
            inner_triples, inner_in, inner_out, inner_paths = _model_parts(op, node, prefix,
                                                                           sizes, keep)
            for kt, k in zip(inner_in, in_keys):
                keys[id(kt)] = k
            _walk(inner_triples, keys, prefix + op.name + "/", graph, counts, {}, values, keep,
                  inner_paths)
            for kt_outer, kt_inner in zip(outputs, inner_out):
                keys[id(kt_outer)] = keys[id(kt_inner)]
            continue
        if isinstance(op, _IDENTITIES) and len(inputs) == 1 and len(outputs) == 1 and \
                inputs[0].dtype == outputs[0].dtype and tuple(inputs[0].shape) == \
                tuple(outputs[0].shape):
            keys[id(outputs[0])] = in_keys[0]  # a no-op (Functional.call's ConvertToTensor)
            continue
        name = _op_name(op, prefix, counts, used, graph.taken)
        if flatten.flattens(op, node) and not (keep and keep(op, name)):
            done = flatten.flatten(op, node, sizes, keep=_under(keep, name + "/"))
            if done.reason is None and not done.constant:
                for kt, k in zip(done.inputs, in_keys):
                    keys[id(kt)] = k
                _walk(done.nodes, keys, name + "/", graph, {}, {}, values, keep, done.paths)
                for kt_outer, kt_inner in zip(outputs, done.outputs):
                    keys[id(kt_outer)] = keys[id(kt_inner)]
                continue
            graph.needs_shapes = graph.needs_shapes or done.shape_dependent
        else:
            done = None
        out_keys = []
        for kt in outputs:
            keys[id(kt)] = graph.new_key()
            graph.shapes[keys[id(kt)]] = tuple(kt.shape)
            out_keys.append(keys[id(kt)])
        for kt, k in zip(outputs, out_keys):
            if keras_adapter.mask_of(kt) is not None:
                graph.masked.add(k)
        new = Node(name, op, in_keys, out_keys, keras_adapter.node_call(node),
                   roles=keras_adapter.input_roles(node),
                   options=keras_adapter.static_kwargs(node),
                   refusal=done.reason if done else None, constant=bool(done and done.constant))
        graph.nodes.append(new)
        if values is not None and new.refusal is None and all(k in values for k in in_keys):
            try:
                values.update(zip(out_keys, new.call([values[k] for k in in_keys])))
            except Exception:  # it replays only for the batch size it was recorded with
                graph.needs_shapes = True


def _under(keep: Callable[[object, str], bool] | None, prefix: str):
    """``keep`` for the sublayers of a layer flattened at ``prefix`` (paths become names)."""
    return None if keep is None else (lambda layer, path: keep(layer, prefix + path))


def _model_parts(model: keras.Model, node, prefix: str, sizes: list[tuple] | None,
                 keep: Callable[[object, str], bool] | None):
    """The parts of a nested model called at ``node``: its own graph, or, where the node's
    inputs have other ``sizes`` than the model's inputs (a graph built for known sizes), the
    model called again on inputs of those sizes (its custom layers inlined as they are called).
    Returns ``(triples, inputs, outputs, paths)``."""
    fn = _functional(model, prefix + model.name)
    own = [tuple(kt.shape) for kt in fn.inputs]
    wanted = sizes or [tuple(kt.shape) for kt in node.input_tensors]
    if own == wanted or len(own) != len(wanted):
        return list(keras_adapter.nodes_in_order(fn)), list(fn.inputs), list(fn.outputs), {}
    done = flatten.flatten(fn, keras_adapter.functional_node(fn), wanted,
                           keep=_under(keep, prefix + model.name + "/"))
    if done.reason:
        raise UnsupportedLayerError(f"model {prefix + model.name!r} could not be called on "
                                    f"inputs of shape {wanted}: {done.reason}")
    return done.nodes, done.inputs, done.outputs, done.paths
