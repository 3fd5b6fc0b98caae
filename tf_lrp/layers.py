"""What tf_lrp knows about Keras layer types.

Two tables live here:

* the **linear part** of every layer with weights (Dense, convolutions, BatchNormalization): a
  function ``apply(x, kernels)`` that computes the layer's pre-activation without bias, the live
  kernels and bias, and how a per-output-channel scale folds into the kernels. Rules modify the
  kernels and call ``apply`` again, so a rule never needs to know the layer type;
* the **fixed handling** of layers without weights (activations pass, pooling and ``Add``
  redistribute in proportion, reshapes route), and which layers keep their input's sign.

Users add their own linear layers with :func:`register_linear`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf
from keras import layers as kl
from keras import ops

Tensor = tf.Tensor


@dataclass
class Linear:
    """The linear part of a layer: ``z = apply(x, kernels) + bias``.

    Parameters
    ----------
    layer
        The Keras layer (kept for names in messages).
    kernels
        Returns the current kernels (read from the live variables when called inside a traced
        function, so a model that keeps training is explained with its current weights).
    bias
        Returns the current bias (broadcastable to ``z``) or ``None``.
    apply
        ``apply(x, kernels) -> z`` without bias; linear in ``x`` for fixed kernels.
    scale_output
        ``scale_output(kernels, s) -> kernels`` multiplies every output channel ``c`` by ``s[c]``
        (used to fold BatchNormalization).
    channel_axis
        The axis of ``z`` that holds output channels (where a bias or a BatchNorm scale acts).
    activation
        The activation the layer applies after ``z``, or ``None`` when it is linear.
    input_axis
        For a layer with one kernel whose ``z`` sums over input channels (Dense, convolutions):
        the kernel axis of the input channels. Then ``apply(u1, k1) + apply(u2, k2)`` equals
        ``apply(concat(u1, u2), concat(k1, k2))`` with the inputs joined on the channel axis
        and the kernels on this one, and a rule with several terms costs one forward and one
        transposed operation instead of one per term. ``None`` (depthwise and separable
        convolutions, BatchNormalization, custom layers by default): terms run one by one.
    """

    layer: keras.layers.Layer
    kernels: Callable[[], list[Tensor]]
    bias: Callable[[], Tensor | None]
    apply: Callable[[Tensor, Sequence[Tensor]], Tensor]
    scale_output: Callable[[list[Tensor], Tensor], list[Tensor]]
    channel_axis: int = -1
    activation: Callable[[Tensor], Tensor] | None = None
    input_axis: int | None = None

    def add_bias(self, z: Tensor, bias: Tensor | None) -> Tensor:
        """Add a per-channel ``bias`` vector to ``z`` along :attr:`channel_axis`."""
        if bias is None:
            return z
        if self.channel_axis in (-1, len(z.shape) - 1):
            return z + bias
        shape = [1] * len(z.shape)
        shape[self.channel_axis] = -1
        return z + tf.reshape(bias, shape)


def _is_linear_activation(fn) -> bool:
    return fn is None or fn is keras.activations.linear


def _activation(layer) -> Callable[[Tensor], Tensor] | None:
    fn = getattr(layer, "activation", None)
    return None if _is_linear_activation(fn) else fn


def _scale_last(kernels: list[Tensor], s: Tensor) -> list[Tensor]:
    """Scale the output channels of a kernel whose last axis is the output channel."""
    return [*kernels[:-1], kernels[-1] * s]


def _channel_axis(layer) -> int:
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def _bias_getter(layer) -> Callable[[], Tensor | None]:
    def bias():
        b = getattr(layer, "bias", None)
        return None if b is None else tf.convert_to_tensor(b)

    return bias


def _kernel_layer(layer, apply, scale_output=_scale_last, kernels=("kernel",),
                  input_axis: int | None = None) -> Linear:
    """The :class:`Linear` of a Keras layer whose kernels are attributes named ``kernels``."""
    return Linear(
        layer=layer,
        kernels=lambda: [tf.convert_to_tensor(getattr(layer, name)) for name in kernels],
        bias=_bias_getter(layer),
        apply=apply,
        scale_output=scale_output,
        channel_axis=_channel_axis(layer),
        activation=_activation(layer),
        input_axis=input_axis,
    )


def _dense(layer: kl.Dense) -> Linear:
    return _kernel_layer(layer, lambda x, k: ops.matmul(x, k[0]), input_axis=0)


def _conv(layer) -> Linear:
    padding = layer.padding

    def apply(x, k):
        if padding == "causal":  # Conv1D: left-pad, then a valid convolution (as Conv1D.call does)
            left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
            pads = (
                [[0, 0], [left, 0], [0, 0]]
                if _channel_axis(layer) == -1
                else [[0, 0], [0, 0], [left, 0]]
            )
            x = ops.pad(x, pads)
        return ops.conv(
            x,
            k[0],
            strides=list(layer.strides),
            padding="valid" if padding == "causal" else padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    return _kernel_layer(layer, apply, input_axis=-2)  # kernel (*window, in, out)


def _conv_transpose(layer) -> Linear:
    def apply(x, k):
        return ops.conv_transpose(
            x,
            k[0],
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    def scale_output(kernels, s):  # kernel layout (..., out_channels, in_channels)
        return [kernels[0] * s[:, None]]

    return _kernel_layer(layer, apply, scale_output, input_axis=-1)


def _depthwise(layer) -> Linear:
    def apply(x, k):
        return ops.depthwise_conv(
            x,
            k[0],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    def scale_output(kernels, s):  # kernel (..., in, multiplier); output channel = in * mult + m
        k = kernels[0]
        return [k * tf.reshape(s, k.shape[-2:])]

    return _kernel_layer(layer, apply, scale_output)


def _separable(layer) -> Linear:
    def apply(x, k):
        return ops.separable_conv(
            x,
            k[0],
            k[1],
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )

    return _kernel_layer(layer, apply, kernels=("depthwise_kernel", "pointwise_kernel"))


def batchnorm_affine(layer: kl.BatchNormalization) -> tuple[Tensor, Tensor]:
    """Return ``(s, t)`` with ``BN(x) = x * s + t`` in inference mode.

    ``s = gamma / sqrt(var + epsilon)``, ``t = beta - mean * s``; ``gamma``/``beta`` are 1/0 when
    the layer was built with ``scale=False``/``center=False``.
    """
    var = tf.convert_to_tensor(layer.moving_variance)
    s = tf.math.rsqrt(var + layer.epsilon)
    if layer.gamma is not None:
        s = s * tf.convert_to_tensor(layer.gamma)
    t = -tf.convert_to_tensor(layer.moving_mean) * s
    if layer.beta is not None:
        t = t + tf.convert_to_tensor(layer.beta)
    return s, t


def _batchnorm(layer: kl.BatchNormalization) -> Linear:
    """An unfolded BatchNormalization is the affine map ``x * s + t`` (one kernel: ``s``)."""
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]

    def apply(x, k):
        if axis in (-1, len(x.shape) - 1):
            return x * k[0]
        shape = [1] * len(x.shape)
        shape[axis] = -1
        return x * tf.reshape(k[0], shape)

    return Linear(
        layer=layer,
        kernels=lambda: [batchnorm_affine(layer)[0]],
        bias=lambda: batchnorm_affine(layer)[1],
        apply=apply,
        scale_output=lambda kernels, s: [kernels[0] * s],
        channel_axis=axis,
    )


_LINEAR: list[tuple[type, Callable[[keras.layers.Layer], Linear]]] = [
    (kl.Dense, _dense),
    (kl.SeparableConv1D, _separable),
    (kl.SeparableConv2D, _separable),
    (kl.DepthwiseConv1D, _depthwise),
    (kl.DepthwiseConv2D, _depthwise),
    (kl.Conv1DTranspose, _conv_transpose),
    (kl.Conv2DTranspose, _conv_transpose),
    (kl.Conv3DTranspose, _conv_transpose),
    (kl.Conv1D, _conv),
    (kl.Conv2D, _conv),
    (kl.Conv3D, _conv),
    (kl.BatchNormalization, _batchnorm),
]


def register_linear(layer_class: type, factory: Callable[[keras.layers.Layer], Linear]) -> None:
    """Teach tf_lrp the linear part of a custom layer class so that every rule applies to it.

    Parameters
    ----------
    layer_class
        The custom Keras layer class.
    factory
        ``factory(layer) -> Linear`` describing ``z = apply(x, kernels) + bias`` for a layer of
        that class. Registered classes take precedence over the built-in table.
    """
    _LINEAR.insert(0, (layer_class, factory))


def linear_part(layer) -> Linear | None:
    """The :class:`Linear` part of ``layer``, or ``None`` if it has no weights tf_lrp knows."""
    for cls, factory in _LINEAR:
        if isinstance(layer, cls):
            return factory(layer)
    return None


# ---------------------------------------------------------------------------------------------
# Layers without weights

PASS = "pass"  # relevance passes unchanged (activations)
ROUTE = "route"  # relevance follows the ordinary gradient (max pooling winner, reshapes, concat)
PROPORTIONAL = "proportional"  # LRP-0 in proportion to the inputs (average pooling, Add)

_ACTIVATIONS = (kl.ReLU, kl.LeakyReLU, kl.Activation, kl.ELU, kl.PReLU, kl.Softmax)
_DROPOUT = (kl.Dropout, kl.SpatialDropout1D, kl.SpatialDropout2D, kl.SpatialDropout3D)
_NOISE = (kl.GaussianNoise, kl.GaussianDropout, kl.AlphaDropout, kl.ActivityRegularization)
_MAX_POOLING = (
    kl.MaxPooling1D, kl.MaxPooling2D, kl.MaxPooling3D,
    kl.GlobalMaxPooling1D, kl.GlobalMaxPooling2D, kl.GlobalMaxPooling3D,
)
_RESHAPING = (
    kl.Flatten, kl.Reshape, kl.Permute, kl.RepeatVector, kl.Concatenate,
    kl.ZeroPadding1D, kl.ZeroPadding2D, kl.ZeroPadding3D,
    kl.Cropping1D, kl.Cropping2D, kl.Cropping3D,
)
_AVERAGING = (
    kl.AveragePooling1D, kl.AveragePooling2D, kl.AveragePooling3D,
    kl.GlobalAveragePooling1D, kl.GlobalAveragePooling2D, kl.GlobalAveragePooling3D,
    kl.Add, kl.Average,
)

_FIXED: list[tuple[tuple[type, ...], str]] = [
    (_ACTIVATIONS, PASS),
    (_DROPOUT + _NOISE + _MAX_POOLING + _RESHAPING + (kl.InputLayer,), ROUTE),
    (_AVERAGING, PROPORTIONAL),
]

_NONNEGATIVE_ACTIVATIONS = {
    "relu",
    "relu6",
    "sigmoid",
    "softmax",
    "softplus",
    "hard_sigmoid",
    "exponential",
}

# layers whose output is non-negative whenever all their inputs are
_SIGN_PRESERVING = _DROPOUT + _MAX_POOLING + _AVERAGING + _RESHAPING


def fixed_handling(layer) -> str | None:
    """``PASS``, ``ROUTE`` or ``PROPORTIONAL`` for a known layer without weights, else ``None``."""
    for classes, kind in _FIXED:
        if isinstance(layer, classes):
            return kind
    return None


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


def is_nonnegative_activation(fn) -> bool:
    """Whether an activation function's output is always >= 0 (relu, sigmoid, softmax, ...)."""
    return activation_name(fn) in _NONNEGATIVE_ACTIVATIONS


def nonnegative_output(layer, inputs_nonnegative: Sequence[bool]) -> bool:
    """Whether ``layer``'s output is known to be >= 0, given which of its inputs are."""
    if isinstance(layer, kl.ReLU):
        slope = float(layer.negative_slope or 0.0)
        return slope == 0.0 and float(layer.threshold or 0.0) >= 0.0
    if isinstance(layer, kl.Softmax):
        return True
    if isinstance(layer, kl.Activation):
        return is_nonnegative_activation(layer.activation)
    if isinstance(layer, _SIGN_PRESERVING):
        return bool(inputs_nonnegative) and all(inputs_nonnegative)
    return False


def is_softmax(layer_or_fn) -> bool:
    """Whether a layer (``Softmax``, ``Activation("softmax")``) or function is a softmax."""
    if isinstance(layer_or_fn, kl.Softmax):
        return True
    fn = layer_or_fn.activation if isinstance(layer_or_fn, kl.Activation) else layer_or_fn
    return activation_name(fn) == "softmax"
