"""Graph walking, canonizers and error handling of the LRP engine.

The independent check used across layer types and graph shapes: in a network of ReLUs, linear
layers, max/average pooling, Add and reshapes, LRP-0 at every layer equals gradient x input
exactly (each ``z`` in a denominator cancels the ``z`` of the relevance above it). The gradient
here is taken with a plain ``tf.GradientTape`` over the *original* Keras model, so it shares no
code with the engine.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as kl

import tf_lrp
from tf_lrp import composites, rules
from tf_lrp.errors import InputError, UnsupportedLayerError

RNG = np.random.default_rng(0)


def keras_gradient_x_input(model, x, target):
    xs = [tf.constant(a) for a in (x if isinstance(x, list) else [x])]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = model(xs if len(xs) > 1 else xs[0], training=False)
        selected = tf.reduce_sum(y * tf.one_hot(target, y.shape[-1]))
    grads = tape.gradient(selected, xs)
    out = [(a * g).numpy() for a, g in zip(xs, grads)]
    return out if len(out) > 1 else out[0]


def lrp0(model, x, target):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tf_lrp.Analyzer(model, rules.Zero())(x, target=target)


def randomize_bn(model):
    for layer in model.layers:
        if isinstance(layer, kl.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([RNG.uniform(0.5, 2, n), RNG.normal(size=n),
                               RNG.normal(size=n), RNG.uniform(0.5, 2, n)])


def image_model(layer_fn, shape=(8, 8, 3)):
    inp = keras.Input(shape)
    h = layer_fn(inp)
    h = kl.ReLU()(h)
    out = kl.Dense(4)(kl.Flatten()(h))
    return keras.Model(inp, out)


LAYER_CASES = {
    "conv2d_same_stride2": lambda: image_model(lambda x: kl.Conv2D(4, 3, strides=2, padding="same")(x)),
    "conv2d_dilated": lambda: image_model(lambda x: kl.Conv2D(3, 3, dilation_rate=2)(x)),
    "depthwise": lambda: image_model(lambda x: kl.DepthwiseConv2D(3, depth_multiplier=2)(x)),
    "separable": lambda: image_model(lambda x: kl.SeparableConv2D(5, 3, padding="same")(x)),
    "conv2d_transpose": lambda: image_model(lambda x: kl.Conv2DTranspose(3, 3, strides=2)(x)),
    "conv1d_causal": lambda: image_model(lambda x: kl.Conv1D(4, 3, padding="causal")(x), (10, 3)),
    "conv3d": lambda: image_model(lambda x: kl.Conv3D(2, 2)(x), (4, 4, 4, 2)),
    "pool_mix": lambda: image_model(
        lambda x: kl.AveragePooling2D(2)(kl.MaxPooling2D(2, padding="same")(kl.Conv2D(4, 3)(x)))),
    "padding_cropping": lambda: image_model(
        lambda x: kl.Cropping2D(1)(kl.ZeroPadding2D(2)(kl.Conv2D(2, 3)(x)))),
    "leaky_relu_dropout": lambda: image_model(
        lambda x: kl.Dropout(0.5)(kl.LeakyReLU(0.1)(kl.Conv2D(2, 3)(x)))),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_lrp0_equals_gradient_x_input(case):
    keras.utils.set_random_seed(1)
    model = LAYER_CASES[case]()
    x = RNG.normal(size=(3, *model.input_shape[1:])).astype("float32")
    expected = keras_gradient_x_input(model, x, [0, 2, 3])
    got = lrp0(model, x, [0, 2, 3])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert np.abs(got).max() > 0


def test_canonized_forward_reproduces_model_output():
    for case, make in LAYER_CASES.items():
        keras.utils.set_random_seed(2)
        model = make()
        x = RNG.normal(size=(2, *model.input_shape[1:])).astype("float32")
        got = tf_lrp.Analyzer(model, rules.Epsilon()).predict(x)
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5, err_msg=case)


# ----------------------------------------------------------------------- graph shapes
def residual_model():
    inp = keras.Input((6, 6, 2))
    a = kl.Conv2D(3, 3, padding="same", activation="relu", name="conv_a")(inp)
    b = kl.Conv2D(3, 3, padding="same", activation="relu", name="conv_b")(a)
    c = kl.Add(name="add")([a, b])
    d = kl.Concatenate(name="concat")([c, a])
    e = kl.GlobalAveragePooling2D(name="gap")(d)
    return keras.Model(inp, kl.Dense(3, name="dense")(e))


def nested_model():
    inner_seq = keras.Sequential([keras.Input((5,)), kl.Dense(6, activation="relu"),
                                  kl.Dense(4, activation="relu")], name="inner_seq")
    i2 = keras.Input((4,))
    inner_fn = keras.Model(i2, kl.Dense(3, activation="relu")(i2), name="inner_fn")
    inp = keras.Input((5,))
    return keras.Model(inp, kl.Dense(2)(inner_fn(inner_seq(inp))))


def shared_and_multi_input_model():
    shared = kl.Dense(4, activation="relu", name="shared")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    h = kl.Concatenate()([shared(a), shared(b)])
    return keras.Model([a, b], kl.Dense(2)(h))


def sequential_model():
    model = keras.Sequential([kl.Dense(5, activation="relu"), kl.Dense(3)])
    model(np.zeros((7, 4), "float32"))  # built by an eager call: fixed batch dimension 7
    return model


@pytest.mark.parametrize("make", [residual_model, nested_model, sequential_model])
def test_graph_shapes_lrp0(make):
    keras.utils.set_random_seed(3)
    model = make()
    x = RNG.normal(size=(4, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(lrp0(model, x, 1), keras_gradient_x_input(model, x, [1] * 4),
                               rtol=1e-4, atol=1e-6)


def test_shared_layer_and_multi_input():
    keras.utils.set_random_seed(4)
    model = shared_and_multi_input_model()
    x = [RNG.normal(size=(3, 3)).astype("float32") for _ in range(2)]
    got = lrp0(model, x, 0)
    assert isinstance(got, list) and len(got) == 2
    for g, e in zip(got, keras_gradient_x_input(model, x, [0] * 3)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    names = [n.name for n in tf_lrp.Analyzer(model, rules.Zero()).graph.nodes]
    assert "shared" in names and "shared:1" in names


def test_nested_node_names():
    names = [n.name for n in tf_lrp.Analyzer(nested_model(), rules.Zero()).graph.nodes]
    assert names[0] == "inner_seq/dense" or names[0].startswith("inner_seq/")
    assert any(n.startswith("inner_fn/") for n in names)


def test_multi_output_requires_choice():
    inp = keras.Input((3,))
    h = kl.Dense(4, activation="relu")(inp)
    model = keras.Model(inp, [kl.Dense(2, name="o1")(h), kl.Dense(5, name="o2")(h)])
    with pytest.raises(InputError, match="2 outputs.*output="):
        tf_lrp.Analyzer(model, rules.Epsilon())
    x = RNG.normal(size=(2, 3)).astype("float32")
    r1 = tf_lrp.Analyzer(model, rules.Zero(), output=1)(x, target=4)
    y = model(x)[1].numpy()[:, 4]
    with tf.GradientTape() as tape:
        xt = tf.constant(x)
        tape.watch(xt)
        y2 = model(xt)[1][:, 4]
    np.testing.assert_allclose(r1, (xt * tape.gradient(y2, xt)).numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tf_lrp.Analyzer(model, "epsilon", output="o2").predict(x)[:, 4], y,
                               rtol=1e-6)


# ----------------------------------------------------------------------- canonizers
def bn_model(folded: bool):
    inp = keras.Input((6, 6, 2))
    if folded:
        h = kl.Conv2D(4, 3, name="conv")(inp)
    else:
        h = kl.BatchNormalization(name="bn")(kl.Conv2D(4, 3, name="conv")(inp))
    h = kl.ReLU()(h)
    d = kl.Dense(5, name="dense")(kl.Flatten()(h))
    if not folded:
        d = kl.BatchNormalization(name="bn2")(d)
    return keras.Model(inp, kl.Dense(3, name="out")(kl.ReLU()(d)))


def test_batchnorm_fold_matches_hand_folded_twin():
    keras.utils.set_random_seed(5)
    model = bn_model(False)
    randomize_bn(model)
    twin = bn_model(True)
    for name, bn in (("conv", "bn"), ("dense", "bn2")):
        w, b = model.get_layer(name).get_weights()
        gamma, beta, mean, var = model.get_layer(bn).get_weights()
        s = gamma / np.sqrt(var + model.get_layer(bn).epsilon)
        twin.get_layer(name).set_weights([w * s, (b - mean) * s + beta])
    twin.get_layer("out").set_weights(model.get_layer("out").get_weights())
    x = RNG.normal(size=(3, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(model(x), twin(x), rtol=1e-5, atol=1e-5)
    for comp in (composites.EpsilonPlus(), composites.EpsilonGammaBox(-4, 4),
                 composites.EpsilonAlpha2Beta1()):
        a = tf_lrp.Analyzer(model, comp)
        assert [n.name for n in a.graph.nodes][0] == "conv+bn"
        assert not any(n.name in ("bn", "bn2") for n in a.graph.nodes)
        np.testing.assert_allclose(a(x, target=2), tf_lrp.Analyzer(twin, comp)(x, target=2),
                                   rtol=1e-4, atol=1e-6)


def test_batchnorm_fold_follows_training():
    """The fold reads live variables: changing BN statistics changes the result, no retrace."""
    keras.utils.set_random_seed(6)
    model = bn_model(False)
    a = tf_lrp.Analyzer(model, rules.Epsilon())
    x = RNG.normal(size=(2, 6, 6, 2)).astype("float32")
    before = a(x, target=0)
    randomize_bn(model)
    after = a(x, target=0)
    assert np.abs(before - after).max() > 1e-3
    assert a._explain_fn.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(a.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_unfoldable_batchnorm_is_affine_epsilon():
    """BN after a ReLU cannot be folded: it is an affine layer with the Epsilon rule."""
    keras.utils.set_random_seed(7)
    inp = keras.Input((4,))
    h = kl.BatchNormalization()(kl.Dense(5, activation="relu")(inp))
    model = keras.Model(inp, kl.Dense(2)(h))
    randomize_bn(model)
    x = RNG.normal(size=(3, 4)).astype("float32")
    a = tf_lrp.Analyzer(model, rules.Zero())
    assert any(type(n.layer) is kl.BatchNormalization for n in a.graph.nodes)
    np.testing.assert_allclose(a(x, target=1), keras_gradient_x_input(model, x, [1] * 3),
                               rtol=1e-4, atol=1e-6)


def test_softmax_is_stripped_with_warning():
    inp = keras.Input((3,))
    logits = kl.Dense(4)(inp)
    for out in (kl.Softmax()(logits), kl.Activation("softmax")(logits)):
        model = keras.Model(inp, out)
        with pytest.warns(UserWarning, match="softmax"):
            a = tf_lrp.Analyzer(model, rules.Epsilon())
        x = RNG.normal(size=(2, 3)).astype("float32")
        np.testing.assert_allclose(a.predict(x), keras.Model(inp, logits)(x).numpy(), rtol=1e-6)


# ----------------------------------------------------------------------- starts, filter
def small_mlp():
    keras.utils.set_random_seed(8)
    inp = keras.Input((6,))
    h = kl.Dense(8, activation="relu", use_bias=False)(inp)
    return keras.Model(inp, kl.Dense(4, use_bias=False)(h))


def test_start_modes():
    model = small_mlp()
    x = RNG.normal(size=(5, 6)).astype("float32")
    y = model(x).numpy()
    t = np.array([0, 1, 2, 3, 0])
    # LRP-0 conserves on a bias-free net for either sign of the outputs (z+ would drop the
    # relevance of a negative output whose positive part is zero)
    r_all = tf_lrp.Analyzer(model, rules.Zero(), start="all")(x)
    np.testing.assert_allclose(r_all.sum(1), y.sum(1), rtol=1e-5, atol=1e-6)
    r_lo = tf_lrp.Analyzer(model, rules.Zero(), start="logodds")(x, target=t)
    q = np.exp(y) * (1 - np.eye(4)[t])
    q /= q.sum(1, keepdims=True)
    expected_total = (q * (y[np.arange(5), t][:, None] - y)).sum(1)
    np.testing.assert_allclose(r_lo.sum(1), expected_total, rtol=1e-4, atol=1e-6)
    p = np.exp(y) / np.exp(y).sum(1, keepdims=True)
    logodds = np.log(p[np.arange(5), t] / (1 - p[np.arange(5), t]))
    entropy = -(q * np.log(np.where(q > 0, q, 1))).sum(1)
    np.testing.assert_allclose(expected_total, logodds + entropy, rtol=1e-4, atol=1e-5)


def test_default_target_is_argmax_and_per_sample_targets():
    model = small_mlp()
    x = RNG.normal(size=(4, 6)).astype("float32")
    a = tf_lrp.Analyzer(model, rules.ZPlus())
    y = model(x).numpy()
    np.testing.assert_allclose(a(x), a(x, target=y.argmax(1)), rtol=0, atol=0)
    np.testing.assert_allclose(a(x).sum(1), y.max(1), rtol=1e-5)
    assert a._explain_fn.experimental_get_tracing_count() == 1


def test_relevance_filter_keeps_top_fraction():
    model = small_mlp()
    x = RNG.normal(size=(3, 6)).astype("float32")
    full = tf_lrp.Analyzer(model, rules.Epsilon())
    filt = tf_lrp.Analyzer(model, rules.Epsilon(), relevance_filter=0.25)
    lw = filt.layerwise(x, 1)
    # at the hidden layer (8 units) at most ceil(0.25 * 8) = 2 relevances per sample survive
    W2 = model.layers[2].kernel.numpy()
    a1 = np.maximum(x @ model.layers[1].kernel.numpy(), 0)
    r_hidden = a1 * W2[:, 1] * (a1 @ W2[:, 1] / (a1 @ W2[:, 1] + 1e-6))[:, None]
    kept = np.sort(r_hidden, axis=1)[:, -2:]
    expected = np.where(r_hidden >= kept[:, :1], r_hidden, 0)
    W1 = model.layers[1].kernel.numpy()
    z1 = x @ W1
    r_in = x * ((expected / (z1 + 1e-6 * np.where(z1 >= 0, 1, -1))) @ W1.T)
    np.testing.assert_allclose(lw["input"], r_in, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(filt(x, target=1), r_in, rtol=1e-4, atol=1e-6)  # traced path
    assert not np.allclose(full(x, target=1), lw["input"])
    with pytest.raises(ValueError, match="relevance_filter"):
        tf_lrp.Analyzer(model, rules.Epsilon(), relevance_filter=1.5)


def test_batch_size_splits_without_changing_results():
    model = small_mlp()
    x = RNG.normal(size=(7, 6)).astype("float32")
    whole = tf_lrp.Analyzer(model, "epsilon_plus")(x, target=2)
    split = tf_lrp.Analyzer(model, "epsilon_plus", batch_size=3)(x, target=2)
    np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def analyzer():
    return tf_lrp.Analyzer(small_mlp(), rules.Epsilon())


@pytest.mark.parametrize("bad, words", [
    (np.zeros((2, 5), "float32"), "shape \\(2, 5\\).*\\(batch, 6\\)"),
    (np.zeros(6, "float32"), "single sample.*np.newaxis"),
    (np.array([["a"] * 6]), "dtype"),
    (np.array([[0, 0, np.nan, 0, 0, 0], [0] * 6], "float32"), "NaN or Inf in sample\\(s\\) \\[0\\]"),
    (np.array([[0] * 6, [0, np.inf, 0, 0, 0, 0]], "float32"), "NaN or Inf in sample\\(s\\) \\[1\\]"),
    (np.zeros((0, 6), "float32"), "empty batch"),
])
def test_bad_inputs(analyzer, bad, words):
    with pytest.raises(InputError, match=words):
        analyzer(bad)


@pytest.mark.parametrize("target, words", [
    (4, "target 4 is out of range.*4 entries.*0..3"),
    (-1, "out of range"),
    ([0, 1, 2], "3 entries for a batch of 2"),
    (1.5, "integer"),
    ("a", "integer"),
])
def test_bad_targets(analyzer, target, words):
    with pytest.raises(InputError, match=words):
        analyzer(np.zeros((2, 6), "float32"), target=target)


def test_integer_inputs_are_cast(analyzer):
    r = analyzer(np.ones((2, 6), "int64"), target=0)
    assert r.dtype == np.float32


def test_multi_input_needs_list():
    a = tf_lrp.Analyzer(shared_and_multi_input_model(), rules.Epsilon())
    with pytest.raises(InputError, match="2 inputs.*list of 2"):
        a(np.zeros((2, 3), "float32"))
    with pytest.raises(InputError, match="different batch sizes"):
        a([np.zeros((2, 3), "float32"), np.zeros((3, 3), "float32")])


class Scale(kl.Layer):
    def call(self, x):
        return x * 2.0


def test_unsupported_layer_names_layer_class_and_fix():
    inp = keras.Input((4,))
    model = keras.Model(inp, kl.Dense(2)(Scale(name="my_scale")(kl.Dense(3)(inp))))
    with pytest.raises(UnsupportedLayerError) as err:
        tf_lrp.Analyzer(model, rules.Epsilon())
    msg = str(err.value)
    assert "'my_scale'" in msg and "Scale" in msg and "LayerMap" in msg and "rules.Pass()" in msg
    # the fix the message gives works
    a = tf_lrp.Analyzer(model, composites.LayerMap([(Scale, rules.Pass())], default=rules.Epsilon()))
    assert a(np.ones((1, 4), "float32")).shape == (1, 4)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = kl.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedLayerError, match="subclassed.*functional API"):
        tf_lrp.Analyzer(net, rules.Epsilon())


def test_bad_arguments():
    model = small_mlp()
    with pytest.raises(ValueError, match="start"):
        tf_lrp.Analyzer(model, start="middle")
    with pytest.raises(KeyError, match="unknown composite.*epsilon_plus"):
        tf_lrp.Analyzer(model, "no_such_composite")
    with pytest.raises(TypeError, match="keyword"):
        tf_lrp.Analyzer(model, rules.Epsilon(), low=0)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        rules.AlphaBeta(alpha=3, beta=1)


def test_composite_registry_and_first_layer():
    assert {"epsilon_plus", "epsilon_alpha2_beta1", "epsilon_plus_flat", "epsilon_gamma_box",
            "deep_taylor"} <= set(composites.names())
    keras.utils.set_random_seed(9)
    model = residual_model()
    a = tf_lrp.Analyzer(model, "epsilon_gamma_box", low=-2, high=2)
    table = {name: rule for name, _, rule in a.rule_table()}
    assert table["conv_a"].startswith("ZBox") and table["conv_b"].startswith("Gamma")
    assert table["conv_a/activation"] == "Pass()"
    assert table["dense"].startswith("Epsilon(epsilon=0.25") and table["add"] == "Zero()"
    assert table["concat"] == "Route()" and table["gap"] == "Zero()"


# ----------------------------------------------------------------------- legacy files
FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["legacy_nested", "legacy_depthwise", "legacy_sequential",
                                  "legacy_layers", "legacy_nested_edge"])
def test_legacy_fixtures_explain(name):
    """tf.keras 2 files (nested models, depthwise/separable convolutions) load and explain.

    The canonized forward reproduces the outputs tf.keras 2 stored, and LRP-0 equals
    gradient x input on the loaded model, as it must for ReLU networks.
    """
    model = tf_lrp.load_model(FIXTURES / f"{name}.h5")
    data = np.load(FIXTURES / f"{name}.npz")
    x, y = data["x"], data["y"] if "y" in data.files else data["y0"]
    kw = {"output": 0} if len(model.outputs) > 1 else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lrp0_analyzer = tf_lrp.Analyzer(model, rules.Zero(), **kw)
        gxi = tf_lrp.analyzers.GradientXInput(model, **kw)
        preset = tf_lrp.Analyzer(model, "epsilon_plus", **kw)
    logits = lrp0_analyzer.predict(x)
    if np.allclose(y.sum(1), 1, atol=1e-5) and not np.allclose(logits.sum(1), 1, atol=1e-3):
        logits = tf.nn.softmax(logits).numpy()  # the stripped softmax
    np.testing.assert_allclose(logits, y, rtol=1e-4, atol=1e-5)
    expected = gxi(x, target=1)
    got = lrp0_analyzer(x, target=1)
    if name == "legacy_nested_edge":
        # tanh is not positively homogeneous (tanh(z)/z is not its slope): the identity fails
        assert np.abs(got - expected).max() > 1e-3
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    r = preset(x)
    assert r.shape == x.shape and np.isfinite(r).all() and np.abs(r).max() > 0
