"""The engine on sequence models: unrolled recurrent layers reproduce Keras, attention layers are
rewritten into parts that reproduce Keras, conservation where the rules conserve, and clear
errors for what is not supported. (Values against independent references: test_sequence.py.)"""

import keras
import numpy as np
import pytest
from keras import layers as kl

import tf_lrp
from tf_lrp import composites, rules
from tf_lrp.errors import UnsupportedLayerError

LRP0 = composites.LayerMap(default=rules.Zero())


def _model(build, shape=(5, 3), dtype="float32", seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape, dtype=dtype)
    return keras.Model(inp, build(inp))


def _x(n=4, shape=(5, 3), seed=1):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype("float32")


def _sums(analyzer, x):
    y = analyzer.predict(x)
    r = analyzer(x).reshape(len(x), -1).sum(1)
    return r, y.max(1)


RECURRENT_CASES = {
    "lstm": lambda: kl.LSTM(6, use_bias=False),
    "lstm_seq_backwards": lambda: kl.LSTM(4, use_bias=False, return_sequences=True,
                                          go_backwards=True),
    "gru": lambda: kl.GRU(5, use_bias=False),
    "gru_reset_before": lambda: kl.GRU(5, use_bias=False, reset_after=False,
                                       return_sequences=True),
    "simple_rnn": lambda: kl.SimpleRNN(4, use_bias=False, return_sequences=True),
    "bi_lstm_concat": lambda: kl.Bidirectional(kl.LSTM(3, use_bias=False,
                                                       return_sequences=True)),
    "bi_gru_sum": lambda: kl.Bidirectional(kl.GRU(3, use_bias=False), merge_mode="sum"),
    "bi_lstm_ave": lambda: kl.Bidirectional(kl.LSTM(3, use_bias=False), merge_mode="ave"),
}


@pytest.mark.parametrize("case", sorted(RECURRENT_CASES))
def test_recurrent_forward_matches_keras_and_lrp0_conserves(case):
    layer = RECURRENT_CASES[case]()
    model = _model(lambda t: kl.Dense(3, use_bias=False)(kl.Flatten()(layer(t))))
    x = _x()
    analyzer = tf_lrp.Analyzer(model, LRP0)
    np.testing.assert_allclose(analyzer.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
    r, y = _sums(analyzer, x)
    # bias-free, LRP-0 everywhere, gates get nothing and sums split in proportion: conserves
    np.testing.assert_allclose(r, y, rtol=1e-4, atol=1e-6)


def test_lstm_epsilon_absorbs_and_bias_absorbs():
    model = _model(lambda t: kl.Dense(3, bias_initializer="random_normal")(
        kl.LSTM(6, bias_initializer="random_normal")(t)))
    x = _x()
    r0, y = _sums(tf_lrp.Analyzer(model, LRP0), x)
    assert np.all(np.abs(r0 - y) > 1e-4)  # biases take their share
    r_eps, _ = _sums(tf_lrp.Analyzer(model, rules.Epsilon(1.0)), x)
    assert np.all(np.abs(r_eps) < np.abs(r0))  # epsilon absorbs


def test_return_state_and_initial_state_get_relevance():
    keras.utils.set_random_seed(0)
    seq, h0, c0 = keras.Input((4, 3)), keras.Input((5,)), keras.Input((5,))
    out, h, c = kl.LSTM(5, use_bias=False, return_state=True)(seq, initial_state=[h0, c0])
    model = keras.Model([seq, h0, c0], kl.Dense(2, use_bias=False)(kl.Concatenate()([out, c])))
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(3, 4, 3)).astype("float32"), rng.normal(size=(3, 5)).astype("float32"),
          rng.normal(size=(3, 5)).astype("float32")]
    analyzer = tf_lrp.Analyzer(model, LRP0)
    np.testing.assert_allclose(analyzer.predict(xs), model(xs).numpy(), rtol=1e-5, atol=1e-6)
    r = analyzer(xs, target=1)
    total = sum(a.reshape(3, -1).sum(1) for a in r)
    np.testing.assert_allclose(total, analyzer.predict(xs)[:, 1], rtol=1e-4, atol=1e-6)
    assert np.abs(r[1]).sum() > 0 and np.abs(r[2]).sum() > 0  # the initial state explains too


def test_variable_length_traces_once():
    model = _model(lambda t: kl.Dense(2)(kl.GRU(4)(t)), shape=(None, 3))
    analyzer = tf_lrp.Analyzer(model, "attn_lrp")
    for length in (3, 7, 11):
        x = _x(2, (length, 3))
        np.testing.assert_allclose(analyzer.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
        assert analyzer(x).shape == (2, length, 3)
    assert analyzer._explain_fn.experimental_get_tracing_count() == 1


def test_masked_tokens_get_nothing_and_equal_the_unpadded_sequence():
    def build(t):
        e = kl.Embedding(30, 6, mask_zero=True)(t)
        return kl.Dense(3)(kl.LSTM(5)(e))

    padded = _model(build, shape=(8,), dtype="int32")
    short = _model(build, shape=(5,), dtype="int32")
    short.set_weights(padded.get_weights())
    tokens = np.array([[3, 7, 1, 9, 4, 0, 0, 0], [5, 2, 8, 11, 6, 0, 0, 0]])
    a_long = tf_lrp.Analyzer(padded, "attn_lrp")
    a_short = tf_lrp.Analyzer(short, "attn_lrp")
    r_long, r_short = a_long(tokens, target=1), a_short(tokens[:, :5], target=1)
    assert r_long.shape == tokens.shape and r_long.dtype == np.float32
    np.testing.assert_array_equal(r_long[:, 5:], 0.0)
    np.testing.assert_allclose(r_long[:, :5], r_short, rtol=1e-5, atol=1e-6)


def _mha_block(t, heads=2, key_dim=4, value_dim=3, bias=False):
    a = kl.MultiHeadAttention(heads, key_dim, value_dim=value_dim, use_bias=bias)(t, t)
    return kl.Dense(3, use_bias=False)(kl.Flatten()(a))


def _cp_lrp_matches_keras_and_conserves(model, x):
    """CP-LRP with epsilon 0 on a bias-free attention model: Keras's output, and sum R = logit."""
    cp = tf_lrp.Analyzer(model, composites.CPLRP(epsilon=0.0))
    np.testing.assert_allclose(cp.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
    r, y = _sums(cp, x)
    np.testing.assert_allclose(r, y, rtol=1e-4, atol=1e-6)
    return cp


def test_multi_head_attention_forward_and_cp_lrp_conserves():
    cp = _cp_lrp_matches_keras_and_conserves(_model(_mha_block), _x())
    names = [n for n, _, _ in cp.rule_table()]
    assert [n.split("/")[-1] for n in names if "/" in n] == [
        "query", "key", "value", "scores", "softmax", "context", "output"]


def test_attn_lrp_differs_from_cp_lrp_only_through_the_scores():
    model = _model(_mha_block)
    x = _x()
    attn = tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=0.0))
    cp = tf_lrp.Analyzer(model, composites.CPLRP(epsilon=0.0))
    lw_a, lw_c = attn.layerwise(x, target=0), cp.layerwise(x, target=0)
    name = next(n for n in lw_a if n.endswith("/context"))
    np.testing.assert_allclose(lw_a[name], lw_c[name], rtol=1e-5, atol=1e-7)  # same above
    value = next(n for n in lw_a if n.endswith("/value"))
    # AttnLRP gives the values half of each A.v term; CP-LRP all of it
    np.testing.assert_allclose(lw_a[value], 0.5 * lw_c[value], rtol=1e-4, atol=1e-7)
    scores = next(n for n in lw_a if n.endswith("/scores"))
    assert scores not in lw_c or np.abs(lw_c[scores]).max() == 0
    assert np.abs(lw_a[scores]).max() > 0


def test_masked_transformer_block_matches_keras_and_ignores_padding():
    def build(t):
        e = kl.Embedding(30, 8, mask_zero=True)(t)
        a = kl.MultiHeadAttention(2, 4)(e, e)
        h = kl.LayerNormalization()(kl.Add()([e, a]))
        return kl.Dense(3)(kl.GlobalAveragePooling1D()(h))

    model = _model(build, shape=(7,), dtype="int32")
    tokens = np.array([[4, 9, 2, 0, 0, 0, 0], [7, 1, 3, 5, 8, 6, 0]])
    analyzer = tf_lrp.Analyzer(model, "attn_lrp")
    np.testing.assert_allclose(analyzer.predict(tokens), model(tokens).numpy(), rtol=1e-5,
                               atol=1e-6)
    r = analyzer(tokens)
    np.testing.assert_array_equal(r[0, 3:], 0.0)
    np.testing.assert_array_equal(r[1, 6:], 0.0)
    assert np.all(np.abs(r[0, :3]) > 0)


def test_dot_attention_with_causal_mask_matches_keras():
    """A learnt scale other than 1 (it multiplies the scores), and the causal mask: the first
    position's output reads only the first token."""
    def build(t):
        a = kl.Attention(use_scale=True)([t, t], use_causal_mask=True)
        return kl.Dense(2, use_bias=False)(kl.Flatten()(a))

    model = _model(build)
    model.layers[1].set_weights([np.array(2.7, "float32")])
    _cp_lrp_matches_keras_and_conserves(model, _x())

    def first(t):
        a = kl.Attention(use_scale=True)([t, t], use_causal_mask=True)
        return kl.Dense(2, use_bias=False)(a[:, 0])

    first_only = _model(first)
    first_only.layers[1].set_weights([np.array(2.7, "float32")])
    r = _cp_lrp_matches_keras_and_conserves(first_only, _x())(_x())
    assert np.abs(r[:, 0]).min() > 0
    np.testing.assert_allclose(r[:, 1:], 0.0, atol=1e-7 * np.abs(r).max())


def test_attention_causal_mask_masked_query_and_returned_weights_match_keras():
    """``use_causal_mask=True``: the first position's output reads only the first token (its
    relevance stays there); a masked query (``mask_zero``) leaves the MHA output masked, which
    a pooling layer right after it must honour; ``return_attention_scores=True`` with the
    weights used downstream."""
    def causal(t):
        a = kl.MultiHeadAttention(2, 4, value_dim=3, use_bias=False)(t, t, use_causal_mask=True)
        return kl.Dense(3, use_bias=False)(a[:, 0])

    model = _model(causal)
    r = _cp_lrp_matches_keras_and_conserves(model, _x())(_x())
    assert np.abs(r[:, 0]).min() > 0
    np.testing.assert_allclose(r[:, 1:], 0.0, atol=1e-7 * np.abs(r).max())

    def pooled(t):
        e = kl.Embedding(30, 8, mask_zero=True)(t)
        return kl.Dense(3)(kl.GlobalAveragePooling1D()(kl.MultiHeadAttention(2, 4)(e, e)))

    def dot_flat(t):  # Keras's Attention zeroes the outputs of masked queries
        e = kl.Embedding(30, 8, mask_zero=True)(t)
        return kl.Dense(3)(kl.Flatten()(kl.Attention()([e, e])))

    tokens = np.array([[4, 9, 2, 0, 0, 0], [7, 1, 3, 5, 8, 6]])
    for build in (pooled, dot_flat):
        model = _model(build, shape=(6,), dtype="int32")
        analyzer = tf_lrp.Analyzer(model, "cp_lrp")
        np.testing.assert_allclose(analyzer.predict(tokens), model(tokens).numpy(), rtol=1e-5,
                                   atol=1e-6)

    def with_weights(t, multi_head):
        if multi_head:
            a, w = kl.MultiHeadAttention(2, 4, use_bias=False)(t, t,
                                                                return_attention_scores=True)
        else:
            a, w = kl.Attention()([t, t], return_attention_scores=True)
        joined = kl.Concatenate()([kl.Flatten()(a), kl.Flatten()(w)])
        return kl.Dense(3, use_bias=False)(joined)

    for multi_head in (True, False):
        model, x = _model(lambda t, m=multi_head: with_weights(t, m)), _x()
        cp = tf_lrp.Analyzer(model, composites.CPLRP(epsilon=0.0))
        np.testing.assert_allclose(cp.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
        assert np.isfinite(cp(x)).all()


def test_einsum_dense_takes_any_rule_like_its_dense_equivalent():
    keras.utils.set_random_seed(2)
    inp = keras.Input((5, 3))
    e = kl.EinsumDense("abc,cd->abd", output_shape=(5, 4), bias_axes="d")(inp)
    model = keras.Model(inp, kl.Dense(2)(kl.Flatten()(kl.ReLU()(e))))
    inp2 = keras.Input((5, 3))
    d = kl.Dense(4)(inp2)
    twin = keras.Model(inp2, kl.Dense(2)(kl.Flatten()(kl.ReLU()(d))))
    twin.set_weights(model.get_weights())
    x = _x(3)
    for rule in (rules.Gamma(0.3), rules.AlphaBeta(2.0, 1.0), rules.Epsilon(0.1)):
        a, b = tf_lrp.Analyzer(model, rule)(x), tf_lrp.Analyzer(twin, rule)(x)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


@pytest.mark.parametrize("layer, words", [
    (lambda: kl.LSTM(3, stateful=True), ["stateful", "stateful=False"]),
    (lambda: kl.RNN(kl.StackedRNNCells([kl.LSTMCell(3), kl.LSTMCell(3)])),
     ["StackedRNNCells", "supported"]),
    (lambda: kl.AdditiveAttention(), ["AdditiveAttention", "MultiHeadAttention"]),
])
def test_unsupported_sequence_layers_are_named(layer, words):
    keras.utils.set_random_seed(0)
    inp = keras.Input((5, 3), batch_size=2)
    made = layer()
    out = made([inp, inp]) if isinstance(made, kl.AdditiveAttention) else made(inp)
    model = keras.Model(inp, kl.Dense(2)(kl.Flatten()(out)))
    with pytest.raises(UnsupportedLayerError) as err:
        tf_lrp.Analyzer(model)
    text = str(err.value)
    assert all(w in text for w in words), text
    assert text.count(type(made).__name__ + " (") == 1  # each class once


def test_gradient_methods_work_in_embedding_space():
    """On Embedding -> Flatten -> Dense (linear, bias-free) LRP-0, gradient x embedding and
    Integrated Gradients from the zero embedding all equal the per-token contribution
    ``sum_d e_td w_td,c``, written out here."""
    from tf_lrp import analyzers, baselines

    model = _model(lambda t: kl.Dense(4, use_bias=False)(kl.Flatten()(kl.Embedding(12, 3)(t))),
                   shape=(5,), dtype="int32")
    tokens = np.array([[1, 5, 7, 0, 11], [3, 3, 2, 9, 4]])
    table, kernel = (w.numpy() for w in (model.layers[1].embeddings, model.layers[3].kernel))
    e = table[tokens]  # (2, 5, 3)
    want = np.einsum("btd,btd->bt", e, kernel[:, 2].reshape(5, 3)[None])
    for method in (tf_lrp.Analyzer(model, LRP0), analyzers.GradientXInput(model),
                   analyzers.Gradient(model), baselines.IntegratedGradients(model, steps=4)):
        got = method(tokens, target=2)
        assert got.shape == tokens.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=type(method).__name__)
    pad = baselines.IntegratedGradients(model, steps=4, baseline_token=0)(tokens, target=2)
    want_pad = np.einsum("btd,td->bt", e - table[0], kernel[:, 2].reshape(5, 3))
    np.testing.assert_allclose(pad, want_pad, rtol=1e-5, atol=1e-6)


def test_positional_constant_shares_relevance_in_proportion():
    """``x + pos`` with a constant: the token embedding keeps its share ``e / (e + pos)`` of
    every component's relevance (LRP-0 on the sum), the constant absorbs the rest."""
    pos = np.random.default_rng(5).normal(size=(1, 4, 3)).astype("float32")
    model = _model(lambda t: kl.Dense(2, use_bias=False)(kl.Flatten()(
        kl.Embedding(9, 3)(t) + pos)), shape=(4,), dtype="int32")
    tokens = np.array([[1, 2, 3, 4], [8, 7, 6, 5]])
    table, kernel = model.layers[1].embeddings.numpy(), model.layers[-1].kernel.numpy()
    e = table[tokens]
    total = e + pos
    r_sum = total.reshape(2, -1) * kernel[:, 1]  # LRP-0 on the Dense: relevance of each sum
    want = (r_sum.reshape(e.shape) * e / total).sum(-1)
    got = tf_lrp.Analyzer(model, LRP0)(tokens, target=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_unrolled_keras_lstm_explains_like_the_looped_one():
    looped = _model(lambda t: kl.Dense(2)(kl.LSTM(4)(t)))
    unrolled = _model(lambda t: kl.Dense(2)(kl.LSTM(4, unroll=True)(t)))
    unrolled.set_weights(looped.get_weights())
    x = _x()
    a, b = (tf_lrp.Analyzer(m, "attn_lrp")(x) for m in (looped, unrolled))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(a).max())


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_dot_product_attention_op_grouped_masked_causal_matches_keras(causal, masked):
    """``keras.ops.dot_product_attention`` with 4 query heads over 2 key/value heads (grouped
    query attention: keys and values repeated), a mask computed from the input, and
    ``is_causal``: Keras's output (masked scores must vanish in the softmax), and CP-LRP
    conserves the logit."""
    from keras import ops

    def build(x):
        q = kl.Reshape((5, 4, 3))(kl.Dense(12, use_bias=False)(x))  # head size 3 != 2 heads
        k = kl.Reshape((5, 2, 3))(kl.Dense(6, use_bias=False)(x))
        v = kl.Reshape((5, 2, 3))(kl.Dense(6, use_bias=False)(x))
        mask = ops.expand_dims(ops.expand_dims(x[..., 0] > -0.3, 1), 1) if masked else None
        a = ops.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
        return kl.Dense(3, use_bias=False)(kl.Flatten()(a))

    model = _model(build, shape=(5, 6), seed=3)
    x = _x(shape=(5, 6), seed=2)
    if masked:
        assert (x[..., 0] <= -0.3).any() and (x[..., 0] > -0.3).any(1).all()
    _cp_lrp_matches_keras_and_conserves(model, x)
