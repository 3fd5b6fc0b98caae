"""Pictures of a generation's explanation (:class:`tf_lrp.lm.Generation`).

* :func:`generation_html`: one self-contained page (no server, no network): the prompt and the
  generated text; hovering over or clicking a generated token colours every earlier token by
  its relevance for that token (the row of the matrix, divided by its largest ``|R|``, on the
  ``bwr`` scale of the other pictures: blue negative, white zero, red positive). The selected
  token is outlined; relevance values show as tooltips.
* :func:`matrix_png`: the matrix ``R[t, s]`` as an image, generated tokens down, all tokens
  across, each row on its own scale.
* :func:`save`: both, ``tokens.png`` (each generated token's row as coloured tokens), and the
  matrix as ``relevance.npy`` / ``relevance.csv`` plus ``generation.json`` (ids, tokens,
  prompt length, target, scores). Every file is written to a temporary name and moved into
  place, so a killed run leaves no half-written file.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np

from tf_lrp.storage import atomic_write
from tf_lrp.visualize.images import save_png
from tf_lrp.visualize.tokens import tokens_png

__all__ = ["generation_html", "matrix_png", "save"]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; }}
#text {{ line-height: 2.2; font-family: ui-monospace, monospace; }}
.tok {{ padding: 0.15em 0.3em; margin: 0 0.05em; border-radius: 0.2em; white-space: pre;
        background: rgb(255, 255, 255); }}
.gen {{ cursor: pointer; border-bottom: 2px solid #888; }}
.gen.selected {{ outline: 2px solid #000; }}
.prompt-end {{ margin-right: 0.8em; }}
.meta {{ color: #555; }}
</style></head>
<body>
<h1>{title}</h1>
<p class="meta">Target: {target}. Hover over or click a generated token (underlined): earlier
tokens are coloured by their relevance for it (red positive, blue negative, each row scaled to
its largest |R|).</p>
<p id="selection" class="meta"></p>
<div id="text">{spans}</div>
<script>
"use strict";
const R = {matrix};
const ROWS = {rows};
const SCORES = {scores};
const tokens = Array.from(document.querySelectorAll("#text .tok"));
function colour(v) {{
  const c = Math.round(255 * (1 - Math.abs(v)));
  return v >= 0 ? `rgb(255, ${{c}}, ${{c}})` : `rgb(${{c}}, ${{c}}, 255)`;
}}
function show(row) {{
  const r = R[row];
  const top = Math.max(...r.map(Math.abs)) || 1;
  tokens.forEach((el, s) => {{
    const v = r[s] / top;
    el.style.background = colour(v);
    el.style.color = Math.abs(v) > 0.6 ? "#fff" : "#000";
    el.title = "R = " + r[s].toPrecision(4);
    el.classList.toggle("selected", el.dataset.row === String(row));
  }});
  document.getElementById("selection").textContent =
    `Row ${{row}}: ${{ROWS[row]}} (explained value ${{SCORES[row].toPrecision(4)}})`;
  document.body.dataset.selected = String(row);
}}
tokens.forEach((el) => {{
  if (el.dataset.row === undefined) return;
  const row = Number(el.dataset.row);
  el.addEventListener("click", () => show(row));
  el.addEventListener("mouseenter", () => show(row));
}});
show(R.length - 1);
</script>
</body></html>
"""


def _words(generation) -> list[str]:
    return generation.text()


def _spans(generation) -> list[tuple[int, int]]:
    """Per row, the generated tokens it explains as ``(first, stop)`` (one token: ``(t, t+1)``)."""
    return [row if isinstance(row, tuple) else (row, row + 1)
            for row in generation.rows or range(len(generation.relevance))]


def generation_html(generation, title: str = "What the model wrote, explained") -> str:
    """The self-contained page (module docstring) as a string."""
    words = _words(generation)
    p = generation.prompt_length
    spans = _spans(generation)
    row_of = {p + stop - 1: j for j, (_, stop) in enumerate(spans)}
    labels = [f"generated token {a} {words[p + a]!r}" if b == a + 1 else
              "generated tokens " + " ".join(words[p + a:p + b]) for a, b in spans]
    tags = []
    for s, w in enumerate(words):
        cls = "tok" + (" gen" if s in row_of else "") + (" prompt-end" if s == p - 1 else "")
        data = f' data-row="{row_of[s]}"' if s in row_of else ""
        tags.append(f'<span class="{cls}" data-i="{s}"{data}>{html.escape(w)}</span>')
    matrix = json.dumps([[float(f"{v:.6g}") for v in row] for row in generation.relevance])
    return _PAGE.format(title=html.escape(title), target=html.escape(generation.target),
                        spans="".join(tags), matrix=matrix, rows=json.dumps(labels),
                        scores=json.dumps([float(v) for v in generation.scores]))


def matrix_png(generation, path=None, cell: int = 22) -> np.ndarray:
    """The matrix as an RGB image (rows: generated tokens; columns: all tokens)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    words = _words(generation)
    r = np.asarray(generation.relevance, np.float64)
    top = np.abs(r).max(axis=1, keepdims=True)
    scaled = np.divide(r, top, out=np.zeros_like(r), where=top > 0)
    p = generation.prompt_length
    row_names = [" ".join(words[p + a:p + b]) for a, b in _spans(generation)]
    fig, ax = plt.subplots(figsize=(max(4, cell * len(words) / 72 + 1.5),
                                    max(2, cell * len(r) / 72 + 1.5)), dpi=100)
    ax.imshow(scaled, cmap="bwr", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(words)), words, rotation=90, fontsize=8)
    ax.set_yticks(range(len(r)), row_names, fontsize=8)
    ax.axvline(p - 0.5, color="k", lw=0.8)
    ax.set_xlabel("token (prompt | generated)")
    ax.set_ylabel("explained token")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    if path is not None:
        save_png(path, rgb)
    return rgb


def _write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda stream: stream.write(data))


def save(generation, directory: Path) -> dict[str, Path]:
    """Write the page, the pictures, the matrix and the metadata (module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    words = _words(generation)
    p = generation.prompt_length
    paths = {name: directory / name for name in (
        "generation.html", "matrix.png", "tokens.png", "relevance.npy", "relevance.csv",
        "generation.json")}
    _write(paths["generation.html"], generation_html(generation).encode("utf-8"))
    matrix_png(generation, paths["matrix.png"])
    explained = [p + stop - 1 for _, stop in _spans(generation)]  # each row's (last) token
    tokens_png([words[:e] for e in explained],
               [generation.relevance[j, :e] for j, e in enumerate(explained)], padding=None,
               path=paths["tokens.png"], labels=[words[e] for e in explained])
    buffer = io.BytesIO()
    np.save(buffer, generation.relevance)
    _write(paths["relevance.npy"], buffer.getvalue())
    header = ",".join(["explained"] + [f"{s}:{w}".replace(",", ";") for s, w in
                                       enumerate(words)])
    rows = [header] + [",".join([words[e].replace(",", ";")] + [f"{v:.6g}" for v in values])
                       for e, values in zip(explained, generation.relevance)]
    _write(paths["relevance.csv"], ("\n".join(rows) + "\n").encode("utf-8"))
    meta = {"token_ids": [int(i) for i in generation.token_ids], "tokens": generation.tokens,
            "prompt_length": p, "target": generation.target,
            "scores": [float(v) for v in generation.scores],
            "rows": [list(r) if isinstance(r, tuple) else r for r in generation.rows]}
    _write(paths["generation.json"], json.dumps(meta, indent=1).encode("utf-8"))
    return paths
