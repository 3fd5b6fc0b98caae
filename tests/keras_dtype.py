"""A test helper: build Keras layers in another float dtype (float64 references)."""

from __future__ import annotations

import contextlib

import keras


@contextlib.contextmanager
def default_dtype(dtype: str):
    """Build layers in ``dtype``; restores floatx and the global dtype policy afterwards."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
