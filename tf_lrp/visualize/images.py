"""Relevance maps as images: channel reduction, scaling, colouring, overlays, grids, PNGs.

Everything here is NumPy in, NumPy out; nothing depends on TensorFlow. Conventions:

- The first axis of a batch indexes samples.
- Relevance is signed. :func:`normalize` scales each sample symmetrically by its largest
  ``|R|``, so zero stays zero and the sign is kept; :func:`heatmap` then maps ``-1 -> 0``,
  ``0 -> 0.5`` and ``+1 -> 1`` of a diverging colormap (default ``"bwr"``: blue negative,
  white zero, red positive, as in the LRP literature).
- Images leave this module as ``uint8`` RGB arrays, ready for :func:`save_png` or
  ``tf.summary.image``.

Examples
--------
>>> R = analyzer(x)                                   # (n, 28, 28, 1)
>>> rgb = heatmap(R)                                  # (n, 28, 28, 3) uint8
>>> save_png("heatmaps.png", grid(overlay(rgb, x)))
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import Colormap

from tf_lrp.errors import InputError

__all__ = ["reduce_channels", "normalize", "heatmap", "overlay", "grid", "save_png"]

#: Channel reductions understood by :func:`reduce_channels`.
REDUCE_MODES = ("sum", "abs", "norm")

# Colour levels on each side of the centre: relevance r in [-1, 1] gets entry
# _HALF_LEVELS + round(r * _HALF_LEVELS) of a 255-entry table, symmetric about zero.
_HALF_LEVELS = 127


def _as_float_array(array: object, what: str) -> np.ndarray:
    """Return ``array`` as a finite float32 NumPy array or raise :class:`InputError`."""
    try:
        values = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InputError(
            f"{what} must be a numeric array (NumPy array or tensor); got {type(array).__name__}."
        ) from err
    if not np.all(np.isfinite(values)):
        raise InputError(
            f"{what} contains NaN or Inf values; check the model and inputs that produced it, "
            "or replace them first, e.g. np.nan_to_num(R)."
        )
    return values


def reduce_channels(relevance: np.ndarray, axis: int = -1, mode: str = "sum") -> np.ndarray:
    """Collapse the colour-channel axis of a relevance map.

    Parameters
    ----------
    relevance : array_like
        Relevance with a channel axis, e.g. ``(n, h, w, c)``.
    axis : int, optional
        The channel axis (``-1`` for channels-last, ``1`` for channels-first batches).
    mode : {"sum", "abs", "norm"}, optional
        ``"sum"`` (default): signed sum over channels; keeps the sign and the total
        relevance (conservation). ``"abs"``: sum of ``|R|`` over channels (unsigned).
        ``"norm"``: Euclidean norm over channels (unsigned).

    Returns
    -------
    numpy.ndarray
        float32 array with ``axis`` removed.

    Raises
    ------
    InputError
        If ``mode`` is unknown, ``axis`` is out of range or the values are not finite.
    """
    values = _as_float_array(relevance, "relevance")
    if not -values.ndim <= axis < values.ndim:
        raise InputError(
            f"channel axis {axis} is out of range for relevance of shape {values.shape}; "
            "use axis=-1 for channels-last or axis=1 for channels-first batches."
        )
    if mode == "sum":
        return values.sum(axis=axis)
    if mode == "abs":
        return np.abs(values).sum(axis=axis)
    if mode == "norm":
        return np.sqrt(np.square(values).sum(axis=axis))
    raise InputError(f"unknown channel reduction mode {mode!r}; use one of {REDUCE_MODES}.")


def normalize(
    relevance: np.ndarray, percentile: float | None = None, per_sample: bool = True
) -> np.ndarray:
    """Scale relevance symmetrically to ``[-1, 1]``, one scale per sample.

    Each sample is divided by its largest absolute value, so the sign and the position of
    zero are kept and the strongest relevance (positive or negative) becomes ``±1``.

    Parameters
    ----------
    relevance : array_like
        Relevance of shape ``(n, ...)``; the first axis indexes samples.
    percentile : float, optional
        If given (in ``(0, 100]``), divide by this percentile of ``|R|`` instead of the
        maximum and clip to ``[-1, 1]``; e.g. ``99.5`` keeps a few extreme pixels from
        washing out the rest. A sample whose percentile is zero (very sparse map) falls
        back to its maximum.
    per_sample : bool, optional
        ``True`` (default): one scale per sample. ``False``: one scale for the whole batch,
        which keeps magnitudes comparable across samples.

    Returns
    -------
    numpy.ndarray
        float32 array of the same shape with values in ``[-1, 1]``. An all-zero sample stays
        all zero (no division by zero, no NaN).

    Raises
    ------
    InputError
        If the array is 0-D, contains NaN/Inf or ``percentile`` is out of range.
    """
    values = _as_float_array(relevance, "relevance")
    if values.ndim == 0:
        raise InputError("normalize() needs a batch of shape (n, ...); got a scalar.")
    if percentile is not None and not 0.0 < percentile <= 100.0:
        raise InputError(f"percentile must lie in (0, 100]; got {percentile}.")
    batch = values.reshape(len(values), -1) if per_sample else values.reshape(1, -1)
    magnitude = np.abs(batch)
    scale = magnitude.max(axis=1, initial=0.0)
    if percentile is not None:
        clipped = np.percentile(magnitude, percentile, axis=1) if magnitude.size else scale
        scale = np.where(clipped > 0, clipped, scale)
    safe_scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    scaled = np.clip(batch / safe_scale[:, None], -1.0, 1.0)
    return scaled.reshape(values.shape).astype(np.float32)


def _color_table(cmap: str | Colormap) -> np.ndarray:
    """Sample ``cmap`` (a name in ``matplotlib.colormaps`` or a Colormap) at 255 levels.

    An odd number of levels puts one entry exactly at the centre, 0.5, so zero relevance gets
    the colormap's true midpoint colour (pure white for "bwr").
    """
    if isinstance(cmap, Colormap):
        colormap = cmap
    else:
        try:
            colormap = matplotlib.colormaps[cmap]
        except KeyError as err:
            raise InputError(
                f"unknown colormap {cmap!r}; use a matplotlib colormap name such as 'bwr', "
                "'seismic', 'coolwarm' or 'RdBu_r' (see matplotlib.colormaps)."
            ) from err
    levels = 2 * _HALF_LEVELS + 1
    rgba = colormap.resampled(levels)(np.arange(levels))  # integer input: the table itself
    return np.round(rgba[:, :3] * 255.0).astype(np.uint8)


def _as_maps(relevance: np.ndarray, reduce: str, channel_axis: int) -> np.ndarray:
    """Bring relevance of shape (h, w), (n, h, w) or (n, h, w, c) to (n, h, w)."""
    values = _as_float_array(relevance, "relevance")
    if values.ndim == 2:
        return values[None]
    if values.ndim == 3:
        return values
    if values.ndim == 4:
        return reduce_channels(values, axis=channel_axis, mode=reduce)
    raise InputError(
        f"heatmap() draws 2-D maps: it accepts relevance of shape (h, w), (n, h, w) or "
        f"(n, h, w, c); got shape {values.shape}. For flat feature vectors reshape them to "
        "an image first, e.g. R.reshape(n, 28, 28), or draw one row per sample with "
        "R.reshape(n, 1, d)."
    )


def heatmap(
    relevance: np.ndarray,
    cmap: str | Colormap = "bwr",
    *,
    percentile: float | None = None,
    per_sample: bool = True,
    reduce: str = "sum",
    channel_axis: int = -1,
) -> np.ndarray:
    """Colour relevance maps with a diverging colormap centred at zero.

    Parameters
    ----------
    relevance : array_like
        One of

        - ``(h, w)``: a single map (returned with a batch axis of 1),
        - ``(n, h, w)``: ``n`` single-channel maps (a 3-D array is always a batch; pass
          ``R[None]`` for one colour image of shape ``(h, w, c)``),
        - ``(n, h, w, c)``: channels are collapsed with :func:`reduce_channels`
          (``reduce``, ``channel_axis``; use ``channel_axis=1`` for ``(n, c, h, w)``).

        1-D and 5-D or higher arrays raise :class:`InputError`.
    cmap : str or matplotlib.colors.Colormap, optional
        A diverging matplotlib colormap; default ``"bwr"`` (blue negative, white zero, red
        positive). ``"seismic"``, ``"coolwarm"`` and ``"RdBu_r"`` are alternatives.
    percentile, per_sample
        Passed to :func:`normalize`.
    reduce : {"sum", "abs", "norm"}, optional
        Channel reduction for 4-D input. The unsigned modes only use the upper (positive)
        half of the colormap.
    channel_axis : int, optional
        Channel axis of 4-D input.

    Returns
    -------
    numpy.ndarray
        uint8 RGB array of shape ``(n, h, w, 3)``. Normalised relevance ``r`` in ``[-1, 1]``
        gets the colour ``cmap((r + 1) / 2)``, quantised to 255 levels symmetric about zero
        (``r`` and ``-r`` get mirrored levels); zero is exactly the centre colour
        ``cmap(0.5)``.
    """
    maps = normalize(_as_maps(relevance, reduce, channel_axis), percentile, per_sample)
    index = _HALF_LEVELS + np.rint(maps * _HALF_LEVELS).astype(np.intp)
    return _color_table(cmap)[index]


def _image_to_unit(image: np.ndarray, input_range: tuple[float, float] | None) -> np.ndarray:
    """Scale a batch of images (n, h, w, c) to [0, 1]: fixed range, or min-max per image."""
    if input_range is not None:
        low, high = (float(v) for v in input_range)
        if not high > low:
            raise InputError(f"input_range must be (low, high) with high > low; got {input_range}.")
        return np.clip((image - low) / (high - low), 0.0, 1.0)
    axes = tuple(range(1, image.ndim))
    low = image.min(axis=axes, keepdims=True)
    span = image.max(axis=axes, keepdims=True) - low
    # A constant image has no contrast to stretch: draw it mid-grey.
    return np.where(span > 0, (image - low) / np.where(span > 0, span, 1.0), 0.5)


def overlay(
    heatmap_rgb: np.ndarray,
    image: np.ndarray,
    alpha: float = 0.5,
    input_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Blend heatmaps over the images they explain.

    Parameters
    ----------
    heatmap_rgb : numpy.ndarray
        uint8 RGB heatmaps from :func:`heatmap`, shape ``(n, h, w, 3)`` (or ``(h, w, 3)``
        for a single one).
    image : array_like
        The input images, matching the heatmaps in ``n``, ``h`` and ``w``: grayscale
        ``(n, h, w)`` or ``(n, h, w, 1)``, or RGB ``(n, h, w, 3)`` (without the ``n`` axis
        for a single heatmap). Any value range.
    alpha : float, optional
        Weight of the heatmap in ``[0, 1]``: ``out = (1 - alpha) * image + alpha * heatmap``.
    input_range : (float, float), optional
        The value range of the input, e.g. ``(0, 255)`` or ``(-1, 1)``: values are mapped
        linearly to ``[0, 1]`` (and clipped). By default each image is min-max scaled to
        ``[0, 1]`` on its own (a constant image becomes mid-grey).

    Returns
    -------
    numpy.ndarray
        uint8 RGB array with the shape of ``heatmap_rgb``.

    Raises
    ------
    InputError
        On mismatched shapes, an unsupported channel count or ``alpha`` outside ``[0, 1]``.
    """
    heat = np.asarray(heatmap_rgb)
    if heat.ndim not in (3, 4) or heat.shape[-1] != 3:
        raise InputError(
            f"heatmap_rgb must be RGB of shape (n, h, w, 3) or (h, w, 3), as returned by "
            f"heatmap(); got shape {heat.shape}."
        )
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1]; got {alpha}.")
    pixels = _as_float_array(image, "image")
    if pixels.ndim == heat.ndim - 1:
        pixels = pixels[..., None]
    if pixels.shape[:-1] != heat.shape[:-1] or pixels.shape[-1] not in (1, 3):
        raise InputError(
            f"image of shape {np.shape(image)} does not match heatmaps of shape {heat.shape}: "
            "it must have the same samples, height and width, with no channel axis or 1 "
            "(grayscale) or 3 (RGB) channels last; transpose channels-first images first."
        )
    batched = pixels if pixels.ndim == 4 else pixels[None]
    unit = _image_to_unit(batched, input_range).reshape(pixels.shape)
    rgb = np.broadcast_to(unit, heat.shape) * 255.0
    blended = (1.0 - alpha) * rgb + alpha * heat.astype(np.float32)
    return np.round(np.clip(blended, 0.0, 255.0)).astype(np.uint8)


def grid(
    images: np.ndarray | Sequence[np.ndarray],
    ncols: int | None = None,
    pad: int = 2,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile a batch of images into one image, row by row, with padding between and around.

    Parameters
    ----------
    images : array_like
        ``(n, h, w)`` or ``(n, h, w, c)`` (e.g. the output of :func:`heatmap` or
        :func:`overlay`), or a sequence of equally shaped images.
    ncols : int, optional
        Tiles per row; default ``ceil(sqrt(n))``. Unused cells of the last row are padding.
    pad : int, optional
        Pixels of padding between tiles and around the border.
    pad_value : int, optional
        Value of the padding pixels (255 = white for uint8).

    Returns
    -------
    numpy.ndarray
        ``(rows * (h + pad) + pad, ncols * (w + pad) + pad[, c])`` with the dtype of
        ``images``.
    """
    batch = np.asarray(images)
    if batch.ndim not in (3, 4) or len(batch) == 0:
        raise InputError(
            f"grid() needs a non-empty batch of shape (n, h, w) or (n, h, w, c); got shape "
            f"{batch.shape}. Add a batch axis for a single image: images[None]."
        )
    if pad < 0:
        raise InputError(f"pad must be >= 0; got {pad}.")
    n, h, w = batch.shape[:3]
    ncols = min(n, ncols if ncols is not None else math.ceil(math.sqrt(n)))
    if ncols < 1:
        raise InputError(f"ncols must be >= 1; got {ncols}.")
    nrows = math.ceil(n / ncols)
    canvas = np.full(
        (nrows * (h + pad) + pad, ncols * (w + pad) + pad) + batch.shape[3:],
        pad_value,
        dtype=batch.dtype,
    )
    for index, tile in enumerate(batch):
        row, col = divmod(index, ncols)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        canvas[top : top + h, left : left + w] = tile
    return canvas


def save_png(path: str | os.PathLike[str], rgb_uint8: np.ndarray) -> None:
    """Write one image to a PNG file atomically.

    The image is written to a temporary file in the destination directory and moved into
    place with :func:`os.replace`, so readers never see a half-written file and a failed
    write leaves no temporary file behind. Missing parent directories are created.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (overwritten if it exists).
    rgb_uint8 : numpy.ndarray
        uint8 image of shape ``(h, w)``, ``(h, w, 1)``, ``(h, w, 3)`` or ``(h, w, 4)``; a
        leading batch axis of size 1 is dropped. Tile batches with :func:`grid` first.

    Raises
    ------
    InputError
        If the array is not a single uint8 image.
    """
    pixels = np.asarray(rgb_uint8)
    if pixels.ndim == 4 and len(pixels) == 1:
        pixels = pixels[0]
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        raise InputError(
            f"save_png() writes one image of shape (h, w), (h, w, 3) or (h, w, 4); got shape "
            f"{np.shape(rgb_uint8)}. Tile a batch into one image with grid() first."
        )
    if pixels.dtype != np.uint8:
        raise InputError(
            f"save_png() needs uint8 pixels; got {pixels.dtype}. Use heatmap()/overlay(), or "
            "convert with np.clip(x * 255, 0, 255).astype(np.uint8) for values in [0, 1]."
        )
    from PIL import Image

    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    temp_path = os.path.join(directory, f".{os.path.basename(target)}.{secrets.token_hex(8)}.tmp")
    # O_EXCL: never clobber an existing file; mode 0o666 lets the umask decide, like open().
    handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(pixels).save(stream, format="PNG")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, target)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
