"""tf_lrp: Layer-wise Relevance Propagation for Keras 3 on TensorFlow.

>>> import tf_lrp
>>> from tf_lrp import composites
>>> analyzer = tf_lrp.Analyzer(model, composites.EpsilonGammaBox(low=-1.0, high=1.0))
>>> relevance = analyzer(x)              # same shape as x
"""

from tf_lrp import analyzers, canonizers, composites, layers, rules
from tf_lrp.analyzer import Analyzer
from tf_lrp.errors import InputError, LRPError, ModelLoadError, UnsupportedLayerError
from tf_lrp.io import load_model

__version__ = "0.1.0"

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
]
