"""Draw docs/heatmaps.png for the README: real LRP output of the shipped models.

Run from the repository root: ``python scripts/make_readme_figure.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

import tf_lrp
from tf_lrp import datasets, visualize

ROOT = Path(__file__).resolve().parents[1]


def rows() -> list[np.ndarray]:
    """The shipped models start with a Rescaling layer: their inputs are pixel values 0..255
    (the data sets are in [-1, 1] for digits and [0, 1] for shapes), and so are the z^B
    bounds (the engine maps them through the Rescaling layer)."""
    x28, _ = datasets.load_digits(split="test")
    x32, _ = datasets.load_digits(split="test", pad=datasets.LENET_PAD)
    shapes, _, _ = datasets.make_shapes(6, seed=datasets.SHAPES_TEST_SEED)
    cases = [
        ("digits_mlp.h5", (x28[:6] + 1.0) * 127.5),
        ("digits_lenet.h5", (x32[:6] + 1.0) * 127.5),
        ("shapes_resnet.keras", shapes * 255.0),
    ]
    out = []
    for name, x in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analyzer = tf_lrp.Analyzer(ROOT / "saved_models" / name, "epsilon_gamma_box",
                                       low=0.0, high=255.0)
        heat = visualize.heatmap(analyzer(x))
        images = visualize.overlay(heat, x, alpha=0.0, input_range=(0.0, 255.0))
        out.append(np.concatenate([images, heat]))
    return out


def main() -> None:
    tiles = [np.kron(t, np.ones((4, 4, 1), np.uint8)) if t.shape[1] < 64 else t
             for r in rows() for t in r]
    size = max(t.shape[0] for t in tiles)
    tiles = [np.pad(t, ((0, size - t.shape[0]), (0, size - t.shape[1]), (0, 0)),
                    constant_values=255) for t in tiles]
    visualize.save_png(ROOT / "docs" / "heatmaps.png", visualize.grid(np.stack(tiles), ncols=12))


if __name__ == "__main__":
    main()
