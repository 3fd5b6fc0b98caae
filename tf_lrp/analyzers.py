"""All attribution methods behind one call signature: ``method(model)(x, target=None)``.

LRP itself is :class:`tf_lrp.Analyzer` (re-exported here); the baselines explain the same
output (the logits: a final softmax is stripped) with gradients of it. ``SmoothGrad``,
``IntegratedGradients`` and ``Random`` live in :mod:`tf_lrp.baselines` and are re-exported here.
"""

from __future__ import annotations

import tensorflow as tf

from tf_lrp.analyzer import Analyzer, BaseAnalyzer

__all__ = ["Analyzer", "BaseAnalyzer", "Gradient", "GradientXInput", "Sensitivity"]


def __getattr__(name: str):
    # tf_lrp.baselines builds on Gradient from this module: import it on first use
    if name in ("IntegratedGradients", "Random", "SmoothGrad"):
        from tf_lrp import baselines

        return getattr(baselines, name)
    raise AttributeError(f"module 'tf_lrp.analyzers' has no attribute {name!r}")


class Gradient(BaseAnalyzer):
    """The gradient of the explained output with respect to the input, ``d y_c / d x``."""

    def _gradient(self, xs, targets):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xs)
            y = self._output(self._forward(xs)[0])
            selected = tf.reduce_sum(y * self._mask(y, targets))
        return tape.gradient(selected, xs)

    def _explain(self, xs, targets):
        return self._gradient(xs, targets)


class Sensitivity(Gradient):
    """Sensitivity analysis: the squared gradient, ``(d y_c / d x)^2``."""

    def _explain(self, xs, targets):
        return [tf.square(g) for g in self._gradient(xs, targets)]


class GradientXInput(Gradient):
    """Gradient times input, ``x * d y_c / d x``."""

    def _explain(self, xs, targets):
        return [x * g for x, g in zip(xs, self._gradient(xs, targets))]
