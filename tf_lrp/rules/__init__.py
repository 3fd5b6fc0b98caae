"""LRP rules.

A layer computes ``z_k = sum_j a_j w_jk + b_k`` and relevance ``R_k`` arrives at its output
(before the activation: activations are split off by the canonizers). Notation:
``x+ = max(x, 0)``, ``x- = min(x, 0)``, ``sign+(z) = 1 if z >= 0 else -1``.

Every rule with weights is a :class:`BasicRule`: it only *declares* one or more :class:`Group`
of :class:`Term`\\ s, and the shared four-step machinery (:func:`propagate`) does the rest:

1. forward:  ``z = sum_t apply(u_t, rho_t(W)) + rho(b)``  with ``u_t`` the modified input of term t;
2. divide:   ``s = R / (z + stabilizer * sign+(z))``, and ``s = 0`` where the denominator is 0;
3. gradient: ``c_t = rho_t(W)^T s``  (a vector-Jacobian product, TensorFlow's own transposed op);
4. multiply: ``R_in = coefficient * sum_t u_t * c_t``, summed over the groups.

Where a term is the layer itself (unmodified input and weights) the forward pass's own
pre-activation is reused, so LRP-epsilon costs what a gradient costs. Where an
input is statically known to be non-negative (after ReLU, pooling of non-negative values, ...)
``x+ = x`` and every ``x-`` term vanishes, so it is not computed. Several terms left in one
group run as one operation on stacked inputs and kernels where the layer allows it
(:func:`_fused_forward`).
"""

from __future__ import annotations

from tf_lrp.rules.attention import AttnSoftmax, Bilinear, NoRelevance
from tf_lrp.rules.base import BasicRule, Facts, Rule
from tf_lrp.rules.basic import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus
from tf_lrp.rules.modifiers import (
    bound,
    flat,
    identity,
    minus,
    negative,
    ones,
    plus,
    positive,
    square,
    unchanged,
)
from tf_lrp.rules.propagation import Context, Group, Term, propagate, stabilize
from tf_lrp.rules.routing import (
    EmbeddingSum,
    HeldConstant,
    Pass,
    Route,
    SignalTakesAll,
    UniformProduct,
)

#: The rules by snake_case name (used by :func:`tf_lrp.composites.get` and the CLI).
RULES: dict[str, type[Rule]] = {
    "epsilon": Epsilon,
    "zero": Zero,
    "gamma": Gamma,
    "alpha_beta": AlphaBeta,
    "z_plus": ZPlus,
    "z_box": ZBox,
    "w_square": WSquare,
    "flat": Flat,
    "pass": Pass,
    "route": Route,
    "signal_takes_all": SignalTakesAll,
    "uniform_product": UniformProduct,
    "embedding_sum": EmbeddingSum,
    "bilinear": Bilinear,
    "attn_softmax": AttnSoftmax,
    "held_constant": HeldConstant,
}

__all__ = [
    "RULES", "AlphaBeta", "AttnSoftmax", "BasicRule", "Bilinear", "Context", "EmbeddingSum", "Epsilon", "Facts", "Flat", "Gamma", "Group", "HeldConstant", "NoRelevance",
    "Pass", "Route", "Rule", "SignalTakesAll", "Term", "UniformProduct", "WSquare", "ZBox",
    "ZPlus", "Zero", "bound", "flat", "identity", "minus", "negative", "ones", "plus",
    "positive", "propagate", "square", "stabilize", "unchanged",
]
