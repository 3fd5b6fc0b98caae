"""One small model per keras.applications family, built from the family's own blocks.

The full architectures are measured in ``scripts/zoo.py`` (``benchmarks/ZOO.md``); here each
family's building blocks stand in a few-filter model at 8-16 px so the suite stays fast:
preprocessing layers, BatchNormalization folded and unfoldable, swish and GELU, squeeze-excitation
gates (sigmoid and the hard sigmoid MobileNetV3 writes with ops), depthwise and separable
convolutions, LayerNormalization, LayerScale, StochasticDepth, CustomScaleLayer, op-node
residuals, padding, cropping and concatenation.

Every model has zero biases and BatchNormalization statistics with zero means (as a random
initialisation has), so LRP-0 and EpsilonPlus conserve relevance; EpsilonGammaBox must not
inflate it. On the models with ReLU only, LRP-0 equals gradient x input.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as kl

import tf_lrp
from tf_lrp import keras_adapter, rules

LayerScale, StochasticDepth, CustomScaleLayer = (
    keras_adapter.application_layer_classes(name)[0]
    for name in ("LayerScale", "StochasticDepth", "CustomScaleLayer"))


def _bn_act(x, act):
    return kl.Activation(act)(kl.BatchNormalization()(x))


def efficientnet():
    inp = keras.Input((12, 12, 3))
    x = kl.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0, 2900.0, 2800.0])(
        kl.Rescaling(1.0 / 255.0)(inp))
    x = _bn_act(kl.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x), "swish")
    shortcut = x
    x = _bn_act(kl.DepthwiseConv2D(3, padding="same", use_bias=False)(x), "swish")
    se = kl.Reshape((1, 1, 8))(kl.GlobalAveragePooling2D()(x))
    se = kl.Conv2D(2, 1, activation="swish")(se)
    se = kl.Conv2D(8, 1, activation="sigmoid")(se)
    x = kl.multiply([x, se])
    x = kl.BatchNormalization()(kl.Conv2D(8, 1, use_bias=False)(x))
    x = kl.add([kl.Dropout(0.2)(x), shortcut])
    x = _bn_act(kl.Conv2D(12, 1, use_bias=False)(x), "swish")
    return keras.Model(inp, kl.Dense(4)(kl.GlobalAveragePooling2D()(x))), (0.0, 255.0)


def _hard_sigmoid(x):
    return kl.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)


def mobilenet_v3():
    inp = keras.Input((12, 12, 3))
    x = kl.Rescaling(scale=1.0 / 127.5, offset=-1.0)(inp)
    x = kl.BatchNormalization()(kl.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x))
    x = kl.Multiply()([x, _hard_sigmoid(x)])  # hard swish
    shortcut = x
    x = kl.BatchNormalization()(kl.DepthwiseConv2D(3, padding="same", use_bias=False)(x))
    x = kl.ReLU()(x)
    se = kl.GlobalAveragePooling2D(keepdims=True)(x)
    se = kl.ReLU()(kl.Conv2D(4, 1)(se))
    se = _hard_sigmoid(kl.Conv2D(8, 1)(se))
    x = kl.Multiply()([x, se])
    x = kl.BatchNormalization()(kl.Conv2D(8, 1, use_bias=False)(x))
    x = kl.Add()([shortcut, x])
    x = kl.GlobalAveragePooling2D(keepdims=True)(x)
    x = kl.Conv2D(4, 1)(x)
    return keras.Model(inp, kl.Flatten()(x)), (0.0, 255.0)


def convnext():
    inp = keras.Input((16, 16, 3))
    x = kl.Normalization(mean=[120.0, 110.0, 100.0], variance=[3000.0, 2900.0, 2800.0])(
        kl.Rescaling(1.0 / 255.0)(inp))
    x = kl.LayerNormalization(epsilon=1e-6)(kl.Conv2D(8, 4, strides=4)(x))
    shortcut = x
    x = kl.DepthwiseConv2D(3, padding="same")(x)
    x = kl.LayerNormalization(epsilon=1e-6)(x)
    x = kl.Dense(16)(x)
    x = kl.Activation("gelu")(x)
    x = kl.Dense(8)(x)
    x = LayerScale(0.5, 8)(x)
    x = StochasticDepth(0.1)(x)
    x = shortcut + x  # an op-node residual
    x = kl.LayerNormalization(epsilon=1e-6)(kl.GlobalAveragePooling2D()(x))
    return keras.Model(inp, kl.Dense(4)(x)), (0.0, 255.0)


def inception_resnet():
    inp = keras.Input((10, 10, 3))
    x = kl.ReLU()(kl.BatchNormalization(scale=False)(kl.Conv2D(8, 3, use_bias=False)(inp)))
    b0 = kl.ReLU()(kl.Conv2D(4, 1)(x))
    b1 = kl.ReLU()(kl.Conv2D(4, 3, padding="same")(kl.ReLU()(kl.Conv2D(4, 1)(x))))
    up = kl.Conv2D(8, 1)(kl.Concatenate()([b0, b1]))
    x = kl.ReLU()(CustomScaleLayer(0.17)([x, up]))
    x = kl.AveragePooling2D(3, strides=1, padding="same")(x)
    return keras.Model(inp, kl.Dense(4)(kl.GlobalAveragePooling2D()(x))), (-1.0, 1.0)


def xception_nasnet():
    inp = keras.Input((12, 12, 3))
    x = kl.ZeroPadding2D(1)(inp)
    x = kl.ReLU()(kl.BatchNormalization()(kl.Conv2D(8, 3, strides=2, use_bias=False)(x)))
    residual = kl.BatchNormalization()(kl.Conv2D(8, 1, strides=2, padding="same",
                                                  use_bias=False)(x))
    y = kl.BatchNormalization()(kl.SeparableConv2D(8, 3, padding="same", use_bias=False)(x))
    y = kl.ReLU()(y)
    y = kl.BatchNormalization()(kl.SeparableConv2D(8, 3, padding="same", use_bias=False,
                                                   depth_multiplier=2)(y))
    y = kl.MaxPooling2D(3, strides=2, padding="same")(y)
    x = kl.add([y, residual])
    p = kl.Cropping2D(((0, 1), (0, 1)))(kl.ZeroPadding2D(((1, 0), (1, 0)))(x))
    x = kl.ReLU()(kl.concatenate([x, kl.AveragePooling2D(1)(p)]))
    return keras.Model(inp, kl.Dense(4)(kl.GlobalAveragePooling2D()(x))), (-1.0, 1.0)


def resnet_v2_densenet():
    inp = keras.Input((10, 10, 3))
    x = kl.Conv2D(8, 3, padding="same")(inp)
    pre = kl.ReLU()(kl.BatchNormalization()(x))  # pre-activation: BN cannot be folded
    y = kl.Conv2D(8, 3, padding="same", use_bias=False)(pre)
    y = kl.ReLU()(kl.BatchNormalization()(y))
    y = kl.Conv2D(8, 1)(y)
    x = kl.Add()([x, y])
    x = kl.Concatenate()([x, kl.Conv2D(4, 1)(kl.ReLU()(kl.BatchNormalization()(x)))])
    x = kl.ReLU()(kl.BatchNormalization()(x))
    return keras.Model(inp, kl.Dense(4)(kl.GlobalAveragePooling2D()(x))), (-1.0, 1.0)


FAMILIES = {f.__name__: f for f in (efficientnet, mobilenet_v3, convnext, inception_resnet,
                                     xception_nasnet, resnet_v2_densenet)}
RELU_ONLY = ("inception_resnet", "xception_nasnet", "resnet_v2_densenet")


def _initialise(model, seed):
    """Unit-scale kernels of both signs, zero biases, BatchNormalization with zero means."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, kl.BatchNormalization):
            values = []
            for w in layer.weights:
                name = w.path.split("/")[-1]
                values.append(rng.uniform(0.5, 1.5, w.shape) if name in ("gamma", "moving_variance")
                              else np.zeros(w.shape))
            layer.set_weights(values)
        elif isinstance(layer, (kl.Conv2D, kl.DepthwiseConv2D, kl.SeparableConv2D, kl.Dense)):
            layer.set_weights([rng.normal(0, 1.0 / np.sqrt(np.prod(w.shape[:-1])), w.shape)
                               if len(w.shape) > 1 else np.zeros(w.shape)
                               for w in layer.get_weights()])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    keras.utils.set_random_seed(0)
    model, (low, high) = FAMILIES[request.param]()
    _initialise(model, 1)
    rng = np.random.default_rng(2)
    shape = (3, *model.input_shape[1:])
    x = (low + (high - low) * rng.uniform(size=shape)).astype("float32")
    logits = model(x).numpy()
    return request.param, model, x, (low, high), logits


def _targets(logits):
    return np.argmax(np.abs(logits), axis=1)  # the largest logit in magnitude: signed outputs


def test_forward_matches_keras(family):
    _, model, x, _, logits = family
    np.testing.assert_allclose(tf_lrp.Analyzer(model).predict(x), logits, rtol=1e-4,
                               atol=1e-5 * np.abs(logits).max())


@pytest.mark.parametrize("composite", [rules.Zero(), "epsilon_plus"], ids=["lrp0", "eps_plus"])
def test_conserves(family, composite):
    name, model, x, _, logits = family
    t = _targets(logits)
    selected = logits[np.arange(len(t)), t]
    r = tf_lrp.Analyzer(model, composite)(x, target=t)
    # z+ on signed inputs (swish and hard-swish outputs, an un-activated residual sum feeding a
    # 1x1 convolution) passes nothing from an output whose contributions are all negative: the
    # leak measured here is 4.6 % (efficientnet) and 2.9 % (mobilenet_v3); LRP-0 has none
    leaky = composite == "epsilon_plus" and name in ("efficientnet", "mobilenet_v3")
    np.testing.assert_allclose(r.reshape(len(x), -1).sum(1), selected,
                               rtol=0.1 if leaky else 1e-4 if composite != "epsilon_plus" else 1e-2,
                               err_msg=name)


def test_gamma_box_does_not_inflate(family):
    name, model, x, (low, high), logits = family
    t = _targets(logits)
    selected = np.abs(logits[np.arange(len(t)), t])
    r = tf_lrp.Analyzer(model, "epsilon_gamma_box", low=low, high=high, gamma=0.5,
                        epsilon=1e-3)(x, target=t)
    sums = np.abs(r.reshape(len(x), -1).sum(1))
    assert (sums <= 2 * selected).all(), (name, sums / selected)
    assert (np.abs(r).reshape(len(x), -1).max(1) <= 10 * selected).all(), name


def test_lrp0_is_gradient_x_input_on_relu_families(family):
    name, model, x, _, logits = family
    if name not in RELU_ONLY:
        pytest.skip("swish/GELU/gates: LRP-0 passes activations, the gradient does not")
    t = _targets(logits)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = tf.reduce_sum(model(xt) * tf.one_hot(t, logits.shape[1]))
    want = (xt * tape.gradient(y, xt)).numpy()
    got = tf_lrp.Analyzer(model, rules.Zero())(x, target=t)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * np.abs(want).max())
