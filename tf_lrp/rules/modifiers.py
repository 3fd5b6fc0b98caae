"""Input and weight modifiers: the pieces rules are declared from.

An input modifier maps a layer's input ``x`` (and whether it is known to be non-negative) to
the input of one term (``x+``, ``x-``, ones, a bound), or ``None`` where that term vanishes; a
weight modifier maps a kernel (or bias) to its modified form (``w+``, ``w-``, ``w**2``, ones).
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

Tensor = tf.Tensor
InputModifier = Callable[[Tensor, bool], "Tensor | None"]
WeightModifier = Callable[[Tensor], Tensor]


def identity(x: Tensor, nonnegative: bool = False) -> Tensor:
    """The input itself."""
    return x


def positive(x: Tensor, nonnegative: bool = False) -> Tensor:
    """``x+``; the input itself when it is known to be non-negative."""
    return x if nonnegative else tf.nn.relu(x)


def negative(x: Tensor, nonnegative: bool = False) -> Tensor | None:
    """``x-``; ``None`` (the term vanishes) when the input is known to be non-negative."""
    return None if nonnegative else tf.minimum(x, 0.0)


def ones(x: Tensor, nonnegative: bool = False) -> Tensor:
    """An all-ones input (rules not multiplied by the input: w-square, flat)."""
    return tf.ones_like(x)


ones.multiplies_input = False


def bound(value) -> InputModifier:
    """The input replaced by ``-value`` broadcast to its shape (the z^B bound terms)."""

    def modifier(x: Tensor, nonnegative: bool = False) -> Tensor:
        return -tf.broadcast_to(tf.cast(value, x.dtype), tf.shape(x))

    modifier.multiplies_input = False

    return modifier


def plus(w: Tensor) -> Tensor:
    """``w+``."""
    return tf.nn.relu(w)


def minus(w: Tensor) -> Tensor:
    """``w-``."""
    return tf.minimum(w, 0.0)


# w- = w - w+: a forward with w- is the layer's own forward minus the one with w+
minus.complement = plus


def square(w: Tensor) -> Tensor:
    """``w**2``."""
    return tf.square(w)


def flat(w: Tensor) -> Tensor:
    """All weights 1."""
    return tf.ones_like(w)


def unchanged(b: Tensor) -> Tensor:
    """The bias as it is."""
    return b
