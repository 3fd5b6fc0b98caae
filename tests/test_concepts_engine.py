"""Conditional relevance (Concept Relevance Propagation) in the engine: completeness over channel
partitions, concept relevance sums, batched conditions equal single ones, no retracing, errors."""

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp.errors import InputError


def _residual_model():
    """conv c1 (a cut: every path passes it) -> residual block with folded BN -> Concatenate
    with c1 -> conv c3 -> max pooling -> Dense."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 3))
    a = kl.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    b = kl.BatchNormalization(name="bn")(kl.Conv2D(6, 3, padding="same", name="c2")(a))
    s = kl.ReLU()(kl.Add(name="res")([a, b]))
    c = kl.Conv2D(5, 3, padding="same", activation="relu", name="c3")(kl.Concatenate()([s, a]))
    d = kl.Dense(7, activation="tanh", name="d1")(kl.Flatten()(kl.MaxPooling2D()(c)))
    model = keras.Model(inp, kl.Dense(4, name="out")(d))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(1)
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, 0.2, 6), rng.normal(0, 0.2, 6),
                    rng.uniform(0.5, 1.5, 6)])
    return model


X = np.random.default_rng(0).normal(size=(3, 10, 10, 3)).astype("float32")


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_alpha2_beta1"])
@pytest.mark.parametrize("layer, partition", [
    ("c3", [[0, 1], [2], [3, 4]]),    # conv, below it: Concatenate, residual Add, folded BN
    ("c1", [[0, 2, 4], [1, 3, 5]]),   # the first conv
    ("d1", [[0, 1, 2], [3, 4, 5, 6]]),  # dense
])
def test_conditional_heatmaps_over_a_partition_sum_to_the_heatmap(composite, layer, partition):
    analyzer = tf_lrp.Analyzer(_residual_model(), composite)
    plain = analyzer(X, target=1)
    cond = analyzer.conditional(X, 1, [{layer: p} for p in partition])
    assert cond.shape == (3, len(partition), *X.shape[1:])
    np.testing.assert_allclose(cond.sum(axis=1), plain, rtol=1e-4,
                               atol=1e-5 * np.abs(plain).max())
    # and each part differs from the whole: the masks act
    assert all(np.abs(cond[:, j] - plain).max() > 1e-3 * np.abs(plain).max()
               for j in range(len(partition)))


def test_concept_relevance_sums_to_the_layer_relevance_and_ranks_channels():
    analyzer = tf_lrp.Analyzer(_residual_model(), "epsilon_plus")
    r = analyzer.concept_relevance(X, 2, "c3")
    assert r.shape == (3, 5)
    layer = analyzer.layerwise(X, 2)["c3"]
    np.testing.assert_allclose(r.sum(axis=1), layer.reshape(3, -1).sum(axis=1), rtol=1e-5)
    # a condition on one channel sends exactly that channel's relevance to the c3 input side
    for c in (0, 3):
        lw = analyzer.conditional(X, 2, [{"c3": [c]}])[:, 0]
        assert lw.shape == X.shape


def test_per_sample_top_k_batched_equals_one_by_one_and_does_not_retrace():
    analyzer = tf_lrp.Analyzer(_residual_model(), "epsilon_gamma_box")
    r = analyzer.concept_relevance(X, 0, "c1")
    top = np.argsort(-r, axis=1)[:, :3]
    batched = analyzer.conditional(X, 0, {"c1": top})
    assert batched.shape == (3, 3, *X.shape[1:])
    for i in range(3):
        for j in range(3):
            one = analyzer(X[i:i + 1], 0, conditions={"c1": [int(top[i, j])]})[0]
            np.testing.assert_allclose(batched[i, j], one, rtol=1e-5,
                                       atol=1e-6 * np.abs(one).max())
    analyzer.conditional(X, 0, {"c1": top[:, :2]})  # another k, other channels
    fn = analyzer._conditional_fns[("c1",)]
    assert fn.experimental_get_tracing_count() == 1


def test_two_layers_conditioned_at_once():
    """Masks multiply: c3 channel 1 and c1 channels {0, 1} together, against the share of
    c3's channel-1 relevance that passes c1's channels 0 and 1: summed over a partition of c1
    it is the heatmap conditioned on c3 alone."""
    analyzer = tf_lrp.Analyzer(_residual_model(), "epsilon_plus")
    only = analyzer(X, 3, conditions={"c3": [1]})
    both = analyzer.conditional(X, 3, [{"c3": [1], "c1": [0, 1]}, {"c3": [1], "c1": [2, 3, 4, 5]}])
    np.testing.assert_allclose(both.sum(axis=1), only, rtol=1e-4, atol=1e-5 * np.abs(only).max())


@pytest.mark.parametrize("conditions, words", [
    ([{"nope": [0]}], ["no layer named 'nope'", "c1"]),
    ([{"c1": [6]}], ["0..5"]),
    ({"c1": np.zeros((2, 1), int)}, ["(2, 1)", "(samples, k)"]),
    ({"c1": np.zeros((3, 1), int), "c3": np.zeros((3, 2), int)}, ["same number"]),
])
def test_bad_conditions_are_named(conditions, words):
    analyzer = tf_lrp.Analyzer(_residual_model(), "epsilon_plus")
    with pytest.raises(InputError) as err:
        analyzer.conditional(X, 0, conditions)
    assert all(w in str(err.value) for w in words), str(err.value)


@pytest.mark.parametrize("composite", ["epsilon_gamma_box", "epsilon_alpha2_beta1"])
def test_conditions_inside_a_residual_branch_leave_the_skip_path_whole(composite):
    """A condition on ``c2`` (one branch of the residual block; the skip path's relevance is
    pending while the branch is conditioned): relevance is linear in the branch's relevance,
    so with ``R(S) = R_skip + R_branch(S)``, a partition into three parts sums to
    ``R + 2 R_skip`` and one into two to ``R + R_skip``; all channels give ``R``."""
    analyzer = tf_lrp.Analyzer(_residual_model(), composite)
    plain = analyzer(X, target=2)
    every = analyzer.conditional(X, 2, [{"c2": list(range(6))}])[:, 0]
    two = analyzer.conditional(X, 2, [{"c2": [0, 1]}, {"c2": [2, 3, 4, 5]}]).sum(axis=1)
    three = analyzer.conditional(X, 2, [{"c2": [0, 1]}, {"c2": [2, 3, 4]}, {"c2": [5]}])
    scale = np.abs(plain).max()
    np.testing.assert_allclose(every, plain, rtol=1e-4, atol=1e-5 * scale)
    skip = two - plain
    assert np.abs(skip).max() > 1e-2 * scale  # the skip path carries relevance
    np.testing.assert_allclose(three.sum(axis=1) - plain, 2 * skip, rtol=1e-3,
                               atol=1e-4 * scale)
    assert all(np.abs(three[:, j] - three[:, 0]).max() > 1e-3 * scale for j in (1, 2))


def test_a_condition_above_a_recurrent_layer_is_refused_with_the_fix():
    """CRP's copies of the forward values do not cover a recurrent layer's saved states: a
    condition above one is refused (naming the fix), one below it works."""
    from tf_lrp.errors import UnsupportedLayerError

    keras.utils.set_random_seed(2)
    inp = keras.Input((4, 3))
    h = kl.Dense(5, activation="relu", name="below")(inp)
    h = kl.LSTM(6, name="lstm")(h)
    model = keras.Model(inp, kl.Dense(3, name="out")(kl.Dense(4, name="above")(h)))
    x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype("float32")
    analyzer = tf_lrp.Analyzer(model, "epsilon")
    with pytest.raises(UnsupportedLayerError, match="above a recurrent layer.*below it"):
        analyzer.conditional(x, 1, [{"above": [0, 1]}])
    both = analyzer.conditional(x, 1, [{"below": [0, 1, 2]}, {"below": [3, 4]}])
    np.testing.assert_allclose(both.sum(axis=1), analyzer(x, target=1), rtol=1e-4,
                               atol=1e-5 * np.abs(both).max())
