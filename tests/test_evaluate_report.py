"""The cost column and the scenes data set of the report.

Timings are never asserted (the machine may be shared): only that they are measured, positive,
and that the ratio is the method's time over the reference's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers as kl

from tf_lrp import datasets, evaluate
from tf_lrp.analyzers import Gradient
from tf_lrp.errors import InputError

SAVED_MODELS = Path(__file__).resolve().parents[1] / "saved_models"


def test_relative_cost_times_the_method_between_two_reference_timings():
    calls = []

    def method(x, target=None):
        calls.append("method")
        time.sleep(0.001)

    def reference(x, target=None):
        calls.append("reference")

    cost = evaluate.relative_cost(method, reference, np.zeros((4, 3)), None, repeats=2)
    # warm-up + 2 timed calls each: reference, method, reference
    assert calls == ["reference"] * 3 + ["method"] * 3 + ["reference"] * 3
    assert cost.batch_size == 4 and cost.ms > 0 and cost.reference_ms > 0
    assert cost.ratio == pytest.approx(cost.ms / cost.reference_ms)
    with pytest.raises(InputError, match="repeats"):
        evaluate.time_per_explanation(method, np.zeros((4, 3)), repeats=0)


def test_scenes_report_uses_the_held_out_scenes_and_their_masks(tmp_path, monkeypatch):
    """``--data scenes``: square RGB models; data from ``make_scenes`` at the model's size with
    the held-out seed (stood in for by the shapes here), masks scored, patch size 4; every
    table carries the cost columns and the JSON the cost per method."""
    seen = []

    def fake_scenes(n, size=64, seed=0):
        seen.append((n, size, seed))
        return datasets.make_shapes(n, size=size, seed=seed)

    monkeypatch.setattr(datasets, "make_scenes", fake_scenes, raising=False)
    monkeypatch.setattr(datasets, "SCENES_TEST_SEED", 7, raising=False)
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    h = kl.Rescaling(1 / 255, name="preprocess")(inp)  # takes pixels 0..255 like the shipped
    h = kl.Conv2D(4, 3, activation="relu", name="conv")(h)
    model = keras.Model(inp, kl.Dense(4, name="out")(kl.GlobalAveragePooling2D()(h)))
    markdown, figure = evaluate.run_report(model, "scenes", ["gradient", "random"], n=4,
                                           out_dir=tmp_path, steps=2, cost_batch=2,
                                           cost_repeats=1, progress=False)
    assert seen == [(4, 32, 7)]
    assert "patch 4" in markdown and "second blur" in markdown
    tables = [block for block in markdown.split("\n\n") if block.startswith("| method |")]
    assert len(tables) == 2
    for block in tables:
        head = block.splitlines()[0]
        assert head.endswith("| ms / expl. | × gradient |")
        assert "| Gradient |" in block and "| Random |" in block
    assert "ROAD MoRF ↑" in tables[0] and "IROF (correct only) ↑" in tables[0] and "AOPC, blur ↑" in tables[0]
    assert "mass acc. ↑" in tables[1] and "eMPRT ↑" in tables[1]
    summary = json.loads(figure.with_suffix(".json").read_text())
    assert summary["data"] == "scenes" and summary["settings"]["patch_size"] == 4
    assert summary["randomised_layers"] == ["out", "conv"]
    assert summary["randomised_layers_bottom_up"] == ["conv", "out"]
    for name in ("gradient", "random"):
        result = summary["methods"][name]
        assert result["cost"]["ms_per_explanation"] > 0 and result["cost"]["ratio"] > 0
        for key in ("aopc", "aopc_second", "road_morf", "road_lerf", "irof", "mass", "rank",
                    "emprt"):
            assert len(result[f"{key}_per_sample"]) == 4, key
        for curve in ("curve", "curve_second", "road_curve_morf", "road_curve_lerf"):
            fractions = result["fractions" if curve == "curve" else f"{curve}_fractions"]
            assert len(result[curve]) == len(fractions) >= 2, curve
    x, y, masks = datasets.make_shapes(4, size=32, seed=7)
    want = evaluate.relevance_mass_accuracy(Gradient(model)(x * 255.0, y), masks)
    np.testing.assert_allclose(summary["methods"]["gradient"]["mass"][0], want.mean(), rtol=1e-4)
    assert (tmp_path / f"{figure.stem}_cost.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore:.*ends in a softmax")
def test_integrated_gradients_zero_starts_from_the_data_zero_not_the_removal_value():
    """In the shipped digits model's pixels the removal value -1 is pixel 0 and the data's 0 is
    pixel 127.5; the shapes' "mean" removal stays per image, their 0 (black) is pixel 0."""
    import tf_lrp
    from tf_lrp.evaluate import methods

    model = tf_lrp.load_model(SAVED_MODELS / "digits_mlp.h5")
    setting, _ = methods.to_model_input(evaluate.DATASETS["digits"], np.zeros((1, 28, 28, 1)),
                                        model)
    assert (setting.baseline, setting.zero, setting.low, setting.high) == (0.0, 127.5, 0.0, 255.0)
    table = methods._method_table()
    ig, ig_zero = (table[name][1](model, setting, 0)
                   for name in ("integrated_gradients", "integrated_gradients_zero"))
    assert float(np.mean(ig.baseline[0])) == 0.0 and float(np.mean(ig_zero.baseline[0])) == 127.5
    shapes = evaluate.DATASETS["shapes"]
    assert shapes.baseline == "mean" and shapes.zero == 0.0


def test_composite_file_is_evaluated_as_a_method_and_sanity_samples_limit_the_cascades(tmp_path):
    """``composite_files``: a saved EpsilonPlus scores as the preset does (same relevance); the
    randomisation checks run on the first ``sanity_samples`` samples only."""
    from tf_lrp import composites

    keras.utils.set_random_seed(1)
    inp = keras.Input((32, 32, 3))
    h = kl.Rescaling(1 / 255, name="preprocess")(inp)
    h = kl.Conv2D(4, 3, activation="relu", name="conv")(h)
    model = keras.Model(inp, kl.Dense(4, name="out")(kl.GlobalAveragePooling2D()(h)))
    path = tmp_path / "mine.json"
    composites.save(composites.EpsilonPlus(), path)
    _, figure = evaluate.run_report(model, "shapes", ["epsilon_plus"], n=5, out_dir=tmp_path,
                                    steps=2, cost_batch=0, sanity_samples=3, road=False,
                                    irof_metric=False, composite_files=[path], progress=False)
    summary = json.loads(figure.with_suffix(".json").read_text())
    assert list(summary["methods"]) == ["epsilon_plus", "file:mine"]
    preset, loaded = summary["methods"]["epsilon_plus"], summary["methods"]["file:mine"]
    for key in ("aopc_per_sample", "mass_per_sample", "ratio_per_sample"):
        np.testing.assert_allclose(loaded[key], preset[key], atol=1e-4)
    assert len(preset["mass_per_sample"]) == 5
    assert len(loaded["similarity_top_per_sample"]) == 3
    assert summary["settings"]["sanity_samples"] == 3
    assert summary["settings"]["composite_files"] == [str(path)]
    assert "LRP mine (file)" in figure.with_suffix(".md").read_text()


def test_cli_flags_reach_the_report(monkeypatch, tmp_path, capsys):
    """``tf-lrp evaluate`` hands each switch to ``run_report``: the ``--no-*`` flags turn their
    part off, ``--seed`` defaults to 0 as its help says; the summary names the outputs."""
    from tf_lrp.evaluate import cli as evaluate_cli
    from tf_lrp.evaluate import report as evaluate_report

    calls = []

    def fake_report(*args, **kwargs):
        calls.append(kwargs)
        return "| table |", tmp_path / "report.png"

    monkeypatch.setattr(evaluate_report, "run_report", fake_report)
    base = ["model.keras", "--data", "shapes", "--out-dir", str(tmp_path)]
    assert evaluate_cli.main(base) == 0
    assert evaluate_cli.main(base + ["--no-road", "--no-irof", "--no-sanity",
                                     "--no-bottom-up", "--seed", "7"]) == 0
    on, off = calls
    assert (on["road"], on["irof_metric"], on["sanity"], on["bottom_up"], on["seed"]) == (
        True, True, True, True, 0)
    assert (off["road"], off["irof_metric"], off["sanity"], off["bottom_up"], off["seed"]) == (
        False, False, False, False, 7)
    lines = capsys.readouterr().out.splitlines()
    assert "| table |" in lines and f"plots: {tmp_path / 'report.png'}, " \
        f"{tmp_path / 'report_cost.png'}" in lines
    assert f"results: {tmp_path / 'report.json'}" in lines
    assert sum(line.startswith("runtime: ") and line.endswith(" s") for line in lines) == 2


def test_curve_figure_has_a_panel_per_curve_and_seven_methods(tmp_path):
    """One removal curve and the three randomisation curves: four panels, three columns and
    two rows of 6.5 x 5.5 inches at 100 dpi; seven methods (the seventh drawn dashed)."""
    from PIL import Image

    from tf_lrp.evaluate import plots

    def png_size(path) -> tuple[int, int]:
        with Image.open(path) as image:
            assert image.format == "PNG"
            return image.size

    rng = np.random.default_rng(0)
    curve = {"fractions": np.linspace(0, 1, 4), "curve": rng.normal(size=4)}
    results = {f"m{i}": {"curve": curve, "similarity": rng.normal(size=(2, 3)),
                         "similarity_abs": rng.normal(size=(2, 3)),
                         "similarity_abs_bu": rng.normal(size=(2, 3))} for i in range(7)}
    labels = {name: name.upper() for name in results}
    layers = {"top_down": ["b", "a"], "bottom_up": ["a", "b"]}
    path = tmp_path / "curves.png"
    plots.plot_curves(path, "t", results, {}, labels, layers, "blur")
    assert png_size(path) == (1950, 1100)
    plots.plot_curves(path, "t", {"m0": {"curve": curve}}, {}, {"m0": "M0"}, layers, "blur")
    assert png_size(path) == (650, 550)  # one panel
