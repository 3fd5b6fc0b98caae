"""What tf_lrp knows about Keras layers with weights.

* The **linear part** of every layer with weights (Dense, convolutions, BatchNormalization): a
  function ``apply(x, kernels)`` that computes the layer's pre-activation without bias, the live
  kernels and bias, and how a per-output-channel scale folds into the kernels. Rules modify the
  kernels and call ``apply`` again, so a rule never needs to know the layer type. A layer made
  of several kernels (separable convolutions) is described by its **effective** kernel.
* The **linearized forward** of normalization layers (LayerNormalization, GroupNormalization,
  UnitNormalization, RMSNormalization): the same output, with the normalizing scale held constant, so that the
  centering and the affine part are a linear map (AttnLRP, Achtibat et al. 2024, Prop. 3.4).

Users add their own linear layers with :func:`register_linear`. Layers without weights are
described in :mod:`tf_lrp.weightless`.
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
        transposed operation instead of one per term. ``None`` (depthwise convolutions,
        BatchNormalization, custom layers by default): terms run one by one. For a layer with
        an :attr:`effective` kernel, the axis of that kernel.
    effective, effective_apply
        For a layer made of several kernels (separable convolutions): ``effective(kernels)``
        maps them to the one kernel of the layer's effective linear map, and
        ``effective_apply(x, [kernel])`` applies it. Weight modifiers act on that kernel
        (``w+`` of a product of kernels is not the product of their ``w+``); the unmodified
        layer keeps its own, cheaper ``apply``.
    """

    layer: keras.layers.Layer
    kernels: Callable[[], list[Tensor]]
    bias: Callable[[], Tensor | None]
    apply: Callable[[Tensor, Sequence[Tensor]], Tensor]
    scale_output: Callable[[list[Tensor], Tensor], list[Tensor]]
    channel_axis: int = -1
    activation: Callable[[Tensor], Tensor] | None = None
    input_axis: int | None = None
    effective: Callable[[list[Tensor]], list[Tensor]] | None = None
    effective_apply: Callable[[Tensor, Sequence[Tensor]], Tensor] | None = None

    def modified(self, kernels: list[Tensor], weight: Callable[[Tensor], Tensor] | None
                 ) -> tuple[list[Tensor], Callable[[Tensor, Sequence[Tensor]], Tensor]]:
        """The kernels a weight modifier makes of ``kernels``, and the ``apply`` they go with.

        ``weight=None`` keeps the layer's own kernels and ``apply``; a modifier acts on the
        effective kernel where the layer has one.
        """
        if weight is None:
            return kernels, self.apply
        if self.effective is not None:
            return [weight(k) for k in self.effective(kernels)], self.effective_apply
        return [weight(k) for k in kernels], self.apply

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


def _kernel_layer(layer, apply, scale_output=_scale_last, kernels=None,
                  input_axis: int | None = None) -> Linear:
    """The :class:`Linear` of a Keras layer: its ``kernel`` attribute, or ``kernels()``."""
    return Linear(
        layer=layer,
        kernels=kernels or (lambda: [tf.convert_to_tensor(layer.kernel)]),
        bias=_bias_getter(layer),
        apply=apply,
        scale_output=scale_output,
        channel_axis=_channel_axis(layer),
        activation=_activation(layer),
        input_axis=input_axis,
    )


def _dense(layer: kl.Dense) -> Linear:
    return _kernel_layer(layer, lambda x, k: ops.matmul(x, k[0]), input_axis=0)


def _conv_apply(layer, separable: bool = False) -> Callable[[Tensor, Sequence[Tensor]], Tensor]:
    """``apply(x, kernels)``: the convolution ``layer`` computes, with given kernels (one full
    kernel, or with ``separable`` the depthwise and the pointwise kernel)."""
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
        options = dict(strides=list(layer.strides),
                       padding="valid" if padding == "causal" else padding,
                       dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        if separable:
            return ops.separable_conv(x, k[0], k[1], **{**options, "strides": layer.strides})
        return ops.conv(x, k[0], **options)

    return apply


def _conv(layer) -> Linear:
    # kernel (*window, in / groups, out); with groups > 1 the input channels are split into
    # groups, so inputs stacked on the channel axis would mix groups: no fused terms
    grouped = int(getattr(layer, "groups", 1) or 1) > 1
    return _kernel_layer(layer, _conv_apply(layer), input_axis=None if grouped else -2)


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


def separable_kernel(depthwise: Tensor, pointwise: Tensor) -> Tensor:
    """The one kernel of a separable convolution: ``K[..., c, o] = sum_m D[..., c, m] P[c*M + m, o]``.

    ``depthwise`` is ``(*window, C, M)`` (depthwise output channel ``c*M + m``), ``pointwise``
    ``(1, ..., C*M, O)``. The depthwise and the 1x1 pointwise convolution have no
    nonlinearity between them, so the layer is the convolution with ``K``.
    """
    c, m = depthwise.shape[-2], depthwise.shape[-1]
    p = tf.reshape(pointwise, (c, m, pointwise.shape[-1]))
    return tf.einsum("...cm,cmo->...co", depthwise, p)


def _separable(layer) -> Linear:
    """SeparableConv1D/2D: rules act on its **effective linear map**, the one convolution with
    :func:`separable_kernel`, so it explains exactly like the Conv layer holding that kernel;
    the forward pass and the unmodified layer keep the cheaper separable operation."""
    linear = _kernel_layer(
        layer, _conv_apply(layer, separable=True), input_axis=-2,
        kernels=lambda: [tf.convert_to_tensor(layer.depthwise_kernel),
                         tf.convert_to_tensor(layer.pointwise_kernel)])
    linear.effective = lambda kernels: [separable_kernel(*kernels)]
    linear.effective_apply = _conv_apply(layer)
    return linear


def _einsum_dense(layer) -> Linear:
    """EinsumDense: ``z = einsum(equation, x, kernel)``. Several terms fuse where the input's
    last axis is summed over (it is the kernel axis :attr:`Linear.input_axis`)."""
    equation = layer.equation
    inputs, rest = equation.split(",")
    kernel_spec, output = rest.split("->")
    last = inputs[-1]
    axis = kernel_spec.index(last) if last in kernel_spec and last not in output else None

    def scale_output(kernels, s):
        return [kernels[0] * s]  # the output's last axis is the kernel's last (Keras's layouts)

    linear = _kernel_layer(layer, lambda x, k: tf.einsum(equation, x, k[0]), scale_output,
                           input_axis=axis)
    linear.channel_axis = -1
    return linear


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
    (kl.EinsumDense, _einsum_dense),
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


def reversed_embedding(layer) -> Linear:
    """The reverse call of a ``ReversibleEmbedding`` (``layer(h, reverse=True)``: a tied
    language-model head) as the dense layer it is: ``z = h @ E^T`` with the live table ``E``
    (or the untied ``reverse_embeddings``). A logit soft cap (``c tanh(z / c)``) is its
    activation, split off like any other."""
    def kernels():
        if getattr(layer, "tie_weights", True):
            return [tf.transpose(tf.convert_to_tensor(layer.embeddings))]
        return [tf.convert_to_tensor(layer.reverse_embeddings)]

    cap = getattr(layer, "logit_soft_cap", None)

    def soft_cap(z):
        return tf.tanh(z / cap) * cap

    return Linear(layer=layer, kernels=kernels, bias=lambda: None,
                  apply=lambda x, k: ops.matmul(ops.cast(x, k[0].dtype), k[0]),
                  scale_output=_scale_last, activation=soft_cap if cap else None, input_axis=0)


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
# Normalization layers: the normalizing scale held constant


def _broadcast(v, rank: int, axes: Sequence[int], dims: Sequence[int]) -> Tensor:
    shape = [1] * rank
    for a, d in zip(axes, dims):
        shape[a] = d
    return tf.reshape(tf.convert_to_tensor(v), shape)


def _layer_norm(layer: kl.LayerNormalization) -> Callable[[Tensor], Tensor]:
    def call(x):
        rank = len(x.shape)
        axes = sorted(a % rank for a in (layer.axis if isinstance(layer.axis, (list, tuple))
                                          else [layer.axis]))
        dims = [x.shape[a] for a in axes]
        if layer.rms_scaling:  # as Keras computes it: scaled by the variance, not centred
            _, var = tf.nn.moments(x, axes, keepdims=True)
            y = x * tf.stop_gradient(tf.math.rsqrt(var + layer.epsilon))
        else:
            mean, var = tf.nn.moments(x, axes, keepdims=True)
            y = (x - mean) * tf.stop_gradient(tf.math.rsqrt(var + layer.epsilon))
        if layer.gamma is not None:
            y = y * _broadcast(layer.gamma, rank, axes, dims)
        if layer.beta is not None and not layer.rms_scaling:
            y = y + _broadcast(layer.beta, rank, axes, dims)
        return y

    return call


def _group_norm(layer: kl.GroupNormalization) -> Callable[[Tensor], Tensor]:
    def call(x):
        rank = len(x.shape)
        axis = layer.axis % rank
        shape = tf.shape(x)
        grouped = tf.concat([shape[:axis], [layer.groups, x.shape[axis] // layer.groups],
                             shape[axis + 1:]], 0)
        g = tf.reshape(x, grouped)
        reduce = [a for a in range(1, rank + 1) if a != axis]  # all but batch and group
        mean, var = tf.nn.moments(g, reduce, keepdims=True)
        y = tf.reshape((g - mean) * tf.stop_gradient(tf.math.rsqrt(var + layer.epsilon)), shape)
        if layer.gamma is not None:
            y = y * _broadcast(layer.gamma, rank, [axis], [x.shape[axis]])
        if layer.beta is not None:
            y = y + _broadcast(layer.beta, rank, [axis], [x.shape[axis]])
        return y

    return call


def _unit_norm(layer: kl.UnitNormalization) -> Callable[[Tensor], Tensor]:
    def call(x):
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        square = tf.reduce_sum(tf.square(x), axes, keepdims=True)
        return x * tf.stop_gradient(tf.math.rsqrt(tf.maximum(square, 1e-24)))

    return call


def _rms_norm(layer) -> Callable[[Tensor], Tensor]:
    def call(x):
        rank = len(x.shape)
        axes = [a % rank for a in layer.axis]
        rrms = tf.math.rsqrt(tf.reduce_mean(tf.square(x), axes, keepdims=True) + layer.epsilon)
        return x * tf.stop_gradient(rrms) * tf.convert_to_tensor(layer.scale)

    return call


_NORMALIZATIONS: list[tuple[type, Callable]] = [
    (kl.LayerNormalization, _layer_norm),
    (kl.GroupNormalization, _group_norm),
    (kl.UnitNormalization, _unit_norm),
    *([(kl.RMSNormalization, _rms_norm)] if hasattr(kl, "RMSNormalization") else []),
]


def linearized_normalization(layer) -> Callable[[Tensor], Tensor] | None:
    """``layer``'s forward with its normalizing scale ``1/sigma`` under ``tf.stop_gradient``.

    Returns ``None`` for layers that are not LayerNormalization, GroupNormalization or
    UnitNormalization. The output is the layer's own (up to float rounding); its
    vector-Jacobian product is that of the linear map ``x -> gamma (x - mean(x)) / sigma + beta``
    with ``sigma`` fixed at its forward value.
    """
    for cls, factory in _NORMALIZATIONS:
        if isinstance(layer, cls):
            return factory(layer)
    return None
