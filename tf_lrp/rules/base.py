"""The rule base classes: :class:`Rule`, :class:`BasicRule` (declared groups of terms) and the
:class:`Facts` a rule is checked against when the analyzer is built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from tf_lrp.rules.propagation import Context, Group, propagate

Tensor = tf.Tensor


class Rule:
    """Base class: a rule maps the relevance at a node's outputs to relevance at its inputs."""

    params: dict = {}

    def __call__(self, ctx: Context) -> list[Tensor]:
        raise NotImplementedError

    def reads_output(self, nonnegative: Sequence[bool]) -> bool:
        """Whether the rule reads its node's forward output (``ctx.outputs`` or ``ctx.z0``).

        The analyzer keeps a linear node's ``z0`` for such a rule and recomputes, during the
        backward pass, the activation and pooling outputs that follow from it, instead of keeping
        those as well (same results, bit for bit; less memory). ``False`` (the default) keeps
        every value a rule may read; a rule that declares ``False`` but reads the output still
        works, it only costs memory.

        Parameters
        ----------
        nonnegative
            Per input of the node, whether it is statically known to be >= 0.
        """
        return False

    def check(self, node, facts: Facts) -> str | None:
        """Why this rule cannot explain ``node`` (``None`` if it can).

        The analyzer asks every rule when it is built, so that a rule mapped to a layer it does
        not fit is refused then, with this reason, rather than at the first call.
        """
        return None

    #: How the relevance this rule gives an input relates to the input's zeros (for the
    #: analyzer's static analysis): ``"always"`` zero where the input is zero, ``"relay"`` zero
    #: wherever the output and its relevance are zero, ``"unknown"`` otherwise.
    zeros: str = "unknown"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


@dataclass
class Facts:
    """What the analyzer knows of a node before tracing (see :meth:`Rule.check`).

    Attributes
    ----------
    input_shapes, output_shapes
        Static shapes without the batch axis (``None`` for unknown sizes).
    gates
        Per input, whether it is known to be a gate (values in [0, 1]).
    """

    input_shapes: list[tuple]
    output_shapes: list[tuple]
    gates: list[bool]


class BasicRule(Rule):
    """A rule of the four-step form; subclasses declare :meth:`groups`."""

    def __init__(self, params: dict | None = None):
        self.params = dict(params or {})

    def groups(self) -> list[Group]:
        raise NotImplementedError

    def __call__(self, ctx: Context) -> list[Tensor]:
        return propagate(ctx, self.groups())

    @property
    def zeros(self) -> str:
        multiplies = all(getattr(t.input, "multiplies_input", True)
                         for g in self.groups() for t in g.terms)
        return "always" if multiplies else "unknown"

    def check(self, node, facts: Facts) -> str | None:
        if node.linear is None and any(t.weight is not None for g in self.groups()
                                       for t in g.terms):
            return (f"{self!r} modifies weights, and this layer has none; map a rule without "
                    "weight modifiers (rules.Epsilon, rules.Zero, rules.Pass) to it")
        if len(facts.output_shapes) != 1:
            return f"{self!r} needs a layer with one output"
        return None
