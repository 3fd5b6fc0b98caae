"""What tf_lrp knows about Keras layers and operations without weights.

Every such layer gets a **fixed handling** (:func:`handling`) unless a composite maps a rule to
its class:

* ``PASS``: relevance passes unchanged. Activations (ReLU, GELU, swish, ... as layers, as the
  activation of a Dense/Conv, or as ``keras.ops`` nodes) and elementwise affine or scale layers
  (Rescaling, Normalization, LayerScale, a BatchNormalization that cannot be folded).
* ``ROUTE``: relevance follows the ordinary gradient: the winner of max pooling, reshapes,
  transposes, slices, splits, gathers (``take``), ``broadcast_to``, ``where``, casts,
  concatenation, padding and cropping, dropout and noise layers.
* ``PROPORTIONAL``: LRP-0 in proportion to the inputs: average pooling, ``Add``, ``Subtract``,
  ``Average``, ``x + y``, ``x - y``, ``ops.mean``, a product with a constant, an
  ``einsum``/``matmul`` with a constant or weight operand (a linear map).
* ``PRODUCT``: a product of tensors (``Multiply``, ``x * y``): a gate (a factor whose values are
  known to lie in [0, 1]: a sigmoid, hard sigmoid or softmax) gets no relevance and the other
  factors share all of it (Arras et al. 2017, "signal-take-all"); without a gate the factors
  share it uniformly (AttnLRP, Achtibat et al. 2024, Prop. 3.2).
* ``NONE``: operations that compute masks (``NotEqual``, ``LogicalOr``, ... as Keras records
  them for ``Embedding(mask_zero=True)``): their boolean outputs carry no relevance.
* ``NORMALIZATION``: LayerNormalization, GroupNormalization, UnitNormalization,
  RMSNormalization: the epsilon rule
  on the layer with its normalizing scale held constant (AttnLRP, Prop. 3.4).

It also runs the static **value-range analysis** (:func:`output_range`): which tensors are known
to be non-negative (their ``x-`` terms vanish) and which are gates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers as kl

from tf_lrp import keras_adapter

PASS = "pass"
ROUTE = "route"
PROPORTIONAL = "proportional"
PRODUCT = "product"
NORMALIZATION = "normalization"
NONE = "none"

#: operations that compute masks (comparisons, logical ops): their outputs carry no relevance

_op = keras_adapter.op_classes
_app = keras_adapter.application_layer_classes

#: operations that compute masks (comparisons, logical operations) or read only their input's
#: shape (``zeros_like``): no relevance reaches them
MASKING = _op("NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "LogicalAnd",
              "LogicalOr", "LogicalNot", "LogicalXor", "Any", "All", "Isnan", "Isfinite",
              # outputs that depend on the input's shape only, or are integer positions
              "ZerosLike", "OnesLike", "FullLike", "Shape", "Argmax", "Argmin", "Argsort", "OneHot")

_ACTIVATION_LAYERS = (kl.ReLU, kl.LeakyReLU, kl.Activation, kl.ELU, kl.PReLU, kl.Softmax)
_ACTIVATION_OPS = _op("Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu",
                      "Tanh", "Elu", "Selu", "Softplus", "Softsign", "LeakyRelu", "Mish",
                      "Softmax", "Celu", "Glu", "SparsePlus", "Squareplus", "Exp",
                      "HardShrink", "SoftShrink", "TanhShrink", "SparseSigmoid",
                      # the value passes unchanged (the gradient is cut: not relevance's concern)
                      "StopGradient",
                      # elementwise with constant bounds, like relu6
                      "Clip")
#: elementwise affine or scale layers: relevance passes unchanged
ELEMENTWISE = (kl.Rescaling, kl.Normalization, kl.BatchNormalization, *_app("LayerScale"))
_DROPOUT = (kl.Dropout, kl.SpatialDropout1D, kl.SpatialDropout2D, kl.SpatialDropout3D,
            kl.GaussianNoise, kl.GaussianDropout, kl.AlphaDropout, kl.ActivityRegularization,
            kl.Identity, *_app("StochasticDepth"))
_MAX_POOLING = (
    kl.MaxPooling1D, kl.MaxPooling2D, kl.MaxPooling3D,
    kl.GlobalMaxPooling1D, kl.GlobalMaxPooling2D, kl.GlobalMaxPooling3D,
)
_PADDING = (kl.ZeroPadding1D, kl.ZeroPadding2D, kl.ZeroPadding3D)
_RESHAPING = (
    kl.Flatten, kl.Reshape, kl.Permute, kl.RepeatVector, kl.Concatenate,
    kl.Cropping1D, kl.Cropping2D, kl.Cropping3D, *_PADDING,
    *_op("Reshape", "Transpose", "Squeeze", "ExpandDims", "Concatenate", "GetItem", "Stack",
         "Tile", "Repeat", "Cast", "MoveAxis", "Moveaxis", "SwapAxes", "Swapaxes", "Pad", "Split", "Slice", "Unstack",
         "BroadcastTo", "Where", "Take", "TakeAlongAxis", "Roll", "Flip", "Tril", "Triu",
         "ConvertToTensor", "Identity"),
    keras_adapter.ReshapeKeepingSizes,
)
_MAXIMUM = (kl.Maximum, kl.Minimum, *_op("Maximum", "Minimum", "Max", "Min"))
_AVERAGING = (
    kl.AveragePooling1D, kl.AveragePooling2D, kl.AveragePooling3D,
    kl.GlobalAveragePooling1D, kl.GlobalAveragePooling2D, kl.GlobalAveragePooling3D,
    kl.Average, *_op("Mean", "Average"),
)
_ADD_OPS, _SUBTRACT_OPS = _op("Add"), _op("Subtract")  # x + y; with one tensor, x + c
_SUMS = (kl.Add, *_ADD_OPS, *_app("CustomScaleLayer"))
_DIFFERENCES = (kl.Subtract, *_SUBTRACT_OPS)
_SCALINGS = _op("Multiply", "TrueDivide", "Divide", "Negative")  # with one tensor: x * c, x / c
#: products with a constant or weight operand (one tensor: a linear map, LRP-0); with two
#: tensors they are bilinear (:mod:`tf_lrp.structure` marks them as attention parts)
_LINEAR_OPS = _op("Einsum", "Matmul", "Dot", "Tensordot")
#: convolutions written as ops with the kernel a weight: linear maps of the one tensor (LRP-0)
_CONV_OPS = _op("Conv", "DepthwiseConv", "ConvTranspose", "SeparableConv")
_PRODUCTS = (kl.Multiply, *_op("Multiply"))
#: resampling: a copy (nearest) routes relevance; an interpolation is a linear map with
#: non-negative weights and no bias (LRP-0)
_UPSAMPLING = (kl.UpSampling1D, kl.UpSampling2D, kl.UpSampling3D, kl.Resizing, *_op("Resize"))
_NORMALIZATIONS = (kl.LayerNormalization, kl.GroupNormalization, kl.UnitNormalization,
                   *([kl.RMSNormalization] if hasattr(kl, "RMSNormalization") else []))

_FIXED: list[tuple[tuple[type, ...], str]] = [
    (_ACTIVATION_LAYERS + _ACTIVATION_OPS + ELEMENTWISE, PASS),
    (_DROPOUT + _MAX_POOLING + _RESHAPING + _MAXIMUM + (kl.InputLayer,), ROUTE),
    (_AVERAGING + _SUMS + _DIFFERENCES + _op("Sum", "Negative", "Cumsum"), PROPORTIONAL),
    (_NORMALIZATIONS, NORMALIZATION),
    (MASKING, NONE),
]


#: operations the literature gives no LRP rule for, with the reason tf_lrp refuses them
NO_RULE: list[tuple[tuple[type, ...], str]] = [
    (_op("TopK", "Sort"),
     "selects by rank (mixture-of-experts routing, top-k): the LRP literature gives no rule for "
     "the selection, so tf_lrp refuses it rather than guess"),
    (_op("FFT", "FFT2", "FFT3", "RFFT", "IRFFT", "IFFT2", "STFT", "ISTFT"),
     "is a Fourier transform (FNet-style token mixing): the LRP literature gives no rule for "
     "complex-valued mixing, so tf_lrp refuses it rather than guess"),
]


def no_rule_reason(layer) -> str | None:
    """Why the literature has no rule for ``layer`` (``None``: it is not one of those)."""
    for classes, reason in NO_RULE:
        if classes and isinstance(layer, classes):
            return reason
    return None


def handling(layer, n_inputs: int = 1) -> str | None:
    """The fixed handling of a layer or operation without weights, or ``None`` if unknown.

    Parameters
    ----------
    layer
        The Keras layer or operation.
    n_inputs
        How many tensors the node reads: a product with one tensor (``x * 0.5``, ``x / 255``)
        is a scaling (``PROPORTIONAL``); with several, a ``PRODUCT``.
    """
    if isinstance(layer, _SCALINGS + _LINEAR_OPS + _CONV_OPS) and n_inputs == 1:
        return PROPORTIONAL
    if isinstance(layer, _PRODUCTS):
        return PRODUCT
    if isinstance(layer, _UPSAMPLING):
        return ROUTE if getattr(layer, "interpolation", "nearest") == "nearest" else PROPORTIONAL
    for classes, kind in _FIXED:
        if isinstance(layer, classes):
            return kind
    return None


def is_elementwise_op(layer, n_inputs: int) -> bool:
    """Whether ``layer`` is ``x + c``, ``x - c``, ``x * c``, ``x / c`` or ``-x`` on one tensor
    (``c`` a constant broadcast along ``x``)."""
    return n_inputs == 1 and isinstance(layer, _SCALINGS + _ADD_OPS + _SUBTRACT_OPS)


def is_linear_op(layer) -> bool:
    """Whether ``layer`` is an ``einsum``/``matmul``/``dot`` operation (a product with weights
    when one operand is a constant or variable)."""
    return isinstance(layer, _LINEAR_OPS)


def is_elementwise(layer) -> bool:
    """Whether ``layer`` is an elementwise affine or scale layer (relevance passes it)."""
    return isinstance(layer, ELEMENTWISE)


# ---------------------------------------------------------------------------------------------
# Activations


def activation_name(fn) -> str | None:
    """The registered name of an activation function (``"relu"``, ...) or ``None``."""
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # custom callables
        return getattr(fn, "__name__", None)
    return name if isinstance(name, str) else getattr(fn, "__name__", None)


def is_softmax(layer_or_fn) -> bool:
    """Whether a layer (``Softmax``, ``Activation("softmax")``) or function is a softmax."""
    if isinstance(layer_or_fn, kl.Softmax):
        return True
    fn = layer_or_fn.activation if isinstance(layer_or_fn, kl.Activation) else layer_or_fn
    return activation_name(fn) == "softmax"


#: elementwise activations that are monotone (their range follows from the input's)
_MONOTONE = {"relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
             "softsign", "leaky_relu", "exponential", "linear", "hard_tanh", "celu",
             "sparse_plus", "squareplus", "log_sigmoid", "sparse_sigmoid", "hard_shrink",
             "soft_shrink", "tanh_shrink"}
#: activations with f(0) = 0 that zero every negative input
_ZEROING = {"relu", "relu6"}
#: activations with f(0) = 0
_ZERO_AT_ZERO = _ZEROING | {"tanh", "elu", "selu", "leaky_relu", "linear", "silu", "swish",
                            "gelu", "hard_silu", "hard_swish", "mish", "softsign", "hard_tanh",
                            "celu", "hard_shrink", "soft_shrink", "tanh_shrink"}
_OP_NAMES = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "HardSigmoid": "hard_sigmoid",
             "Tanh": "tanh", "Elu": "elu", "Selu": "selu", "Softplus": "softplus",
             "Softsign": "softsign", "LeakyRelu": "leaky_relu", "Silu": "silu",
             "HardSilu": "hard_silu", "Gelu": "gelu", "Mish": "mish", "Exp": "exponential",
             "Celu": "celu", "SparsePlus": "sparse_plus", "Squareplus": "squareplus",
             "HardShrink": "hard_shrink", "SoftShrink": "soft_shrink",
             "TanhShrink": "tanh_shrink", "SparseSigmoid": "sparse_sigmoid"}


def _function_name(layer) -> str | None:
    """The activation a node computes, by name (``None`` if it is not an activation)."""
    if isinstance(layer, kl.ReLU):
        slope, threshold = float(layer.negative_slope or 0.0), float(layer.threshold or 0.0)
        if slope == 0.0 and threshold >= 0.0:
            return "relu"
        return "leaky_relu" if threshold == 0.0 else None
    if isinstance(layer, (kl.LeakyReLU, kl.PReLU)):
        return "leaky_relu"
    if isinstance(layer, kl.ELU):
        return "elu"
    if isinstance(layer, kl.Activation):
        return activation_name(layer.activation)
    if isinstance(layer, _ACTIVATION_OPS):
        return _OP_NAMES.get(type(layer).__name__)
    if callable(layer) and not isinstance(layer, (kl.Layer, keras.Operation)):
        return activation_name(layer)  # a split-off activation function
    return None


def zeroes_negatives(layer) -> bool:
    """Whether an activation maps every input <= 0 to 0 (ReLU, ReLU6)."""
    return _function_name(layer) in _ZEROING


def keeps_zero(layer) -> bool:
    """Whether an activation maps 0 to 0 (so its output is 0 where its input is)."""
    return _function_name(layer) in _ZERO_AT_ZERO


# ---------------------------------------------------------------------------------------------
# Value ranges

Range = tuple[float, float]
UNKNOWN: Range = (-math.inf, math.inf)


def _hull(ranges: Sequence[Range]) -> Range:
    return (min(r[0] for r in ranges), max(r[1] for r in ranges))


def _product(a: Range, b: Range) -> Range:
    if a[0] >= 0 and b[0] >= 0:
        return (a[0] * b[0], a[1] * b[1])
    corners = [x * y for x in a for y in b]
    return UNKNOWN if any(math.isnan(c) or math.isinf(c) for c in corners) else \
        (min(corners), max(corners))


def _monotone(layer, n_inputs: int) -> bool:
    if n_inputs != 1:
        return False
    if isinstance(layer, ELEMENTWISE + _SCALINGS + _ADD_OPS + _SUBTRACT_OPS):
        return True  # one tensor: x * c, x + c, ...
    return _function_name(layer) in _MONOTONE


def _evaluate(call: Callable[[list], list], r: Range, shape: tuple) -> Range:
    """The range of an elementwise monotone map: its values at both ends of ``r``."""
    dims = [1] + [d if d is not None else 1 for d in shape[1:]]
    try:
        ends = [np.asarray(call([tf.fill(dims, tf.constant(v, tf.float32))])[0], np.float64)
                for v in r]
    except Exception:  # a layer that cannot run on this probe: nothing is known
        return UNKNOWN
    if any(np.isnan(e).any() for e in ends):
        return UNKNOWN
    both = np.stack(ends)
    return (float(both.min()), float(both.max()))


def output_range(layer, kind: str | None, call: Callable[[list], list], ins: Sequence[Range],
                 shape: tuple) -> Range:
    """The interval the output of a node without weights lies in, from its inputs' intervals.

    Parameters
    ----------
    layer
        The node's layer, operation or (split-off) activation function.
    kind
        The node's fixed handling (:func:`handling`), ``None`` if it has none.
    call
        The node's operation; elementwise monotone maps are evaluated at both ends.
    ins
        The intervals of the node's inputs.
    shape
        The shape of the node's (first) input.
    """
    if is_softmax(layer) or isinstance(layer, _op("Softmax")):
        return (0.0, 1.0)
    if _monotone(layer, len(ins)):
        return _evaluate(call, ins[0], shape)
    if kind == PRODUCT:
        out = ins[0]
        for r in ins[1:]:
            out = _product(out, r)
        return out
    if isinstance(layer, _SUMS) and not isinstance(layer, _app("CustomScaleLayer")):
        return (sum(r[0] for r in ins), sum(r[1] for r in ins))
    if isinstance(layer, _DIFFERENCES) and len(ins) == 2:
        return (ins[0][0] - ins[1][1], ins[0][1] - ins[1][0])
    if isinstance(layer, _PADDING):
        return _hull([*ins, (0.0, 0.0)])
    if isinstance(layer, _DROPOUT + _MAX_POOLING + _RESHAPING + _MAXIMUM + _AVERAGING):
        return _hull(ins)
    return UNKNOWN


def is_gate(r: Range) -> bool:
    """Whether a tensor with values in ``r`` is a gate (all values in [0, 1])."""
    return r[0] >= 0.0 and r[1] <= 1.0
