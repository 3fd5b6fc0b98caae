"""What a language model writes: the relevance of every earlier token for every generated token.

:func:`explain_generation` generates greedily from a prompt (or takes a given continuation),
then explains each generated token in one traced call: the ``T`` targets share one forward
pass over the whole sequence and their backward passes run as ``T`` copies
(:meth:`tf_lrp.Analyzer.explain_outputs`). The result, a :class:`Generation`, holds the matrix
``R[t, s]``: the relevance of token ``s`` (prompt and earlier generated tokens) for generated
token ``t``, zero where ``s`` is at or after that token's own position.

Targets (``target=``):

* ``"logit"``: the chosen token's logit (default);
* ``"logprob"``: its log-probability, through LRP's log-odds start over the vocabulary at
  that position: the logit ``y_a`` counts fully and every other logit ``y_v`` with weight
  ``-q_v``, ``q`` the softmax of the other logits (``log p_a = y_a - log sum_v e^{y_v}``, whose
  gradient with respect to the other logits is ``-p_v``);
* ``("contrast", b)``: ``logit(a) - logit(b)`` ("why *Paris* and not *London*"), ``b`` a token
  (text or id).

``span=(i, j)`` explains the sum of the targets of generated tokens ``i..j-1`` as one row.
LRP's rules are linear in the relevance they start from, so a span's row equals the sum of
its tokens' rows, and a contrast's row the difference of two explanations.

Sequences are padded on the right to a multiple of ``pad_to`` tokens (padding mask 0; at most
the backbone's ``max_sequence_length`` where it has one), so a new prompt length reuses the
traced computation of its bucket. Models: a KerasHub
``CausalLM`` (its preprocessor's tokenizer is used for text), a preset directory or ``.keras``
file of one, or any Keras model mapping token ids (and optionally a padding mask) of shape
``(n, L)`` to next-token logits ``(n, L, vocab)``, with a ``tokenizer`` (a KerasHub tokenizer, a
:class:`WordTokenizer`, or a list of words). A ``.keras`` file with a ``<stem>.vocab.txt``
beside it gets that word-level tokenizer.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tf_lrp.errors import InputError

__all__ = ["Generation", "WordTokenizer", "explain_generation", "load_tokenizer"]


class WordTokenizer:
    """A word-level tokenizer: text is split on whitespace; id ``i`` is ``vocabulary[i]``.

    Parameters
    ----------
    vocabulary
        The words (a list, or the path of a file with one word per line).
    start, end
        The start and end tokens (``start`` is put before a text prompt; generation stops
        after ``end``). ``None``: none.
    """

    def __init__(self, vocabulary, start: str | None = "<s>", end: str | None = "</s>"):
        if isinstance(vocabulary, (str, Path)):
            vocabulary = Path(vocabulary).read_text(encoding="utf-8").splitlines()
        self.vocabulary = list(vocabulary)
        self._ids = {w: i for i, w in enumerate(self.vocabulary)}
        self.start_token_id = self._ids.get(start) if start else None
        self.end_token_id = self._ids.get(end) if end else None

    def __call__(self, text: str) -> np.ndarray:
        words = text.split()
        unknown = [w for w in words if w not in self._ids]
        if unknown:
            raise InputError(f"words not in the vocabulary: {unknown[:5]}")
        ids = [self._ids[w] for w in words]
        if self.start_token_id is not None and (not ids or ids[0] != self.start_token_id):
            ids = [self.start_token_id] + ids
        return np.array(ids, np.int32)

    def id_to_token(self, i: int) -> str:
        return self.vocabulary[int(i)]

    def token_to_id(self, word: str) -> int:
        if word not in self._ids:
            raise InputError(f"{word!r} is not in the vocabulary")
        return self._ids[word]


def load_tokenizer(model_path) -> WordTokenizer | None:
    """The :class:`WordTokenizer` of ``<stem>.vocab.txt`` beside a model file, if there is one."""
    path = Path(model_path)
    vocab = path.with_suffix(".vocab.txt")
    return WordTokenizer(vocab) if path.suffix and vocab.is_file() else None


@dataclass
class Generation:
    """A generation and its explanation.

    Attributes
    ----------
    token_ids
        ``(P + T,)`` the prompt's and the generated tokens' ids.
    tokens
        The tokens as text (``None`` without a tokenizer).
    prompt_length
        ``P``.
    relevance
        ``(T, P + T)`` float32 (one row with ``span``): ``relevance[t, s]`` is the relevance of
        token ``s`` for generated token ``t``; 0 for ``s >= P + t``.
    target
        What each row explains (``"logit"``, ``"logprob"`` or ``"contrast:<token>"``).
    scores
        ``(T,)`` the explained quantity per row (the logit, log-probability or difference).
    rows
        The generated token (index into the generation) each row explains; for a span, the
        span's ``(first, stop)``.
    """

    token_ids: np.ndarray
    tokens: list[str] | None
    prompt_length: int
    relevance: np.ndarray
    target: str
    scores: np.ndarray
    rows: list = field(default_factory=list)

    @property
    def generated(self) -> np.ndarray:
        return self.token_ids[self.prompt_length:]

    def text(self) -> list[str]:
        """The tokens as text (ids as strings without a tokenizer)."""
        return self.tokens if self.tokens is not None else [str(i) for i in self.token_ids]

    def save(self, directory) -> dict[str, Path]:
        """Write ``generation.html``, ``matrix.png``, ``tokens.png``, ``relevance.npy``,
        ``relevance.csv`` and ``generation.json`` to ``directory``; return the paths."""
        from tf_lrp.visualize import generation as view

        return view.save(self, Path(directory))


# ----------------------------------------------------------------------------------- model
def _resolve(model, tokenizer):
    if isinstance(model, (str, Path)):
        from tf_lrp.io import load_model

        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        model = load_model(model)
    preprocessor = getattr(model, "preprocessor", None)
    if tokenizer is None and preprocessor is not None:
        tokenizer = getattr(preprocessor, "tokenizer", None)
    if isinstance(tokenizer, (list, tuple)):
        tokenizer = WordTokenizer(tokenizer)
    names = [t.name.split(":")[0] for t in model.inputs]
    token_input = "token_ids" if "token_ids" in names else names[0]
    if len(names) > 2 or len(names) == 2 and "padding_mask" not in names:
        raise InputError(f"the model's inputs are {names}; explain_generation takes models of "
                         "token ids (and a padding_mask)")
    return model, tokenizer, names, token_input


def _encode(prompt, tokenizer, preprocessor) -> np.ndarray:
    if not isinstance(prompt, str):
        ids = np.asarray(prompt).reshape(-1)
        if ids.dtype.kind not in "iu" or ids.size == 0:
            raise InputError(f"a prompt of token ids must be a non-empty integer array; got "
                             f"{ids.dtype} of shape {ids.shape}")
        return ids.astype(np.int32)
    if preprocessor is not None and hasattr(preprocessor, "generate_preprocess"):
        length = int(getattr(preprocessor, "sequence_length", None) or 1024)
        out = preprocessor.generate_preprocess([prompt], sequence_length=length)
        ids = np.asarray(out["token_ids"])[0]
        return ids[np.asarray(out["padding_mask"])[0].astype(bool)].astype(np.int32)
    if tokenizer is None:
        raise InputError("a text prompt needs a tokenizer: pass tokenizer= (a KerasHub "
                         "tokenizer, a WordTokenizer or a list of words) or token ids")
    return np.asarray(tokenizer(prompt)).reshape(-1).astype(np.int32)


def _token_text(tokenizer, ids) -> list[str] | None:
    if tokenizer is None or not hasattr(tokenizer, "id_to_token"):
        return None
    return [str(tokenizer.id_to_token(int(i))).replace("\u2581", " ").replace("\u0120", " ")
            for i in ids]


def _token_id(token, tokenizer) -> int:
    if isinstance(token, (int, np.integer)):
        return int(token)
    if tokenizer is None or not hasattr(tokenizer, "token_to_id"):
        raise InputError(f"contrast token {token!r} given as text needs a tokenizer with "
                         "token_to_id; pass its id")
    return int(tokenizer.token_to_id(token))


_ANALYZERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _analyzer(model, composite):
    from tf_lrp.analyzer import Analyzer

    if composite is None:
        composite = "attn_lrp"
    if isinstance(composite, Analyzer):
        return composite
    cache = _ANALYZERS.setdefault(model, {})
    key = repr(composite)
    if key not in cache:
        cache[key] = Analyzer(model, composite)
    return cache[key]


class _Runner:
    """The model's inputs for a token sequence, padded to a bucket length."""

    def __init__(self, analyzer, names, token_input, pad_to: int, limit: int | None):
        self.analyzer, self.names, self.token_input, self.pad_to, self.limit = \
            analyzer, names, token_input, pad_to, limit

    def inputs(self, ids: np.ndarray, length: int) -> dict | np.ndarray:
        tokens = np.zeros((1, length), np.int32)
        tokens[0, :len(ids)] = ids
        if len(self.names) == 1:
            return tokens
        mask = np.zeros((1, length), np.int32)
        mask[0, :len(ids)] = 1
        return {self.token_input: tokens, "padding_mask": mask}

    def bucket(self, n: int) -> int:
        """``n`` rounded up to a multiple of ``pad_to``, at most the model's longest sequence
        (a learned position table)."""
        if self.limit is not None and n > self.limit:
            raise InputError(f"{n} tokens (prompt and new tokens) exceed the model's longest "
                             f"sequence, {self.limit}: shorten the prompt or max_new_tokens")
        length = int(math.ceil(n / self.pad_to) * self.pad_to)
        return min(length, self.limit) if self.limit is not None else length

    def logits(self, ids: np.ndarray, length: int) -> np.ndarray:
        """``(length, vocab)`` logits of the padded sequence."""
        y = self.analyzer.predict(self.inputs(ids, length))
        return y.reshape(length, -1)


def _generate(runner: _Runner, prompt: np.ndarray, steps: int, end: int | None, length: int
              ) -> np.ndarray:
    ids = prompt.copy()
    for _ in range(steps):
        logits = runner.logits(ids, length)
        nxt = int(np.argmax(logits[len(ids) - 1]))
        ids = np.append(ids, np.int32(nxt))
        if end is not None and nxt == end:
            break
    return ids


def log_odds_weights(logits: np.ndarray, token: int) -> np.ndarray:
    """The log-odds start's coefficients over one position's vocabulary: 1 at ``token``,
    ``-q_v`` elsewhere, ``q`` the softmax of the other logits."""
    others = np.asarray(logits, np.float64).copy()
    others[token] = -np.inf
    q = np.exp(others - others.max())
    q /= q.sum()
    w = -q
    w[token] = 1.0
    return w.astype(np.float32)


def explain_generation(model, prompt, max_new_tokens: int = 16, *, continuation=None,
                       target="logit", span: tuple[int, int] | None = None, tokenizer=None,
                       composite=None, pad_to: int = 32) -> Generation:
    """Generate from ``prompt`` and explain every generated token (module docstring).

    Parameters
    ----------
    model
        A KerasHub ``CausalLM`` (or its preset directory / ``.keras`` file), or a Keras model
        from token ids (and padding mask) ``(n, L)`` to logits ``(n, L, vocab)``.
    prompt
        Text (run through the model's preprocessor or ``tokenizer``) or token ids.
    max_new_tokens
        How many tokens to generate greedily (fewer if the end token comes first).
    continuation
        The tokens to explain instead of generating (text or ids), e.g. a reference answer.
    target
        ``"logit"``, ``"logprob"`` or ``("contrast", token)``.
    span
        ``(first, stop)``: explain the sum of these generated tokens' targets as one row.
    tokenizer
        For text: a KerasHub tokenizer, a :class:`WordTokenizer` or a list of words.
    composite
        The LRP composite (default ``"attn_lrp"``), or a built :class:`tf_lrp.Analyzer`.
        Analyzers are kept per model and composite.
    pad_to
        Sequences are padded to a multiple of this length.
    """
    model, tokenizer, names, token_input = _resolve(model, tokenizer)
    preprocessor = getattr(model, "preprocessor", None)
    prompt_ids = _encode(prompt, tokenizer, preprocessor)
    if max_new_tokens < 1 and continuation is None:
        raise InputError("max_new_tokens must be at least 1")
    analyzer = _analyzer(model, composite)
    limit = getattr(getattr(model, "backbone", model), "max_sequence_length", None)
    runner = _Runner(analyzer, names, token_input, pad_to,
                     int(limit) if isinstance(limit, (int, np.integer)) else None)
    if continuation is not None:
        extra = _encode(continuation, None, None) if not isinstance(continuation, str) else \
            _encode(continuation, tokenizer, None)
        if isinstance(continuation, str) and isinstance(tokenizer, WordTokenizer) and \
                tokenizer.start_token_id is not None and extra[0] == tokenizer.start_token_id:
            extra = extra[1:]
        ids = np.concatenate([prompt_ids, extra]).astype(np.int32)
    else:
        end = getattr(tokenizer, "end_token_id", None)
        length = runner.bucket(len(prompt_ids) + max_new_tokens)
        ids = _generate(runner, prompt_ids, max_new_tokens, end, length)
    p, total = len(prompt_ids), len(ids)
    steps = total - p
    if steps < 1:
        raise InputError("nothing to explain: the continuation is empty")
    length = runner.bucket(total)
    x = runner.inputs(ids[:-1], length)
    logits = runner.logits(ids[:-1], length)
    vocab = logits.shape[1]
    positions = np.arange(p - 1, total - 1)
    chosen = ids[p:]
    if target == "logit":
        idx = (positions * vocab + chosen)[:, None]
        w = np.ones_like(idx, np.float32)
        scores = logits[positions, chosen]
        label = "logit"
    elif target == "logprob":
        idx = positions[:, None] * vocab + np.arange(vocab)[None]
        w = np.stack([log_odds_weights(logits[q], a) for q, a in zip(positions, chosen)])
        row = logits[positions].astype(np.float64)
        scores = (row[np.arange(steps), chosen] - np.log(np.exp(
            row - row.max(1, keepdims=True)).sum(1)) - row.max(1)).astype(np.float32)
        label = "logprob"
    elif isinstance(target, tuple) and len(target) == 2 and target[0] == "contrast":
        other = _token_id(target[1], tokenizer)
        if not 0 <= other < vocab:
            raise InputError(f"contrast token id {other} outside the vocabulary of {vocab}")
        idx = np.stack([positions * vocab + chosen, positions * vocab + other], axis=1)
        w = np.tile(np.array([[1.0, -1.0]], np.float32), (steps, 1))
        scores = logits[positions, chosen] - logits[positions, other]
        label = f"contrast:{target[1]}"
    else:
        raise InputError(f"target must be 'logit', 'logprob' or ('contrast', token); got "
                         f"{target!r}")
    rows: list = list(range(steps))
    if span is not None:
        first, stop = span
        if not 0 <= first < stop <= steps:
            raise InputError(f"span {span} outside the {steps} generated tokens")
        idx, w = idx[first:stop].reshape(1, -1), w[first:stop].reshape(1, -1)
        scores = np.array([scores[first:stop].sum()], np.float32)
        rows = [(first, stop)]
    r = analyzer.explain_outputs(x, idx[None], w[None])
    if isinstance(r, list):
        r = r[analyzer.input_names.index(token_input)]
    r = np.asarray(r, np.float32)[0]  # (rows, length)
    r = r.reshape(r.shape[0], length, -1).sum(-1) if r.ndim > 2 else r
    relevance = np.zeros((len(rows), total), np.float32)
    relevance[:, :total - 1] = r[:, :total - 1]
    last = [p + (row[1] - 1 if isinstance(row, tuple) else row) for row in rows]
    relevance[np.arange(total)[None, :] >= np.array(last)[:, None]] = 0.0
    return Generation(ids.astype(np.int32), _token_text(tokenizer, ids), p, relevance, label,
                      np.asarray(scores, np.float32), rows)
