"""Tests of the synthetic token task (tf_lrp.datasets.make_tokens), its example files and the
token pictures (tf_lrp.visualize.tokens). NumPy, Pillow and matplotlib only: no TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tf_lrp import visualize
from tf_lrp.datasets import (
    TOKENS_CLASSES,
    TOKENS_FILLER,
    TOKENS_KEYWORDS,
    TOKENS_LENGTH,
    TOKENS_NEGATORS,
    TOKENS_PAD,
    TOKENS_TEST_SEED,
    TOKENS_TRAIN_SEED,
    TOKENS_VOCAB,
    make_tokens,
)
from tf_lrp.errors import InputError
from tf_lrp.visualize import token_colors, tokens_html, tokens_png

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)  # bwr at +1, -1 and 0

KEYWORD_CLASS = {TOKENS_VOCAB.index(w): c for c, words in enumerate(TOKENS_KEYWORDS) for w in words}
NEGATORS = {TOKENS_VOCAB.index(w) for w in TOKENS_NEGATORS}


@pytest.fixture(scope="module")
def tokens():
    return make_tokens(400, seed=TOKENS_TEST_SEED)


def parse(sequence: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    """The rule written out: (classes of live keywords, of negated keywords, live mask)."""
    live, negated = [], []
    mask = np.zeros(len(sequence), dtype=bool)
    for p, token in enumerate(sequence):
        if int(token) in KEYWORD_CLASS:
            if p > 0 and int(sequence[p - 1]) in NEGATORS:
                negated.append(KEYWORD_CLASS[int(token)])
            else:
                live.append(KEYWORD_CLASS[int(token)])
                mask[p] = True
    return live, negated, mask


# ----------------------------------------------------------------------------- the data


def test_vocabulary():
    assert TOKENS_VOCAB[TOKENS_PAD] == "<pad>" and TOKENS_PAD == 0
    assert len(set(TOKENS_VOCAB)) == len(TOKENS_VOCAB) == 1 + 12 + 2 + 20
    assert len(TOKENS_KEYWORDS) == len(TOKENS_CLASSES) == 4
    assert set(TOKENS_FILLER).isdisjoint(w for words in TOKENS_KEYWORDS for w in words)


def test_shapes_dtypes_and_padding(tokens):
    x, y, masks = tokens
    assert x.shape == masks.shape == (400, TOKENS_LENGTH) and y.shape == (400,)
    assert x.dtype == np.int32 and y.dtype == np.int64 and masks.dtype == bool
    assert x.min() == 0 and x.max() < len(TOKENS_VOCAB)
    lengths = (x != TOKENS_PAD).sum(axis=1)
    assert lengths.min() >= 8 and lengths.max() == TOKENS_LENGTH and lengths.min() < 12
    for row, n in zip(x, lengths):  # tokens first, then only padding
        assert np.all(row[:n] != TOKENS_PAD) and np.all(row[n:] == TOKENS_PAD)
    assert not np.any(masks & (x == TOKENS_PAD))
    # classes come in shuffled blocks: every prefix of 4k samples is balanced
    assert np.array_equal(np.bincount(y[:100], minlength=4), [25] * 4)


def test_labels_are_decided_by_the_planted_keywords(tokens):
    x, y, masks = tokens
    n_live, n_negated, n_negators = [], [], []
    for row, label, mask in zip(x, y, masks):
        live, negated, parsed_mask = parse(row)
        assert set(live) == {label}  # every live keyword names the label, and there is one
        assert label not in negated  # negated keywords are other classes'
        np.testing.assert_array_equal(parsed_mask, mask)  # the mask is the live keywords
        n_live.append(len(live))
        n_negated.append(len(negated))
        n_negators.append(int(np.isin(row, list(NEGATORS)).sum()))
    assert set(n_live) == {1, 2} and set(n_negated) == {0, 1, 2}
    # negators also stand before filler words: more negators than negated keywords
    assert np.sum(np.array(n_negators) > np.array(n_negated)) > 50


def test_counting_keywords_is_not_enough(tokens):
    x, y, _ = tokens
    counts = np.zeros((len(x), 4), dtype=int)
    for i, row in enumerate(x):
        for token in row:
            if int(token) in KEYWORD_CLASS:
                counts[i, KEYWORD_CLASS[int(token)]] += 1
    label_counts = counts[np.arange(len(y)), y]
    assert np.mean(counts.max(axis=1) > label_counts) > 0.02  # another class has more
    ties = (counts.max(axis=1) == label_counts) & ((counts == label_counts[:, None]).sum(1) > 1)
    assert np.mean(ties) > 0.2  # another class has as many


def test_deterministic_prefix_stable_and_seed_dependent(tokens):
    x, y, masks = tokens
    x2, y2, masks2 = make_tokens(50, seed=TOKENS_TEST_SEED)
    np.testing.assert_array_equal(x2, x[:50])
    np.testing.assert_array_equal(y2, y[:50])
    np.testing.assert_array_equal(masks2, masks[:50])
    x3, _, _ = make_tokens(50, seed=TOKENS_TRAIN_SEED)
    assert TOKENS_TRAIN_SEED != TOKENS_TEST_SEED and not np.array_equal(x3, x2)
    assert make_tokens(0)[0].shape == (0, TOKENS_LENGTH)


def test_other_length():
    x, y, masks = make_tokens(20, length=10, seed=3)
    assert x.shape == masks.shape == (20, 10)
    assert (x != 0).sum(axis=1).min() >= 8
    for row, label in zip(x, y):
        assert set(parse(row)[0]) == {label}


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=-1), dict(n=2.5), dict(n=True), dict(n=3, length=7), dict(n=3, seed=-1)],
)
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_tokens(**kwargs)


def test_example_files_are_held_out_sequences():
    x = np.load(EXAMPLES / "text_32.npy")
    masks = np.load(EXAMPLES / "text_masks.npy")
    labels = np.load(EXAMPLES / "text_labels.npy")
    assert x.dtype == np.int32 and x.shape == (8, TOKENS_LENGTH) and masks.dtype == bool
    held_out, y, held_out_masks = make_tokens(50, seed=TOKENS_TEST_SEED)
    for row, mask, label in zip(x, masks, labels):
        (index,) = np.flatnonzero(np.all(held_out == row, axis=1))
        np.testing.assert_array_equal(held_out_masks[index], mask)
        assert y[index] == label
    vocab = (EXAMPLES / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert tuple(vocab) == TOKENS_VOCAB


# ----------------------------------------------------------------------------- pictures


def test_colours_are_the_heatmap_colours():
    relevance = np.array([[2.0, -1.0, 0.0, 0.5, -2.0]])
    (colors,) = token_colors(np.array([[1, 2, 3, 4, 5]]), relevance)
    assert tuple(colors[0]) == RED and tuple(colors[4]) == BLUE and tuple(colors[2]) == WHITE
    np.testing.assert_array_equal(colors, visualize.heatmap(relevance[None])[0, 0])
    assert colors[1, 2] == 255 and colors[1, 0] == colors[1, 1] == 126  # -0.5: half blue


def test_padding_is_outside_the_scale():
    colors = token_colors(np.array([[5, 6, 0, 0]]), np.array([[1.0, 0.5, 100.0, -7.0]]))[0]
    assert tuple(colors[0]) == RED  # the padding's 100 does not set the scale
    assert tuple(colors[2]) == tuple(colors[3]) == visualize.tokens.PADDING_BACKGROUND
    # per_sample=False: one scale for the batch, the weaker sequence is lighter
    weak = token_colors(np.array([[1], [1]]), np.array([[4.0], [1.0]]), per_sample=False)
    assert tuple(weak[0][0]) == RED and weak[1][0][1] > 150


def test_embedding_axis_is_summed_and_ragged_sequences():
    per_dim = np.zeros((1, 3, 4))
    per_dim[0, 0] = 1.0
    per_dim[0, 2] = -0.5
    colors = token_colors(np.array([[1, 2, 3]]), per_dim)[0]
    assert tuple(colors[0]) == RED and tuple(colors[1]) == WHITE
    ragged = token_colors([np.array([1, 2]), np.array([3, 4, 5])],
                          [np.array([1.0, -1.0]), np.array([0.0, 0.0, 3.0])])
    assert [len(c) for c in ragged] == [2, 3] and tuple(ragged[1][2]) == RED


def test_html_escapes_colours_tooltips_and_padding():
    vocab = ["<pad>", "<b>bold</b>", "fine", 'say "hi" & go']
    x = np.array([[1, 2, 3, 0], [2, 2, 0, 0]])
    relevance = np.array([[0.5, -0.25, 0.0, 9.0], [1.0, 0.0, 0.0, 0.0]])
    page = tokens_html(x, relevance, vocab, labels=["a<b", "c"])
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert "<b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "say &quot;hi&quot; &amp; go" in page and "a&lt;b" in page
    assert "&lt;pad&gt;" not in page  # padding left out by default
    spans = re.findall(r'<span class="tok" style="background-color:(#[0-9a-f]{6});'
                       r'color:(#[0-9a-f]{6})" title="([^"]*)">([^<]*)</span>', page)
    assert len(spans) == 5 and page.count('class="line"') == 2
    assert spans[0] == ("#ff0000", "#ffffff", "relevance 0.5", "&lt;b&gt;bold&lt;/b&gt;")
    assert spans[1][0] == "#7e7eff" and spans[1][2] == "relevance -0.25"
    assert spans[2][:3] == ("#ffffff", "#000000", "relevance 0")
    shown = tokens_html(x, relevance, vocab, show_padding=True, full_page=False)
    assert not shown.startswith("<!DOCTYPE") and shown.count('class="tok pad"') == 3
    assert 'title="padding, relevance 9"' in shown


def test_html_of_string_tokens_and_errors():
    page = tokens_html([["not", "<pad>"]], [[-1.0, 0.0]], padding="<pad>", full_page=False)
    assert "background-color:#0000ff" in page and "&lt;pad&gt;" not in page
    assert ">5<" in tokens_html(np.array([5]), np.array([1.0]))  # no vocab: the ids
    with pytest.raises(InputError, match="outside the vocabulary"):
        tokens_html(np.array([[7]]), np.array([[1.0]]), vocab=["<pad>", "a"])
    with pytest.raises(InputError, match="does not match"):
        tokens_html(np.array([[1, 2]]), np.array([[1.0, 2.0, 3.0]]))
    with pytest.raises(InputError, match="NaN"):
        tokens_html(np.array([[1]]), np.array([[np.nan]]))
    with pytest.raises(InputError, match="labels"):
        tokens_html(np.array([[1]]), np.array([[1.0]]), labels=["a", "b"])


def test_png_draws_the_token_colours(tmp_path):
    x = np.array([[1, 2, 3, 0], [3, 0, 0, 0]])
    relevance = np.array([[1.0, -1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    path = tmp_path / "tokens.png"
    image = tokens_png(x, relevance, TOKENS_VOCAB, labels=["x", "y"], path=path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[1:] == (800, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    pixels = {tuple(p) for p in image.reshape(-1, 3)}
    assert RED in pixels and BLUE in pixels
    assert tuple(visualize.tokens.PADDING_BACKGROUND) not in pixels  # padding left out
    assert tuple(image[0, 0]) == WHITE
    one = tokens_png(x[:1], relevance[:1], TOKENS_VOCAB)
    assert image.shape[0] > one.shape[0]  # a line per sequence
    long = tokens_png(np.ones((1, 100), dtype=int), np.ones((1, 100)), TOKENS_VOCAB, width=200)
    assert long.shape[0] > 5 * one.shape[0]  # wrapped onto several rows
    shown = tokens_png(x, relevance, TOKENS_VOCAB, show_padding=True)
    assert tuple(visualize.tokens.PADDING_BACKGROUND) in {tuple(p) for p in shown.reshape(-1, 3)}


def test_existing_image_names_stay_importable():
    from tf_lrp.visualize import (  # noqa: F401
        REDUCE_MODES,
        grid,
        heatmap,
        normalize,
        overlay,
        reduce_channels,
        save_png,
    )

    assert set(visualize.__all__) >= {"heatmap", "tokens_html", "tokens_png", "token_colors"}
