"""The one place where tf_lrp touches Keras private internals.

Keras 3 has no public API for walking a functional graph node by node, for re-calling one
node's operation with its non-tensor arguments, or for rebuilding a legacy ``.h5`` model from a
repaired config. Everything of that kind lives here as small functions, so that a Keras upgrade
that moves them is repaired in one module. :mod:`tf_lrp.graph` and :mod:`tf_lrp.io` call these.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import keras


# ------------------------------------------------------------------ functional graphs
def functional_of(model: keras.Model):
    """The functional graph of ``model``: itself, a Sequential's functional twin, or ``None``.

    ``None`` means the model has no graph to walk (an unbuilt Sequential, a subclassed model).
    """
    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def nodes_in_order(fn) -> Iterator[tuple[Any, list, list]]:
    """``(node, input KerasTensors, output KerasTensors)`` of every operation call, topologically.

    Input placeholders are skipped. Depth 0 holds the outputs, so descending depth is a
    topological order.
    """
    for depth in sorted(fn._nodes_by_depth, reverse=True):
        for node in fn._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            yield node, list(node.input_tensors), list(node.output_tensors)


def node_call(node) -> Callable[[list], list]:
    """Re-run ``node``'s operation on new input tensors, in inference mode.

    Non-tensor arguments of the original call (``axis=...``) are kept; ``training=False`` is
    passed to layers whose ``call`` takes it.
    """
    op = node.operation
    kts = list(node.input_tensors)
    takes_training = bool(getattr(op, "_call_has_training_arg", False))

    def call(values: list) -> list:
        args, kwargs = node.arguments.fill_in({id(kt): v for kt, v in zip(kts, values)})
        if takes_training:
            kwargs = {**kwargs, "training": False}
        return keras.tree.flatten(op(*args, **kwargs))

    return call


def _unbroadcast_none(shape) -> tuple | None:
    """``shape`` with every unknown (``None``) size replaced by 1, or ``None`` if it has none."""
    if not isinstance(shape, (list, tuple)) or not any(d is None for d in shape):
        return None
    return tuple(1 if d is None else d for d in shape)


class ReshapeKeepingSizes(keras.Operation):
    """``reshape(x, shape)`` where ``shape`` has several unknown sizes: each unknown size at
    position ``i`` is ``x``'s size at ``i``, read when the operation runs (the leading axes
    that ``ops.reshape(x, (batch, length, heads, dim))`` keeps)."""

    def __init__(self, newshape):
        super().__init__()
        self.newshape = tuple(newshape)

    def call(self, x):
        import tensorflow as tf

        shape = [tf.shape(x)[i] if d is None else d for i, d in enumerate(self.newshape)]
        return tf.reshape(x, tf.stack(shape))

    def compute_output_spec(self, x):
        return keras.KerasTensor(self.newshape, dtype=x.dtype)


@contextlib.contextmanager
def _free_batch_ops():
    """Let ``keras.ops.broadcast_to`` and ``keras.ops.reshape`` take shapes with unknown
    (``None``) sizes.

    Layers compute shapes with ``ops.shape(x)[0]``, which is ``None`` for a free batch axis on
    symbolic tensors; ``ops.broadcast_to(mask, (None, L, L))`` then fails. Inside this scope
    such a call becomes ``x + zeros(shape with None -> 1)`` (``logical_or`` with ``False`` for
    booleans): the same values wherever the result is later broadcast against the batch, and
    an operation that replays on any batch size. ``ops.reshape(x, ops.shape(y))`` with one
    unknown size reshapes to ``-1`` there; with several, to the sizes ``x`` has on those axes
    (:class:`ReshapeKeepingSizes`). ``EinsumDense`` declares the sizes its input knows.
    ``tf.gather`` on a symbolic tensor (KerasHub's TensorFlow branch of DeBERTaV3) becomes
    the ``keras.ops.take`` / ``take_along_axis`` it equals.
    """
    from keras import ops

    original, original_reshape = ops.broadcast_to, ops.reshape

    def reshape(x, newshape):
        unknown = sum(d is None for d in newshape) if isinstance(newshape, (list, tuple)) else 0
        if unknown == 1 and -1 not in newshape:
            newshape = tuple(-1 if d is None else d for d in newshape)
        elif unknown and isinstance(x, keras.KerasTensor) and all(
                i < len(x.shape) for i, d in enumerate(newshape) if d is None):
            return ReshapeKeepingSizes(newshape)(x)
        return original_reshape(x, newshape)

    def broadcast_to(x, shape):
        ones = _unbroadcast_none(shape)
        if ones is None:
            return original(x, shape)
        x = ops.convert_to_tensor(x) if not isinstance(x, keras.KerasTensor) else x
        if x.dtype == "bool":
            return ops.logical_or(x, ops.zeros(ones, "bool"))
        return ops.add(x, ops.zeros(ones, x.dtype))

    dense = keras.layers.EinsumDense
    original_spec = dense.compute_output_shape

    def einsum_shape(self, input_shape):
        # EinsumDense(output_shape=(None, heads, dim)) declares the sequence unknown even where
        # the input knows it; layers then compute ops.arange(None)
        shape = list(original_spec(self, input_shape))
        inputs, rest = self.equation.split(",")
        out = rest.split("->")[1]
        for i, letter in enumerate(out):
            if i < len(shape) and shape[i] is None and letter in inputs and \
                    len(inputs) == len(input_shape):
                shape[i] = input_shape[inputs.index(letter)]
        return tuple(shape)

    # ``self.w * x``: a variable's operators call the backend, which cannot take a symbolic
    # tensor; with one, they call keras.ops instead (the node then reads the live variable)
    from keras.src.backend.common.variables import Variable

    saved = {name: Variable.__dict__[name] for name, _ in _VARIABLE_OPERATORS}

    def operator(name: str, fn: str, reflected: bool):
        original_op = saved[name]

        def apply(self, other):
            if isinstance(other, keras.KerasTensor):
                return getattr(ops, fn)(other, self) if reflected else getattr(ops, fn)(self, other)
            return original_op(self, other)

        return apply

    import tensorflow as tf

    original_gather = tf.gather

    def gather(params, indices, validate_indices=None, axis=None, batch_dims=0, name=None):
        # KerasHub's TensorFlow branches call tf.gather where other backends call
        # keras.ops.take / take_along_axis; on symbolic tensors those compute the same
        if isinstance(params, keras.KerasTensor) or isinstance(indices, keras.KerasTensor):
            axis = batch_dims if axis is None else axis
            rank = len(ops.shape(params))
            if batch_dims == 0:
                return ops.take(params, indices, axis=axis)
            if axis == batch_dims == rank - 1 == len(ops.shape(indices)) - 1:
                return ops.take_along_axis(params, indices, axis=axis)
        return original_gather(params, indices, validate_indices=validate_indices, axis=axis,
                               batch_dims=batch_dims, name=name)

    ops.broadcast_to, ops.reshape, tf.gather = broadcast_to, reshape, gather
    dense.compute_output_shape = einsum_shape
    for name, (fn, reflected) in _VARIABLE_OPERATORS:
        setattr(Variable, name, operator(name, fn, reflected))
    try:
        yield
    finally:
        ops.broadcast_to, ops.reshape, tf.gather = original, original_reshape, original_gather
        dense.compute_output_shape = original_spec
        for name, method in saved.items():
            setattr(Variable, name, method)


_VARIABLE_OPERATORS = [
    (f"__{r}{name}__", (fn, bool(r))) for name, fn in (
        ("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"),
        ("matmul", "matmul"), ("pow", "power")) for r in ("", "r")]


@contextlib.contextmanager
def _inlining(inline, paths: dict, stack: list):
    """While active, a call of a layer for which ``inline(layer, path)`` holds runs its ``call``
    (its parts record nodes) instead of recording one node for the layer; every recorded node
    is tagged in ``paths`` (``id(node) -> "outer/inner"``) with the layers it was inlined from.
    A layer whose body fails this way is recorded whole (its own refusal comes later)."""
    from keras.src.layers.layer import Layer
    from keras.src.ops.operation import Operation

    call, op_symbolic, layer_symbolic = Layer.__call__, Operation.symbolic_call, \
        Layer.symbolic_call

    def layer_call(self, *args, **kwargs):
        if inline is not None and any_symbolic(args, kwargs) and \
                inline(self, "/".join([*stack, self.name])):
            kw = {k: v for k, v in kwargs.items() if k != "training"}
            if getattr(self, "_call_has_training_arg", False):
                kw["training"] = False
            stack.append(self.name)
            try:
                with _generic_output_specs(self):
                    return self.call(*args, **kw)
            except Exception:  # recorded whole below; flattening it alone will say why
                pass
            finally:
                stack.pop()
        before = len(self._inbound_nodes)
        out = call(self, *args, **kwargs)  # a layer records its node at the end of __call__
        if stack and len(self._inbound_nodes) > before:
            paths[id(self._inbound_nodes[-1])] = "/".join(stack)
        return out

    def tagged(original):
        def symbolic(self, *args, **kwargs):
            before = len(self._inbound_nodes)
            out = original(self, *args, **kwargs)
            if stack and len(self._inbound_nodes) > before:
                paths[id(self._inbound_nodes[-1])] = "/".join(stack)
            return out

        return symbolic

    Layer.__call__ = layer_call
    Operation.symbolic_call, Layer.symbolic_call = tagged(op_symbolic), tagged(layer_symbolic)
    try:
        yield
    finally:
        Layer.__call__ = call
        Operation.symbolic_call, Layer.symbolic_call = op_symbolic, layer_symbolic


def any_symbolic(args, kwargs) -> bool:
    """Whether a call's arguments hold a symbolic tensor."""
    return any(isinstance(t, keras.KerasTensor) for t in keras.tree.flatten((args, kwargs)))


def symbolic_call(layer, node, shapes: list[tuple] | None = None, own_call: bool = True,
                  inline=None, paths: dict | None = None):
    """Call ``layer`` on fresh symbolic inputs shaped like ``node``'s, so that its sublayers and
    ``keras.ops`` record nodes of their own.

    Parameters
    ----------
    layer
        The operation of ``node`` (a custom layer, or a model).
    node
        One recorded call of ``layer``; its non-tensor arguments are kept.
    shapes
        The shapes (batch axis included, ``None`` for it) of the fresh inputs; default: those of
        the node's input tensors.
    own_call
        Call ``layer.call`` (its body: sublayers and ops become nodes) rather than ``layer(...)``.
    inline, paths
        ``inline(sublayer, path)``: whether a sublayer called inside is inlined too (its parts
        recorded, see :func:`_inlining`); ``paths`` receives each recorded node's path.

    Returns
    -------
    inputs, outputs
        The fresh input KerasTensors (in the order of the node's input tensors) and the
        flattened list of output KerasTensors.
    """
    kts = list(node.input_tensors)
    shapes = shapes or [tuple(kt.shape) for kt in kts]
    fresh = {id(kt): keras.Input(batch_shape=tuple(s), dtype=kt.dtype)
             for kt, s in zip(kts, shapes)}
    args, kwargs = node.arguments.fill_in(fresh)
    fn = layer.call if own_call else layer
    kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    if getattr(layer, "_call_has_training_arg", False):
        kwargs["training"] = False
    with _free_batch_ops(), _generic_output_specs(layer), \
            _inlining(inline, {} if paths is None else paths, []), keras.name_scope(layer.name):
        outputs = fn(*args, **kwargs)
    return [fresh[id(kt)] for kt in kts], keras.tree.flatten(outputs)


@contextlib.contextmanager
def _generic_output_specs(layer):
    """Give sublayers that override a Keras layer's ``call`` (KerasHub's
    ``CachedMultiHeadAttention(keras.layers.MultiHeadAttention)`` with ``cache=``) the generic
    ``compute_output_spec`` (which traces ``call``), for as long as they are called on symbolic
    tensors here: the inherited one does not take the new arguments. Inside a model they were
    only ever called on the backend's tensors, where the spec is not asked for."""
    patched = []
    for sub in layer._flatten_layers(include_self=False, recursive=True):
        cls = type(sub)
        call_owner = next(c for c in cls.__mro__ if "call" in c.__dict__)
        spec_owner = next(c for c in cls.__mro__ if "compute_output_spec" in c.__dict__)
        if "compute_output_spec" not in sub.__dict__ and \
                not call_owner.__module__.startswith("keras.") and \
                spec_owner.__module__.startswith("keras.") and \
                spec_owner not in (keras.layers.Layer, keras.Operation) and \
                issubclass(call_owner, spec_owner):
            sub.compute_output_spec = types.MethodType(keras.layers.Layer.compute_output_spec,
                                                       sub)
            patched.append(sub)
    try:
        yield
    finally:
        for sub in patched:
            del sub.compute_output_spec


def functional_node(fn):
    """A stand-in for a call of the functional model ``fn`` on its own inputs (for
    :func:`symbolic_call`): ``input_tensors`` and ``arguments`` in the model's input structure."""
    from types import SimpleNamespace

    from keras.src.ops.symbolic_arguments import SymbolicArguments

    return SimpleNamespace(input_tensors=list(fn.inputs),
                           arguments=SymbolicArguments(fn._inputs_struct))


def recorded_nodes(inputs: list, outputs: list) -> list[tuple[Any, list, list]]:
    """``(node, input KerasTensors, output KerasTensors)`` of every operation call that leads
    from ``inputs`` to ``outputs``, in topological order (what :func:`symbolic_call` recorded).

    The recorded nodes are then detached from their operations, so that calling a layer
    symbolically leaves no trace on the model.

    Raises
    ------
    ValueError
        If an output depends on a symbolic tensor that is not one of ``inputs``.
    """
    stop = {id(kt) for kt in inputs}
    order, seen = [], set()

    def node_of(kt):
        history = getattr(kt, "_keras_history", None)
        if history is None or history.operation is None:
            raise ValueError(f"the symbolic tensor {kt.name!r} does not come from the inputs")
        return history.operation._inbound_nodes[history.node_index]

    for out in outputs:  # depth-first, iteratively (deep models have thousands of nodes)
        if id(out) in stop:
            continue
        stack = [(node_of(out), False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for t in reversed(node.input_tensors):
                if id(t) not in stop and id(node_of(t)) not in seen:
                    stack.append((node_of(t), False))
    for node in order:  # detach: the model's own node lists stay as they were
        op = node.operation
        if node in op._inbound_nodes:
            op._inbound_nodes.remove(node)
        for kt in node.input_tensors:
            parent = getattr(kt._keras_history, "operation", None)
            if parent is not None and node in parent._outbound_nodes:
                parent._outbound_nodes.remove(node)
    return [(node, list(node.input_tensors), list(node.outputs)) for node in order]


def _positional_params(op) -> list[str]:
    """The names of ``op.call``'s positional parameters, in order (``[]`` where it has no
    signature to read)."""
    import inspect

    try:
        return [p.name for p in inspect.signature(op.call).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
    except (TypeError, ValueError, AttributeError):
        return []


def input_roles(node) -> list[str]:
    """The call argument each input KerasTensor of ``node`` is passed as (``"query"``,
    ``"value"``, ``"initial_state"``, ``"mask"`` ...), in the order of its input tensors.

    Positional arguments are named by the operation's ``call`` signature (``"arg<i>"`` where it
    has none); a list argument names every tensor in it.
    """
    params = _positional_params(node.operation)
    from keras.src.backend import KerasTensor

    roles = []
    for path, t in keras.tree.flatten_with_path((node.arguments.args, node.arguments.kwargs)):
        if not isinstance(t, KerasTensor):
            continue
        where, key = path[0], path[1]
        if where == 0:
            roles.append(params[key] if key < len(params) else f"arg{key}")
        else:
            roles.append(str(key))
    if len(roles) != len(node.input_tensors):  # an argument structure not seen before
        return ["?"] * len(node.input_tensors)
    return roles


def static_kwargs(node) -> dict:
    """The call arguments of ``node`` that are not symbolic (``use_causal_mask=True``, or a
    constant ``query`` passed positionally), by name: keyword arguments, and positional ones
    named by the operation's ``call`` signature."""
    from keras.src.backend import KerasTensor

    def static(v):
        return not any(isinstance(t, KerasTensor) for t in keras.tree.flatten(v))

    params = _positional_params(node.operation)
    out = {name: v for name, v in zip(params, node.arguments.args) if static(v)}
    out.update({k: v for k, v in node.arguments.kwargs.items() if static(v)})
    return out


def attention_internals(layer) -> dict:
    """The parts of a built ``keras.layers.MultiHeadAttention`` that its ``call`` uses."""
    return {
        "query_dense": layer._query_dense,
        "key_dense": layer._key_dense,
        "value_dense": layer._value_dense,
        "output_dense": layer._output_dense,
        "dot_product_equation": layer._dot_product_equation,
        "combine_equation": layer._combine_equation,
        "inverse_sqrt_key_dim": layer._inverse_sqrt_key_dim,
        "masked_softmax": layer._masked_softmax,
        "softmax_axes": tuple(layer._softmax.axis) if isinstance(layer._softmax.axis, (list, tuple))
        else (layer._softmax.axis,),
        "use_gate": bool(getattr(layer, "_use_gate", False)),
        "sliding_window": getattr(layer, "_sliding_window", None),
    }


def mask_of(x):
    """The Keras mask attached to a tensor (``mask_zero`` embeddings, ``Masking``), or ``None``."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(x)


def set_mask(x, mask) -> None:
    """Attach (``None``: remove) the Keras mask of a tensor, as Keras layers do."""
    from keras.src.backend.common.masking import set_keras_mask

    set_keras_mask(x, mask)


def all_layers(model) -> list:
    """Every layer inside ``model``, nested models' and custom layers' sublayers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


_LOW = ("bfloat16", "float16", "mixed_bfloat16", "mixed_float16")


def low_precision(model) -> bool:
    """Whether a layer of ``model`` computes or stores weights in 16-bit floats."""
    for layer in [model, *all_layers(model)]:
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and policy.name in _LOW:
            return True
    return False


def float32_copy(model):
    """``model`` rebuilt from its config with every 16-bit dtype policy set to ``float32``, and
    its weights copied (cast to float32). Custom classes must be registered, as for loading."""
    import numpy as np

    def to32(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and \
                    obj.get("config", {}).get("name") in _LOW:
                return {**obj, "config": {**obj["config"], "name": "float32"}}
            return {k: ("float32" if k in ("dtype", "compute_dtype") and v in _LOW else to32(v))
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [to32(v) for v in obj]
        return obj

    config = to32(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return copy


def tensor_name(kt) -> str:
    """The name of the layer that produced a symbolic tensor (an input's InputLayer name)."""
    history = getattr(kt, "_keras_history", None)
    op = getattr(history, "operation", None)
    return op.name if op is not None else kt.name


# ------------------------------------------------------------------ operation classes
def op_classes(*names: str) -> tuple[type, ...]:
    """Keras 3 operation classes by name (``"Add"``, ``"Relu"``, ...).

    ``x + y`` on symbolic tensors records a node whose operation is an instance of a private
    class (``keras.src.ops.numpy.Add``); these are looked up in ``keras.src.ops.numpy``,
    ``keras.src.ops.nn``, ``keras.src.ops.core``, ``keras.src.ops.math`` and
    ``keras.src.ops.image``. Names a Keras version lacks are skipped.
    """
    from keras.src.ops import core, image, math, nn, numpy

    found = []
    for name in names:
        for module in (numpy, nn, core, math, image):
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                found.append(cls)
                break
    return tuple(found)


def application_layer_classes(*names: str) -> tuple[type, ...]:
    """Layer classes that ``keras.applications`` defines privately (``CustomScaleLayer``, ...)."""
    import importlib

    found = []
    for module_name in ("inception_resnet_v2", "convnext", "efficientnet_v2", "mobilenet_v3"):
        try:
            module = importlib.import_module(f"keras.src.applications.{module_name}")
        except ImportError:  # pragma: no cover - depends on the Keras version
            continue
        found += [getattr(module, n) for n in names if isinstance(getattr(module, n, None), type)]
    return tuple(dict.fromkeys(found))


def is_keras2_model(obj) -> bool:
    """Whether ``obj`` is a Keras 2 (``tf_keras`` / ``tf.keras`` 2.x) model object."""
    module = type(obj).__module__
    return module.startswith(("tf_keras.", "keras.engine.", "keras.src.engine.")) or any(
        c.__module__.startswith("tf_keras.") for c in type(obj).__mro__
    )


# ------------------------------------------------------------------ legacy .h5 files
def decode_legacy_config(text: str) -> Any:
    """Parse the JSON ``model_config`` of a legacy ``.h5`` file as Keras does (``ValueError``)."""
    from keras.src.legacy.saving import json_utils

    return json_utils.decode(text)


def model_from_legacy_h5(h5, config: dict, custom_objects: dict | None, safe_mode: bool):
    """Rebuild a model from a (repaired) legacy config and load the weights of an open h5 file."""
    from keras.src.legacy.saving import legacy_h5_format, saving_options, saving_utils
    from keras.src.saving import serialization_lib

    with (
        saving_options.keras_option_scope(use_legacy_config=True),
        serialization_lib.SafeModeScope(safe_mode),
    ):
        model = saving_utils.model_from_config(config, custom_objects=custom_objects)
        legacy_h5_format.load_weights_from_hdf5_group(h5.get("model_weights", h5), model)
    return model


def replay_with(model, after: str, insert: Callable) -> keras.Model:
    """A functional model that calls ``model``'s own layers (shared weights) in the same graph,
    with ``insert(tensor)`` applied to the output of the layer named ``after``.

    Raises
    ------
    ValueError
        If ``model`` has no functional graph or no layer ``after`` is called in it.
    """
    fn = functional_of(model)
    if fn is None:
        raise ValueError(f"model {model.name!r} has no functional graph to insert a layer in")
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0])
              for t in fn.inputs]
    mapping = {id(a): b for a, b in zip(fn.inputs, inputs)}
    found = False
    for node, ins, outs in nodes_in_order(fn):
        args, kwargs = node.arguments.fill_in({id(kt): mapping[id(kt)] for kt in ins})
        result = keras.tree.flatten(node.operation(*args, **kwargs))
        if getattr(node.operation, "name", None) == after:
            result, found = [insert(r) for r in result], True
        mapping.update({id(o): r for o, r in zip(outs, result)})
    if not found:
        raise ValueError(f"no layer {after!r} in model {model.name!r}")
    outputs = [mapping[id(o)] for o in fn.outputs]
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def layer_output(model, name: str):
    """The output tensor of layer ``name`` in ``model``'s own graph (a layer shared with
    another model, as after :func:`replay_with`, has one output per model it is called in)."""
    fn = functional_of(model)
    for node, _, outs in nodes_in_order(fn) if fn is not None else ():
        if getattr(node.operation, "name", None) == name:
            return outs[0]
    raise ValueError(f"no layer {name!r} in model {model.name!r}")
