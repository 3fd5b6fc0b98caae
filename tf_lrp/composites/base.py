"""The composite classes: :class:`Composite`, :class:`LayerMap`, :class:`Overrides` and the
layer groups and keys they map on."""

from __future__ import annotations

from collections.abc import Sequence

from keras import layers as kl

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
_GROUPS: dict[str, tuple[type, ...]] = {"CONVOLUTIONS": CONVOLUTIONS, "DENSE": DENSE}


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

    def rule_for_node(self, node, *, first: bool, weighted: bool) -> Rule | None:
        """The rule for a graph node (:class:`tf_lrp.graph.Node`); by default
        :meth:`rule_for` of its layer. Composites that match names also match the node's full
        name (``block_0/self_attention/query`` inside a flattened custom layer)."""
        return self.rule_for(node.layer, first=first, weighted=weighted)


def _matches(layer, key, name: str | None = None) -> bool:
    """Whether ``key`` (a class, a tuple of classes, a layer name or a class name, a
    :class:`ClassName`) names ``layer``."""
    if isinstance(key, ClassName):
        return key.matches(layer)
    if isinstance(key, str):
        return key in (name, getattr(layer, "name", None), type(layer).__name__)
    if isinstance(key, tuple) and any(isinstance(k, str) for k in key):
        return any(_matches(layer, k, name) for k in key)
    return isinstance(layer, key)


def _key_text(key) -> str:
    keys = key if isinstance(key, tuple) else (key,)
    return "/".join(k if isinstance(k, str) else k.name if isinstance(k, ClassName)
                    else k.__name__ for k in keys)


class ClassName:
    """A :class:`LayerMap` key naming a class by its name: matches layers that are instances of a
    class of that name (the layer's class or one of its base classes), as a class key does.

    ``"CONVOLUTIONS"`` and ``"DENSE"`` name the groups :data:`CONVOLUTIONS` and :data:`DENSE`.
    Composite files (:func:`load`) use it for their ``"classes"``.
    """

    def __init__(self, name: str):
        self.name = str(name)

    def matches(self, layer) -> bool:
        group = _GROUPS.get(self.name)
        if group is not None:
            return isinstance(layer, group)
        return any(c.__name__ == self.name for c in type(layer).__mro__)

    def __eq__(self, other) -> bool:
        return isinstance(other, ClassName) and other.name == self.name

    def __hash__(self) -> int:
        return hash((ClassName, self.name))

    def __repr__(self) -> str:
        return f"ClassName({self.name!r})"


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

    def rule_for(self, layer, *, first: bool, weighted: bool, name: str | None = None
                 ) -> Rule | None:
        if first and weighted and self.first is not None:
            return self.first
        for key, rule in self.mapping:
            if _matches(layer, key, name):
                return rule
        return self.default if weighted else None

    def rule_for_node(self, node, *, first: bool, weighted: bool) -> Rule | None:
        return self.rule_for(node.layer, first=first, weighted=weighted, name=node.name)

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

    def rule_for_node(self, node, *, first: bool, weighted: bool) -> Rule | None:
        rule = self.overrides.rule_for_node(node, first=False, weighted=False)
        return rule if rule is not None else self.base.rule_for_node(node, first=first,
                                                                     weighted=weighted)

    def __repr__(self) -> str:
        items = ", ".join(f"{_key_text(key)}: {r!r}" for key, r in self.overrides.mapping)
        return f"{self.base!r} with [{items}]"
