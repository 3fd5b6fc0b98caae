"""Graph walking, canonizers and error handling of the LRP engine.

The independent check used across layer types and graph shapes: in a network of ReLUs, linear
layers, max/average pooling, Add and reshapes, LRP-0 at every layer equals gradient x input
exactly (each ``z`` in a denominator cancels the ``z`` of the relevance above it). The gradient
here is taken with a plain ``tf.GradientTape`` over the *original* Keras model, so it shares no
code with the engine.
"""

from __future__ import annotations

import re
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
    with pytest.raises(InputError, match=r"^no model output named 'o3'; outputs: o1, o2$"):
        tf_lrp.Analyzer(model, "epsilon", output="o3")


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


def test_unfoldable_batchnorm_passes_relevance():
    """BN after a ReLU cannot be folded: an elementwise affine layer, relevance passes it.

    Mapped explicitly to a rule (here LRP-0), it is the affine map with that rule again.
    """
    keras.utils.set_random_seed(7)
    inp = keras.Input((4,))
    h = kl.BatchNormalization()(kl.Dense(5, activation="relu")(inp))
    model = keras.Model(inp, kl.Dense(2)(h))
    randomize_bn(model)
    x = RNG.normal(size=(3, 4)).astype("float64")
    a = tf_lrp.Analyzer(model, rules.Zero())
    assert any(type(n.layer) is kl.BatchNormalization for n in a.graph.nodes)
    assert dict((n, r) for n, _, r in a.rule_table())[model.layers[2].name] == "Pass()"
    # numpy: LRP-0 on both Dense layers, the BN output's relevance unchanged at its input
    w1, b1 = (v.numpy().astype("float64") for v in model.layers[1].weights)
    w2, b2 = (v.numpy().astype("float64") for v in model.layers[3].weights)
    hidden = np.maximum(x @ w1 + b1, 0.0)
    normed = model.layers[2](hidden.astype("float32"), training=False).numpy().astype("float64")
    y = normed @ w2 + b2
    r_normed = normed * w2[:, 1] * (y[:, 1] / y[:, 1])[:, None]  # R_j = a_j w_j1 y_1 / z_1
    z1 = x @ w1 + b1
    want = x * ((r_normed / z1) @ w1.T)
    np.testing.assert_allclose(a(x.astype("float32"), target=1), want, rtol=1e-4, atol=1e-6)
    affine = tf_lrp.Analyzer(model, composites.LayerMap([(kl.BatchNormalization, rules.Zero())],
                                                        default=rules.Zero()))
    np.testing.assert_allclose(affine(x.astype("float32"), target=1),
                               keras_gradient_x_input(model, x.astype("float32"), [1] * 3),
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
    # exact on purpose: the same traced function on the same batch, and the one-hot mask it
    # builds from target=None (argmax) is the same as from the explicit targets
    np.testing.assert_array_equal(a(x), a(x, target=y.argmax(1)))
    np.testing.assert_allclose(a(x).sum(1), y.max(1), rtol=1e-5)
    assert a._explain_fn.experimental_get_tracing_count() == 1


def test_relevance_filter_keeps_top_fraction():
    model = small_mlp()
    full = tf_lrp.Analyzer(model, rules.Epsilon())
    filt = tf_lrp.Analyzer(model, rules.Epsilon(), relevance_filter=0.25)
    # samples whose explained output is positive (a negative one would not pass the filter
    # at the output layer, where the zeros of the other outputs are larger)
    x = np.random.default_rng(7).normal(size=(12, 6)).astype("float32")
    x = x[model(x).numpy()[:, 1] > 0][:3]
    assert len(x) == 3
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


@pytest.mark.parametrize(("fraction", "kept"), [(0.3, 3), (0.5, 4), (0.9, 7)])
def test_relevance_filter_rounds_the_count_up(fraction, kept):
    """ceil(fraction * n) values pass: 0.3 of 7 is 2.1, so 3 (not 2) values pass.

    The filtered layer has an identity kernel and LRP-0, which hands its (filtered) output
    relevance unchanged to the input: the input relevance shows what the filter let through.
    """
    inp = keras.Input((7,))
    eye = kl.Dense(7, use_bias=False, kernel_initializer="identity", name="eye")(inp)
    model = keras.Model(inp, kl.Dense(3, use_bias=False, name="top")(eye))
    rng = np.random.default_rng(21)
    model.get_layer("top").set_weights([rng.normal(size=(7, 3)).astype("float32")])
    w = model.get_layer("top").get_weights()[0].astype(np.float64)
    x = rng.normal(size=(12, 7)).astype("float32")
    x = x[(x @ w).max(1) > 0][:4]  # a negative explained output would not pass the filter
    assert len(x) == 4              # of "top" itself (the zeros beside it are larger)
    target = (x @ w).argmax(1)
    analyzer = tf_lrp.Analyzer(model, rules.Zero(), relevance_filter=fraction)
    layers = analyzer.layerwise(x, target)
    arriving = layers["eye"]  # at the output of "eye", before its filter
    np.testing.assert_allclose(arriving, x * w[:, target].T, rtol=1e-5, atol=1e-6)  # LRP-0
    assert all(len(set(row)) == 7 for row in arriving) and np.all(arriving != 0)  # no ties
    threshold = -np.sort(-arriving, axis=1)[:, kept - 1:kept]
    expected = np.where(arriving >= threshold, arriving, 0.0)
    assert np.all(np.count_nonzero(layers["input"], axis=1) == kept)
    np.testing.assert_allclose(layers["input"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analyzer(x, target=target), expected, rtol=1e-5, atol=1e-6)


def test_batch_size_splits_without_changing_results():
    model = small_mlp()
    x = RNG.normal(size=(7, 6)).astype("float32")
    whole = tf_lrp.Analyzer(model, "epsilon_plus")(x, target=2)
    split = tf_lrp.Analyzer(model, "epsilon_plus", batch_size=3)(x, target=2)
    # other batch sizes may run other oneDNN kernels: equal up to float32 rounding
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6 * np.abs(whole).max())
    assert np.abs(whole).max() > 0


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
    (np.full((12, 6), np.nan, "float32"),  # the first ten are listed
     r"in sample\(s\) \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\]; clean or drop them before explaining$"),
])
def test_bad_inputs(analyzer, bad, words):
    with pytest.raises(InputError, match=words):
        analyzer(bad)


@pytest.mark.parametrize("target, words", [
    (4, "target 4 is out of range.*4 entries.*0..3"),
    (-1, "out of range"),
    ([0, 1, 2], "^target has 3 entries for a batch of 2: pass one integer for all samples or "
                "one per sample$"),
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
    names = a.input_names
    wrong = {"nope": np.zeros((2, 3), "float32"), names[1]: np.zeros((2, 3), "float32")}
    with pytest.raises(InputError, match=re.escape(
            f"the inputs are named {sorted(wrong)}; the model's inputs are {names}: pass a dict "
            "with exactly these keys (or a list in that order)")):
        a(wrong)


class Scale(kl.Layer):
    def call(self, x):
        return tf.multiply(x, 2.0)  # raw TensorFlow: cannot be flattened into keras.ops parts


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
    classes = {name: cls for name, cls, _ in a.rule_table()}
    assert (classes["conv_a"], classes["conv_a/activation"]) == ("Conv2D", "activation")
    assert table["dense"].startswith("Epsilon(epsilon=0.25") and table["add"] == "Zero()"
    assert table["concat"] == "Route()" and table["gap"] == "Zero()"


def conv_dense_model(use_bias: bool = True) -> keras.Model:
    """Two ReLU convolutions with max pooling, then two Dense layers (random biases)."""
    keras.utils.set_random_seed(11)
    bias = {"use_bias": use_bias, "bias_initializer": "random_normal"}
    inp = keras.Input((8, 8, 2))
    h = kl.Conv2D(4, 3, activation="relu", name="conv1", **bias)(inp)
    h = kl.MaxPooling2D(name="pool")(h)
    h = kl.Conv2D(6, 2, activation="relu", name="conv2", **bias)(h)
    h = kl.Dense(8, activation="relu", name="dense1", **bias)(kl.Flatten(name="flat")(h))
    return keras.Model(inp, kl.Dense(3, name="dense2", **bias)(h))


def _explicit_presets(low, high):
    """The rules the README documents for each preset, as explicit LayerMaps."""
    D, C, eps = composites.DENSE, composites.CONVOLUTIONS, rules.Epsilon(1e-6)
    return {
        "epsilon_plus": composites.LayerMap([(D, eps), (C, rules.ZPlus())], default=eps),
        "epsilon_alpha2_beta1": composites.LayerMap([(D, eps), (C, rules.AlphaBeta(2, 1))],
                                                    default=eps),
        "epsilon_plus_flat": composites.LayerMap([(D, eps), (C, rules.ZPlus())], default=eps,
                                                 first=rules.Flat()),
        "epsilon_gamma_box": composites.LayerMap(
            [(D, rules.Epsilon(0.25)), (C, rules.Gamma(0.25))], default=rules.Epsilon(0.25),
            first=rules.ZBox(low, high)),
        "deep_taylor": composites.LayerMap(default=rules.ZPlus(), first=rules.ZBox(low, high)),
    }


PRESET_KWARGS = {"epsilon_gamma_box": {"low": -1.5, "high": 1.5},
                 "deep_taylor": {"low": -1.5, "high": 1.5}}


def test_presets_equal_the_layer_maps_they_document():
    model = conv_dense_model()
    x = RNG.uniform(-1, 1, size=(3, 8, 8, 2)).astype("float32")
    target = [0, 1, 2]
    results = {}
    for name, explicit in _explicit_presets(-1.5, 1.5).items():
        preset = tf_lrp.Analyzer(model, name, **PRESET_KWARGS.get(name, {}))
        expected = tf_lrp.Analyzer(model, explicit)(x, target=target)
        results[name] = preset(x, target=target)
        assert np.abs(expected).max() > 0
        np.testing.assert_allclose(results[name], expected, rtol=1e-5,
                                   atol=1e-6 * np.abs(expected).max(), err_msg=name)
    # the presets differ from one another, so each comparison above can tell a wrong rule apart
    names = sorted(results)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            scale = max(np.abs(results[a]).max(), np.abs(results[b]).max())
            assert np.abs(results[a] - results[b]).max() > 1e-2 * scale, (a, b)


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_plus_flat", "deep_taylor"])
def test_conservative_presets_conserve_on_a_bias_free_model(name):
    """z+, flat, z^B (inputs within the bounds) and a tiny epsilon hand all relevance down.

    The explained outputs are positive: z+ at the output layer drops the relevance of a
    negative output whose positive contributions are all zero (the zero guard).
    """
    model = conv_dense_model(use_bias=False)
    x = np.random.default_rng(13).uniform(-1, 1, size=(12, 8, 8, 2)).astype("float32")
    x = x[model(x).numpy().max(1) > 1e-3][:4]
    assert len(x) == 4
    target = model(x).numpy().argmax(1)
    analyzer = tf_lrp.Analyzer(model, name, **PRESET_KWARGS.get(name, {}))
    explained = model(x).numpy()[np.arange(4), target]
    totals = analyzer(x, target=target).reshape(4, -1).sum(1, dtype=np.float64)
    np.testing.assert_allclose(totals, explained, rtol=1e-4, atol=1e-6)
    # and layer by layer: the relevance at every node sums to the explained output
    for key, r in analyzer.layerwise(x, target).items():
        np.testing.assert_allclose(r.reshape(4, -1).sum(1, dtype=np.float64), explained,
                                   rtol=1e-4, atol=1e-6, err_msg=key)


def test_epsilon_gamma_box_wires_each_parameter_to_its_rule():
    """Distinct, non-default parameters: epsilon to Dense, gamma to convolutions, low and high
    to z^B (the defaults, 0.25 for both epsilon and gamma, cannot tell a mix-up apart)."""
    model = conv_dense_model()
    x = RNG.uniform(-2, 3, size=(3, 8, 8, 2)).astype("float32")
    target = [2, 0, 1]

    def explicit(epsilon, gamma, low, high):
        return composites.LayerMap([(composites.DENSE, rules.Epsilon(epsilon)),
                                    (composites.CONVOLUTIONS, rules.Gamma(gamma))],
                                   default=rules.Epsilon(epsilon), first=rules.ZBox(low, high))

    box = tf_lrp.Analyzer(model, composites.EpsilonGammaBox(low=-2, high=3, epsilon=0.07,
                                                            gamma=0.6))
    got = box(x, target=target)
    expected = tf_lrp.Analyzer(model, explicit(0.07, 0.6, -2, 3))(x, target=target)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * scale)
    # the test can tell each parameter apart: any mix-up moves the result by a clear margin
    for wrong in [(0.6, 0.07, -2, 3), (0.07, 0.07, -2, 3), (0.6, 0.6, -2, 3), (0.07, 0.6, -1, 1),
                  (0.07, 0.6, -2, 2), (0.25, 0.25, -2, 3)]:
        other = tf_lrp.Analyzer(model, explicit(*wrong))(x, target=target)
        assert np.abs(got - other).max() > 1e-2 * scale, wrong
    # by name, as the CLI builds it
    by_name = tf_lrp.Analyzer(model, "epsilon_gamma_box", low=-2, high=3, epsilon=0.07, gamma=0.6)
    np.testing.assert_allclose(by_name(x, target=target), expected, rtol=1e-5, atol=1e-6 * scale)
    table = {node: rule for node, _, rule in box.rule_table()}
    assert table["conv1"] == "ZBox(low=-2, high=3)"
    assert re.fullmatch(r"Gamma\(gamma=0\.6(, .*)?\)", table["conv2"]), table["conv2"]
    for dense in ("dense1", "dense2"):
        assert re.fullmatch(r"Epsilon\(epsilon=0\.07(, .*)?\)", table[dense]), table[dense]
    assert table["conv1/activation"] == "Pass()" and table["pool"] == "Route()"


# ----------------------------------------------------------------------- static sign analysis
def joined_model(join: str, opaque: bool = False) -> keras.Model:
    """A ReLU branch and a signed (linear) branch joined by ``join``, then a Dense layer "top".

    ``opaque=True`` puts an ``Activation("linear")`` between the join and "top": the same
    function, but the static sign analysis knows nothing about the input of "top" there.
    """
    keras.utils.set_random_seed(12)
    inp = keras.Input((5,))
    relu = kl.Dense(6, activation="relu", name="relu_branch")(inp)
    signed = kl.Dense(6, name="signed_branch", bias_initializer="random_normal")(inp)
    layer = {"add": kl.Add, "average": kl.Average, "concatenate": kl.Concatenate}[join]
    joined = layer(name="join")([relu, signed])
    if opaque:
        joined = kl.Activation("linear", name="opaque")(joined)
    return keras.Model(inp, kl.Dense(3, name="top", bias_initializer="random_normal")(joined))


def _top_by_hand(rule: str, s: np.ndarray, w: np.ndarray, r_out: np.ndarray) -> np.ndarray:
    """z+ / alpha2-beta1 of a Dense layer (no bias) on a signed input ``s``, float64."""
    sp, sn, wp, wn = np.maximum(s, 0), np.minimum(s, 0), np.maximum(w, 0), np.minimum(w, 0)

    def share(a, b):  # a = x+ w_a + x- w_b, relevance through a zero denominator is dropped
        z = sp @ a + sn @ b
        ratio = np.divide(r_out, z, out=np.zeros_like(z), where=z != 0)
        return sp * (ratio @ a.T) + sn * (ratio @ b.T)

    if rule == "z_plus":
        return share(wp, wn)
    return 2.0 * share(wp, wn) - 1.0 * share(wn, wp)


JOIN_RULES = {"z_plus": rules.ZPlus, "alpha2_beta1": lambda: rules.AlphaBeta(2, 1),
              "gamma": lambda: rules.Gamma(0.3)}


@pytest.mark.parametrize("rule", sorted(JOIN_RULES))
@pytest.mark.parametrize("join", ["add", "average", "concatenate"])
def test_a_join_with_a_signed_input_is_signed(join, rule):
    """Add/Average/Concatenate of a ReLU output and a signed one is signed: the x- terms of
    the rule of the next layer must stay (a join is non-negative only if all inputs are)."""
    model = joined_model(join)
    x = RNG.normal(size=(4, 5)).astype("float32")
    target = [0, 1, 2, 1]
    analyzer = tf_lrp.Analyzer(model, JOIN_RULES[rule]())
    keys = {n.name: n.outputs[0] for n in analyzer.graph.nodes}
    assert analyzer._nonnegative[keys["relu_branch/activation"]]
    assert not analyzer._nonnegative[keys["signed_branch"]]
    assert not analyzer._nonnegative[keys["join"]]
    s = keras.Model(model.input, model.get_layer("join").output)(x).numpy().astype(np.float64)
    assert (s < -0.1).any() and (s > 0.1).any()
    layers = analyzer.layerwise(x, target)
    # an equivalent model in which "top" cannot be told its input is non-negative
    twin = joined_model(join, opaque=True)
    twin.set_weights(model.get_weights())
    twin_layers = tf_lrp.Analyzer(twin, JOIN_RULES[rule]()).layerwise(x, target)
    scale = np.abs(twin_layers["opaque"]).max()
    assert scale > 0
    np.testing.assert_allclose(layers["join"], twin_layers["opaque"], rtol=1e-5,
                               atol=1e-6 * scale)
    np.testing.assert_allclose(layers["input"], twin_layers["input"], rtol=1e-5,
                               atol=1e-5 * np.abs(twin_layers["input"]).max())
    if rule in ("z_plus", "alpha2_beta1"):  # and the rule of "top" written out by hand
        y = model(x).numpy().astype(np.float64)
        r_out = np.zeros_like(y)
        r_out[np.arange(4), target] = y[np.arange(4), target]
        w = model.get_layer("top").get_weights()[0].astype(np.float64)
        expected = _top_by_hand(rule, s, w, r_out)
        np.testing.assert_allclose(layers["join"], expected, rtol=1e-4,
                                   atol=1e-6 * np.abs(expected).max())


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
        # ... so check against LRP-0 written out by hand for this architecture instead
        by_hand = lrp0_nested_edge_by_hand(model, x, 1)
        np.testing.assert_allclose(got, by_hand, rtol=1e-4, atol=1e-5 * np.abs(by_hand).max())
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    # the preset is the LayerMap the README documents (epsilon on Dense, z+ on convolutions)
    eps = rules.Epsilon(1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        explicit = tf_lrp.Analyzer(model, composites.LayerMap(
            [(composites.DENSE, eps), (composites.CONVOLUTIONS, rules.ZPlus())], default=eps), **kw)
    r, r_explicit = preset(x), explicit(x)
    assert r.shape == x.shape and np.abs(r_explicit).max() > 0
    np.testing.assert_allclose(r, r_explicit, rtol=1e-5, atol=1e-6 * np.abs(r_explicit).max())


def lrp0_nested_edge_by_hand(model, x, target):
    """LRP-0 (float64 NumPy) of the first output of tests/fixtures/legacy_nested_edge.h5.

    ``m = deep(x) + deep(pre(x))``, ``y = head(m)``, ``deep(v) = deep_out(tanh(deep_dense(v)))``
    (scripts/make_legacy_fixtures.py). Every Dense maps ``R_z`` to ``a * (W (R_z / z))``, with
    ``z`` including the bias; tanh passes relevance unchanged; Add splits in proportion to its
    inputs; the two calls of the shared ``deep`` model add up at the input.
    """

    def weights(*path):
        layer = model
        for name in path:
            layer = layer.get_layer(name)
        return [w.astype(np.float64) for w in layer.get_weights()]

    (wp, bp), (wd, bd) = weights("pre"), weights("deep", "deepest", "deep_dense")
    (wo, bo), (wh, bh) = weights("deep", "deep_out"), weights("head", "head_dense")

    def back(a, w, z, r):
        return a * ((r / z) @ w.T)

    def deep(v):
        z1 = v @ wd + bd
        a1 = np.tanh(z1)
        return z1, a1, a1 @ wo + bo

    def deep_back(v, z1, a1, z2, r):
        return back(v, wd, z1, back(a1, wo, z2, r))  # tanh: R at z1 = R at a1

    x = x.astype(np.float64)
    p = x @ wp + bp
    first, second = deep(x), deep(p)
    m = first[2] + second[2]
    y = m @ wh + bh
    r_y = np.zeros_like(y)
    r_y[:, target] = y[:, target]
    r_m = back(m, wh, y, r_y)
    r_x = deep_back(x, *first, first[2] * r_m / m)
    r_p = deep_back(p, *second, second[2] * r_m / m)
    return r_x + back(x, wp, p, r_p)


def test_explain_and_predict_is_relevance_and_outputs_of_one_call():
    """The public call the batch runs use: the same relevance as __call__ and the same outputs
    as predict (LRP: from one forward pass; baselines: two), batched like __call__."""
    import keras

    import tf_lrp

    keras.utils.set_random_seed(61)
    x_in = keras.Input((5,))
    model = keras.Model(x_in, keras.layers.Dense(3)(keras.layers.Dense(4, activation="relu")(
        x_in)))
    x = np.random.default_rng(62).normal(size=(7, 5)).astype("float32")
    for analyzer in (tf_lrp.Analyzer(model, "epsilon", batch_size=3),
                     tf_lrp.analyzers.GradientXInput(model, batch_size=3)):
        # targets that do not repeat with the batch size: each batch gets its own slice
        relevance, outputs = analyzer.explain_and_predict(x, target=[2, 0, 1, 1, 2, 0, 2])
        # another traced function of the same computation: equal up to float rounding
        expected = analyzer(x, target=[2, 0, 1, 1, 2, 0, 2])
        np.testing.assert_allclose(relevance, expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max())
        np.testing.assert_allclose(outputs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        assert relevance.shape == x.shape and outputs.shape == (7, 3)


def test_explain_outputs_per_sample_weighted_sums_of_single_explanations():
    """k weighted combinations of m outputs per sample, for several samples at once: each
    equals the weighted sum of the single-target explanations of its own sample (LRP-epsilon
    is linear in the start relevance), so no copy is matched to another sample or index."""
    import keras

    import tf_lrp

    keras.utils.set_random_seed(63)
    x_in = keras.Input((4,))
    model = keras.Model(x_in, keras.layers.Dense(5)(keras.layers.Dense(6, activation="relu")(
        x_in)))
    rng = np.random.default_rng(64)
    x = rng.normal(0.3, 1.2, (3, 4)).astype("float32")
    idx = rng.integers(0, 5, (3, 2, 2))
    w = rng.uniform(-1.5, 2.0, (3, 2, 2)).astype("float32")
    a = tf_lrp.Analyzer(model, "epsilon")
    got = a.explain_outputs(x, idx, w)
    assert got.shape == (3, 2, 4)
    singles = np.stack([a(x, target=t) for t in range(5)], axis=1)  # (n, outputs, 4)
    expected = np.einsum("nkm,nkmd->nkd", w, singles[np.arange(3)[:, None, None], idx])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


class _NeedsLongInputs(keras.layers.Layer):
    """Written with keras.ops, but only callable on sequences of a known length of 40 steps or
    more (as a layer that builds a position table of its input's length)."""

    def call(self, x):
        if x.shape[1] is None or x.shape[1] < 40:
            raise ValueError("needs a known length of at least 40 steps")
        return keras.ops.tanh(x) * 2.0

    def compute_output_shape(self, shape):
        return shape


def test_a_model_the_guessed_probe_cannot_run_is_built_at_the_first_call():
    """An input length left open and a custom layer that needs it known: the analyzer probes a
    guessed size (``PROBE_SIZE``); that the layer cannot run there is not an error yet, the
    first real batch decides (and explains like the same model with a plain tanh layer)."""
    def build(custom):
        inp = keras.Input((None, 3))
        h = kl.Dense(4, name="d")(inp)
        h = _NeedsLongInputs()(h) if custom else kl.Rescaling(2.0)(kl.Activation("tanh")(h))
        return keras.Model(inp, kl.Dense(2, name="out")(kl.GlobalAveragePooling1D()(h)))

    keras.utils.set_random_seed(5)
    custom, plain = build(True), build(False)
    plain.set_weights(custom.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 50, 3)).astype("float32")
    deferred, built = tf_lrp.Analyzer(custom, "epsilon"), tf_lrp.Analyzer(plain, "epsilon")
    with pytest.raises(AttributeError, match=r"depends on the input sizes.*for_shape"):
        deferred.graph  # noqa: B018 - built per input shape
    with pytest.raises(AttributeError, match=r"^no_such_thing$"):
        built.no_such_thing  # noqa: B018
    got = deferred(x, target=[1, 0])
    want = built(x, target=[1, 0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
