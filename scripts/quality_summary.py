"""Summarise the quality reports: tuned composites against the presets and the gradient family.

    python scripts/quality_summary.py            # markdown on stdout (pasted into QUALITY.md)

Reads ``benchmarks/quality_<model>_<data>.json`` (written by ``scripts/evaluate.py`` with
``--composite-file benchmarks/tuned/<model>_<metric>.json``) and the tuned composite files.
Every score is taken on the tuning run's **test split only** (the same 200 held-out samples in
the same order, split by :func:`tf_lrp.tuning.scoring.split_indices` with the tuning run's seed):
the validation half chose the composite, so scoring it there would flatter it. Differences are
paired per sample (mean ± standard error).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tf_lrp.evaluate import mean_se
from tf_lrp.evaluate.tables import fmt
from tf_lrp.tuning.scoring import split_indices

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
MODELS = (("scenes_vgg", "scenes"), ("scenes_resnet", "scenes"), ("shapes_resnet", "shapes"),
          ("shapes_vit", "shapes"), ("digits_lenet", "digits"), ("digits_mlp", "digits"),
          ("text_transformer", "tokens"), ("text_lstm", "tokens"))
#: Presets of the reports; a tuned composite is compared with those its search started from.
PRESETS = ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1", "deep_taylor",
           "attn_lrp", "cp_lrp")
KEYS = {"aopc": "aopc_per_sample", "mass": "mass_per_sample", "road": "road_morf_per_sample"}


def scores(method: dict, metric: str, test: np.ndarray) -> np.ndarray | None:
    values = method.get(KEYS[metric])
    return None if values is None else np.asarray(
        [np.nan if v is None else v for v in values], np.float64)[test]


def cost(method: dict) -> str:
    c = method.get("cost")
    return f"{c['ratio']:.1f}×" if c else "n/a"


def main() -> None:
    rows = ["| model | tuned on | tuned composite (test) | best preset (test) | tuned − best preset "
            "| Integrated Gradients (test) | SmoothGrad (test) | cost ×gradient: tuned, IG, SG |",
            "|---|---|---|---|---|---|---|---|"]
    for stem, data in MODELS:
        report = BENCH / f"quality_{stem}_{data}.json"
        if not report.exists():
            continue
        summary = json.loads(report.read_text())
        methods = summary["methods"]
        for metric in ("mass", "aopc", "road"):
            tuned_file = BENCH / "tuned" / f"{stem}_{metric}.json"
            name = f"file:{stem}_{metric}"
            if not tuned_file.exists() or name not in methods:
                continue
            meta = json.loads(tuned_file.read_text())["meta"]
            _, test = split_indices(summary["n"], 0.5, meta["settings"]["seed"])
            tuned = scores(methods[name], metric, test)
            tried = meta.get("presets_test", {})  # the presets the search started from
            presets = {p: scores(methods[p], metric, test) for p in PRESETS
                       if p in methods and p in tried}
            presets = {p: s for p, s in presets.items() if s is not None}
            best = max(presets, key=lambda p: np.nanmean(presets[p]))
            gain = tuned - presets[best]
            diff = mean_se(gain[np.isfinite(gain)])
            cells = []
            for g in ("integrated_gradients", "smoothgrad"):
                s = scores(methods[g], metric, test) if g in methods else None
                cells.append("n/a" if s is None else fmt(s))
            what = meta["name"] if meta["name"] != "search" else "search: " + ", ".join(
                f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in meta["params"].items())
            rows.append(
                f"| {stem} | {metric} (n={len(test)}) | {fmt(tuned)} ({what}) | "
                f"{fmt(presets[best])} ({best}) | "
                f"{diff[0]:+.3f} ± {diff[1]:.3f} | {cells[0]} | {cells[1]} | "
                f"{cost(methods[name])}, {cost(methods.get('integrated_gradients', {}))}, "
                f"{cost(methods.get('smoothgrad', {}))} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
