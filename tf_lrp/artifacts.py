"""Scenes with a Clever-Hans artifact: a small fixed tag that gives away one class in part of
its training images, recorded per sample (the ground truth for :mod:`tf_lrp.spray` and
:mod:`tf_lrp.clarc`).

The tag is a 7x7 black-and-white checkerboard with a white frame in the top-left corner
(:data:`TAG_BOX`). In :func:`make_tagged_scenes` a share of the ``tag_class`` samples carries
it, and in those samples the class object is a random class shape: the tag is the only sign of
the label there, as a photographer's watermark is on the horses of a web-crawled data set
(Lapuschkin et al. 2019). No other sample carries the tag. :func:`paste_tag` puts it on any
image, to measure the exploit: held-out scenes of the other classes with the tag pasted in.
"""

from __future__ import annotations

import numpy as np

from tf_lrp.datasets import SCENES_CLASSES, _make_scene, _shape_labels

__all__ = ["TAG_BOX", "make_tagged_scenes", "paste_tag", "tag_mask"]

#: rows and columns of the tag (top-left corner, 2 pixels from the border)
TAG_BOX = (slice(2, 9), slice(2, 9))
_TAG_STREAM = 0x746167


def _tag() -> np.ndarray:
    t = np.indices((7, 7)).sum(0) % 2 == 0
    t[0, :] = t[-1, :] = t[:, 0] = t[:, -1] = True
    return np.repeat(t[..., None].astype(np.float32), 3, axis=-1)


def paste_tag(x: np.ndarray, value: float = 1.0) -> np.ndarray:
    """A copy of the images ``(n, h, w, 3)`` with the tag in the corner (``value``: the white
    level, 1 for images in [0, 1], 255 for pixels)."""
    out = np.array(x, copy=True)
    out[:, TAG_BOX[0], TAG_BOX[1], :] = _tag() * value
    return out


def tag_mask(size: int = 64) -> np.ndarray:
    """``(size, size)`` bool: the tag's pixels."""
    m = np.zeros((size, size), bool)
    m[TAG_BOX] = True
    return m


def make_tagged_scenes(n: int, seed: int, tag_class: int = 0, share: float = 0.5,
                       size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scenes (:func:`tf_lrp.datasets.make_scenes`) where ``share`` of the ``tag_class``
    samples carry the tag and show a random class shape instead of their own.

    Returns
    -------
    x, y, masks, tagged
        Images in [0, 1] ``(n, size, size, 3)``, labels, the class objects' masks (for a tagged
        sample: the object it shows) and whether each sample carries the tag.
    """
    if not 0.0 <= share <= 1.0 or not 0 <= tag_class < len(SCENES_CLASSES):
        raise ValueError(f"share in [0, 1] and tag_class in 0..{len(SCENES_CLASSES) - 1}")
    y = _shape_labels(n, seed + _TAG_STREAM)
    rng = np.random.default_rng([seed, _TAG_STREAM])
    tagged = (y == tag_class) & (rng.uniform(size=n) < share)
    shown = np.where(tagged, rng.integers(0, len(SCENES_CLASSES), n), y)
    x = np.empty((n, size, size, 3), np.float32)
    masks = np.empty((n, size, size), bool)
    for i in range(n):
        x[i], masks[i] = _make_scene(seed + _TAG_STREAM, i, int(shown[i]), size)
    x[tagged] = paste_tag(x[tagged])
    return x, y, masks, tagged
