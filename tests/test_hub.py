"""KerasHub models and custom layers written with keras.ops (issue: every KerasHub model).

Tiny configs with random weights; task models go through ``save_to_preset`` and
``from_preset(local_dir)`` (no download).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import tf_lrp
from tf_lrp import composites, rules
from tf_lrp.errors import UnsupportedLayerError

keras_hub = pytest.importorskip("keras_hub")

ATTN0 = composites.AttnLRP(epsilon=0.0)
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "a", "mat",
         "dog", "ran", "far", "away", "quick"]


def _ids(rng, n, length, vocab):
    ids = rng.integers(1, vocab, (n, length)).astype("int32")
    mask = np.ones((n, length), "int32")
    mask[1, length - 2:] = 0
    ids[1, length - 2:] = 0
    return ids, mask


# ----------------------------------------------------------------------------- custom layers
class OpsDense(keras.layers.Layer):
    """A dense layer written with keras.ops and its own weights, then a sublayer."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = keras.layers.Dense(3, name="inner")

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), name="b", initializer="random_normal")

    def call(self, x):
        h = ops.relu(ops.matmul(x, self.w) + self.b)
        return self.inner(ops.pad(h, [[0, 0], [1, 0]]))


class OpsRMSNorm(keras.layers.Layer):
    """RMSNorm as KerasHub's Gemma writes it: x / sqrt(mean(x^2) + eps) * (1 + w); Gemma4
    writes the factor as a power -0.5, Llama as rsqrt."""

    def __init__(self, form="reciprocal", **kwargs):
        super().__init__(**kwargs)
        self.form = form

    def build(self, shape):
        self.scale = self.add_weight(shape=(shape[-1],), name="scale",
                                     initializer="random_normal")

    def call(self, x):
        var = ops.mean(ops.square(x), axis=-1, keepdims=True) + 1e-6
        factor = {"reciprocal": lambda: ops.reciprocal(ops.sqrt(var)),
                  "power": lambda: ops.power(var, -0.5), "rsqrt": lambda: ops.rsqrt(var)}
        return x * factor[self.form]() * (1.0 + self.scale)


class RawTF(keras.layers.Layer):
    def call(self, x):
        return tf.nn.relu(x)  # a raw TensorFlow call: cannot be recorded


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0, 0.6, v.shape).astype("float32"))
    return model


def test_custom_layer_is_flattened_and_explains_like_plain_layers():
    keras.utils.set_random_seed(1)
    x_in = keras.Input((5,))
    custom = keras.Model(x_in, OpsDense(4, name="block")(x_in))
    _seeded(custom)
    # the same computation from plain layers, with the same weights
    y_in = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu", name="d")(y_in)
    h = keras.layers.ZeroPadding1D((1, 0))(keras.layers.Reshape((4, 1))(h))
    plain = keras.Model(y_in, keras.layers.Dense(3, name="inner")(keras.layers.Flatten()(h)))
    block = custom.get_layer("block")
    plain.get_layer("d").set_weights([block.w.numpy(), block.b.numpy()])
    plain.get_layer("inner").set_weights(block.inner.get_weights())
    x = np.random.default_rng(2).normal(size=(4, 5)).astype("float32") * [1, -2, 3, 0.5, 1]
    np.testing.assert_allclose(custom.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    composite = composites.LayerMap([("inner", rules.Gamma(0.3))], default=rules.Zero())
    a = tf_lrp.Analyzer(custom, composite)
    names = [row[0] for row in a.rule_table()]
    assert "block/inner" in names and "block/matmul" in names  # prefixed parts, keyed by name
    r_custom = a(x, target=2)
    r_plain = tf_lrp.Analyzer(plain, composite)(x, target=2)
    np.testing.assert_allclose(r_custom, r_plain, rtol=1e-4, atol=1e-5)
    assert np.abs(r_custom).max() > 1e-3
    # a composite key naming the part by its full name reaches it
    other = tf_lrp.Analyzer(custom, composites.LayerMap([("block/inner", rules.Epsilon(5.0))],
                                                        default=rules.Zero()))
    assert dict((n, r) for n, _, r in other.rule_table())["block/inner"].startswith("Epsilon(")


@pytest.mark.parametrize("form", ["reciprocal", "power", "rsqrt"])
def test_hand_written_rmsnorm_holds_its_factor_constant_like_the_keras_layer(form):
    keras.utils.set_random_seed(3)
    x_in = keras.Input((6,))
    h = keras.layers.Dense(6, name="d1")(x_in)
    out_custom = keras.layers.Dense(2, name="d2")(OpsRMSNorm(form, name="norm")(h))
    custom = _seeded(keras.Model(x_in, out_custom), 4)
    y_in = keras.Input((6,))
    h2 = keras.layers.Dense(6, name="d1")(y_in)
    norm = keras.layers.RMSNormalization(epsilon=1e-6, name="norm")
    out_plain = keras.layers.Dense(2, name="d2")(norm(h2))
    plain = keras.Model(y_in, out_plain)
    for name in ("d1", "d2"):
        plain.get_layer(name).set_weights(custom.get_layer(name).get_weights())
    norm.scale.assign(1.0 + custom.get_layer("norm").scale.numpy())
    x = np.random.default_rng(5).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(custom.predict(x, verbose=0), plain.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)
    a = tf_lrp.Analyzer(custom, rules.Zero())
    table = {n: (c, r) for n, c, r in a.rule_table()}
    assert table["norm/multiply"] == ("NormalizingProduct", "HeldConstant()")
    assert table["norm/square"][1] == "NoRelevance()"  # the variance receives nothing
    np.testing.assert_allclose(a(x, target=1), tf_lrp.Analyzer(plain, rules.Zero())(x, target=1),
                               rtol=1e-4, atol=1e-5)


def test_raw_tf_inside_a_custom_layer_is_refused_with_the_reason():
    x_in = keras.Input((3,))
    model = keras.Model(x_in, keras.layers.Dense(2)(RawTF(name="raw")(x_in)))
    with pytest.raises(UnsupportedLayerError, match="raw.*could not be flattened"):
        tf_lrp.Analyzer(model)


def test_flattening_leaves_no_trace_on_the_model():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((5,))
    model = keras.Model(x_in, OpsDense(4, name="block")(x_in))
    before = len(model.get_layer("block").inner._inbound_nodes)
    tf_lrp.Analyzer(model)
    assert len(model.get_layer("block").inner._inbound_nodes) == before


# ----------------------------------------------------------------------------- tied LM head
def _soft_cap(z):
    return 3.0 * ops.tanh(z / 3.0)


def test_reversible_embedding_reverse_call_is_the_dense_layer_with_the_transposed_table():
    keras.utils.set_random_seed(6)
    ids = keras.Input((4,), dtype="int32")
    emb = keras.layers.ReversibleEmbedding(11, 5, logit_soft_cap=3.0, name="emb")
    h = keras.layers.Dense(5, name="mix")(emb(ids))
    model = keras.Model(ids, emb(h, reverse=True))
    # the same model from plain layers: Embedding, Dense, Dense(kernel = table^T, soft cap)
    ids2 = keras.Input((4,), dtype="int32")
    plain_emb = keras.layers.Embedding(11, 5)
    h2 = keras.layers.Dense(5, name="mix")(plain_emb(ids2))
    head = keras.layers.Dense(11, use_bias=False, activation=_soft_cap)
    plain = keras.Model(ids2, head(h2))
    plain_emb.set_weights(emb.get_weights()[:1])
    plain.get_layer("mix").set_weights(model.get_layer("mix").get_weights())
    head.set_weights([emb.embeddings.numpy().T])
    x = np.random.default_rng(7).integers(0, 11, (2, 4))
    a = tf_lrp.Analyzer(model, rules.Epsilon(0.01))
    table = {n: (c, r) for n, c, r in a.rule_table()}
    assert table["emb:1"][1] == "Epsilon(epsilon=0.01, bias=True)"
    assert table["emb:1/activation"][1] == "Pass()"
    np.testing.assert_allclose(a.predict(x), model.predict(x, verbose=0).reshape(2, -1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.predict(x), plain.predict(x, verbose=0).reshape(2, -1),
                               rtol=1e-5, atol=1e-6)
    target = np.array([2 * 11 + 3, 3 * 11 + 9])
    r = a(x, target=target)
    np.testing.assert_allclose(r, tf_lrp.Analyzer(plain, rules.Epsilon(0.01))(x, target=target),
                               rtol=1e-4, atol=1e-6)
    assert r[0, 2] != 0 and not r[0, 3:].any()  # position 2 reads token 2 only


# ----------------------------------------------------------------------------- KerasHub
def _llama(**kw):
    return keras_hub.models.LlamaBackbone(vocabulary_size=40, num_layers=2, num_query_heads=4,
                                          num_key_value_heads=2, hidden_dim=8,
                                          intermediate_dim=12, **kw)


def test_llama_backbone_with_a_head_logits_equal_and_token_relevance():
    keras.utils.set_random_seed(8)
    b = _llama()
    tok, pm = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    h = b({"token_ids": tok, "padding_mask": pm})
    model = keras.Model([tok, pm], keras.layers.Dense(3)(h[:, 0]))
    ids, mask = _ids(np.random.default_rng(9), 2, 7, 40)
    a = tf_lrp.Analyzer(model, ATTN0)
    r_tok, r_mask = a([ids, mask], target=2)
    built = a.for_shape([(7,), (7,)])
    np.testing.assert_allclose(built.predict([ids, mask]),
                               model.predict([ids, mask], verbose=0), rtol=1e-5, atol=1e-6)
    assert np.isfinite(r_tok).all() and not r_mask.any()
    assert np.abs(r_tok[:, 0]).max() > 0
    # the causal mask: position 0's output reads token 0 only
    np.testing.assert_allclose(r_tok[:, 1:], 0.0, atol=1e-6)
    kinds = {c for _, c, _ in built.rule_table()}
    assert {"AttentionScores", "AttentionSoftmax", "AttentionContext", "NormalizingProduct",
            "GatedProduct"} <= kinds
    # CP-LRP holds the MLP gate constant too (LXT's definition)
    cp = dict((n, r) for n, _, r in tf_lrp.Analyzer(model, "cp_lrp").for_shape(
        [(7,), (7,)]).rule_table())
    assert cp["llama_backbone/transformer_layer_0/multiply"] == "HeldConstant()"


def test_causal_lm_from_a_preset_directory_next_token(tmp_path):
    keras.utils.set_random_seed(10)
    vocab = {w: i for i, w in enumerate(["<|endoftext|>", "a", "b", "Ġ", "d", "Ġa", "Ġb",
                                         "Ġc", "Ġd", "ab", "Ġab"])}
    merges = ["a b", "Ġ a", "Ġ b", "Ġa b"]
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=vocab, merges=merges)
    pre = keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=6)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=11, num_layers=1, num_heads=2,
                                             hidden_dim=8, intermediate_dim=12,
                                             max_sequence_length=16)
    keras_hub.models.GPT2CausalLM(backbone, pre).save_to_preset(str(tmp_path / "gpt2"))
    lm = keras_hub.models.CausalLM.from_preset(str(tmp_path / "gpt2"))
    out = tf_lrp.hub.explain_text(lm, ["ab a b", "a"], composite=ATTN0)
    assert len(out) == 2 and out[0].tokens[0] == "<|endoftext|>"
    x = tf_lrp.hub.preprocess(lm, ["ab a b", "a"])
    logits = keras.ops.convert_to_numpy(lm(x))
    last = x["padding_mask"].sum(1) - 1
    for i, e in enumerate(out):
        pos, token = divmod(e.target, 11)
        assert pos == last[i] and token == logits[i, pos].argmax()
        np.testing.assert_allclose(e.logit, logits[i, pos, token], rtol=1e-5, atol=1e-6)
        assert np.isfinite(e.relevance).all()
        assert not e.relevance[x["padding_mask"][i] == 0].any()  # padding gets nothing


def test_text_classifier_from_a_preset_directory_takes_strings(tmp_path):
    keras.utils.set_random_seed(11)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=WORDS)
    pre = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(WORDS), num_layers=1,
                                             num_heads=2, hidden_dim=8, intermediate_dim=12,
                                             max_sequence_length=8)
    task = keras_hub.models.BertTextClassifier(backbone, 3, preprocessor=pre, activation=None)
    task.save_to_preset(str(tmp_path / "bert"))
    task = keras_hub.models.TextClassifier.from_preset(str(tmp_path / "bert"), num_classes=3)
    out = tf_lrp.hub.explain_text(task, ["the cat sat", "a dog ran far away"], target=1)
    x = tf_lrp.hub.preprocess(task, ["the cat sat", "a dog ran far away"])
    logits = keras.ops.convert_to_numpy(task(x))
    assert out[0].tokens[:4] == ["[CLS]", "the", "cat", "sat"]
    for i, e in enumerate(out):
        assert e.target == 1
        np.testing.assert_allclose(e.logit, logits[i, 1], rtol=1e-5, atol=1e-6)
        assert np.isfinite(e.relevance).all() and np.abs(e.relevance).max() > 0
    # the gradient baselines find the token input through the nested backbone
    gx = tf_lrp.analyzers.GradientXInput(task)(x, target=1)
    names = tf_lrp.analyzers.GradientXInput(task).for_shape(
        [(8,)] * 3).graph.input_names
    g_tok = gx[names.index("token_ids")]
    assert g_tok.shape == (2, 8) and np.abs(g_tok).max() > 0
    # the padding mask is no token input (segment ids are: an Embedding reads them): zero
    assert not gx[names.index("padding_mask")].any()


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_float16"])
def test_sixteen_bit_models_are_explained_in_float32(policy):
    keras.utils.set_random_seed(12)
    backbone = _llama(dtype=policy)
    lm = keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    ids, mask = _ids(np.random.default_rng(13), 2, 5, 40)
    x = {"token_ids": ids, "padding_mask": mask}
    with pytest.warns(UserWarning, match="16-bit"):
        a = tf_lrp.Analyzer(lm, ATTN0)
    r = a(x, target=[4 * 40 + 3, 2 * 40 + 7])
    names = a.for_shape([(5,), (5,)]).graph.input_names
    r_tok = r[names.index("token_ids")]
    assert r_tok.dtype == np.float32 and np.isfinite(r_tok).all()
    # the same weights in a float32 model give the same relevance
    ref = _llama()
    ref.set_weights([np.asarray(w, np.float32) for w in backbone.get_weights()])
    lm32 = keras_hub.models.LlamaCausalLM(backbone=ref, preprocessor=None)
    r32 = tf_lrp.Analyzer(lm32, ATTN0)(x, target=[4 * 40 + 3, 2 * 40 + 7])
    np.testing.assert_allclose(r_tok, r32[names.index("token_ids")], rtol=1e-4, atol=1e-6)


def test_file_and_preset_directory_give_the_live_models_relevance(tmp_path):
    keras.utils.set_random_seed(14)
    lm = keras_hub.models.LlamaCausalLM(backbone=_llama(), preprocessor=None)
    lm.save_to_preset(str(tmp_path / "preset"))
    lm.save(tmp_path / "lm.keras")
    ids, mask = _ids(np.random.default_rng(15), 2, 6, 40)
    x = {"token_ids": ids, "padding_mask": mask}
    target = [5 * 40 + 1, 3 * 40 + 22]
    live = tf_lrp.Analyzer(lm, ATTN0)(x, target=target)
    assert type(tf_lrp.load_model(tmp_path / "preset")).__name__ == "LlamaCausalLM"
    for source in (tmp_path / "preset", tmp_path / "lm.keras"):
        loaded = tf_lrp.Analyzer(source, ATTN0)(x, target=target)
        for a, b in zip(loaded, live):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert max(np.abs(r).max() for r in live) > 0


def test_fused_dot_product_attention_explains_like_the_written_out_attention():
    """GPT-2 with dropout 0 runs keras.ops.dot_product_attention (fused); with dropout > 0 the
    same attention is written out (einsum, masked Softmax layer, einsum). Same weights, same
    relevance."""
    keras.utils.set_random_seed(16)
    size = dict(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
                intermediate_dim=12, max_sequence_length=16)
    models = []
    for dropout in (0.0, 0.1):
        b = keras_hub.models.GPT2Backbone(dropout=dropout, **size)
        tok, pm = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
        h = b({"token_ids": tok, "padding_mask": pm})
        models.append(keras.Model([tok, pm], keras.layers.Dense(3)(h[:, -1])))
    models[1].set_weights(models[0].get_weights())
    ids, mask = _ids(np.random.default_rng(17), 2, 6, 30)
    fused, written = (tf_lrp.Analyzer(m, ATTN0) for m in models)
    tables = [a.for_shape([(6,), (6,)]).rule_table() for a in (fused, written)]
    scores = [[n for n, c, _ in t if c == "AttentionScores"] for t in tables]
    assert all(n.endswith("dot_product_attention/scores") for n in scores[0]) and scores[0]
    assert len(scores[1]) == 2 and not any("dot_product" in n for n in scores[1])
    r_fused, r_written = fused([ids, mask], target=1), written([ids, mask], target=1)
    np.testing.assert_allclose(r_fused[0], r_written[0], rtol=1e-4,
                               atol=1e-5 * np.abs(r_written[0]).max())
    assert np.abs(r_fused[0]).max() > 1e-3


class ProbePooling(keras.layers.Layer):
    """Attention pooling with a learned probe as the query (SigLIP's head)."""

    def __init__(self, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(2, 3, dropout=dropout)

    def build(self, shape):
        self.probe = self.add_weight(shape=(1, 1, shape[-1]), initializer="random_normal")
        self.attention.build((None, 1, shape[-1]), (None, None, shape[-1]))

    def call(self, x):
        probes = ops.repeat(self.probe, ops.shape(x)[0], axis=0)
        return self.attention(probes, x)[:, 0]


def test_fused_attention_with_a_constant_query_explains_like_the_written_out_one():
    """The probe is a constant query: dropout 0 runs the fused op, whose scores are then a
    linear map of the keys (LRP-0); dropout > 0 writes out einsum and Softmax, where the
    einsum with a constant operand is linear too. Same weights, same relevance."""
    keras.utils.set_random_seed(18)
    models = []
    for dropout in (0.0, 0.1):
        x = keras.Input((5, 6))
        models.append(keras.Model(x, keras.layers.Dense(3)(ProbePooling(dropout)(
            keras.layers.Dense(6)(x)))))
    models[1].set_weights([w * 3 for w in models[0].get_weights()])
    models[0].set_weights(models[1].get_weights())
    data = np.random.default_rng(19).normal(0.3, 1.0, (2, 5, 6)).astype("float32")
    fused, written = (tf_lrp.Analyzer(m, ATTN0) for m in models)
    table = fused.for_shape([(5, 6)], batch=2).rule_table()
    assert [c for n, c, _ in table if n.endswith("dot_product_attention/scores")] == ["Einsum"]
    np.testing.assert_allclose(fused.predict(data), models[0](data), rtol=1e-5, atol=1e-6)
    r_fused, r_written = fused(data, target=[0, 2]), written(data, target=[0, 2])
    np.testing.assert_allclose(r_fused, r_written, rtol=1e-4, atol=1e-5 * np.abs(r_written).max())
    assert np.abs(r_fused).max() > 1e-3


def test_integrated_gradients_on_a_decoder_is_complete_in_embedding_space():
    """IG's defining property on a Llama backbone with a head: the token attributions sum to
    f(x) - f(baseline), the baseline being zero embeddings (computed on a copy whose embedding
    table is zero)."""
    keras.utils.set_random_seed(18)

    def build():
        b = _llama()
        tok, pm = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
        return keras.Model([tok, pm], keras.layers.Dense(3)(b({"token_ids": tok,
                                                                "padding_mask": pm})[:, -1]))

    model, zeroed = build(), build()
    zeroed.set_weights(model.get_weights())
    table = next(v for v in zeroed.weights if "token_embedding" in v.path)
    table.assign(np.zeros(table.shape, "float32"))
    ids, mask = _ids(np.random.default_rng(19), 2, 5, 40)
    x = [ids, mask]
    ig = tf_lrp.analyzers.IntegratedGradients(model, steps=128)
    r = ig(x, target=2)
    total = r[0].sum(axis=1)  # the token ids are the model's first input
    expected = (keras.ops.convert_to_numpy(model(x))[:, 2]
                - keras.ops.convert_to_numpy(zeroed(x))[:, 2])
    np.testing.assert_allclose(total, expected, rtol=2e-2, atol=2e-3 * np.abs(expected).max())
    assert np.abs(expected).min() > 1e-3
    smooth = tf_lrp.analyzers.SmoothGrad(model, n_samples=4)(x, target=2)
    assert np.isfinite(smooth[0]).all() and np.abs(smooth[0]).max() > 0


# ----------------------------------------------------------------------------- structure
class GatedUnit(keras.layers.Layer):
    """act(Dense(x)) * Dense(x): a gated linear unit with the given activation."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.gate, self.up = keras.layers.Dense(4, name="gate"), keras.layers.Dense(4, name="up")
        self.act = activation

    def call(self, x):
        return getattr(ops, self.act)(self.gate(x)) * self.up(x)


@pytest.mark.parametrize("activation, kind, rule", [
    ("silu", "GatedProduct", "UniformProduct()"),
    ("sigmoid", "Multiply", "SignalTakesAll()"),  # a gate in [0, 1]: signal-take-all
])
def test_gated_units_by_their_gate(activation, kind, rule):
    keras.utils.set_random_seed(26)
    x_in = keras.Input((3,))
    model = keras.Model(x_in, keras.layers.Dense(2)(GatedUnit(activation, name="glu")(x_in)))
    a = tf_lrp.Analyzer(model, ATTN0)
    row = {n: (c, r) for n, c, r in a.rule_table()}["glu/multiply"]
    assert row == (kind, rule)


class HandAttention(keras.layers.Layer):
    """Single-head attention written with keras.ops; ``values_first`` writes A . v as
    einsum(v, A)."""

    def __init__(self, values_first=False, fused=False, **kwargs):
        super().__init__(**kwargs)
        self.values_first, self.fused = values_first, fused
        self.q, self.k, self.v = (keras.layers.Dense(4, name=n) for n in "qkv")

    def call(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.fused:
            heads = [ops.expand_dims(t, 2) for t in (q, k, v)]
            return ops.squeeze(ops.dot_product_attention(*heads, scale=0.5, is_causal=True), 2)
        s = ops.einsum("bqd,bkd->bqk", q, k) * 0.5
        causal = np.tril(np.ones((5, 5), bool))
        a = ops.softmax(ops.where(causal, s, -1e9), axis=-1)
        if self.values_first:
            return ops.einsum("bkd,bqk->bqd", v, a)
        return ops.einsum("bqk,bkd->bqd", a, v)


@pytest.mark.parametrize("variant", ["values_first", "fused"])
def test_hand_written_attention_variants_explain_alike(variant):
    """The same attention written three ways: A . v, v . A (factors swapped), and the fused
    op with is_causal; CP-LRP (all relevance through the values) tells the factors apart."""
    keras.utils.set_random_seed(27)
    models = []
    for kwargs in ({}, {variant: True}):
        x_in = keras.Input((5, 3))
        h = HandAttention(name="att", **kwargs)(x_in)
        models.append(keras.Model(x_in, keras.layers.Dense(2)(keras.layers.Flatten()(h))))
    models[1].set_weights(models[0].get_weights())
    x = np.random.default_rng(28).normal(size=(2, 5, 3)).astype("float32")
    for composite in (ATTN0, composites.CPLRP(epsilon=0.0)):
        base, other = (tf_lrp.Analyzer(m, composite) for m in models)
        np.testing.assert_allclose(other.predict(x), models[1].predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)
        r0, r1 = base(x, target=1), other(x, target=1)
        np.testing.assert_allclose(r1, r0, rtol=1e-4, atol=1e-5 * np.abs(r0).max())
        assert np.abs(r0).max() > 1e-3


def test_integer_mask_cast_to_float_is_computed_not_aliased():
    tok = keras.Input((4,), dtype="int32")
    mask = keras.Input((4,), dtype="int32")
    h = keras.layers.Embedding(9, 3)(tok) * ops.expand_dims(ops.cast(mask, "float32"), -1)
    model = keras.Model([tok, mask], keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    x = [np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([[1, 1, 1, 0], [1, 0, 1, 0]])]
    a = tf_lrp.Analyzer(model, rules.Zero())
    np.testing.assert_allclose(a.predict(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    r = a(x, target=0)
    assert not r[0][x[1] == 0].any() and np.abs(r[0][x[1] == 1]).max() > 0


def test_position_table_layer_absorbs_its_share_like_a_constant_summand():
    """KerasHub's PositionEmbedding reads its input for the shape only: its output takes its
    share of the sum and passes nothing on (the same as adding the table as a constant)."""
    keras.utils.set_random_seed(29)
    tok = keras.Input((5,), dtype="int32")
    emb = keras.layers.Embedding(9, 4, name="emb")
    e = emb(tok)
    pos_layer = keras_hub.layers.PositionEmbedding(sequence_length=5, name="pos")
    out = keras.layers.Dense(2, name="d")(keras.layers.Flatten()(e + pos_layer(e)))
    model = keras.Model(tok, out)
    table = np.random.default_rng(30).normal(size=(5, 4)).astype("float32")
    pos_layer.position_embeddings.assign(table)
    tok2 = keras.Input((5,), dtype="int32")
    emb2 = keras.layers.Embedding(9, 4)
    plain = keras.Model(tok2, keras.layers.Dense(2, name="d")(keras.layers.Flatten()(
        emb2(tok2) + table[None])))
    emb2.set_weights(emb.get_weights())
    plain.get_layer("d").set_weights(model.get_layer("d").get_weights())
    x = np.random.default_rng(31).integers(0, 9, (2, 5))
    a = tf_lrp.Analyzer(model, rules.Zero())
    assert {n: r for n, _, r in a.rule_table()}["pos"] == "NoRelevance()"
    r = a(x, target=1)
    np.testing.assert_allclose(r, tf_lrp.Analyzer(plain, rules.Zero())(x, target=1),
                               rtol=1e-4, atol=1e-6)
    total = model.predict(x, verbose=0)[:, 1] - model.get_layer("d").bias.numpy()[1]
    assert np.abs(r.sum(1) - total).min() > 1e-3  # the table kept its share


class InverseNorm(keras.layers.Layer):
    def call(self, x):  # a normalizing factor over the signal: not a normalization
        return ops.sqrt(ops.mean(ops.square(x), axis=-1, keepdims=True)) / x


def test_a_quotient_of_a_factor_by_the_signal_is_not_taken_for_a_normalization():
    x_in = keras.Input((3,))
    model = keras.Model(x_in, keras.layers.Dense(2)(InverseNorm(name="inv")(x_in)))
    with pytest.raises(UnsupportedLayerError, match="inv/true_divide"):
        tf_lrp.Analyzer(model, rules.Zero())


class Truncate(keras.layers.Layer):
    def call(self, x):  # a cast to int truncates: not a no-op, even though it comes back
        return ops.cast(ops.cast(x * 2.7, "int32"), "float32")


class RankUp(keras.layers.Layer):
    def call(self, x):  # broadcast a vector to x's shape (free batch), then reduce an axis
        w = ops.broadcast_to(ops.arange(4, dtype="float32"), ops.shape(x))
        return x * ops.sum(w, axis=1, keepdims=True)


@pytest.mark.parametrize("layer", [Truncate, RankUp])
def test_shape_and_dtype_ops_compute_what_the_layer_computes(layer):
    keras.utils.set_random_seed(32)
    x_in = keras.Input((3, 4))
    model = keras.Model(x_in, keras.layers.Dense(2)(keras.layers.Flatten()(
        layer(name="op")(keras.layers.Dense(4)(x_in)))))
    x = np.random.default_rng(33).normal(size=(3, 3, 4)).astype("float32")
    a = tf_lrp.Analyzer(model, rules.Zero())
    assert a.__dict__.get("_deferred") is None  # one graph for every batch size
    np.testing.assert_allclose(a.predict(x), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


class OpsClipConv(keras.layers.Layer):
    """A depthwise convolution and a clip written with keras.ops (a Qwen3.5 linear-attention
    convolution, GPT-OSS's clamped activations)."""

    def build(self, shape):
        self.kernel = self.add_weight(shape=(2, 2, shape[-1], 2), name="kernel")

    def call(self, x):
        return ops.clip(ops.depthwise_conv(x, self.kernel, 1, "valid"), 0.0, 6.0)


def test_ops_convolution_and_clip_explain_like_the_keras_layers():
    keras.utils.set_random_seed(7)
    x_in = keras.Input((5, 4, 3))
    custom = _seeded(keras.Model(x_in, keras.layers.Dense(2, name="d")(keras.layers.Flatten()(
        OpsClipConv(name="clipconv")(x_in)))), 8)
    conv = keras.layers.DepthwiseConv2D(2, depth_multiplier=2, use_bias=False)
    plain = keras.Model(x_in, keras.layers.Dense(2, name="d")(keras.layers.Flatten()(
        keras.layers.ReLU(max_value=6.0)(conv(x_in)))))
    conv.kernel.assign(custom.get_layer("clipconv").kernel.numpy())
    plain.get_layer("d").set_weights(custom.get_layer("d").get_weights())
    x = np.random.default_rng(9).normal(0.4, 1.5, (2, 5, 4, 3)).astype("float32")
    np.testing.assert_allclose(custom(x), plain(x), rtol=1e-5, atol=1e-5)
    a, b = tf_lrp.Analyzer(custom, rules.Zero()), tf_lrp.Analyzer(plain, rules.Zero())
    r = a(x, target=[1, 0])
    np.testing.assert_allclose(r, b(x, target=[1, 0]), rtol=1e-4, atol=1e-5 * np.abs(r).max())
    assert np.abs(r).max() > 1e-3
