"""Layers and Keras 3 op nodes without weights: products, elementwise and preprocessing layers,
normalization layers, ``x + y`` style op nodes, z^B bounds through preprocessing, and the
errors for what is still unknown.

Each rule is checked against an independent computation: explicit numpy matrices, or a
gradient x input identity on the original Keras model that shares no code with the engine.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as kl
from keras import ops

import tf_lrp
from tf_lrp import composites, rules, weightless
from tf_lrp.errors import UnsupportedLayerError

RNG = np.random.default_rng(0)


def randomize(model, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (kl.Dense, kl.Conv2D)):
            layer.set_weights([rng.normal(0, scale, w.shape).astype(w.dtype)
                               for w in layer.get_weights()])


def gradient_x_input(fn, x, target):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)[:, target]
    return (x * tape.gradient(y, x)).numpy()


# ----------------------------------------------------------------------------- products


def _se_model(gate_activation="sigmoid"):
    """A squeeze-excitation block: conv -> relu; gate = act(Dense(GAP)); Multiply; Dense."""
    inp = keras.Input((5, 5, 2))
    h = kl.Conv2D(3, 3, padding="same", activation="relu", use_bias=False)(inp)
    s = kl.Dense(3, activation=gate_activation, use_bias=False)(kl.GlobalAveragePooling2D()(h))
    gated = kl.Multiply()([h, kl.Reshape((1, 1, 3))(s)])
    model = keras.Model(inp, kl.Dense(2, use_bias=False)(kl.Flatten()(gated)))
    randomize(model, 1)
    return model


def _se_with_constant_gate(model, x_gate):
    """The same network as plain TF ops, with the gate computed on ``x_gate`` and held constant."""
    conv = next(layer for layer in model.layers if isinstance(layer, kl.Conv2D))
    dense_s, dense_out = [layer for layer in model.layers if isinstance(layer, kl.Dense)]
    gate = dense_s(tf.reduce_mean(conv(x_gate), axis=(1, 2)))

    def fn(x):
        h = conv(x)
        return dense_out(tf.reshape(h * tf.stop_gradient(gate)[:, None, None, :],
                                    (x.shape[0], -1)))

    return fn


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_gate_gets_no_relevance_signal_takes_all(gate):
    """LRP-0 with signal-take-all == gradient x input with the gate held constant (the
    network is then linear in the signal path)."""
    model = _se_model(gate)
    x = RNG.normal(size=(3, 5, 5, 2)).astype("float32")
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    table = {n: r for n, _, r in analyzer.rule_table()}
    multiply = next(layer for layer in model.layers if isinstance(layer, kl.Multiply))
    assert table[multiply.name] == "SignalTakesAll()"
    want = gradient_x_input(_se_with_constant_gate(model, x), x, 1)
    np.testing.assert_allclose(analyzer(x, target=1), want, rtol=1e-4, atol=1e-6)
    # conservation: bias-free, the gate branch takes nothing, so the input gets the logit
    np.testing.assert_allclose(analyzer(x, target=1).reshape(3, -1).sum(1),
                               model(x).numpy()[:, 1], rtol=1e-4)


def test_hard_sigmoid_written_with_ops_is_a_gate():
    """MobileNetV3's hard sigmoid: ReLU(6.0)(x + 3.0) * (1.0 / 6.0), then hard swish x * hs(x)."""
    inp = keras.Input((4,))
    z = kl.Dense(4, use_bias=False)(inp)
    hs = kl.ReLU(6.0)(z + 3.0) * (1.0 / 6.0)
    out = kl.Dense(2, use_bias=False)(kl.Multiply()([z, hs]))
    model = keras.Model(inp, out)
    randomize(model, 2)
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    assert analyzer.rules[model.layers[-2].name].__class__ is rules.SignalTakesAll
    x = RNG.normal(size=(4, 4)).astype("float32")
    dense1, dense2 = model.layers[1], model.layers[-1]

    def fn(v):
        zz = dense1(v)
        gate = tf.stop_gradient(tf.nn.relu6(zz + 3.0) / 6.0)
        return dense2(zz * gate)

    np.testing.assert_allclose(analyzer(x, target=0), gradient_x_input(fn, x, 0), rtol=1e-4,
                               atol=1e-6)


def test_uniform_product_is_half_gradient_x_input():
    """y = Dense((W1 x) * (W2 x)) is homogeneous of degree 2 in x: the uniform split of LRP-0
    gives each factor half, which is half of gradient x input (bias-free)."""
    inp = keras.Input((5,))
    a, b = kl.Dense(4, use_bias=False)(inp), kl.Dense(4, use_bias=False)(inp)
    for product in (kl.Multiply()([a, b]), a * b):
        model = keras.Model(inp, kl.Dense(3, use_bias=False)(product))
        randomize(model, 3)
        x = RNG.normal(size=(4, 5)).astype("float32")
        analyzer = tf_lrp.Analyzer(model, rules.Zero())
        assert "UniformProduct()" in [r for _, _, r in analyzer.rule_table()]
        want = 0.5 * gradient_x_input(model, x, 2)
        got = analyzer(x, target=2)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.sum(1), model(x).numpy()[:, 2], rtol=1e-4)


def test_product_rules_can_be_mapped_and_are_checked_when_built():
    model = _se_model()
    x = RNG.normal(size=(2, 5, 5, 2)).astype("float32")
    uniform = tf_lrp.Analyzer(model, composites.LayerMap(
        [(kl.Multiply, rules.UniformProduct())], default=rules.Zero()))
    signal = tf_lrp.Analyzer(model, rules.Zero())
    assert not np.allclose(uniform(x, target=0), signal(x, target=0), atol=1e-3)
    # a Multiply mapped to Pass is refused when the analyzer is built, with the reason
    with pytest.raises(UnsupportedLayerError, match=r"Multiply.*Pass\(\) only fits"):
        tf_lrp.Analyzer(model, composites.LayerMap([("Multiply", rules.Pass())],
                                                   default=rules.Zero()))
    inp = keras.Input((3,))
    ungated = keras.Model(inp, kl.Multiply()([kl.Dense(2)(inp), kl.Dense(2)(inp)]))
    with pytest.raises(UnsupportedLayerError, match="no factor is known to be a gate"):
        tf_lrp.Analyzer(ungated, composites.LayerMap([(kl.Multiply, rules.SignalTakesAll())],
                                                     default=rules.Zero()))


# ----------------------------------------------------------------------------- op nodes


def _twins():
    """The same network written with layers and with Keras 3 op nodes."""
    def build(use_ops):
        inp = keras.Input((4, 4, 2))
        a = kl.Conv2D(3, 3, padding="same", name="a")(inp)
        b = kl.Conv2D(3, 1, name="b")(inp)
        if use_ops:
            h = ops.relu(a + b)
            h = h - 0.5 * b
            m = ops.mean(h, axis=(1, 2))
            t = ops.reshape(ops.transpose(h, (0, 3, 1, 2)), (-1, 48))
            c = ops.concatenate([m, t], axis=-1)
            c = ops.squeeze(ops.expand_dims(c, 1), 1) / 2.0
        else:
            h = kl.ReLU()(kl.Add()([a, b]))
            h = kl.Subtract()([h, kl.Rescaling(0.5)(b)])
            m = kl.GlobalAveragePooling2D()(h)
            t = kl.Flatten()(kl.Permute((3, 1, 2))(h))
            c = kl.Rescaling(0.5)(kl.Concatenate()([m, t]))
        return keras.Model(inp, kl.Dense(3, name="out")(c))

    layers_model, ops_model = build(False), build(True)
    randomize(layers_model, 4)
    for name in ("a", "b", "out"):
        ops_model.get_layer(name).set_weights(layers_model.get_layer(name).get_weights())
    return layers_model, ops_model


@pytest.mark.parametrize("rule", [rules.Zero(), rules.Epsilon(0.3), rules.ZPlus()],
                         ids=["zero", "epsilon", "zplus"])
def test_op_nodes_explain_like_their_layers(rule):
    layers_model, ops_model = _twins()
    x = RNG.normal(size=(3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(ops_model(x), layers_model(x), rtol=1e-5, atol=1e-6)
    want = tf_lrp.Analyzer(layers_model, rule)(x, target=1)
    got = tf_lrp.Analyzer(ops_model, rule)(x, target=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_op_nodes_lrp0_is_gradient_x_input():
    _, ops_model = _twins()
    x = RNG.normal(size=(3, 4, 4, 2)).astype("float32")
    np.testing.assert_allclose(tf_lrp.Analyzer(ops_model, rules.Zero())(x, target=2),
                               gradient_x_input(ops_model, x, 2), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- normalization


def _layer_norm_reference(x, gamma, beta, eps_ln, R, epsilon, center=True):
    """Explicit matrices: J = diag(gamma) (I - 11'/d) / sigma(x) per sample, z = J x + beta,
    R_in = x * J' (R / (z + epsilon sign z)). ``center=False``: Keras's ``rms_scaling``,
    J = diag(gamma) / sigma(x) (sigma still the centred standard deviation), no beta."""
    d = x.shape[1]
    out = np.zeros_like(x)
    centering = np.eye(d) - np.ones((d, d)) / d if center else np.eye(d)
    for n in range(x.shape[0]):
        sigma = np.sqrt(x[n].var() + eps_ln)
        J = np.diag(gamma) @ centering / sigma
        z = J @ x[n] + beta
        s = R[n] / (z + epsilon * np.where(z >= 0, 1.0, -1.0))
        out[n] = x[n] * (J.T @ s)
    return out


def test_layer_normalization_holds_the_scale_constant():
    inp = keras.Input((6,))
    norm = kl.LayerNormalization(epsilon=1e-3)
    out = kl.Dense(2, use_bias=False)(norm(inp))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(5)
    norm.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.3, 6)])
    randomize(model, 6)
    x = rng.normal(size=(4, 6))
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    assert {r for _, _, r in analyzer.rule_table()} >= {"Epsilon(epsilon=1e-06, bias=True)"}
    y = model(x.astype("float32")).numpy().astype("float64")
    normed = norm(x.astype("float32")).numpy().astype("float64")
    w = model.layers[-1].get_weights()[0].astype("float64")
    r_normed = normed * w[:, 0]  # LRP-0 on the bias-free Dense, start = y_0
    want = _layer_norm_reference(x, *[v.astype("float64") for v in norm.get_weights()], 1e-3,
                                 r_normed, 1e-6)
    got = analyzer(x.astype("float32"), target=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # without beta: conservative up to epsilon
    norm.set_weights([norm.get_weights()[0], np.zeros(6)])
    got = tf_lrp.Analyzer(model, rules.Zero())(x.astype("float32"), target=0)
    np.testing.assert_allclose(got.sum(1), model(x.astype("float32")).numpy()[:, 0], rtol=1e-4)
    assert y.shape == (4, 2)


def test_rms_scaled_layer_normalization_per_input():
    """``LayerNormalization(rms_scaling=True)``: Keras scales by the centred variance and does
    not centre the output; each input's relevance against the explicit matrices."""
    inp = keras.Input((5,))
    norm = kl.LayerNormalization(epsilon=0.05, rms_scaling=True)
    h = norm(kl.Dense(5, use_bias=False)(inp))
    model = keras.Model(inp, kl.Dense(3, use_bias=False)(h))
    randomize(model, 11)
    rng = np.random.default_rng(12)
    gamma = np.array([1.7, -0.6, 0.3, 2.2, -1.4])  # both signs, no two equal
    norm.set_weights([gamma] + [w for w in norm.get_weights()[1:]])
    x = (rng.normal(size=(4, 5)) + np.array([0.8, -0.3, 1.5, 0.0, 0.4])).astype("float32")
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    np.testing.assert_allclose(analyzer.predict(x), model(x), rtol=1e-5, atol=1e-6)
    w1, w2 = (model.layers[i].get_weights()[0].astype("float64") for i in (1, 3))
    h1 = x.astype("float64") @ w1
    normed = norm(h1.astype("float32")).numpy().astype("float64")
    r_normed = normed * w2[:, 2]  # LRP-0 on the bias-free Dense, start = y_2
    r_h1 = _layer_norm_reference(h1, gamma, np.zeros(5), 0.05, r_normed, 1e-6, center=False)
    want = x.astype("float64") * ((r_h1 / h1) @ w1.T)
    got = analyzer(x, target=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_negative_rescaling_after_relu_is_not_nonnegative():
    """ReLU, then ``Rescaling(-0.5, offset=0.3)``: the values reach below zero, so z+ on the next
    layer takes their negative part too (a range marked non-negative would drop it)."""
    inp = keras.Input((4,))
    h = kl.Rescaling(-0.5, offset=0.3)(kl.Dense(6, activation="relu", name="d1")(inp))
    model = keras.Model(inp, kl.Dense(3, name="d2")(h))
    randomize(model, 13)
    x = RNG.normal(size=(5, 4)).astype("float32")
    composite = composites.LayerMap([("d2", rules.ZPlus())], default=rules.Epsilon(0.01))
    analyzer = tf_lrp.Analyzer(model, composite)
    w1, b1 = (v.astype("float64") for v in model.get_layer("d1").get_weights())
    w2, b2 = (v.astype("float64") for v in model.get_layer("d2").get_weights())
    a1 = np.maximum(x.astype("float64") @ w1 + b1, 0.0)
    a2 = -0.5 * a1 + 0.3
    assert (a2 < 0).any() and (a2 > 0).any()
    z = a2 @ w2 + b2
    target = np.argmax(z, axis=1)
    start = np.zeros_like(z)
    start[np.arange(5), target] = z[np.arange(5), target]
    # z+ on d2 (x+ w+ and x- w-), relevance passes the Rescaling, epsilon on d1
    ap, an, wp, wn = np.maximum(a2, 0), np.minimum(a2, 0), np.maximum(w2, 0), np.minimum(w2, 0)
    r_a = ap * ((start / (ap @ wp + an @ wn)) @ wp.T) + an * ((start / (ap @ wp + an @ wn)) @ wn.T)
    z1 = x.astype("float64") @ w1 + b1
    want = x * ((r_a / (z1 + 0.01 * np.where(z1 >= 0, 1.0, -1.0))) @ w1.T)
    np.testing.assert_allclose(analyzer(x, target=target), want, rtol=1e-4,
                               atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("make", [
    lambda: kl.LayerNormalization(axis=(1, 2), epsilon=1e-2),
    lambda: kl.RMSNormalization(epsilon=1e-2),
    lambda: kl.GroupNormalization(groups=2, epsilon=1e-2),
    lambda: kl.UnitNormalization(axis=-1),
], ids=["layer_norm_2axes", "rms", "group", "unit"])
def test_normalization_layers_conserve_and_keep_the_forward(make):
    inp = keras.Input((3, 3, 4))
    norm = make()
    h = norm(kl.Conv2D(4, 2, padding="same", use_bias=False)(inp))
    model = keras.Model(inp, kl.Dense(2, use_bias=False)(kl.Flatten()(h)))
    randomize(model, 7)
    if norm.weights:  # gamma of both signs, beta 0
        norm.set_weights([np.random.default_rng(1).normal(size=w.shape) if i == 0 else
                          np.zeros(w.shape) for i, w in enumerate(norm.get_weights())])
    x = RNG.normal(size=(3, 3, 3, 4)).astype("float32")
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    np.testing.assert_allclose(analyzer.predict(x), model(x), rtol=1e-5, atol=1e-5)
    layerwise = analyzer.layerwise(x, target=1)
    logit = model(x).numpy()[:, 1]
    for key in ("input", model.layers[1].name):
        np.testing.assert_allclose(layerwise[key].reshape(3, -1).sum(1), logit, rtol=1e-4,
                                   err_msg=key)


# ----------------------------------------------------------------------------- elementwise


def test_elementwise_layers_pass_relevance():
    """Rescaling, Normalization and LayerScale-like scaling in front of and inside a network:
    relevance passes them unchanged, so LRP-0 equals LRP-0 of the network after them."""
    inp = keras.Input((4,))
    norm = kl.Normalization(mean=[1.0, -1.0, 0.5, 0.0], variance=[4.0, 1.0, 0.25, 9.0])
    h = kl.Dense(3, use_bias=False)(kl.Rescaling(2.0, offset=-1.0)(norm(inp)))
    model = keras.Model(inp, kl.Dense(2, use_bias=False)(kl.Rescaling(3.0)(kl.ReLU()(h))))
    randomize(model, 8)
    x = RNG.normal(size=(3, 4)).astype("float32")
    analyzer = tf_lrp.Analyzer(model, rules.Zero())
    kinds = {cls: rule for _, cls, rule in analyzer.rule_table()}
    assert kinds["Rescaling"] == kinds["Normalization"] == "Pass()"
    pre = (norm(x).numpy() * 2.0 - 1.0).astype("float64")
    w1, w2 = (model.layers[i].get_weights()[0].astype("float64") for i in (3, 6))
    a = np.maximum(pre @ w1, 0.0)
    z1 = pre @ w1
    r_a = 3.0 * a * w2[:, 0]
    want = pre * ((r_a / z1) @ w1.T)
    np.testing.assert_allclose(analyzer(x, target=0), want, rtol=1e-4, atol=1e-6)


def test_box_bounds_are_mapped_through_preprocessing():
    """Rescaling(1/255) first, explained with low=0, high=255 == the model without it, 0..1."""
    inp = keras.Input((5, 5, 2))
    body = [kl.Conv2D(3, 3, activation="relu"), kl.Flatten(), kl.Dense(2)]
    h = kl.Rescaling(1.0 / 255)(inp)
    for layer in body:
        h = layer(h)
    with_pre = keras.Model(inp, h)
    randomize(with_pre, 9)
    plain_in = keras.Input((5, 5, 2))
    h = plain_in
    for layer in body:
        h = layer(h)
    plain = keras.Model(plain_in, h)
    pixels = RNG.uniform(0, 255, (3, 5, 5, 2)).astype("float32")
    got = tf_lrp.Analyzer(with_pre, "epsilon_gamma_box", low=0.0, high=255.0)(pixels, target=0)
    want = tf_lrp.Analyzer(plain, "epsilon_gamma_box", low=0.0, high=1.0)(pixels / 255,
                                                                          target=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    # per-channel bounds through a Normalization with a negative-scale Rescaling after it:
    # the mapped bounds are ordered elementwise
    inp = keras.Input((5, 5, 2))
    mean, std = np.array([100.0, 50.0]), np.array([60.0, 30.0])
    h = kl.Rescaling(-1.0)(kl.Normalization(mean=mean, variance=std**2)(inp))
    for layer in body:
        h = layer(h)
    flipped = keras.Model(inp, h)
    got = tf_lrp.Analyzer(flipped, "epsilon_gamma_box", low=0.0, high=255.0)(pixels, target=0)
    low, high = -(255 - mean) / std, mean / std
    want = tf_lrp.Analyzer(plain, "epsilon_gamma_box", low=low, high=high)(
        -(pixels - mean) / std, target=0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


# ----------------------------------------------------------------------------- errors


class Mystery(kl.Layer):  # raw TensorFlow calls: cannot be flattened into keras.ops parts
    def call(self, x):
        return tf.multiply(x, 2.0)


class Puzzle(kl.Layer):
    def call(self, x):
        return tf.add(x, 1.0)


def test_unknown_classes_are_named_once_with_the_fix():
    inp = keras.Input((4,))
    h = inp
    for _ in range(5):
        h = Mystery()(kl.Dense(4)(h))
    model = keras.Model(inp, kl.Dense(2)(Puzzle()(h)))
    with pytest.raises(UnsupportedLayerError) as err:
        tf_lrp.Analyzer(model)
    text = str(err.value)
    assert text.count("test_weightless.Mystery") == 1 and text.count("test_weightless.Puzzle") == 1
    assert "(5 layers: 'mystery', 'mystery_1', 'mystery_2' and 2 more): could not be " \
        "flattened into its parts" in text and "calls TensorFlow directly" in text
    assert text.startswith("cannot explain this model: no LRP rule fits 6 layers of 2 classes:")
    # the fix, whole: the elementwise case in Python and on the command line
    assert ("Custom layers written with keras.ops and Keras layers are explained by their "
            "parts.\nFix: if Mystery is elementwise, map rules.Pass() to it: "
            "Analyzer(model, composites.Overrides(") in text
    assert ("[('Mystery', rules.Pass())])), on the command line --rule Mystery=pass; if it "
            "only moves values, rules.Route(). A custom linear layer with weights: "
            "tf_lrp.layers.register_linear.") in text
    assert len(text) < 1200
    # an operation no table knows (not a custom layer: nothing to flatten)
    erf = keras.Model(inp, kl.Dense(2)(ops.erf(kl.Dense(4)(inp))))
    with pytest.raises(UnsupportedLayerError, match=r"\(1 layer: 'erf'\): is not a layer type "
                       r"tf_lrp knows\n"):
        tf_lrp.Analyzer(erf)
    # the fix works
    fixed = tf_lrp.Analyzer(model, composites.Overrides(
        composites.EpsilonPlus(), [("Mystery", rules.Pass()), (Puzzle, rules.Epsilon())]))
    assert fixed(RNG.normal(size=(2, 4)).astype("float32")).shape == (2, 4)


class Blend(kl.Layer):  # two inputs, raw TensorFlow
    def call(self, inputs):
        return tf.add(inputs[0], tf.multiply(inputs[1], 0.5))


@pytest.mark.parametrize("count", [1, 3])
def test_an_unknown_layer_with_two_inputs_is_not_offered_pass(count):
    """No relaying rule fits a layer with two inputs: the message says so instead of
    suggesting rules.Pass() (which would be refused); three layers are listed whole."""
    inp = keras.Input((4,))
    h = inp
    for i in range(count):
        h = Blend(name=f"blend{i}")([kl.Dense(4)(h), kl.Dense(4)(h)])
    with pytest.raises(UnsupportedLayerError) as err:
        tf_lrp.Analyzer(keras.Model(inp, kl.Dense(2)(h)))
    text = str(err.value)
    assert "Blend has 2 inputs and 1 output(s): no relaying rule fits it whole" in text
    assert "rules.Pass()" not in text and "--rule" not in text
    names = ", ".join(repr(f"blend{i}") for i in range(count))
    layers = "layers" if count > 1 else "layer"
    assert f"({count} {layers}: {names}):" in text


def test_keras2_model_object_names_keras2_and_the_fix():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    with pytest.raises(TypeError, match=r"is a Keras 2 \(tf_keras / tf\.keras 2\.x\) model; "
                       r"tf_lrp explains Keras 3 models\. Fix: save it as \.h5 with Keras 2 "
                       r"\(model\.save\('model\.h5'\)\) and load that file with "
                       r"tf_lrp\.load_model\('model\.h5'\)$"):
        tf_lrp.Analyzer(model)


@pytest.mark.parametrize("resample", [
    lambda: kl.UpSampling2D((2, 3)),
    lambda: kl.UpSampling2D((3, 2), interpolation="bilinear"),
    lambda: kl.Resizing(7, 5, interpolation="bilinear"),
    lambda: kl.UpSampling1D(3),
])
def test_resampling_is_a_copy_or_a_linear_map(resample):
    """Nearest upsampling copies each value, so each input gets the sum of its copies'
    relevance; an interpolation is a linear map U without bias: R_x = x * U^T (R_u / u). U is
    read off by resampling unit vectors; the head is LRP-0 with a bias, R_u = u * v."""
    layer = resample()
    shape = (3, 4) if isinstance(layer, kl.UpSampling1D) else (3, 4, 2)
    x_in = keras.Input(shape)
    u = layer(x_in)
    model = keras.Model(x_in, kl.Dense(2, bias_initializer="ones")(kl.Flatten()(u)))
    v = np.random.default_rng(4).normal(0.2, 1.0, (int(np.prod(u.shape[1:])), 2))
    model.layers[-1].kernel.assign(v.astype("float32"))
    size = int(np.prod(shape))
    basis = np.eye(size, dtype="float32").reshape(size, *shape)
    U = keras.ops.convert_to_numpy(layer(basis)).reshape(size, -1).T  # (outputs, inputs)
    x = np.random.default_rng(5).uniform(0.5, 2.5, (2, size)).astype("float64")
    a = tf_lrp.Analyzer(model, composites.LayerMap([(kl.Dense, rules.Epsilon(1e-9))]))
    r = np.asarray(a(x.reshape(2, *shape).astype("float32"), target=[1, 0])).reshape(2, size)
    for n, t in enumerate([1, 0]):
        uu = U @ x[n]
        expected = x[n] * (U.T @ (uu * v[:, t] / uu))
        np.testing.assert_allclose(r[n], expected, rtol=1e-4, atol=1e-5)


class _ScaledMatmul(kl.Layer):
    """A custom layer with a weight, written with keras.ops: ``relu(x @ k) * 2``."""

    def build(self, shape):
        self.k = self.add_weight(shape=(shape[-1], 3), initializer="random_normal")

    def call(self, x):
        return ops.relu(ops.matmul(x, self.k)) * 2.0


def test_custom_layer_with_a_weight_explains_like_its_parts_under_a_default_rule():
    """A composite's default rule is for layers with weights tf_lrp knows: a custom layer
    written with keras.ops is still flattened into its parts (not kept whole and refused), and
    explains like the same map built from plain layers."""
    inp = keras.Input((5,))
    custom = keras.Model(inp, kl.Dense(2, name="out")(_ScaledMatmul(name="scaled")(inp)))
    randomize(custom, 21)
    custom.get_layer("scaled").set_weights([RNG.normal(0, 0.6, (5, 3)).astype("float32")])
    plain_in = keras.Input((5,))
    h = kl.Rescaling(2.0)(kl.Dense(3, use_bias=False, activation="relu", name="d")(plain_in))
    plain = keras.Model(plain_in, kl.Dense(2, name="out")(h))
    plain.get_layer("d").set_weights(custom.get_layer("scaled").get_weights())
    plain.get_layer("out").set_weights(custom.get_layer("out").get_weights())
    x = RNG.normal(size=(4, 5)).astype("float32")
    composite = composites.LayerMap([("out", rules.Epsilon(0.1))], default=rules.Zero())
    analyzer = tf_lrp.Analyzer(custom, composite)
    assert [name for name, _, _ in analyzer.rule_table()][:2] == ["scaled/matmul", "scaled/relu"]
    # a first-layer rule does not keep it whole either (its weighted op is LRP-0 by design)
    with_first = composites.LayerMap([], default=rules.Zero(), first=rules.ZBox(-3.0, 2.5))
    assert [row[::2] for row in tf_lrp.Analyzer(custom, with_first).rule_table()][:2] == [
        ("scaled/matmul", "Zero()"), ("scaled/relu", "Pass()")]
    want = tf_lrp.Analyzer(plain, composite)(x, target=1)
    np.testing.assert_allclose(analyzer(x, target=1), want, rtol=1e-5,
                               atol=1e-6 * np.abs(want).max())


class _BatchFold(kl.Layer):
    """``x * 2`` by way of a reshape that spells out the batch size (``ops.shape(x)[0]``)."""

    def call(self, x):
        b = ops.shape(x)[0]
        return ops.reshape(ops.reshape(x, (b * 5, 1)) * 2.0, (b, 5))


def test_layer_that_needs_the_batch_size_explains_every_batch_size():
    """A graph that replays only for the batch size it was recorded with: the analyzer is built
    per batch size of the input (3 and 2 here), and explains like the same map from plain
    layers."""
    inp = keras.Input((5,))
    model = keras.Model(inp, kl.Dense(2, name="out")(_BatchFold()(kl.Dense(5, name="d")(inp))))
    randomize(model, 23)
    plain_in = keras.Input((5,))
    plain = keras.Model(plain_in, kl.Dense(2, name="out")(kl.Rescaling(2.0)(
        kl.Dense(5, name="d")(plain_in))))
    for name in ("d", "out"):
        plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    analyzer = tf_lrp.Analyzer(model, rules.Epsilon(0.05))
    reference = tf_lrp.Analyzer(plain, rules.Epsilon(0.05))
    x = RNG.normal(size=(3, 5)).astype("float32")
    for batch in (x, x[:2]):
        want = reference(batch, target=1)
        np.testing.assert_allclose(analyzer(batch, target=1), want, rtol=1e-5,
                                   atol=1e-6 * np.abs(want).max())
        assert analyzer.for_input(batch).graph is not analyzer.for_input(x[:1]).graph


class _SignedShare(rules.BasicRule):
    """A user's rule for a layer without weights: only the inputs' ``sign`` parts (``x+`` or
    ``x-``) make up ``z``; an input known to be non-negative has no negative part (its term
    is ``None`` and enters ``z`` as zeros)."""

    def __init__(self, sign: str):
        super().__init__({"sign": sign})
        self.sign = sign

    def groups(self):
        from tf_lrp.rules.modifiers import negative, positive

        part = positive if self.sign == "positive" else negative
        return [rules.Group((rules.Term(part),))]


@pytest.mark.parametrize("sign", ["positive", "negative"])
def test_custom_input_rule_on_an_add_against_explicit_shares(sign):
    """``Add(ReLU(x1), x2)`` under a custom rule: ``R_i = u_i R / sum_j u_j`` with ``u = x+``
    (the ReLU branch is its own positive part) or ``u = x-`` (the ReLU branch has none: all
    relevance goes to the negative entries of ``x2``), below an LRP-0 Dense, in NumPy."""
    in1, in2 = keras.Input((5,)), keras.Input((5,))
    h = kl.Add(name="add")([kl.ReLU()(in1), in2])
    model = keras.Model([in1, in2], kl.Dense(3, name="top")(h))
    rng = np.random.default_rng(21)
    model.get_layer("top").set_weights([rng.normal(size=(5, 3)).astype("float32"),
                                        np.array([0.3, -0.2, 0.1], "float32")])
    x1, x2 = (rng.normal(size=(4, 5)).astype("float32") for _ in range(2))
    composite = composites.LayerMap([("add", _SignedShare(sign)), (kl.Dense, rules.Zero())],
                                    default=rules.Zero())
    got = tf_lrp.Analyzer(model, composite)([x1, x2], target=[0, 2, 1, 0])

    w, b = (v.astype(np.float64) for v in model.get_layer("top").get_weights())
    a, c = np.maximum(x1, 0).astype(np.float64), x2.astype(np.float64)
    z = (a + c) @ w + b
    r_out = np.zeros_like(z)
    r_out[np.arange(4), [0, 2, 1, 0]] = z[np.arange(4), [0, 2, 1, 0]]
    r_h = (a + c) * ((r_out / z) @ w.T)  # LRP-0 at the Dense
    u1, u2 = (a, np.maximum(c, 0)) if sign == "positive" else (np.zeros_like(a),
                                                                 np.minimum(c, 0))
    total = u1 + u2
    s = np.divide(r_h, total, out=np.zeros_like(r_h), where=total != 0)
    want = [u1 * s, u2 * s]  # ReLU passes its share to x1 unchanged
    assert np.abs(want[1]).max() > 1e-2
    for g, wnt in zip(got, want):
        np.testing.assert_allclose(g, wnt, rtol=1e-4, atol=1e-5 * np.abs(wnt).max())


class _Centre(kl.Layer):
    """Mixes positions: each output depends on every input of its row."""

    def call(self, x):
        return x - ops.mean(x, axis=-1, keepdims=True)


class _Roll(kl.Layer):
    """Moves values: the first input of a row changes only the row's second output."""

    def call(self, x):
        return ops.roll(x, 1, axis=-1)


class _Squash(kl.Layer):
    """Elementwise."""

    def call(self, x):
        return 2.0 * ops.tanh(x)


@pytest.mark.parametrize("mixer", [_Centre, _Roll])
def test_pass_is_refused_on_a_custom_layer_that_mixes_positions(mixer):
    """``rules.Pass()`` mapped to a custom layer: accepted where it is elementwise, refused
    (naming the layer and the fix) where changing one input changes other outputs."""
    from tf_lrp.errors import UnsupportedLayerError as Unsupported

    def model(layer):
        inp = keras.Input((4, 3))
        return keras.Model(inp, kl.Dense(2)(kl.Flatten()(layer(inp))))

    x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype("float32")
    ok = tf_lrp.Analyzer(model(_Squash(name="squash")),
                         composites.Overrides(composites.EpsilonPlus(), [("squash", rules.Pass())]))
    assert np.isfinite(ok(x)).all()
    with pytest.raises(Unsupported, match=r"(?s)mixer.*would delete what this layer computes"):
        tf_lrp.Analyzer(model(mixer(name="mixer")),
                        composites.Overrides(composites.EpsilonPlus(), [("mixer", rules.Pass())]))


class _two:  # noqa: N801 - reads as a marker in the table
    """An expression of both inputs ``x`` and ``y``."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, y):
        return self.fn(x, y)


_C6 = np.linspace(-1.0, 1.0, 36, dtype="float32").reshape(6, 6)
_K = {"conv": np.ones((3, 6, 2), "float32"), "depthwise": np.ones((3, 6, 1), "float32"),
      "transpose": np.ones((3, 2, 6), "float32"), "pointwise": np.ones((1, 6, 2), "float32")}
#: expected handling -> name -> a keras.ops expression of ``x`` (or of ``x`` and ``y``: _two)
_OP_HANDLING = {
    "pass": {
        "relu": ops.relu, "relu6": ops.relu6, "sigmoid": ops.sigmoid,
        "hard_sigmoid": ops.hard_sigmoid, "silu": ops.silu, "hard_silu": ops.hard_silu,
        "gelu": ops.gelu, "tanh": ops.tanh, "elu": ops.elu, "selu": ops.selu,
        "softplus": ops.softplus, "softsign": ops.softsign, "leaky_relu": ops.leaky_relu,
        "softmax": ops.softmax, "celu": ops.celu, "glu": ops.glu, "sparse_plus": ops.sparse_plus,
        "squareplus": ops.squareplus, "exp": ops.exp, "stop_gradient": ops.stop_gradient,
        "clip": lambda x: ops.clip(x, -0.5, 2.0), "hard_shrink": ops.hard_shrink,
        "soft_shrink": ops.soft_shrink, "tanh_shrink": ops.tanh_shrink,
        "sparse_sigmoid": ops.sparse_sigmoid},
    "route": {
        "reshape": lambda x: ops.reshape(x, (-1, 24)),
        "transpose": lambda x: ops.transpose(x, (0, 2, 1)),
        "squeeze": lambda x: ops.squeeze(ops.expand_dims(x, 1), 1),
        "expand_dims": lambda x: ops.expand_dims(x, 1),
        "concatenate": _two(lambda x, y: ops.concatenate([x, y], 1)), "getitem": lambda x: x[:, 1],
        "stack": _two(lambda x, y: ops.stack([x, y], 1)), "tile": lambda x: ops.tile(x, (1, 2, 1)),
        "repeat": lambda x: ops.repeat(x, 2, axis=1), "cast": lambda x: ops.cast(x, "float16"),
        "moveaxis": lambda x: ops.moveaxis(x, 1, 2), "swapaxes": lambda x: ops.swapaxes(x, 1, 2),
        "pad": lambda x: ops.pad(x, ((0, 0), (1, 2), (0, 0))),
        "split": lambda x: ops.split(x, 2, axis=-1)[0],
        "slice": lambda x: ops.slice(x, (0, 1, 0), (1, 2, 3)),
        "unstack": lambda x: ops.unstack(x, axis=1)[0],
        "broadcast_to": lambda x: ops.broadcast_to(x[:, :1], (1, 4, 6)),
        "where": _two(lambda x, y: ops.where(x > 0, x, y)), "take": lambda x: ops.take(x, [0, 2], axis=1),
        "take_along_axis": lambda x: ops.take_along_axis(x, np.zeros((1, 4, 6), "int32"), axis=1),
        "roll": lambda x: ops.roll(x, 1, axis=1), "flip": lambda x: ops.flip(x, 1),
        "tril": ops.tril, "triu": ops.triu, "maximum": _two(ops.maximum), "minimum": _two(ops.minimum),
        "max": lambda x: ops.max(x, axis=1), "min": lambda x: ops.min(x, axis=1)},
    "proportional": {
        "mean": lambda x: ops.mean(x, 1), "average": lambda x: ops.average(x, 1),
        "add": _two(ops.add), "subtract": _two(ops.subtract), "sum": lambda x: ops.sum(x, 1),
        "negative": ops.negative, "cumsum": lambda x: ops.cumsum(x, 1),
        "multiply_constant": lambda x: ops.multiply(x, 2.0), "divide": lambda x: ops.divide(x, 3.0),
        "true_divide": lambda x: ops.true_divide(x, 3.0),
        "einsum": lambda x: ops.einsum("btc,cd->btd", x, _C6), "matmul": lambda x: ops.matmul(x, _C6),
        "dot": lambda x: ops.dot(x, _C6), "tensordot": lambda x: ops.tensordot(x, _C6, 1),
        "conv": lambda x: ops.conv(x, _K["conv"]),
        "depthwise_conv": lambda x: ops.depthwise_conv(x, _K["depthwise"]),
        "conv_transpose": lambda x: ops.conv_transpose(x, _K["transpose"], 1),
        "separable_conv": lambda x: ops.separable_conv(x, _K["depthwise"], _K["pointwise"])},
    "product": {"multiply": _two(ops.multiply)},
    "none": {
        "not_equal": _two(ops.not_equal), "equal": _two(ops.equal), "greater": _two(ops.greater),
        "greater_equal": _two(ops.greater_equal), "less": _two(ops.less),
        "less_equal": _two(ops.less_equal),
        "logical_and": _two(lambda x, y: ops.logical_and(x > 0, y > 0)),
        "logical_or": _two(lambda x, y: ops.logical_or(x > 0, y > 0)),
        "logical_xor": _two(lambda x, y: ops.logical_xor(x > 0, y > 0)),
        "logical_not": lambda x: ops.logical_not(x > 0), "any": lambda x: ops.any(x > 0, 1),
        "all": lambda x: ops.all(x > 0, 1), "isnan": ops.isnan, "isfinite": ops.isfinite,
        "zeros_like": ops.zeros_like, "ones_like": ops.ones_like,
        "full_like": lambda x: ops.full_like(x, 2.0), "argmax": lambda x: ops.argmax(x, 1),
        "argmin": lambda x: ops.argmin(x, 1), "argsort": lambda x: ops.argsort(x, 1),
        "one_hot": lambda x: ops.one_hot(ops.argmax(x, -1), 3)},
}


@pytest.mark.parametrize("kind, name", [(k, n) for k, table in _OP_HANDLING.items()
                                        for n in table])
def test_every_op_in_the_tables_is_handled_as_listed(kind, name):
    """Each Keras operation the handling tables name, recorded as an op node from its
    ``keras.ops`` call, is handled as its table says (a misspelt class name is silently
    skipped by the lookup, so each needs its own case)."""
    fn = _OP_HANDLING[kind][name]
    x, y = keras.Input((4, 6)), keras.Input((4, 6))
    two = isinstance(fn, _two)
    model = keras.Model([x, y], fn(x, y) if two else fn(x))
    op = model.operations[-1]
    assert weightless.handling(op, 2 if two else 1) == kind


@pytest.mark.parametrize("name, fn", [
    ("top_k", lambda x, y: ops.top_k(x, 2)[0]), ("sort", lambda x, y: ops.sort(x)),
    ("fft", lambda x, y: ops.fft((x, y))[0]), ("fft2", lambda x, y: ops.fft2((x, y))[0]),
    ("rfft", lambda x, y: ops.rfft(x)[0]), ("irfft", lambda x, y: ops.irfft((x, y))),
    ("ifft2", lambda x, y: ops.ifft2((x, y))[0]),
    ("stft", lambda x, y: ops.stft(ops.reshape(x, (-1, 32)), 8, 4, 8)[0]),
    ("istft", lambda x, y: ops.istft((x, y), 8, 4, 14))], ids=lambda v: v if isinstance(v, str) else "")
def test_every_op_without_a_rule_is_refused_with_its_reason(name, fn):
    """Selection by rank and Fourier transforms have no LRP rule: each is named with the
    reason (its table entry resolves to the op Keras records)."""
    x, y = keras.Input((4, 8)), keras.Input((4, 8))
    op = keras.Model([x, y], fn(x, y)).operations[-1]
    reason = weightless.no_rule_reason(op)
    assert reason is not None and "no rule" in reason
    assert ("Fourier" in reason) == (name not in ("top_k", "sort"))


_GRID = np.concatenate([-np.geomspace(4, 1e-3, 40), [0.0],
                        np.geomspace(1e-3, 4, 40)]).astype("float32")
_ACTIVATIONS = ["relu", "relu6", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
                "softsign", "leaky_relu", "exponential", "linear", "hard_tanh", "celu",
                "sparse_plus", "squareplus", "log_sigmoid", "silu", "swish", "gelu", "hard_silu",
                "hard_swish", "mish", "hard_shrink", "soft_shrink", "tanh_shrink",
                "sparse_sigmoid"]


def _properties(fn) -> tuple[bool, bool, bool]:
    """``(f(0) = 0, f(x) = 0 for every x <= 0, non-decreasing)`` on a grid through 0."""
    y = np.asarray(fn(tf.constant(_GRID)))
    zero = len(_GRID) // 2
    return bool(y[zero] == 0.0), bool(np.all(y[:zero + 1] == 0.0)), bool(np.all(np.diff(y) >= 0))


@pytest.mark.parametrize("name", _ACTIVATIONS)
def test_activation_facts_hold_numerically(name):
    """What the value-range analysis assumes of an activation (it keeps 0, it zeroes negatives,
    it is monotone) holds, and holds exactly where the function has the property: checked on
    the function itself, for the layer and for the op node ``keras.ops`` records."""
    if not hasattr(keras.activations, name):
        pytest.skip(f"keras.activations.{name} is not in this Keras")
    fn = keras.activations.get(name)
    want = _properties(fn)

    def facts(layer):
        return (weightless.keeps_zero(layer), weightless.zeroes_negatives(layer),
                weightless._monotone(layer, 1))

    assert facts(kl.Activation(name)) == want
    op_fn = {"exponential": "exp"}.get(name, name)
    if hasattr(ops, op_fn) and name not in ("linear", "swish", "hard_swish", "log_sigmoid"):
        x = keras.Input((4,))
        op = keras.Model(x, getattr(ops, op_fn)(x)).operations[-1]
        if weightless.handling(op) == weightless.PASS:  # the activation ops of the tables
            assert facts(op) == want


@pytest.mark.parametrize("name", ["hard_shrink", "soft_shrink", "tanh_shrink", "sparse_sigmoid"])
def test_activation_op_nodes_explain_like_their_layers(name):
    """``keras.ops.<activation>(x)`` as an op node explains like ``Activation(name)``, per
    input, under a rule that reads the value ranges (z+ on the Dense after it)."""
    def build(as_op):
        inp = keras.Input((5,))
        h = kl.Dense(4, name="d1")(inp)
        h = getattr(ops, name)(h) if as_op else kl.Activation(name)(h)
        return keras.Model(inp, kl.Dense(3, name="d2")(h))

    keras.utils.set_random_seed(8)
    op_model, layer_model = build(True), build(False)
    layer_model.set_weights(op_model.get_weights())
    x = np.random.default_rng(9).normal(0, 2, size=(3, 5)).astype("float32")
    comp = composites.LayerMap([("d2", rules.ZPlus())], default=rules.Epsilon(0.05))
    want = tf_lrp.Analyzer(layer_model, comp)(x, target=[2, 0, 1])
    got = tf_lrp.Analyzer(op_model, comp)(x, target=[2, 0, 1])
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
