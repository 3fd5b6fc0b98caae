"""The one place where tf_lrp touches Keras private internals.

Keras 3 has no public API for walking a functional graph node by node, for re-calling one
node's operation with its non-tensor arguments, or for rebuilding a legacy ``.h5`` model from a
repaired config. Everything of that kind lives here as small functions, so that a Keras upgrade
that moves them is repaired in one module. :mod:`tf_lrp.graph` and :mod:`tf_lrp.io` call these.
"""

from __future__ import annotations

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


def input_roles(node) -> list[str]:
    """The call argument each input KerasTensor of ``node`` is passed as (``"query"``,
    ``"value"``, ``"initial_state"``, ``"mask"`` ...), in the order of its input tensors.

    Positional arguments are named by the operation's ``call`` signature (``"arg<i>"`` where it
    has none); a list argument names every tensor in it.
    """
    import inspect

    op = node.operation
    try:
        params = [p.name for p in inspect.signature(op.call).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
    except (TypeError, ValueError, AttributeError):
        params = []
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
    """The call keyword arguments of ``node`` that are not tensors (``use_causal_mask=True``)."""
    from keras.src.backend import KerasTensor

    return {k: v for k, v in node.arguments.kwargs.items()
            if not any(isinstance(t, KerasTensor) for t in keras.tree.flatten(v))}


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
    ``keras.src.ops.nn`` and ``keras.src.ops.core``. Names a Keras version lacks are skipped.
    """
    from keras.src.ops import core, nn, numpy

    found = []
    for name in names:
        for module in (numpy, nn, core):
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
