"""tf_lrp.tuning.tune and ``tf-lrp tune``: the search space, the split (the test split is never
seen by the search), the winner against the presets, the composite file it writes."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import InputError, composites, rules, tuning
from tf_lrp.tuning import scoring

PRESETS = ("epsilon_plus", "epsilon_gamma_box")
FAST = dict(steps=4, presets=PRESETS, low=-1.0, high=1.0)  # few pixel-flipping steps


def conv_model(convolutions: int = 3) -> keras.Model:
    keras.utils.set_random_seed(2)
    x = inp = keras.Input((6, 6, 2))
    for i in range(convolutions):
        x = kl.Conv2D(3, 3, padding="same", activation="relu", name=f"c{i + 1}")(x)
    x = kl.Flatten()(x)
    x = kl.Dense(6, activation="relu", name="d1")(x)
    return keras.Model(inp, kl.Dense(3, name="d2")(x))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return conv_model()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, (12, 6, 6, 2)).astype(np.float32), rng.integers(0, 3, 12)


def test_search_space_blocks_are_wired_by_layer_name():
    """Per-block gammas resolved into layer names explain as a LayerMap written by hand."""
    model = conv_model(6)
    where = tuning.layout(model)
    assert where.blocks == (("c1", "c2"), ("c3", "c4"), ("c5", "c6"))
    assert where.has_first and not where.tokens
    point = tuning.Point(0.2, "gamma", (0.1, 0.5, 1.0), "flat")
    spec = tuning.spec_for(point, where)
    g = rules.Gamma
    by_hand = composites.LayerMap(
        [("c1", g(0.1)), ("c2", g(0.1)), ("c3", g(0.5)), ("c4", g(0.5)), ("c5", g(1.0)),
         ("c6", g(1.0))], default=rules.Epsilon(0.2), first=rules.Flat())
    x = np.random.default_rng(1).uniform(-1, 1, (3, 6, 6, 2)).astype(np.float32)
    a = tf_lrp.Analyzer(model, composites.from_spec(spec))
    b = tf_lrp.Analyzer(model, by_hand)
    assert {k: repr(v) for k, v in a.rules.items()} == {k: repr(v) for k, v in b.rules.items()}
    np.testing.assert_allclose(a(x, 0), b(x, 0), rtol=1e-6, atol=1e-7)
    # every sampled point is a valid composite file; parameters that do not apply are left out
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = tuning.sample_point(rng, where)
        composites.from_spec(tuning.spec_for(p, where))
        assert tuning.EPSILON_RANGE[0] <= p.epsilon <= tuning.EPSILON_RANGE[1]
        assert (p.gammas is not None) == (p.conv == "gamma")
    # two convolutions: the upper block is empty and its gamma does not apply
    two = tuning.layout(conv_model(2))
    assert two.blocks == (("c1",), ("c2",), ())
    inp = keras.Input((5,), dtype="int32")  # token ids: no first layer, token presets
    h = kl.GlobalAveragePooling1D()(kl.Embedding(20, 4)(inp))
    tokens = tuning.layout(keras.Model(inp, kl.Dense(2)(h)))
    assert tokens.tokens and not tokens.has_first
    p = tuning.Point(0.1, "gamma", (0.1, 0.5, None), "same")
    assert "gamma_upper" not in p.params()


def test_bounds_come_from_the_validation_split_and_reach_every_z_box(model):
    """Without ``low``/``high``, z^B's bounds are the validation split's range: outliers seen
    only by the test split must not move them. Given bounds (asymmetric) reach the presets and
    the searched first layers alike; compared by relevance with the composites built by hand."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-0.4, 1.7, (12, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    val, test = tuning.split_indices(12, 0.5, seed=0)  # the split tune draws
    x[test[0], 0, 0, 0], x[test[1], 1, 1, 1] = 9.0, -6.0
    low, high = float(x[val].min()), float(x[val].max())
    assert -0.4 < low < -0.3 and 1.6 < high < 1.7
    result = tuning.tune(model, x, y, budget=2, presets=("epsilon_gamma_box",), steps=4,
                         selection="argmax")
    np.testing.assert_array_equal(result.validation_indices, val)
    assert result.spec["meta"]["settings"]["low"] == pytest.approx(low, rel=1e-6)
    assert result.spec["meta"]["settings"]["high"] == pytest.approx(high, rel=1e-6)
    probe = x[val][:3]

    def same(spec, by_hand):
        got = tf_lrp.Analyzer(model, composites.from_spec(spec))(probe, 1)
        want = tf_lrp.Analyzer(model, by_hand)(probe, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())

    same(result.trials[0].spec, composites.get("epsilon_gamma_box", low=low, high=high))
    # given bounds, in a searched point with z^B first
    where = tuning.layout(model)
    point = tuning.Point(0.05, "z_plus", None, "z_box")
    spec = tuning.spec_for(point, where, low=-0.3, high=2.5)
    same(spec, composites.LayerMap([(kl.Conv2D, rules.ZPlus())], default=rules.Epsilon(0.05),
                                   first=rules.ZBox(-0.3, 2.5)))


def test_split_indices():
    val, test = tuning.split_indices(10, 0.3, seed=4)
    assert len(val) == 3 and len(test) == 7
    assert np.intersect1d(val, test).size == 0 and np.union1d(val, test).tolist() == list(range(10))
    np.testing.assert_array_equal(val, tuning.split_indices(10, 0.3, seed=4)[0])
    with pytest.raises(InputError, match="overlap in 1 samples"):
        tuning.split_indices(10, ([0, 1, 2], [2, 3]))
    for share in (1.5, 1.0, 0.0):
        with pytest.raises(InputError, match="share in"):
            tuning.split_indices(10, share)
    val, test = tuning.split_indices(4, 0.5, seed=1)  # the smallest: 2 and 2
    assert len(val) == len(test) == 2
    with pytest.raises(InputError, match="at least 4 samples"):
        tuning.split_indices(3, 0.5)


def test_presets_are_registered_composites_and_points_list_what_applies():
    from tf_lrp.tuning import space

    for name in space.IMAGE_PRESETS + space.TOKEN_PRESETS:
        bounds = dict(low=-1.0, high=1.0) if name.endswith("_box") else {}
        assert isinstance(composites.get(name, **bounds), composites.Composite)
    assert space.Point(epsilon=0.1).params() == {"epsilon": 0.1}
    assert space.Point(0.2, "gamma", (0.1, None, 0.5), "flat").params() == {
        "epsilon": 0.2, "conv": "gamma", "gamma_lower": 0.1, "gamma_upper": 0.5,
        "first": "flat"}


def test_tune_never_scores_on_the_test_split(monkeypatch, model, data):
    x, _ = data
    row_id = {x[i].tobytes(): i for i in range(len(x))}
    events: list[tuple[str, set]] = []
    score, targets = scoring.Scorer.__call__, scoring.Scorer.targets

    def recording_score(self, composite, xs, target, masks):
        events.append(("score", {row_id[r.tobytes()] for r in xs}))
        return score(self, composite, xs, target, masks)

    def recording_targets(self, xs, y):
        events.append(("targets", {row_id[r.tobytes()] for r in xs}))
        return targets(self, xs, y)

    monkeypatch.setattr(scoring.Scorer, "__call__", recording_score)
    monkeypatch.setattr(scoring.Scorer, "targets", recording_targets)
    result = tuning.tune(model, x, budget=4, on_trial=lambda t: events.append(("trial", set())),
                         **FAST)
    val, test = set(result.validation_indices), set(result.test_indices)
    assert val.isdisjoint(test) and val | test == set(range(len(x)))
    last_trial = max(i for i, (kind, _) in enumerate(events) if kind == "trial")
    search, after = events[:last_trial], events[last_trial + 1:]
    assert sum(kind == "trial" for kind, _ in search) == 3 and len(result.trials) == 4
    assert all(ids <= val for kind, ids in search if kind != "trial")
    assert sum(kind == "score" for kind, _ in search) == 4  # every trial on validation
    assert after and all(ids == test for _, ids in after)  # then only the test split
    # the winner and each preset once (a preset winner is scored once)
    assert sum(kind == "score" for kind, _ in after) == 1 + len(PRESETS) - \
        (result.best.name in PRESETS)


def test_winner_and_its_file(tmp_path, model, data):
    x, y = data
    result = tuning.tune(model, x, y, budget=4, seed=3, selection="argmax", **FAST)
    assert [t.name for t in result.trials[:2]] == list(PRESETS)
    assert [t.index for t in result.trials] == [1, 2, 3, 4]
    for trial in result.trials:  # by construction: the best validation score wins
        assert result.best.score >= trial.score
    assert set(result.presets) == set(PRESETS)
    if result.best.name in PRESETS:
        assert result.presets[result.best.name] == (result.test_score, result.test_se)
    path = result.save(tmp_path / "tuned.json")
    meta = json.loads(path.read_text())["meta"]
    assert meta["metric"] == "aopc" and meta["score_split"] == "test"
    assert meta["score"] == pytest.approx(result.test_score, rel=1e-12)
    assert meta["validation_score"] == pytest.approx(result.best.score, rel=1e-12)
    assert meta["blocks"] == {"lower": ["c1"], "middle": ["c2"], "upper": ["c3"]}
    # the reported test score, recomputed from the saved file alone
    test = result.test_indices
    again = tuning.score(model, composites.load(path), x[test], y[test], metric="aopc",
                         steps=4, seed=3)
    assert again.mean() == pytest.approx(result.test_score, rel=1e-6, abs=1e-9)
    assert "tuned (trial" in result.report() and "epsilon_gamma_box" in result.table()
    report, table = result.report().splitlines(), result.table().splitlines()
    assert report[0].startswith("metric aopc (higher is better)")
    assert (report[-1].startswith("tuned: epsilon=")) == bool(result.best.params)
    assert table[0].split()[:2] == ["trial", "name"]
    assert [row.split()[0].rstrip("*") for row in table[1:]] == [
        str(t.index) for t in result.trials]


def test_bad_arguments(model, data):
    x, y = data
    with pytest.raises(InputError, match="metric 'mass' .* needs ground-truth masks"):
        tuning.tune(model, x, metric="mass", budget=2, **FAST)
    with pytest.raises(InputError, match="budget 1 is less than the 2 presets"):
        tuning.tune(model, x, budget=1, **FAST)
    with pytest.raises(InputError, match="metric must be one of aopc, road, mass"):
        tuning.tune(model, x, metric="auc", **FAST)
    with pytest.raises(InputError, match="unknown composite or rule 'nope'"):
        tuning.tune(model, x, budget=2, presets=("nope",))


def test_mass_metric(model, data):
    x, y = data
    masks = np.zeros((len(x), 6, 6), bool)
    masks[:, 1:4, 1:4] = True
    result = tuning.tune(model, x, y, masks=masks, metric="mass", budget=2,
                         presets=("epsilon_plus",), low=-1.0, high=1.0)
    assert all(0 <= t.score <= 1 for t in result.trials)
    assert 0 <= result.test_score <= 1


def test_cli_tune_writes_a_file_explain_accepts(tmp_path, capsys, model, data):
    from tf_lrp import cli
    from tf_lrp.cli import tune as tune_command

    assert tune_command.METRICS == tuning.METRICS  # spelled out there for a light --help
    x, y = data
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "sub" / "tuned.json"
    code = cli.main(["tune", str(model_path), "--data", str(tmp_path / "d.npz"), "--budget", "2",
                     "--presets", "epsilon_plus", "--steps", "4", "--low", "-1", "--high", "1",
                     "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.count("trial ") == 2 and "trial 2/2" in captured.err
    assert "test n=6" in captured.out and "epsilon_plus" in captured.out
    spec = json.loads(out.read_text())
    assert len(spec["meta"]["model_sha256"]) == 64 and spec["meta"]["data"].endswith("d.npz")
    # the same search from Python gives the same file (the CLI adds where it came from)
    result = tuning.tune(model, x, y, budget=2, presets=("epsilon_plus",), steps=4, low=-1.0,
                         high=1.0)
    assert {k: v for k, v in spec.items() if k != "meta"} == \
        {k: v for k, v in result.spec.items() if k != "meta"}
    assert spec["meta"]["score"] == pytest.approx(result.test_score, rel=1e-9)

    np.save(tmp_path / "x.npy", x[:2])
    assert cli.main(["explain", str(model_path), str(tmp_path / "x.npy"), "--out",
                     str(tmp_path / "heat"), "--format", "npy", "-q", "--target", "2",
                     "--composite-file", str(out)]) == 0
    expected = tf_lrp.Analyzer(model, composites.load(out))(x[:2], 2)
    for i in range(2):
        np.testing.assert_allclose(np.load(tmp_path / "heat" / f"x_{i}.npy"), expected[i],
                                   rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert cli.main(["tune", str(model_path), "--data", "nowhere", "--out", str(out)]) == 2
    assert "expected a data set" in capsys.readouterr().err


def test_road_metric(model, data):
    """Last: ROAD comes from tf_lrp.evaluate.road."""
    x, y = data
    result = tuning.tune(model, x, y, metric="road", budget=2, presets=("epsilon_plus",),
                         low=-1.0, high=1.0)
    assert np.isfinite(result.test_score) and result.spec["meta"]["metric"] == "road"


def _trial(index, name, scores):
    from tf_lrp.tuning.search import Trial

    scores = np.asarray(scores, np.float64)
    return Trial(index, name, {}, {}, float(scores.mean()),
                 float(scores.std(ddof=1) / np.sqrt(len(scores))), 0.0, scores, None)


def test_one_standard_error_rule_is_paired_and_favours_the_presets():
    """A searched leader keeps the win only if its mean paired lead over the best preset
    exceeds one standard error of the per-sample differences."""
    from tf_lrp.tuning.search import _one_se

    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.3, 40)  # samples differ a lot; the methods differ little
    preset = _trial(1, "epsilon_plus", base)
    weak = _trial(2, "epsilon_gamma_box", base - 0.2)
    d = np.tile([0.05, -0.01], 20)  # a paired lead of 0.02, se 0.0049: kept
    steady = _trial(3, "search", base + d)
    assert _one_se(steady, [weak, preset]) is steady
    noisy = _trial(4, "search", base + rng.normal(0.02, 0.3, 40))  # lead below its se
    diff = noisy.scores - base
    assert diff.mean() <= diff.std(ddof=1) / np.sqrt(40)
    assert _one_se(noisy, [weak, preset]) is preset
    assert _one_se(noisy, []) is noisy
    # two paired samples give a standard error; one does not (the leader keeps its win)
    pair = _trial(6, "epsilon_plus", np.array([0.4, 0.66]))  # mean 0.53 < the leader's 0.55
    assert _one_se(_trial(5, "search", np.array([0.6, 0.5])), [pair]) is pair
    one = _trial(8, "epsilon_plus", np.array([0.49, np.nan]))
    lone = _trial(7, "search", np.array([0.5, 0.6]))
    assert _one_se(lone, [one]) is lone


def test_tune_records_the_selection(model, data, tmp_path):
    x, y = data
    path = tmp_path / "model.keras"
    model.save(path)
    result = tuning.tune(str(path), x, y, budget=4, seed=3, **FAST)  # a file: read once
    meta = result.spec["meta"]
    assert meta["selection"] == "one_se" and meta["model"] == model.name
    assert meta["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    leader = max((t for t in result.trials if np.isfinite(t.score)), key=lambda t: t.score)
    assert meta["argmax_trial"] == leader.index
    assert result.best is leader or result.best.name in PRESETS
    with pytest.raises(InputError, match="selection must be"):
        tuning.tune(model, x, y, budget=2, selection="best", **FAST)



def test_one_standard_error_rule_hands_a_noisy_lead_back_to_the_best_preset(model, data):
    """A searched trial leads on the validation split by less than one standard error of its
    paired differences to the best preset (seed 6): ``one_se`` picks that preset, ``argmax``
    the leader; both as computed here from the trials' per-sample scores."""
    x, y = data
    chosen = tuning.tune(model, x, y, budget=6, seed=6, **FAST)
    plain = tuning.tune(model, x, y, budget=6, seed=6, selection="argmax", **FAST)
    leader = max((t for t in chosen.trials if np.isfinite(t.score)), key=lambda t: t.score)
    preset = max((t for t in chosen.trials if t.name != "search" and np.isfinite(t.score)),
                 key=lambda t: t.score)
    d = leader.scores - preset.scores
    d = d[np.isfinite(d)]
    assert leader.name == "search" and d.mean() <= d.std(ddof=1) / np.sqrt(len(d))
    assert chosen.best.index == preset.index and chosen.best.name in PRESETS
    assert plain.best.index == leader.index
    assert chosen.spec["meta"]["argmax_trial"] == leader.index
