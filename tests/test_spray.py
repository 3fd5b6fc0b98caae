"""SpRAy (tf_lrp.spray), its report (in a real headless browser) and ClArC (tf_lrp.clarc):
clusters against planted strategies, the streamed reading of an explain run, the projection
against its definition, corrected models by behaviour."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_lrp
from tf_lrp import artifacts, clarc, spray
from tf_lrp.errors import InputError


def _two_strategies(n_a=23, n_b=14, seed=0):
    """Maps with the mass in a corner (strategy A) or around an object near the centre (B); unequal
    group sizes."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0, 0.05, (n_a + n_b, 32, 32))
    maps[:n_a, 1:6, 1:6] += rng.uniform(1.0, 2.0, (n_a, 1, 1))
    for i in range(n_a, n_a + n_b):
        cy, cx = rng.integers(14, 19, 2)
        maps[i, cy - 3:cy + 3, cx - 3:cx + 3] += rng.uniform(0.8, 1.6)
    truth = np.arange(n_a + n_b) < n_a
    return maps, truth


def test_pool_is_block_means_as_shares():
    r = np.random.default_rng(1).normal(size=(3, 12, 10, 2))
    f = spray.pool(r, grid=4)
    s = r.sum(-1)[:, :12, :8].reshape(3, 4, 3, 4, 2).mean(axis=(2, 4)).reshape(3, -1)
    np.testing.assert_allclose(f, s / np.abs(s).sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    with pytest.raises(InputError, match="cannot be pooled"):
        spray.pool(r[:, :3], grid=4)


def test_spray_separates_planted_strategies_and_the_eigengap_finds_two():
    from sklearn.metrics import adjusted_rand_score

    maps, truth = _two_strategies()
    result = spray.spray(spray.pool(maps), n_neighbors=12)
    assert result.suggested == 2 and result.n_clusters == 2
    assert adjusted_rand_score(truth, result.labels) == 1.0
    assert result.labels[0] == 0  # the larger cluster is numbered first
    assert result.eigenvalues[0] < 1e-6 and result.eigenvalues[1] < 1e-6 < result.eigenvalues[2]
    assert result.embedding.shape == (len(truth), 2) and result.embedding_method == "tsne"
    # with fewer neighbours the largest gap lies after 3 (the corner group splits): the
    # eigengap is a heuristic; 2 clusters asked for still separate the strategies
    few = spray.spray(spray.pool(maps), n_neighbors=5, embedding="spectral")
    assert few.suggested == 3
    two = spray.spray(spray.pool(maps), n_neighbors=5, n_clusters=2, embedding="spectral")
    assert adjusted_rand_score(truth, two.labels) == 1.0
    spectral = spray.spray(spray.pool(maps), n_neighbors=5, n_clusters=3, embedding="spectral")
    assert spectral.n_clusters == 3 and spectral.embedding_method == "spectral"


def test_clusters_of_concept_vectors():
    rng = np.random.default_rng(2)
    v = np.abs(rng.normal(0, 0.1, (30, 12)))
    v[:18, 3] += 2.0
    v[18:, 7] += 2.0
    result = spray.spray(v, n_neighbors=5, n_clusters=2)
    assert set(result.labels[:18]) == {0} and set(result.labels[18:]) == {1}


def _run(tmp_path):
    """A real explain run (--format shards) of a tiny model on planted maps as inputs."""
    from tf_lrp.cli.parser import main

    keras.utils.set_random_seed(3)
    x_in = keras.Input((32, 32, 1))
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x_in))
    model = keras.Model(x_in, out)
    model.layers[-1].kernel.assign(np.ones((1024, 2), "float32"))
    model.save(tmp_path / "m.keras")
    maps, truth = _two_strategies()
    np.save(tmp_path / "x.npy", maps[..., None].astype("float32"))
    assert main(["explain", str(tmp_path / "m.keras"), str(tmp_path / "x.npy"), "--format",
                 "shards", "--shard-size", "10", "--target", "0", "--composite", "epsilon",
                 "--out", str(tmp_path / "run"), "-q"]) == 0
    return maps, truth


def test_read_run_streams_the_class_from_shards(tmp_path):
    maps, truth = _run(tmp_path)
    names, feats, where = spray.read_run(tmp_path / "run", 0)
    assert len(names) == len(maps) and len({p for p, _ in where}) == 4  # 4 shards of <= 10
    # relevance of a linear model with ones under epsilon: x * 1, pooled like the maps
    np.testing.assert_allclose(feats, spray.pool(maps), rtol=1e-3, atol=1e-5)
    with pytest.raises(InputError, match="no samples of class 1"):
        spray.read_run(tmp_path / "run", 1)


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium")
    return path


@contextlib.contextmanager
def _in_browser(path):
    """The page at ``path`` in headless Chromium; yields ``(page, errors)`` (script errors and
    console errors, checked empty after the block)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(Path(path).as_uri())
        yield page, errors
        browser.close()
    assert not errors, errors


def test_spray_command_report_in_a_real_browser(tmp_path):
    from tf_lrp.cli.parser import main

    maps, truth = _run(tmp_path)
    assert main(["spray", str(tmp_path / "run"), "--class", "0", "--out",
                 str(tmp_path / "report"), "--neighbors", "12", "-q"]) == 0
    rows = list(csv.DictReader((tmp_path / "report" / "clusters.csv").open()))
    assert len(rows) == len(maps) and {r["cluster"] for r in rows} == {"0", "1"}
    spectrum = list(csv.DictReader((tmp_path / "report" / "spectrum.csv").open()))
    assert len(spectrum) == 9 and float(spectrum[0]["eigenvalue"]) < 1e-6
    with _in_browser(tmp_path / "report" / "index.html") as (page, _):
        assert page.evaluate("document.body.dataset.ready") == "1"
        sections = page.eval_on_selector_all("section.cluster", "s => s.map(e => "
                                                                "e.dataset.cluster)")
        assert sections == ["0", "1"]
        assert page.eval_on_selector_all("section.cluster img", "i => i.every(e => "
                                                                "e.naturalWidth > 0)")
        assert page.eval_on_selector_all("#map .pt", "p => p.length") == len(maps)
        page.hover("#map .pt[data-thumb]")
        assert page.evaluate("document.querySelector('#hover img') !== null")


# ----------------------------------------------------------------------------- ClArC
def _small_model(seed=4):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="conv")(x_in)
    h = keras.layers.Conv2D(4, 1, name="conv2")(h)
    out = keras.layers.Dense(3, name="dense")(keras.layers.GlobalAveragePooling2D()(h))
    return keras.Model(x_in, out)


def test_projection_removes_the_direction_and_nothing_else():
    rng = np.random.default_rng(5)
    v = rng.normal(size=5)
    z = rng.normal(size=5)
    a = rng.normal(size=(2, 3, 3, 5)).astype("float32")
    p = np.asarray(clarc.ArtifactProjection(v, z)(a), np.float64)
    u = v / np.linalg.norm(v)
    np.testing.assert_allclose((p - z) @ u, 0.0, atol=1e-5)  # at the reference along v
    rest = (a - z) - ((a - z) @ u)[..., None] * u
    np.testing.assert_allclose((p - z), rest, rtol=1e-5, atol=1e-5)  # the rest unchanged


def test_p_clarc_model_computes_the_projection_after_the_layer(tmp_path):
    model = _small_model()
    x = np.random.default_rng(6).normal(0.2, 1.0, (4, 6, 6, 3)).astype("float32")
    flags = np.array([True, False, True, False])
    v, clean, art = clarc.artifact_direction(model, "conv", x, flags)
    means = clarc.layer_means(model, "conv", x)
    d = means[flags].mean(0) - means[~flags].mean(0)
    np.testing.assert_allclose(v, d / np.linalg.norm(d), rtol=1e-5)
    corrected = clarc.p_clarc(model, "conv", v, clean)
    head = keras.Model(model.inputs, model.get_layer("conv").output)
    a = np.asarray(head(x), np.float64)
    a = a - ((a - clean) @ v)[..., None] * v
    tail = model.get_layer("dense")(keras.layers.GlobalAveragePooling2D()(
        model.get_layer("conv2")(a.astype("float32"))))
    np.testing.assert_allclose(corrected(x), tail, rtol=1e-4, atol=1e-5)
    corrected.save(tmp_path / "c.keras")
    loaded = tf_lrp.load_model(tmp_path / "c.keras")
    np.testing.assert_allclose(loaded(x), corrected(x), rtol=1e-6, atol=1e-6)
    r = tf_lrp.Analyzer(loaded, "epsilon_plus")(x, target=1)
    assert np.isfinite(r).all() and np.abs(r).max() > 0
    with pytest.raises(InputError, match="some, not all"):
        clarc.artifact_direction(model, "conv", x, np.ones(4, bool))


def test_a_clarc_fine_tunes_only_the_layers_after_it():
    model = _small_model(7)
    before = [w.copy() for w in model.get_weights()]
    rng = np.random.default_rng(8)
    x = rng.normal(size=(16, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 3, 16)
    v, _, art = clarc.artifact_direction(model, "conv", x, np.arange(16) < 5)
    tuned = clarc.a_clarc(model, "conv", v, art, x, y, epochs=2, learning_rate=1e-2)
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)  # the original is untouched
    def names(m):
        return [la.name for la in m.layers if not isinstance(la, keras.layers.InputLayer)]

    assert names(tuned) == names(model)
    np.testing.assert_array_equal(tuned.get_layer("conv").kernel.numpy(), before[0])
    assert not np.allclose(tuned.get_layer("dense").kernel.numpy(),
                           model.get_layer("dense").kernel.numpy())


def test_tagged_scenes_record_the_tag():
    x, y, masks, tagged = artifacts.make_tagged_scenes(40, seed=11, share=0.5)
    assert tagged.any() and (y[tagged] == 0).all()
    box = artifacts.tag_mask()
    np.testing.assert_array_equal(x[tagged][:, box], artifacts.paste_tag(x[:1])[0][box][None]
                                  .repeat(int(tagged.sum()), 0))
    assert not np.array_equal(x[~tagged][:, box].reshape(-1)[:49],
                              artifacts.paste_tag(x[:1])[0][box].reshape(-1)[:49])


def test_project_out_at_two_layers_in_turn():
    """The second layer's direction is computed on the model corrected at the first (its own
    graph: the layers are shared with the original), and the result is both projections."""
    model = _small_model(9)
    x = np.random.default_rng(10).normal(0.1, 1.2, (6, 6, 6, 3)).astype("float32")
    flags = np.array([1, 0, 1, 1, 0, 0], bool)
    corrected, (v1, v2) = clarc.project_out(model, ["conv", "conv2"], x, flags)
    once = clarc.p_clarc(model, "conv", *clarc.artifact_direction(model, "conv", x, flags)[:2])
    w2, z2, _ = clarc.artifact_direction(once, "conv2", x, flags)
    np.testing.assert_allclose(v2, w2, rtol=1e-5)
    a = np.asarray(keras.Model(once.inputs, tf_lrp.keras_adapter.layer_output(once, "conv2"))(x),
                   np.float64)
    a = a - ((a - z2) @ w2)[..., None] * w2
    expected = model.get_layer("dense")(keras.layers.GlobalAveragePooling2D()(
        a.astype("float32")))
    np.testing.assert_allclose(corrected(x), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_large_runs_use_lobpcg_and_the_spectral_map(monkeypatch):
    """Above TSNE_LIMIT samples the clustering and the map avoid ARPACK's shift-invert (a
    factorisation of the Laplacian; scripts/spray_scale.py: 100,000 samples in 28 s, 365 MB)."""
    from sklearn.metrics import adjusted_rand_score

    monkeypatch.setattr(spray, "TSNE_LIMIT", 50)
    rng = np.random.default_rng(12)
    f = rng.normal(0, 0.02, (300, 16))
    truth = np.arange(300) < 110
    f[truth, 0] += 0.5
    f[~truth, 5] += 0.5
    result = spray.spray(f, n_neighbors=10, n_clusters=2)
    assert result.embedding_method == "spectral" and result.embedding.shape == (300, 2)
    assert adjusted_rand_score(truth, result.labels) == 1.0


def test_concept_report_shows_top_concepts_with_reference_crops(tmp_path):
    """SpRAy over CRP concept vectors: clusters by the channel that carries the relevance,
    and the report shows each cluster's top concepts with crops from a concept atlas."""
    from tf_lrp import concepts
    from tf_lrp.visualize.spray import report

    keras.utils.set_random_seed(13)
    x_in = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x_in)
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(x_in, out)
    kernel = np.zeros((3, 3, 2, 4), "float32")
    kernel[1, 1, 0, 0] = kernel[1, 1, 1, 2] = 1.0  # channel 0 reads input 0, channel 2 input 1
    model.get_layer("conv").set_weights([kernel, np.zeros(4, "float32")])
    model.layers[-1].set_weights([np.ones((4, 2), "float32"), np.zeros(2, "float32")])
    rng = np.random.default_rng(14)
    x = np.zeros((20, 8, 8, 2), "float32")
    x[:12, :, :, 0] = rng.uniform(0.5, 1.0, (12, 8, 8))
    x[12:, :, :, 1] = rng.uniform(0.5, 1.0, (8, 8, 8))
    analyzer = tf_lrp.Analyzer(model, "epsilon")
    f = spray.concept_features(analyzer, x, "conv", target=0)
    np.testing.assert_allclose(np.abs(f).sum(1), 1.0, rtol=1e-5)
    result = spray.spray(f, n_neighbors=5, n_clusters=2, embedding="spectral")
    assert set(result.labels[:12]) == {0} and set(result.labels[12:]) == {1}
    atlas = concepts.build_atlas(analyzer, x, ["conv"], tmp_path / "atlas", top_n=3, target=0)
    paths = report(result, [f"s{i}" for i in range(20)], tmp_path / "report", concepts=True,
                   atlas=atlas, layer="conv")
    page = paths["index.html"].read_text()
    assert page.count('class="concept"') == 8 and "Concept 0:" in page  # 4 channels each
    first, second = (page.index(f'<section class="cluster" data-cluster="{k}"') for k in (0, 1))
    assert page.index("Concept", first) == page.index("Concept 0:", first)  # cluster 0: ch. 0
    assert page.index("Concept", second) == page.index("Concept 2:", second)  # cluster 1: ch. 2
    with _in_browser(paths["index.html"]) as (shown, _):  # the crops decode in a real browser
        assert shown.evaluate("document.body.dataset.ready") == "1"
        crops = shown.eval_on_selector_all(".concept img", "i => i.map(e => e.naturalWidth)")
        assert crops and all(w > 0 for w in crops)
