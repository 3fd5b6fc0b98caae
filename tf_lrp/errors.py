"""Exceptions raised by tf_lrp.

Every error names the problem and the fix: which layer, which class, what is supported.
"""

from __future__ import annotations


class LRPError(Exception):
    """Base class of every error tf_lrp raises on purpose."""


class UnsupportedLayerError(LRPError, TypeError):
    """A layer (or raw operation) has no LRP handling and no rule was registered for it."""


class ModelLoadError(LRPError, OSError):
    """A model file is missing, corrupt, not a model, or written by an unsupported Keras version."""


class InputError(LRPError, ValueError):
    """The inputs or targets handed to an analyzer are invalid (shape, dtype, NaN/Inf, range)."""
