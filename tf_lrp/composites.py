"""Composites: which rule each layer gets, by layer type and position.

A composite answers :meth:`Composite.rule_for` for every node of the canonized graph. Layers
without weights that tf_lrp knows (activations, pooling, ``Add``, reshapes) get their fixed
handling unless a composite maps their class explicitly.

Presets are registered by snake_case name (:func:`get`, :func:`names`)::

    composites.get("epsilon_gamma_box", low=-1.0, high=1.0)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from keras import layers as kl

from tf_lrp import rules
from tf_lrp.rules import Rule

#: Dense-like layers.
DENSE: tuple[type, ...] = (kl.Dense,)
#: Every convolution layer tf_lrp knows.
CONVOLUTIONS: tuple[type, ...] = (
    kl.Conv1D, kl.Conv2D, kl.Conv3D,
    kl.Conv1DTranspose, kl.Conv2DTranspose, kl.Conv3DTranspose,
    kl.DepthwiseConv1D, kl.DepthwiseConv2D,
    kl.SeparableConv1D, kl.SeparableConv2D,
)


class Composite:
    """Base class: maps a layer (and whether it is a first layer) to a rule."""

    def rule_for(self, layer, *, first: bool, weighted: bool) -> Rule | None:
        """The rule for ``layer``; ``None`` to fall back on the fixed handling.

        Parameters
        ----------
        layer
            The Keras layer of the node.
        first
            Whether it is a layer with weights reached from a model input through layers
            without weights only.
        weighted
            Whether it has weights (a linear part).
        """
        raise NotImplementedError


def _matches(layer, key) -> bool:
    """Whether ``key`` (a class, a tuple of classes, a layer name or a class name) names ``layer``."""
    if isinstance(key, str):
        return key in (getattr(layer, "name", None), type(layer).__name__)
    if isinstance(key, tuple) and any(isinstance(k, str) for k in key):
        return any(_matches(layer, k) for k in key)
    return isinstance(layer, key)


def _key_text(key) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    return "/".join(k if isinstance(k, str) else k.__name__ for k in keys)


class LayerMap(Composite):
    """Map layer classes (or layer names) to rules.

    Parameters
    ----------
    mapping
        ``[(key, rule), ...]``; the first match wins. A key is a layer class, a tuple of
        classes, or a string: the name of one layer (``"conv1"``) or of a layer class
        (``"Multiply"``; also matches Keras op nodes such as ``x * y`` by their class name). A
        user maps their own rule to their own layer class here. A rule mapped to a layer
        without weights replaces its fixed handling.
    default
        The rule of any other layer with weights (``None``: such a layer is an error).
    first
        Overrides the rule of the first layer(s) with weights reached from the input.
    """

    def __init__(
        self,
        mapping: Sequence[tuple[type | tuple[type, ...], Rule]] = (),
        default: Rule | None = None,
        first: Rule | None = None,
    ):
        self.mapping = [(classes, rule) for classes, rule in mapping]
        self.default = default
        self.first = first
        for classes, rule in self.mapping:
            if not isinstance(rule, Rule):
                raise TypeError(f"LayerMap: {rule!r} mapped to {classes!r} is not a tf_lrp rule")

    def rule_for(self, layer, *, first: bool, weighted: bool) -> Rule | None:
        if first and weighted and self.first is not None:
            return self.first
        for key, rule in self.mapping:
            if _matches(layer, key):
                return rule
        return self.default if weighted else None

    def __repr__(self) -> str:
        items = ", ".join(f"{_key_text(key)}: {r!r}" for key, r in self.mapping)
        return f"{type(self).__name__}(first={self.first!r}, [{items}], default={self.default!r})"


class Overrides(Composite):
    """A composite with some layers mapped to other rules (the command line's ``--rule``).

    Parameters
    ----------
    base
        The composite that decides for every layer not in ``mapping``.
    mapping
        ``[(key, rule), ...]`` as in :class:`LayerMap`; checked first, also for first layers.
    """

    def __init__(self, base: Composite, mapping: Sequence[tuple[object, Rule]]):
        self.base = base
        self.overrides = LayerMap(mapping)

    def rule_for(self, layer, *, first: bool, weighted: bool) -> Rule | None:
        rule = self.overrides.rule_for(layer, first=False, weighted=False)
        return rule if rule is not None else self.base.rule_for(layer, first=first,
                                                                weighted=weighted)

    def __repr__(self) -> str:
        items = ", ".join(f"{_key_text(key)}: {r!r}" for key, r in self.overrides.mapping)
        return f"{self.base!r} with [{items}]"


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
      ``gamma``, ``beta``) by epsilon, as the authors' code (LXT) does; with
      ``normalization="identity"`` relevance passes them unchanged;
    - elementwise activations (GELU, ...): the identity; ``Add`` (residuals, positional
      embeddings): in proportion to the summands; ``Embedding``: summed per token; recurrent
      gates: no relevance (signal-take-all).

    Parameters
    ----------
    epsilon
        The stabiliser of every epsilon rule and bilinear product.
    normalization
        ``"linear"`` (Prop. 3.4, the default) or ``"identity"``.
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
    if mode not in ("linear", "identity"):
        raise ValueError(f"normalization must be 'linear' or 'identity', got {mode!r}")
    return [(NORMALIZATIONS, rules.Pass() if mode == "identity" else eps)]


@register("cp_lrp")
class CPLRP(LayerMap):
    """CP-LRP (Ali et al., ICML 2022, "XAI for Transformers: better explanations through
    conservative propagation"): the attention weights are held constant, so relevance flows
    through the values only (``A . v`` by epsilon, all of it to ``v``; nothing reaches the
    scores or the softmax); the rest as in :class:`AttnLRP`.

    Parameters
    ----------
    epsilon
        The stabiliser of every epsilon rule and of the weights-values product.
    normalization
        As for :class:`AttnLRP`.
    """

    def __init__(self, epsilon: float = 1e-6, normalization: str = "linear"):
        from tf_lrp.attention import AttentionContext, AttentionScores, AttentionSoftmax

        eps = rules.Epsilon(epsilon)
        super().__init__([
            (AttentionContext, rules.Bilinear(epsilon, shares=(0.0, 1.0))),
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
