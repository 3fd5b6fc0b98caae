"""Attribution graphs: a channel's relevance decomposed into the channels of a lower layer.

Conditioning the backward pass on channel ``c`` of a layer and reading the relevance per
channel at a layer below gives how much of ``c``'s relevance each lower channel carries (the
"attribution graph" of Achtibat et al. 2023, one edge set at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tf_lrp.concepts._trace import check_analyzer, conditioned_relevance, layer_nodes
from tf_lrp.errors import InputError

__all__ = ["Contributions", "attribution_graph"]


@dataclass(frozen=True)
class Contributions:
    """A channel's relevance split over the channels of a lower layer.

    Arrays have a leading sample axis ``n``; with several channels given, a condition axis
    ``k`` follows it.

    Attributes
    ----------
    layer, lower_layer
        Node names of the conditioned layer and of the layer below.
    channel
        The conditioned channel (an int, or the ``k`` channels).
    total
        ``(n[, k])``: the relevance of the conditioned channel (its concept relevance).
    relevance
        ``(n[, k], lower channels)``: the relevance every lower channel receives from it.
    channels, values
        ``(n[, k], top_k)``: the ``top_k`` lower channels with the largest relevance, largest
        first, and their relevance.
    """

    layer: str
    lower_layer: str
    channel: int | tuple[int, ...]
    total: np.ndarray
    relevance: np.ndarray
    channels: np.ndarray
    values: np.ndarray

    @property
    def share(self) -> np.ndarray:
        """``values / total``: the part of the channel's relevance each top contributor
        carries (``nan`` where the total is 0)."""
        total = np.asarray(self.total, np.float64)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total != 0, self.values / total, np.nan)

    @property
    def rest(self) -> np.ndarray:
        """``total - relevance.sum(-1)``: relevance that does not pass the lower layer (paths
        around it) or is absorbed on the way (epsilon, biases). Near 0 when the lower layer
        is a cut (every path from the input to the conditioned layer passes it) and the rules
        in between conserve."""
        return self.total - self.relevance.sum(axis=-1)


def attribution_graph(analyzer, x, target, layer: str, channel: int | Sequence[int],
                      lower_layer: str, top_k: int = 5) -> Contributions:
    """Decompose the relevance of ``channel`` of ``layer`` into the channels of ``lower_layer``.

    The backward pass is conditioned on ``(layer, channel)`` (only that channel's relevance
    passes); the relevance arriving at ``lower_layer``'s output, summed over positions, is each
    lower channel's contribution. Several channels run in one traced call.

    Parameters
    ----------
    analyzer
        A :class:`tf_lrp.Analyzer`.
    x, target
        A batch and the explained output(s), as for the analyzer.
    layer
        The conditioned layer (a layer or node name, as :func:`condition_node` takes it).
    channel
        A channel of ``layer``, or a sequence of channels (then results get a ``k`` axis).
    lower_layer
        A layer below ``layer``.
    top_k
        How many contributors to rank.

    Returns
    -------
    Contributions
        ``relevance`` sums over all lower channels to ``total`` where every path from the
        input to ``layer`` passes ``lower_layer`` and the rules between conserve (see
        :attr:`Contributions.rest`).

    Raises
    ------
    InputError
        If a layer is unknown, has no channel axis, ``lower_layer`` is not below ``layer``, a
        channel is out of range or ``top_k < 1``.
    """
    check_analyzer(analyzer)
    if int(top_k) != top_k or top_k < 1:
        raise InputError(f"top_k must be a positive integer, got {top_k!r}")
    upper = layer_nodes(analyzer, [layer])[0].name
    lower = layer_nodes(analyzer, [lower_layer])[0].name
    if upper == lower:
        raise InputError(f"lower_layer {lower_layer!r} is the conditioned layer itself; pick a "
                         "layer below it")
    single = np.ndim(channel) == 0
    chans = np.atleast_1d(np.asarray(channel))
    if chans.ndim != 1 or not len(chans):
        raise InputError(f"channel must be an integer or a sequence of integers, got {channel!r}")
    n = analyzer._prepare(x)[0].shape[0]
    indices = np.broadcast_to(chans, (n, len(chans)))
    out = conditioned_relevance(analyzer, x, target, {upper: indices}, [lower])
    relevance = out[lower]
    total = out[upper].sum(axis=-1)
    k = min(int(top_k), relevance.shape[-1])
    order = np.argsort(-relevance, axis=-1, kind="stable")[..., :k]
    values = np.take_along_axis(relevance, order, axis=-1)
    if single:
        relevance, total, order, values = relevance[:, 0], total[:, 0], order[:, 0], values[:, 0]
    return Contributions(upper, lower, int(chans[0]) if single else tuple(int(c) for c in chans),
                         total, relevance, order, values)
