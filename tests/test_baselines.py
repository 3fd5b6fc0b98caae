"""SmoothGrad, IntegratedGradients and the Random control against answers known in closed form.

- A linear model has a constant gradient ``w``: SmoothGrad is ``w`` for any noise, and
  Integrated Gradients is exactly ``(x - b) * w`` for any baseline ``b`` and any step count.
- Completeness of IG on a ReLU network: along the path ``b + a (x - b)`` the network is piecewise
  linear in ``a``, so ``g(a) = grad f . (x - b)`` is piecewise constant and
  ``f(x) - f(b) = integral_0^1 g``. The midpoint rule errs by at most ``|jump| h / 2`` per jump
  (``h = 1 / steps``), so ``|sum IG - (f(x) - f(b))| <= TV(g) / (2 steps)``. The test measures
  ``TV(g)`` on a 4096-point grid and asserts that bound (plus float32 slack), at several step counts.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as kl

from tf_lrp.analyzers import Gradient
from tf_lrp.baselines import IntegratedGradients, Random, SmoothGrad


@pytest.fixture(scope="module")
def linear():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4, 4, 2)), kl.Flatten(), kl.Dense(3)])
    w = model.layers[-1].kernel.numpy()  # (32, 3)
    return model, w


@pytest.fixture(scope="module")
def relu_net():
    keras.utils.set_random_seed(2)
    inp = keras.Input((6, 6, 1))
    h = kl.Conv2D(4, 3, activation="relu", bias_initializer="random_normal")(inp)
    h = kl.Flatten()(h)
    h = kl.Dense(8, activation="relu", bias_initializer="random_normal")(h)
    return keras.Model(inp, kl.Dense(3)(h))


def x_of(shape, n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


# ------------------------------------------------------------------------------ SmoothGrad
def test_smoothgrad_without_noise_is_the_gradient(relu_net):
    x = x_of((6, 6, 1))
    expected = Gradient(relu_net)(x, target=1)
    got = SmoothGrad(relu_net, noise_level=0.0, n_samples=4)(x, target=1)
    # the same gradient, averaged over 4 identical copies: only summation round-off differs
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_smoothgrad_of_linear_model_is_the_weights(linear):
    model, w = linear
    x = x_of((4, 4, 2))
    got = SmoothGrad(model, noise_level=0.5, n_samples=7)(x, target=2)
    np.testing.assert_allclose(got.reshape(len(x), -1), np.tile(w[:, 2], (len(x), 1)), rtol=1e-5)


def test_smoothgrad_is_seeded_and_chunking_only_changes_memory(relu_net):
    x = x_of((6, 6, 1), n=3)
    a = SmoothGrad(relu_net, noise_level=0.3, n_samples=10, seed=5, chunk_size=4)(x)
    b = SmoothGrad(relu_net, noise_level=0.3, n_samples=10, seed=5, chunk_size=1000)(x)
    c = SmoothGrad(relu_net, noise_level=0.3, n_samples=10, seed=6)(x)
    g = Gradient(relu_net)(x)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c, atol=1e-4)  # another seed, other noise
    assert not np.allclose(a, g, atol=1e-4)  # noise does something on a ReLU net


def test_smoothgrad_mean_of_explicit_noisy_gradients(relu_net):
    """Same noise drawn by hand: SmoothGrad equals the mean of the gradients of the copies."""
    import tensorflow as tf

    x = x_of((6, 6, 1), n=2)
    sg = SmoothGrad(relu_net, noise_level=0.2, n_samples=3, seed=9)
    sigma = 0.2 * (x.reshape(2, -1).max(1) - x.reshape(2, -1).min(1))
    grads = []
    for k in range(3):
        seed = tf.random.experimental.stateless_fold_in(tf.constant([9, 0], tf.int64),
                                                          tf.constant(k, tf.int64))
        eps = tf.random.stateless_normal(x.shape, seed).numpy()
        grads.append(Gradient(relu_net)(x + sigma[:, None, None, None] * eps, target=[0, 2]))
    np.testing.assert_allclose(sg(x, target=[0, 2]), np.mean(grads, axis=0), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ IG
@pytest.mark.parametrize("baseline", [0.0, -0.5, "array", "mean"])
@pytest.mark.parametrize("steps", [1, 7])
def test_integrated_gradients_of_linear_model_is_exact(linear, baseline, steps):
    model, w = linear
    x = x_of((4, 4, 2))
    if baseline == "array":
        baseline = x_of((4, 4, 2), n=1, seed=1)[0]
    ig = IntegratedGradients(model, steps=steps, baseline=baseline, chunk_size=8)(x, target=0)
    b = x.mean(axis=(1, 2), keepdims=True) if isinstance(baseline, str) else baseline
    expected = ((x - b).reshape(len(x), -1) * w[:, 0]).reshape(x.shape)
    np.testing.assert_allclose(ig, expected, rtol=1e-5, atol=1e-6)


def path_integrand(model, x, b, target, points=4096):
    """g(a) = grad f(b + a (x - b)) . (x - b) on a fine grid of a, for one sample."""
    alphas = (np.arange(points) + 0.5) / points
    path = (b + alphas[:, None, None, None] * (x - b)).astype(np.float32)
    grads = Gradient(model, batch_size=1024)(path, target=target)
    return (grads * (x - b)).reshape(points, -1).sum(axis=1)


@pytest.mark.parametrize("steps", [4, 16, 64])
def test_integrated_gradients_completeness_within_midpoint_bound(relu_net, steps):
    x = x_of((6, 6, 1), n=3)
    b = np.zeros_like(x)
    ig = IntegratedGradients(relu_net, steps=steps, chunk_size=32)
    target = ig.predict(x).argmax(1)
    difference = ig.predict(x)[np.arange(3), target] - ig.predict(b)[np.arange(3), target]
    total = ig(x).reshape(3, -1).sum(axis=1)  # target None: the argmax on the clean input
    bounds = []
    for i in range(3):
        g = path_integrand(relu_net, x[i], b[i], int(target[i]))
        bounds.append(np.abs(np.diff(g)).sum() / (2 * steps) + 1e-4 * (1 + abs(difference[i])))
        assert abs(total[i] - difference[i]) <= bounds[i], (i, total[i], difference[i], bounds[i])
    if steps == 64:  # tight enough to catch a 10% completeness error
        assert np.mean(bounds) < 0.1 * np.mean(np.abs(difference))


def test_integrated_gradients_default_target_is_clean_argmax(relu_net):
    x = x_of((6, 6, 1))
    ig = IntegratedGradients(relu_net, steps=8)
    # exact on purpose: the same traced function on the same batch; target=None resolves to
    # the same indices (argmax on the clean input) inside it
    np.testing.assert_array_equal(ig(x), ig(x, target=ig.predict(x).argmax(1)))


# ------------------------------------------------------------------------------ Random
def test_random_is_uniform_seeded_and_fresh_per_call(linear):
    model, _ = linear
    x = x_of((4, 4, 2), n=64)
    a = Random(model, seed=3)
    first, second = a(x), a(x)
    assert first.shape == x.shape and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() < 1.0 and abs(first.mean() - 0.5) < 0.01
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(Random(model, seed=3)(x), first)  # same seed, same draws
    assert not np.array_equal(Random(model, seed=4)(x), first)


def test_random_sub_batches_differ(linear):
    model, _ = linear
    r = Random(model, seed=0, batch_size=2)(np.ones((4, 4, 4, 2), np.float32))
    assert not np.array_equal(r[:2], r[2:])


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("cls", "kwargs", "match"), [
    (SmoothGrad, {"noise_level": -0.1}, "noise_level"),
    (SmoothGrad, {"n_samples": 0}, "n_samples"),
    (IntegratedGradients, {"steps": 0}, "steps"),
    (IntegratedGradients, {"baseline": np.zeros((3, 3))}, "broadcast"),
    (IntegratedGradients, {"baseline": "median"}, "mean"),
    (IntegratedGradients, {"chunk_size": 0}, "chunk_size"),
])
def test_bad_parameters_are_named(linear, cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(linear[0], **kwargs)


def test_two_input_model():
    a, b = keras.Input((3,)), keras.Input((2,))
    model = keras.Model([a, b], kl.Dense(2)(kl.Concatenate()([a, b])))
    w = model.layers[-1].kernel.numpy()
    xs = [x_of((3,)), x_of((2,))]
    ig = IntegratedGradients(model, steps=3, baseline=[1.0, 0.0])(xs, target=1)
    np.testing.assert_allclose(ig[0], (xs[0] - 1.0) * w[:3, 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ig[1], xs[1] * w[3:, 1], rtol=1e-5, atol=1e-6)
    sg = SmoothGrad(model, n_samples=3)(xs, target=0)
    np.testing.assert_allclose(sg[1], np.tile(w[3:, 0], (5, 1)), rtol=1e-5)
