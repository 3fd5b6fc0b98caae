"""The speed and memory machinery changes no result.

Three mechanisms make LRP cheaper without changing what it computes; each is checked against the
plain path it replaces:

- recomputation (``Analyzer._recompute_plan``): values a rule reads are rebuilt in the backward
  pass from a kept ``z0`` instead of being kept from the forward pass: the same operations on the
  same values, but another graph, in which oneDNN may fuse or pick kernels differently, so the
  results are compared up to float rounding;
- fused terms (``Linear.input_axis``): a rule group with several terms runs as one operation on
  stacked inputs and kernels: equal to the term-by-term sum up to float rounding;
- out-of-memory splitting: a step that runs out of memory is halved and retried (other steps
  than the whole batch: equal up to float rounding, as any other batch split).

Tolerances: ``rtol=1e-5`` and ``atol`` a small fraction of the largest value compared; a wrong
rule, a dropped term or a lost sample changes results by far more.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lrp
from tf_lrp import composites, rules

L = keras.layers


def vgg_like() -> keras.Model:
    keras.utils.set_random_seed(3)
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
    y = L.Conv2D(6, 3, padding="same", name="c2")(y)
    y = L.ReLU(name="r2")(y)
    y = L.MaxPooling2D(name="pool")(y)
    y = L.Conv2D(8, 3, activation="relu", name="c3")(y)
    y = L.Flatten(name="flat")(y)
    y = L.Dense(16, activation="relu", name="d1")(y)
    y = L.Dense(5, name="d2")(y)
    return keras.Model(x, y)


def residual_bn() -> keras.Model:
    keras.utils.set_random_seed(4)
    x = keras.Input((10, 10, 3))
    h = L.Conv2D(4, 3, padding="same", name="c1")(x)
    h = L.BatchNormalization(name="bn1")(h)
    h = L.ReLU(name="r1")(h)
    y = L.Conv2D(4, 3, padding="same", name="c2")(h)
    y = L.ReLU(name="r2")(y)
    y = L.Add(name="add")([h, y])
    y = L.ReLU(name="r3")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    y = L.Dense(3, name="out")(y)
    model = keras.Model(x, y)
    bn = model.get_layer("bn1")
    bn.moving_mean.assign(np.linspace(-0.3, 0.3, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


def assert_close(actual, expected, scale: float = 1e-5) -> None:
    """Equal up to float32 rounding (``atol`` relative to the largest expected value)."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=scale * np.abs(expected).max())


def _input(model, n=3, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *model.inputs[0].shape[1:])).astype("float32")


COMPOSITES = ["epsilon", "epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box",
              "deep_taylor"]


@pytest.mark.parametrize("name", COMPOSITES)
def test_recomputing_changes_no_result(name):
    model = vgg_like()
    x = _input(model)
    planned = tf_lrp.Analyzer(model, name)
    kept = tf_lrp.Analyzer(model, name)
    kept._recompute = {}
    expected = kept(x)
    assert np.abs(expected).max() > 0
    assert_close(planned(x), expected)


@pytest.mark.parametrize("name", COMPOSITES)
def test_recomputing_with_folded_batchnorm(name):
    # oneDNN may fuse the forward's bias add into the convolution on one path and not on the
    # other, so the last bits can differ; the issue allows 1e-6
    model = residual_bn()
    x = _input(model)
    planned, kept = tf_lrp.Analyzer(model, name), tf_lrp.Analyzer(model, name)
    kept._recompute = {}
    assert_close(planned(x), kept(x), 1e-6)


def _planned_names(analyzer) -> set[str]:
    return {node.name for node in analyzer._recompute.values()}


def test_recompute_plan_follows_what_rules_read():
    model = vgg_like()
    # alpha-beta reads z0 on non-negative inputs (c2, c3), not on the signed input (c1);
    # epsilon (dense) always reads z; what follows them up to the next linear layer is rebuilt
    ab = tf_lrp.Analyzer(model, "epsilon_alpha2_beta1")
    assert _planned_names(ab) == {"c2", "r2", "pool", "c3", "c3/activation", "flat", "d1",
                                  "d1/activation", "d2"}
    # z+ reads no forward output: only the dense layers' chains are rebuilt
    plus = tf_lrp.Analyzer(model, "epsilon_plus")
    assert _planned_names(plus) == {"d1", "d1/activation", "d2"}
    zplus = tf_lrp.Analyzer(model, rules.ZPlus())
    assert zplus._recompute == {}
    # the residual Add is kept, not rebuilt (its rule reads it; it has several inputs); the ReLU
    # and pooling after it are rebuilt from it
    res = tf_lrp.Analyzer(residual_bn(), "epsilon")
    assert _planned_names(res) == {"c1+bn1", "r1", "c2", "r2", "r3", "gap", "out"}
    res_plus = tf_lrp.Analyzer(residual_bn(), "epsilon_plus")
    assert _planned_names(res_plus) == {"r3", "gap", "out"}


def test_rules_declare_what_they_read():
    assert rules.Epsilon().reads_output([False]) and rules.Zero().reads_output([True])
    assert rules.AlphaBeta(2, 1).reads_output([True])
    assert not rules.AlphaBeta(2, 1).reads_output([False])
    assert not rules.ZPlus().reads_output([True])
    assert not rules.Gamma().reads_output([True])
    assert not rules.Flat().reads_output([True]) and not rules.Pass().reads_output([True])


def _dense_model():
    keras.utils.set_random_seed(5)
    x = keras.Input((7,))
    y = L.Dense(6, activation="relu")(x)
    return keras.Model(x, L.Dense(3)(y))


def _conv_model():
    keras.utils.set_random_seed(6)
    x = keras.Input((9, 9, 2))
    y = L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    y = L.Conv2DTranspose(3, 3, strides=2)(y)
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)))


FIRST_RULES = {
    "gamma": rules.Gamma(0.5),
    "z_plus": rules.ZPlus(),
    "alpha2_beta1": rules.AlphaBeta(2, 1),
    "z_box": rules.ZBox(-1.0, 1.0),
}


def _concats(analyzer, x) -> int:
    fn = analyzer._explain_fn.get_concrete_function(*analyzer._explain_fn.input_signature)
    return sum(op.type == "ConcatV2" for op in fn.graph.get_operations())


@pytest.mark.parametrize("make", [_dense_model, _conv_model], ids=["dense", "conv"])
@pytest.mark.parametrize("rule", list(FIRST_RULES), ids=list(FIRST_RULES))
def test_fused_terms_equal_term_by_term(make, rule):
    model = make()
    x = _input(model, 4, seed=1)  # signed: every x- term is live
    composite = composites.LayerMap(default=rules.Epsilon(), first=FIRST_RULES[rule])
    fused = tf_lrp.Analyzer(model, composite)
    single = tf_lrp.Analyzer(model, composite)
    for node in single.graph.nodes:
        if node.linear is not None:
            node.linear.input_axis = None
    a, b = fused(x), single(x)
    assert_close(a, b, 1e-6)
    assert np.abs(b).max() > 0
    assert _concats(fused, x) > 0 and _concats(single, x) == 0


def _oom_after(limit: int, fn):
    """``fn`` that raises an out-of-memory error on steps of more than ``limit`` samples."""
    sizes = []

    def wrapped(xs, *rest):
        sizes.append(int(xs[0].shape[0]))
        if sizes[-1] > limit:
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nmore")
        return fn(xs, *rest)

    return wrapped, sizes


def test_out_of_memory_step_is_halved():
    model = _dense_model()
    x = _input(model, 10, seed=2)
    analyzer = tf_lrp.Analyzer(model)
    expected, expected_y = analyzer(x), analyzer.predict(x)
    analyzer._explain_fn, sizes = _oom_after(3, analyzer._explain_fn)
    with pytest.warns(ResourceWarning, match="out of memory on a step of 10 samples; continuing "
                                             "with 5.*batch_size=5"):
        result = analyzer(x)
    # computed in steps of 2 against one step of 10: equal up to float rounding
    assert_close(result, expected)
    assert sizes == [10, 5, 2, 2, 2, 2, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the smaller step is kept: no new warning
        again = analyzer(x)
    assert sizes[7:] == [2] * 5
    # the same steps of 2 through the same function as `result`: the same computation
    np.testing.assert_array_equal(again, result)
    analyzer._predict_fn, psizes = _oom_after(3, analyzer._predict_fn)
    assert_close(analyzer.predict(x), expected_y)
    assert psizes == [2] * 5


def test_single_sample_out_of_memory_raises():
    model = _dense_model()
    analyzer = tf_lrp.Analyzer(model)
    analyzer._explain_fn, _ = _oom_after(0, analyzer._explain_fn)
    with pytest.warns(ResourceWarning), pytest.raises(MemoryError, match="single sample does not "
                                                       "fit in memory.*OOM when allocating"):
        analyzer(_input(model, 2))


def test_recomputing_on_resnet50_architecture():
    # keras.applications' ResNet-50 (random weights, small input): 16 residual blocks, folded
    # BatchNorm, padding and max pooling: every composite traces without a dependency cycle and
    # gives the same relevance as without recomputation
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=4,
                                        classifier_activation=None)
    x = _input(model, 2, seed=3)
    for name in ("epsilon", "epsilon_alpha2_beta1"):
        planned, kept = tf_lrp.Analyzer(model, name), tf_lrp.Analyzer(model, name)
        kept._recompute = {}
        a, b = planned(x), kept(x)
        assert np.abs(b).max() > 0
        assert_close(a, b)
