"""Load Keras models for explanation: Keras 3 ``.keras`` archives and legacy ``.h5`` files.

Keras 3 reads most ``.h5`` files written by tf.keras 2, but not all. :func:`load_model`
reads the architecture of an ``.h5`` file itself, repairs the known Keras 2 differences
in that in-memory copy, then rebuilds the model and loads the weights with Keras's own
legacy HDF5 routines. The file on disk is only ever opened read-only.

Repairs of Keras 2 configurations
---------------------------------
- Sub-models (a Sequential or Functional model used as a layer): Keras 2 gave every model a
  node of its own at construction, so the first call of a sub-model is node 1 in the file
  while Keras 3 counts it as node 0 ("The following nodes failed to be resolved"). The node
  indices of references to sub-models are shifted back by one.
- Some layer configs carry keys Keras 3 rejects, e.g. ``groups`` of ``DepthwiseConv2D``
  ("Unrecognized keyword arguments passed to DepthwiseConv2D: {'groups': 1}"), the unused
  ``kernel_*`` keys of ``SeparableConv2D``, ``trainable`` of ``SpatialDropout2D``: dropped
  (see ``KERAS2_ONLY_KEYS``; every dropped key is unused by that layer in Keras 2).
- A single input or output is written by Keras 2 as a list of one; Keras 2 called and
  returned it as a bare tensor, and so does the loaded model.
- ``TFOpLambda`` layers (raw TensorFlow ops on Keras tensors) have no Keras 3 equivalent:
  a :class:`~tf_lrp.errors.ModelLoadError` names them and says how to rebuild the model.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import keras

from tf_lrp import keras_adapter
from tf_lrp.errors import ModelLoadError

__all__ = ["load_model"]

PathLike = str | os.PathLike

KERAS_ZIP_SUFFIXES = (".keras",)
HDF5_SUFFIXES = (".h5", ".hdf5")

# Layers tf.keras 2 creates for raw TensorFlow ops / tensor methods on Keras tensors.
KERAS2_OP_LAYERS = frozenset(
    {"TFOpLambda", "SlicingOpLambda", "ClassMethod", "InstanceMethod", "InstanceProperty"}
)
# Config keys that tf.keras 2 writes and Keras 3 rejects ("Unrecognized keyword arguments").
# Each is unused by the layer in Keras 2 (``groups`` is dropped only when it is 1), so
# dropping it changes nothing.
_SEPARABLE_KEYS = ("groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint")
KERAS2_ONLY_KEYS: dict[str, tuple[str, ...]] = {
    "DepthwiseConv1D": ("groups",),
    "DepthwiseConv2D": ("groups",),
    "SeparableConv1D": _SEPARABLE_KEYS,
    "SeparableConv2D": _SEPARABLE_KEYS,
    "Conv1DTranspose": ("groups",),
    "Conv2DTranspose": ("groups",),
    "Conv3DTranspose": ("groups",),
    "SpatialDropout1D": ("trainable", "noise_shape"),
    "SpatialDropout2D": ("trainable", "noise_shape"),
    "SpatialDropout3D": ("trainable", "noise_shape"),
}

_RESAVE_FIX = (
    "Re-save the model from the environment that trained it, e.g. `model.save('model.h5')` "
    "with tf.keras 2 or `model.save('model.keras')` with Keras 3."
)


def load_model(
    path: PathLike | keras.Model,
    custom_objects: dict[str, Any] | None = None,
    safe_mode: bool = True,
) -> keras.Model:
    """Load a Keras model from a ``.keras`` archive or a legacy ``.h5`` file, uncompiled.

    Parameters
    ----------
    path : str, os.PathLike or keras.Model
        Path of a Keras 3 ``.keras`` zip archive, or of an ``.h5``/``.hdf5`` file written by
        ``model.save`` in tf.keras 2 or Keras 3, or of a KerasHub preset directory
        (``save_to_preset``: the task model with its preprocessor, or the backbone; needs the
        ``hub`` extra). A ``keras.Model`` is returned unchanged.
    custom_objects : dict, optional
        Maps class or function names used in the file to your own classes/functions,
        e.g. ``{"MyLayer": MyLayer}``. Needed for every custom layer in the model.
    safe_mode : bool, default True
        Refuse to load ``Lambda`` layers whose Python code is stored in the file, since
        loading them runs that code. Pass ``safe_mode=False`` only for files you trust.

    Returns
    -------
    keras.Model
        The model with its weights, never compiled (optimizer state is not loaded).

    Raises
    ------
    ModelLoadError
        The path is missing, a directory, has an unknown extension; the file is corrupt,
        truncated or not a model (e.g. weights only); it uses a class Keras cannot find
        (pass ``custom_objects``), a ``Lambda`` layer under ``safe_mode=True``, TFOpLambda
        layers, or it is a ``.keras`` archive written by Keras 2. The message names the
        path, the problem and the fix.

    Notes
    -----
    Legacy ``.h5`` configurations are repaired in memory before Keras rebuilds the model
    (sub-model node indices, config keys Keras 3 rejects); the file on disk is opened
    read-only and never changed.

    Examples
    --------
    >>> model = load_model("model.h5")  # doctest: +SKIP
    >>> model = load_model("model.keras", custom_objects={"MyLayer": MyLayer})  # doctest: +SKIP
    """
    if isinstance(path, keras.Model):
        return path
    preset = Path(os.fsdecode(path)).expanduser() if isinstance(path, (str, os.PathLike)) \
        else None
    if preset is not None and preset.is_dir() and (preset / "metadata.json").exists():
        return _load_preset(preset)
    file_path = _checked_path(path)
    if file_path.suffix.lower() in KERAS_ZIP_SUFFIXES:
        return _load_keras_zip(file_path, custom_objects, safe_mode)
    return _load_hdf5(file_path, custom_objects, safe_mode)


# --------------------------------------------------------------------------- paths


def _checked_path(path: object) -> Path:
    """Return ``path`` as a Path to an existing file with a supported extension."""
    if not isinstance(path, (str, os.PathLike)):
        raise ModelLoadError(
            f"load_model expects a file path (str or os.PathLike) or a keras.Model, "
            f"got {type(path).__name__}: {path!r}."
        )
    file_path = Path(os.fsdecode(path)).expanduser()
    if not file_path.exists():
        raise ModelLoadError(
            f"No such model file: '{file_path}'. Check the path (relative paths start at "
            f"the current directory, '{Path.cwd()}')."
        )
    if file_path.is_dir():
        raise ModelLoadError(_directory_message(file_path))
    if not os.access(file_path, os.R_OK):
        raise ModelLoadError(
            f"Cannot read '{file_path}': permission denied. Fix: make the file readable "
            f"(e.g. `chmod u+r`) or copy it somewhere you can read."
        )
    suffix = file_path.suffix.lower()
    if suffix not in KERAS_ZIP_SUFFIXES + HDF5_SUFFIXES:
        raise ModelLoadError(_unknown_extension_message(file_path))
    return file_path


def _directory_message(path: Path) -> str:
    if (path / "saved_model.pb").exists():
        return (
            f"'{path}' is a TensorFlow SavedModel folder, which Keras 3 cannot load as a "
            f"keras.Model. Fix: load it in the environment that wrote it and save it as a "
            f"file: `model.save('model.h5')` (tf.keras 2) or `model.save('model.keras')`."
        )
    return f"'{path}' is a directory, not a model file. Pass the path of a .keras or .h5 file."


def _unknown_extension_message(path: Path) -> str:
    message = (
        f"Unknown model file extension '{path.suffix}' for '{path}': load_model reads "
        f"Keras 3 archives ('.keras') and legacy HDF5 files ('.h5', '.hdf5')."
    )
    if zipfile.is_zipfile(path):
        return (
            message
            + " The file is a zip archive: if it is a Keras model, rename it to end in .keras."
        )
    if h5py.is_hdf5(path):
        return (
            message + " The file is an HDF5 file: if it is a Keras model, rename it to end in .h5."
        )
    return message + " Save the model with `model.save('model.keras')` and load that file."


# ------------------------------------------------------------------------ KerasHub presets


def _import_keras_hub(what: str):
    try:
        import keras_hub
    except ImportError as err:
        raise ModelLoadError(f"{what} needs KerasHub. Fix: pip install 'tf_lrp[hub]' "
                             "(or keras-hub)") from err
    return keras_hub


def _load_preset(path: Path) -> keras.Model:
    """A KerasHub preset directory (``save_to_preset``): the task model when the directory
    has one (``task.json``, with its preprocessor), else the backbone."""
    keras_hub = _import_keras_hub(f"'{path}' is a KerasHub preset directory; loading it")
    try:
        if (path / "task.json").exists():
            name = json.loads((path / "task.json").read_text())["class_name"]
            cls = getattr(keras_hub.models, name, None)
            if cls is None:
                raise ModelLoadError(f"'{path}' holds a {name}, which this keras-hub version "
                                     "does not have. Fix: upgrade keras-hub")
            model = cls.from_preset(str(path))
        else:
            model = keras_hub.models.Backbone.from_preset(str(path))
    except ModelLoadError:
        raise
    except Exception as err:
        raise _translate_keras_error(err, path) from err
    return _checked_model(model, path)


# ------------------------------------------------------------------------ .keras zip


def _load_keras_zip(
    path: Path, custom_objects: dict[str, Any] | None, safe_mode: bool
) -> keras.Model:
    version = _keras_zip_version(path)
    if _major(version) < 3:
        raise ModelLoadError(
            f"'{path}' is a .keras archive written by Keras {version}; Keras 3 cannot read "
            f'the .keras format of Keras 2 (it fails with "Could not locate class '
            f"'Functional'\"). Fix: with the Keras {version} environment, load the model and "
            f"re-save it in the legacy HDF5 format, `model.save('model.h5')`, then load that "
            f".h5 file."
        )
    if _mentions_keras_hub(path):  # KerasHub's classes register themselves on import
        _import_keras_hub(f"'{path}' holds a KerasHub model; loading it")
    try:
        model = keras.saving.load_model(
            path, custom_objects=custom_objects, compile=False, safe_mode=safe_mode
        )
    except Exception as err:
        raise _translate_keras_error(err, path) from err
    return _checked_model(model, path)


def _mentions_keras_hub(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return b"keras_hub" in archive.read("config.json")
    except (KeyError, zipfile.BadZipFile, OSError):
        return False


def _keras_zip_version(path: Path) -> str:
    """The ``keras_version`` in the archive's metadata.json (raises if it is no Keras archive)."""
    broken = (
        f"'{path}' is not a readable .keras archive (the file is corrupt or truncated, or "
        f"it is not a Keras 3 model archive). Fix: save the model again with "
        f"`model.save('model.keras')` and check that the copy is complete."
    )
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(broken)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            raw = archive.read("metadata.json") if "metadata.json" in names else b"{}"
        metadata = json.loads(raw)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise ModelLoadError(f"{broken} ({type(err).__name__}: {err})") from err
    if "config.json" not in names:
        raise ModelLoadError(f"{broken} (it has no config.json)")
    return str(metadata.get("keras_version", "unknown"))


def _major(version: str) -> int:
    """Major version number; unknown versions count as current (3)."""
    match = re.match(r"\s*(\d+)\.", version)
    return int(match.group(1)) if match else 3


# ----------------------------------------------------------------------------- .h5


def _load_hdf5(path: Path, custom_objects: dict[str, Any] | None, safe_mode: bool) -> keras.Model:
    if not h5py.is_hdf5(path):
        raise ModelLoadError(
            f"'{path}' is not an HDF5 file: it is corrupt or in another format. Fix: save the "
            f"model again with `model.save('model.h5')` (or .keras) and check the copy is complete."
        )
    try:
        h5 = h5py.File(path, mode="r")  # read-only: the user's file is never modified
    except OSError as err:
        raise ModelLoadError(
            f"'{path}' could not be opened as HDF5 ({err}): the file is corrupt or truncated. "
            f"Fix: save or copy the model file again."
        ) from err
    with h5:
        config = _read_model_config(h5, path)
        _repair_keras2_config(config, path, custom_objects or {})
        try:
            model = _build_from_hdf5(h5, config, custom_objects, safe_mode)
        except Exception as err:
            raise _translate_keras_error(err, path) from err
    return _checked_model(model, path)


def _read_model_config(h5: h5py.File, path: Path) -> dict[str, Any]:
    """Parse the ``model_config`` attribute into a fresh dict (our copy to repair)."""
    raw = h5.attrs.get("model_config")
    if raw is None:
        raise ModelLoadError(_not_a_model_message(h5, path))
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        config = keras_adapter.decode_legacy_config(raw)
    except ValueError as err:
        raise ModelLoadError(
            f"'{path}' has an unreadable model_config attribute ({err}). {_RESAVE_FIX}"
        ) from err
    if not isinstance(config, dict) or "config" not in config:
        raise ModelLoadError(f"'{path}' has an invalid model_config attribute. {_RESAVE_FIX}")
    return config


def _not_a_model_message(h5: h5py.File, path: Path) -> str:
    holds_weights = "layer_names" in h5.attrs or "model_weights" in h5 or "layers" in h5
    what = "holds weights only" if holds_weights else "holds no Keras model"
    return (
        f"'{path}' is an HDF5 file but not a saved model: it {what} (no 'model_config' "
        f"attribute, so the architecture is missing). Fix: build the model in code and call "
        f"`model.load_weights('{path.name}')`, or save the whole model with "
        f"`model.save('model.h5')` / `model.save('model.keras')` instead of `save_weights`."
    )


def _build_from_hdf5(
    h5: h5py.File,
    config: dict[str, Any],
    custom_objects: dict[str, Any] | None,
    safe_mode: bool,
) -> keras.Model:
    """Rebuild the model from the repaired config and load the weights, as Keras does for .h5."""
    return keras_adapter.model_from_legacy_h5(h5, config, custom_objects, safe_mode)


# ------------------------------------------------------------ Keras 2 config repairs


def _repair_keras2_config(
    config: dict[str, Any], path: Path, custom_objects: dict[str, Any]
) -> None:
    """Repair, in place, a parsed config so that Keras 3 rebuilds the Keras 2 model."""
    _reject_keras2_op_layers(config, path, custom_objects)
    for entry in _iter_layer_entries(config):
        _drop_keras2_only_keys(entry)
    for model_config in [config, *filter(_is_model_entry, _iter_layer_entries(config))]:
        if "input_layers" in model_config["config"]:
            _repair_legacy_functional(model_config["config"])


def _reject_keras2_op_layers(
    config: dict[str, Any], path: Path, custom_objects: dict[str, Any]
) -> None:
    found = [
        entry
        for entry in _iter_layer_entries(config)
        if entry.get("class_name") in KERAS2_OP_LAYERS
        and entry.get("class_name") not in custom_objects
    ]
    if not found:
        return
    listed = ", ".join(_describe_op_layer(entry) for entry in found)
    raise ModelLoadError(
        f"'{path}' contains Keras 2 {found[0]['class_name']} layers, which Keras 3 cannot "
        f"load (Keras 3 has no TFOpLambda layer): {listed}. tf.keras 2 creates them when a "
        f"raw TensorFlow op is applied to a Keras tensor, e.g. `x * 2.0` or `tf.nn.relu(x)`. "
        f"Fix: rebuild the architecture in Keras 3 code, writing those steps with Keras "
        f"layers or keras.ops (e.g. `keras.layers.ReLU()`, `x * 2.0`), keep the other layers "
        f"in the same order, then call `model.load_weights('{path.name}')`; or, in the tf.keras 2 "
        f"environment, replace the raw ops by Keras layers, copy the weights and re-save as .h5."
    )


def _drop_keras2_only_keys(entry: dict[str, Any]) -> None:
    layer_config = entry.get("config")
    if not isinstance(layer_config, dict):
        return
    for key in KERAS2_ONLY_KEYS.get(entry.get("class_name", ""), ()):
        if key == "groups" and layer_config.get(key, 1) != 1:
            continue  # a grouped layer Keras 3 cannot build: let Keras report it
        layer_config.pop(key, None)


def _describe_op_layer(entry: dict[str, Any]) -> str:
    layer_config = entry.get("config", {})
    name = layer_config.get("name", entry.get("name", "?"))
    function = layer_config.get("function")
    op = f", op tf.{function}" if isinstance(function, str) else ""
    return f"'{name}' ({entry['class_name']}{op})"


def _is_model_entry(entry: dict[str, Any]) -> bool:
    """A layer entry that is itself a model (Sequential, Functional, Model subclass)."""
    layer_config = entry.get("config")
    return isinstance(layer_config, dict) and isinstance(layer_config.get("layers"), list)


def _is_functional_entry(entry: dict[str, Any]) -> bool:
    return _is_model_entry(entry) and "input_layers" in entry["config"]


def _iter_layer_entries(model_config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every layer entry of a model config, at every nesting depth."""
    layers = model_config.get("config", {}).get("layers", [])
    for entry in layers if isinstance(layers, list) else []:
        if not isinstance(entry, dict):
            continue
        yield entry
        if _is_model_entry(entry):
            yield from _iter_layer_entries(entry)


def _iter_tensor_refs(structure: Any) -> Iterator[list[Any]]:
    """Legacy tensor references ``[layer_name, node_index, tensor_index(, kwargs)]``."""
    if (
        isinstance(structure, list)
        and len(structure) in (3, 4)
        and isinstance(structure[0], str)
        and isinstance(structure[1], int)
    ):
        yield structure
    elif isinstance(structure, list):
        for item in structure:
            yield from _iter_tensor_refs(item)
    elif isinstance(structure, dict):
        for item in structure.values():
            yield from _iter_tensor_refs(item)


def _repair_legacy_functional(functional_config: dict[str, Any]) -> None:
    """Give a Functional config in the Keras 2 format (list nodes) Keras 2's meaning in Keras 3."""
    entries = [e for e in functional_config["layers"] if isinstance(e, dict)]
    nodes = [node for e in entries for node in e.get("inbound_nodes", [])]
    if not all(isinstance(node, list) for node in nodes):
        return  # Keras 3 node format: nothing to repair
    _renumber_submodel_nodes(functional_config, entries, nodes)
    _unwrap_single_io(functional_config)


def _renumber_submodel_nodes(
    functional_config: dict[str, Any], entries: list[dict[str, Any]], nodes: list[Any]
) -> None:
    """Shift Keras 2 node indices of references to sub-models to Keras 3 numbering.

    Keras 2 gave each model a node at construction, so its k-th call (k = 0, 1, ...) is
    written as node k + 1. Keras 3 numbers calls from 0 in layer inputs and, for
    Functional sub-models only, reads model outputs as node k + 1. A sub-model counts as
    shifted when some reference reaches past its number of calls.
    """
    inbound_refs = [ref for node in nodes for ref in _iter_tensor_refs(node)]
    output_refs = list(_iter_tensor_refs(functional_config.get("output_layers", [])))
    for entry in filter(_is_model_entry, entries):
        name = entry.get("name", entry["config"].get("name"))
        calls = len(entry.get("inbound_nodes", []))
        mine_in = [ref for ref in inbound_refs if ref[0] == name]
        mine_out = [ref for ref in output_refs if ref[0] == name]
        offset = int(any(ref[1] >= calls for ref in mine_in + mine_out))
        for ref in mine_in:
            ref[1] -= offset
        output_shift = int(_is_functional_entry(entry)) - offset
        for ref in mine_out:
            ref[1] += output_shift


def _unwrap_single_io(functional_config: dict[str, Any]) -> None:
    """Keras 2 writes a single input/output as a list of one but calls and returns it bare.

    Unwrapping keeps that: the model takes and returns a tensor, not a list of one, and
    Keras 3 does not warn that "the structure of `inputs` doesn't match".
    """
    for key in ("input_layers", "output_layers"):
        refs = functional_config.get(key)
        if isinstance(refs, list) and len(refs) == 1 and list(_iter_tensor_refs(refs)) == [refs[0]]:
            functional_config[key] = refs[0]


# -------------------------------------------------------------------------- errors


def _translate_keras_error(err: Exception, path: Path) -> ModelLoadError:
    """A ModelLoadError naming the path, the problem and the fix for a Keras load failure."""
    message = str(err)
    unknown = re.search(r"Could not locate (?:class|function) '([^']+)'", message) or re.search(
        r"Unknown [\w ]+: '([^']+)'", message
    )
    if unknown:
        name = unknown.group(1)
        return ModelLoadError(
            f"'{path}' uses '{name}', which Keras does not know (a custom layer, model or "
            f"function). Fix: import its class or function and pass it: "
            f"`load_model('{path.name}', custom_objects={{'{name}': {name.split('>')[-1]}}})`."
        )
    if "safe_mode" in message:
        return ModelLoadError(
            f"'{path}' contains a Lambda layer (or other object) whose Python code is stored in "
            f"the file; loading it runs that code, so it is refused by default. Fix: if you "
            f"trust the file, call `load_model('{path.name}', safe_mode=False)`; otherwise "
            f"replace the Lambda by a registered custom layer and re-save."
        )
    return ModelLoadError(
        f"Keras could not rebuild the model in '{path}' ({type(err).__name__}: "
        f"{_gist(message)}). The file may be corrupt, use custom layers (pass "
        f"`custom_objects={{...}}`), or come from an unsupported Keras version. {_RESAVE_FIX}"
    )


def _gist(message: str, limit: int = 500) -> str:
    """The informative part of a Keras error message (they can embed whole configs)."""
    _, _, cause = message.rpartition("Exception encountered:")
    lines = cause.strip().splitlines()
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit] + "..."


def _checked_model(model: object, path: Path) -> keras.Model:
    if not isinstance(model, keras.Model):
        raise ModelLoadError(
            f"'{path}' holds a {type(model).__name__}, not a keras.Model. Fix: save the "
            f"whole model (`model.save(...)`), not a single layer or object."
        )
    return model
