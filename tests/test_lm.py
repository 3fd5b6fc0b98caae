"""Explaining what a language model writes (tf_lrp.lm) on the shipped retrieval LM and on a
KerasHub decoder from a preset directory: every row equals a single explanation, a contrast
the difference of two, a span the sum of its rows, the log-probability start a NumPy
reference; the page works in a real browser (Chromium, Playwright)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import tf_lrp
from tf_lrp import composites, lm, retrieval

keras_hub = pytest.importorskip("keras_hub")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "saved_models" / "lm_retrieval.keras"
PROMPT = "k3 v7 k1 v2 k5 v0 ? k1"


@pytest.fixture(scope="module")
def model():
    return tf_lrp.load_model(SHIPPED)


@pytest.fixture(scope="module")
def tokenizer():
    return lm.load_tokenizer(SHIPPED)


def _single(analyzer, ids, length, position, token, vocab):
    x = {"token_ids": np.zeros((1, length), np.int32), "padding_mask": np.zeros((1, length),
                                                                                np.int32)}
    x["token_ids"][0, :len(ids)] = ids
    x["padding_mask"][0, :len(ids)] = 1
    r = analyzer(x, target=[position * vocab + token])
    order = analyzer.for_shape([(length,), (length,)]).graph.input_names
    return np.asarray(r[order.index("token_ids")])[0]


def test_shipped_model_answers_and_rows_equal_single_explanations(model, tokenizer):
    g = lm.explain_generation(model, PROMPT, max_new_tokens=3, tokenizer=tokenizer)
    assert g.tokens[g.prompt_length:] == ["v2", "</s>"]  # stops at the end token
    assert g.relevance.shape == (2, len(g.token_ids)) and g.relevance.dtype == np.float32
    analyzer = lm._analyzer(model, None)
    vocab = len(retrieval.VOCABULARY)
    for t in range(2):
        pos = g.prompt_length - 1 + t
        single = _single(analyzer, g.token_ids[:-1], 32, pos, g.token_ids[pos + 1], vocab)
        np.testing.assert_allclose(g.relevance[t, :pos + 1], single[:pos + 1], rtol=1e-4,
                                   atol=1e-5 * np.abs(single).max())
        assert not g.relevance[t, pos + 1:].any()
    logits = model.predict({"token_ids": g.token_ids[None, :-1],
                            "padding_mask": np.ones((1, len(g.token_ids) - 1), "int32")},
                           verbose=0)[0]
    np.testing.assert_allclose(g.scores, logits[[g.prompt_length - 1, g.prompt_length],
                                                g.token_ids[g.prompt_length:]], rtol=1e-4)
    # the answer's evidence, the queried pair's value, gets the most relevance
    assert int(np.argmax(g.relevance[0])) == 4


def test_contrast_is_the_difference_and_span_the_sum(model, tokenizer):
    base = lm.explain_generation(model, "copy c a f b |", max_new_tokens=5, tokenizer=tokenizer,
                                 composite=composites.AttnLRP(epsilon=0.0))
    other = lm.explain_generation(model, "copy c a f b |", continuation=base.generated,
                                  tokenizer=tokenizer, composite=composites.AttnLRP(epsilon=0.0),
                                  target=("contrast", "d"))
    d = tokenizer.token_to_id("d")
    analyzer = lm._analyzer(model, composites.AttnLRP(epsilon=0.0))
    vocab = len(retrieval.VOCABULARY)
    for t in (0, 3):
        pos = base.prompt_length - 1 + t
        r_d = _single(analyzer, base.token_ids[:-1], 32, pos, d, vocab)
        expected = base.relevance[t] - np.append(r_d, 0)[:len(base.token_ids)]
        expected[pos + 1:] = 0
        np.testing.assert_allclose(other.relevance[t], expected, rtol=1e-4,
                                   atol=1e-5 * np.abs(expected).max())
    span = lm.explain_generation(model, "copy c a f b |", continuation=base.generated,
                                 tokenizer=tokenizer, span=(1, 4),
                                 composite=composites.AttnLRP(epsilon=0.0))
    assert span.relevance.shape == (1, len(base.token_ids)) and span.rows == [(1, 4)]
    np.testing.assert_allclose(span.relevance[0], base.relevance[1:4].sum(0), rtol=1e-4,
                               atol=1e-5 * np.abs(span.relevance).max())
    np.testing.assert_allclose(span.scores[0], base.scores[1:4].sum(), rtol=1e-5)


def test_log_probability_start_against_numpy(model, tokenizer):
    """The log-odds coefficients (1 at the token, -softmax of the others elsewhere) from an
    explicit NumPy computation; the row equals the weighted sum of single explanations."""
    g = lm.explain_generation(model, PROMPT, max_new_tokens=1, tokenizer=tokenizer,
                              target="logprob")
    ids = g.token_ids
    x = {"token_ids": ids[None, :-1], "padding_mask": np.ones((1, len(ids) - 1), "int32")}
    logits = model.predict(x, verbose=0)[0, -1].astype(np.float64)
    a = int(ids[-1])
    q = np.exp(np.delete(logits, a) - np.delete(logits, a).max())
    q /= q.sum()
    w = -np.insert(q, a, 0.0)
    w[a] = 1.0
    np.testing.assert_allclose(lm.log_odds_weights(logits, a), w, rtol=1e-6, atol=1e-9)
    logp = logits[a] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    np.testing.assert_allclose(g.scores[0], logp, rtol=1e-4, atol=1e-6)
    analyzer = lm._analyzer(model, None)
    vocab = len(retrieval.VOCABULARY)
    pos = g.prompt_length - 1
    expected = sum(w[v] * _single(analyzer, ids[:-1], 32, pos, v, vocab)
                   for v in range(vocab))
    np.testing.assert_allclose(g.relevance[0, :pos + 1], expected[:pos + 1], rtol=1e-3,
                               atol=1e-4 * np.abs(expected).max())


def test_bad_targets_are_refused(model, tokenizer):
    with pytest.raises(tf_lrp.errors.InputError, match="target must be"):
        lm.explain_generation(model, PROMPT, 1, tokenizer=tokenizer, target="probability")
    with pytest.raises(tf_lrp.errors.InputError, match="not in the vocabulary"):
        lm.explain_generation(model, "k3 zebra", 1, tokenizer=tokenizer)
    with pytest.raises(tf_lrp.errors.InputError, match="span"):
        lm.explain_generation(model, PROMPT, 1, tokenizer=tokenizer, span=(0, 3))


def test_keras_hub_causal_lm_from_a_preset_directory(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(31)
    task = keras_hub.models.GemmaCausalLM(keras_hub.models.GemmaBackbone(
        vocabulary_size=40, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=8, intermediate_dim=12, head_dim=4), preprocessor=None)
    rng = np.random.default_rng(32)
    for v in task.weights:
        v.assign(rng.normal(0, 0.5, v.shape).astype(v.dtype))
    task.save_to_preset(str(tmp_path / "preset"))
    prompt = np.array([2, 17, 5, 9, 33], np.int32)
    g = lm.explain_generation(tmp_path / "preset", prompt, max_new_tokens=4, pad_to=8)
    assert g.tokens is None and len(g.generated) == 4 and g.relevance.shape == (4, 9)
    loaded = tf_lrp.load_model(tmp_path / "preset")
    ids = g.token_ids
    logits = loaded.predict({"token_ids": ids[None], "padding_mask": np.ones((1, 9), "int32")},
                            verbose=0)[0]
    assert (np.argmax(logits[4:8], -1) == ids[5:]).all()  # greedy
    np.testing.assert_allclose(g.scores, logits[np.arange(4, 8), ids[5:]], rtol=1e-4,
                               atol=1e-5)
    assert np.isfinite(g.relevance).all() and np.abs(g.relevance[:, :5]).max() > 0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_generation_page_in_a_real_browser(model, tokenizer, tmp_path):
    """The page loads without script errors; clicking a generated token recolours the earlier
    tokens by that token's row."""
    browser_path = _chromium()
    if browser_path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    g = lm.explain_generation(model, "copy c a f b |", max_new_tokens=5, tokenizer=tokenizer)
    paths = g.save(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(paths)
    meta = json.loads(paths["generation.json"].read_text())
    assert meta["tokens"] == g.tokens and meta["prompt_length"] == g.prompt_length
    np.testing.assert_array_equal(np.load(paths["relevance.npy"]), g.relevance)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(paths["generation.html"].as_uri())
        assert page.evaluate("document.body.dataset.selected") == str(len(g.relevance) - 1)

        def backgrounds():
            return page.eval_on_selector_all(
                "#text .tok", "els => els.map(e => getComputedStyle(e).backgroundColor)")

        before = backgrounds()
        page.click('#text .tok[data-row="0"]')
        after = backgrounds()
        assert page.evaluate("document.body.dataset.selected") == "0"
        browser.close()
    assert not errors, errors
    assert before != after

    def expected(row):
        r = g.relevance[row] / np.abs(g.relevance[row]).max()
        c = np.round(255 * (1 - np.abs(r))).astype(int)
        return [f"rgb(255, {v}, {v})" if x >= 0 else f"rgb({v}, {v}, 255)"
                for x, v in zip(r, c)]

    # the page's colours agree with the row within one level of rounding of the printed values
    def close(a, b):
        num = [[int(t) for t in s[4:-1].split(",")] for s in (a, b)]
        return all(abs(x - y) <= 1 for x, y in zip(*num))

    assert all(close(a, b) for a, b in zip(after, expected(0)))
    assert all(close(a, b) for a, b in zip(before, expected(len(g.relevance) - 1)))


def test_generate_command_writes_the_matrix(tmp_path):
    from tf_lrp.cli.parser import main

    out = tmp_path / "gen"
    code = main(["generate", str(SHIPPED), "--prompt", "copy c a f |", "--max-new-tokens", "6",
                 "--out", str(out), "--target", "logprob", "-q"])
    assert code == 0
    meta = json.loads((out / "generation.json").read_text())
    assert meta["tokens"][meta["prompt_length"]:] == ["c", "a", "f", "</s>"]
    matrix = np.load(out / "relevance.npy")
    rows = (out / "relevance.csv").read_text().splitlines()
    assert rows[0].split(",")[1:] == [f"{i}:{w}" for i, w in enumerate(meta["tokens"])]
    csv = np.array([[float(v) for v in r.split(",")[1:]] for r in rows[1:]])
    np.testing.assert_allclose(csv, matrix, rtol=1e-5, atol=1e-6)
    assert [r.split(",")[0] for r in rows[1:]] == ["c", "a", "f", "</s>"]
    assert main(["generate", str(SHIPPED), "--prompt", "k1 v2 ? k1", "--span", "x",
                 "--out", str(out)]) == 2


def test_attention_rollout_against_the_layers_own_attention_weights():
    """Rollout from tf_lrp's forward values equals rollout computed from the weights
    MultiHeadAttention returns itself (return_attention_scores=True), layer by layer."""
    import keras

    from tf_lrp.rollout import attention_rollout

    keras.utils.set_random_seed(41)
    x_in = keras.Input((5, 6))
    layers = [keras.layers.MultiHeadAttention(3, 4, name=f"mha{i}") for i in range(2)]
    h = x_in
    for layer in layers:
        h = h + layer(h, h)
    model = keras.Model(x_in, keras.layers.Dense(2)(h[:, -1]))
    x = np.random.default_rng(42).normal(0.2, 1.3, (2, 5, 6)).astype("float32")
    analyzer = tf_lrp.Analyzer(model, "attn_lrp")
    got = attention_rollout(analyzer, x)
    h, expected = x, None
    for layer in layers:
        out, w = layer(h, h, return_attention_scores=True)
        mixed = 0.5 * np.asarray(w, np.float64).mean(1) + 0.5 * np.eye(5)
        mixed /= mixed.sum(-1, keepdims=True)
        expected = mixed if expected is None else mixed @ expected
        h = h + np.asarray(out)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)


def test_text_prompt_through_a_keras_hub_preprocessor_and_the_command(tmp_path):
    """A GPT-2 CausalLM preset with its BPE tokenizer: the prompt runs through the model's
    own preprocessor (start token added), tokens come back as text, the CLI takes the preset."""
    import keras

    from tf_lrp.cli.parser import main

    keras.utils.set_random_seed(51)
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "a", "b", "\u0120", "d", "\u0120a",
                                         "\u0120b", "\u0120c", "\u0120d", "ab", "\u0120ab"])}
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab,
                                               merges=["a b", "\u0120 a", "\u0120 b", "\u0120a b"])
    pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=12)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=11, num_layers=1, num_heads=2,
                                             hidden_dim=8, intermediate_dim=12,
                                             max_sequence_length=16)
    keras_hub.models.GPT2CausalLM(backbone, pre).save_to_preset(str(tmp_path / "gpt2"))
    g = lm.explain_generation(tmp_path / "gpt2", "ab a b", max_new_tokens=3, pad_to=16,
                              target=("contrast", 4))
    assert g.tokens[:4] == ["<|endoftext|>", "ab", " a", " b"] and g.prompt_length == 4
    assert g.relevance.shape == (len(g.generated), len(g.token_ids))
    task = tf_lrp.load_model(tmp_path / "gpt2")
    n = len(g.token_ids) - 1
    y = np.asarray(task({"token_ids": g.token_ids[None, :n],
                         "padding_mask": np.ones((1, n), "int32")}))[0]  # no preprocessing
    rows = np.arange(3, 3 + len(g.generated))
    np.testing.assert_allclose(g.scores, y[rows, g.generated] - y[rows, 4], rtol=1e-4, atol=1e-5)
    assert main(["generate", str(tmp_path / "gpt2"), "--prompt", "ab a", "--max-new-tokens", "2",
                 "--out", str(tmp_path / "out"), "-q"]) == 0
    assert json.loads((tmp_path / "out" / "generation.json").read_text())["prompt_length"] == 3
    with pytest.raises(tf_lrp.errors.InputError, match="exceed the model's longest sequence, 16"):
        lm.explain_generation(tmp_path / "gpt2", "ab a b", max_new_tokens=13)


def test_no_retrace_per_prompt_length_or_target_count(model, tokenizer):
    """Prompts of different lengths in one 32-token bucket, and different numbers of generated
    tokens, run through one traced backward function."""
    analyzer = lm._analyzer(model, None)
    lm.explain_generation(model, "copy c a |", max_new_tokens=3, tokenizer=tokenizer)
    built = analyzer.for_shape([(32,), (32,)])
    count = built._seeded_fn.experimental_get_tracing_count()
    lm.explain_generation(model, "copy c a f b e |", max_new_tokens=7, tokenizer=tokenizer)
    lm.explain_generation(model, PROMPT, max_new_tokens=1, tokenizer=tokenizer, span=None,
                          target="logprob")
    assert built._seeded_fn.experimental_get_tracing_count() == count == 1
