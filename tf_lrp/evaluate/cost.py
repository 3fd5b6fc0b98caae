"""Cost: what one explanation costs, absolutely and relative to one plain gradient.

:func:`time_per_explanation` calls a method once on a batch to warm it up (tracing,
allocation), then times ``repeats`` further calls on the same batch and returns the median
wall-clock time divided by the batch size, in milliseconds. :func:`relative_cost` times a
plain gradient (the reference) on the same batch right before and right after the method and
divides by the mean of the two, so a machine that slows down or speeds up during the run
(another job, thermal throttling) affects both alike. A ratio of 1 costs what a gradient costs;
LRP with ε/z+ rules is expected near 1-2, SmoothGrad and Integrated Gradients near their number
of samples or steps.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np

from tf_lrp.errors import InputError

__all__ = ["Cost", "relative_cost", "time_per_explanation"]


@dataclasses.dataclass
class Cost:
    """Milliseconds per explanation of a method and of the reference gradient.

    Attributes
    ----------
    ms
        The method: median over the timed batches of the batch time / batch size.
    reference_ms
        The plain gradient on the same batch (mean of the timing before and after the method).
    batch_size
        Samples per timed batch.
    """

    ms: float
    reference_ms: float
    batch_size: int

    @property
    def ratio(self) -> float:
        """``ms / reference_ms``: the cost in units of one gradient."""
        return self.ms / self.reference_ms


def time_per_explanation(explain: Callable, x: np.ndarray, target=None, *,
                         repeats: int = 5) -> float:
    """Median milliseconds per explanation of ``explain(x, target)`` after one warm-up call.

    Parameters
    ----------
    explain
        An analyzer or any callable ``(x, target) -> relevance``.
    x
        The timed batch (every call explains all of it).
    target
        Passed through.
    repeats
        Number of timed calls.

    Returns
    -------
    float
        Milliseconds per sample (> 0).
    """
    if int(repeats) != repeats or repeats < 1:
        raise InputError(f"repeats must be a positive integer, got {repeats!r}")
    n = len(x)
    if n == 0:
        raise InputError("cannot time an empty batch")
    explain(x, target)
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        explain(x, target)
        times.append(time.perf_counter() - start)
    return max(statistics.median(times), 1e-9) / n * 1000.0


def relative_cost(explain: Callable, reference: Callable, x: np.ndarray, target=None, *,
                  repeats: int = 5) -> Cost:
    """Time ``explain`` between two timings of ``reference`` (a plain gradient) on ``x``.

    Parameters
    ----------
    explain
        The method: ``(x, target) -> relevance``.
    reference
        The reference, e.g. ``tf_lrp.analyzers.Gradient(model)``.
    x, target
        The timed batch and its targets.
    repeats
        Timed calls of each (after one warm-up call each).

    Returns
    -------
    Cost
        Milliseconds per explanation and the ratio to the reference.
    """
    before = time_per_explanation(reference, x, target, repeats=repeats)
    ms = time_per_explanation(explain, x, target, repeats=repeats)
    after = time_per_explanation(reference, x, target, repeats=repeats)
    return Cost(ms, (before + after) / 2, len(x))
