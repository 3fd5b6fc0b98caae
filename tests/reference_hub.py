"""Independent TensorFlow reference for LXT's efficient-mode AttnLRP on KerasHub transformers
(tests only).

LXT 2.1 (github.com/rachtibat/LRP-eXplains-Transformers, ``lxt/efficient``) computes AttnLRP
as *gradient x input* with a few backward passes modified; the relevance of a token is
``sum_hidden(input embedding * d(selected logit) / d(input embedding))``. This module does the
same in plain TensorFlow (float64), with the forward passes of KerasHub's Llama, BERT and Gemma
written out from the layers' weights (no KerasHub ``call``, no Keras layer, no ``tf_lrp``).

The modified backward passes, each written as a forward-exact expression whose gradient is the
rule's (``sg`` = ``tf.stop_gradient``):

- linear maps (Dense, EinsumDense, the LM head), RoPE (cos/sin constants), residual adds, the
  GQA repeat of key/value heads: the plain gradient (LRP-0; biases take their share);
- RMSNorm ``x * rsqrt(mean(x^2) + eps) * w`` (Gemma: ``* (1 + w)``): ``x * sg(rsqrt(...)) * w``;
  LayerNorm: ``(x - mean(x)) / sg(std) * gamma + beta`` (centering and beta through);
- element-wise activations (SiLU/GELU in gated MLPs, GELU in BERT's MLP, tanh in the pooler):
  the identity rule, ``x * sg(act(x) / x)``: gradient ``act(x)/x``, so ``R_in = R_out``;
- ``q.k`` and ``A.v``, and the gate product ``act(gate) * up``: the uniform rule, the
  gradient through the product halved (``0.5 * y + 0.5 * sg(y)``) so each factor gets half;
- softmax: the plain gradient. With ``R = s * g`` (the relevance at the output in
  gradient x input form) the Jacobian gives ``x * dL/dx = x * (s*g - s * sum(s*g))
  = x * (R - s * sum R)``, which is AttnLRP's Prop. 3.1, so LXT leaves it unpatched.

``Rules`` also selects deliberately wrong variants (``MUTANTS``), each undoing one rule, used
to show that a comparison can fail: ``cp=True`` is LXT's CP-LRP (gradient stopped at ``q`` and
``k`` and at the MLP gate: ``act(gate) * up`` all to ``up``; no halving), ``softmax="identity"``
passes the softmax's relevance unchanged (``R_in = R_out``) instead of Prop. 3.1, and the others
drop the uniform split, the held normalizing factor or the identity rule of the activations.

Masks follow Keras: ``Softmax(x, mask)`` sets masked scores to -1e9 and zeros masked outputs;
the score tensor's mask adds no relevance because ``s = 0`` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

DTYPE = tf.float64
sg = tf.stop_gradient


@dataclass(frozen=True)
class Rules:
    """Which rules the reference applies (the default is LXT's AttnLRP).

    The other settings are deliberately wrong variants ("mutants"), each undoing one of
    LXT's rules, for tests that check a comparison can fail.
    """

    cp: bool = False  # LXT's CP-LRP
    softmax: str = "attnlrp"  # "identity": R_in = R_out
    halve: bool = True  # False: q.k, A.v and act(gate) * up without the uniform split
    norm_held: bool = True  # False: the gradient through the normalizing factor
    act_identity: bool = True  # False: the plain gradient through the activations


LXT = Rules()
CP = Rules(cp=True)
MUTANTS = {
    "cp_lrp": CP,
    "softmax_identity": Rules(softmax="identity"),
    "no_uniform_split": Rules(halve=False),
    "norm_gradient": Rules(norm_held=False),
    "activation_gradient": Rules(act_identity=False),
}


# ----------------------------------------------------------------------------- rules


def const(x) -> tf.Tensor:
    return tf.constant(np.asarray(x, dtype=np.float64))


def half(y: tf.Tensor, rules: Rules) -> tf.Tensor:
    """Forward ``y``; gradient halved (uniform rule of a product of two factors)."""
    return 0.5 * y + 0.5 * sg(y) if rules.halve else y


def identity_rule(fn, x: tf.Tensor, rules: Rules) -> tf.Tensor:
    """Forward ``fn(x)`` (``fn(0) = 0``); gradient ``fn(x) / x``: relevance passes unchanged."""
    if not rules.act_identity:
        return fn(x)
    return x * sg(tf.math.divide_no_nan(fn(x), x))


def held(factor: tf.Tensor, rules: Rules) -> tf.Tensor:
    """A normalizing factor, held constant."""
    return sg(factor) if rules.norm_held else factor


def rms_norm(x, w, eps, rules: Rules, plus_one=False):
    inv = held(tf.math.rsqrt(tf.reduce_mean(tf.square(x), axis=-1, keepdims=True) + eps), rules)
    return x * inv * ((1.0 + w) if plus_one else w)


def layer_norm(x, gamma, beta, eps, rules: Rules):
    mean = tf.reduce_mean(x, axis=-1, keepdims=True)
    centred = x - mean
    std = held(tf.sqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + eps), rules)
    return centred / std * gamma + beta


def silu(x):
    return x * tf.sigmoid(x)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def masked_softmax(x: tf.Tensor, mask: tf.Tensor, rules: Rules) -> tf.Tensor:
    """Keras' ``Softmax(axis=-1)(x, mask)`` with the selected backward rule."""
    x = tf.where(mask, x, tf.constant(-1e9, x.dtype))
    s = tf.nn.softmax(x, axis=-1)
    if rules.softmax == "identity":
        s = x * sg(tf.math.divide_no_nan(s, x))
    elif rules.softmax != "attnlrp":
        raise ValueError(rules.softmax)
    return tf.where(mask, s, tf.zeros_like(s))


def bilinear(equation: str, a, b, rules: Rules, attention_scores: bool):
    """``einsum(equation, a, b)`` for ``q.k`` (``attention_scores``) or ``A.v``."""
    if rules.cp:
        if attention_scores:  # CP-LRP: no relevance through the attention weights
            return tf.einsum(equation, sg(a), sg(b))
        return tf.einsum(equation, a, b)  # A is constant already: v gets everything
    return half(tf.einsum(equation, a, b), rules)


def gated(act, gate, up, rules: Rules):
    """``act(gate) * up`` of a gated MLP (SwiGLU / GeGLU)."""
    if rules.cp:
        return act(sg(gate)) * up
    return half(identity_rule(act, gate, rules) * up, rules)


def rope(x, positions, max_wavelength=10000.0):
    """KerasHub's ``RotaryEmbedding`` on ``(b, t, heads, d)``: cos/sin of ``[f, f]`` with
    ``f = position / max_wavelength ** (2i / d)``; ``x * cos + [-x2, x1] * sin``."""
    d = x.shape[-1]
    inv = 1.0 / max_wavelength ** (np.arange(0, d, 2, dtype=np.float64) / d)
    freq = np.einsum("t,j->tj", positions.astype(np.float64), inv)
    emb = np.concatenate([freq, freq], axis=-1)[None, :, None, :]
    x1, x2 = tf.split(x, 2, axis=-1)
    return x * const(np.cos(emb)) + tf.concat([-x2, x1], axis=-1) * const(np.sin(emb))


def causal_padding_mask(padding_mask: np.ndarray) -> np.ndarray:
    """``(n, L, L)`` bool: query ``i`` may read key ``j <= i`` that is not padding."""
    L = padding_mask.shape[1]
    causal = np.tril(np.ones((L, L), dtype=bool))
    return causal[None] & padding_mask.astype(bool)[:, None, :]


def _selected(logits: tf.Tensor, target) -> tf.Tensor:
    n, k = logits.shape
    onehot = tf.one_hot(np.broadcast_to(np.asarray(target), (n,)), k, dtype=logits.dtype)
    return tf.reduce_sum(logits * onehot)


def _weights(layer) -> dict[str, tf.Tensor]:
    return {v.path: const(v.numpy()) for v in layer.weights}


# ----------------------------------------------------------------------------- models


@dataclass
class Result:
    logits: np.ndarray
    relevance: dict  # name -> (n, L) relevance of each embedding input


def _explain(embed, forward, target) -> Result:
    """Gradient x input of the selected logit at the embedding tensors ``embed``."""
    with tf.GradientTape() as tape:
        tape.watch(list(embed.values()))
        logits = forward(**embed)
        selected = _selected(logits, target)
    grads = tape.gradient(selected, embed)
    rel = {k: tf.reduce_sum(embed[k] * grads[k], axis=-1).numpy() for k in embed}
    return Result(logits.numpy(), rel)


def llama(backbone, head, token_ids, padding_mask, target, rules: Rules = LXT) -> Result:
    """KerasHub ``LlamaBackbone`` + ``Dense`` head on the last position."""
    W = _weights(backbone)
    H, KV = backbone.num_query_heads, backbone.num_key_value_heads
    eps = backbone.layer_norm_epsilon
    L = token_ids.shape[1]
    mask = tf.constant(causal_padding_mask(padding_mask))[:, None]  # (n, 1, L, L)
    head_k, head_b = (const(w.numpy()) for w in head.weights)

    def forward(tokens):
        x = tokens
        for i in range(backbone.num_layers):
            p = f"transformer_layer_{i}/"
            h = rms_norm(x, W[p + "self_attention_layernorm/scale"], eps, rules)
            q = tf.einsum("bqm,muh->bquh", h, W[p + "self_attention/query/kernel"])
            k = tf.einsum("bkm,mvh->bkvh", h, W[p + "self_attention/key/kernel"])
            v = tf.einsum("bkm,mvh->bkvh", h, W[p + "self_attention/value/kernel"])
            q, k = rope(q, np.arange(L)), rope(k, np.arange(L))
            k, v = tf.repeat(k, H // KV, axis=2), tf.repeat(v, H // KV, axis=2)
            scores = bilinear("bquh,bkuh->buqk", q, k, rules, True) / math.sqrt(q.shape[-1])
            a = masked_softmax(scores, mask, rules)
            ctx = bilinear("buqk,bkuh->bquh", a, v, rules, False)
            x = x + tf.einsum("bquh,uhm->bqm", ctx, W[p + "self_attention/attention_output/kernel"])
            h = rms_norm(x, W[p + "feedforward_layernorm/scale"], eps, rules)
            y = gated(silu, h @ W[p + "feedforward_gate_dense/kernel"],
                      h @ W[p + "feedforward_intermediate_dense/kernel"], rules)
            x = x + y @ W[p + "feedforward_output_dense/kernel"]
        h = rms_norm(x, W["sequence_output_layernorm/scale"], eps, rules)
        return h[:, -1] @ head_k + head_b

    tokens = tf.gather(W["token_embedding/embeddings"], token_ids)
    return _explain({"tokens": tokens}, forward, target)


def gemma(backbone, token_ids, padding_mask, target, rules: Rules = LXT) -> Result:
    """KerasHub ``GemmaBackbone`` (Gemma 1) + its tied LM head on the last position."""
    W = _weights(backbone)
    H, KV, d = backbone.num_query_heads, backbone.num_key_value_heads, backbone.head_dim
    eps = backbone.layer_norm_epsilon
    L = token_ids.shape[1]
    mask = tf.constant(causal_padding_mask(padding_mask))[:, None, None]  # (n, 1, 1, L, L)
    table = W["token_embedding/embeddings"]

    def gemma_rope(x):  # Gemma's RoPE: the rotation, then halves interleaved
        x = rope(x, np.arange(L))
        return tf.reshape(tf.stack(tf.split(x, 2, axis=-1), axis=-1), tf.shape(x))

    def forward(tokens):
        x = tokens * math.sqrt(backbone.hidden_dim)
        for i in range(backbone.num_layers):
            p = f"decoder_block_{i}/"
            h = rms_norm(x, W[p + "pre_attention_norm/scale"], eps, rules, plus_one=True)
            q = gemma_rope(tf.einsum("btd,ndh->btnh", h, W[p + "attention/query/kernel"]))
            k = gemma_rope(tf.einsum("bsd,kdh->bskh", h, W[p + "attention/key/kernel"]))
            v = tf.einsum("bsd,kdh->bskh", h, W[p + "attention/value/kernel"])
            q = q / math.sqrt(d)
            n = tf.shape(q)[0]
            q = tf.reshape(q, (n, L, KV, H // KV, d))  # query head = kv head * G + g
            scores = bilinear("btkgh,bskh->bkgts", q, k, rules, True)
            a = masked_softmax(scores, mask, rules)
            ctx = bilinear("bkgts,bskh->btkgh", a, v, rules, False)
            ctx = tf.reshape(ctx, (n, L, H, d))
            x = x + tf.einsum("btnh,nhd->btd", ctx, W[p + "attention/attention_output/kernel"])
            h = rms_norm(x, W[p + "pre_ffw_norm/scale"], eps, rules, plus_one=True)
            y = gated(gelu_tanh, h @ W[p + "ffw_gating/kernel"], h @ W[p + "ffw_gating_2/kernel"],
                      rules)
            x = x + y @ W[p + "ffw_linear/kernel"]
        h = rms_norm(x, W["final_normalization/scale"], eps, rules, plus_one=True)
        return h[:, -1] @ tf.transpose(table)

    tokens = tf.gather(table, token_ids)
    return _explain({"tokens": tokens}, forward, target)


def bert(backbone, head, token_ids, segment_ids, padding_mask, target,
         rules: Rules = LXT) -> Result:
    """KerasHub ``BertBackbone`` (post-norm encoder) + ``Dense`` head on the pooled output.

    Relevance is taken at the token and the segment embeddings. The position embedding is a
    constant (a bias of the embedding sum, absorbing its share), as in LXT, where only
    ``inputs_embeds`` is explained; its share is returned as ``"positions"`` (by the same
    gradient x input) only so that tests can check it is large enough to matter.
    """
    W = _weights(backbone)
    heads = backbone.num_heads
    L = token_ids.shape[1]
    mask = tf.constant(padding_mask.astype(bool)[:, None, None, :])  # (n, 1, 1, L) keys
    head_k, head_b = (const(w.numpy()) for w in head.weights)
    eps = 1e-12

    def forward(tokens, positions, segments):
        x = tokens + positions + segments
        x = layer_norm(x, W["embeddings_layer_norm/gamma"], W["embeddings_layer_norm/beta"], eps,
                       rules)
        for i in range(backbone.num_layers):
            p = f"transformer_layer_{i}/self_attention_layer/"
            q = tf.einsum("abc,cde->abde", x, W[p + "query/kernel"]) + W[p + "query/bias"]
            k = tf.einsum("abc,cde->abde", x, W[p + "key/kernel"]) + W[p + "key/bias"]
            v = tf.einsum("abc,cde->abde", x, W[p + "value/kernel"]) + W[p + "value/bias"]
            q = q / math.sqrt(backbone.hidden_dim // heads)
            scores = bilinear("aecd,abcd->acbe", k, q, rules, True)
            a = masked_softmax(scores, mask, rules)
            ctx = bilinear("acbe,aecd->abcd", a, v, rules, False)
            att = tf.einsum("abcd,cde->abe", ctx, W[p + "attention_output/kernel"])
            att = att + W[p + "attention_output/bias"]
            p = f"transformer_layer_{i}/"
            x = layer_norm(x + att, W[p + "self_attention_layer_norm/gamma"],
                           W[p + "self_attention_layer_norm/beta"], eps, rules)
            f = x @ W[p + "feedforward_intermediate_dense/kernel"]
            f = identity_rule(gelu_tanh, f + W[p + "feedforward_intermediate_dense/bias"], rules)
            f = f @ W[p + "feedforward_output_dense/kernel"]
            f = f + W[p + "feedforward_output_dense/bias"]
            x = layer_norm(x + f, W[p + "feedforward_layer_norm/gamma"],
                           W[p + "feedforward_layer_norm/beta"], eps, rules)
        pooled = x[:, 0] @ W["pooled_dense/kernel"] + W["pooled_dense/bias"]
        pooled = identity_rule(tf.tanh, pooled, rules)
        return pooled @ head_k + head_b

    n = token_ids.shape[0]
    embed = {"tokens": tf.gather(W["token_embedding/embeddings"], token_ids),
             "positions": tf.tile(W["position_embedding/embeddings"][None, :L], (n, 1, 1)),
             "segments": tf.gather(W["segment_embedding/embeddings"], segment_ids)}
    return _explain(embed, forward, target)
