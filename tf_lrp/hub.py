"""KerasHub task models explained from text: ``explain_text`` and next-token targets.

KerasHub (``pip install tf_lrp[hub]``) task models (``TextClassifier``, ``CausalLM``) are
Functional models whose blocks are custom layers; :class:`tf_lrp.Analyzer` explains them
directly (the blocks are flattened into their parts, :mod:`tf_lrp.flatten`). This module adds
what a user of a text model wants on top:

* :func:`explain_text`: strings in, tokens (as text) and their relevance out, through the task's
  own preprocessor;
* :func:`next_token_targets`: for a causal language model, whose output is
  ``(n, length, vocabulary)``, the flat target ``position * vocabulary + token`` of the token
  predicted after the last non-padded position (any other output is a target too, as for any
  output shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tf_lrp.errors import InputError


@dataclass
class TextExplanation:
    """The relevance of every token of one text.

    Attributes
    ----------
    tokens
        The tokens as text (special tokens and padding included, as the model saw them).
    token_ids
        The token ids.
    relevance
        float32 relevance per token (0 on padding).
    target
        The explained output (flat index; for a causal LM ``position * vocabulary + token``).
    logit
        The explained output's value.
    """

    tokens: list[str]
    token_ids: np.ndarray
    relevance: np.ndarray
    target: int
    logit: float


def _is_causal_lm(task) -> bool:
    import keras_hub

    return isinstance(task, keras_hub.models.CausalLM)


def preprocess(task, texts: list[str]) -> dict[str, np.ndarray]:
    """The model inputs the task's own preprocessor makes of ``texts`` (a dict of arrays)."""
    pre = getattr(task, "preprocessor", None)
    if pre is None:
        raise InputError(f"{type(task).__name__} has no preprocessor, so it cannot take text: "
                         "build it with one (from_preset(dir) keeps it), or explain token ids "
                         "with tf_lrp.Analyzer(task)")
    if isinstance(texts, str):
        texts = [texts]
    out = pre.generate_preprocess(texts) if _is_causal_lm(task) else pre(texts)
    if isinstance(out, tuple):  # (x, y, sample_weight)
        out = out[0]
    return {k: np.asarray(v) for k, v in out.items()}


def next_token_targets(logits: np.ndarray, padding_mask: np.ndarray,
                       tokens: np.ndarray | None = None) -> np.ndarray:
    """Flat targets ``position * vocabulary + token`` for the token after the last non-padded
    position of each sample.

    Parameters
    ----------
    logits
        The causal LM's output, ``(n, length, vocabulary)`` (or flattened to
        ``(n, length * vocabulary)`` with ``padding_mask`` giving the length).
    padding_mask
        ``(n, length)``, non-zero on real tokens.
    tokens
        The token to explain per sample; default: the one the model predicts there.
    """
    mask = np.asarray(padding_mask).astype(bool)
    n, length = mask.shape
    logits = np.asarray(logits).reshape(n, length, -1)
    if not mask.any(axis=1).all():
        raise InputError("a sample has no token (its padding mask is all zero)")
    last = length - 1 - np.argmax(mask[:, ::-1], axis=1)
    vocab = logits.shape[-1]
    if tokens is None:
        tokens = logits[np.arange(n), last].argmax(axis=-1)
    tokens = np.broadcast_to(np.asarray(tokens, np.int64), (n,))
    if ((tokens < 0) | (tokens >= vocab)).any():
        raise InputError(f"token ids must lie in 0..{vocab - 1}")
    return (last * vocab + tokens).astype(np.int64)


def explain_text(task, texts, analyzer=None, target=None, composite="attn_lrp",
                 **kwargs) -> list[TextExplanation]:
    """Explain a KerasHub text task model on strings.

    Parameters
    ----------
    task
        A ``keras_hub.models.TextClassifier`` or ``CausalLM`` with its preprocessor (e.g.
        ``from_preset(local_dir)``).
    texts
        A string or a list of strings.
    analyzer
        An analyzer of ``task`` to reuse (built once; later calls then do not retrace); default:
        ``tf_lrp.Analyzer(task, composite, **kwargs)``.
    target
        Classifier: the class (default: the predicted one). Causal LM: the token id to explain
        after the last non-padded position (default: the predicted next token), or ``None``.
    composite, kwargs
        For the analyzer built here (default AttnLRP).

    Returns
    -------
    list of TextExplanation
        One per text.
    """
    from tf_lrp.analyzer import Analyzer

    x = preprocess(task, texts)
    analyzer = analyzer or Analyzer(task, composite, **kwargs)
    logits = analyzer.predict(x)
    if _is_causal_lm(task):
        targets = next_token_targets(logits, x["padding_mask"], target)
    else:
        targets = logits.argmax(axis=1) if target is None else \
            np.broadcast_to(np.asarray(target, np.int64), (len(logits),))
    relevance = analyzer(x, target=targets)
    names = analyzer.input_names  # the order of the relevance list
    token_key = "token_ids" if "token_ids" in x else names[0]
    r = relevance[names.index(token_key)] if isinstance(relevance, list) else relevance
    tokenizer = task.preprocessor.tokenizer
    out = []
    for i, ids in enumerate(x[token_key]):
        words = [str(tokenizer.id_to_token(int(t))) for t in ids]
        out.append(TextExplanation(words, ids, r[i].astype(np.float32), int(targets[i]),
                                   float(logits[i, targets[i]])))
    return out


__all__ = ["TextExplanation", "explain_text", "next_token_targets", "preprocess"]
