"""Rules for the parts of attention layers (AttnLRP, Achtibat et al., ICML 2024; CP-LRP).

:mod:`tf_lrp.attention` rewrites attention layers into projections, scores, softmax and
context; these rules explain the parts without weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_lrp.rules.base import Facts, Rule
from tf_lrp.rules.propagation import Context, _vjp, stabilize

Tensor = tf.Tensor


class Bilinear(Rule):
    """A product ``y = f(a, b)`` bilinear in its two inputs (matrix products, einsum).

    Epsilon over the sum, then a split between the factors (AttnLRP, Achtibat et al. 2024,
    Prop. 3.3): every term ``a_jk b_kl`` of ``y_jl`` gets ``a_jk b_kl R_jl / (y_jl + epsilon
    sign+(y_jl))``, and ``shares[0]`` of it goes to ``a_jk``, ``shares[1]`` to ``b_kl``.

    Parameters
    ----------
    epsilon
        Stabiliser of the denominator (absorbs weak relevance).
    shares
        The fractions of a term's relevance its two factors receive; ``(0.5, 0.5)`` is AttnLRP's
        uniform rule, ``(0.0, 1.0)`` holds the first factor constant (CP-LRP on ``A . v``: all
        relevance flows through the values).
    """

    zeros = "always"

    def __init__(self, epsilon: float = 1e-6, shares: Sequence[float] = (0.5, 0.5)):
        self.epsilon = float(epsilon)
        self.shares = tuple(float(s) for s in shares)
        if len(self.shares) != 2:
            raise ValueError(f"Bilinear: shares must be two fractions, got {shares!r}")
        self.params = {"epsilon": self.epsilon, "shares": self.shares}

    def __call__(self, ctx: Context) -> list[Tensor]:
        a, b = ctx.inputs[0], ctx.inputs[1]
        rest = ctx.inputs[2:]
        s = tf.math.divide_no_nan(ctx.relevance[0], stabilize(ctx.outputs[0], self.epsilon))
        ga, gb = _vjp(lambda v: ctx.node.call([v[0], v[1], *rest])[:1], [a, b], [s])
        out = [None if self.shares[0] == 0 else self.shares[0] * a * ga,
               None if self.shares[1] == 0 else self.shares[1] * b * gb]
        return out + [None] * len(rest)

    def check(self, node, facts: Facts) -> str | None:
        if not getattr(node.layer, "bilinear", False):
            return (f"{self!r} fits the bilinear products of attention layers "
                    "(AttentionScores, AttentionContext)")
        return None


class AttnSoftmax(Rule):
    """AttnLRP's softmax rule (Achtibat et al. 2024, Prop. 3.1):
    ``R_in_i = x_i (R_i - s_i sum_j R_j)``, the sum over the softmax axes.

    ``x`` are the scores before the mask, ``s`` the softmax output. Not conservative: the
    input relevance sums to ``sum_i x_i R_i - (sum_i s_i x_i) sum_j R_j`` per row.
    """

    zeros = "always"

    def __init__(self):
        self.params = {}

    def __call__(self, ctx: Context) -> list[Tensor]:
        x, s, r = ctx.inputs[0], ctx.outputs[0], ctx.relevance[0]
        axes = ctx.node.layer.axes(x)
        total = tf.reduce_sum(r, axis=axes, keepdims=True)
        return [x * (r - s * total)] + [None] * (len(ctx.inputs) - 1)

    def check(self, node, facts: Facts) -> str | None:
        if not callable(getattr(node.layer, "axes", None)):
            return f"{self!r} fits the softmax of attention layers (AttentionSoftmax)"
        return None


class NoRelevance(Rule):
    """Nothing passes (the attention mask)."""

    zeros = "always"

    def __init__(self):
        self.params = {}

    def __call__(self, ctx: Context) -> list[Tensor]:
        return [None] * len(ctx.inputs)
