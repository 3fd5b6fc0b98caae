"""Bottom-up MPRT and efficient MPRT on a linear model whose answer is known.

The model is ``x -> W1 x -> w2 . (W1 x)`` without biases or activations, so the gradient of the
output is ``W1^T w2`` for every sample. Its layers' initializers are fixed arrays (the
"randomised" weights are known): ``W1 := I``, ``w2 := (1, 2, 3, 4)``; the trained weights are
``W1 = 2 I``, ``w2 = (1, 1, 1, 2)``. So the gradient map is ``(2, 2, 2, 4)`` originally,
``(1, 1, 1, 2)`` with ``W1`` re-drawn, ``(2, 4, 6, 8)`` with ``w2`` re-drawn and ``(1, 2, 3, 4)``
with both.

- Discrete entropy (100 bins from the map's min to max): ``(1, 1, 1, 2)`` has 3 values in the
  first and 1 in the last bin, ``H = -(3/4 ln 3/4 + 1/4 ln 1/4)``; ``(1, 2, 3, 4)`` has 4
  occupied bins, ``H = ln 4``; a constant map 0.
- eMPRT = ``(ln 4 - H) / H``; Spearman of ``(2, 2, 2, 4)`` against ``(1, 2, 3, 4)`` is
  ``3 / sqrt(15)`` (ranks with ties averaged).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import layers as kl

from tf_lrp import evaluate
from tf_lrp.analyzers import Gradient
from tf_lrp.errors import InputError

H_TWO_VALUES = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
RHO = 3 / math.sqrt(15)


@keras.saving.register_keras_serializable(package="tf_lrp_tests")
class Fixed(keras.initializers.Initializer):
    """Always the same array (so that "re-initialised" weights are known)."""

    def __init__(self, value):
        self.value = np.asarray(value, np.float32)

    def __call__(self, shape, dtype=None):
        return keras.ops.convert_to_tensor(self.value.reshape(shape), dtype=dtype)

    def get_config(self):
        return {"value": self.value.tolist()}


@pytest.fixture(scope="module")
def linear():
    inp = keras.Input((4,))
    h = kl.Dense(4, use_bias=False, kernel_initializer=Fixed(np.eye(4)), name="first")(inp)
    out = kl.Dense(1, use_bias=False, kernel_initializer=Fixed([[1], [2], [3], [4]]),
                   name="last")(h)
    model = keras.Model(inp, out)
    model.set_weights([2 * np.eye(4, dtype=np.float32),
                       np.array([[1], [1], [1], [2]], np.float32)])
    return model


def test_explanation_entropy_by_hand():
    maps = np.array([[1.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_allclose(evaluate.explanation_entropy(maps),
                               [H_TWO_VALUES, math.log(4), 0.0], rtol=1e-12)
    # channels are summed first: two channels adding up to the first map
    split = np.stack([maps[:1] - 0.5, np.full((1, 4), 0.5)], axis=-1)[:, None]  # (1,1,4,2)
    np.testing.assert_allclose(evaluate.explanation_entropy(split), [H_TWO_VALUES], rtol=1e-12)
    # 2 bins: (0, 0.4, 0.6, 1) -> two values in each half
    np.testing.assert_allclose(evaluate.explanation_entropy([[0, 0.4, 0.6, 1]], n_bins=2),
                               [math.log(2)], rtol=1e-12)


def test_efficient_mprt_by_hand(linear):
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    weights = [w.copy() for w in linear.get_weights()]
    rise = evaluate.efficient_mprt(linear, Gradient, x, 0)
    np.testing.assert_allclose(rise.entropy_original, H_TWO_VALUES, rtol=1e-6)
    np.testing.assert_allclose(rise.entropy_randomised, math.log(4), rtol=1e-6)
    np.testing.assert_allclose(rise.score, (math.log(4) - H_TWO_VALUES) / H_TWO_VALUES,
                               rtol=1e-6)
    for before, after in zip(weights, linear.get_weights()):
        np.testing.assert_array_equal(before, after)  # the model itself is untouched
    constant = evaluate.ComplexityRise(np.zeros(2), np.ones(2))
    assert np.all(np.isnan(constant.score))  # undefined for a constant original map


def test_bottom_up_and_top_down_cascades_by_hand(linear):
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    up = evaluate.model_randomisation(linear, Gradient, x, 0, order="bottom_up")
    assert up.layers == ["first", "last"] and up.order == "bottom_up"
    # first W1 := I: (1, 1, 1, 2) ranks like the original; then w2 := (1, 2, 3, 4)
    np.testing.assert_allclose(up.similarity, [[1.0, 1.0], [RHO, RHO]], rtol=1e-9)
    np.testing.assert_allclose(up.complexity, [[H_TWO_VALUES] * 2, [H_TWO_VALUES] * 2,
                                               [math.log(4)] * 2], rtol=1e-6)
    down = evaluate.model_randomisation(linear, Gradient, x, 0)
    assert down.layers == ["last", "first"] and down.order == "top_down"
    np.testing.assert_allclose(down.similarity, [[RHO, RHO], [RHO, RHO]], rtol=1e-9)
    np.testing.assert_allclose(down.similarity_abs, down.similarity, rtol=1e-9)
    # after every layer the two cascades and efficient MPRT see the same (fixed) weights
    want = (math.log(4) - H_TWO_VALUES) / H_TWO_VALUES
    np.testing.assert_allclose(up.complexity_rise, want, rtol=1e-6)
    np.testing.assert_allclose(down.complexity_rise, want, rtol=1e-6)
    with pytest.raises(InputError, match="order"):
        evaluate.model_randomisation(linear, Gradient, x, 0, order="sideways")
    # the layers named: that order, only those; the first step is the bottom-up one's second
    last = evaluate.model_randomisation(linear, Gradient, x, 0, layers=["last"])
    assert last.layers == ["last"] and last.order == "custom"
    np.testing.assert_allclose(last.similarity, [[RHO, RHO]], rtol=1e-9)


def test_one_analyzer_reads_the_reinitialised_weights_like_a_rebuilt_one():
    """The cascade assigns new weights into the clone that one traced analyzer reads live
    (a folded BatchNormalization, SmoothGrad's per-call seeded noise; the Random control is
    reseeded before every step): the same figures as building the analyzer again."""
    import keras

    import tf_lrp
    from tf_lrp.evaluate import model_randomisation

    keras.utils.set_random_seed(71)
    x_in = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, name="conv")(x_in)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    model = keras.Model(x_in, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h)))
    rng = np.random.default_rng(72)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32") if "variance" in v.path
                 else rng.normal(0.1, 0.5, v.shape).astype("float32"))
    x = rng.normal(0.2, 1.0, (5, 6, 6, 2)).astype("float32")
    built = []

    def factories(name):
        def make(m):
            built.append(name)
            if name == "random":
                return tf_lrp.analyzers.Random(m, seed=3)
            return tf_lrp.Analyzer(m, "epsilon_plus") if name == "lrp" else \
                tf_lrp.analyzers.SmoothGrad(m, n_samples=4, seed=3)
        return make

    for name in ("lrp", "smoothgrad", "random"):
        built.clear()
        once = model_randomisation(model, factories(name), x, order="bottom_up", seed=5)
        assert built == [name]
        again = model_randomisation(model, factories(name), x, order="bottom_up", seed=5,
                                    rebuild=True)
        assert len(built) == 1 + 1 + len(once.layers)
        np.testing.assert_allclose(once.similarity, again.similarity, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(once.complexity, again.complexity, rtol=1e-5, atol=1e-6)
        assert once.layers == again.layers == ["conv", "bn", "out"]
        if name == "random":  # the control is reseeded every step: it never changes
            np.testing.assert_allclose(once.similarity, 1.0)
