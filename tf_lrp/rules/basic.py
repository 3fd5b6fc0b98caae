"""Rules for layers with weights, each declared as groups of (input, weight) modifier terms."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_lrp.rules.base import BasicRule
from tf_lrp.rules.modifiers import (
    bound,
    flat,
    minus,
    negative,
    ones,
    plus,
    positive,
    square,
    unchanged,
)
from tf_lrp.rules.propagation import Context, Group, Term, propagate

Tensor = tf.Tensor


class Epsilon(BasicRule):
    """LRP-epsilon: ``R_j = a_j sum_k w_jk R_k / (z_k + epsilon * sign+(z_k))``.

    Parameters
    ----------
    epsilon
        Stabiliser added to the denominator with the sign of ``z``; absorbs weak relevance.
    bias
        Whether the bias is part of ``z`` (then it absorbs its share of relevance).
    """

    def __init__(self, epsilon: float = 1e-6, bias: bool = True):
        super().__init__({"epsilon": epsilon, "bias": bias})
        self.epsilon, self.bias = float(epsilon), bool(bias)

    def groups(self) -> list[Group]:
        return [Group((Term(),), unchanged if self.bias else None, self.epsilon)]

    def reads_output(self, nonnegative: Sequence[bool]) -> bool:
        return True  # its only term is the layer itself: z is the forward's


class Zero(Epsilon):
    """LRP-0: ``R_j = a_j sum_k w_jk R_k / z_k``; a zero denominator passes no relevance."""

    def __init__(self):
        super().__init__(epsilon=0.0, bias=True)
        self.params = {}


class Gamma(BasicRule):
    """LRP-gamma, generalized to signed inputs and outputs (Andeol et al. 2021).

    Contributions that push ``z`` away from zero are amplified, so the denominator has the
    sign of ``z`` and ``|d| >= |z|`` (it never crosses zero). With ``up(w) = w + gamma w+``
    and ``down(w) = w + gamma w-``:

    - outputs with ``z >= 0``: ``d+ = x+ up(w) + x- down(w) + up(b)``,
      ``R_j = x+_j sum_k up(w)_jk s_k + x-_j sum_k down(w)_jk s_k``, ``s = R / d+``;
    - outputs with ``z < 0``: ``d- = x+ down(w) + x- up(w) + down(b)``,
      ``R_j = x+_j sum_k down(w)_jk s_k + x-_j sum_k up(w)_jk s_k``, ``s = R / d-``,

    each stabilised by ``stabilizer * sign(d)``. On non-negative inputs and positive outputs
    this is the original rule, ``rho(w) = w + gamma w+``. Where relevance is known to vanish at
    negative outputs (a ReLU follows), only the first half is computed.
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        super().__init__({"gamma": gamma, "stabilizer": stabilizer})
        self.gamma, self.stabilizer = float(gamma), float(stabilizer)

    def groups(self) -> list[Group]:
        g = self.gamma

        def up(w):
            return w + g * plus(w)

        def down(w):
            return w + g * minus(w)

        return [
            Group((Term(positive, up), Term(negative, down)), up, self.stabilizer,
                  where="positive"),
            Group((Term(positive, down), Term(negative, up)), down, self.stabilizer,
                  where="negative"),
        ]


class AlphaBeta(BasicRule):
    """LRP-alpha-beta: ``R = alpha * (positive share) - beta * (negative share)``.

    ``z+ = x+ w+ + x- w-`` (plus ``b+`` if ``bias``) and ``z- = x+ w- + x- w+`` (plus ``b-``),
    each with its own denominator. ``alpha - beta`` must be 1 (conservation).
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, bias: bool = False):
        if abs(float(alpha) - float(beta) - 1.0) > 1e-9:
            raise ValueError(
                f"AlphaBeta needs alpha - beta = 1 to conserve relevance; got alpha={alpha}, "
                f"beta={beta}. Use e.g. alpha=2, beta=1 or alpha=1, beta=0."
            )
        super().__init__({"alpha": alpha, "beta": beta, "bias": bias})
        self.alpha, self.beta, self.bias = float(alpha), float(beta), bool(bias)

    def groups(self) -> list[Group]:
        groups = [Group((Term(positive, plus), Term(negative, minus)),
                        plus if self.bias else None, 0.0, self.alpha)]
        if self.beta:
            groups.append(Group((Term(positive, minus), Term(negative, plus)),
                                minus if self.bias else None, 0.0, -self.beta))
        return groups

    def reads_output(self, nonnegative: Sequence[bool]) -> bool:
        # for non-negative inputs the forward with w- is derived from z0 (minus.complement)
        return bool(self.beta) and all(nonnegative)


class ZPlus(AlphaBeta):
    """LRP-z+ : ``AlphaBeta(alpha=1, beta=0, bias=False)`` (for non-negative inputs ``rho(w) = w+``)."""

    def __init__(self):
        super().__init__(alpha=1.0, beta=0.0, bias=False)
        self.params = {}


class ZBox(BasicRule):
    """LRP-z^B (bounded inputs, for the first layer).

    ``R_j = sum_k (a_j w_jk - l_j w+_jk - h_j w-_jk) / sum_j (...) * R_k``, no bias; ``low`` and
    ``high`` are scalars or arrays broadcastable to the input. The bounds are in the **model's**
    input space: where elementwise or routing layers (``Rescaling``, ``Normalization``,
    padding) stand between the model input and this layer, they are mapped through them.
    """

    def __init__(self, low=-1.0, high=1.0):
        super().__init__({"low": low, "high": high})
        self.low, self.high = low, high

    def groups(self, low=None, high=None) -> list[Group]:
        low = self.low if low is None else low
        high = self.high if high is None else high
        return [Group((Term(), Term(bound(low), plus), Term(bound(high), minus)))]

    def __call__(self, ctx: Context) -> list[Tensor]:
        low, high = (self.low, self.high) if ctx.input_bounds is None else \
            ctx.input_bounds(self.low, self.high)
        return propagate(ctx, self.groups(low, high))


class WSquare(BasicRule):
    """LRP-w^2: ``R_j = sum_k w_jk^2 / sum_j w_jk^2 * R_k`` (not multiplied by the input)."""

    def groups(self) -> list[Group]:
        return [Group((Term(ones, square),))]


class Flat(BasicRule):
    """LRP-flat: like :class:`WSquare` with every weight set to 1 (uniform over the receptive field)."""

    def groups(self) -> list[Group]:
        return [Group((Term(ones, flat),))]
