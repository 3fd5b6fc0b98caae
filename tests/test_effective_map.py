"""Rules act on a layer's effective linear map.

A SeparableConv1D/2D must explain exactly like the Conv layer holding its combined kernel
``K[..., c, o] = sum_m D[..., c, m] P[c*M + m, o]``; a DepthwiseConv2D with
``depth_multiplier > 1`` like the Conv2D with its block-diagonal kernel; a grouped Conv2D like
the Conv2D with the zero-padded full kernel. Every rule, with biases, inputs of both signs
(so the x- terms and the fused paths run), and a ReLU branch and a signed branch.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import rules

RULES = {
    "epsilon": lambda: rules.Epsilon(0.1),
    "zero": lambda: rules.Zero(),
    "gamma": lambda: rules.Gamma(0.3),
    "alpha2beta1_bias": lambda: rules.AlphaBeta(2, 1, bias=True),
    "zplus": lambda: rules.ZPlus(),
    "zbox": lambda: rules.ZBox(-2.0, 1.5),
    "wsquare": lambda: rules.WSquare(),
    "flat": lambda: rules.Flat(),
}


def _model(make_layer, shape):
    """input -> layer -> (ReLU branch + signed branch) -> Dense: negative outputs get relevance."""
    inp = keras.Input(shape)
    z = make_layer()(inp)
    flat = kl.Flatten()(z)
    mixed = kl.Concatenate()([kl.ReLU()(flat), flat])
    return keras.Model(inp, kl.Dense(3)(mixed))


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32")
                           for w in layer.get_weights()])


def _separable_kernel(d, p):
    c, m = d.shape[-2:]
    return np.einsum("...cm,cmo->...co", d, p.reshape(c, m, p.shape[-1]))


def _depthwise_kernel(d):
    c, m = d.shape[-2:]
    full = np.zeros((*d.shape[:-2], c, c * m), d.dtype)
    for i in range(c):
        full[..., i, i * m:(i + 1) * m] = d[..., i, :]
    return full


def _grouped_kernel(k, groups):
    cin_g, cout = k.shape[-2:]
    cout_g = cout // groups
    full = np.zeros((*k.shape[:-2], cin_g * groups, cout), k.dtype)
    for g in range(groups):
        full[..., g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = \
            k[..., :, g * cout_g:(g + 1) * cout_g]
    return full


# name -> (input shape, the layer, its plain Conv twin, twin kernel from the layer's weights)
CASES = {
    "separable2d": ((7, 7, 3),
                    lambda: kl.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2),
                    lambda: kl.Conv2D(4, 3, strides=2, padding="same"),
                    lambda w: [_separable_kernel(w[0], w[1]), w[2]]),
    "separable1d": ((9, 3),
                    lambda: kl.SeparableConv1D(4, 3, padding="valid", depth_multiplier=3),
                    lambda: kl.Conv1D(4, 3),
                    lambda w: [_separable_kernel(w[0], w[1]), w[2]]),
    "depthwise_m3": ((6, 6, 2),
                     lambda: kl.DepthwiseConv2D(3, depth_multiplier=3, padding="same"),
                     lambda: kl.Conv2D(6, 3, padding="same"),
                     lambda w: [_depthwise_kernel(w[0]), w[1]]),
    "grouped": ((6, 6, 4),
                lambda: kl.Conv2D(6, 3, groups=2),
                lambda: kl.Conv2D(6, 3),
                lambda w: [_grouped_kernel(w[0], 2), w[1]]),
}


@pytest.fixture(scope="module")
def pairs():
    out = {}
    for name, (shape, layer, twin, kernel) in CASES.items():
        model = _model(layer, shape)
        _randomize(model, 3)
        plain = _model(twin, shape)
        plain.layers[1].set_weights(kernel(model.layers[1].get_weights()))
        plain.layers[-1].set_weights(model.layers[-1].get_weights())
        x = np.random.default_rng(5).normal(size=(3, *shape)).astype("float32")
        np.testing.assert_allclose(model(x), plain(x), rtol=1e-5, atol=1e-5)
        out[name] = (model, plain, x)
    return out


@pytest.mark.parametrize("rule_id", sorted(RULES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_explains_like_its_effective_conv(pairs, case, rule_id):
    model, plain, x = pairs[case]
    got = tf_lrp.Analyzer(model, RULES[rule_id]())(x, target=[0, 1, 2])
    want = tf_lrp.Analyzer(plain, RULES[rule_id]())(x, target=[0, 1, 2])
    scale = np.abs(want).max()
    assert scale > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)


def test_separable_zplus_conserves():
    """z+ on the effective kernel conserves (per-kernel z+ gave sum(R)/logit 1.88)."""
    model, _, x = _model_bias_free()
    r = tf_lrp.Analyzer(model, rules.ZPlus())(x, target=0)
    logit = model(x).numpy()[:, 0]
    np.testing.assert_allclose(r.reshape(len(x), -1).sum(1), logit, rtol=1e-4)


def _model_bias_free():
    inp = keras.Input((7, 7, 3))
    h = kl.SeparableConv2D(4, 3, depth_multiplier=2, use_bias=False)(inp)
    h = kl.ReLU()(h)
    model = keras.Model(inp, kl.Dense(2, use_bias=False)(kl.Flatten()(h)))
    _randomize(model, 11)
    x = np.abs(np.random.default_rng(2).normal(size=(2, 7, 7, 3))).astype("float32")
    # positive logit for target 0 on both samples (z+ conserves positive outputs)
    w = model.layers[-1].get_weights()[0]
    model.layers[-1].set_weights([np.abs(w)])
    return model, None, x


def _depthwise_batchnorm_pair():
    """DepthwiseConv2D(depth_multiplier=2) then a foldable BatchNormalization, and the Conv2D
    holding the folded block-diagonal kernel ``k * s``, bias ``(b - mean) s + beta``."""
    shape, c, m = (6, 6, 3), 3, 2
    inp = keras.Input(shape)
    bn = kl.BatchNormalization(epsilon=0.01)
    z = bn(kl.DepthwiseConv2D(3, depth_multiplier=m, padding="same")(inp))
    flat = kl.Flatten()(z)
    model = keras.Model(inp, kl.Dense(3)(kl.Concatenate()([kl.ReLU()(flat), flat])))
    _randomize(model, 17)
    rng = np.random.default_rng(18)
    gamma = np.array([1.5, -0.7, 0.4, 2.0, -1.2, 0.9])  # channel c*m + j; both signs
    stats = [gamma, rng.normal(0, 0.5, 6), rng.normal(0, 0.5, 6), rng.uniform(0.2, 3.0, 6)]
    bn.set_weights([v.astype("float32") for v in stats])
    kernel, bias = model.layers[1].get_weights()
    s = gamma / np.sqrt(stats[3] + 0.01)
    folded = kernel * s.reshape(c, m)
    plain = _model(lambda: kl.Conv2D(c * m, 3, padding="same"), shape)
    plain.layers[1].set_weights([_depthwise_kernel(folded), (bias - stats[2]) * s + stats[1]])
    plain.layers[-1].set_weights(model.layers[-1].get_weights())
    x = np.random.default_rng(19).normal(size=(3, *shape)).astype("float32")
    return model, plain, x


@pytest.mark.parametrize("rule_id", ["gamma", "zbox", "alpha2beta1_bias"])
def test_depthwise_multiplier_batchnorm_fold_is_the_effective_conv(rule_id):
    """The fold scales output channel ``c*M + j`` of the depthwise kernel by its own BN scale:
    the forward is Keras's, and every rule explains like the plain folded Conv2D."""
    model, plain, x = _depthwise_batchnorm_pair()
    np.testing.assert_allclose(model(x), plain(x), rtol=1e-5, atol=1e-5)  # the fold by hand
    analyzer = tf_lrp.Analyzer(model, RULES[rule_id]())
    assert any("+batch_normalization" in name for name, _, _ in analyzer.rule_table())
    np.testing.assert_allclose(analyzer.predict(x), model(x), rtol=1e-5, atol=1e-5)
    got = analyzer(x, target=[2, 0, 1])
    want = tf_lrp.Analyzer(plain, RULES[rule_id]())(x, target=[2, 0, 1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _channels_model(fmt: str, rank: int):
    """BatchNormalization (on the input: unfolded) -> Conv (biased) -> BatchNormalization
    (foldable, on the channel axis) -> ReLU -> Conv -> pooling -> Dense, in ``fmt``; ``rank`` 1 or 2 spatial axes. Shapes are unequal on every
    axis (a bias broadcast along the wrong axis cannot pass by shape)."""
    conv = {1: kl.Conv1D, 2: kl.Conv2D}[rank]
    pool = {1: kl.GlobalMaxPooling1D, 2: kl.GlobalMaxPooling2D}[rank]
    spatial = (11, 9)[:rank]
    inp = keras.Input((3, *spatial) if fmt == "channels_first" else (*spatial, 3))
    axis = 1 if fmt == "channels_first" else -1
    x = kl.BatchNormalization(axis=axis)(inp)  # on the input: not folded (an affine map)
    x = conv(4, 3, data_format=fmt, bias_initializer="glorot_uniform")(x)
    x = kl.ReLU()(kl.BatchNormalization(axis=axis)(x))
    x = conv(5, 2, data_format=fmt, bias_initializer="glorot_uniform", activation="relu")(x)
    return keras.Model(inp, kl.Dense(3)(pool(data_format=fmt)(x)))


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("rule_id", ["epsilon", "zplus", "zbox", "alpha2beta1_bias"])
def test_channels_first_explains_like_channels_last(rank, rule_id):
    """The same weights in ``channels_first``: per-channel biases and the BatchNormalization
    fold act on axis 1, so the relevance is the channels-last relevance with the channel axis
    moved (Conv1D's axis 1 is rank - 2: a bias added on the last axis would be wrong)."""
    keras.utils.set_random_seed(4)
    last, first = _channels_model("channels_last", rank), _channels_model("channels_first", rank)
    _randomize(last, 7)
    for bn, sign in ((last.layers[1], [1.0, -1.0, 1.0]), (last.layers[3], [1, 1, -1, -1])):
        gamma, beta, mean, variance = bn.get_weights()  # scales of both signs
        bn.set_weights([(np.abs(gamma) + 0.2) * sign, beta, mean, np.abs(variance) + 0.3])
    first.set_weights(last.get_weights())
    x = np.random.default_rng(9).normal(size=(2, *last.input_shape[1:])).astype("float32")
    xt = np.moveaxis(x, -1, 1)
    np.testing.assert_allclose(first(xt), last(x), rtol=1e-5, atol=1e-5)
    analyzer = tf_lrp.Analyzer(first, RULES[rule_id]())
    assert any("+batch_normalization" in name for name, _, _ in analyzer.rule_table())
    want = tf_lrp.Analyzer(last, RULES[rule_id]())(x, target=[2, 0])
    got = np.moveaxis(np.asarray(analyzer(xt, target=[2, 0])), 1, -1)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


class _DoubledDense(kl.Layer):
    """A custom layer with weights: ``x @ (2 W) + b``."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), name="b")

    def call(self, x):
        return keras.ops.matmul(x, 2.0 * self.w) + self.b


class _DoubledKerasDense(kl.Dense):
    """A subclass of a built-in class: ``2 (x @ W + b)``; its registration must take precedence
    over the built-in Dense entry (which would explain it with ``W``)."""

    def call(self, x):
        return 2.0 * super().call(x)


def _doubled_linear(layer):
    """The factory ``register_linear`` takes: kernel ``2 W``, bias ``b`` (``2 b`` for the Dense
    subclass) on the default channel axis, output channels scaled on the kernel's last axis (a
    following BatchNorm folds)."""
    from tf_lrp import layers as lrp_layers

    subclass = isinstance(layer, kl.Dense)
    w, b = (layer.kernel, layer.bias) if subclass else (layer.w, layer.b)
    return lrp_layers.Linear(
        layer=layer, kernels=lambda: [2.0 * keras.ops.convert_to_tensor(w)],
        bias=lambda: (2.0 if subclass else 1.0) * keras.ops.convert_to_tensor(b),
        apply=lambda x, k: keras.ops.matmul(x, k[0]),
        scale_output=lambda k, s: [k[0] * s])


@pytest.mark.parametrize("custom_class", [_DoubledDense, _DoubledKerasDense])
@pytest.mark.parametrize("rule_id", ["gamma", "zbox", "alpha2beta1_bias"])
def test_register_linear_explains_a_custom_layer_like_its_dense(monkeypatch, rule_id,
                                                                custom_class):
    """A registered custom layer (followed by a BatchNormalization the analyzer folds into it)
    explains like the Dense layer with kernel ``2 W`` and the same BatchNormalization."""
    from tf_lrp import layers as lrp_layers

    monkeypatch.setattr(lrp_layers, "_LINEAR", list(lrp_layers._LINEAR))
    lrp_layers.register_linear(custom_class, _doubled_linear)

    def build(first):  # on a sequence: the custom layer's output has rank 3
        inp = keras.Input((2, 6))
        x = kl.BatchNormalization()(first(inp))
        return keras.Model(inp, kl.Dense(3)(kl.Flatten()(kl.ReLU()(x))))

    custom, plain = build(custom_class(4)), build(kl.Dense(4))
    _randomize(custom, 11)
    gamma, beta, mean, variance = custom.layers[2].get_weights()
    custom.layers[2].set_weights([gamma, beta, mean, np.abs(variance) + 0.2])
    w, b = custom.layers[1].get_weights()
    b = 2.0 * b if custom_class is _DoubledKerasDense else b
    plain.set_weights([2.0 * w, b, *custom.get_weights()[2:]])
    assert any("+batch_normalization" in name for name, _, _ in
               tf_lrp.Analyzer(plain, rules.Zero()).rule_table())
    x = np.random.default_rng(12).normal(size=(3, 2, 6)).astype("float32")
    np.testing.assert_allclose(custom(x), plain(x), rtol=1e-5, atol=1e-5)
    analyzer = tf_lrp.Analyzer(custom, RULES[rule_id]())
    assert any("+batch_normalization" in name for name, _, _ in analyzer.rule_table())
    got = analyzer(x, target=[1, 2, 0])
    want = tf_lrp.Analyzer(plain, RULES[rule_id]())(x, target=[1, 2, 0])
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
