"""Independent float64 numpy reference for LRP through sequence layers (tests only).

Forward passes are Keras 3's layer equations written out from the layers' weights (checked
against Keras in tests/test_sequence.py); the LRP backward passes are the papers' equations:

- Embedding: the relevance of a token is the relevance at its embedding vector, summed over
  the embedding axis.
- LSTM: Arras, Montavon, Mueller, Samek (2017), "Explaining recurrent neural network
  predictions in sentiment analysis", WASSA, sec. 2-3 (code: github.com/ArrasL/LRP_for_LSTM,
  ``LSTM_bidi.lrp``): gates pass no relevance ("signal-take-all"), the cell-state sum shares
  relevance in proportion to its summands, linear maps take the epsilon rule.
- GRU and SimpleRNN: the same principles applied to Keras' GRU/SimpleRNN equations.
- Attention: Achtibat et al. (2024), "AttnLRP: Attention-aware layer-wise relevance
  propagation for transformers", ICML: softmax by Prop. 3.1, the bilinear products
  ``q.k`` and ``A.v`` by epsilon then a uniform split (Prop. 3.3); CP-LRP (Ali et al. 2022,
  "XAI for transformers: better explanations through conservative propagation", ICML):
  the attention weights held constant.

Notation as in tests/reference.py: ``sign+(z) = +1 for z >= 0, -1 for z < 0``,
``stab(z) = z + eps * sign+(z)`` (the epsilon rule's denominator; eps = 0 is LRP-0), and a
division by an exact zero passes no relevance. Biases are part of ``z`` and absorb their share.

Arrays: batches ``(N, ...)``; sequences ``(N, T, features)``. Recurrent states are kept with
the initial state in front: ``h[:, t + 1]`` is the state after step ``t``, ``h[:, 0] = 0``.

This module deliberately does not import ``tf_lrp`` or ``keras``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Array = np.ndarray

#: Floating type of every computation (float64; only changed by hand to study round-off).
FLOAT = np.float64


# ----------------------------------------------------------------------------- helpers


def f64(x) -> Array:
    return np.asarray(x, dtype=FLOAT)


def sign_plus(z: Array) -> Array:
    """+1 where z >= 0, -1 where z < 0."""
    return np.where(z >= 0, 1.0, -1.0).astype(FLOAT)


def stab(z: Array, eps: float) -> Array:
    """The epsilon rule's denominator ``z + eps * sign+(z)``."""
    return z + FLOAT(eps) * sign_plus(z)


def divide(r: Array, d: Array) -> Array:
    """``r / d``, and 0 where ``d == 0`` exactly (the zero guard)."""
    zero = d == 0
    return np.where(zero, 0.0, r / np.where(zero, 1.0, d)).astype(FLOAT)


def sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def epsilon_linear(inputs: list[tuple[Array, Array]], z: Array, R: Array,
                   eps: float) -> list[Array]:
    """Epsilon rule on ``z = sum_i a_i @ W_i + b`` (the bias absorbs its share).

    ``R(a_i)_j = a_ij * sum_k W_i[j, k] * R_k / stab(z_k)``, for every input ``(a_i, W_i)``:
    a layer reading several tensors (an RNN cell reads ``x_t`` and ``h_{t-1}``) is one linear
    map on their concatenation, with one denominator.
    """
    s = divide(R, stab(z, eps))
    return [a * (s @ W.T) for a, W in inputs]


def proportional(parts: list[Array], total: Array, R: Array, eps: float) -> list[Array]:
    """Share ``R`` among the summands of ``total = sum(parts)``: ``part * R / stab(total)``."""
    s = divide(R, stab(total, eps))
    return [p * s for p in parts]


# ----------------------------------------------------------------------------- Embedding, Dense


def embedding_forward(tokens: Array, table: Array) -> Array:
    """``Embedding``: row ``tokens[n, t]`` of the table, ``(N, T) -> (N, T, D)``."""
    return f64(table)[np.asarray(tokens)]


def embedding_relevance(R_emb: Array) -> Array:
    """Token relevance: the relevance at the embedding output summed over the embedding axis."""
    return R_emb.sum(axis=-1)


def dense_forward(a: Array, kernel: Array, bias: Array | None = None) -> Array:
    """``Dense`` without activation on ``(N, n_in)``."""
    z = f64(a) @ f64(kernel)
    return z if bias is None else z + f64(bias)


def dense_relevance(a: Array, kernel: Array, bias: Array | None, R: Array, eps: float) -> Array:
    """Epsilon rule on a Dense layer (eps = 0: LRP-0)."""
    z = dense_forward(a, kernel, bias)
    return epsilon_linear([(f64(a), f64(kernel))], z, R, eps)[0]


def output_relevance(logits: Array, target) -> Array:
    """Relevance at the model output: the target logit, 0 elsewhere (``start="output"``)."""
    R = np.zeros_like(logits, dtype=FLOAT)
    target = np.broadcast_to(np.asarray(target), (len(logits),))
    R[np.arange(len(logits)), target] = logits[np.arange(len(logits)), target]
    return R


def add_relevance(parts: list[Array], R: Array) -> list[Array]:
    """Residual ``Add``: LRP-0 in proportion to the summands (z-rule), zero guard."""
    return proportional(parts, sum(parts), R, 0.0)


# ----------------------------------------------------------------------------- masking


def _step_mask(mask: Array | None, n: int, t: int) -> Array:
    """``(N, 1)`` boolean: which samples compute step ``t`` (Keras carries the state over
    masked steps: ``h_t = h_{t-1}``, ``c_t = c_{t-1}``, and the step's output is ``h_t``)."""
    if mask is None:
        return np.ones((n, 1), dtype=bool)
    return np.asarray(mask, dtype=bool)[:, t, None]


def _output_relevance_to_states(R_out: Array, T: int, u: int, return_sequences: bool) -> Array:
    """Relevance at the states ``h[:, 0..T]`` from the layer's output: every ``h_t``
    (return_sequences) or ``h_T`` only."""
    R_h = np.zeros((R_out.shape[0], T + 1, u), dtype=FLOAT)
    if return_sequences:
        R_h[:, 1:] = R_out
    else:
        R_h[:, T] = R_out
    return R_h


# ----------------------------------------------------------------------------- LSTM


@dataclass
class LSTMTrace:
    """Forward values of an LSTM: inputs ``x (N, T, n_in)``, states ``h, c (N, T + 1, u)``
    (initial zero state first), gates ``i, f, g, o`` and ``z_g`` (the pre-activation of
    ``g``), each ``(N, T, u)``; ``mask (N, T)`` or None."""

    x: Array
    h: Array
    c: Array
    i: Array
    f: Array
    g: Array
    o: Array
    z_g: Array
    mask: Array | None

    def output(self, return_sequences: bool) -> Array:
        return self.h[:, 1:] if return_sequences else self.h[:, -1]


def lstm_split(kernel: Array, recurrent_kernel: Array, bias: Array | None):
    """Keras' packed LSTM weights ``(in, 4u), (u, 4u), (4u,)``, gate order i, f, c, o."""
    u = recurrent_kernel.shape[0]
    bias = np.zeros(4 * u) if bias is None else bias
    return u, f64(kernel), f64(recurrent_kernel), f64(bias)


def lstm_forward(x: Array, kernel: Array, recurrent_kernel: Array, bias: Array | None = None,
                 mask: Array | None = None) -> LSTMTrace:
    """Keras ``LSTM`` (activation tanh, recurrent_activation sigmoid, zero initial state)::

        [z_i, z_f, z_g, z_o] = x_t W + h_{t-1} U + b
        i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o);  g = tanh(z_g)
        c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
    """
    u, W, U, b = lstm_split(kernel, recurrent_kernel, bias)
    x = f64(x)
    n, T, _ = x.shape
    h = np.zeros((n, T + 1, u), dtype=FLOAT)
    c = np.zeros((n, T + 1, u), dtype=FLOAT)
    gates = {k: np.zeros((n, T, u), dtype=FLOAT) for k in ("i", "f", "g", "o", "z_g")}
    for t in range(T):
        z = x[:, t] @ W + h[:, t] @ U + b
        i, f = sigmoid(z[:, :u]), sigmoid(z[:, u:2 * u])
        g, o = np.tanh(z[:, 2 * u:3 * u]), sigmoid(z[:, 3 * u:])
        c_t = f * c[:, t] + i * g
        h_t = o * np.tanh(c_t)
        m = _step_mask(mask, n, t)
        c[:, t + 1] = np.where(m, c_t, c[:, t])
        h[:, t + 1] = np.where(m, h_t, h[:, t])
        for key, value in (("i", i), ("f", f), ("g", g), ("o", o), ("z_g", z[:, 2 * u:3 * u])):
            gates[key][:, t] = value
    return LSTMTrace(x, h, c, mask=mask, **gates)


def lstm_step_relevance(x_t, h_prev, c_prev, i, f, g, c_t, z_g, W_c, U_c, R_h, R_c, eps):
    """One LSTM step backwards (Arras et al. 2017, eqs. for the LSTM cell):

    1. ``h_t = o * tanh(c_t)``: the gate ``o`` gets nothing, tanh is passed by the identity:
       ``R(c_t) += R(h_t)``.
    2. ``c_t = f * c_{t-1} + i * g`` shares in proportion:
       ``R(c_{t-1}) = f c_{t-1} / stab(c_t) * R(c_t)``, ``R(g) = i g / stab(c_t) * R(c_t)``
       (the gates f, i get nothing).
    3. ``g = tanh(z_g)``: identity; ``z_g = x_t W_c + h_{t-1} U_c + b_c`` by the epsilon rule
       on the concatenated input ``[x_t, h_{t-1}]`` (one denominator ``stab(z_g)``).

    Returns ``(R(x_t), R(h_{t-1}), R(c_{t-1}))``.
    """
    R_cell = R_c + R_h
    R_c_prev, R_g = proportional([f * c_prev, i * g], c_t, R_cell, eps)
    R_x, R_h_prev = epsilon_linear([(x_t, W_c), (h_prev, U_c)], z_g, R_g, eps)
    return R_x, R_h_prev, R_c_prev


def lstm_relevance(trace: LSTMTrace, kernel: Array, recurrent_kernel: Array,
                   bias: Array | None, R_out: Array, eps: float,
                   return_sequences: bool = False) -> tuple[Array, Array]:
    """LRP through an LSTM: relevance of the inputs ``(N, T, n_in)`` and the relevance
    left at the zero initial state ``(N,)`` (``R(h_0) + R(c_0)``, zero: its contributions
    ``h_0 U`` and ``f c_0`` vanish).

    ``R_out`` is the relevance at the layer's output: ``(N, u)`` (only ``h_T``) or
    ``(N, T, u)`` with ``return_sequences`` (every ``h_t``). Relevance that step ``t`` sends
    to ``h_{t-1}`` adds to ``h_{t-1}``'s own. Masked steps carry their relevance to the
    previous state unchanged and give their input none.
    """
    u, W, U, b = lstm_split(kernel, recurrent_kernel, bias)
    W_c, U_c = W[:, 2 * u:3 * u], U[:, 2 * u:3 * u]
    x = trace.x
    n, T, _ = x.shape
    R_h = _output_relevance_to_states(f64(R_out), T, u, return_sequences)
    R_c = np.zeros_like(R_h)
    R_x = np.zeros_like(x)
    for t in reversed(range(T)):
        m = _step_mask(trace.mask, n, t)
        rx, rh, rc = lstm_step_relevance(
            x[:, t], trace.h[:, t], trace.c[:, t], trace.i[:, t], trace.f[:, t],
            trace.g[:, t], trace.c[:, t + 1], trace.z_g[:, t], W_c, U_c,
            R_h[:, t + 1], R_c[:, t + 1], eps)
        R_x[:, t] = np.where(m, rx, 0.0)
        R_h[:, t] += np.where(m, rh, R_h[:, t + 1])
        R_c[:, t] += np.where(m, rc, R_c[:, t + 1])
    return R_x, R_h[:, 0].sum(-1) + R_c[:, 0].sum(-1)


# ----------------------------------------------------------------------------- GRU


@dataclass
class GRUTrace:
    """Forward values of a GRU: ``x``, states ``h (N, T + 1, u)``, gates ``z, r``, the
    candidate ``hh`` and its pre-activation ``a`` (each ``(N, T, u)``); for
    ``reset_after=True`` also ``m_h = h_{t-1} U_h + b_h(rec)`` (the reset gate multiplies
    it)."""

    x: Array
    h: Array
    z: Array
    r: Array
    hh: Array
    a: Array
    m_h: Array
    reset_after: bool
    mask: Array | None

    def output(self, return_sequences: bool) -> Array:
        return self.h[:, 1:] if return_sequences else self.h[:, -1]


def gru_split(kernel, recurrent_kernel, bias, reset_after: bool):
    """Keras' packed GRU weights, gate order z, r, h: kernel ``(in, 3u)``, recurrent
    ``(u, 3u)``; bias ``(2, 3u)`` = (input bias, recurrent bias) with ``reset_after``, else
    ``(3u,)``. Returns ``u, W, U, b_in, b_rec``."""
    u = recurrent_kernel.shape[0]
    if bias is None:
        b_in, b_rec = np.zeros(3 * u), np.zeros(3 * u)
    elif reset_after:
        b_in, b_rec = f64(bias)[0], f64(bias)[1]
    else:
        b_in, b_rec = f64(bias), np.zeros(3 * u)
    return u, f64(kernel), f64(recurrent_kernel), f64(b_in), f64(b_rec)


def gru_forward(x: Array, kernel: Array, recurrent_kernel: Array, bias: Array | None = None,
                reset_after: bool = True, mask: Array | None = None) -> GRUTrace:
    """Keras ``GRU`` (activation tanh, recurrent_activation sigmoid, zero initial state)::

        reset_after=True (default):
            z = sigmoid(x W_z + b_z + h U_z + b'_z),  r = sigmoid(x W_r + b_r + h U_r + b'_r)
            a = x W_h + b_h + r * (h U_h + b'_h)
        reset_after=False:
            z = sigmoid(x W_z + h U_z + b_z),  r likewise
            a = x W_h + (r * h) U_h + b_h
        hh = tanh(a);  h_new = z * h + (1 - z) * hh
    """
    u, W, U, b_in, b_rec = gru_split(kernel, recurrent_kernel, bias, reset_after)
    x = f64(x)
    n, T, _ = x.shape
    h = np.zeros((n, T + 1, u), dtype=FLOAT)
    vals = {k: np.zeros((n, T, u), dtype=FLOAT) for k in ("z", "r", "hh", "a", "m_h")}
    for t in range(T):
        hp = h[:, t]
        mx = x[:, t] @ W + b_in
        mh = hp @ U + b_rec
        z = sigmoid(mx[:, :u] + mh[:, :u])
        r = sigmoid(mx[:, u:2 * u] + mh[:, u:2 * u])
        if reset_after:
            m_h = mh[:, 2 * u:]
            a = mx[:, 2 * u:] + r * m_h
        else:
            m_h = np.zeros_like(r)
            a = mx[:, 2 * u:] + (r * hp) @ U[:, 2 * u:]
        hh = np.tanh(a)
        h_new = z * hp + (1.0 - z) * hh
        h[:, t + 1] = np.where(_step_mask(mask, n, t), h_new, hp)
        for key, value in (("z", z), ("r", r), ("hh", hh), ("a", a), ("m_h", m_h)):
            vals[key][:, t] = value
    return GRUTrace(x, h, reset_after=reset_after, mask=mask, **vals)


def gru_step_relevance(x_t, h_prev, z, r, hh, a, h_new, W_h, U_h, R_h, eps, reset_after):
    """One GRU step backwards:

    1. ``h_new = z * h_{t-1} + (1 - z) * hh`` shares in proportion (denominator
       ``stab(h_new)``); the gate z gets nothing.
    2. ``hh = tanh(a)``: identity.
    3. ``a`` by the epsilon rule on the linear map in ``[x_t, h_{t-1}]`` with the reset gate
       held fixed (it gets nothing):

       - reset_after=True: ``a = x W_h + h (U_h diag(r)) + (b_h + r * b'_h)``: the effective
         recurrent kernel ``U_h[j, k] * r_k`` scales the columns;
         ``R(h)_j = h_j sum_k U_h[j, k] r_k R_k / stab(a_k)``.
       - reset_after=False: ``a = x W_h + (r * h) U_h + b_h``: the gated product ``r * h``
         gives all of its relevance to ``h`` (Arras et al.'s signal-take-all):
         ``R(h)_j = r_j h_j sum_k U_h[j, k] R_k / stab(a_k)``.

    Returns ``(R(x_t), R(h_{t-1}))``.
    """
    R_keep, R_hh = proportional([z * h_prev, (1.0 - z) * hh], h_new, R_h, eps)
    s = divide(R_hh, stab(a, eps))
    R_x = x_t * (s @ W_h.T)
    # reset_after: r scales the recurrent kernel's columns; before: r gates h's signal
    R_h_prev = h_prev * ((s * r) @ U_h.T) if reset_after else (r * h_prev) * (s @ U_h.T)
    return R_x, R_keep + R_h_prev


def gru_relevance(trace: GRUTrace, kernel: Array, recurrent_kernel: Array, bias: Array | None,
                  R_out: Array, eps: float, return_sequences: bool = False
                  ) -> tuple[Array, Array]:
    """LRP through a GRU: ``(R(x) (N, T, n_in), R(h_0) (N,))`` (see :func:`lstm_relevance`)."""
    u, W, U, _, _ = gru_split(kernel, recurrent_kernel, bias, trace.reset_after)
    W_h, U_h = W[:, 2 * u:], U[:, 2 * u:]
    x = trace.x
    n, T, _ = x.shape
    R_h = _output_relevance_to_states(f64(R_out), T, u, return_sequences)
    R_x = np.zeros_like(x)
    for t in reversed(range(T)):
        m = _step_mask(trace.mask, n, t)
        rx, rh = gru_step_relevance(x[:, t], trace.h[:, t], trace.z[:, t], trace.r[:, t],
                                    trace.hh[:, t], trace.a[:, t], trace.h[:, t + 1], W_h, U_h,
                                    R_h[:, t + 1], eps, trace.reset_after)
        R_x[:, t] = np.where(m, rx, 0.0)
        R_h[:, t] += np.where(m, rh, R_h[:, t + 1])
    return R_x, R_h[:, 0].sum(-1)


# ----------------------------------------------------------------------------- SimpleRNN


@dataclass
class RNNTrace:
    """Forward values of a SimpleRNN: ``x``, states ``h (N, T + 1, u)``, pre-activations
    ``z (N, T, u)``."""

    x: Array
    h: Array
    z: Array
    mask: Array | None

    def output(self, return_sequences: bool) -> Array:
        return self.h[:, 1:] if return_sequences else self.h[:, -1]


def simple_rnn_forward(x: Array, kernel: Array, recurrent_kernel: Array,
                       bias: Array | None = None, mask: Array | None = None) -> RNNTrace:
    """Keras ``SimpleRNN``: ``h_t = tanh(x_t W + h_{t-1} U + b)``, zero initial state."""
    W, U = f64(kernel), f64(recurrent_kernel)
    b = np.zeros(U.shape[0]) if bias is None else f64(bias)
    x = f64(x)
    n, T, _ = x.shape
    h = np.zeros((n, T + 1, U.shape[0]), dtype=FLOAT)
    z = np.zeros((n, T, U.shape[0]), dtype=FLOAT)
    for t in range(T):
        z[:, t] = x[:, t] @ W + h[:, t] @ U + b
        h[:, t + 1] = np.where(_step_mask(mask, n, t), np.tanh(z[:, t]), h[:, t])
    return RNNTrace(x, h, z, mask)


def simple_rnn_relevance(trace: RNNTrace, kernel: Array, recurrent_kernel: Array,
                         bias: Array | None, R_out: Array, eps: float,
                         return_sequences: bool = False) -> tuple[Array, Array]:
    """LRP through a SimpleRNN: tanh by the identity, the epsilon rule on
    ``z_t = [x_t, h_{t-1}] [W; U] + b``. Returns ``(R(x), R(h_0))``."""
    W, U = f64(kernel), f64(recurrent_kernel)
    x = trace.x
    n, T, _ = x.shape
    R_h = _output_relevance_to_states(f64(R_out), T, U.shape[0], return_sequences)
    R_x = np.zeros_like(x)
    for t in reversed(range(T)):
        m = _step_mask(trace.mask, n, t)
        rx, rh = epsilon_linear([(x[:, t], W), (trace.h[:, t], U)], trace.z[:, t],
                                R_h[:, t + 1], eps)
        R_x[:, t] = np.where(m, rx, 0.0)
        R_h[:, t] += np.where(m, rh, R_h[:, t + 1])
    return R_x, R_h[:, 0].sum(-1)


# ----------------------------------------------------------------------------- attention


def softmax(x: Array, axis: int = -1) -> Array:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_relevance(x: Array, s: Array, R: Array) -> Array:
    """AttnLRP Prop. 3.1 (Taylor decomposition of the softmax at its input, bias absorbed),
    per row: ``R(x_i) = x_i * (R_i - s_i * sum_j R_j)``.

    Not conservative: ``sum_i R(x_i) = sum_i x_i R_i - (sum_i s_i x_i) sum_j R_j``
    (:func:`softmax_relevance_sum`). Masked keys: Keras' Softmax sets their scores to -1e9
    (LXT sets -inf inputs to 0); either way ``s_i = 0`` and ``R_i = 0``, so ``R(x_i) = 0``.
    """
    return x * (R - s * R.sum(axis=-1, keepdims=True))


def softmax_relevance_sum(x: Array, s: Array, R: Array) -> Array:
    """Row sums of :func:`softmax_relevance`, written out."""
    return (x * R).sum(-1) - (s * x).sum(-1) * R.sum(-1)


def bilinear_relevance(a: Array, b: Array, out: Array, R: Array, eps: float,
                       split: str = "uniform") -> tuple[Array, Array]:
    """``out = a @ b`` (``a (J, K)``, ``b (K, L)``), AttnLRP Prop. 3.3: the epsilon rule on the
    sum over ``k``, then each product ``a_jk b_kl`` is shared between its two factors::

        share[j, k, l] = a_jk * b_kl * R_jl / stab(out_jl)
        uniform:  R(a_jk) = 1/2 sum_l share,  R(b_kl) = 1/2 sum_j share
        "cp":     R(a) = 0,                   R(b_kl) = sum_j share   (CP-LRP: ``a`` constant)

    Departures from the authors' code (LXT ``matmul_fn``), following tf_lrp's epsilon rule:
    LXT divides by ``2 * out + eps`` (eps added without the sign, default 1e-6/1e-8); here
    ``stab(out) = out + eps * sign+(out)`` with the composite's epsilon. In attention the
    product is taken on the *scaled* query ``(q / sqrt(d)) . k`` (Keras scales the query
    first); Hugging Face models in LXT scale the product afterwards, so their epsilon acts on
    the unscaled scores (an effective ``eps * sqrt(d)`` here).
    """
    share = np.einsum("jk,kl,jl->jkl", a, b, divide(R, stab(out, eps)))
    if split == "uniform":
        return 0.5 * share.sum(axis=2), 0.5 * share.sum(axis=0)
    if split == "cp":
        return np.zeros_like(a), share.sum(axis=0)
    raise ValueError(f"unknown split {split!r}")


@dataclass
class HeadTrace:
    """One attention head of one sample: scaled queries ``qs (Tq, d)`` (``q * scale``), keys
    ``k (Tk, d)``, values ``v (Tk, dv)``, scores ``x = qs @ k.T`` (masked entries set to
    -1e9 as Keras' Softmax does), weights ``A = softmax(x)``, context ``ctx = A @ v``."""

    qs: Array
    k: Array
    v: Array
    x: Array
    A: Array
    ctx: Array


def attention_head_forward(q: Array, k: Array, v: Array, scale: float,
                           mask: Array | None = None) -> HeadTrace:
    """``softmax((q * scale) @ k.T) @ v``; ``mask (Tq, Tk)`` True where attending is allowed."""
    qs = f64(q) * scale
    x = qs @ f64(k).T
    if mask is not None:
        x = np.where(mask, x, -1e9)
    A = softmax(x)
    return HeadTrace(qs, f64(k), f64(v), x, A, A @ f64(v))


def attention_head_relevance(head: HeadTrace, R_ctx: Array, eps: float,
                             variant: str = "attn_lrp") -> dict[str, Array]:
    """One head backwards, ``R_ctx (Tq, dv)`` the relevance at its context vectors.

    ``attn_lrp``: ``ctx = A @ v`` by :func:`bilinear_relevance` (uniform) -> ``R(A), R(v)``;
    the softmax by :func:`softmax_relevance` -> ``R(x)``; ``x = qs @ k.T`` by
    :func:`bilinear_relevance` (uniform) -> ``R(qs), R(k)``; the scaling ``qs = q * scale``
    passes relevance unchanged: ``R(q) = R(qs)``.
    ``cp_lrp``: ``A`` constant: all of ``ctx``'s relevance to ``v``; ``q`` and ``k`` get none.

    Returns ``{"q", "k", "v", "A", "x"}`` relevances (``A``/``x`` for the sum checks).
    """
    if variant == "cp_lrp":
        R_A, R_v = bilinear_relevance(head.A, head.v, head.ctx, R_ctx, eps, split="cp")
        zero_q, zero_k = np.zeros_like(head.qs), np.zeros_like(head.k)
        return {"q": zero_q, "k": zero_k, "v": R_v, "A": R_A, "x": np.zeros_like(head.x)}
    if variant != "attn_lrp":
        raise ValueError(f"unknown variant {variant!r}")
    R_A, R_v = bilinear_relevance(head.A, head.v, head.ctx, R_ctx, eps)
    R_x = softmax_relevance(head.x, head.A, R_A)
    R_qs, R_kT = bilinear_relevance(head.qs, head.k.T, head.x, R_x, eps)
    return {"q": R_qs, "k": R_kT.T, "v": R_v, "A": R_A, "x": R_x}


@dataclass
class MHAWeights:
    """Keras ``MultiHeadAttention`` weights (``layer.get_weights()`` order): EinsumDense
    kernels ``wq (Dq, H, dk)``, ``wk (Dk, H, dk)``, ``wv (Dv, H, dv)``, ``wo (H, dv, Do)``
    and biases ``bq (H, dk)``, ``bk``, ``bv (H, dv)``, ``bo (Do,)`` (None without bias)."""

    wq: Array
    bq: Array | None
    wk: Array
    bk: Array | None
    wv: Array
    bv: Array | None
    wo: Array
    bo: Array | None

    @classmethod
    def from_list(cls, weights: list[Array], use_bias: bool = True) -> MHAWeights:
        w = [f64(v) for v in weights]
        if use_bias:
            return cls(*w)
        return cls(w[0], None, w[1], None, w[2], None, w[3], None)

    @property
    def key_dim(self) -> int:
        return self.wq.shape[2]


def _project(x: Array, kernel: Array, bias: Array | None) -> Array:
    """EinsumDense ``"abc,cde->abde"``: ``(N, T, D) -> (N, T, H, d)``."""
    y = np.einsum("ntc,chd->nthd", x, kernel)
    return y if bias is None else y + bias


def _project_relevance(x: Array, kernel: Array, y: Array, R: Array, eps: float) -> Array:
    """Epsilon rule on a projection, per token: the kernel as a ``(D, H*d)`` matrix."""
    n, t, d_in = x.shape
    flat = kernel.reshape(d_in, -1)
    return epsilon_linear([(x.reshape(n * t, d_in), flat)], y.reshape(n * t, -1),
                          R.reshape(n * t, -1), eps)[0].reshape(x.shape)


@dataclass
class MHATrace:
    """Forward values of a MultiHeadAttention call: inputs, projections ``q, k, v
    (N, T, H, d)``, heads ``heads[n][h]`` (:class:`HeadTrace`), context ``(N, Tq, H, dv)``
    and output ``(N, Tq, Do)``."""

    query: Array
    key: Array
    value: Array
    q: Array
    k: Array
    v: Array
    heads: list[list[HeadTrace]]
    context: Array
    output: Array


def mha_forward(query: Array, value: Array, weights: MHAWeights, key: Array | None = None,
                attention_mask: Array | None = None) -> MHATrace:
    """Keras 3 ``MultiHeadAttention(query, value, key)`` (no dropout)::

        q = query Wq + bq,  k = key Wk + bk,  v = value Wv + bv         (per head)
        A = softmax((q / sqrt(key_dim)) . k)   over the keys (masked)
        context = A . v;   output = sum_heads context Wo + bo
    """
    query, value = f64(query), f64(value)
    key = value if key is None else f64(key)
    w = weights
    q, k, v = _project(query, w.wq, w.bq), _project(key, w.wk, w.bk), _project(value, w.wv, w.bv)
    scale = 1.0 / np.sqrt(w.key_dim)
    n, tq, H, _ = q.shape
    heads = [[attention_head_forward(q[i, :, h], k[i, :, h], v[i, :, h], scale,
                                     None if attention_mask is None else attention_mask[i])
              for h in range(H)] for i in range(n)]
    context = np.stack([np.stack([hd.ctx for hd in row], axis=1) for row in heads])
    out = np.einsum("nthv,hvo->nto", context, w.wo)
    if w.bo is not None:
        out = out + w.bo
    return MHATrace(query, key, value, q, k, v, heads, context, out)


def mha_relevance(trace: MHATrace, weights: MHAWeights, R_out: Array, eps: float,
                  variant: str = "attn_lrp") -> dict[str, Array]:
    """LRP through MultiHeadAttention (AttnLRP or CP-LRP), ``R_out (N, Tq, Do)``.

    The output projection and the q/k/v projections by the epsilon rule (per token, bias
    absorbing), each head by :func:`attention_head_relevance`. Returns the relevance of the
    ``"query"``, ``"key"`` and ``"value"`` inputs (add them up when one tensor is used for
    several), plus ``"softmax_gap" (N,)``: ``sum R(scores) - sum R(A)`` over the heads and
    query rows (zero for CP-LRP), the amount by which the softmax rule breaks conservation.
    """
    w = weights
    n, tq, H, dv = trace.context.shape
    ctx_flat = trace.context.reshape(n * tq, H * dv)
    R_ctx = epsilon_linear([(ctx_flat, w.wo.reshape(H * dv, -1))],
                           trace.output.reshape(n * tq, -1), f64(R_out).reshape(n * tq, -1),
                           eps)[0].reshape(trace.context.shape)
    R_q, R_k, R_v = (np.zeros_like(trace.q), np.zeros_like(trace.k), np.zeros_like(trace.v))
    gap = np.zeros(n, dtype=FLOAT)
    for i in range(n):
        for h in range(H):
            r = attention_head_relevance(trace.heads[i][h], R_ctx[i, :, h], eps, variant)
            R_q[i, :, h], R_k[i, :, h], R_v[i, :, h] = r["q"], r["k"], r["v"]
            if variant == "attn_lrp":
                gap[i] += r["x"].sum() - r["A"].sum()
    return {
        "query": _project_relevance(trace.query, w.wq, trace.q, R_q, eps),
        "key": _project_relevance(trace.key, w.wk, trace.k, R_k, eps),
        "value": _project_relevance(trace.value, w.wv, trace.v, R_v, eps),
        "softmax_gap": gap,
    }


def dot_attention_forward(query: Array, value: Array, key: Array | None = None) -> list[HeadTrace]:
    """Keras ``Attention()([query, value(, key)])`` (score_mode "dot", no scale, no mask):
    ``softmax(query @ key.T) @ value`` per sample, as one head each."""
    key = value if key is None else key
    return [attention_head_forward(q, k, v, 1.0) for q, k, v in zip(query, key, value)]


# ----------------------------------------------------------------------------- Transformer parts


def gelu(x: Array) -> Array:
    """Keras' exact GELU: ``x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))``; relevance passes it by
    the identity (AttnLRP, sec. 3.3)."""
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def layer_norm_forward(x: Array, gamma: Array, beta: Array, epsilon: float = 1e-3) -> Array:
    """Keras ``LayerNormalization`` over the last axis: ``(x - mean) / sqrt(var + eps) * gamma
    + beta``. Under AttnLRP as tf_lrp specifies it, relevance passes it by the identity
    (``R_in = R_out`` per element, beta and the centering absorb nothing). Note: the authors'
    code (LXT ``layer_norm``) holds only ``1/std`` constant (Prop. 3.4) and applies the epsilon
    rule to the centering ``x - mean`` and to ``+ beta``; the two agree for RMS-type norms."""
    x = f64(x)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * f64(gamma) + f64(beta)
