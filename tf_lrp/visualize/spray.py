"""The SpRAy report: one self-contained HTML page (no server, no network) and two CSV files.

:func:`report` writes into a directory:

* ``index.html``: the eigenvalue spectrum (the eigengap marked), the 2-D map of the samples
  coloured by cluster (hovering a point shows the sample's name and heatmap), and per cluster
  its size, mean heatmap, a grid of members' heatmaps and, for concept features, its top
  concepts (channels by mean relevance share);
* ``clusters.csv``: ``input,cluster,x,y``;
* ``spectrum.csv``: ``k,eigenvalue``.

Pictures are PNGs embedded as ``data:`` URIs. Heatmaps use the ``bwr`` scale of
:func:`tf_lrp.visualize.heatmap`. Every file is written to a temporary name and moved into
place.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from tf_lrp.storage import atomic_write
from tf_lrp.visualize.images import heatmap

__all__ = ["report"]

_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf"]
#: at most this many samples get a heatmap shown on hover (the page stays small)
HOVER_LIMIT = 400
MEMBERS = 16


def _png(rgb: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _map_png(r: np.ndarray, zoom: int = 2) -> str:
    r = np.asarray(r, np.float64)
    r = r.sum(-1) if r.ndim == 3 else r
    rgb = heatmap(r[None])[0]  # uint8
    return _png(np.kron(rgb, np.ones((zoom, zoom, 1), np.uint8)))


def _spectrum_svg(values: np.ndarray, suggested: int) -> str:
    w, h, pad = 360, 180, 30
    n = len(values)
    top = max(float(values.max()), 1e-6)

    def xy(i, v):
        return pad + i * (w - 2 * pad) / max(n - 1, 1), h - pad - v / top * (h - 2 * pad)

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(values)))
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{5 if i == suggested - 1 else 3}" '
        f'fill="{"#d62728" if i == suggested - 1 else "#333"}"><title>eigenvalue {i + 1}: '
        f'{v:.4f}</title></circle>' for i, v in enumerate(values) for x, y in [xy(i, v)])
    return (f'<svg id="spectrum" width="{w}" height="{h}" role="img" '
            f'aria-label="eigenvalue spectrum"><polyline points="{points}" fill="none" '
            f'stroke="#333"/>{dots}<text x="{pad}" y="{h - 5}" font-size="11">eigenvalue '
            f'index (gap after {suggested}, red)</text></svg>')


def _map_svg(coords: np.ndarray, labels: np.ndarray, names: list[str], hover: set[int]) -> str:
    w = h = 420
    c = np.asarray(coords, np.float64)
    lo, hi = c.min(0), c.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    p = 12 + (c - lo) / span * (w - 24)
    dots = "".join(
        f'<circle class="pt" cx="{x:.1f}" cy="{h - y:.1f}" r="3" fill="'
        f'{_COLOURS[int(k) % len(_COLOURS)]}" data-i="{i}" data-cluster="{int(k)}"'
        f'{" data-thumb=" + chr(34) + str(i) + chr(34) if i in hover else ""}><title>'
        f'{html.escape(names[i])} (cluster {int(k)})</title></circle>'
        for i, ((x, y), k) in enumerate(zip(p, labels)))
    return f'<svg id="map" width="{w}" height="{h}" role="img" aria-label="2-D map">{dots}</svg>'


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
.row {{ display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }}
.cluster {{ border-top: 1px solid #ccc; margin-top: 1.5em; padding-top: 0.5em; }}
.members img {{ margin: 2px; image-rendering: pixelated; }}
.swatch {{ display: inline-block; width: 1em; height: 1em; vertical-align: middle; }}
#hover {{ min-height: 150px; }}
.meta {{ color: #555; }}
</style></head><body>
<h1>{title}</h1>
<p class="meta">{summary}</p>
<div class="row"><div><h2>Spectrum</h2>{spectrum}</div>
<div><h2>Map ({method})</h2>{map}</div>
<div><h2>Sample</h2><div id="hover" class="meta">Hover over a point.</div></div></div>
{clusters}
<script>
"use strict";
const THUMBS = {thumbs};
const hover = document.getElementById("hover");
document.querySelectorAll("#map .pt").forEach((pt) => {{
  pt.addEventListener("mouseenter", () => {{
    const i = pt.dataset.i;
    const name = pt.querySelector("title").textContent;
    hover.textContent = name;
    if (THUMBS[i] !== undefined) {{
      const img = document.createElement("img");
      img.src = THUMBS[i];
      img.alt = "heatmap of " + name;
      hover.appendChild(document.createElement("br"));
      hover.appendChild(img);
    }}
    document.body.dataset.hovered = i;
  }});
}});
document.body.dataset.ready = "1";
</script></body></html>
"""


def _crop_png(crop: np.ndarray) -> str:
    c = np.asarray(crop, np.float64)
    c = (c - c.min()) / max(c.max() - c.min(), 1e-12) * 255.0
    c = np.repeat(c, 3, axis=-1) if c.ndim == 3 and c.shape[-1] == 1 else c
    return _png(np.kron(c.astype(np.uint8), np.ones((2, 2, 1), np.uint8)))


def report(result, names: list[str], out, maps=None, title: str = "SpRAy",
           concepts: bool = False, truth: np.ndarray | None = None, atlas=None,
           layer: str | None = None) -> dict[str, Path]:
    """Write the report of a :class:`tf_lrp.spray.Spray` (module docstring).

    Parameters
    ----------
    result
        The :func:`tf_lrp.spray.spray` outcome.
    names
        The samples' names, in its order.
    out
        The report directory (created).
    maps
        A function ``i -> relevance map`` (``(h, w[, c])``) for heatmaps, or an array of the
        maps; ``None``: the pooled features are drawn instead.
    concepts
        The features are concept-relevance vectors: list each cluster's top concepts.
    truth
        Optional ground-truth flag per sample (e.g. tagged): its share per cluster is shown.
    atlas, layer
        With concept features: a :class:`tf_lrp.concepts.Atlas` of ``layer``; each top
        concept is shown with its first 4 reference crops.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(result.labels)
    n = len(labels)
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} samples")
    grid = int(round(np.sqrt(result.features.shape[1])))

    def get(i):
        if maps is None:
            return result.features[i].reshape(grid, grid) if not concepts else \
                result.features[i][None]
        return maps(i) if callable(maps) else maps[i]

    rng = np.random.default_rng(0)
    hover = set(rng.permutation(n)[:HOVER_LIMIT].tolist())
    thumbs = {int(i): _map_png(get(i)) for i in sorted(hover)} if not concepts else {}
    sections = []
    for k in range(result.n_clusters):
        members = np.flatnonzero(labels == k)
        mean = np.mean([np.asarray(get(i), np.float64) for i in members[:200]], axis=0)
        grid_imgs = "".join(f'<img src="{_map_png(get(i))}" alt="{html.escape(names[i])}" '
                            f'title="{html.escape(names[i])}">' for i in members[:MEMBERS])
        extra = ""
        if truth is not None:
            extra += f" · ground truth flagged: {np.mean(truth[members]):.0%}"
        top = ""
        if concepts:
            share = result.features[members].mean(0)
            best = np.argsort(-share)[:5]
            top = "<p>Top concepts (channel: mean relevance share): " + ", ".join(
                f"{int(c)}: {share[c]:.2f}" for c in best) + "</p>"
            if atlas is not None and layer is not None:
                top += "".join(
                    f'<div class="concept" data-channel="{int(c)}">Concept {int(c)}: ' + "".join(
                        f'<img src="{_crop_png(ref.crop)}" alt="reference of channel {int(c)}">'
                        for ref in atlas.references(layer, int(c))[:4]) + "</div>"
                    for c in best)
        sections.append(
            f'<section class="cluster" data-cluster="{k}"><h2><span class="swatch" '
            f'style="background:{_COLOURS[k % len(_COLOURS)]}"></span> Cluster {k}: '
            f'{len(members)} samples{extra}</h2>{top}<div class="row"><div><h3>Mean</h3>'
            f'<img src="{_map_png(mean, 4)}" alt="mean heatmap of cluster {k}"></div>'
            f'<div><h3>Members</h3><div class="members">{grid_imgs}</div></div></div>'
            f"</section>")
    summary = (f"{n} samples; {result.n_clusters} clusters (the eigengap suggests "
               f"{result.suggested}); map: {result.embedding_method}.")
    page = _PAGE.format(title=html.escape(title), summary=html.escape(summary),
                        spectrum=_spectrum_svg(result.eigenvalues, result.suggested),
                        map=_map_svg(result.embedding, labels, names, hover),
                        method=result.embedding_method, clusters="".join(sections),
                        thumbs=json.dumps(thumbs))
    paths = {"index.html": out / "index.html", "clusters.csv": out / "clusters.csv",
             "spectrum.csv": out / "spectrum.csv"}
    atomic_write(paths["index.html"], lambda s: s.write(page.encode("utf-8")))

    def rows(columns, data):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        writer.writerows(data)
        return buffer.getvalue().encode("utf-8")

    atomic_write(paths["clusters.csv"], lambda s: s.write(rows(
        ("input", "cluster", "x", "y"),
        [(names[i], int(labels[i]), f"{result.embedding[i, 0]:.5g}",
          f"{result.embedding[i, 1]:.5g}") for i in range(n)])))
    atomic_write(paths["spectrum.csv"], lambda s: s.write(rows(
        ("k", "eigenvalue"), [(i + 1, f"{v:.6g}") for i, v in enumerate(result.eigenvalues)])))
    return paths
