"""tf_lrp: Layer-wise Relevance Propagation for Keras 3 on TensorFlow.

>>> import tf_lrp
>>> from tf_lrp import composites
>>> analyzer = tf_lrp.Analyzer(model, composites.EpsilonGammaBox(low=-1.0, high=1.0))
>>> relevance = analyzer(x)              # same shape as x

Submodules and names are imported on first use, so ``import tf_lrp`` (and ``tf-lrp --help``)
does not pay for importing TensorFlow until something needs it.
"""

from __future__ import annotations

import importlib

from tf_lrp.errors import InputError, LRPError, ModelLoadError, UnsupportedLayerError

__version__ = "0.1.0"

_SUBMODULES = {
    "analyzer", "analyzers", "attention", "base", "baselines", "callbacks", "canonizers", "cli",
    "composites", "concepts", "datasets", "distribute", "evaluate", "flatten", "gradients",
    "graph", "hub", "io", "keras_adapter", "layers", "plan", "ray", "recurrent", "rules",
    "structure", "summary", "tuning", "visualize", "weightless",
}
_NAMES = {"Analyzer": "tf_lrp.analyzer", "load_model": "tf_lrp.io", "tune": "tf_lrp.tuning"}

__all__ = [
    "Analyzer",
    "InputError",
    "LRPError",
    "ModelLoadError",
    "UnsupportedLayerError",
    "analyzers",
    "canonizers",
    "composites",
    "layers",
    "load_model",
    "rules",
    "tune",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"tf_lrp.{name}")
    else:
        raise AttributeError(f"module 'tf_lrp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(_NAMES))
