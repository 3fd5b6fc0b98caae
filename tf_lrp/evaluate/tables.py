"""Markdown tables and headline lines of the report (:func:`tf_lrp.evaluate.run_report`).

A method's results are a dict of per-sample arrays (keys below); a column or headline whose
key no method has is left out, so the same code serves digits, shapes, scenes and tokens.

``aopc``/``aopc2``: pixel-flipping AOPC with the data set's and the second removal value;
``road_morf``/``road_lerf``: ROAD AOPC; ``irof``: IROF; ``mass``/``rank``: localisation;
``similarity``/``similarity_abs`` (``_bu`` for bottom-up): ``(layers, n)`` Spearman
correlations; ``emprt``: efficient MPRT; ``ratio``: conservation; ``ms``/``cost_ratio``:
milliseconds per explanation and the ratio to one gradient (single numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tf_lrp.evaluate._common import mean_se

__all__ = ["headline", "metric_columns", "table"]


def fmt(values) -> str:
    """``"mean ± se"`` of the finite per-sample scores (``n/a`` if there are none); undefined
    (NaN) scores, e.g. IROF of a misclassified sample, are left out."""
    v = np.asarray(values, np.float64).ravel()
    m, se = mean_se(v[np.isfinite(v)])
    return "n/a" if math.isnan(m) else f"{m:.3f} ± {se:.3f}"


def _at(r: dict, key: str, index: int):
    """Per-sample ``|rho|`` after randomising up to layer ``index`` (0: no resemblance left)."""
    return np.abs(r[key][index]) if key in r else None


def _minus(r: dict, key: str, control: np.ndarray | None):
    return r[key] - control if key in r and control is not None else None


def metric_columns(controls: dict, second: str) -> tuple[list, list]:
    """The two tables' columns: ``(header, r -> per-sample scores or None)``.

    ``controls``: the random-order AOPC per removal key (``"aopc"``, ``"aopc2"``);
    ``second``: how to name the second removal value.
    """
    faithfulness = [
        ("AOPC ↑", lambda r: r.get("aopc")),
        ("AOPC − random order ↑", lambda r: _minus(r, "aopc", controls.get("aopc"))),
        (f"AOPC, {second} ↑", lambda r: r.get("aopc2")),
        (f"AOPC, {second} − random ↑", lambda r: _minus(r, "aopc2", controls.get("aopc2"))),
        ("ROAD MoRF ↑", lambda r: r.get("road_morf")),
        ("ROAD LeRF ↓", lambda r: r.get("road_lerf")),
        ("IROF (correct only) ↑", lambda r: r.get("irof")),
    ]
    other = [
        ("mass acc. ↑", lambda r: r.get("mass")),
        ("rank acc. ↑", lambda r: r.get("rank")),
        ("ρ top ↓", lambda r: r["similarity"][0] if "similarity" in r else None),
        ("ρ all ↓", lambda r: r["similarity"][-1] if "similarity" in r else None),
        ("ρ abs top ↓", lambda r: r["similarity_abs"][0] if "similarity_abs" in r else None),
        ("ρ abs all ↓", lambda r: r["similarity_abs"][-1] if "similarity_abs" in r else None),
        ("ρ abs bottom layer ↓",
         lambda r: r["similarity_abs_bu"][0] if "similarity_abs_bu" in r else None),
        ("eMPRT ↑", lambda r: r.get("emprt")),
        ("ΣR / f(x)", lambda r: r.get("ratio")),
    ]
    return faithfulness, other


def _cost_cells(r: dict) -> list[str]:
    if "ms" not in r:
        return ["n/a", "n/a"]
    return [f"{r['ms']:.3g}", f"{r['cost_ratio']:.2f}"]


def table(results: dict, labels: dict, columns: list[tuple[str, Callable]],
          control: dict | None = None) -> str:
    """A markdown table: one row per method, the columns some method has, then the cost.

    ``control``: header -> per-sample scores of a "random order (control)" row.
    """
    used = [(h, f) for h, f in columns if any(f(r) is not None for r in results.values())]
    head = ["method", *[h for h, _ in used], "ms / expl.", "× gradient"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [labels[name]] + [fmt([] if f(r) is None else f(r)) for _, f in used]
        lines.append("| " + " | ".join(cells + _cost_cells(r)) + " |")
    if control:
        cells = [fmt(control[h]) if h in control else "" for h, _ in used]
        lines.append("| *random order (control)* | " + " | ".join(cells + ["", ""]) + " |")
    return "\n".join(lines)


#: (label, per-sample score, higher is better) of the headline comparisons.
HEADLINE = (
    ("AOPC", lambda r: r.get("aopc"), True),
    ("AOPC, second removal value", lambda r: r.get("aopc2"), True),
    ("ROAD MoRF", lambda r: r.get("road_morf"), True),
    ("ROAD LeRF", lambda r: r.get("road_lerf"), False),
    ("IROF", lambda r: r.get("irof"), True),
    ("relevance mass accuracy", lambda r: r.get("mass"), True),
    ("relevance rank accuracy", lambda r: r.get("rank"), True),
    ("randomisation, |ρ abs| after the top layer", lambda r: _at(r, "similarity_abs", 0), False),
    ("randomisation, |ρ abs| after all layers", lambda r: _at(r, "similarity_abs", -1), False),
    ("bottom-up randomisation, |ρ abs| after the first layer",
     lambda r: _at(r, "similarity_abs_bu", 0), False),
    ("efficient MPRT (entropy rise)", lambda r: r.get("emprt"), True),
    ("conservation, |ΣR / f(x) − 1|", lambda r: np.abs(r["ratio"] - 1.0) if "ratio" in r
     else None, False),
)


def headline(results: dict, labels: dict) -> list[str]:
    """Per metric: the best method(s) and their lead over the runner-up (paired per sample).

    Methods whose per-sample scores coincide (e.g. LRP-0 and Gradient x Input in ReLU networks)
    are reported together; a lead smaller than two standard errors is flagged. Samples where a
    score is undefined (NaN, e.g. eMPRT of a constant map) are left out of that comparison.
    """
    lines = []
    for title, score, higher in HEADLINE:
        scores = {n: np.asarray(score(r), np.float64) for n, r in results.items()
                  if score(r) is not None}
        if len(scores) < 2:
            continue
        valid = np.logical_and.reduce([np.isfinite(s) for s in scores.values()])
        scores = {n: s[valid] for n, s in scores.items()}
        if not valid.any():
            continue
        sign = 1.0 if higher else -1.0
        ranked = sorted(scores, key=lambda n: -sign * scores[n].mean())
        best = scores[ranked[0]]
        tied = [n for n in ranked if np.allclose(scores[n], best, rtol=1e-4, atol=1e-6)]
        rest = [n for n in ranked if n not in tied]
        text = f"- {title} ({'higher' if higher else 'lower'} is better): " + \
            " = ".join(f"**{labels[n]}**" for n in tied) + f" {fmt(best)}"
        if rest:
            gap = sign * (best - scores[rest[0]])
            text += f", ahead of {labels[rest[0]]} ({fmt(scores[rest[0]])}) by {fmt(gap)} " \
                    "(paired per sample)"
            mean, se = mean_se(gap)
            if not mean > 2 * se:
                text += " — within two standard errors: no clear winner"
        lines.append(text)
    return lines


def flattery(results: dict, second: str) -> list[str]:
    """How much Integrated Gradients gains when its baseline is the removal value.

    Paired per sample: IG from the data set's removal value minus IG from the data's 0, under
    each removal scheme; only the first shares IG's baseline.
    """
    a, b = results.get("integrated_gradients"), results.get("integrated_gradients_zero")
    if a is None or b is None:
        return []
    parts = []
    for key, what in (("aopc", "removal value = IG baseline"), ("aopc2", second),
                      ("road_morf", "ROAD MoRF"), ("irof", "IROF")):
        if key in a and key in b:
            parts.append(f"{what}: {fmt(a[key] - b[key])}")
    if not parts:
        return []
    return ["- Integrated Gradients from the removal value minus from 0 (paired per sample; "
            "only the first removal shares the baseline): " + "; ".join(parts)]
