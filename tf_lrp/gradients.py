"""Gradient-based attribution: the gradient, sensitivity, gradient x input.

They explain the same output as LRP (the logits: a final softmax is stripped). For token inputs
(integer ids read by an ``Embedding``) gradients are taken in embedding space.
"""

from __future__ import annotations

import tensorflow as tf

from tf_lrp.base import BaseAnalyzer

__all__ = ["Gradient", "GradientXInput", "Sensitivity"]


class Gradient(BaseAnalyzer):
    """The gradient of the explained output with respect to the input, ``d y_c / d x``.

    For token inputs (integer ids read by an ``Embedding``) gradients are taken in embedding
    space, with respect to the embedding vectors ``e``; a token's value is then
    ``sum_d e_d * d y_c / d e_d`` (gradient x embedding, summed over the embedding axis, as LRP's
    token relevance is), for this class and :class:`GradientXInput` alike.
    """

    def _space(self, xs):
        """The inputs in the space gradients are taken in (embedding vectors for tokens; other
        integer inputs, such as a padding mask, as floats: their gradient is zero)."""
        return [self._tokens[i].call([x])[0] if i in self._tokens else
                x if x.dtype.is_floating else tf.cast(x, tf.float32)
                for i, x in enumerate(xs)]

    def _gradient(self, zs, targets, xs=None):
        """``d y_c / d z`` for ``zs`` in gradient space; ``xs``: the raw inputs (the token ids,
        needed for masks) with ``zs``'s batch, when they differ from ``zs``."""
        xs = zs if xs is None else xs
        inputs = [x if i in self._tokens or not x.dtype.is_floating else z
                  for i, (x, z) in enumerate(zip(xs, zs))]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(zs)
            inject = {self._tokens[i].name: z for i, z in enumerate(zs) if i in self._tokens}
            y = self._output(self._forward(inputs, inject)[0])
            selected = tf.reduce_sum(y * self._mask(y, targets))
        return [tf.zeros_like(z) if g is None else g
                for z, g in zip(zs, tape.gradient(selected, zs))]

    def _to_input(self, i: int, z, r, gradient: bool):
        """Map ``r`` (in gradient space) onto input ``i``: for tokens, summed over the
        embedding axis, a raw ``gradient`` first multiplied by the embedding ``z``."""
        if i not in self._tokens:
            return r
        return tf.reduce_sum(z * r if gradient else r, axis=-1)

    def _explain(self, xs, targets):
        zs = self._space(xs)
        return [self._to_input(i, z, g, True)
                for i, (z, g) in enumerate(zip(zs, self._gradient(zs, targets, xs)))]


class Sensitivity(Gradient):
    """Sensitivity analysis: the squared gradient, ``(d y_c / d x)^2`` (for tokens, summed over
    the embedding axis)."""

    def _explain(self, xs, targets):
        zs = self._space(xs)
        return [self._to_input(i, z, tf.square(g), False)
                for i, (z, g) in enumerate(zip(zs, self._gradient(zs, targets, xs)))]


class GradientXInput(Gradient):
    """Gradient times input, ``x * d y_c / d x`` (for tokens: gradient x embedding, summed)."""

    def _explain(self, xs, targets):
        zs = self._space(xs)
        return [self._to_input(i, z, z * g, False)
                for i, (z, g) in enumerate(zip(zs, self._gradient(zs, targets, xs)))]
