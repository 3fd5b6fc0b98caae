"""Keras callback that logs LRP heatmaps of fixed samples to TensorBoard while a model trains.

Examples
--------
>>> callback = tf_lrp.callbacks.HeatmapCallback(x_val[:4], log_dir="logs")
>>> model.fit(x, y, epochs=10, callbacks=[callback, keras.callbacks.TensorBoard("logs")])
>>> # tensorboard --logdir logs   ->   IMAGES tab, tags "lrp/heatmap" and "lrp/overlay"
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_lrp import summary
from tf_lrp.errors import InputError

__all__ = ["HeatmapCallback"]


def _make_analyzer(model: keras.Model, composite: Any, **analyzer_kwargs: Any) -> Any:
    """Build the analyzer the callback uses (one place, so it is built exactly once)."""
    from tf_lrp.analyzer import Analyzer

    return Analyzer(model, composite, **analyzer_kwargs)


def _as_input_list(x: object) -> list[np.ndarray]:
    """Return the fixed samples as a list of float32 arrays (one per model input)."""
    arrays = list(x) if isinstance(x, (list, tuple)) else [x]
    try:
        converted = [np.asarray(a, dtype=np.float32) for a in arrays]
    except (TypeError, ValueError) as err:
        raise InputError(
            "HeatmapCallback needs x as a NumPy array (or a list of arrays for a multi-input "
            f"model), e.g. x_val[:4]; got {type(x).__name__}."
        ) from err
    if not converted or any(a.ndim == 0 or len(a) == 0 for a in converted):
        raise InputError("HeatmapCallback needs at least one sample in x, e.g. x_val[:4].")
    return converted


class HeatmapCallback(keras.callbacks.Callback):
    """Explain fixed samples with LRP every few epochs and log the heatmaps to TensorBoard.

    At the end of every ``every_n_epochs``-th epoch the samples ``x`` are explained with
    ``tf_lrp.Analyzer(self.model, composite, **analyzer_kwargs)`` and written with
    :func:`tf_lrp.summary.heatmaps` to ``{log_dir}/lrp`` (next to the ``train`` and
    ``validation`` runs of ``keras.callbacks.TensorBoard``), with the 0-based epoch as step.

    The analyzer is built once (when training starts, or at the first write if the model is
    not built yet) and reused: it reads the model's current weights on every call, so each
    epoch's heatmaps reflect the weights at that epoch without rebuilding or retracing.

    Parameters
    ----------
    x : array_like or list of array_like
        The samples to explain, e.g. ``x_val[:4]``; a list of arrays for multi-input models.
        Each must be a batch of images ``(n, h, w)`` / ``(n, h, w, c)``, or flat vectors
        with ``image_shape``.
    log_dir : str or os.PathLike
        TensorBoard log directory; summaries go to its ``lrp`` subdirectory.
    composite : str, Composite or Rule, optional
        The LRP rules (anything :class:`tf_lrp.Analyzer` accepts). Default
        ``"epsilon_plus"``: LRP-ε for dense layers and z⁺ for convolutions, a robust choice
        that needs no input range. Use ``"epsilon_gamma_box"`` with ``low``/``high`` for
        image models with a known input range.
    every_n_epochs : int, optional
        Write after epochs ``n, 2n, ...`` (1-based counting).
    target : int or sequence of int, optional
        Output to explain (all samples, or one per sample). ``None`` explains the predicted
        class, which may change between epochs; fix it to follow one class.
    name : str, optional
        Tag prefix (default ``"lrp"``): tags ``"lrp/heatmap"`` and ``"lrp/overlay"``. For
        multi-input models one prefix per input: ``"lrp/input_0"``, ...
    max_outputs : int, optional
        Number of samples drawn; default all of ``x``.
    overlay : bool, optional
        Also write the heatmaps blended over the inputs (default ``True``).
    image_shape : tuple of int, optional
        Draw each sample reshaped to ``(h, w)`` or ``(h, w, c)`` (for flat inputs).
    input_range : (float, float), optional
        Value range of ``x`` for the overlay; default min-max per image.
    cmap : str, optional
        Diverging matplotlib colormap (default ``"bwr"``).
    **analyzer_kwargs
        Passed to :class:`tf_lrp.Analyzer`, e.g. ``low=-1.0, high=1.0`` or ``epsilon=0.1``.
    """

    def __init__(
        self,
        x: object,
        log_dir: str | os.PathLike[str],
        composite: Any = "epsilon_plus",
        every_n_epochs: int = 1,
        target: int | Sequence[int] | None = None,
        *,
        name: str = "lrp",
        max_outputs: int | None = None,
        overlay: bool = True,
        image_shape: tuple[int, ...] | None = None,
        input_range: tuple[float, float] | None = None,
        cmap: str = "bwr",
        **analyzer_kwargs: Any,
    ) -> None:
        super().__init__()
        summary._require_tensorboard()
        if int(every_n_epochs) < 1:
            raise InputError(f"every_n_epochs must be >= 1; got {every_n_epochs}.")
        self.inputs = _as_input_list(x)
        for index, array in enumerate(self.inputs):  # fail now, not after the first epoch
            summary._as_batch(array, image_shape, f"x[{index}]" if len(self.inputs) > 1 else "x")
        self.log_dir = os.fspath(log_dir)
        self.composite = composite
        self.every_n_epochs = int(every_n_epochs)
        self.target = target
        self.analyzer_kwargs = analyzer_kwargs
        self._draw_options = {
            "max_outputs": max_outputs if max_outputs is not None else len(self.inputs[0]),
            "image_shape": image_shape,
            "input_range": input_range,
            "cmap": cmap,
        }
        self._name = name
        self._overlay = overlay
        self._analyzer: Any = None
        self._writer: tf.summary.SummaryWriter | None = None

    def set_model(self, model: keras.Model) -> None:
        """Attach the model; an analyzer built for a different model is dropped."""
        if model is not getattr(self, "_model", None):
            self._analyzer = None
        super().set_model(model)

    @property
    def analyzer(self) -> Any:
        """The analyzer of the current model, built on first access and then reused."""
        if self._analyzer is None:
            self._analyzer = _make_analyzer(self.model, self.composite, **self.analyzer_kwargs)
        return self._analyzer

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Open the summary writer and build the analyzer if the model is already built."""
        self._open_writer()
        if self.model.built:  # unsupported layers fail here, before any training time is spent
            _ = self.analyzer

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Explain ``x`` and write the heatmaps after every ``every_n_epochs``-th epoch."""
        if (epoch + 1) % self.every_n_epochs == 0:
            self.write(step=epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        """Close the summary writer (a later ``fit`` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, step: int) -> None:
        """Explain ``x`` with the model's current weights and write the heatmaps at ``step``."""
        relevance = self.analyzer(self._model_input(), target=self.target)
        relevances = relevance if isinstance(relevance, (list, tuple)) else [relevance]
        writer = self._open_writer()
        with writer.as_default():
            for index, (inputs, maps) in enumerate(zip(self.inputs, relevances, strict=True)):
                summary.heatmaps(
                    self._tag(index),
                    maps,
                    step=step,
                    inputs=inputs if self._overlay else None,
                    **self._draw_options,
                )
        writer.flush()

    def _model_input(self) -> np.ndarray | list[np.ndarray]:
        return self.inputs[0] if len(self.inputs) == 1 else self.inputs

    def _tag(self, index: int) -> str:
        return self._name if len(self.inputs) == 1 else f"{self._name}/input_{index}"

    def _open_writer(self) -> tf.summary.SummaryWriter:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "lrp"))
        return self._writer
