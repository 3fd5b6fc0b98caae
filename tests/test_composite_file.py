"""Composite files (tf_lrp.composites.save/load): the JSON format, its round trip, its checks,
and that a loaded file explains exactly as the LayerMap it describes."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import InputError, composites, rules


def conv_model() -> keras.Model:
    """Four convolutions and two Dense layers, named; random weights (seeded)."""
    keras.utils.set_random_seed(1)
    x = inp = keras.Input((8, 8, 2))
    for name in ("c1", "c2", "c3", "c4"):
        x = kl.Conv2D(4, 3, padding="same", activation="relu", name=name)(x)
    x = kl.Flatten()(x)
    x = kl.Dense(8, activation="relu", name="d1")(x)
    return keras.Model(inp, kl.Dense(3, name="d2")(x))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return conv_model()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 2)).astype(np.float32)


#: Every section used, a different rule or parameter per layer, so a wrong wiring shows.
SPEC = {
    "format": "tf_lrp.composite",
    "version": 1,
    "first": {"rule": "ZBox", "low": -1.0, "high": 1.0},
    "layers": {"c2": {"rule": "Gamma", "gamma": 0.5}, "c4": {"rule": "AlphaBeta", "alpha": 2.0,
               "beta": 1.0}, "d1": {"rule": "Epsilon", "epsilon": 0.3}},
    "classes": {"Conv2D": {"rule": "Gamma", "gamma": 0.05}},
    "default": {"rule": "Epsilon", "epsilon": 0.01},
    "meta": {"note": "written by hand"},
}


def hand_written() -> composites.LayerMap:
    return composites.LayerMap(
        [("c2", rules.Gamma(0.5)), ("c4", rules.AlphaBeta(2.0, 1.0)), ("d1", rules.Epsilon(0.3)),
         (kl.Conv2D, rules.Gamma(0.05))],
        default=rules.Epsilon(0.01), first=rules.ZBox(-1.0, 1.0))


def write(path, value) -> str:
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return str(path)


def rule_table(analyzer) -> dict[str, str]:
    return {name: repr(rule) for name, rule in analyzer.rules.items()}


def test_loaded_file_explains_as_the_hand_written_layermap(tmp_path, model, x):
    loaded = composites.load(write(tmp_path / "c.json", SPEC))
    a, b = tf_lrp.Analyzer(model, loaded), tf_lrp.Analyzer(model, hand_written())
    assert rule_table(a) == rule_table(b)
    assert rule_table(a)["c3"] == "Gamma(gamma=0.05, stabilizer=1e-06)"  # by class
    assert rule_table(a)["c1"].startswith("ZBox(")  # first beats the class
    np.testing.assert_allclose(a(x, 1), b(x, 1), rtol=1e-6, atol=1e-7)
    # the parameters matter here: another gamma on c2 gives another explanation
    other = json.loads(json.dumps(SPEC))
    other["layers"]["c2"]["gamma"] = 0.05
    assert not np.allclose(tf_lrp.Analyzer(model, composites.from_spec(other))(x, 1), a(x, 1),
                           rtol=1e-3, atol=1e-6)


def test_round_trip(tmp_path):
    path = composites.save(composites.EpsilonGammaBox(low=0.0, high=1.0), tmp_path / "a.json",
                           meta={"score": 0.5, "ids": [1, 2]})
    text = path.read_text()
    loaded = composites.load(path)
    assert loaded.spec == json.loads(text)
    assert loaded.spec["classes"]["CONVOLUTIONS"] == {"rule": "Gamma", "gamma": 0.25,
                                                       "stabilizer": 1e-6}
    again = composites.save(loaded, tmp_path / "b.json")
    assert again.read_text() == text  # save(load(f)) is f, byte for byte
    # a hand-written file keeps what it says (no defaults filled in)
    hand = composites.load(write(tmp_path / "hand.json", SPEC))
    assert composites.to_spec(hand) == SPEC
    assert json.loads(composites.dumps(hand)) == SPEC
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries


def test_every_preset_saves_and_explains_the_same(tmp_path, model, x):
    for name in ("epsilon_alpha2_beta1", "epsilon_plus_flat"):  # EGB: test_round_trip
        preset = composites.get(name)
        loaded = composites.load(composites.save(preset, tmp_path / f"{name}.json"))
        a, b = tf_lrp.Analyzer(model, loaded), tf_lrp.Analyzer(model, preset)
        assert rule_table(a) == rule_table(b), name
        np.testing.assert_allclose(a(x, 0), b(x, 0), rtol=1e-6, atol=1e-7)


def test_attention_presets_save_and_explain_the_same(tmp_path):
    """AttnLRP and CP-LRP (class keys of tf_lrp's own attention parts, list parameters) saved
    and loaded explain like the presets; a file with other shares like the LayerMap by hand."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((5, 3))
    a = kl.MultiHeadAttention(2, 4, value_dim=3)(inp, inp)
    model = keras.Model(inp, kl.Dense(3)(kl.Flatten()(kl.LayerNormalization()(a))))
    x = np.random.default_rng(4).normal(size=(3, 5, 3)).astype(np.float32)

    def explain(composite):
        return tf_lrp.Analyzer(model, composite)(x, [0, 2, 1])

    for preset in (composites.AttnLRP(epsilon=0.1), composites.CPLRP(epsilon=0.05)):
        path = composites.save(preset, tmp_path / f"{type(preset).__name__}.json")
        want = explain(preset)
        np.testing.assert_allclose(explain(composites.load(path)), want, rtol=1e-6,
                                   atol=1e-6 * np.abs(want).max())
    spec = composites.to_spec(composites.CPLRP(epsilon=0.05))
    assert spec["classes"]["AttentionContext"]["shares"] == [0.0, 1.0]
    spec["classes"]["AttentionContext"]["shares"] = [0.3, 0.7]
    spec["classes"]["AttentionScores"]["shares"] = [0.8, 0.2]
    spec["classes"]["AttentionSoftmax"] = {"rule": "AttnSoftmax"}
    by_hand = composites.LayerMap(
        [("AttentionContext", rules.Bilinear(0.05, (0.3, 0.7))),
         ("AttentionScores", rules.Bilinear(0.05, (0.8, 0.2))),
         ("AttentionSoftmax", rules.AttnSoftmax()), ("GatedProduct", rules.HeldConstant()),
         ("LayerNormalization", rules.Epsilon(0.05))], default=rules.Epsilon(0.05))
    want = explain(by_hand)
    assert not np.allclose(want, explain(composites.CPLRP(epsilon=0.05)), rtol=1e-2)
    got = explain(composites.load(composites.save(spec, tmp_path / "shares.json")))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_zbox_bounds_as_arrays(tmp_path, model, x):
    low = np.full((8, 8, 2), -1.0, np.float32)
    low[..., 1] = -2.0
    preset = composites.EpsilonGammaBox(low=low, high=2.0)
    loaded = composites.load(composites.save(preset, tmp_path / "z.json"))
    np.testing.assert_allclose(tf_lrp.Analyzer(model, loaded)(x, 2),
                               tf_lrp.Analyzer(model, preset)(x, 2), rtol=1e-6, atol=1e-7)


def edited(**changes):
    spec = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        if value is None:
            spec.pop(key)
        else:
            spec[key] = value
    return spec


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not a composite file: invalid JSON at line 1, column 2"),
    ("[1, 2]", r"holds a JSON object, got list"),
    (edited(format="keras"), r'expected "format": "tf_lrp.composite", got \'keras\''),
    (edited(format=None), r'expected "format": "tf_lrp.composite", got None'),
    (edited(version=2), r"version 2 is not supported: this tf_lrp reads version 1"),
    (edited(rules={}), r"unknown key 'rules'; the keys of a composite file: format, version"),
    (edited(layers=[1]), r"'layers' must be an object of name: rule"),
    (edited(meta=[1]), r"'meta' must be a JSON object"),
    (edited(default={"rule": "Gama"}), r"default: unknown rule 'Gama'; rules: AlphaBeta, "),
    (edited(default={"rule": "epsilon"}), r"unknown rule 'epsilon' \(rules are named by class: "
                                          r"'Epsilon'\)"),
    (edited(default={"epsilon": 0.1}), r'default: expected a rule object such as \{"rule"'),
    (edited(classes={"Conv2D": {"rule": "Gamma", "gama": 0.1}}),
     r'classes\["Conv2D"\]: Gamma has no parameter \'gama\'; it takes Gamma\(gamma=0.25, '
     r"stabilizer=1e-06\)"),
    (edited(layers={"c2": {"rule": "Gamma", "gamma": "big"}}),
     r'layers\["c2"\].gamma: expected a finite number, got \'big\''),
    (edited(layers={"c2": {"rule": "Gamma", "gamma": -0.5}}),
     r'layers\["c2"\].gamma: must be >= 0, got -0.5'),
    (edited(default={"rule": "Epsilon", "epsilon": -0.1}), r"default.epsilon: must be >= 0"),
    (edited(default={"rule": "Gamma", "stabilizer": -1e-3}), r"default.stabilizer: must be >= 0"),
    (edited(default={"rule": "W-Square"}), r"unknown rule 'W-Square' \(rules are named by class: "
                                           r"'WSquare'\)"),
    (edited(default={"rule": "Epsilon", "bias": 1}), r"default.bias: expected true or false"),
    (edited(layers={"c4": {"rule": "AlphaBeta", "alpha": 1.0, "beta": 1.0}}),
     r'layers\["c4"\]: AlphaBeta needs alpha - beta = 1'),
    (edited(first={"rule": "ZBox", "low": 1.0, "high": 0.0}), r"first: low must be <= high"),
    (edited(default={"rule": "Flat", "params": {}}), r"Flat has no parameter 'params'; it takes "
                                                     r"Flat\(\)"),
])
def test_bad_files_name_the_fault(tmp_path, content, message):
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(InputError, match=message) as caught:
        composites.load(path)
    assert str(caught.value).startswith(path)  # the file is named too


def test_unreadable_and_unsaveable(tmp_path):
    with pytest.raises(InputError, match="cannot read the composite file"):
        composites.load(tmp_path / "missing.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        composites.load(tmp_path / "binary.json")

    class Custom(rules.Epsilon):
        pass

    cases = [
        (composites.Overrides(composites.EpsilonPlus(), [("c1", rules.Flat())]), "only a LayerMap"),
        (composites.LayerMap(default=Custom()), "not a rule of tf_lrp.rules.RULES"),
        (composites.LayerMap([(kl.Dense, rules.Zero()), ("c1", rules.Flat())]),
         "the name 'c1' is mapped after the class 'Dense'"),
    ]
    for composite, message in cases:
        with pytest.raises(InputError, match=message):
            composites.save(composite, tmp_path / "x.json")
    with pytest.raises(InputError, match="meta cannot be written as JSON"):
        composites.save(composites.EpsilonPlus(), tmp_path / "x.json", meta={"score": float("nan")})
    assert not os.path.exists(tmp_path / "x.json")


def test_cli_composite_file_options(tmp_path, capsys, model, x):
    from tf_lrp import cli

    model_path = tmp_path / "m.keras"
    model.save(model_path)
    np.save(tmp_path / "x.npy", x[:2])
    spec_path = write(tmp_path / "c.json", SPEC)
    base = ["explain", str(model_path), str(tmp_path / "x.npy"), "--out", str(tmp_path / "out"),
            "--format", "npy", "-q", "--target", "1"]
    assert cli.main(base + ["--composite-file", spec_path]) == 0
    expected = tf_lrp.Analyzer(model, hand_written())(x[:2], 1)
    for i in range(2):
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"x_{i}.npy"), expected[i],
                                   rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(base + ["--composite-file", spec_path, "--composite", "epsilon_plus"]) == 2
    assert "not allowed with argument --composite-file" in capsys.readouterr().err
    assert cli.main(base + ["--composite-file", spec_path, "--param", "gamma=0.5"]) == 2
    assert "a --composite-file carries its parameters" in capsys.readouterr().err
    bad = write(tmp_path / "bad.json", edited(version=3))
    assert cli.main(base + ["--composite-file", bad]) == 2
    assert "version 3 is not supported" in capsys.readouterr().err


def test_edge_values_copies_and_names(tmp_path, model, x):
    """epsilon 0 and low == high are allowed; the composite keeps its own copy of the spec (a
    later edit of the dict, or of what to_spec returns, changes nothing); a file composite's
    repr names its file; a name mapped before any class saves; a LayerMap subclass with its own
    rule_for does not; errors of an object without a file say "composite file"."""
    spec = {"format": "tf_lrp.composite", "version": 1,
            "first": {"rule": "ZBox", "low": [[[-1.0, 0.5]]], "high": [[[1.0, 0.5]]]},
            "layers": {"c2": {"rule": "Gamma", "gamma": 0.5}},
            "default": {"rule": "Epsilon", "epsilon": 0}}
    composite = composites.from_spec(spec)
    want = tf_lrp.Analyzer(model, composite)(x, 1)
    spec["layers"]["c2"]["gamma"] = 9.0
    composites.to_spec(composite)["layers"]["c2"]["gamma"] = 7.0
    np.testing.assert_array_equal(tf_lrp.Analyzer(model, composite)(x, 1), want)
    assert composite.spec["layers"]["c2"]["gamma"] == 0.5
    path = composites.save(composite, tmp_path / "edge.json")
    assert repr(composite).startswith("FileComposite(first=ZBox(")
    assert repr(composites.load(path)) == \
        f"FileComposite({str(path)!r}: " + repr(composite)[len("FileComposite("):]
    names_first = composites.LayerMap([("c1", rules.Flat()), (kl.Dense, rules.Zero())])
    assert composites.to_spec(names_first)["layers"] == {"c1": {"rule": "Flat"}}
    both = composites.LayerMap([(("c1", "c3"), rules.Flat())])  # a tuple of names: each saved
    assert composites.to_spec(both)["layers"] == {"c1": {"rule": "Flat"}, "c3": {"rule": "Flat"}}

    class Mine(composites.LayerMap):
        def rule_for(self, layer, **kwargs):
            return rules.Zero()

    with pytest.raises(InputError, match="cannot be written as a composite file"):
        composites.save(Mine(default=rules.Zero()), tmp_path / "mine.json")
    with pytest.raises(InputError, match=r"^composite file: unknown key 'rules'"):
        composites.from_spec({**SPEC, "rules": {}})
