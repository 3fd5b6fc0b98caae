"""The evaluation metrics on cases with a known answer.

- Localisation: an explanation equal to the ground-truth mask scores 1.0 (mass and rank
  accuracy); its complement scores 0.0; a hand-computed case in between.
- Pixel flipping: for a linear model ``f(x) = w . x`` with baseline 0, removing features in
  order of their contribution ``x * w`` gives ``f(x_k) = f(x) - (sum of the k largest
  contributions)`` exactly; a random explanation's AOPC matches the random-order control within
  its standard error, while gradient x input beats it by many standard errors.
- Randomisation: an explanation that ignores the model (the input itself, or the seeded Random
  control rebuilt from its seed) keeps similarity 1 and fails; the gradient changes and passes.
- Conservation: LRP-0 on a bias-free ReLU network conserves relevance (ratio 1).
"""

from __future__ import annotations

import json
import warnings

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import evaluate, rules
from tf_lrp.analyzers import Gradient, GradientXInput
from tf_lrp.baselines import Random
from tf_lrp.errors import InputError
from tf_lrp.evaluate import methods, tables

SAVED_MODELS = __import__("pathlib").Path(__file__).resolve().parents[1] / "saved_models"


@pytest.fixture(scope="module")
def cnn():
    """Small bias-free ReLU CNN on 8x8x2 inputs (random weights)."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 2))
    h = kl.Conv2D(6, 3, activation="relu", use_bias=False, name="conv2d")(inp)
    h = kl.Conv2D(6, 3, activation="relu", use_bias=False, name="conv_b")(h)
    h = kl.Flatten()(h)
    h = kl.Dense(10, activation="relu", use_bias=False, name="dense")(h)
    return keras.Model(inp, kl.Dense(3, use_bias=False, name="top")(h))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (300, 8, 8, 2)).astype(np.float32)


# ------------------------------------------------------------------------------ localisation
def random_masks(n=6, size=10, seed=0):
    rng = np.random.default_rng(seed)
    masks = rng.random((n, size, size)) < 0.3
    masks[:, 0, 0] = True  # never empty
    return masks


def test_mask_as_explanation_localises_perfectly():
    masks = random_masks()
    relevance = np.repeat(masks[..., None].astype(np.float32), 3, axis=-1) / 3  # RGB channels
    # exact: all positive relevance is inside the mask, so the mass inside and the total are
    # sums of the very same array; the rank accuracy counts pixels
    np.testing.assert_array_equal(evaluate.relevance_mass_accuracy(relevance, masks), 1.0)
    np.testing.assert_array_equal(evaluate.relevance_rank_accuracy(relevance, masks), 1.0)
    inverse = (~masks).astype(np.float32)  # nothing positive inside: a sum of zeros
    np.testing.assert_array_equal(evaluate.relevance_mass_accuracy(inverse, masks), 0.0)
    np.testing.assert_array_equal(evaluate.relevance_rank_accuracy(inverse, masks), 0.0)


def test_localisation_by_hand():
    masks = np.zeros((1, 2, 3), bool)
    masks[0, 0, :2] = True                                 # K = 2 pixels
    relevance = np.array([[[3.0, -5.0, 1.0], [0.0, 2.0, -1.0]]])
    # positive mass 3 + 1 + 2 = 6, of which 3 inside; top-2 pixels are 3.0 (in) and 2.0 (out)
    assert evaluate.relevance_mass_accuracy(relevance, masks)[0] == pytest.approx(0.5)
    assert evaluate.relevance_rank_accuracy(relevance, masks)[0] == pytest.approx(0.5)
    # nothing positive: no mass inside
    assert evaluate.relevance_mass_accuracy(-np.abs(relevance), masks)[0] == 0.0


def test_random_explanation_localises_at_chance():
    masks = random_masks(n=400, seed=1)
    relevance = np.random.default_rng(2).random(masks.shape)
    share = masks.mean()
    for scores in (evaluate.relevance_mass_accuracy(relevance, masks),
                   evaluate.relevance_rank_accuracy(relevance, masks)):
        mean, se = evaluate.mean_se(scores)
        assert abs(mean - share) < 4 * se + 0.01


def test_localisation_shape_mismatch_is_named():
    with pytest.raises(InputError, match="does not match masks"):
        evaluate.relevance_mass_accuracy(np.zeros((2, 5, 5, 3, 1)), np.zeros((2, 5, 5), bool))


# ------------------------------------------------------------------------------ pixel flipping
def test_pixel_flipping_linear_model_exact():
    rng = np.random.default_rng(4)
    w = rng.normal(size=12)
    x = rng.normal(size=(5, 12)).astype(np.float32)

    def predict(batch):  # one output: w . x
        return (batch.astype(np.float64) @ w)[:, None]

    contributions = x * w
    curves = evaluate.pixel_flipping(predict, x, contributions, 0, steps=12, baseline=0.0)
    ordered = -np.sort(-contributions, axis=1)
    expected = predict(x)[:, :1] - np.c_[np.zeros(5), np.cumsum(ordered, axis=1)]
    np.testing.assert_allclose(curves.outputs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(curves.fractions, np.arange(13) / 12)
    np.testing.assert_allclose(curves.aopc, (expected[:, :1] - expected).mean(axis=1), atol=1e-5)
    # removing the most relevant first is the steepest possible descent: beats any random order
    control = evaluate.pixel_flipping(predict, x, None, 0, order="random", steps=12)
    assert np.all(curves.aopc >= control.aopc - 1e-9)


def test_pixel_flipping_patches_and_baseline():
    """A 5x5 two-channel image, patches of 2 (a 3x3 grid, ragged at the edge)."""
    x = np.ones((1, 5, 5, 2), np.float32)
    relevance = np.zeros_like(x)
    relevance[0, 4, 4, 1] = 9.0      # the 1x1 corner patch is most relevant
    relevance[0, 0:2, 2:4, 0] = 1.0  # then the patch at grid (0, 1)
    seen = []

    def predict(batch):
        seen.append(batch.copy())
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    curves = evaluate.pixel_flipping(predict, x, relevance, 0, patch_size=2, steps=9,
                                     baseline=-1.0)
    # step 1 removes the corner pixel (both channels: 2 values 1 -> -1), step 2 a 2x2 patch
    np.testing.assert_allclose(curves.outputs[0, :3], [50, 46, 30])
    images = seen[-1].reshape(10, 5, 5, 2)
    assert np.all(images[1, 4, 4] == -1) and np.all(images[1, :4] == 1)
    assert np.all(images[2, 0:2, 2:4] == -1)
    assert np.all(images[9] == -1)  # all 9 patches gone after the last step
    mean = evaluate.pixel_flipping(predict, x * [0.0, 1.0], relevance, 0, patch_size=2, steps=9,
                                   baseline="mean")
    np.testing.assert_allclose(mean.outputs[0], 25.0)  # each channel replaced by its own mean


def test_random_explanation_aopc_matches_random_order(cnn, images):
    target = Gradient(cnn).predict(images).argmax(1)
    flip = dict(patch_size=2, steps=8, baseline=0.0, seed=1)
    control = evaluate.pixel_flipping(Gradient(cnn), images, None, target, order="random", **flip)
    random = evaluate.pixel_flipping(Gradient(cnn), images, Random(cnn, seed=2)(images), target,
                                     **flip)
    gxi = evaluate.pixel_flipping(Gradient(cnn), images, GradientXInput(cnn)(images, target),
                                  target, **flip)
    (mc, sc), (mr, sr), (mg, sg) = map(evaluate.mean_se, (control.aopc, random.aopc, gxi.aopc))
    assert abs(mr - mc) < 2.5 * np.hypot(sr, sc), (mr, mc, sr, sc)
    assert mg - mc > 5 * np.hypot(sg, sc), (mg, mc)  # the test can tell a real explanation apart


def test_pixel_flipping_errors(cnn, images):
    with pytest.raises(InputError, match="needs the relevance"):
        evaluate.pixel_flipping(Gradient(cnn), images[:2])
    with pytest.raises(InputError, match="order"):
        evaluate.pixel_flipping(Gradient(cnn), images[:2], order="least")
    with pytest.raises(InputError, match="baseline"):
        evaluate.pixel_flipping(Gradient(cnn), images[:2], order="random", baseline="median")
    with pytest.raises(InputError, match="fraction"):
        evaluate.pixel_flipping(Gradient(cnn), images[:2], order="random", fraction=0)
    for bad in (dict(steps=0), dict(steps=2.5), dict(patch_size=0), dict(patch_size=1.5)):
        with pytest.raises(InputError, match="steps and patch_size must be positive integers"):
            evaluate.pixel_flipping(Gradient(cnn), images[:2], order="random", **bad)


def test_integrated_gradients_flattery_line_pairs_the_two_baselines():
    """The report's line on Integrated Gradients: per removal scheme the paired difference
    of IG from the removal value and IG from 0, in the order of the schemes."""
    from tf_lrp.evaluate import tables

    a = {"aopc": np.array([0.5, 0.7]), "aopc2": np.array([0.2, 0.1]), "irof": np.array([1.0, 2.0])}
    b = {"aopc": np.array([0.1, 0.4]), "aopc2": np.array([0.3, 0.3]), "irof": np.array([1.0, 1.0])}
    lines = tables.flattery({"integrated_gradients": a, "integrated_gradients_zero": b}, "blur")
    parts = lines[0].split(": ", 1)[1].split("; ")
    assert parts == [f"removal value = IG baseline: {tables.fmt(a['aopc'] - b['aopc'])}",
                     f"blur: {tables.fmt(a['aopc2'] - b['aopc2'])}",
                     f"IROF: {tables.fmt(a['irof'] - b['irof'])}"]
    assert tables.flattery({"integrated_gradients": a}, "blur") == []


# ------------------------------------------------------------------------------ randomisation
def test_spearman_known_values():
    a = np.arange(12.0).reshape(1, 2, 2, 3)
    assert evaluate.spearman(a, a)[0] == pytest.approx(1.0)
    assert evaluate.spearman(a, -a)[0] == pytest.approx(-1.0)
    assert evaluate.spearman(a, a**3 + 5)[0] == pytest.approx(1.0)  # ranks only
    signs = np.where(np.arange(12) % 2, 1.0, -1.0).reshape(a.shape)
    assert evaluate.spearman(a, a * signs, absolute=True)[0] == pytest.approx(1.0)
    assert evaluate.spearman(a, a * signs)[0] < 0.5
    const = np.ones_like(a)
    assert evaluate.spearman(const, const)[0] == 1.0
    assert evaluate.spearman(a, const)[0] == 0.0


def test_model_independent_explanations_fail_the_sanity_check(cnn, images):
    x = images[:40]
    weights = [w.copy() for w in cnn.get_weights()]

    class Constant:  # explains the input itself, whatever the model
        def __init__(self, model):
            pass

        def __call__(self, x, target=None):
            return x

    for method in (Constant, lambda m: Random(m, seed=0)):
        check = evaluate.model_randomisation(cnn, method, x)
        assert check.layers == ["top", "dense", "conv_b", "conv2d"]
        np.testing.assert_allclose(check.similarity, 1.0)
        np.testing.assert_allclose(check.similarity_abs, 1.0)
        assert not check.passes()
    gradient = evaluate.model_randomisation(cnn, Gradient, x, seed=1)
    assert gradient.similarity[-1].mean() < 0.3 and gradient.similarity_abs[-1].mean() < 0.3
    assert gradient.passes()
    for before, after in zip(weights, cnn.get_weights()):  # the model itself is untouched
        np.testing.assert_array_equal(before, after)  # stored values, not recomputed: exact


def _weights_by_layer(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers
            if layer.weights}


def test_randomisation_of_chosen_layers_and_unknown_name(cnn, images):
    """Only the chosen layers are randomised, one after the other (cascading), and each
    similarity is the rank correlation of that step's map with the original map."""
    from scipy.stats import spearmanr

    x = images[:5]
    original = _weights_by_layer(cnn)
    seen = []  # per call of the method: the weights of the model it explained, its relevance

    def recording_gradient(model):
        gradient = Gradient(model)

        def explain(batch, target=None):
            relevance = gradient(batch, target)
            seen.append((_weights_by_layer(model), relevance))
            return relevance

        return explain

    check = evaluate.model_randomisation(cnn, recording_gradient, x, layers=["dense", "conv2d"])
    assert check.layers == ["dense", "conv2d"]
    assert check.similarity.shape == check.similarity_abs.shape == (2, 5)
    assert len(seen) == 3  # the original, then one call per randomised layer
    assert set(original) == {"conv2d", "conv_b", "dense", "top"}
    assert all(set(weights) == set(original) for weights, _ in seen)

    # weights are compared as stored (copies, nothing recomputed): exactly
    def changed(weights):
        return {name for name, values in original.items()
                if any(not np.array_equal(a, b) for a, b in zip(weights[name], values))}

    assert [changed(weights) for weights, _ in seen] == [set(), {"dense"}, {"dense", "conv2d"}]
    for step, name in ((1, "dense"), (2, "conv2d")):
        for new, old in zip(seen[step][0][name], original[name]):
            assert np.all(new != old)  # every weight of the chosen layer is new
    # cascading: "dense" keeps its randomised weights while "conv2d" is randomised in turn
    for a, b in zip(seen[2][0]["dense"], seen[1][0]["dense"]):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(seen[1][1], seen[0][1], atol=1e-4)  # the maps did change

    def by_hand(a, b):  # Spearman per sample over pixels, channels summed
        a, b = a.sum(axis=-1).reshape(len(a), -1), b.sum(axis=-1).reshape(len(b), -1)
        return np.array([spearmanr(u, v).statistic for u, v in zip(a, b)])

    reference = seen[0][1]
    for i, (_, relevance) in enumerate(seen[1:]):
        np.testing.assert_allclose(check.similarity[i], by_hand(reference, relevance),
                                   rtol=1e-9, atol=1e-12)
        expected_abs = by_hand(np.abs(reference.sum(-1, keepdims=True)),
                               np.abs(relevance.sum(-1, keepdims=True)))
        np.testing.assert_allclose(check.similarity_abs[i], expected_abs, rtol=1e-9, atol=1e-12)
    for name, values in _weights_by_layer(cnn).items():  # the model itself is untouched
        for a, b in zip(values, original[name]):
            np.testing.assert_array_equal(a, b)

    with pytest.raises(InputError, match="no layer with weights named"):
        evaluate.model_randomisation(cnn, Gradient, images[:5], layers=["nope"])


# ------------------------------------------------------------------------------ conservation
def test_lrp0_conserves_on_bias_free_relu_net(cnn, images):
    x = images[:20]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyzer = tf_lrp.Analyzer(cnn, rules.Zero())
    target = analyzer.predict(x).argmax(1)
    output = analyzer.predict(x)[np.arange(20), target]
    report = evaluate.conservation(analyzer(x, target), output)
    np.testing.assert_allclose(report.ratio, 1.0, rtol=1e-4)
    assert np.all(report.error < 1e-4 * np.abs(output) + 1e-6)
    half = evaluate.conservation(0.5 * analyzer(x, target), output)
    np.testing.assert_allclose(half.ratio, 0.5, rtol=1e-4)


def test_mean_se():
    mean, se = evaluate.mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)


# ------------------------------------------------------------------------------ the report
def test_report_command_on_shipped_mlp(tmp_path, capsys):
    status = evaluate.main([str(SAVED_MODELS / "digits_mlp.h5"), "--data", "digits",
                            "--methods", "lrp0,random", "gradient", "-n", "12", "--steps", "4",
                            "--out-dir", str(tmp_path), "--quiet"])
    assert status == 0
    out = capsys.readouterr().out
    assert "| LRP-0 |" in out and "| Random |" in out and "random order (control)" in out
    png = tmp_path / "quality_digits_mlp_digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "quality_digits_mlp_digits.json").read_text())
    assert results["n"] == 12 and set(results["methods"]) == {"lrp0", "random", "gradient"}
    assert results["randomised_layers"] == ["output", "dense2", "dense1"]
    assert results["methods"]["random"]["similarity_per_layer"][-1][0] == 1.0
    assert results["methods"]["random"]["similarity_abs_per_layer"][-1][0] == 1.0
    assert results["methods"]["lrp0"]["ratio"][0] == pytest.approx(1.0, abs=0.05)
    table = (tmp_path / "quality_digits_mlp_digits.md").read_text()
    assert "| method |" in table and "- AOPC (higher is better): " in table
    # the removal metrics, bottom-up randomisation and the cost (new in the package version)
    assert results["randomised_layers_bottom_up"] == ["dense1", "dense2", "output"]
    for name in ("lrp0", "random", "gradient"):
        method = results["methods"][name]
        assert {"aopc_second", "road_morf", "road_lerf", "irof", "emprt"} <= set(method)
        assert method["cost"]["ms_per_explanation"] > 0 and method["cost"]["ratio"] > 0
    assert (tmp_path / "quality_digits_mlp_digits_cost.png").read_bytes()[:4] == b"\x89PNG"


def test_report_errors_are_named(tmp_path, capsys):
    model = str(SAVED_MODELS / "digits_mlp.h5")
    assert evaluate.main([model, "--data", "digits", "--methods", "magic", "--out-dir",
                          str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    with pytest.raises(InputError, match="shapes needs a model"):
        evaluate.run_report(model, "shapes", ["random"], n=4, out_dir=tmp_path)
    with pytest.raises(InputError, match="test split has 450"):
        evaluate.run_report(model, "digits", ["random"], n=451, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written on error


def test_headline_names_winner_ties_and_paired_gap():
    ones = np.ones(3)
    results = {"a": {"aopc": np.array([2.0, 3.0, 4.0]), "ratio": ones},
               "b": {"aopc": np.array([1.0, 1.0, 1.0]), "ratio": ones * 0.5},
               "c": {"aopc": np.array([2.0, 3.0, 4.0]), "ratio": ones * 2.0}}
    lines = tables.headline(results, {"a": "A", "b": "B", "c": "C"})
    assert lines[0] == ("- AOPC (higher is better): **A** = **C** 3.000 ± 0.577, ahead of B "
                        "(1.000 ± 0.000) by 2.000 ± 0.577 (paired per sample)")
    assert lines[1].startswith("- conservation, |ΣR / f(x) − 1| (lower is better): **A** 0.000")
    assert "ahead of B (0.500 ± 0.000) by 0.500 ± 0.000" in lines[1]


def test_headline_flags_a_lead_within_the_noise():
    results = {"a": {"aopc": np.array([1.0, 3.0, 2.0]), "ratio": np.ones(3)},
               "b": {"aopc": np.array([2.0, 1.0, 2.5]), "ratio": np.ones(3)}}
    lines = tables.headline(results, {"a": "A", "b": "B"})
    assert lines[0].endswith("no clear winner")  # 0.167 ± 0.6: noise
    assert "**A** = **B**" in lines[1]  # identical conservation: reported as a tie


def test_headline_lead_is_paired_against_a_runner_up_with_spread():
    """The runner-up varies from sample to sample with the leader: the lead is the mean and
    standard error of the per-sample differences (unpaired, the spread of each method would
    swamp it), and the runner-up is the second best by mean, not the last."""
    def text(v):  # mean ± standard error (ddof 1), by hand
        v = np.asarray(v, np.float64)
        return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}"

    a, b = np.array([2.0, 5.0, 3.5, 6.0]), np.array([1.5, 4.0, 3.4, 5.1])
    c = np.array([0.0, 0.5, 0.2, 0.1])
    dev_a, dev_b = np.array([0.1, 0.2, 0.05, 0.3]), np.array([0.12, 0.25, 0.09, 0.33])
    results = {"c": {"aopc": c, "ratio": 1 + 2 * dev_b}, "b": {"aopc": b, "ratio": 1 - dev_b},
               "a": {"aopc": a, "ratio": 1 + dev_a * np.array([1, -1, 1, -1])}}
    lines = tables.headline(results, {"a": "A", "b": "B", "c": "C"})
    assert lines[0] == (f"- AOPC (higher is better): **A** {text(a)}, ahead of B ({text(b)}) "
                        f"by {text(a - b)} (paired per sample)")
    assert text(a - b) == "0.625 ± 0.206"  # 3.0 se apart; unpaired, 0.5 se (no clear winner)
    assert lines[1] == (f"- conservation, |ΣR / f(x) − 1| (lower is better): **A** {text(dev_a)}"
                        f", ahead of B ({text(dev_b)}) by {text(dev_b - dev_a)} "
                        "(paired per sample)")


def test_method_names_match_the_method_table():
    assert tuple(methods._method_table()) == evaluate.METHODS


def test_token_report_flips_tokens_to_padding_and_scores_the_planted_keywords(tmp_path):
    """``--data tokens``: the token methods by default, one token per patch, planted-keyword
    masks from the held-out token data, padding (0) as the removal value."""
    import keras
    from keras import layers as kl

    from tf_lrp import datasets, evaluate

    keras.utils.set_random_seed(0)
    inp = keras.Input((datasets.TOKENS_LENGTH,), dtype="int32")
    e = kl.Embedding(len(datasets.TOKENS_VOCAB), 8, mask_zero=True)(inp)
    model = keras.Model(inp, kl.Dense(len(datasets.TOKENS_CLASSES))(kl.LSTM(8)(e)))
    markdown, figure = evaluate.run_report(model, "tokens", ["attn_lrp", "gradient_x_input"],
                                           n=4, out_dir=tmp_path, steps=2, sanity=False,
                                           progress=False)
    assert "patch 1" in markdown and "baseline 0.0" in markdown
    assert "| AttnLRP |" in markdown and "| Gradient×Input |" in markdown
    summary = json.loads(figure.with_suffix(".json").read_text())
    assert summary["data"] == "tokens" and summary["n"] == 4
    mass = summary["methods"]["attn_lrp"]["mass"]
    x, y, masks = datasets.make_tokens(4, seed=datasets.TOKENS_TEST_SEED)
    relevance = tf_lrp.Analyzer(model, "attn_lrp")(x, y)
    want = evaluate.relevance_mass_accuracy(relevance, masks)
    np.testing.assert_allclose(mass[0], want.mean(), rtol=1e-6)


def _results_with_every_key(seed: int, n: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    r = {k: rng.normal(size=n) for k in ("aopc", "aopc2", "road_morf", "road_lerf", "irof",
                                          "mass", "rank", "emprt", "ratio")}
    for k in ("similarity", "similarity_abs", "similarity_abs_bu"):
        r[k] = rng.normal(size=(3, n))  # three layers: first, middle and last differ
    return {**r, "ms": 1.5 + seed, "cost_ratio": 1.25 + seed}


def test_report_tables_put_each_score_in_its_column():
    """Every column of the two report tables holds the mean ± se of its own per-sample scores
    (written out here key by key), the cost cells the method's cost; a method without a key
    shows n/a there; the headline names each localisation metric's leader."""
    from tf_lrp.evaluate import tables

    a, b = _results_with_every_key(1), _results_with_every_key(2)
    del b["rank"]
    controls = {"aopc": np.full(5, 0.25), "aopc2": np.full(5, -0.5)}
    results, labels = {"a": a, "b": b}, {"a": "A", "b": "B"}
    expected = {
        "AOPC ↑": a["aopc"], "AOPC − random order ↑": a["aopc"] - 0.25,
        "AOPC, blur ↑": a["aopc2"], "AOPC, blur − random ↑": a["aopc2"] + 0.5,
        "ROAD MoRF ↑": a["road_morf"], "ROAD LeRF ↓": a["road_lerf"],
        "IROF (correct only) ↑": a["irof"], "mass acc. ↑": a["mass"], "rank acc. ↑": a["rank"],
        "ρ top ↓": a["similarity"][0], "ρ all ↓": a["similarity"][2],
        "ρ abs top ↓": a["similarity_abs"][0], "ρ abs all ↓": a["similarity_abs"][2],
        "ρ abs bottom layer ↓": a["similarity_abs_bu"][0], "eMPRT ↑": a["emprt"],
        "ΣR / f(x)": a["ratio"]}
    seen = set()
    for columns in tables.metric_columns(controls, "blur"):
        rows = [[c.strip() for c in line.strip("|").split("|")]
                for line in tables.table(results, labels, columns).splitlines()]
        head, row_a, row_b = rows[0], rows[2], rows[3]
        assert head[0] == "method" and head[-2:] == ["ms / expl.", "× gradient"]
        assert row_a[0] == "A" and row_a[-2:] == ["2.5", "2.25"] and row_b[-2:] == ["3.5", "3.25"]
        for j, header in enumerate(head[1:-2], start=1):
            assert row_a[j] == tables.fmt(expected[header]), header
            seen.add(header)
        if "rank acc. ↑" in head:
            assert row_b[head.index("rank acc. ↑")] == "n/a"
    assert seen == set(expected)
    lines = tables.headline(results, labels)
    for title in ("relevance mass accuracy", "IROF", "ROAD LeRF"):
        assert any(line.startswith(f"- {title} (") for line in lines), title
    assert not any(line.startswith("- relevance rank accuracy") for line in lines)  # one method
    both = tables.headline({"a": a, "c": _results_with_every_key(3)}, {"a": "A", "c": "C"})
    assert sum(line.startswith("- relevance rank accuracy (higher is better): **")
               for line in both) == 1
    titles = [line[2:].split(" (")[0] for line in both]
    assert titles == [
        "AOPC", "AOPC, second removal value", "ROAD MoRF", "ROAD LeRF", "IROF",
        "relevance mass accuracy", "relevance rank accuracy",
        "randomisation, |ρ abs| after the top layer", "randomisation, |ρ abs| after all layers",
        "bottom-up randomisation, |ρ abs| after the first layer",
        "efficient MPRT", "conservation, |ΣR / f(x) − 1|"]
