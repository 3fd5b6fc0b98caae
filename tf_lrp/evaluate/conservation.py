"""Conservation: the sum of input relevance against the explained output ``f_c(x)``.

LRP-0 on a bias-free ReLU network conserves exactly (ratio 1); biases, the epsilon stabiliser
and rules such as z+ absorb or redistribute relevance (ratio below or above 1). Gradient x
Input and Integrated Gradients (``sum R ~ f_c(x) - f_c(baseline)``) are compared on the same
scale. Not a quality score by itself: it says what the heatmap's total means.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_lrp.errors import InputError

__all__ = ["Conservation", "conservation"]


@dataclasses.dataclass
class Conservation:
    """Sum of input relevance and the explained output, per sample."""

    relevance_sum: np.ndarray
    output: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """``sum R / f_c(x)`` (1.0: conserved; below: absorbed, e.g. by biases or epsilon)."""
        return self.relevance_sum / self.output

    @property
    def error(self) -> np.ndarray:
        """``|sum R - f_c(x)|``."""
        return np.abs(self.relevance_sum - self.output)


def conservation(relevance, output) -> Conservation:
    """Compare the sum of each sample's relevance with its explained output.

    Parameters
    ----------
    relevance
        ``(n, ...)`` explanations.
    output
        ``(n,)`` explained outputs ``f_c(x)``.

    Returns
    -------
    Conservation
        Per-sample sums, outputs, ``.ratio`` and ``.error``.
    """
    r = np.asarray(relevance, dtype=np.float64)
    out = np.asarray(output, dtype=np.float64).ravel()
    if out.shape != (r.shape[0],):
        raise InputError(f"got {out.size} outputs for {r.shape[0]} explanations")
    return Conservation(r.reshape(r.shape[0], -1).sum(axis=1), out)
