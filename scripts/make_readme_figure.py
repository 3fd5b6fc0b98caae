"""Draw docs/heatmaps.png for the README: real output of the deep shipped model.

Run from the repository root: ``python scripts/make_readme_figure.py``.

The samples are chosen by a fixed rule, never by how they look: the first ``--n`` held-out
scenes (``make_scenes(n, seed=SCENES_TEST_SEED)``). Columns: the input with the outline of
the class-deciding object (its ground-truth mask), then one column per method, each heatmap
with the same outline. Rows are labelled with the true and the predicted class.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The first N held-out scenes are shown.
N_SAMPLES = 6


#: Tiles are drawn ZOOM times larger, so the outline (one fine pixel) covers little.
ZOOM = 3


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels just outside ``mask`` (a 4-neighbour inside it): the outline drawn around the
    object, never over its own pixels, so it hides none of the relevance on the object."""
    padded = np.pad(mask, 1, constant_values=False)
    near = (padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:])
    return near & ~mask


def zoom(image: np.ndarray) -> np.ndarray:
    """``image`` with every pixel repeated ZOOM x ZOOM times."""
    return np.repeat(np.repeat(image, ZOOM, axis=0), ZOOM, axis=1)


def methods(composite_file: Path | None) -> list[tuple[str, object]]:
    """The columns: LRP composites, then the gradient family (pixels 0..255 as bounds)."""
    import tf_lrp
    from tf_lrp import baselines, composites

    columns: list[tuple[str, object]] = [
        ("LRP EpsilonGammaBox", lambda m: tf_lrp.Analyzer(m, "epsilon_gamma_box",
                                                          low=0.0, high=255.0)),
        ("LRP EpsilonPlus", lambda m: tf_lrp.Analyzer(m, "epsilon_plus")),
    ]
    if composite_file is not None:
        columns.append(("LRP tuned (mass)",
                        lambda m: tf_lrp.Analyzer(m, composites.load(composite_file))))
    columns += [
        ("Gradient", lambda m: baselines.Gradient(m)),
        ("Integrated Gradients\n(baseline: black)",
         lambda m: baselines.IntegratedGradients(m, baseline=0.0)),
    ]
    return columns


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "saved_models" / "scenes_vgg.keras")
    parser.add_argument("--composite-file", type=Path, default=None,
                        help="also show the composite of this file (from tf-lrp tune)")
    parser.add_argument("--n", type=int, default=N_SAMPLES)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "heatmaps.png")
    args = parser.parse_args(argv)

    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tf_lrp import datasets, storage, visualize

    x, y, masks = datasets.make_scenes(args.n, seed=datasets.SCENES_TEST_SEED)
    pixels = x * 255.0  # the shipped model starts with Rescaling(1/255)
    model = keras.models.load_model(args.model, compile=False)
    predicted = model.predict(pixels, verbose=0).argmax(axis=1)
    columns = methods(args.composite_file)
    heat = []
    for _, factory in columns:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            analyzer = factory(model)
        heat.append(visualize.heatmap(analyzer(pixels, predicted)))

    edge = np.stack([outline(zoom(m)) for m in masks])
    fig, axes = plt.subplots(args.n, len(columns) + 1, figsize=(1.9 * (len(columns) + 1),
                                                                 1.9 * args.n + 0.4))
    for i in range(args.n):
        row = [(x[i] * 255).astype(np.uint8)] + [h[i] for h in heat]
        for j, image in enumerate(row):
            image = zoom(image)
            image[edge[i]] = (0, 0, 0) if j else (255, 255, 255)
            ax = axes[i, j]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("input + object\n" if j == 0 else columns[j - 1][0], fontsize=8)
        classes = datasets.SCENES_CLASSES
        axes[i, 0].set_ylabel(f"{classes[y[i]]}\n(pred. {classes[predicted[i]]})", fontsize=8)
    fig.tight_layout(pad=0.3)
    storage.atomic_write(args.out, lambda stream: fig.savefig(stream, dpi=110, format="png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
