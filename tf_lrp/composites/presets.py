"""The registered composites (presets), the registry (:func:`get`, :func:`names`,
:func:`register`) and :func:`as_composite`."""

from __future__ import annotations

import inspect

from keras import layers as kl

from tf_lrp import rules
from tf_lrp.composites.base import CONVOLUTIONS, DENSE, Composite, LayerMap

_REGISTRY: dict[str, type[Composite]] = {}


def register(name: str):
    """Class decorator: register a composite under ``name`` (snake_case)."""

    def deco(cls):
        _REGISTRY[name] = cls
        return cls

    return deco


def names() -> list[str]:
    """Names of the registered composites."""
    return sorted(_REGISTRY)


def get(name: str, **kwargs) -> Composite:
    """A registered composite by name, or a single rule by its name (``"epsilon"``, ``"z_plus"``...).

    A single rule becomes ``LayerMap(default=rule)``: it applies to every layer with weights.

    Raises
    ------
    KeyError
        If ``name`` names neither; the message lists what is registered.
    """
    key = name.replace("-", "_").lower()
    if key in _REGISTRY:
        return _REGISTRY[key](**kwargs)
    if key in rules.RULES:
        return LayerMap(default=rules.RULES[key](**kwargs))
    raise KeyError(
        f"unknown composite or rule {name!r}; composites: {', '.join(names())}; "
        f"rules: {', '.join(sorted(rules.RULES))}"
    )


def describe() -> list[tuple[str, str]]:
    """``(name, signature)`` of every registered composite and rule (for ``tf-lrp composites``)."""
    out = [(n, f"{_REGISTRY[n].__name__}{inspect.signature(_REGISTRY[n], eval_str=True)}")
           for n in names()]
    out += [(n, f"rules.{c.__name__}{inspect.signature(c, eval_str=True)}")
            for n, c in sorted(rules.RULES.items())]
    return out


@register("epsilon_plus")
class EpsilonPlus(LayerMap):
    """LRP-epsilon on Dense layers, z+ on convolutions."""

    def __init__(self, epsilon: float = 1e-6):
        eps = rules.Epsilon(epsilon)
        super().__init__([(DENSE, eps), (CONVOLUTIONS, rules.ZPlus())], default=eps)


@register("epsilon_alpha2_beta1")
class EpsilonAlpha2Beta1(LayerMap):
    """LRP-epsilon on Dense layers, alpha=2 beta=1 on convolutions."""

    def __init__(self, epsilon: float = 1e-6):
        eps = rules.Epsilon(epsilon)
        super().__init__([(DENSE, eps), (CONVOLUTIONS, rules.AlphaBeta(2.0, 1.0))], default=eps)


@register("epsilon_plus_flat")
class EpsilonPlusFlat(LayerMap):
    """Like :class:`EpsilonPlus`, with the flat rule on the first layer."""

    def __init__(self, epsilon: float = 1e-6):
        eps = rules.Epsilon(epsilon)
        super().__init__([(DENSE, eps), (CONVOLUTIONS, rules.ZPlus())], default=eps,
                         first=rules.Flat())


@register("epsilon_gamma_box")
class EpsilonGammaBox(LayerMap):
    """z^B on the first layer, gamma on convolutions, epsilon on Dense layers.

    Parameters
    ----------
    low, high
        Bounds of the input (scalars or arrays broadcastable to it) for the z^B rule.
    epsilon, gamma
        Parameters of the epsilon and gamma rules.
    """

    def __init__(self, low=-1.0, high=1.0, epsilon: float = 0.25, gamma: float = 0.25):
        eps = rules.Epsilon(epsilon)
        super().__init__([(DENSE, eps), (CONVOLUTIONS, rules.Gamma(gamma))], default=eps,
                         first=rules.ZBox(low, high))


@register("deep_taylor")
class DeepTaylor(LayerMap):
    """The tutorial's deep Taylor network: z^B on the first layer, z+ on every other layer."""

    def __init__(self, low=-1.0, high=1.0):
        super().__init__(default=rules.ZPlus(), first=rules.ZBox(low, high))


#: Normalization layers AttnLRP explains by the identity rule.
NORMALIZATIONS: tuple[type, ...] = tuple(
    c for c in (kl.LayerNormalization, kl.GroupNormalization, kl.UnitNormalization,
                getattr(kl, "RMSNormalization", None)) if isinstance(c, type))


@register("attn_lrp")
class AttnLRP(LayerMap):
    """AttnLRP (Achtibat et al., ICML 2024) for Transformers and other sequence models.

    - every layer with weights (Dense, EinsumDense and the attention projections, convolutions,
      the linear maps of SimpleRNN/LSTM/GRU): LRP-epsilon;
    - the bilinear products of attention (query . key, weights . values): epsilon over the sum,
      then a uniform split between the two factors (Prop. 3.3, :class:`rules.Bilinear`);
    - the attention softmax: Prop. 3.1 (:class:`rules.AttnSoftmax`);
    - LayerNormalization, GroupNormalization, UnitNormalization, RMSNormalization: Prop. 3.4,
      the normalizing scale ``1/sigma`` held constant and the remaining linear map (centering,
      ``gamma``, ``beta``) by epsilon, as the authors' code (LXT) does (``"identity"``,
      relevance passed unchanged, is refused: it divides by residual sums near zero);
    - elementwise activations (GELU, ...): the identity; ``Add`` (residuals, positional
      embeddings): in proportion to the summands; ``Embedding``: summed per token; recurrent
      gates: no relevance (signal-take-all).

    Parameters
    ----------
    epsilon
        The stabiliser of every epsilon rule and bilinear product.
    normalization
        ``"linear"`` (Prop. 3.4, the default and only setting; ``"identity"`` raises and
        says why).
    """

    def __init__(self, epsilon: float = 1e-6, normalization: str = "linear"):
        from tf_lrp.attention import AttentionContext, AttentionScores, AttentionSoftmax

        eps = rules.Epsilon(epsilon)
        super().__init__([
            ((AttentionScores, AttentionContext), rules.Bilinear(epsilon)),
            (AttentionSoftmax, rules.AttnSoftmax()),
            *_normalization(normalization, eps),
        ], default=eps)
        self.epsilon, self.normalization = epsilon, normalization

    def __repr__(self) -> str:
        return f"AttnLRP(epsilon={self.epsilon!r}, normalization={self.normalization!r})"


def _normalization(mode: str, eps: rules.Rule) -> list:
    if mode == "identity":
        raise ValueError(
            "normalization='identity' is refused: passing a normalization's relevance unchanged "
            "to its input hands the residual sum before it relevance on the normalized scale, and "
            "the sum's proportional rule then divides by values near zero (on the shipped "
            "text_transformer sum(R)/logit ranged from -0.65 to 4.72, against 0.41-0.68 with "
            "'linear'; -126.8 for a logit of -0.27 on a small transformer). The literature "
            "(AttnLRP Prop. 3.4; Ali et al. 2022) holds the normalizing scale constant: use "
            "normalization='linear' (the default)")
    if mode != "linear":
        raise ValueError(f"normalization must be 'linear', got {mode!r}")
    return [(NORMALIZATIONS, eps)]


@register("cp_lrp")
class CPLRP(LayerMap):
    """CP-LRP (Ali et al., ICML 2022, "XAI for Transformers: better explanations through
    conservative propagation"): the attention weights are held constant, so relevance flows
    through the values only (``A . v`` by epsilon, all of it to ``v``; nothing reaches the
    scores or the softmax); as LXT defines it for gated models, the activated gate of a gated
    linear unit is held constant too (all of ``act(gate) * up`` to ``up``); the rest as in
    :class:`AttnLRP`.

    Parameters
    ----------
    epsilon
        The stabiliser of every epsilon rule and of the weights-values product.
    normalization
        As for :class:`AttnLRP`.
    """

    def __init__(self, epsilon: float = 1e-6, normalization: str = "linear"):
        from tf_lrp.attention import AttentionContext, AttentionScores, AttentionSoftmax
        from tf_lrp.structure import GatedProduct

        eps = rules.Epsilon(epsilon)
        super().__init__([
            (AttentionContext, rules.Bilinear(epsilon, shares=(0.0, 1.0))),
            (GatedProduct, rules.HeldConstant()),
            (AttentionScores, rules.Bilinear(epsilon)),
            (AttentionSoftmax, rules.AttnSoftmax()),
            *_normalization(normalization, eps),
        ], default=eps)
        self.epsilon, self.normalization = epsilon, normalization

    def __repr__(self) -> str:
        return f"CPLRP(epsilon={self.epsilon!r}, normalization={self.normalization!r})"


def as_composite(composite, kwargs: dict | None = None) -> Composite:
    """A composite from what :class:`tf_lrp.Analyzer` accepts.

    ``None`` is :class:`EpsilonPlus`; a :class:`~tf_lrp.rules.Rule` applies to every layer with
    weights; a name is looked up with :func:`get` (``kwargs`` go to it).
    """
    kwargs = dict(kwargs or {})
    if composite is None:
        composite = EpsilonPlus()
    elif isinstance(composite, str):
        composite = get(composite, **kwargs)
        kwargs = {}
    elif isinstance(composite, rules.Rule):
        composite = LayerMap(default=composite)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)} (they only go with a "
                        "composite given by name)")
    if not isinstance(composite, Composite):
        raise TypeError(f"expected a composite, a rule or a composite name, got {composite!r}")
    return composite
