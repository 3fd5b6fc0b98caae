"""Relevance of weights and filters (Analyzer.parameter_relevance) against explicit NumPy
implementations of each rule's shares (generalized gamma, z+, alpha-beta, epsilon with bias),
on a dense and a convolutional layer with signed, asymmetric inputs; per filter against
Concept Relevance Propagation; through a folded BatchNormalization."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tf_lrp
from tf_lrp import composites, rules

TARGET = [2, 0, 3]


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((6, 5, 2))
    h = keras.layers.Conv2D(3, (3, 2), name="conv")(x_in)  # no activation: signed outputs
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(4, name="dense")(h)
    m = keras.Model(x_in, out)
    rng = np.random.default_rng(seed + 1)
    for v in m.weights:
        v.assign(rng.normal(0.15, 0.6, v.shape).astype("float32"))
    x = rng.uniform(-0.7, 1.9, (3, 6, 5, 2)).astype("float32")
    return m, x


def _patches(a, kh, kw):
    """(n, oh, ow, kh, kw, c) windows of a valid stride-1 convolution."""
    n, h, w, c = a.shape
    out = np.empty((n, h - kh + 1, w - kw + 1, kh, kw, c))
    for dy in range(kh):
        for dx in range(kw):
            out[:, :, :, dy, dx, :] = a[:, dy:dy + h - kh + 1, dx:dx + w - kw + 1, :]
    return out


def _shares(a, w, b, r, rule):
    """Explicit kernel and bias relevance of one linear map ``z = a @ w + b`` (a: (m, J),
    w: (J, K), r: (m, K) relevance at the output) under ``rule``."""
    ap, an = np.maximum(a, 0), np.minimum(a, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    bp, bn = np.maximum(b, 0), np.minimum(b, 0)
    z = a @ w + b
    if isinstance(rule, rules.Gamma):
        g, eps = rule.gamma, rule.stabilizer
        up_w, down_w, up_b, down_b = w + g * wp, w + g * wn, b + g * bp, b + g * bn
        kw, kb = np.zeros_like(w), np.zeros_like(b)
        for positive in (True, False):
            sel = (z >= 0) if positive else (z < 0)
            wa, wb_ = (up_w, down_w) if positive else (down_w, up_w)
            bias = up_b if positive else down_b
            d = ap @ wa + an @ wb_ + bias
            d = d + np.where(d >= 0, eps, -eps)
            s = np.where(sel, r / d, 0.0)
            kw += wa * (ap.T @ s) + wb_ * (an.T @ s)
            kb += bias * s.sum(0)
        return kw, kb
    if isinstance(rule, rules.AlphaBeta):  # z+ = a+ w+ + a- w- (+ b+), z- = a+ w- + a- w+ (+ b-)
        kw, kb = np.zeros_like(w), np.zeros_like(b)
        for coef, (w1, w2), b1 in ((rule.alpha, (wp, wn), bp), (-rule.beta, (wn, wp), bn)):
            if coef == 0:
                continue
            b1 = b1 if rule.bias else np.zeros_like(b)
            d = ap @ w1 + an @ w2 + b1
            s = np.divide(r, d, out=np.zeros_like(r), where=d != 0)
            kw += coef * (w1 * (ap.T @ s) + w2 * (an.T @ s))
            kb += coef * b1 * s.sum(0)
        return kw, kb
    eps = rule.epsilon  # Epsilon with bias
    s = r / (z + np.where(z >= 0, eps, -eps))
    return w * (a.T @ s), b * s.sum(0)


@pytest.mark.parametrize("rule", [rules.Gamma(0.35, 1e-7), rules.ZPlus(),
                                  rules.AlphaBeta(2.0, 1.0), rules.AlphaBeta(3.0, 2.0, bias=True),
                                  rules.Epsilon(0.05)],
                         ids=["gamma", "z_plus", "alpha2beta1", "alpha3beta2_bias", "epsilon"])
def test_kernel_and_bias_relevance_equal_the_explicit_shares(rule):
    model, x = _model()
    a = tf_lrp.Analyzer(model, composites.LayerMap(default=rule))
    got = a.parameter_relevance(x, target=TARGET)
    lw = a.layerwise(x, TARGET)
    conv, dense = model.get_layer("conv"), model.get_layer("dense")
    # dense: its input is the flattened convolution output
    h = keras.ops.convert_to_numpy(conv(x)).reshape(3, -1).astype(np.float64)
    kw, kb = _shares(h, dense.kernel.numpy().astype(np.float64),
                     dense.bias.numpy().astype(np.float64), lw["dense"].astype(np.float64), rule)
    scale = np.abs(kw).max()
    np.testing.assert_allclose(got["dense"]["kernel"], kw, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(got["dense"]["bias"], kb, rtol=1e-4, atol=1e-5 * scale)
    # convolution: every window is a row of a linear map with the flattened kernel
    p = _patches(x.astype(np.float64), 3, 2).reshape(-1, 3 * 2 * 2)
    wc = conv.kernel.numpy().astype(np.float64)
    kw, kb = _shares(p, wc.reshape(-1, 3), conv.bias.numpy().astype(np.float64),
                     lw["conv"].reshape(-1, 3).astype(np.float64), rule)
    scale = np.abs(kw).max()
    np.testing.assert_allclose(got["conv"]["kernel"], kw.reshape(wc.shape), rtol=1e-4,
                               atol=1e-5 * scale)
    np.testing.assert_allclose(got["conv"]["bias"], kb, rtol=1e-4, atol=1e-5 * scale)
    assert got["conv"]["kernel"].shape == wc.shape and got["conv"]["bias"].shape == (3,)


def test_per_filter_relevance_is_the_concept_relevance_of_the_channel():
    """Per output unit, kernel plus bias relevance is the relevance at the unit (conserving
    rules: no stabilizer where the output is away from zero), i.e. CRP's concept relevance
    of the channel summed over the samples; per filter is the sum of the entries."""
    model, x = _model(3)
    a = tf_lrp.Analyzer(model, composites.LayerMap([(keras.layers.Conv2D, rules.ZPlus()),
                                                    (keras.layers.Dense, rules.Zero())]))
    x = np.abs(x)  # z+ conserves on non-negative inputs with positive weights present
    per = a.parameter_relevance(x, target=TARGET, per="filter")
    entries = a.parameter_relevance(x, target=TARGET)
    concept = a.concept_relevance(x, TARGET, layer="conv").sum(0)
    np.testing.assert_allclose(per["conv"], concept, rtol=1e-4, atol=1e-5 * np.abs(concept).max())
    k = entries["conv"]["kernel"]
    np.testing.assert_allclose(per["conv"], k.reshape(-1, 3).sum(0) + entries["conv"]["bias"],
                               rtol=1e-5, atol=1e-6 * np.abs(k).sum())
    dense = a.layerwise(x, TARGET)["dense"].sum(0)
    np.testing.assert_allclose(per["dense"], dense, rtol=1e-4, atol=1e-5 * np.abs(dense).max())


def test_folded_batch_normalization_gives_the_folded_kernel_relevance():
    """A Conv2D + BatchNormalization pair is one linear map: its parameter relevance is that of
    the folded kernel and bias, keyed by the convolution's name, and equals the relevance of
    the same map written as one Conv2D."""
    keras.utils.set_random_seed(5)
    x_in = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, name="conv")
    bn = keras.layers.BatchNormalization(name="bn")
    out = keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(
        keras.layers.ReLU()(bn(conv(x_in)))))
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(6)
    for v in model.weights:
        v.assign(rng.uniform(0.3, 1.4, v.shape).astype("float32") if "variance" in v.path
                 else rng.normal(0.1, 0.5, v.shape).astype("float32"))
    gamma, beta, mean, var = (w.numpy() for w in bn.weights)
    scale = gamma / np.sqrt(var + bn.epsilon)
    y_in = keras.Input((5, 5, 2))
    fused = keras.layers.Conv2D(3, 3, name="conv")
    plain = keras.Model(y_in, keras.layers.Dense(2, name="dense")(keras.layers.Flatten()(
        keras.layers.ReLU()(fused(y_in)))))
    fused.set_weights([conv.kernel.numpy() * scale, (conv.bias.numpy() - mean) * scale + beta])
    plain.get_layer("dense").set_weights(model.get_layer("dense").get_weights())
    x = rng.normal(0.2, 1.0, (2, 5, 5, 2)).astype("float32")
    rule = composites.LayerMap(default=rules.Gamma(0.4))
    got = tf_lrp.Analyzer(model, rule).parameter_relevance(x, target=[1, 0])
    ref = tf_lrp.Analyzer(plain, rule).parameter_relevance(x, target=[1, 0])
    assert sorted(got) == ["conv", "dense"]
    for part in ("kernel", "bias"):
        np.testing.assert_allclose(got["conv"][part], ref["conv"][part], rtol=1e-4,
                                   atol=1e-5 * np.abs(ref["conv"]["kernel"]).max())


def test_bad_per_is_refused():
    model, x = _model()
    with pytest.raises(tf_lrp.errors.InputError, match="per must be"):
        tf_lrp.Analyzer(model, "epsilon").parameter_relevance(x, per="channel")
