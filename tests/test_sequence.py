"""Sequences and attention (issue 9) against the independent reference tests/reference_sequence.py.

Two parts:

- ``test_reference_*``: the reference itself. Its forward passes reproduce Keras' layers
  (random weights, uneven sizes, signed inputs) and its LRP-0 on bias-free layers conserves
  (LSTM, GRU, SimpleRNN, attention with CP-LRP); AttnLRP's softmax rule does not, by exactly
  the amount its formula says. These need no engine support.
- ``test_engine_*``: tiny Functional models explained by ``tf_lrp.Analyzer`` and compared with
  the reference to 1e-5 (relative, plus 1e-5 of the largest magnitude for entries that are
  small through cancellation), and conservation of bias-free blocks under LRP-0-type rules.

Models are float64 (as in tests/test_rules.py: the comparison is then about the rule, not the
round-off); one Embedding model runs in float32, the dtype users run. Sizes are uneven
(features 3, units 5, 2 heads, key_dim 3 != value_dim 2), inputs signed, biases nonzero,
epsilon 0.01 rather than the default, targets per sample: a wrong gate order, a wrong
denominator, a missing 1/2 or a relevance sent to a gate shows.

Public API assumed: ``tf_lrp.Analyzer(model, composite_or_rule, **kwargs)(x, target=...)``,
``rules.Epsilon``, ``rules.Zero``, ``rules.Gamma``, ``composites.LayerMap``,
``composites.AttnLRP(epsilon=...)`` (registered "attn_lrp"), ``composites.CPLRP(epsilon=...)``
(registered "cp_lrp"). A rule given alone applies to every layer with weights; Embedding
relevance is the sum over the embedding axis whatever the rule.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import keras
import numpy as np
import pytest
import reference as ref
import reference_sequence as rs
from keras_dtype import default_dtype

import tf_lrp
from tf_lrp import composites, rules

L = keras.layers
SEED = 909
DTYPE = "float64"
N = 4            # samples per batch
FEATURES = 3     # input features per step
UNITS = 5        # recurrent units
CLASSES = 3
EPS = 0.01       # epsilon of the rules compared (not the default 1e-6)
VOCAB = 9        # tokens 1..8; 0 is padding for mask_zero


# ----------------------------------------------------------------------------- model building


def seeded(build, seed: int, dtype: str = DTYPE) -> keras.Model:
    """``build()`` under ``dtype`` with seeded random weights (nonzero biases)."""
    with default_dtype(dtype):
        model = build()
    return ref.randomize_weights(model, seed)


def recurrent(kind: str, return_sequences: bool, use_bias: bool = True) -> L.Layer:
    if kind == "lstm":
        return L.LSTM(UNITS, return_sequences=return_sequences, use_bias=use_bias, name="rnn")
    if kind == "gru":
        return L.GRU(UNITS, return_sequences=return_sequences, use_bias=use_bias, name="rnn")
    if kind == "gru_reset_before":
        return L.GRU(UNITS, return_sequences=return_sequences, use_bias=use_bias,
                     reset_after=False, name="rnn")
    if kind == "simple_rnn":
        return L.SimpleRNN(UNITS, return_sequences=return_sequences, use_bias=use_bias,
                           name="rnn")
    if kind == "bidi_lstm":
        return L.Bidirectional(L.LSTM(UNITS - 1, return_sequences=return_sequences,
                                      use_bias=use_bias), name="rnn")
    raise ValueError(kind)


@functools.cache
def rnn_model(kind: str, steps: int = 3, return_sequences: bool = False, use_bias: bool = True,
              embedding: bool = False, mask_zero: bool = False,
              dtype: str = DTYPE) -> keras.Model:
    """Input -> [Embedding] -> recurrent layer -> [Flatten] -> Dense(3)."""

    def build():
        if embedding:
            inputs = keras.Input((None,), dtype="int32")
            y = L.Embedding(VOCAB, FEATURES, mask_zero=mask_zero, name="emb")(inputs)
        else:
            inputs = y = keras.Input((steps, FEATURES))
        y = recurrent(kind, return_sequences, use_bias)(y)
        if return_sequences:
            y = L.Flatten()(y)
        return keras.Model(inputs, L.Dense(CLASSES, use_bias=use_bias, name="dense")(y))

    return seeded(build, SEED + len(kind) + 10 * steps + 100 * return_sequences, dtype)


@functools.cache
def mha_model(residual: bool = False, use_bias: bool = True, embedding: bool = False,
              steps: int = 3, dim: int = 4) -> keras.Model:
    """Input -> [Embedding] -> MultiHeadAttention(x, x) (2 heads, key_dim 3, value_dim 2)
    -> [Add([x, attention])] -> Flatten -> Dense(3)."""

    def build():
        if embedding:
            inputs = keras.Input((steps,), dtype="int32")
            x = L.Embedding(VOCAB, dim, name="emb")(inputs)
        else:
            inputs = x = keras.Input((steps, dim))
        y = L.MultiHeadAttention(2, 3, value_dim=2, use_bias=use_bias, name="mha")(x, x)
        if residual:
            y = L.Add()([x, y])
        y = L.Dense(CLASSES, use_bias=use_bias, name="dense")(L.Flatten()(y))
        return keras.Model(inputs, y)

    return seeded(build, SEED + 7 + residual + 2 * use_bias + 4 * embedding)


@functools.cache
def cross_attention_model() -> keras.Model:
    """Two inputs: queries (2 steps, 3 features) attend to a context (4 steps, 5 features)."""

    def build():
        q_in, kv_in = keras.Input((2, 3)), keras.Input((4, 5))
        y = L.MultiHeadAttention(2, 3, value_dim=2, name="mha")(q_in, kv_in)
        return keras.Model([q_in, kv_in], L.Dense(CLASSES, name="dense")(L.Flatten()(y)))

    return seeded(build, SEED + 31)


@functools.cache
def dot_attention_model() -> keras.Model:
    """x -> Dense query and Dense value -> keras.layers.Attention([q, v]) (key = value)."""

    def build():
        x = keras.Input((3, 4))
        q = L.Dense(3, name="q_proj")(x)
        v = L.Dense(3, name="v_proj")(x)
        y = L.Attention(name="att")([q, v])
        return keras.Model(x, L.Dense(CLASSES, name="dense")(L.Flatten()(y)))

    return seeded(build, SEED + 41)


@functools.cache
def encoder_model() -> keras.Model:
    """A Transformer encoder block: MultiHeadAttention, residual Add, LayerNormalization,
    feed-forward Dense(gelu) -> Dense, residual Add, LayerNormalization; then Flatten, Dense."""

    def build():
        x = keras.Input((3, 4))
        a = L.MultiHeadAttention(2, 3, value_dim=2, name="mha")(x, x)
        n1 = L.LayerNormalization(name="ln1")(L.Add()([x, a]))
        f = L.Dense(4, name="ff2")(L.Dense(6, activation="gelu", name="ff1")(n1))
        n2 = L.LayerNormalization(name="ln2")(L.Add()([n1, f]))
        return keras.Model(x, L.Dense(CLASSES, name="dense")(L.Flatten()(n2)))

    model = seeded(build, SEED + 51)
    for name in ("ln1", "ln2"):  # gamma around 1, beta nonzero
        layer = model.get_layer(name)
        rng = np.random.default_rng(SEED + len(name))
        layer.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4)])
    return model


def floats(shape, seed: int = SEED + 1) -> np.ndarray:
    """Signed inputs in [-1.5, 1.5]."""
    return np.random.default_rng(seed).uniform(-1.5, 1.5, (N, *shape))


def tokens(steps: int, seed: int = SEED + 2) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, VOCAB, (N, steps)).astype("int32")


def targets(n: int = N, seed: int = SEED + 3) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, CLASSES, n)]


def weights(layer) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]


# ----------------------------------------------------------------------------- references of the models


class Explained(NamedTuple):
    logits: np.ndarray      # (N, classes)
    hidden: np.ndarray      # output of the recurrent / attention layer
    relevance: object       # at the model input(s)
    leftover: np.ndarray    # (N,) relevance reaching the zero initial state (RNN) or the
    #                         softmax gap (AttnLRP), 0 otherwise


def rnn_trace(layer, x, mask):
    """Reference forward of one recurrent layer (not Bidirectional)."""
    w = weights(layer)
    kernel, rec, bias = w[0], w[1], (w[2] if len(w) > 2 else None)
    if isinstance(layer, L.LSTM):
        return rs.lstm_forward(x, kernel, rec, bias, mask)
    if isinstance(layer, L.GRU):
        return rs.gru_forward(x, kernel, rec, bias, layer.reset_after, mask)
    if isinstance(layer, L.SimpleRNN):
        return rs.simple_rnn_forward(x, kernel, rec, bias, mask)
    raise TypeError(type(layer).__name__)


def rnn_backward(layer, trace, R_out, eps):
    w = weights(layer)
    kernel, rec, bias = w[0], w[1], (w[2] if len(w) > 2 else None)
    fn = {L.LSTM: rs.lstm_relevance, L.GRU: rs.gru_relevance,
          L.SimpleRNN: rs.simple_rnn_relevance}[type(layer)]
    return fn(trace, kernel, rec, bias, R_out, eps, layer.return_sequences)


def recurrent_forward(layer, x, mask):
    """``(traces, output)``; Bidirectional: the backward layer reads the reversed sequence,
    its output sequence is flipped back, the two are concatenated (merge_mode 'concat')."""
    if not isinstance(layer, L.Bidirectional):
        trace = rnn_trace(layer, x, mask)
        return trace, trace.output(layer.return_sequences)
    seq = layer.return_sequences
    fwd = rnn_trace(layer.forward_layer, x, mask)
    bwd = rnn_trace(layer.backward_layer, x[:, ::-1], None if mask is None else mask[:, ::-1])
    y_b = bwd.output(seq)[:, ::-1] if seq else bwd.output(seq)
    return (fwd, bwd), np.concatenate([fwd.output(seq), y_b], axis=-1)


def recurrent_backward(layer, traces, R_out, eps):
    if not isinstance(layer, L.Bidirectional):
        return rnn_backward(layer, traces, R_out, eps)
    u = layer.forward_layer.units
    R_f, R_b = R_out[..., :u], R_out[..., u:]
    if layer.return_sequences:
        R_b = R_b[:, ::-1]
    rx_f, left_f = rnn_backward(layer.forward_layer, traces[0], R_f, eps)
    rx_b, left_b = rnn_backward(layer.backward_layer, traces[1], R_b, eps)
    return rx_f + rx_b[:, ::-1], left_f + left_b


def explain_rnn(model, x, target, eps: float, dense_eps: float | None = None) -> Explained:
    """Reference for :func:`rnn_model`: epsilon ``eps`` in the recurrent layer (linear maps
    and cell split), ``dense_eps`` (default ``eps``) on the Dense layer."""
    dense_eps = eps if dense_eps is None else dense_eps
    layer, dense = model.get_layer("rnn"), model.get_layer("dense")
    names = [lay.name for lay in model.layers]
    mask = None
    if "emb" in names:
        emb = model.get_layer("emb")
        seq = rs.embedding_forward(x, weights(emb)[0])
        mask = (np.asarray(x) != 0) if emb.mask_zero else None
    else:
        seq = np.asarray(x, dtype=np.float64)
    traces, y = recurrent_forward(layer, seq, mask)
    flat = y.reshape(len(y), -1)
    wd = weights(dense)
    bd = wd[1] if len(wd) > 1 else None
    logits = rs.dense_forward(flat, wd[0], bd)
    R_flat = rs.dense_relevance(flat, wd[0], bd, rs.output_relevance(logits, target), dense_eps)
    R_seq, left = recurrent_backward(layer, traces, R_flat.reshape(y.shape), eps)
    R_in = rs.embedding_relevance(R_seq) if "emb" in names else R_seq
    return Explained(logits, y, R_in, left)


def explain_mha(model, x, target, eps: float, variant: str) -> Explained:
    """Reference for :func:`mha_model` (self-attention) and :func:`cross_attention_model`."""
    mha, dense = model.get_layer("mha"), model.get_layer("dense")
    w = rs.MHAWeights.from_list(weights(mha), use_bias=mha.use_bias)
    names = [lay.name for lay in model.layers]
    cross = isinstance(x, list | tuple)
    if cross:
        query, value = (np.asarray(v, dtype=np.float64) for v in x)
    elif "emb" in names:
        query = value = rs.embedding_forward(x, weights(model.get_layer("emb"))[0])
    else:
        query = value = np.asarray(x, dtype=np.float64)
    trace = rs.mha_forward(query, value, w)
    residual = any(isinstance(lay, L.Add) for lay in model.layers)
    y = query + trace.output if residual else trace.output
    flat = y.reshape(len(y), -1)
    wd = weights(dense)
    bd = wd[1] if len(wd) > 1 else None
    logits = rs.dense_forward(flat, wd[0], bd)
    R_y = rs.dense_relevance(flat, wd[0], bd, rs.output_relevance(logits, target),
                             eps).reshape(y.shape)
    R_skip = np.zeros_like(query)
    if residual:
        R_skip, R_y = rs.add_relevance([query, trace.output], R_y)
    r = rs.mha_relevance(trace, w, R_y, eps, variant)
    if cross:
        return Explained(logits, trace.output, [r["query"], r["key"] + r["value"]],
                         r["softmax_gap"])
    R_x = R_skip + r["query"] + r["key"] + r["value"]
    if "emb" in names:
        R_x = rs.embedding_relevance(R_x)
    return Explained(logits, trace.output, R_x, r["softmax_gap"])


def explain_dot_attention(model, x, target, eps: float) -> Explained:
    """Reference for :func:`dot_attention_model` under AttnLRP."""
    (wq, bq), (wv, bv) = weights(model.get_layer("q_proj")), weights(model.get_layer("v_proj"))
    wd, bd = weights(model.get_layer("dense"))
    x = np.asarray(x, dtype=np.float64)
    q, v = x @ wq + bq, x @ wv + bv
    heads = rs.dot_attention_forward(q, v)
    ctx = np.stack([h.ctx for h in heads])
    flat = ctx.reshape(len(x), -1)
    logits = rs.dense_forward(flat, wd, bd)
    R_ctx = rs.dense_relevance(flat, wd, bd, rs.output_relevance(logits, target),
                               eps).reshape(ctx.shape)
    R_q, R_v = np.zeros_like(q), np.zeros_like(v)
    gap = np.zeros(len(x))
    for i, head in enumerate(heads):
        r = rs.attention_head_relevance(head, R_ctx[i], eps)
        R_q[i], R_v[i] = r["q"], r["k"] + r["v"]  # key = value: one tensor, summed
        gap[i] = r["x"].sum() - r["A"].sum()
    R_x = np.zeros_like(x)
    for a, w_, b_, R in ((x, wq, bq, R_q), (x, wv, bv, R_v)):
        R_x += rs.dense_relevance(a.reshape(-1, a.shape[-1]), w_, b_,
                                  R.reshape(-1, R.shape[-1]), eps).reshape(x.shape)
    return Explained(logits, ctx, R_x, gap)


def close(got, want) -> None:
    ref.assert_relevance_close(np.asarray(got), want)


def layer_norm_linear_relevance(x, gamma, beta, ln_eps, r, eps):
    """LayerNormalization with ``1/sigma`` held constant (AttnLRP Prop. 3.4, as LXT does) by the
    epsilon rule: ``y = x W + beta`` per token, ``W_ij = (delta_ij - 1/d) gamma_j / sigma``."""
    d = x.shape[-1]
    flat, rf = x.reshape(-1, d), r.reshape(-1, d)
    sigma = np.sqrt(flat.var(axis=1, keepdims=True) + ln_eps)
    out = np.zeros_like(flat)
    centering = np.eye(d) - 1.0 / d
    for n in range(len(flat)):
        w = centering * gamma[None, :] / sigma[n]
        y = flat[n] @ w + beta
        s = rf[n] / (y + np.where(y >= 0, eps, -eps))
        out[n] = flat[n] * (w @ s)
    return out.reshape(x.shape)


def explain_encoder(model, x, target, eps: float, ln: str = "identity") -> Explained:
    """Reference for :func:`encoder_model` under AttnLRP: LayerNormalization by the identity
    (``ln="identity"``) or linearized with epsilon (``ln="linear"``), GELU by the identity,
    residual Adds in proportion, Dense layers (per token) and attention as above."""
    x = np.asarray(x, dtype=np.float64)
    n, t, d = x.shape
    w = rs.MHAWeights.from_list(weights(model.get_layer("mha")))
    (w1, b1), (w2, b2) = weights(model.get_layer("ff1")), weights(model.get_layer("ff2"))
    wd, bd = weights(model.get_layer("dense"))
    g1, be1 = weights(model.get_layer("ln1"))
    g2, be2 = weights(model.get_layer("ln2"))
    eps1 = model.get_layer("ln1").epsilon
    trace = rs.mha_forward(x, x, w)
    y1 = x + trace.output
    n1 = rs.layer_norm_forward(y1, g1, be1, eps1)
    z1 = n1.reshape(-1, d) @ w1 + b1
    f1 = rs.gelu(z1)
    f2 = (f1 @ w2 + b2).reshape(n, t, d)
    y2 = n1 + f2
    n2 = rs.layer_norm_forward(y2, g2, be2, model.get_layer("ln2").epsilon)
    logits = rs.dense_forward(n2.reshape(n, -1), wd, bd)
    R_n2 = rs.dense_relevance(n2.reshape(n, -1), wd, bd, rs.output_relevance(logits, target),
                              eps).reshape(n2.shape)
    R_y2 = R_n2 if ln == "identity" else layer_norm_linear_relevance(
        y2, g2, be2, model.get_layer("ln2").epsilon, R_n2, eps)
    R_n1_skip, R_f2 = rs.add_relevance([n1, f2], R_y2)
    R_f1 = rs.dense_relevance(f1, w2, b2, R_f2.reshape(-1, d), eps)  # GELU: identity below
    R_n1 = R_n1_skip + rs.dense_relevance(n1.reshape(-1, d), w1, b1, R_f1,
                                          eps).reshape(n1.shape)
    R_y1 = R_n1 if ln == "identity" else layer_norm_linear_relevance(y1, g1, be1, eps1, R_n1, eps)
    R_skip, R_att = rs.add_relevance([x, trace.output], R_y1)
    r = rs.mha_relevance(trace, w, R_att, eps)
    return Explained(logits, n2, R_skip + r["query"] + r["key"] + r["value"], r["softmax_gap"])


# ============================================================================= the reference itself

RNN_KINDS = ["lstm", "gru", "gru_reset_before", "simple_rnn", "bidi_lstm"]


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("kind", RNN_KINDS)
def test_reference_rnn_forward_matches_keras(kind, steps, return_sequences):
    """Layer output and logits of the reference equal Keras' (gate order, bias layout,
    reset_after, Bidirectional's reversal)."""
    model = rnn_model(kind, steps, return_sequences)
    x = floats((steps, FEATURES))
    got = explain_rnn(model, x, 0, 0.0)
    hidden = keras.Model(model.input, model.get_layer("rnn").output)(x)
    np.testing.assert_allclose(got.hidden, np.asarray(hidden), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_reference_masked_forward_matches_keras(kind):
    """Embedding(mask_zero=True): padded steps (at the end or the start) carry the state."""
    model = rnn_model(kind, embedding=True, mask_zero=True, return_sequences=False)
    x = padded_tokens()
    got = explain_rnn(model, x, 0, 0.0)
    np.testing.assert_allclose(got.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("residual", [False, True])
def test_reference_mha_forward_matches_keras(residual, use_bias):
    model = mha_model(residual, use_bias)
    x = floats((3, 4))
    got = explain_mha(model, x, 0, 0.0, "attn_lrp")
    att = keras.Model(model.input, model.get_layer("mha").output)(x)
    np.testing.assert_allclose(got.hidden, np.asarray(att), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_reference_cross_and_dot_attention_forward_match_keras():
    model = cross_attention_model()
    x = [floats((2, 3)), floats((4, 5), seed=SEED + 5)]
    np.testing.assert_allclose(explain_mha(model, x, 0, 0.0, "attn_lrp").logits,
                               np.asarray(model(x)), rtol=1e-5, atol=1e-5)
    model = dot_attention_model()
    x = floats((3, 4))
    np.testing.assert_allclose(explain_dot_attention(model, x, 0, 0.0).logits,
                               np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_reference_encoder_forward_matches_keras():
    model = encoder_model()
    x = floats((3, 4))
    got = explain_encoder(model, x, 0, 0.0)
    np.testing.assert_allclose(got.logits, np.asarray(model(x)), rtol=1e-5, atol=1e-5)


def test_reference_lstm_one_step_closed_form():
    """One step from the zero state: c = i g, so the cell split gives g all of R(h) (LRP-0)
    and R(x)_j = x_j sum_k W_c[j, k] R_k / z_g,k, with z_g = x W_c + b_c (Arras et al. 2017,
    the first step of their recursion, written without the loop)."""
    rng = np.random.default_rng(5)
    kernel, rec, bias = rng.normal(size=(3, 20)), rng.normal(size=(5, 20)), rng.normal(size=20)
    x = rng.normal(size=(6, 1, 3))
    R_h = rng.normal(size=(6, 5))
    trace = rs.lstm_forward(x, kernel, rec, bias)
    got, left = rs.lstm_relevance(trace, kernel, rec, bias, R_h, 0.0)
    z_g = x[:, 0] @ kernel[:, 10:15] + bias[10:15]
    want = x[:, 0] * ((R_h / z_g) @ kernel[:, 10:15].T)
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    np.testing.assert_array_equal(left, 0.0)
    # epsilon: the cell split already absorbs: R(g) = i g / (c + eps sign c) R
    got_eps, _ = rs.lstm_relevance(trace, kernel, rec, bias, R_h, 0.1)
    c = trace.c[:, 1]
    R_g = c / (c + 0.1 * np.where(c >= 0, 1, -1)) * R_h
    want = x[:, 0] * ((R_g / (z_g + 0.1 * np.where(z_g >= 0, 1, -1))) @ kernel[:, 10:15].T)
    np.testing.assert_allclose(got_eps[:, 0], want, rtol=1e-12)


def test_reference_lstm_three_steps_written_out():
    """Three steps unrolled by hand (Arras et al.'s recursion, eps 0.05, one sample) equal
    the reference loop, and relevance from a later step's h_{t-1} is added to h_{t-1}'s."""
    rng = np.random.default_rng(6)
    W, U, b = rng.normal(size=(2, 12)), rng.normal(size=(3, 12)), rng.normal(size=12)
    x = rng.normal(size=(1, 3, 2))
    R_out = rng.normal(size=(1, 3, 3))  # return_sequences: every h_t gets relevance
    eps = 0.05
    tr = rs.lstm_forward(x, W, U, b)
    got, _ = rs.lstm_relevance(tr, W, U, b, R_out, eps, return_sequences=True)

    def st(z):
        return z + eps * (1.0 if z >= 0 else -1.0)

    u, T = 3, 3
    h, c = tr.h[0], tr.c[0]
    Rh = np.zeros((T + 1, u))
    Rc = np.zeros((T + 1, u))
    Rh[1:] = R_out[0]
    want = np.zeros((T, 2))
    for t in (2, 1, 0):
        z = x[0, t] @ W + h[t] @ U + b
        i, f, g = 1 / (1 + np.exp(-z[:3])), 1 / (1 + np.exp(-z[3:6])), np.tanh(z[6:9])
        for k in range(u):
            r_cell = Rc[t + 1, k] + Rh[t + 1, k]
            Rc[t, k] += f[k] * c[t, k] / st(c[t + 1, k]) * r_cell
            r_g = i[k] * g[k] / st(c[t + 1, k]) * r_cell
            for j in range(2):
                want[t, j] += x[0, t, j] * W[j, 6 + k] * r_g / st(z[6 + k])
            for j in range(u):
                Rh[t, j] += h[t, j] * U[j, 6 + k] * r_g / st(z[6 + k])
    np.testing.assert_allclose(got[0], want, rtol=1e-12)


def test_reference_gru_one_step_written_out():
    """One GRU step (reset_after=True) with a nonzero state, entries written out."""
    rng = np.random.default_rng(7)
    W, U, b = rng.normal(size=(2, 9)), rng.normal(size=(3, 9)), rng.normal(size=(2, 9))
    x = rng.normal(size=(1, 2, 2))
    R_h = rng.normal(size=(1, 3))
    eps = 0.03
    tr = rs.gru_forward(x, W, U, b)
    got, _ = rs.gru_relevance(tr, W, U, b, R_h, eps)  # two steps; check the last one
    hp, hn, x1 = tr.h[0, 1], tr.h[0, 2], x[0, 1]
    z = 1 / (1 + np.exp(-(x1 @ W[:, :3] + b[0, :3] + hp @ U[:, :3] + b[1, :3])))
    r = 1 / (1 + np.exp(-(x1 @ W[:, 3:6] + b[0, 3:6] + hp @ U[:, 3:6] + b[1, 3:6])))
    a = x1 @ W[:, 6:] + b[0, 6:] + r * (hp @ U[:, 6:] + b[1, 6:])
    hh = np.tanh(a)

    def st(v):
        return v + eps * np.where(v >= 0, 1.0, -1.0)

    R_hh = (1 - z) * hh / st(hn) * R_h[0]
    want = np.array([sum(x1[j] * W[j, 6 + k] * R_hh[k] / st(a[k]) for k in range(3))
                     for j in range(2)])
    np.testing.assert_allclose(got[0, 1], want, rtol=1e-12)


@pytest.mark.parametrize("kind", RNN_KINDS)
def test_reference_rnn_lrp0_conserves_without_bias(kind):
    """Bias-free, LRP-0 everywhere: sum R(x) = logit per sample, nothing left at the zero
    initial state."""
    model = rnn_model(kind, 3, return_sequences=True, use_bias=False)
    x = floats((3, FEATURES))
    target = targets()
    got = explain_rnn(model, x, target, 0.0)
    logit = got.logits[np.arange(N), target]
    np.testing.assert_allclose(got.relevance.sum(axis=(1, 2)), logit, rtol=1e-10)
    np.testing.assert_allclose(got.leftover, 0.0, atol=1e-12)
    # with epsilon, relevance is absorbed (here: the sums differ)
    absorbed = explain_rnn(model, x, target, 0.1).relevance.sum(axis=(1, 2))
    assert np.max(np.abs(absorbed - logit)) > 1e-3 * np.max(np.abs(logit))


def test_reference_cp_lrp_conserves_without_bias():
    """Bias-free self-attention with a residual, CP-LRP with epsilon 0: sum R = logit."""
    model = mha_model(residual=True, use_bias=False)
    x = floats((3, 4))
    target = targets()
    got = explain_mha(model, x, target, 0.0, "cp_lrp")
    logit = got.logits[np.arange(N), target]
    np.testing.assert_allclose(got.relevance.sum(axis=(1, 2)), logit, rtol=1e-10)
    np.testing.assert_array_equal(got.leftover, 0.0)


def test_reference_attn_lrp_softmax_gap():
    """AttnLRP with epsilon 0 on a bias-free block: every step conserves except the softmax
    (Prop. 3.1 is a Taylor expansion whose bias term is dropped):
    sum R(x) = logit + sum over heads and query rows of
    [sum_i x_i R_i - (sum_i s_i x_i) sum_j R_j - sum_j R_j]. The gap is not small here."""
    model = mha_model(residual=True, use_bias=False)
    x = floats((3, 4))
    target = targets()
    got = explain_mha(model, x, target, 0.0, "attn_lrp")
    logit = got.logits[np.arange(N), target]
    np.testing.assert_allclose(got.relevance.sum(axis=(1, 2)), logit + got.leftover, rtol=1e-10)
    # the gap from the formula, head by head
    w = rs.MHAWeights.from_list(weights(model.get_layer("mha")), use_bias=False)
    trace = rs.mha_forward(x, x, w)
    wd = weights(model.get_layer("dense"))[0]
    y = x + trace.output
    R_y = rs.dense_relevance(y.reshape(N, -1), wd, None,
                             rs.output_relevance(got.logits, target), 0.0).reshape(y.shape)
    R_att = rs.add_relevance([x, trace.output], R_y)[1]
    R_ctx = rs.epsilon_linear([(trace.context.reshape(N * 3, -1), w.wo.reshape(4, -1))],
                              trace.output.reshape(N * 3, -1), R_att.reshape(N * 3, -1),
                              0.0)[0].reshape(trace.context.shape)
    gap = np.zeros(N)
    for i in range(N):
        for h in range(2):
            head = trace.heads[i][h]
            R_A = rs.bilinear_relevance(head.A, head.v, head.ctx, R_ctx[i, :, h], 0.0)[0]
            gap[i] += (rs.softmax_relevance_sum(head.x, head.A, R_A) - R_A.sum(-1)).sum()
    np.testing.assert_allclose(got.leftover, gap, rtol=1e-10)
    assert np.min(np.abs(gap)) > 1e-3 * np.max(np.abs(logit))


def test_reference_variants_are_distinguishable():
    """The comparisons below could not pass with a neighbouring rule: epsilon 0 vs 0.01,
    AttnLRP vs CP-LRP, return_sequences on vs off, reset_after on vs off."""
    target = targets()

    def gap(a, b):
        return np.max(np.abs(a - b)) / np.max(np.abs(a))

    x = floats((3, FEATURES))
    m = rnn_model("lstm", 3, False)
    assert gap(explain_rnn(m, x, target, 0.0).relevance,
               explain_rnn(m, x, target, EPS).relevance) > 1e-3
    xa = floats((3, 4))
    m = mha_model()
    assert gap(explain_mha(m, xa, target, EPS, "attn_lrp").relevance,
               explain_mha(m, xa, target, EPS, "cp_lrp").relevance) > 1e-2
    # the bilinear products' epsilon matters (the spec: the composite's epsilon)
    w = rs.MHAWeights.from_list(weights(m.get_layer("mha")))
    tr = rs.mha_forward(xa, xa, w)
    R = np.ones_like(tr.output)
    a = rs.mha_relevance(tr, w, R, EPS)["query"]
    # the products' epsilon is the composite's, on the scaled scores (q / sqrt(d)) . k: a
    # default 1e-6 there, or epsilon on the unscaled product (eps * sqrt(d)), would show
    for product_eps in (1e-6, EPS * np.sqrt(w.key_dim), EPS / np.sqrt(w.key_dim)):
        b = _mha_query_relevance_product_eps(tr, w, R, EPS, product_eps)
        assert gap(a, b) > 1e-2, product_eps


def _mha_query_relevance_product_eps(trace, w, R_out, eps, product_eps):
    """Query relevance with a different epsilon in the two bilinear products (for the check
    above only)."""
    n, tq, H, dv = trace.context.shape
    R_ctx = rs.epsilon_linear([(trace.context.reshape(n * tq, -1), w.wo.reshape(H * dv, -1))],
                              trace.output.reshape(n * tq, -1), R_out.reshape(n * tq, -1),
                              eps)[0].reshape(trace.context.shape)
    R_q = np.zeros_like(trace.q)
    for i in range(n):
        for h in range(H):
            r = rs.attention_head_relevance(trace.heads[i][h], R_ctx[i, :, h], product_eps)
            R_q[i, :, h] = r["q"]
    return rs._project_relevance(trace.query, w.wq, trace.q, R_q, eps)


# ============================================================================= engine vs reference
# These fail until the engine supports recurrent layers and attention (issue 9).


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("steps", [1, 3])
def test_engine_lstm_epsilon(steps, return_sequences):
    model = rnn_model("lstm", steps, return_sequences)
    x, target = floats((steps, FEATURES)), targets()
    got = tf_lrp.Analyzer(model, rules.Epsilon(EPS))(x, target=target)
    close(got, explain_rnn(model, x, target, EPS).relevance)


def test_engine_lstm_lrp0():
    model = rnn_model("lstm", 3, False)
    x, target = floats((3, FEATURES)), targets()
    got = tf_lrp.Analyzer(model, rules.Zero())(x, target=target)
    close(got, explain_rnn(model, x, target, 0.0).relevance)


def test_engine_lstm_layer_map():
    """Rules by class: epsilon 0.01 in the LSTM (linear maps and cell split), 0.1 on Dense."""
    model = rnn_model("lstm", 3, True)
    x, target = floats((3, FEATURES)), targets()
    comp = composites.LayerMap([(L.LSTM, rules.Epsilon(EPS)), (L.Dense, rules.Epsilon(0.1))])
    got = tf_lrp.Analyzer(model, comp)(x, target=target)
    close(got, explain_rnn(model, x, target, EPS, dense_eps=0.1).relevance)


@pytest.mark.parametrize("kind", ["gru", "gru_reset_before", "simple_rnn"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_engine_gru_and_simple_rnn(kind, return_sequences):
    model = rnn_model(kind, 3, return_sequences)
    x, target = floats((3, FEATURES)), targets()
    got = tf_lrp.Analyzer(model, rules.Epsilon(EPS))(x, target=target)
    close(got, explain_rnn(model, x, target, EPS).relevance)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_engine_bidirectional_lstm(return_sequences):
    model = rnn_model("bidi_lstm", 3, return_sequences)
    x, target = floats((3, FEATURES)), targets()
    got = tf_lrp.Analyzer(model, rules.Epsilon(EPS))(x, target=target)
    close(got, explain_rnn(model, x, target, EPS).relevance)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before", "simple_rnn", "bidi_lstm"])
def test_engine_rnn_lrp0_conserves_without_bias(kind):
    """Bias-free, LRP-0: sum R(x) = logit per sample (1e-5), and equal to the reference."""
    model = rnn_model(kind, 3, return_sequences=True, use_bias=False)
    x, target = floats((3, FEATURES)), targets()
    got = np.asarray(tf_lrp.Analyzer(model, rules.Zero())(x, target=target))
    logit = np.asarray(model(x))[np.arange(N), target]
    np.testing.assert_allclose(got.sum(axis=(1, 2)), logit, rtol=1e-5)
    close(got, explain_rnn(model, x, target, 0.0).relevance)


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_engine_lstm_gamma_conserves_without_bias(kind):
    """Another rule on the recurrent class (generalized gamma, no stabilizer: two terms, fused
    into one operation where the step's kernels allow it) still conserves on a bias-free layer
    (gamma conserves per output, the cell split is proportional), and it is really applied
    (the result differs from LRP-0)."""
    model = rnn_model(kind, 3, return_sequences=True, use_bias=False)
    x, target = floats((3, FEATURES)), targets()
    comp = composites.LayerMap([((L.LSTM, L.GRU), rules.Gamma(0.25, stabilizer=0.0)),
                                (L.Dense, rules.Zero())])
    got = np.asarray(tf_lrp.Analyzer(model, comp)(x, target=target))
    logit = np.asarray(model(x))[np.arange(N), target]
    np.testing.assert_allclose(got.sum(axis=(1, 2)), logit, rtol=1e-5)
    lrp0 = explain_rnn(model, x, target, 0.0).relevance
    assert np.max(np.abs(got - lrp0)) > 1e-3 * np.max(np.abs(lrp0))


def test_engine_embedding_lstm_tokens_float32():
    """Integer tokens -> Embedding -> LSTM -> Dense in float32: one float32 value per token,
    the sum over the embedding axis of the relevance at the embedding output."""
    model = rnn_model("lstm", embedding=True, dtype="float32")
    x, target = tokens(5), targets()
    got = tf_lrp.Analyzer(model, rules.Epsilon(0.1))(x, target=target)
    assert got.shape == x.shape and got.dtype == np.float32
    close(got, explain_rnn(model, x, target, 0.1).relevance)


def padded_tokens() -> np.ndarray:
    """Length 6; sample 0 full, 1 padded at the end, 2 padded at the start, 3 one token."""
    x = tokens(6, seed=SEED + 9)
    x[1, 4:] = 0
    x[2, :3] = 0
    x[3, 1:] = 0
    return x


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_engine_masked_sequences(kind):
    """Embedding(mask_zero=True): padded steps get exactly zero relevance, and each sample's
    relevance equals that of its unpadded sequence (any length, one analyzer)."""
    model = rnn_model(kind, embedding=True, mask_zero=True)
    x, target = padded_tokens(), targets()
    analyzer = tf_lrp.Analyzer(model, rules.Epsilon(EPS))
    got = np.asarray(analyzer(x, target=target))
    close(got, explain_rnn(model, x, target, EPS).relevance)
    np.testing.assert_array_equal(got[x == 0], 0.0)
    for i in range(N):
        valid = x[i] != 0
        alone = np.asarray(analyzer(x[i:i + 1, valid], target=[target[i]]))
        close(got[i, valid], alone[0])


@pytest.mark.parametrize("composite", ["attn_lrp", "cp_lrp"])
def test_engine_mha_self_attention(composite):
    """MultiHeadAttention(x, x), 2 heads, key_dim 3, value_dim 2, biases; AttnLRP by class,
    CP-LRP by its registered name."""
    model = mha_model()
    x, target = floats((3, 4)), targets()
    comp = composites.AttnLRP(epsilon=EPS) if composite == "attn_lrp" else \
        composites.get("cp_lrp", epsilon=EPS)
    got = tf_lrp.Analyzer(model, comp)(x, target=target)
    close(got, explain_mha(model, x, target, EPS, composite).relevance)


def test_engine_attn_lrp_by_name_with_residual():
    model = mha_model(residual=True)
    x, target = floats((3, 4)), targets()
    got = tf_lrp.Analyzer(model, "attn_lrp", epsilon=EPS)(x, target=target)
    close(got, explain_mha(model, x, target, EPS, "attn_lrp").relevance)


def test_engine_cp_lrp_conserves_without_bias():
    model = mha_model(residual=True, use_bias=False)
    x, target = floats((3, 4)), targets()
    got = np.asarray(tf_lrp.Analyzer(model, composites.CPLRP(epsilon=0.0))(x, target=target))
    logit = np.asarray(model(x))[np.arange(N), target]
    np.testing.assert_allclose(got.sum(axis=(1, 2)), logit, rtol=1e-5)
    close(got, explain_mha(model, x, target, 0.0, "cp_lrp").relevance)


def test_engine_attn_lrp_softmax_gap_without_bias():
    """AttnLRP (epsilon 0) on a bias-free block does not conserve: the input relevance sums
    to the logit plus the softmax rule's gap (test_reference_attn_lrp_softmax_gap)."""
    model = mha_model(residual=True, use_bias=False)
    x, target = floats((3, 4)), targets()
    got = np.asarray(tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=0.0))(x, target=target))
    want = explain_mha(model, x, target, 0.0, "attn_lrp")
    logit = np.asarray(model(x))[np.arange(N), target]
    np.testing.assert_allclose(got.sum(axis=(1, 2)), logit + want.leftover, rtol=1e-5)
    close(got, want.relevance)


def test_engine_embedding_attention_tokens():
    model = mha_model(residual=True, embedding=True)
    x, target = tokens(3), targets()
    got = tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=EPS))(x, target=target)
    assert got.shape == x.shape
    close(got, explain_mha(model, x, target, EPS, "attn_lrp").relevance)


def test_engine_cross_attention():
    """Queries from one input, keys and values from another (Tq 2 != Tk 4): a list back."""
    model = cross_attention_model()
    x, target = [floats((2, 3)), floats((4, 5), seed=SEED + 5)], targets()
    got = tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=EPS))(x, target=target)
    want = explain_mha(model, x, target, EPS, "attn_lrp").relevance
    assert isinstance(got, list | tuple) and len(got) == 2
    close(got[0], want[0])
    close(got[1], want[1])


def test_engine_dot_attention_layer():
    """keras.layers.Attention([q, v]) (key = value) between two Dense projections."""
    model = dot_attention_model()
    x, target = floats((3, 4)), targets()
    got = tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=EPS))(x, target=target)
    close(got, explain_dot_attention(model, x, target, EPS).relevance)


@pytest.mark.parametrize("ln", ["linear"])
def test_engine_transformer_encoder_block(ln):
    """MHA + residual + LayerNormalization + GELU feed-forward + residual + LayerNormalization
    under AttnLRP: GELU by the identity, LayerNormalization with its scale held constant."""
    model = encoder_model()
    x, target = floats((3, 4)), targets()
    got = tf_lrp.Analyzer(model, composites.AttnLRP(epsilon=EPS, normalization=ln))(
        x, target=target)
    close(got, explain_encoder(model, x, target, EPS, ln).relevance)


def test_identity_normalization_is_refused_with_the_reason():
    """Relevance passed unchanged through a LayerNormalization is divided by the residual sum
    before it: refused, naming the fix."""
    for composite in (composites.AttnLRP, composites.CPLRP):
        with pytest.raises(ValueError, match="identity' is refused.*normalization='linear'"):
            composite(normalization="identity")
        with pytest.raises(ValueError, match="must be 'linear'"):
            composite(normalization="rms")



@pytest.mark.parametrize("sequences", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_engine_zero_output_for_mask(kind, sequences):
    """``zero_output_for_mask=True`` with ``return_sequences``: Keras zeroes the outputs at
    padded steps (instead of repeating the last state), and so must the unrolled forward; the
    padded steps get exactly zero relevance."""
    layer = {"lstm": L.LSTM, "gru": L.GRU}[kind]

    def build():
        inputs = keras.Input((6,), dtype="int32")
        y = L.Embedding(VOCAB, FEATURES, mask_zero=True, name="emb")(inputs)
        y = layer(4, return_sequences=sequences, zero_output_for_mask=True)(y)
        return keras.Model(inputs, L.Dense(CLASSES, name="dense")(
            L.Flatten()(y) if sequences else y))

    model = seeded(build, SEED + 77, DTYPE)
    x = padded_tokens()
    analyzer = tf_lrp.Analyzer(model, rules.Epsilon(EPS))
    np.testing.assert_allclose(analyzer.predict(x), model(x).numpy(), rtol=1e-5, atol=1e-6)
    got = np.asarray(analyzer(x, target=targets()))
    np.testing.assert_array_equal(got[x == 0], 0.0)
    assert np.abs(got[x != 0]).max() > 0
