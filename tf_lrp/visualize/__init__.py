"""Relevance as pictures: heatmaps of images and coloured tokens of sequences.

Everything here is NumPy in, NumPy out (strings for HTML); nothing depends on TensorFlow.
Both kinds of picture share one colour scale: relevance is divided by its largest ``|R|``
per sample (:func:`normalize`, symmetric, so zero stays zero and the sign is kept) and
``-1 -> 0``, ``0 -> 0.5``, ``+1 -> 1`` of a diverging colormap (default ``"bwr"``: blue
negative, white zero, red positive, as in the LRP literature).

Images (:mod:`tf_lrp.visualize.images`)
    :func:`reduce_channels`, :func:`normalize`, :func:`heatmap`, :func:`overlay`,
    :func:`grid`, :func:`save_png`.

Tokens (:mod:`tf_lrp.visualize.tokens`)
    :func:`token_colors` (the RGB colour of every token), :func:`tokens_html` (an HTML page
    or fragment, one line per sequence, relevance in each token's tooltip) and
    :func:`tokens_png` (the same as an RGB image, optionally written to a PNG file).

Examples
--------
>>> R = analyzer(x)                                   # (n, 28, 28, 1)
>>> save_png("heatmaps.png", grid(overlay(heatmap(R), x)))
>>> R = analyzer(tokens)                              # (n, 32): one value per token
>>> page = tokens_html(tokens, R, vocab=TOKENS_VOCAB)
>>> tokens_png(tokens, R, vocab=TOKENS_VOCAB, path="tokens.png")
"""

from __future__ import annotations

from tf_lrp.visualize.images import (
    REDUCE_MODES,
    grid,
    heatmap,
    normalize,
    overlay,
    reduce_channels,
    save_png,
)
from tf_lrp.visualize.tokens import token_colors, tokens_html, tokens_png

__all__ = [
    "REDUCE_MODES",
    "grid",
    "heatmap",
    "normalize",
    "overlay",
    "reduce_channels",
    "save_png",
    "token_colors",
    "tokens_html",
    "tokens_png",
]
