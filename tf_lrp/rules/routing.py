"""Rules that relay relevance without weights: passing, routing, and products of tensors."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_lrp.rules.base import Facts, Rule
from tf_lrp.rules.propagation import Context, _vjp

Tensor = tf.Tensor


class Pass(Rule):
    """Relevance passes unchanged (activations; only where input and output shapes agree)."""

    zeros = "relay"

    def __call__(self, ctx: Context) -> list[Tensor]:
        return list(ctx.relevance)

    def check(self, node, facts: Facts) -> str | None:
        if len(facts.input_shapes) != 1 or facts.input_shapes != facts.output_shapes:
            return ("rules.Pass() only fits layers with one input of the output's shape; this "
                    f"one maps {facts.input_shapes} to {facts.output_shapes}")
        from tf_lrp import flatten

        if flatten.is_custom(node.layer) and not _elementwise(node.call, facts.input_shapes[0]):
            return ("rules.Pass() would delete what this layer computes: its outputs mix "
                    "positions (changing one input value changes other outputs), so it is not "
                    "elementwise. Map no rule to it (a custom layer written with keras.ops is "
                    "then explained by its parts), or rules.Route() if it only moves values")
        return None


def _elementwise(call, shape: tuple) -> bool:
    """Whether ``call`` is elementwise on a random probe: changing one input value changes no
    other output value."""
    dims = [1] + [3 if d is None else d for d in shape]
    x = tf.random.stateless_normal(dims, seed=(1, 2))
    bump = tf.reshape(tf.one_hot(0, tf.size(x)), dims)
    try:
        y0, y1 = (call([v])[0] for v in (x, x + bump))
    except Exception:  # cannot be probed: leave it to the user
        return True
    changed = tf.reshape(tf.abs(y1 - y0) > 1e-6 * (1.0 + tf.abs(y0)), [-1])
    return not bool(tf.reduce_any(changed[1:]))


class Route(Rule):
    """Relevance follows the ordinary gradient: the winner of max pooling, reshapes, concatenation."""

    zeros = "relay"

    def __call__(self, ctx: Context) -> list[Tensor]:
        return ctx.gradient(ctx.relevance)


def _unbroadcast(r: Tensor, x: Tensor) -> Tensor:
    """Relevance ``r`` of a broadcast product summed back onto the shape of factor ``x``."""
    if r.shape == x.shape:
        return r
    return _vjp(lambda v: [tf.broadcast_to(v[0], tf.shape(r))], [x], [r])[0]


class _Product(Rule):
    zeros = "relay"

    def receivers(self, gates: Sequence[bool]) -> list[bool]:
        raise NotImplementedError

    def __call__(self, ctx: Context) -> list[Tensor]:
        take = self.receivers(ctx.gates or [False] * len(ctx.inputs))
        share = ctx.relevance[0] / float(sum(take))
        return [_unbroadcast(share, x) if t else tf.zeros_like(x) for x, t in zip(ctx.inputs, take)]

    def check(self, node, facts: Facts) -> str | None:
        if len(facts.output_shapes) != 1:
            return f"{self!r} needs a layer with one output"
        return None


class SignalTakesAll(_Product):
    """A gated product ``y = gate * signal``: the signal gets all relevance, the gate none.

    Arras et al. (2017), "Explaining recurrent neural network predictions in sentiment
    analysis": the gate only decides how much of the signal passes. A gate is a factor whose
    values are statically known to lie in [0, 1] (the output of a sigmoid, hard sigmoid or
    softmax, also through scaling and pooling). Several signals share the relevance uniformly.
    """

    def receivers(self, gates: Sequence[bool]) -> list[bool]:
        return [not g for g in gates]

    def check(self, node, facts: Facts) -> str | None:
        if all(facts.gates) or not any(facts.gates):
            which = "every factor is" if all(facts.gates) else "no factor is known to be"
            return (f"rules.SignalTakesAll() needs a product of a gate and a signal, but {which} "
                    "a gate (values in [0, 1]: sigmoid, hard sigmoid, softmax); map "
                    "rules.UniformProduct() to it instead")
        return super().check(node, facts)


class UniformProduct(_Product):
    """A product of ``N`` factors: each gets ``R / N`` (AttnLRP, Achtibat et al. 2024, Prop. 3.2).

    Conserves relevance; the share of a factor broadcast in the product is summed over the
    broadcast axes.
    """

    def receivers(self, gates: Sequence[bool]) -> list[bool]:
        return [True] * len(gates)


class EmbeddingSum(Rule):
    """Token relevance: the relevance at an ``Embedding``'s output summed over the embedding
    axis (Arras et al. 2017): one value per token, in the shape of the token input."""

    zeros = "unknown"

    def __call__(self, ctx: Context) -> list[Tensor]:
        return [tf.reduce_sum(ctx.relevance[0], axis=-1)]

    def check(self, node, facts: Facts) -> str | None:
        from keras import layers as kl

        if not isinstance(node.layer, kl.Embedding):
            return f"{self!r} fits Embedding layers only"
        return None


class HeldConstant(Rule):
    """A product or quotient whose listed factors are held constant: the other factors share
    all relevance (uniformly), the held ones get none.

    Which inputs are held is declared by the node's part (``node.layer.held``, see
    :mod:`tf_lrp.structure`): the normalizing factor ``1/sigma`` of a normalization written with
    ``keras.ops`` (``x * rsqrt(mean(x^2) + eps)``, ``x / sqrt(var + eps)``; AttnLRP, Achtibat et
    al. 2024, Prop. 3.4, and LXT), or the activated gate of a gated linear unit under CP-LRP
    (all of ``act(gate) * up`` to ``up``). For ``y = x * c`` with ``c`` constant LRP-0 gives
    ``R_x = R_y``; a factor broadcast in the product gets its relevance summed back.
    """

    zeros = "relay"

    def __init__(self):
        self.params = {}

    def __call__(self, ctx: Context) -> list[Tensor]:
        held = set(ctx.node.layer.held)
        take = [i not in held for i in range(len(ctx.inputs))]
        share = ctx.relevance[0] / float(sum(take))
        return [_unbroadcast(share, x) if t else None for x, t in zip(ctx.inputs, take)]

    def check(self, node, facts: Facts) -> str | None:
        held = getattr(node.layer, "held", None)
        if held is None:
            return (f"{self!r} fits products whose held factors are known (normalizing "
                    "factors, gates of gated linear units)")
        if len(facts.output_shapes) != 1 or len(held) >= len(facts.input_shapes):
            return f"{self!r} needs one output and at least one factor that is not held"
        return None
