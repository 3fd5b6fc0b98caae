"""Class Artifact Compensation (ClArC; Anders et al., Information Fusion 2022): remove a
strategy SpRAy found, as a new Keras model.

The artifact is a direction in a layer's channel space, a concept activation vector
(:func:`artifact_direction`): the difference of the mean activations (averaged over positions)
of the samples that show the artifact and of those that do not, normalised (the "pattern"
CAV). Two corrections:

* **P-ClArC** (:func:`p_clarc`, no training): after the layer, every activation vector ``a``
  (at every position) is moved along the direction ``v`` to the clean samples' mean ``z``:
  ``a - ((a - z) . v) v``. What the artifact adds along ``v`` is gone; nothing else changes.
  :func:`project_out` does it at several layers in turn.
* **A-ClArC** (:func:`a_clarc`, a short fine-tune): the layers after it are fine-tuned on
  data whose activations all get the artifact added (``a - ((a - z_art) . v) v``, ``z_art``
  the artifact samples' mean), so the artifact no longer tells the classes apart; the
  returned model is the fine-tuned one without the added layer.

Both return models built from the original's layers (:func:`tf_lrp.keras_adapter.replay_with`)
that save, load and are explained like any other (the projection is a registered Keras
layer, :class:`ArtifactProjection`, explained as the linear map it is).
"""

from __future__ import annotations

import keras
import numpy as np

from tf_lrp import keras_adapter
from tf_lrp.errors import InputError

__all__ = ["ArtifactProjection", "a_clarc", "artifact_direction", "layer_means", "p_clarc",
           "project_out"]


@keras.saving.register_keras_serializable(package="tf_lrp")
class ArtifactProjection(keras.layers.Layer):
    """``a - ((a - reference) . direction) direction`` over the last axis (``direction`` a
    unit vector): moves every activation vector along the direction to the reference's
    level."""

    def __init__(self, direction, reference, **kwargs):
        super().__init__(**kwargs)
        self.direction = np.asarray(direction, np.float32)
        self.reference = np.asarray(reference, np.float32)
        norm = float(np.linalg.norm(self.direction))
        if not norm or self.direction.shape != self.reference.shape:
            raise InputError("the direction must be non-zero and shaped as the reference")
        self.direction = self.direction / norm

    def call(self, a):
        from keras import ops

        v = ops.convert_to_tensor(self.direction, a.dtype)
        z = ops.convert_to_tensor(self.reference, a.dtype)
        along = ops.sum((a - z) * v, axis=-1, keepdims=True)
        return a - along * v

    def get_config(self):
        return {**super().get_config(), "direction": self.direction.tolist(),
                "reference": self.reference.tolist()}


def layer_means(model, layer: str, x, batch_size: int = 64) -> np.ndarray:
    """``(n, channels)``: each sample's activations at ``layer``, averaged over positions."""
    probe = keras.Model(model.inputs, keras_adapter.layer_output(model, layer))
    a = probe.predict(np.asarray(x), batch_size=batch_size, verbose=0)
    return a.reshape(len(a), -1, a.shape[-1]).mean(axis=1)


def artifact_direction(model, layer: str, x, artifact) -> tuple[np.ndarray, np.ndarray,
                                                                  np.ndarray]:
    """The artifact's direction at ``layer`` from samples ``x`` and a flag per sample
    (``artifact``: e.g. a SpRAy cluster, or samples a user marked).

    Returns
    -------
    direction, clean_mean, artifact_mean
        The unit vector ``mean(artifact) - mean(clean)`` and the two means (channels).
    """
    flags = np.asarray(artifact, bool)
    if flags.shape != (len(x),) or flags.all() or not flags.any():
        raise InputError("artifact must flag some, not all, of the samples (one bool each)")
    m = layer_means(model, layer, x)
    clean, art = m[~flags].mean(0), m[flags].mean(0)
    d = art - clean
    return d / np.linalg.norm(d), clean, art


def p_clarc(model, layer: str, direction, clean_mean) -> keras.Model:
    """The model with the artifact projected out after ``layer`` (module docstring)."""
    projection = ArtifactProjection(direction, clean_mean, name=f"{layer}_p_clarc")
    return keras_adapter.replay_with(model, layer, projection)


def project_out(model, layers: list[str], x, artifact) -> tuple[keras.Model, list[np.ndarray]]:
    """P-ClArC at several layers, in order: each layer's direction is computed on the model
    already corrected at the layers before it (the artifact's trace that an earlier projection
    left). Returns the corrected model and the directions.

    One rank-1 projection rarely removes an artifact whole: on the shipped Clever-Hans model
    the exploit accuracy goes from 0 to 0.56 with ``block3_3_relu`` alone and to 0.86 with
    ``block2_2_relu`` then ``block3_3_relu`` (benchmarks/CLEVERHANS.md).
    """
    directions = []
    for layer in layers:
        v, clean, _ = artifact_direction(model, layer, x, artifact)
        model = p_clarc(model, layer, v, clean)
        directions.append(v)
    return model, directions


def a_clarc(model, layer: str, direction, artifact_mean, x, y, epochs: int = 1,
            learning_rate: float = 1e-4, batch_size: int = 32) -> keras.Model:
    """A copy of the model whose layers after ``layer`` are fine-tuned with the artifact
    added to every sample's activations (module docstring)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    added = ArtifactProjection(direction, artifact_mean, name=f"{layer}_a_clarc")
    train = keras_adapter.replay_with(copy, layer, added)
    frozen = True
    for lay in copy.layers:
        lay.trainable = not frozen
        if lay.name == layer:
            frozen = False
    train.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    train.fit(np.asarray(x), np.asarray(y), batch_size=batch_size, epochs=epochs, verbose=0)
    for lay in copy.layers:
        lay.trainable = True
    return copy
