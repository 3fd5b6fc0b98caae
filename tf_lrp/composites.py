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


class LayerMap(Composite):
    """Map layer classes to rules.

    Parameters
    ----------
    mapping
        ``[(layer class or tuple of classes, rule), ...]``; the first match wins. A user maps
        their own rule to their own layer class here.
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
        for classes, rule in self.mapping:
            if isinstance(layer, classes):
                return rule
        return self.default if weighted else None

    def __repr__(self) -> str:
        items = ", ".join(
            f"{'/'.join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))}: {r!r}"
            for cls, r in self.mapping
        )
        return f"{type(self).__name__}(first={self.first!r}, [{items}], default={self.default!r})"


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
