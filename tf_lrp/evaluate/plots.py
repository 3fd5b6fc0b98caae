"""The report's figures: removal and randomisation curves; each metric against its cost.

Written with matplotlib's Agg backend, atomically (:func:`tf_lrp.storage.atomic_write`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tf_lrp.evaluate._common import mean_se, write_atomic
from tf_lrp.evaluate.tables import HEADLINE

__all__ = ["plot_cost", "plot_curves"]

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
            "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000080", "#b8860b")


def _style(i: int) -> dict:
    """Line style of the ``i``-th method: LRP first (solid), then the baselines (dashed)."""
    return {"color": _COLOURS[i % len(_COLOURS)], "ls": "-" if i < 6 else "--"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    write_atomic(path, buffer.getvalue())


def _removal_panel(ax, results, labels, key: str, control, title: str, ylabel: str) -> None:
    for i, (name, r) in enumerate(results.items()):
        if key in r:
            ax.plot(r[key]["fractions"], r[key]["curve"], label=labels[name], **_style(i))
    if control is not None:
        ax.plot(control.fractions, control.outputs.mean(axis=0), ":", color="black", lw=2,
                label="random order (control)")
    ax.set(xlabel="fraction removed", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def _randomisation_panel(ax, results, labels, key: str, layers: list[str], title: str) -> None:
    steps = np.arange(len(layers) + 1)
    for i, (name, r) in enumerate(results.items()):
        if key in r:
            ax.plot(steps, np.r_[1.0, r[key].mean(axis=1)], marker="o", ms=3,
                    label=labels[name], **_style(i))
    ax.set_xticks(steps, ["original"] + layers, rotation=60, ha="right", fontsize=6)
    ax.set(ylabel="mean Spearman ρ with the original", title=title, ylim=(-0.5, 1.05))
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)


def plot_curves(path: Path, title: str, results: dict, controls: dict, labels: dict,
                layers: dict, second: str) -> None:
    """Removal curves (pixel flipping with both removal values, ROAD MoRF) and randomisation
    curves (top-down signed and magnitudes, bottom-up magnitudes), one panel each."""
    plt = _pyplot()
    panels = []
    logit = "mean explained output (logit)"
    for key, control, name in (("curve", controls.get("aopc"), "pixel flipping, most relevant "
                                "first"), ("curve2", controls.get("aopc2"),
                                           f"pixel flipping ({second}), most relevant first"),
                               ("road_curve", None, "ROAD (noisy linear imputation), MoRF")):
        if any(key in r for r in results.values()):
            panels.append(lambda ax, k=key, c=control, t=name:
                          _removal_panel(ax, results, labels, k, c, t, logit))
    for key, order, what in (("similarity", "top_down", "top layer first: signed maps"),
                             ("similarity_abs", "top_down", "top layer first: magnitudes |R|"),
                             ("similarity_abs_bu", "bottom_up", "input layer first: |R|")):
        if layers.get(order) and any(key in r for r in results.values()):
            panels.append(lambda ax, k=key, o=order, w=what: _randomisation_panel(
                ax, results, labels, k, layers[o], f"cascading randomisation, {w}"))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 5.5 * rows), squeeze=False)
    for ax, draw in zip(axes.ravel(), panels):
        draw(ax)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_cost(path: Path, title: str, results: dict, labels: dict) -> bool:
    """Each headline metric (mean ± standard error) against the cost in gradients (log scale),
    one labelled point per method. Returns ``False`` (and writes nothing) without costs."""
    costed = {n: r for n, r in results.items() if "cost_ratio" in r}
    metrics = [(t, s, h) for t, s, h in HEADLINE if any(s(r) is not None for r in costed.values())]
    if not costed or not metrics:
        return False
    plt = _pyplot()
    from matplotlib import ticker

    cols = min(3, len(metrics))
    rows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (name, score, higher) in zip(axes.ravel(), metrics):
        for i, (method, r) in enumerate(costed.items()):
            values = score(r)
            if values is None:
                continue
            values = np.asarray(values, np.float64)
            mean, se = mean_se(values[np.isfinite(values)])
            ax.errorbar(r["cost_ratio"], mean, yerr=0.0 if np.isnan(se) else se, fmt="o",
                        color=_COLOURS[i % len(_COLOURS)], ms=4, capsize=2)
            ax.annotate(labels[method], (r["cost_ratio"], mean), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.margins(x=0.25)
        ax.set(xlabel="cost (× one gradient)",
               title=f"{name} ({'higher' if higher else 'lower'} is better)")
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3, which="both")
    for ax in axes.ravel()[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"{title}: quality against cost")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.92, wspace=0.25, hspace=0.4)
    _save(fig, path)
    plt.close(fig)
    return True
