"""Every LRP rule of tf_lrp against the independent float64 reference (tests/reference.py).

Each case builds a tiny Keras 3 model with seeded random weights and nonzero biases, explains it
with ``tf_lrp.Analyzer(model, rule)`` (one rule for every layer with weights) and compares with
the explicit-matrix reference to 1e-5 relative. Batches mix samples with negative entries
(mixed-sign first layer) and non-negative samples.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import reference as ref
from keras_dtype import default_dtype

import tf_lrp
from tf_lrp import composites, rules

SEED = 1234
# The rules are compared in float64: a float32 engine differs from the exact value by about
# 1e-7 times the condition number of each denominator (|terms| / |z|), which exceeds 1e-5 for
# the odd nearly-cancelling z. float64 makes the 1e-5 comparison about the rule, not round-off;
# test_float32_matches_reference covers the float32 path on well-conditioned cases.
DTYPE = "float64"
L = keras.layers

# ----------------------------------------------------------------------------- rules

# id -> (engine rule factory, reference rule); ZBox with array bounds is built per input shape.
RULES = {
    "epsilon": (lambda: rules.Epsilon(), ref.Epsilon(1e-6, bias=True)),
    "epsilon_0.25": (lambda: rules.Epsilon(epsilon=0.25), ref.Epsilon(0.25, bias=True)),
    "epsilon_1_nobias": (lambda: rules.Epsilon(epsilon=1.0, bias=False),
                         ref.Epsilon(1.0, bias=False)),
    "epsilon_1e-3_nobias": (lambda: rules.Epsilon(epsilon=1e-3, bias=False),
                            ref.Epsilon(1e-3, bias=False)),
    "zero": (lambda: rules.Zero(), ref.Zero()),
    "gamma": (lambda: rules.Gamma(), ref.Gamma(0.25)),
    "gamma_1": (lambda: rules.Gamma(gamma=1.0), ref.Gamma(1.0)),
    "alpha2beta1": (lambda: rules.AlphaBeta(alpha=2, beta=1), ref.AlphaBeta(2, 1, bias=False)),
    "alpha2beta1_bias": (lambda: rules.AlphaBeta(alpha=2, beta=1, bias=True),
                         ref.AlphaBeta(2, 1, bias=True)),
    "alpha1beta0": (lambda: rules.AlphaBeta(alpha=1, beta=0), ref.AlphaBeta(1, 0, bias=False)),
    "alpha1beta0_bias": (lambda: rules.AlphaBeta(alpha=1, beta=0, bias=True),
                         ref.AlphaBeta(1, 0, bias=True)),
    "zplus": (lambda: rules.ZPlus(), ref.ZPlus()),
    "zbox": (lambda: rules.ZBox(low=-1.5, high=1.5), ref.ZBox(-1.5, 1.5)),
    "wsquare": (lambda: rules.WSquare(), ref.WSquare()),
    "flat": (lambda: rules.Flat(), ref.Flat()),
}


# Single layers skip two ids the chains cover (alpha1beta0 is ZPlus by definition; a second
# bias-free epsilon adds nothing on one layer): keeps the suite fast.
SINGLE_RULES = [r for r in RULES if r not in ("alpha1beta0", "epsilon_1e-3_nobias")]
SINGLE_RULES.append("zbox_array")


@functools.cache
def box_bounds(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature bounds around the inputs (which lie in [-1, 1])."""
    rng = np.random.default_rng(SEED + 7)
    low = -1.0 - rng.uniform(0.0, 1.0, shape)
    high = 1.0 + rng.uniform(0.0, 1.0, shape)
    return low, high


def make_rule(rule_id: str, in_shape: tuple[int, ...]):
    """(engine rule, reference rule) for an id; 'zbox_array' uses bounds shaped like the input."""
    if rule_id == "zbox_array":
        low, high = box_bounds(in_shape)
        return rules.ZBox(low=low, high=high), ref.ZBox(low, high)
    factory, reference = RULES[rule_id]
    return factory(), reference


# ----------------------------------------------------------------------------- models


def functional(in_shape: tuple[int, ...], make_layers, seed: int = SEED,
               dtype: str = DTYPE) -> keras.Model:
    """A Functional chain of the layers ``make_layers()`` builds, in ``dtype``."""
    with default_dtype(dtype):
        inputs = keras.Input(shape=in_shape)
        y = inputs
        for layer in make_layers():
            y = layer(y)
        model = keras.Model(inputs, y)
    assert all(w.dtype == dtype for w in model.weights)
    return ref.randomize_weights(model, seed)


def _activation(layer) -> str | None:
    act = getattr(layer, "activation", None)
    name = getattr(act, "__name__", None)
    return None if name in (None, "linear") else name


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, tuple | list) else (value, value)


def to_reference(model: keras.Model) -> list:
    """The model's layers as reference layers (a plain chain; Flatten is the identity)."""
    out, shape = [], tuple(model.input.shape[1:])
    for layer in model.layers:
        w = [np.asarray(v, dtype=np.float64) for v in layer.get_weights()]
        act = _activation(layer)
        if isinstance(layer, L.InputLayer | L.Flatten):
            continue
        if isinstance(layer, L.ReLU) or (isinstance(layer, L.Activation) and act == "relu"):
            assert out[-1].activation is None
            out[-1].activation = "relu"
            continue
        if isinstance(layer, L.Dense):
            new = ref.dense(w[0], w[1] if layer.use_bias else None, act)
        elif isinstance(layer, L.Conv1D):
            new = ref.conv1d(w[0], w[1] if layer.use_bias else None, shape,
                             layer.strides[0], layer.padding, act)
        elif isinstance(layer, L.SeparableConv2D):
            new = ref.separable_conv2d(w[0], w[1], w[2] if layer.use_bias else None, shape,
                                       layer.strides, layer.padding, act)
        elif isinstance(layer, L.DepthwiseConv2D):
            new = ref.depthwise_conv2d(w[0], w[1] if layer.use_bias else None, shape,
                                       layer.strides, layer.padding, act)
        elif isinstance(layer, L.Conv2D):
            new = ref.conv2d(w[0], w[1] if layer.use_bias else None, shape,
                             layer.strides, layer.padding, act)
        elif isinstance(layer, L.AveragePooling2D):
            new = ref.average_pooling2d(shape, _pair(layer.pool_size), _pair(layer.strides),
                                        layer.padding)
        elif isinstance(layer, L.MaxPooling2D):
            new = ref.MaxPool2D(shape, _pair(layer.pool_size), _pair(layer.strides),
                                layer.padding)
        elif isinstance(layer, L.GlobalAveragePooling2D):
            new = ref.global_average_pooling2d(shape)
        else:
            raise NotImplementedError(type(layer).__name__)
        out.append(new)
        shape = tuple(layer.output.shape[1:])
    return out


# Single layers with weights, each followed by Flatten so a target indexes its flat output.
SINGLE = {
    "dense": ((5,), lambda: [L.Dense(4)]),
    "conv1d_valid": ((7, 2), lambda: [L.Conv1D(3, 3), L.Flatten()]),
    "conv1d_same_s2": ((7, 2), lambda: [L.Conv1D(3, 3, strides=2, padding="same"), L.Flatten()]),
    "conv2d_valid": ((6, 6, 2), lambda: [L.Conv2D(3, 3), L.Flatten()]),
    "conv2d_same_s2": ((6, 6, 2), lambda: [L.Conv2D(3, 3, strides=2, padding="same"),
                                           L.Flatten()]),
    "conv2d_same_s2_even_kernel": ((6, 6, 2), lambda: [
        L.Conv2D(2, (2, 4), strides=2, padding="same"), L.Flatten()]),
    "depthwise_valid": ((6, 6, 2), lambda: [L.DepthwiseConv2D(3, depth_multiplier=2),
                                            L.Flatten()]),
    "depthwise_same_s2": ((6, 6, 2), lambda: [
        L.DepthwiseConv2D(3, strides=2, padding="same"), L.Flatten()]),
}

# Small chains: relevance reaching inner layers is not one-hot.
CHAINS = {
    "mlp": ((5,), lambda: [L.Dense(8, activation="relu"), L.Dense(6, activation="relu"),
                           L.Dense(4)]),
    # ReLU after max pooling (the same forward as before it): no ties among zeros, whose
    # routing the semantics leave open and which WSquare/Flat/ZBox relevance would reach.
    "cnn_maxpool": ((6, 6, 2), lambda: [
        L.Conv2D(4, 3, padding="same"), L.MaxPooling2D(2), L.ReLU(), L.Flatten(), L.Dense(3)]),
    "cnn_avgpool": ((6, 6, 2), lambda: [
        L.Conv2D(4, 3, padding="same", activation="relu"), L.AveragePooling2D(2),
        L.Conv2D(3, 2, activation="relu"), L.Flatten(), L.Dense(3)]),
    "cnn_gap": ((6, 6, 2), lambda: [
        L.Conv2D(4, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dense(5),
        L.Activation("relu"), L.Dense(3)]),
    "conv1d_chain": ((7, 2), lambda: [
        L.Conv1D(4, 3, padding="same", activation="relu"), L.Conv1D(3, 3, strides=2),
        L.ReLU(), L.Flatten(), L.Dense(3)]),
}

SEPARABLE = {
    "separable": ((6, 6, 2), lambda: [
        L.SeparableConv2D(3, 3, strides=2, padding="same", depth_multiplier=2), L.Flatten()]),
}

MODELS = {**SINGLE, **CHAINS, **SEPARABLE}


@functools.cache
def model_and_reference(name: str, dtype: str = DTYPE) -> tuple[keras.Model, list]:
    """The named model (same seeded weights in either dtype) and its reference layers."""
    in_shape, layers = MODELS[name]
    model = functional(in_shape, layers, dtype=dtype)
    return model, to_reference(model)


@functools.cache
def inputs(shape: tuple[int, ...], n: int = 4, dtype: str = DTYPE) -> np.ndarray:
    """Half the samples with mixed signs in [-1, 1], half non-negative in [0, 1]."""
    rng = np.random.default_rng(SEED + 1)
    x = rng.uniform(-1.0, 1.0, (n, *shape))
    x[n // 2 :] = np.abs(x[n // 2 :])
    return x.astype(dtype)


def targets(model: keras.Model, n: int) -> list[int]:
    rng = np.random.default_rng(SEED + 2)
    return [int(t) for t in rng.integers(0, model.output.shape[-1], n)]


def expected(name: str, x: np.ndarray, target, ref_rules, start: str = "output",
             dtype: str = DTYPE) -> np.ndarray:
    _, layers = model_and_reference(name, dtype)
    want = ref.lrp_chain(layers, x, lambda out: ref.start_relevance(out, target, start),
                         ref_rules)
    return want.reshape(x.shape)


def check(name: str, rule, ref_rules, target=None, dtype: str = DTYPE, **options) -> None:
    """Explain the named model with ``rule`` and compare with the reference."""
    model, _ = model_and_reference(name, dtype)
    x = inputs(MODELS[name][0], dtype=dtype)
    target = targets(model, len(x)) if target is None else target
    got = tf_lrp.Analyzer(model, rule, **options)(x, target=target)
    want = expected(name, x, target, ref_rules, options.get("start", "output"), dtype)
    ref.assert_relevance_close(got, want)


# ----------------------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("name", list(MODELS))
def test_reference_forward_matches_keras(name):
    """The reference matrices reproduce Keras' forward pass (validates the reference)."""
    model, layers = model_and_reference(name)
    x = inputs(MODELS[name][0])
    want = np.asarray(model(x, training=False))
    got = ref.forward_chain(layers, x)[-1]
    np.testing.assert_allclose(got, want.reshape(len(x), -1), rtol=1e-5, atol=1e-5)


# Pairs of rule ids that are equal by definition or differ only by ~1e-6.
SAME_BY_DEFINITION = {("alpha1beta0", "zplus"), ("epsilon", "zero")}


@pytest.mark.parametrize("name", ["mlp", "cnn_avgpool"])
def test_reference_rules_are_distinguishable(name):
    """Sanity: any two different rules give relevances far apart compared with the tolerance,
    so comparing with the wrong rule (or ignoring a parameter) would fail."""
    _, layers = model_and_reference(name)
    x = inputs(MODELS[name][0])
    results = {rid: ref.lrp_chain(layers, x, lambda o: ref.start_relevance(o, 0), r)
               for rid, (_, r) in RULES.items()}
    for a in RULES:
        for b in RULES:
            if a < b and (a, b) not in SAME_BY_DEFINITION:
                gap = np.max(np.abs(results[a] - results[b]))
                assert gap > 1e-3 * np.max(np.abs(results[a])), (a, b)


# ----------------------------------------------------------------------------- engine vs reference


@pytest.mark.parametrize("rule_id", SINGLE_RULES)
@pytest.mark.parametrize("name", list(SINGLE))
def test_single_layer(name, rule_id):
    rule, ref_rule = make_rule(rule_id, MODELS[name][0])
    check(name, rule, ref_rule)


@pytest.mark.parametrize("rule_id", list(RULES))
@pytest.mark.parametrize("name", list(CHAINS))
def test_chain(name, rule_id):
    rule, ref_rule = make_rule(rule_id, MODELS[name][0])
    check(name, rule, ref_rule)


@pytest.mark.parametrize("rule_id", SINGLE_RULES)
def test_separable_conv2d(rule_id):
    """SeparableConv2D (two kernels): rho applies to the effective map, the reference's
    rho(D @ P) (for Flat: the connections D @ P makes); tests/test_effective_map.py checks the
    same against the equivalent Conv2D."""
    rule, ref_rule = make_rule(rule_id, MODELS["separable"][0])
    check("separable", rule, ref_rule)


@pytest.mark.parametrize("name", ["dense", "conv2d_same_s2", "mlp", "cnn_avgpool"])
def test_start_all(name):
    """start='all': the relevance at the output is the whole output vector."""
    check(name, rules.Epsilon(epsilon=0.25), ref.Epsilon(0.25), start="all")


@pytest.mark.parametrize("name", ["dense", "mlp"])
def test_start_logodds(name):
    """start='logodds' (Analyzer docstring): R_c = z_c, R_k = -q_k z_k with q the softmax over
    the other logits; with LRP-0 on a bias-free layer the input relevance sums to
    sum_k q_k (z_c - z_k) = log(p_c / (1 - p_c)) + H(q)."""
    check(name, rules.Zero(), ref.Zero(), start="logodds")
    if name == "dense":  # the sum identity, on the bias-free variant of the single Dense layer
        model = functional((5,), lambda: [L.Dense(4, use_bias=False)])
        x, target = inputs((5,)), [0, 1, 2, 3]
        got = tf_lrp.Analyzer(model, rules.Zero(), start="logodds")(x, target=target)
        z = np.asarray(model(x), dtype=np.float64)
        c = z[np.arange(len(z)), target]
        others = np.ma.masked_array(z, np.eye(4, dtype=bool)[target])
        log_rest = np.log(np.exp(others).sum(axis=1)).data
        q = (np.exp(others) / np.exp(others).sum(axis=1, keepdims=True)).filled(0.0)
        entropy = -(q * np.log(np.where(q > 0, q, 1.0))).sum(axis=1)
        np.testing.assert_allclose(got.sum(axis=1), c - log_rest + entropy, rtol=1e-7)


@pytest.mark.parametrize("rule_id", ["epsilon", "gamma", "alpha2beta1", "zbox", "wsquare",
                                     "flat"])
@pytest.mark.parametrize("name", ["mlp", "cnn_maxpool"])
def test_float32_matches_reference(name, rule_id):
    """The float32 path (what users run) on well-conditioned cases, same tolerance."""
    rule, ref_rule = make_rule(rule_id, MODELS[name][0])
    check(name, rule, ref_rule, dtype="float32")


def test_layer_map_first_rule():
    """A composite giving the first layer ZBox (array bounds) and other rules elsewhere."""
    name = "cnn_avgpool"
    low, high = box_bounds(MODELS[name][0])
    composite = composites.LayerMap(
        [(L.Conv2D, rules.ZPlus()), (L.Dense, rules.Epsilon(epsilon=0.25))],
        first=rules.ZBox(low=low, high=high))
    # reference layers: conv, avgpool, conv, dense
    ref_rules = [ref.ZBox(low, high), None, ref.ZPlus(), ref.Epsilon(0.25)]
    check(name, composite, ref_rules)


def test_target_forms():
    """int target for every sample, per-sample list, and None (argmax)."""
    name = "mlp"
    model, _ = model_and_reference(name)
    x = inputs((5,))
    analyzer = tf_lrp.Analyzer(model, rules.Epsilon())
    out = np.asarray(model(x))
    for target in (2, [0, 3, 1, 2], None):
        want = expected(name, x, target, ref.Epsilon())
        ref.assert_relevance_close(analyzer(x, target=target), want)
    ref.assert_relevance_close(analyzer(x), expected(name, x, np.argmax(out, 1), ref.Epsilon()))


def test_alpha_beta_must_differ_by_one():
    with pytest.raises(ValueError, match="alpha"):
        rules.AlphaBeta(alpha=3, beta=1)
    with pytest.raises(ValueError):
        rules.AlphaBeta(alpha=1, beta=1)


# ----------------------------------------------------------------------------- generalized gamma


def _dense_model(kernel, bias=None, dtype="float64"):
    kernel = np.asarray(kernel, dtype=dtype)
    with default_dtype(dtype):
        inp = keras.Input((kernel.shape[0],))
        layer = L.Dense(kernel.shape[1], use_bias=bias is not None)
        model = keras.Model(inp, layer(inp))
    layer.set_weights([kernel] if bias is None else [kernel, np.asarray(bias, dtype)])
    return model


def test_gamma_negative_output_does_not_cross_zero():
    """w = [1, -1.249], x = [1, 1]: z = -0.249. Pairing by input sign only divided by
    x.(w + 0.25 w+) = 0.000750 and gave R = [-311, 311]; the negative output takes the pair that
    amplifies negative contributions: d = 1 + 1.249 * (-1.25) = -0.56125."""
    model = _dense_model([[1.0], [-1.249]])
    x = np.array([[1.0, 1.0]])
    r = tf_lrp.Analyzer(model, rules.Gamma(0.25, stabilizer=0.0))(x, target=0)
    d = 1.0 - 1.249 * 1.25
    np.testing.assert_allclose(r, [[-0.249 / d, -0.249 * (-1.249 * 1.25) / d]], rtol=1e-6)
    np.testing.assert_allclose(r.sum(), -0.249, rtol=1e-6)  # conserves (no bias)
    assert np.abs(r).max() < 1.0


def test_gamma_signed_inputs_and_outputs_against_reference():
    """Every combination of input sign and output sign, with a bias, gamma 0.7."""
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(6, 5)), rng.normal(size=5)
    model = _dense_model(kernel, bias)
    x = rng.normal(size=(8, 6))
    z = x @ kernel + bias
    assert (z > 0).any() and (z < 0).any()
    for target in range(5):
        r = tf_lrp.Analyzer(model, rules.Gamma(0.7))(x, target=target)
        start = ref.start_relevance(z, np.full(8, target))
        ref.assert_relevance_close(r, ref.Gamma(0.7).relevance(ref.dense(kernel, bias), x, start))


def test_gamma_is_the_original_rule_on_nonnegative_inputs_and_positive_outputs():
    """rho(w) = w + gamma w+, bias b + gamma b+, written out."""
    rng = np.random.default_rng(4)
    kernel, bias = rng.normal(size=(6, 4)), np.abs(rng.normal(size=4))
    x = np.abs(rng.normal(size=(5, 6)))
    z = x @ kernel + bias
    mask = z > 0
    target = np.argmax(np.where(mask, z, -np.inf), axis=1)
    g = 0.4
    rho, rho_b = kernel + g * np.maximum(kernel, 0), bias + g * np.maximum(bias, 0)
    denominator = x @ rho + rho_b
    start = ref.start_relevance(z, target)
    want = x * ((start / (denominator + 1e-6)) @ rho.T)
    got = tf_lrp.Analyzer(_dense_model(kernel, bias), rules.Gamma(g))(x, target=target)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_gamma_on_a_residual_block_conserves_and_does_not_inflate():
    """A residual Add sends relevance into convolution outputs that are negative (BN folded).
    Bias-free, the generalized rule conserves per layer; the input-sign pairing did not."""
    rng = np.random.default_rng(8)
    with default_dtype("float64"):
        inp = keras.Input((6, 6, 3))
        h = L.ReLU()(L.Conv2D(4, 3, padding="same", use_bias=False)(inp))
        branch = L.Conv2D(4, 3, padding="same", use_bias=False)(h)
        branch = L.BatchNormalization(center=False)(branch)
        out = L.ReLU()(L.Add()([h, branch]))
        model = keras.Model(inp, L.Dense(2, use_bias=False)(L.Flatten()(out)))
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # gamma of both signs, mean 0: no bias
            layer.set_weights([rng.normal(0, 1, 4), np.zeros(4), rng.uniform(0.5, 2, 4)])
        elif layer.get_weights():
            layer.set_weights([rng.normal(0, 1, w.shape) for w in layer.get_weights()])
    x = rng.normal(size=(4, 6, 6, 3))
    analyzer = tf_lrp.Analyzer(model, rules.Gamma(0.25, stabilizer=0.0))
    layers = analyzer.layerwise(x, target=0)
    logit = model(x).numpy()[:, 0]
    assert (logit != 0).all()
    cuts = ["input", model.layers[1].name, model.layers[-4].name]  # the first conv, the Add
    for name in cuts:
        np.testing.assert_allclose(layers[name].reshape(4, -1).sum(1), logit, rtol=1e-6,
                                   err_msg=name)
    assert np.abs(layers["input"]).max() < 10 * np.abs(logit).max()


def test_gamma_below_a_rule_that_reaches_zero_activations():
    """Above a ReLU, WSquare gives relevance to inactive units too: it reaches outputs with
    z < 0 of the Gamma layer below, whose negative half must then be computed (the static
    analysis may only skip it where relevance vanishes with the activation)."""
    model, _ = model_and_reference("mlp")
    names = [layer.name for layer in model.layers if isinstance(layer, L.Dense)]
    x = inputs(MODELS["mlp"][0])
    target = targets(model, len(x))
    composite = composites.LayerMap([(names[0], rules.Gamma(0.5)), (names[1], rules.WSquare())],
                                    default=rules.Epsilon())
    analyzer = tf_lrp.Analyzer(model, composite)
    assert names[0] not in analyzer._silent  # WSquare above its ReLU does not keep zeros
    want = expected("mlp", x, target, [ref.Gamma(0.5), ref.WSquare(), ref.Epsilon()])
    ref.assert_relevance_close(analyzer(x, target=target), want)
    # with epsilon above, relevance vanishes with the activation: the first layer is silent
    silent = tf_lrp.Analyzer(model, composites.LayerMap([(names[0], rules.Gamma(0.5))],
                                                        default=rules.Epsilon()))
    assert names[0] in silent._silent
    want = expected("mlp", x, target, [ref.Gamma(0.5), ref.Epsilon(), ref.Epsilon()])
    ref.assert_relevance_close(silent(x, target=target), want)


@pytest.mark.parametrize("activation", ["tanh", "swish"])
def test_gamma_below_an_activation_that_keeps_negatives(activation):
    """Below tanh or swish the outputs with z < 0 keep (signed) relevance, so the generalized
    gamma rule must compute its negative half there: per input against the reference (a sum
    check would miss relevance moved between inputs)."""
    keras.utils.set_random_seed(SEED)
    with default_dtype(DTYPE):
        inp = keras.Input((5,))
        h = L.Dense(6, name="d1")(inp)
        h = L.Activation("tanh" if activation == "tanh" else keras.activations.swish)(h)
        model = keras.Model(inp, L.Dense(3, name="d2")(h))
    model = ref.randomize_weights(model, seed=SEED + 7)
    x = np.random.default_rng(3).normal(size=(6, 5)) * np.array([1.0, 2.5, 0.3, 1.2, 0.7])
    w1, b1 = model.get_layer("d1").get_weights()
    w2, b2 = model.get_layer("d2").get_weights()
    pre = x @ w1 + b1
    assert (pre < -0.1).sum() >= 6  # many negative outputs of the gamma layer
    target = np.array([0, 1, 2, 2, 1, 0])
    composite = composites.LayerMap([("d1", rules.Gamma(0.5))], default=rules.Epsilon(0.01))
    got = tf_lrp.Analyzer(model, composite)(x, target=target)
    chain = [ref.dense(w1, b1, activation), ref.dense(w2, b2)]
    want = ref.lrp_chain(chain, x, lambda out: ref.start_relevance(out, target),
                         rules=[ref.Gamma(0.5), ref.Epsilon(0.01)])
    ref.assert_relevance_close(got, want)


def test_every_rule_is_named_by_its_snake_case_class_name():
    """``composites.get("signal-takes-all")`` and the CLI name a rule by the snake_case of its
    class (``ZBox`` -> ``z_box``); each name gets a composite whose default is that class."""
    import re

    for key, cls in rules.RULES.items():
        assert key == re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        assert type(composites.get(key.replace("_", "-").upper()).default) is cls
    box = composites.get("z_box", low=-2.0, high=3.0).default
    assert (type(box), box.low, box.high) == (rules.ZBox, -2.0, 3.0)
