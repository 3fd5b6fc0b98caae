"""Concept figures: per sample, the heatmap and the top concepts of a layer, each with its
conditional heatmap and its reference crops from an atlas (matplotlib, PNG).

Layout (``top + 1`` rows, ``2 + refs`` columns, each tile ``tile`` inches square at ``dpi``,
so a PNG is exactly ``(2 + refs) * tile * dpi`` pixels wide and ``(top + 1) * tile * dpi``
high, rounded):

- row 0: the input (titled with the explained class and its logit) and its heatmap;
- row ``j``: concept ``j`` (channel, share of the layer's relevance): the input dimmed where
  its conditional heatmap is not positive (where the concept is), the conditional heatmap
  (titled with the concept's relevance), then the reference crops of the channel (relevance
  maximisation by default), best first, titled with their sample.

Heatmaps are coloured by :func:`tf_lrp.visualize.heatmap` (red positive, blue negative), each
scaled by its own largest ``|R|``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tf_lrp.concepts._trace import check_analyzer, layer_nodes, layer_statistics
from tf_lrp.errors import InputError

__all__ = ["ConceptExplanation", "explain_concepts", "draw", "concept_figures"]


@dataclass(frozen=True)
class ConceptExplanation:
    """The top concepts of a layer for a batch (:func:`explain_concepts`).

    Attributes
    ----------
    layer
        The node name.
    target, logit
        ``(n,)``: the explained class and its logit.
    heatmap
        ``(n, *input_shape)``: the (unconditional) heatmap.
    channels, relevance, share
        ``(n, top)``: the most relevant channels, their relevance and its share of the layer's
        total relevance.
    total
        ``(n,)``: the layer's total relevance.
    conditional
        ``(n, top, *input_shape)``: each concept's conditional heatmap.
    """

    layer: str
    target: np.ndarray
    logit: np.ndarray
    heatmap: np.ndarray
    channels: np.ndarray
    relevance: np.ndarray
    share: np.ndarray
    total: np.ndarray
    conditional: np.ndarray


def explain_concepts(analyzer, x, layer: str, target=None, top: int = 5) -> ConceptExplanation:
    """The ``top`` most relevant channels of ``layer`` per sample and their conditional
    heatmaps: one traced call for the heatmap and the concept relevance, one for the
    ``top`` conditional heatmaps of every sample."""
    check_analyzer(analyzer)
    node = layer_nodes(analyzer, [layer])[0]
    channels = int(analyzer.graph.shapes[node.outputs[0]][-1])
    if int(top) != top or top < 1:
        raise InputError(f"top must be a positive integer, got {top!r}")
    top = min(int(top), channels)
    stats = layer_statistics(analyzer, [node.name], heatmap=True)(x, target)
    relevance = stats["layers"][node.name]["relevance"]
    order = np.argsort(-relevance, axis=1, kind="stable")[:, :top]
    values = np.take_along_axis(relevance, order, axis=1)
    total = relevance.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total[:, None] != 0, values / total[:, None], np.nan)
    conditional = analyzer.conditional(x, stats["target"], {node.name: order})
    return ConceptExplanation(node.name, stats["target"], stats["logit"], stats["heatmap"],
                              order, values, share, total, conditional)


def dimmed(image: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """CRP's opaque view: ``image`` (``(h, w)`` grey or ``(h, w, 3)`` in [0, 1]) as RGB,
    dimmed to 12 % where the relevance (summed over channels) is not positive and brightened
    with the square root of the positive relevance, relative to its maximum, up to 100 %."""
    m = np.maximum(relevance.sum(axis=-1) if relevance.ndim == 3 else relevance, 0)
    m = np.sqrt(m / m.max()) if m.max() > 0 else m
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    return rgb * (0.12 + 0.88 * m[..., None])


def _image(x: np.ndarray, input_range: tuple[float, float] | None) -> np.ndarray:
    """An input (crop) as an image in [0, 1]: ``(h, w)`` or ``(h, w, 3)``."""
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3 and x.shape[-1] == 4:
        x = x[..., :3]
    x = x.astype(np.float64)
    if input_range is not None:
        low, high = input_range
        return np.clip((x - low) / (high - low), 0, 1)
    low, span = x.min(), x.max() - x.min()
    return (x - low) / span if span > 0 else np.full_like(x, 0.5)


def _check_image(shape: Sequence[int]) -> None:
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))):
        raise InputError(f"concept figures draw image inputs ((h, w) or (h, w, 1|3|4)); this "
                         f"model takes {tuple(shape)}. Use explain_concepts() for the numbers")


def draw(path: str | os.PathLike, x: np.ndarray, explanation: ConceptExplanation, i: int,
         references: Sequence[Sequence] | None = None, refs: int = 4,
         input_range: tuple[float, float] | None = None, tile: float = 1.5, dpi: int = 100,
         title: str | None = None, mode: str = "relevance") -> Path:
    """Draw sample ``i`` of ``explanation`` (its input ``x``) and write ``path`` (PNG).

    ``references[j]`` are the :class:`~tf_lrp.concepts.atlas.Reference` of concept ``j`` (at
    most ``refs`` are drawn); ``None`` draws no reference columns (``refs`` is then 0). The
    file is written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tf_lrp import visualize

    _check_image(x.shape)
    refs = refs if references is not None else 0
    top = explanation.channels.shape[1]
    cols, rows = 2 + refs, top + 1
    fig = Figure(figsize=(cols * tile, rows * tile), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    font = {"fontsize": max(5.0, 5.5 * tile / 1.5)}
    image = _image(x, input_range)
    gray = {"cmap": "gray", "vmin": 0, "vmax": 1} if image.ndim == 2 else {}

    def show(ax, rgb, text, **kw):
        ax.imshow(rgb, interpolation="nearest", **kw)
        ax.set_title(text, **font)

    def colour(r):
        return visualize.heatmap(r[None] if r.ndim == 3 else r[None, ..., None])[0]

    layer = explanation.layer.split("+")[0]
    heat = colour(explanation.heatmap[i])
    show(axes[0, 0], image, title or f"class {explanation.target[i]} "
         f"(logit {explanation.logit[i]:.3g})", **gray)
    show(axes[0, 1], heat, "heatmap")
    if refs:
        axes[0, 2].text(0, 0.5, f"right: reference samples\n(top {refs} by {mode}\nin the "
                                "atlas data)", **font, va="center")
    for j in range(top):
        c = int(explanation.channels[i, j])
        r = explanation.conditional[i, j]
        share = explanation.share[i, j]
        label = f"{100 * share:.0f}%" if np.isfinite(share) else \
            f"R={explanation.relevance[i, j]:.3g}"
        show(axes[j + 1, 0], dimmed(image, r), f"{layer} #{c}: {label}")
        show(axes[j + 1, 1], colour(r), f"R={explanation.relevance[i, j]:.3g}")
        for r, ref in enumerate(list(references[j])[:refs] if references is not None else []):
            crop = _image(ref.crop, input_range)
            show(axes[j + 1, 2 + r], crop, f"sample {ref.sample}",
                 **({"cmap": "gray", "vmin": 0, "vmax": 1} if crop.ndim == 2 else {}))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.08, hspace=0.3)
    from tf_lrp.concepts.atlas import _write_atomic

    path = Path(path)
    stream = io.BytesIO()
    fig.savefig(stream, format="png", dpi=dpi)
    _write_atomic(path, stream.getvalue())
    return path


def concept_figures(analyzer, x, layer: str, out: str | os.PathLike, *, target=None,
                    top: int = 5, atlas=None, refs: int = 4, mode: str = "relevance",
                    names: Sequence[str] | None = None,
                    input_range: tuple[float, float] | None = None, tile: float = 1.5,
                    dpi: int = 100) -> tuple[list[Path], ConceptExplanation]:
    """Write one concept figure per sample of ``x`` to ``out/<name>.png``.

    Parameters
    ----------
    analyzer
        A :class:`tf_lrp.Analyzer`.
    x, target
        A batch of images (the model's input space) and the explained class(es).
    layer
        The layer whose concepts are shown.
    out
        The output directory.
    top
        Concepts per sample.
    atlas
        An :class:`~tf_lrp.concepts.atlas.Atlas` (or its directory) holding ``layer``: its
        reference crops are drawn beside each concept (``refs`` of them, by ``mode``).
    names
        File names without suffix (default ``sample_<i>``); ``a/b`` writes into ``out/a``.
    input_range
        The value range of the input, e.g. ``(0, 255)``, for drawing (default: each image
        and crop stretched to its own range).
    tile, dpi
        Size of one tile in inches, and pixels per inch.

    Returns
    -------
    (paths, ConceptExplanation)
    """
    from tf_lrp.concepts.atlas import MODES, Atlas

    check_analyzer(analyzer)
    xs = analyzer._prepare(x)[0]
    _check_image(xs.shape[1:])
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if int(refs) != refs or refs < 0:
        raise InputError(f"refs must be a non-negative integer, got {refs!r}")
    if atlas is not None and not isinstance(atlas, Atlas):
        atlas = Atlas(atlas)
    names = list(names) if names is not None else [f"sample_{i}" for i in range(len(xs))]
    if len(names) != len(xs):
        raise InputError(f"{len(names)} names for {len(xs)} samples")
    explanation = explain_concepts(analyzer, xs, layer, target, top)
    if atlas is not None:
        atlas_layer = atlas.layer_name(explanation.layer)
    paths = []
    for i, name in enumerate(names):
        references = None
        if atlas is not None:
            references = [atlas.references(atlas_layer, int(c), mode)
                          for c in explanation.channels[i]]
        paths.append(draw(Path(out) / f"{name}.png", xs[i], explanation, i, references, refs,
                          input_range, tile, dpi, mode=mode))
    return paths, explanation
