"""Token relevance as pictures: coloured tokens as HTML or as an RGB image.

A token's colour comes from the same scale as the image heatmaps (:func:`heatmap`): its
relevance divided by the largest ``|R|`` of the tokens shown in its sequence (or in the whole
batch with ``per_sample=False``), then ``-1 -> 0``, ``0 -> 0.5``, ``+1 -> 1`` of a diverging
colormap (default ``"bwr"``: blue negative, white zero, red positive), quantised to the same
255 levels. Padding tokens take no part in the scale: they are left out or drawn grey.

Tokens are given as integer ids (an array ``(n, length)`` or ``(length,)``, or a list of 1-D
id arrays of different lengths) with an optional ``vocab`` mapping ids to strings, or as
strings directly (a list of lists of strings). Relevance has the tokens' shape; relevance
with one more trailing axis (per embedding dimension) is summed over it.

Examples
--------
>>> R = analyzer(x)                                            # (n, 32) token relevance
>>> html = tokens_html(x, R, vocab=TOKENS_VOCAB, labels=["food", "sports"])
>>> Path("tokens.html").write_text(html, encoding="utf-8")
>>> rgb = tokens_png(x, R, vocab=TOKENS_VOCAB, path="tokens.png")
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.colors import Colormap

from tf_lrp.errors import InputError
from tf_lrp.visualize.images import _as_float_array, heatmap, save_png

__all__ = ["token_colors", "tokens_html", "tokens_png"]

#: Background and text colour of padding tokens drawn with ``show_padding=True``.
PADDING_BACKGROUND = (221, 221, 221)
PADDING_TEXT = (136, 136, 136)

_Lines = list[tuple[list[str], np.ndarray, np.ndarray]]  # (strings, relevance, is-padding)


def _token_lines(tokens, relevance, vocab, padding) -> _Lines:
    """Split tokens and relevance into lines of (strings, float64 relevance, padding flags)."""
    single = False
    if isinstance(tokens, np.ndarray) or (hasattr(tokens, "shape") and hasattr(tokens, "dtype")):
        array = np.asarray(tokens)  # a NumPy array or a tensor
        if array.ndim not in (1, 2):
            raise InputError(
                f"tokens must be one sequence (length,) or a batch (n, length); got shape "
                f"{array.shape}."
            )
        single = array.ndim == 1
        token_rows = [array] if single else list(array)
    elif isinstance(tokens, Sequence) and not isinstance(tokens, str):
        token_rows = list(tokens)
        if token_rows and (isinstance(token_rows[0], (str, bytes)) or np.ndim(token_rows[0]) == 0):
            single, token_rows = True, [token_rows]  # one sequence given as a flat list
    else:
        raise InputError(
            f"tokens must be an array of token ids or a list of token sequences; got "
            f"{type(tokens).__name__}."
        )
    if single:
        relevance_rows = [relevance]
    elif isinstance(relevance, (list, tuple)):
        relevance_rows = list(relevance)  # possibly ragged
    else:
        relevance_rows = list(_as_float_array(relevance, "relevance").reshape(
            (-1,) + np.shape(relevance)[1:]) if np.ndim(relevance) else [relevance])
    if len(relevance_rows) != len(token_rows):
        raise InputError(
            f"relevance has {len(relevance_rows)} sequences but tokens {len(token_rows)}; "
            "pass one relevance value per token."
        )
    lines: _Lines = []
    for row, (ids, values) in enumerate(zip(token_rows, relevance_rows)):
        ids_list = list(ids)
        values = _as_float_array(values, "relevance").astype(np.float64)
        if values.ndim == 2 and len(values) == len(ids_list):
            values = values.sum(axis=-1)  # relevance per embedding dimension
        if values.shape != (len(ids_list),):
            raise InputError(
                f"sequence {row}: relevance of shape {values.shape} does not match its "
                f"{len(ids_list)} tokens; pass one value per token (shape of the tokens), or "
                "one per token and embedding dimension (summed)."
            )
        strings, pad = [], np.zeros(len(ids_list), dtype=bool)
        for i, token in enumerate(ids_list):
            if isinstance(token, bytes):
                token = token.decode("utf-8", "replace")
            if isinstance(token, str):
                strings.append(token)
                pad[i] = isinstance(padding, str) and token == padding
                continue
            if not isinstance(token, (int, np.integer)):
                raise InputError(
                    f"tokens must be integer ids or strings; sequence {row} holds "
                    f"{type(token).__name__} {token!r}."
                )
            index = int(token)
            pad[i] = padding is not None and not isinstance(padding, str) and index == padding
            if vocab is None:
                strings.append(str(index))
            elif 0 <= index < len(vocab):
                strings.append(str(vocab[index]))
            else:
                raise InputError(
                    f"token id {index} in sequence {row} is outside the vocabulary of "
                    f"{len(vocab)} entries."
                )
        lines.append((strings, values, pad))
    return lines


def _line_colors(
    lines: _Lines, cmap: str | Colormap, percentile: float | None, per_sample: bool
) -> list[np.ndarray]:
    """uint8 RGB colour per token of each line (padding: :data:`PADDING_BACKGROUND`)."""
    shown = [values[~pad] for _, values, pad in lines]
    if per_sample:
        colored = [heatmap(v.reshape(1, 1, -1), cmap, percentile=percentile)[0, 0]
                   for v in shown]
    else:
        everything = np.concatenate(shown) if shown else np.zeros(0)
        flat = heatmap(everything.reshape(1, 1, -1), cmap, percentile=percentile)[0, 0]
        colored = np.split(flat, np.cumsum([len(v) for v in shown])[:-1])
    colors = []
    for (_, values, pad), on in zip(lines, colored):
        rgb = np.empty((len(values), 3), dtype=np.uint8)
        rgb[~pad] = on
        rgb[pad] = PADDING_BACKGROUND
        colors.append(rgb)
    return colors


def _text_color(rgb: Sequence[int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones (relative luminance below 0.4)."""
    luminance = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255.0
    return (255, 255, 255) if luminance < 0.4 else (0, 0, 0)


def token_colors(
    tokens,
    relevance,
    *,
    padding: int | str | None = 0,
    cmap: str | Colormap = "bwr",
    percentile: float | None = None,
    per_sample: bool = True,
) -> list[np.ndarray]:
    """The background colour of every token, as :func:`tokens_html` and :func:`tokens_png` use.

    Parameters
    ----------
    tokens : array_like or list
        Token ids ``(n, length)`` / ``(length,)``, a list of 1-D id arrays (any lengths), or
        a list of lists of strings.
    relevance : array_like or list
        One value per token, in the shape of ``tokens`` (a trailing embedding axis is
        summed); a list of 1-D arrays for sequences of different lengths.
    padding : int, str or None, default 0
        Tokens equal to this (an id for integer tokens, a string for string tokens) are
        padding: they get :data:`PADDING_BACKGROUND` and take no part in the scale. ``None``:
        no padding.
    cmap, percentile, per_sample
        As in :func:`heatmap`: the diverging colormap, percentile clipping of the scale and
        one scale per sequence (default) or one for the whole batch.

    Returns
    -------
    list of numpy.ndarray
        One uint8 array ``(length, 3)`` per sequence. The token with the largest ``|R|`` of
        its sequence gets ``cmap(1)`` (positive) or ``cmap(0)`` (negative), zero relevance
        ``cmap(0.5)``: exactly the colours :func:`heatmap` gives pixels.

    Raises
    ------
    InputError
        If the shapes do not match, the relevance is not finite or a token id is outside
        the vocabulary.
    """
    lines = _token_lines(tokens, relevance, None, padding)
    return _line_colors(lines, cmap, percentile, per_sample)


def _hex(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


_STYLE = """\
.tf-lrp-tokens { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 14px;
  line-height: 2.0; }
.tf-lrp-tokens .line { margin: 0 0 0.4em 0; }
.tf-lrp-tokens .label { color: #555; margin-right: 0.5em; }
.tf-lrp-tokens .tok { padding: 0.15em 0.25em; border-radius: 3px; white-space: pre; }
.tf-lrp-tokens .pad { font-style: italic; }
"""


def tokens_html(
    tokens,
    relevance,
    vocab: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    padding: int | str | None = 0,
    show_padding: bool = False,
    cmap: str | Colormap = "bwr",
    percentile: float | None = None,
    per_sample: bool = True,
    title: str = "Token relevance",
    full_page: bool = True,
) -> str:
    """Coloured tokens as HTML: one line per sequence, relevance in each token's tooltip.

    Every token is a ``<span class="tok">`` whose background is its colour on the heatmap
    scale (:func:`token_colors`), with black or white text for contrast and the relevance
    value in the ``title`` attribute (shown on hover). Token strings, labels and the title
    are HTML-escaped, so ``"<pad>"`` shows as ``<pad>``.

    Parameters
    ----------
    tokens : array_like or list
        Token ids ``(n, length)`` / ``(length,)``, a list of 1-D id arrays (any lengths), or
        a list of lists of strings.
    relevance : array_like or list
        One value per token, in the shape of ``tokens`` (a trailing embedding axis is
        summed).
    vocab : sequence of str, optional
        Token strings by id (e.g. :data:`tf_lrp.datasets.TOKENS_VOCAB` or the lines of a
        vocabulary file). Without it integer tokens show as their ids.
    labels : sequence of str, optional
        A caption in front of each line (e.g. the explained class).
    padding : int, str or None, default 0
        The padding token (an id, or a string for string tokens); ``None``: no padding.
    show_padding : bool, default False
        Draw padding tokens grey (with their relevance in the tooltip) instead of leaving
        them out.
    cmap, percentile, per_sample
        The colour scale, as in :func:`heatmap`.
    title : str, default "Token relevance"
        The page title (``full_page`` only).
    full_page : bool, default True
        A self-contained HTML document; ``False``: a ``<div class="tf-lrp-tokens">``
        fragment with its ``<style>`` element, to embed in another page or a notebook.

    Returns
    -------
    str
        The HTML.

    Raises
    ------
    InputError
        If the shapes do not match, the relevance is not finite, a token id is outside the
        vocabulary or there are not as many labels as sequences.
    """
    lines = _token_lines(tokens, relevance, vocab, padding)
    if labels is not None and len(labels) != len(lines):
        raise InputError(f"got {len(labels)} labels for {len(lines)} sequences.")
    colors = _line_colors(lines, cmap, percentile, per_sample)
    rows = []
    for index, ((strings, values, pad), rgb) in enumerate(zip(lines, colors)):
        spans = []
        if labels is not None:
            spans.append(f'<span class="label">{html.escape(str(labels[index]))}</span>')
        for string, value, is_pad, color in zip(strings, values, pad, rgb):
            if is_pad and not show_padding:
                continue
            text_color = _hex(PADDING_TEXT) if is_pad else _hex(_text_color(color))
            tooltip = f"padding, relevance {value:.4g}" if is_pad else f"relevance {value:.4g}"
            css = "tok pad" if is_pad else "tok"
            spans.append(
                f'<span class="{css}" style="background-color:{_hex(color)};color:{text_color}" '
                f'title="{html.escape(tooltip)}">{html.escape(string)}</span>'
            )
        rows.append(f'<div class="line">{" ".join(spans)}</div>')
    fragment = (f"<style>\n{_STYLE}</style>\n<div class=\"tf-lrp-tokens\">\n"
                + "\n".join(rows) + "\n</div>\n")
    if not full_page:
        return fragment
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{fragment}</body>\n</html>\n"
    )


def tokens_png(
    tokens,
    relevance,
    vocab: Sequence[str] | None = None,
    *,
    labels: Sequence[str] | None = None,
    padding: int | str | None = 0,
    show_padding: bool = False,
    cmap: str | Colormap = "bwr",
    percentile: float | None = None,
    per_sample: bool = True,
    font_size: int = 14,
    width: int = 800,
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Coloured tokens as an RGB image: one line per sequence (wrapped at ``width``).

    The picture :func:`tokens_html` shows, drawn with Pillow: each token a box in its colour
    (:func:`token_colors`) with the token in black or white, on a white background. A
    sequence longer than ``width`` continues on the next row; every sequence starts a new
    row, its label (if any) in grey in front.

    Parameters
    ----------
    tokens, relevance, vocab, labels, padding, show_padding, cmap, percentile, per_sample
        As in :func:`tokens_html`.
    font_size : int, default 14
        Text size in pixels (Pillow's bundled font).
    width : int, default 800
        Image width in pixels.
    path : str or os.PathLike, optional
        Also write the image to this PNG file (atomically, with :func:`save_png`).

    Returns
    -------
    numpy.ndarray
        uint8 RGB image ``(height, width, 3)``.

    Raises
    ------
    InputError
        As :func:`tokens_html`, or if ``font_size`` or ``width`` is too small.
    """
    from PIL import Image, ImageDraw, ImageFont

    if font_size < 4 or width < 4 * font_size:
        raise InputError(f"need font_size >= 4 and width >= 4 * font_size; got {font_size}, "
                         f"{width}.")
    lines = _token_lines(tokens, relevance, vocab, padding)
    if labels is not None and len(labels) != len(lines):
        raise InputError(f"got {len(labels)} labels for {len(lines)} sequences.")
    colors = _line_colors(lines, cmap, percentile, per_sample)
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    margin, gap, pad_x, pad_y = font_size // 2, max(2, font_size // 3), 3, 3
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font_size, 0)
    box_height = ascent + descent + 2 * pad_y
    row_height = box_height + gap

    # Layout first: (x, y, text, background or None, text colour) per item.
    items, x, y = [], margin, margin
    for index, ((strings, _, pad), rgb) in enumerate(zip(lines, colors)):
        x = margin
        if index:
            y += row_height + gap  # a little more space between sequences than within one
        entries = []
        if labels is not None:
            entries.append((str(labels[index]), None, (85, 85, 85)))
        for string, is_pad, color in zip(strings, pad, rgb):
            if is_pad and not show_padding:
                continue
            text_color = PADDING_TEXT if is_pad else _text_color(color)
            entries.append((string, tuple(int(c) for c in color), text_color))
        for text, background, text_color in entries:
            box_width = int(np.ceil(font.getlength(text))) + 2 * pad_x
            if x > margin and x + box_width > width - margin:
                x, y = margin, y + row_height
            items.append((x, y, text, background, text_color, box_width))
            x += box_width + gap
    height = y + box_height + margin
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for x, y, text, background, text_color, box_width in items:
        if background is not None:
            draw.rectangle([x, y, x + box_width - 1, y + box_height - 1], fill=background)
        draw.text((x + pad_x, y + pad_y), text, font=font, fill=text_color)
    rgb_image = np.asarray(image, dtype=np.uint8).copy()
    if path is not None:
        save_png(path, rgb_image)
    return rgb_image
