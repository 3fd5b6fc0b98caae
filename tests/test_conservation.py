"""Relevance conservation: input relevance sums to the explained output, per sample.

Conservation is exact (up to float32 round-off and the 1e-6/1e-9 stabilisers) only where
nothing absorbs relevance. Where it breaks, and why:

- biases: z_k = sum_j a_j w_jk + b_k, but only the sum_j part is handed down, so a fraction
  b_k / z_k of R_k stays in the bias (Epsilon/Zero with bias, Gamma, AlphaBeta(bias=True)).
  All models here are therefore bias-free except in the demonstrations at the end.
- epsilon: d_k = z_k + eps sign(z_k) keeps eps / d_k of R_k; only a tiny epsilon conserves.
- alpha-beta: a neuron without negative (or positive) contributions has zn = 0 (zp = 0); the
  zero guard drops that term, so alpha R_k (or -beta R_k) comes down instead of R_k.
- zero guard anywhere: relevance that arrives at z = 0 is dropped. That includes an all-zero
  average-pooling window receiving relevance from a rule that does not multiply by the
  activation (WSquare, Flat, ZBox).
- ZBox: sum_j R_j = R_k holds by construction, but z^B > 0 (and positive relevance) needs
  every input within [low, high]; the tests assert that precondition.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import reference as ref

import tf_lrp
from tf_lrp import rules

L = keras.layers
SEED = 4321
BOUND = 4.0  # ZBox bounds [-BOUND, BOUND]; every layer input must lie inside (asserted)

CONSERVATIVE = {
    "zero": lambda: rules.Zero(),
    "epsilon_tiny": lambda: rules.Epsilon(epsilon=1e-9),
    # the default stabilizer 1e-6 absorbs 1e-6 / z of each neuron's relevance (5e-5 at z = 0.02)
    "gamma": lambda: rules.Gamma(gamma=0.25, stabilizer=1e-9),
    "zplus": lambda: rules.ZPlus(),
    "alpha2beta1": lambda: rules.AlphaBeta(alpha=2, beta=1),
    "alpha1beta0": lambda: rules.AlphaBeta(alpha=1, beta=0),
    "zbox": lambda: rules.ZBox(low=-BOUND, high=BOUND),
    "wsquare": lambda: rules.WSquare(),
    "flat": lambda: rules.Flat(),
}
# Rules whose relevance is proportional to the activation: nothing reaches an all-zero
# pooling window, so average pooling after a ReLU cannot absorb relevance.
ACTIVATION_WEIGHTED = ["zero", "epsilon_tiny", "gamma", "zplus", "alpha2beta1", "alpha1beta0"]


# ----------------------------------------------------------------------------- models


def _dense(units: int, relu: bool = True) -> L.Dense:
    return L.Dense(units, activation="relu" if relu else None, use_bias=False)


def _chain(in_shape, layers) -> keras.Model:
    x = keras.Input(shape=in_shape)
    y = x
    for layer in layers:
        y = layer(y)
    return keras.Model(x, y)


# Layers are wide enough (>= 24 units, 12 input features, 8 channels) that every neuron
# receiving relevance has positive AND negative contributions: with ~4 active inputs a neuron
# has only one sign with probability 1/8, and AlphaBeta/ZPlus then leak (see the docstring).
def mlp() -> keras.Model:
    return _chain((12,), [_dense(32), _dense(24), _dense(4, relu=False)])


def cnn_maxpool() -> keras.Model:
    return _chain((6, 6, 2), [
        L.Conv2D(8, 3, padding="same", activation="relu", use_bias=False), L.MaxPooling2D(2),
        L.Conv2D(16, 2, activation="relu", use_bias=False),  # 'same' corners see too few inputs
        L.MaxPooling2D(2, strides=1, padding="same"),
        L.Flatten(), _dense(3, relu=False)])


def cnn_avgpool() -> keras.Model:
    return _chain((6, 6, 2), [
        L.Conv2D(8, 3, padding="same", activation="relu", use_bias=False),
        L.AveragePooling2D(2), L.Conv2D(24, 2, use_bias=False), L.ReLU(),
        L.GlobalAveragePooling2D(), _dense(3, relu=False)])


def residual() -> keras.Model:
    x = keras.Input(shape=(12,))
    h = _dense(24)(x)
    y = L.Add()([h, _dense(24, relu=False)(h)])
    y = L.ReLU()(y)
    return keras.Model(x, _dense(3, relu=False)(y))


def concatenate() -> keras.Model:
    x = keras.Input(shape=(12,))
    y = L.Concatenate()([_dense(16)(x), _dense(12)(x)])
    return keras.Model(x, _dense(3, relu=False)(y))


def nested() -> keras.Model:
    inner = keras.Sequential([keras.Input(shape=(24,)), _dense(24), _dense(24)], name="inner")
    x = keras.Input(shape=(12,))
    return keras.Model(x, _dense(3, relu=False)(inner(_dense(24)(x))))


def shared_layer() -> keras.Model:
    x = keras.Input(shape=(12,))
    h = _dense(24)(x)
    shared = _dense(24)
    y = L.Concatenate()([shared(h), shared(_dense(24)(h))])
    return keras.Model(x, _dense(3, relu=False)(y))


def two_inputs() -> keras.Model:
    a, b = keras.Input(shape=(12,)), keras.Input(shape=(10,))
    y = L.Concatenate()([_dense(16)(a), _dense(16)(b)])
    return keras.Model([a, b], _dense(3, relu=False)(y))


CHAINS = {"mlp": mlp, "cnn_maxpool": cnn_maxpool}
GRAPHS = {"residual": residual, "concatenate": concatenate, "nested": nested,
          "shared_layer": shared_layer, "two_inputs": two_inputs}
BUILDERS = {**CHAINS, **GRAPHS, "cnn_avgpool": cnn_avgpool}


@functools.cache
def model(name: str) -> keras.Model:
    return ref.randomize_weights(BUILDERS[name](), SEED)


def data(shape: tuple[int, ...], n: int = 4, seed: int = SEED + 1) -> np.ndarray:
    """Half the samples mixed-sign in [-1, 1], half non-negative in [0, 1]."""
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *shape))
    x[n // 2 :] = np.abs(x[n // 2 :])
    return x.astype(np.float32)


@functools.cache
def inputs(name: str):
    """The test batch of a model; a list for multi-input models."""
    xs = [data(tuple(t.shape[1:]), seed=SEED + 1 + i) for i, t in enumerate(model(name).inputs)]
    return xs if len(xs) > 1 else xs[0]


def explained(m: keras.Model, x, target) -> np.ndarray:
    """The output value being explained, per sample (float64)."""
    out = np.asarray(m(x, training=False), dtype=np.float64)
    return out[np.arange(len(out)), target]


def sample_sums(relevance) -> np.ndarray:
    """Per-sample sum of relevance; a list (multi-input) is summed over all its arrays."""
    parts = relevance if isinstance(relevance, list | tuple) else [relevance]
    return sum(np.asarray(r, dtype=np.float64).reshape(len(r), -1).sum(axis=1) for r in parts)


def assert_conserved(relevance, value: np.ndarray, rtol: float = 1e-5) -> None:
    """Per sample, |sum R - value| <= rtol * (|value| + sum |R|).

    float32 round-off of a sum grows with the magnitude of its terms, so the slack is relative
    to sum |R| as well as to the value (they differ where positive and negative relevance
    cancel). A leak of a bias share, an epsilon share or a dropped neuron is far larger.
    """
    parts = relevance if isinstance(relevance, list | tuple) else [relevance]
    magnitude = sum(np.abs(np.asarray(r, np.float64)).reshape(len(r), -1).sum(axis=1)
                    for r in parts)
    error = np.abs(sample_sums(relevance) - value)
    bad = error > rtol * (np.abs(value) + magnitude)
    assert not bad.any(), (f"not conserved in samples {np.flatnonzero(bad).tolist()}: "
                           f"sums {sample_sums(relevance)}, explained {value}")


def assert_within_box(m: keras.Model, x) -> None:
    """ZBox precondition: the inputs and every intermediate tensor of the (outer) graph lie in
    [-BOUND, BOUND] (the inside of a nested model is covered by its output only)."""
    tensors = [t for nodes in m._nodes_by_depth.values() for node in nodes
               for t in node.output_tensors]
    for a in keras.Model(m.input, tensors)(x, training=False):
        assert np.all(np.abs(np.asarray(a)) <= BOUND)


def run(name: str, rule_id: str):
    m = model(name)
    x = inputs(name)
    target = [0, 1, 2, 0]
    if rule_id == "zbox":
        assert_within_box(m, x)
    analyzer = tf_lrp.Analyzer(m, CONSERVATIVE[rule_id]())
    return analyzer, m, x, target


# ----------------------------------------------------------------------------- conservation


@pytest.mark.parametrize("rule_id", list(CONSERVATIVE))
@pytest.mark.parametrize("name", list(CHAINS))
def test_chain_conserves_layer_by_layer(name, rule_id):
    """Bias-free chains: the relevance at every layer's output sums to the explained output.

    Breaks with biases (bias share kept), a large epsilon (eps / d kept), AlphaBeta/ZPlus at a
    neuron with one-signed contributions (zero guard), and ZBox at z^B = 0 (inputs outside the
    box). Max pooling routes each window's relevance to its winner: it conserves for every rule.
    """
    analyzer, m, x, target = run(name, rule_id)
    value = explained(m, x, target)
    assert_conserved(analyzer(x, target=target), value)
    per_layer = analyzer.layerwise(x, target)
    assert "input" in per_layer
    names = {layer.name for layer in m.layers if not isinstance(layer, L.InputLayer)}
    assert names <= set(per_layer), f"layers missing in layerwise(): {names - set(per_layer)}"
    for key, relevance in per_layer.items():
        try:
            assert_conserved(relevance, value)
        except AssertionError as err:
            raise AssertionError(f"relevance at {key!r} not conserved") from err


@pytest.mark.parametrize("rule_id", ACTIVATION_WEIGHTED)
def test_average_pooling_conserves(rule_id):
    """Average pooling (LRP-0 in proportion to its inputs) and global average pooling conserve
    for the activation-weighted rules; WSquare/Flat/ZBox would lose the relevance sent to an
    all-zero window (see test_zero_window_of_average_pooling_absorbs)."""
    analyzer, m, x, target = run("cnn_avgpool", rule_id)
    value = explained(m, x, target)
    assert_conserved(analyzer(x, target=target), value)
    for key, relevance in analyzer.layerwise(x, target).items():
        try:
            assert_conserved(relevance, value)
        except AssertionError as err:
            raise AssertionError(f"relevance at {key!r} not conserved") from err


@pytest.mark.parametrize("rule_id", list(CONSERVATIVE))
@pytest.mark.parametrize("name", list(GRAPHS))
def test_graph_conserves(name, rule_id):
    """Add (proportional split; conserves where the sum is nonzero), Concatenate (routing),
    a nested Sequential, a layer shared twice and an input used twice (relevance summed at
    fan-out), and two inputs (the sum over both inputs' relevance is the output).

    Breaks if Add's inputs sum to exactly 0 (zero guard), if fan-out relevance were overwritten
    instead of summed, or if a second input / the inside of the nested model were skipped."""
    analyzer, m, x, target = run(name, rule_id)
    relevance = analyzer(x, target=target)
    if name == "two_inputs":
        assert isinstance(relevance, list | tuple) and len(relevance) == 2
        for r, xi in zip(relevance, x, strict=True):
            assert np.shape(r) == xi.shape
        # both inputs receive a share: the split is real, not all on one input
        assert all(np.any(np.abs(r) > 0) for r in relevance)
    else:
        assert np.shape(relevance) == x.shape
    assert_conserved(relevance, explained(m, x, target))


# ----------------------------------------------------------------------------- where it breaks


@functools.cache
def single_dense(use_bias: bool, positive: bool = False) -> keras.Model:
    m = _chain((5,), [L.Dense(4, use_bias=use_bias)])
    ref.randomize_weights(m, SEED + 5)
    if positive:
        m.layers[-1].set_weights([np.abs(w) for w in m.layers[-1].get_weights()])
    return m


def test_bias_absorbs_relevance():
    """LRP-0 with biases: the input receives z_t - b_t, the bias keeps b_t. The same sum check
    as above fails here, which shows the conservation tests can fail."""
    m = single_dense(use_bias=True)
    x = data((5,))
    target = [0, 1, 2, 3]
    bias = m.layers[-1].get_weights()[1].astype(np.float64)[target]
    value = explained(m, x, target)
    relevance = tf_lrp.Analyzer(m, rules.Zero())(x, target=target)
    assert np.all(np.abs(bias) > 0.05)
    np.testing.assert_allclose(sample_sums(relevance), value - bias, rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError):
        assert_conserved(relevance, value)


def test_epsilon_absorbs_relevance():
    """Epsilon on a bias-free layer hands down z^2 / (z + eps sign z) instead of z."""
    m = single_dense(use_bias=False)
    x = data((5,))
    target = [0, 1, 2, 3]
    z = explained(m, x, target)
    relevance = tf_lrp.Analyzer(m, rules.Epsilon(epsilon=1.0))(x, target=target)
    np.testing.assert_allclose(sample_sums(relevance), z * z / (z + np.where(z >= 0, 1, -1)),
                               rtol=1e-5)


def test_alpha_beta_leaks_without_negative_contributions():
    """Positive weights and non-negative inputs: zn = 0, the beta term is dropped by the zero
    guard, and AlphaBeta(2, 1) hands down alpha * R = 2 z instead of z."""
    m = single_dense(use_bias=False, positive=True)
    x = np.abs(data((5,)))
    target = [0, 1, 2, 3]
    z = explained(m, x, target)
    relevance = tf_lrp.Analyzer(m, rules.AlphaBeta(alpha=2, beta=1))(x, target=target)
    np.testing.assert_allclose(sample_sums(relevance), 2.0 * z, rtol=1e-5)


def test_zero_window_of_average_pooling_absorbs():
    """WSquare does not multiply by the activation, so relevance reaches a pooled unit whose
    window is all zero; average pooling (LRP-0) divides by z = 0 and the zero guard drops it."""
    m = _chain((4, 4, 1), [L.AveragePooling2D(2), L.Flatten(), L.Dense(2, use_bias=False)])
    ref.randomize_weights(m, SEED + 6)
    x = np.random.default_rng(SEED + 7).uniform(0.1, 1.0, (2, 4, 4, 1)).astype(np.float32)
    x[:, :2, :2, :] = 0.0  # the top-left window (pooled unit 0) is all zero
    target = [0, 1]
    kernel = m.layers[-1].get_weights()[0].astype(np.float64)
    w2 = kernel**2
    lost = np.array([w2[0, t] / w2[:, t].sum() for t in target])  # WSquare share of unit 0
    value = explained(m, x, target)
    relevance = tf_lrp.Analyzer(m, rules.WSquare())(x, target=target)
    np.testing.assert_allclose(sample_sums(relevance), value * (1.0 - lost), rtol=1e-5)
