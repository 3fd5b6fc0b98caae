"""Pruning by explaining (tf_lrp.prune): the smaller model computes what the original computes
with the removed filters silenced; residual channels are left alone; the criteria against
explicit computations; the saved model behaves the same after loading; the command."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tf_lrp
from tf_lrp import prune
from tf_lrp.errors import InputError


def _vgg_like(seed=0, head="flatten"):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((10, 10, 3))
    h = keras.layers.Rescaling(1 / 255.0)(x_in)
    h = keras.layers.Conv2D(6, 3, padding="same", name="c1")(h)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(5, 3, activation="relu", name="c2")(h)
    h = keras.layers.Flatten()(h) if head == "flatten" else \
        keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, name="out")(h)
    model = keras.Model(x_in, out)
    rng = np.random.default_rng(seed + 1)
    for v in model.weights:
        v.assign(rng.uniform(0.4, 1.6, v.shape).astype("float32") if "variance" in v.path
                 else rng.normal(0.05, 0.5, v.shape).astype("float32"))
    x = rng.uniform(0, 255, (4, 10, 10, 3)).astype("float32")
    return model, x


def _silenced(model, keep):
    """The original with every removed filter's output made 0 after its BatchNormalization
    (gamma = beta = 0) or activation (kernel and bias 0 before a ReLU)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for name, k in keep.items():
        drop = np.setdiff1d(np.arange(model.get_layer(name).filters), k)
        conv = clone.get_layer(name)
        kernel, *bias = conv.get_weights()
        kernel[..., drop] = 0
        if bias:
            bias[0][drop] = 0
        conv.set_weights([kernel, *bias])
        bn = f"bn{name[1:]}"
        if bn in [layer.name for layer in clone.layers]:
            w = clone.get_layer(bn).get_weights()
            w[0][drop], w[1][drop] = 0, 0
            clone.get_layer(bn).set_weights(w)
    return clone


@pytest.mark.parametrize("head", ["flatten", "gap"])
def test_pruned_model_equals_the_original_with_the_filters_silenced(head):
    model, x = _vgg_like(head=head)
    scores = {"c1": np.array([5.0, 0.1, 3.0, 0.2, 4.0, 9.0]),
              "c2": np.array([1.0, 8.0, 0.5, 7.0, 6.0])}
    small = prune.prune(model, ratio=4 / 11, scores=scores)
    assert small.get_layer("c1").filters == 4 and small.get_layer("c2").filters == 3
    # per layer: c1 loses round(6 * 4/11) = 2 (scores 0.1, 0.2), c2 round(5 * 4/11) = 2
    keep = {"c1": np.array([0, 2, 4, 5]), "c2": np.array([1, 3, 4])}
    expected = _silenced(model, keep)(x)
    np.testing.assert_allclose(small(x), expected, rtol=1e-5, atol=1e-5)
    assert small.count_params() < model.count_params()
    np.testing.assert_allclose(prune.prune(model, ratio=0.0, scores=scores)(x), model(x),
                               rtol=1e-6, atol=1e-6)


def test_at_least_one_filter_stays_per_layer():
    model, x = _vgg_like(2)
    small = prune.prune(model, ratio=0.95, criterion="weight")
    assert small.get_layer("c1").filters >= 1 and small.get_layer("c2").filters >= 1
    assert small.get_layer("c1").filters + small.get_layer("c2").filters == 2
    assert np.isfinite(small(x)).all()


def test_residual_channels_are_left_alone_and_said_so():
    keras.utils.set_random_seed(3)
    x_in = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="inner")(x_in)
    b = keras.layers.Conv2D(4, 3, padding="same", name="outer")(a)
    h = keras.layers.Add()([x_in, b])
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(x_in, out)
    plan = prune.prunable_layers(model)
    assert plan.layers == ["inner"] and "Add" in plan.skipped["outer"]
    x = np.random.default_rng(4).normal(size=(3, 8, 8, 4)).astype("float32")
    scores = {"inner": np.array([3.0, 1.0, 2.0, 6.0, 0.5, 4.0])}
    small = prune.prune(model, ratio=0.5, scores=scores)
    assert small.get_layer("inner").filters == 3 and small.get_layer("outer").filters == 4
    np.testing.assert_allclose(small(x), _silenced(model, {"inner": np.array([0, 3, 5])})(x),
                               rtol=1e-5, atol=1e-5)


def test_criteria_against_explicit_computations():
    model, x = _vgg_like(5)
    w = model.get_layer("c2").kernel.numpy()
    np.testing.assert_allclose(prune.filter_scores(model, x, "weight")["c2"],
                               np.abs(w).reshape(-1, 5).sum(0), rtol=1e-6)
    targets = np.array([0, 2, 1, 2])
    lrp = prune.filter_scores(model, x, "lrp", target=targets)
    per = tf_lrp.Analyzer(model, "epsilon_plus").parameter_relevance(x, targets, per="filter")
    np.testing.assert_allclose(lrp["c1"], per["c1"], rtol=1e-6)
    # gradient and Taylor from one explicit per-sample tape over the kernel and bias
    import tensorflow as tf

    conv = model.get_layer("c2")
    g_abs, g_sum, gb_sum = 0, 0, 0
    for i, t in enumerate(targets):
        with tf.GradientTape() as tape:
            y = model(x[i:i + 1])[0, t]
        gk, gb = tape.gradient(y, [conv.kernel, conv.bias])
        g_abs = g_abs + np.abs(gk.numpy())
        g_sum, gb_sum = g_sum + gk.numpy(), gb_sum + gb.numpy()
    np.testing.assert_allclose(prune.filter_scores(model, x, "gradient", target=targets)["c2"],
                               g_abs.reshape(-1, 5).sum(0), rtol=1e-4)
    taylor = np.abs((w * g_sum).reshape(-1, 5).sum(0) + conv.bias.numpy() * gb_sum)
    np.testing.assert_allclose(prune.filter_scores(model, x, "taylor", target=targets)["c2"],
                               taylor, rtol=1e-4, atol=1e-7)
    with pytest.raises(InputError, match="criterion must be"):
        prune.filter_scores(model, x, "random")


def test_saved_pruned_model_behaves_the_same_and_the_command(tmp_path):
    from tf_lrp.cli.parser import main

    model, x = _vgg_like(7)
    small = prune.prune(model, x, ratio=0.4, criterion="lrp")
    small.save(tmp_path / "small.keras")
    loaded = tf_lrp.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(loaded(x), small(x), rtol=1e-6, atol=1e-6)
    r_small = tf_lrp.Analyzer(small, "epsilon_plus")(x, target=1)
    np.testing.assert_allclose(tf_lrp.Analyzer(loaded, "epsilon_plus")(x, target=1), r_small,
                               rtol=1e-5, atol=1e-6 * np.abs(r_small).max())
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "data.npy", x)
    code = main(["prune", str(tmp_path / "model.keras"), "--data", str(tmp_path / "data.npy"),
                 "--ratio", "0.4", "--criterion", "lrp", "--out", str(tmp_path / "cli.keras"),
                 "-q"])
    assert code == 0
    cli = tf_lrp.load_model(tmp_path / "cli.keras")
    np.testing.assert_allclose(cli(x), small(x), rtol=1e-5, atol=1e-5)
    assert main(["prune", str(tmp_path / "model.keras"), "--data", str(tmp_path / "data.npy"),
                 "--ratio", "1.5", "--out", str(tmp_path / "bad.keras")]) == 2


def test_layers_left_alone_say_why():
    """Grouped convolutions, channels that are a model output, a Flatten not followed by one
    Dense: not prunable, each with the reason; a non-model is refused."""
    keras.utils.set_random_seed(9)
    x_in = keras.Input((6, 6, 4))
    grouped = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x_in)
    a = keras.layers.Conv2D(3, 3, name="to_output")(x_in)
    b = keras.layers.Conv2D(3, 3, name="to_flatten")(x_in)
    flat = keras.layers.Flatten()(b)
    two = [keras.layers.Dense(2, name="d1")(flat), keras.layers.Dense(2, name="d2")(flat)]
    c = keras.layers.Conv2D(2, 1, name="ok")(grouped)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(c))
    model = keras.Model(x_in, [a, out, *two])
    plan = prune.prunable_layers(model)
    assert plan.layers == ["ok"]  # through pooling to one Dense: prunable
    assert plan.skipped["grouped"] == "grouped convolution"
    assert plan.skipped["to_output"] == "its channels are a model output"
    assert "not followed by exactly one Dense" in plan.skipped["to_flatten"]
    x = np.random.default_rng(10).normal(size=(2, 6, 6, 4)).astype("float32")
    small = prune.prune(model, ratio=0.5, criterion="weight")
    assert small.get_layer("ok").filters == 1 and small.get_layer("grouped").filters == 4
    assert [o.shape for o in small(x)] == [o.shape for o in model(x)]
    with pytest.raises(InputError, match="built functional or Sequential"):
        prune.prunable_layers("model.keras")

