"""Two language-model tasks whose answer's evidence is known: key-value retrieval and copying.

The shipped language model (``saved_models/lm_retrieval.keras``, ``scripts/train_lm.py``) is
trained on them, and ``scripts/quality_lm.py`` measures how much relevance each method puts on
the evidence. Word-level vocabulary :data:`VOCABULARY` (one token per word, see
:class:`tf_lrp.lm.WordTokenizer`).

* **Retrieval**: ``<s> k3 v7 k1 v2 k5 v0 ? k1 v2 </s>``: 3 to 5 pairs of distinct keys and
  their values, ``?`` and the query, one of the keys; the answer is that key's value.
  Evidence: the queried pair in the context (``k1 v2``: the key and the value).
* **Copy**: ``<s> copy c a f | c a f </s>``: 3 to 6 letters, then the same letters. Evidence
  for the ``i``-th copied letter: the ``i``-th letter of the source.

The prompt ends with the query key or ``|``; what follows is the answer (the tokens a model
generates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYS = [f"k{i}" for i in range(10)]
VALUES = [f"v{i}" for i in range(10)]
LETTERS = list("abcdefghij")
#: the word-level vocabulary; id ``i`` is ``VOCABULARY[i]`` (0 is padding)
VOCABULARY = ["<pad>", "<s>", "</s>", "?", "copy", "|", *KEYS, *VALUES,
              *LETTERS]
PAD, START, END = 0, 1, 2
#: the longest sample: 5 pairs of retrieval (15 tokens) or 6 letters of copy (16)
LENGTH = 16
_ID = {w: i for i, w in enumerate(VOCABULARY)}


@dataclass
class Sample:
    """One sample: ``words`` (prompt and answer), ``prompt_length``, and for each answer token
    the positions of its evidence in the prompt."""

    task: str
    words: list[str]
    prompt_length: int
    evidence: list[list[int]]

    @property
    def ids(self) -> np.ndarray:
        return np.array([_ID[w] for w in self.words], np.int32)


def retrieval(rng: np.random.Generator, pairs: int | None = None) -> Sample:
    """A key-value retrieval sample with ``pairs`` pairs (random 3-5)."""
    n = int(rng.integers(3, 6)) if pairs is None else pairs
    keys = rng.choice(len(KEYS), n, replace=False)
    values = rng.integers(0, len(VALUES), n)
    words = ["<s>"]
    for k, v in zip(keys, values):
        words += [KEYS[k], VALUES[v]]
    q = int(rng.integers(0, n))
    key_at = 1 + 2 * q
    words += ["?", KEYS[keys[q]]]
    prompt_length = len(words)
    words += [VALUES[values[q]], "</s>"]
    return Sample("retrieval", words, prompt_length, [[key_at, key_at + 1], []])


def copy(rng: np.random.Generator, letters: int | None = None) -> Sample:
    """A copy sample of ``letters`` letters (random 3-6)."""
    n = int(rng.integers(3, 7)) if letters is None else letters
    source = [LETTERS[i] for i in rng.integers(0, len(LETTERS), n)]
    words = ["<s>", "copy", *source, "|"]
    prompt_length = len(words)
    words += [*source, "</s>"]
    return Sample("copy", words, prompt_length, [[2 + i] for i in range(n)] + [[]])


def make_samples(n: int, seed: int) -> list[Sample]:
    """``n`` samples, alternately retrieval and copy."""
    rng = np.random.default_rng(seed)
    return [retrieval(rng) if i % 2 == 0 else copy(rng) for i in range(n)]


def batch(samples: list[Sample], length: int = LENGTH) -> dict[str, np.ndarray]:
    """Training arrays: ``token_ids``/``padding_mask`` (right-padded to ``length``), the next
    token at each position (``labels``) and ``weights`` 1 where the next token is an answer."""
    n = len(samples)
    ids = np.zeros((n, length), np.int32)
    labels = np.zeros((n, length), np.int32)
    weights = np.zeros((n, length), np.float32)
    for i, s in enumerate(samples):
        t = s.ids
        ids[i, :len(t)] = t
        labels[i, :len(t) - 1] = t[1:]
        weights[i, s.prompt_length - 1:len(t) - 1] = 1.0
    return {"token_ids": ids, "padding_mask": (ids != PAD).astype(np.int32), "labels": labels,
            "weights": weights}


__all__ = ["LENGTH", "Sample", "VOCABULARY", "batch", "copy", "make_samples", "retrieval"]
