"""TensorBoard image summaries of relevance maps, for custom training loops.

Examples
--------
>>> writer = tf.summary.create_file_writer("logs/lrp")
>>> with writer.as_default():
...     for step, (x, y) in enumerate(dataset):
...         train_step(x, y)
...         if step % 100 == 0:
...             tf_lrp.summary.heatmaps("lrp", analyzer(x_fixed), step, inputs=x_fixed)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lrp import visualize
from tf_lrp.errors import InputError, LRPError

__all__ = ["heatmaps"]

_HEATMAP_DESCRIPTION = (
    "LRP relevance per input pixel: red positive, blue negative, white zero. "
    "Each image is scaled by its own largest |R|{clip}, so colours compare regions within "
    "an image, not magnitudes across images."
)
_OVERLAY_DESCRIPTION = "The relevance heatmap (weight {alpha:g}) blended over the input image."


def _require_tensorboard() -> None:
    """Raise :class:`LRPError` with the fix if the ``tensorboard`` package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError as err:
        raise LRPError(
            "tf_lrp.summary writes TensorBoard summaries, but the 'tensorboard' package is not "
            "installed (TensorFlow >= 2.21 no longer installs it). Fix: pip install tensorboard"
        ) from err


def _as_batch(array: object, image_shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    """Return ``array`` as a batch of maps ``(n, h, w)`` or ``(n, h, w, c)``."""
    values = np.asarray(array)
    if image_shape is not None:
        try:
            values = values.reshape((len(values),) + tuple(image_shape))
        except (TypeError, ValueError) as err:
            raise InputError(
                f"cannot reshape {what} of shape {values.shape} to (n,) + {tuple(image_shape)}; "
                "image_shape must hold as many values as one sample."
            ) from err
    if values.ndim not in (3, 4):
        raise InputError(
            f"{what} must be a batch of images, (n, h, w) or (n, h, w, c); got shape "
            f"{values.shape}. Pass image_shape=(h, w) to draw flat feature vectors as images, "
            "and add a batch axis (R[None]) for a single sample."
        )
    return values


def heatmaps(
    name: str,
    relevance: object,
    step: int | None = None,
    inputs: object | None = None,
    max_outputs: int = 3,
    *,
    cmap: str = "bwr",
    percentile: float | None = None,
    alpha: float = 0.5,
    input_range: tuple[float, float] | None = None,
    reduce: str = "sum",
    channel_axis: int = -1,
    image_shape: tuple[int, ...] | None = None,
) -> bool:
    """Write relevance heatmaps (and overlays) to the default TensorBoard summary writer.

    Two image tags are written, so TensorBoard shows them as two cards with their own step
    slider:

    - ``"{name}/heatmap"``: the coloured relevance maps (see :func:`tf_lrp.visualize.heatmap`),
    - ``"{name}/overlay"``: the heatmaps blended over ``inputs``; only when ``inputs`` is given.

    Both are uint8 RGB images of shape ``[k, h, w, 3]`` with ``k = min(n, max_outputs)``
    (the first ``k`` samples). Tags are prefixed by the enclosing ``tf.name_scope``, as for
    any ``tf.summary`` op.

    Parameters
    ----------
    name : str
        Tag prefix, e.g. ``"lrp"``.
    relevance : array_like or tf.Tensor
        Relevance of shape ``(n, h, w)`` or ``(n, h, w, c)`` (channels reduced with
        ``reduce``; ``channel_axis=1`` for channels-first), or any shape with ``image_shape``.
    step : int, optional
        Summary step; default ``tf.summary.experimental.get_step()``.
    inputs : array_like or tf.Tensor, optional
        The explained inputs, same samples and layout as ``relevance``; grayscale (no
        channel axis or 1 channel) or RGB (3 channels).
    max_outputs : int, optional
        Number of samples to draw (default 3).
    cmap, percentile : optional
        Colormap and percentile clipping; see :func:`tf_lrp.visualize.heatmap`.
    alpha, input_range : optional
        Heatmap weight and input value range of the overlay; see
        :func:`tf_lrp.visualize.overlay`.
    reduce, channel_axis : optional
        Channel reduction; see :func:`tf_lrp.visualize.reduce_channels`.
    image_shape : tuple of int, optional
        Reshape every sample to this ``(h, w)`` or ``(h, w, c)`` first, e.g. ``(28, 28)`` for
        a model on flat 784-vectors.

    Returns
    -------
    bool
        ``True`` if the summaries were written, ``False`` if there is no default summary
        writer (as for ``tf.summary.image``).

    Raises
    ------
    LRPError
        If the ``tensorboard`` package is not installed (fix: ``pip install tensorboard``).
    InputError
        On shapes that are not a batch of images or inputs that do not match.

    Notes
    -----
    The images are drawn with NumPy and matplotlib, so call this eagerly (outside
    ``tf.function``), e.g. every few hundred steps of the training loop.
    """
    _require_tensorboard()
    if max_outputs < 1:
        raise InputError(f"max_outputs must be >= 1; got {max_outputs}.")
    maps = _as_batch(relevance, image_shape, "relevance")[:max_outputs]
    colored = visualize.heatmap(
        maps, cmap, percentile=percentile, reduce=reduce, channel_axis=channel_axis
    )
    clip = f" (clipped at its {percentile:g}th percentile)" if percentile is not None else ""
    images = {"heatmap": (colored, _HEATMAP_DESCRIPTION.format(clip=clip))}
    if inputs is not None:  # validate and draw before writing anything
        pictures = _as_batch(inputs, image_shape, "inputs")[:max_outputs]
        if pictures.ndim == 4:
            pictures = np.moveaxis(pictures, channel_axis, -1)
        blended = visualize.overlay(colored, pictures, alpha=alpha, input_range=input_range)
        images["overlay"] = (blended, _OVERLAY_DESCRIPTION.format(alpha=alpha))
    written = [tf.summary.image(f"{name}/{tag}", data, step=step, max_outputs=max_outputs,
                                description=description)
               for tag, (data, description) in images.items()]
    return all(bool(w) for w in written)
