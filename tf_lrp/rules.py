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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tensorflow as tf

from tf_lrp.errors import UnsupportedLayerError

Tensor = tf.Tensor
InputModifier = Callable[[Tensor, bool], "Tensor | None"]
WeightModifier = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------- modifiers
def identity(x: Tensor, nonnegative: bool = False) -> Tensor:
    """The input itself."""
    return x


def positive(x: Tensor, nonnegative: bool = False) -> Tensor:
    """``x+``; the input itself when it is known to be non-negative."""
    return x if nonnegative else tf.nn.relu(x)


def negative(x: Tensor, nonnegative: bool = False) -> Tensor | None:
    """``x-``; ``None`` (the term vanishes) when the input is known to be non-negative."""
    return None if nonnegative else tf.minimum(x, 0.0)


def ones(x: Tensor, nonnegative: bool = False) -> Tensor:
    """An all-ones input (rules not multiplied by the input: w-square, flat)."""
    return tf.ones_like(x)


ones.multiplies_input = False


def bound(value) -> InputModifier:
    """The input replaced by ``-value`` broadcast to its shape (the z^B bound terms)."""

    def modifier(x: Tensor, nonnegative: bool = False) -> Tensor:
        return -tf.broadcast_to(tf.cast(value, x.dtype), tf.shape(x))

    modifier.multiplies_input = False

    return modifier


def plus(w: Tensor) -> Tensor:
    """``w+``."""
    return tf.nn.relu(w)


def minus(w: Tensor) -> Tensor:
    """``w-``."""
    return tf.minimum(w, 0.0)


# w- = w - w+: a forward with w- is the layer's own forward minus the one with w+
minus.complement = plus


def square(w: Tensor) -> Tensor:
    """``w**2``."""
    return tf.square(w)


def flat(w: Tensor) -> Tensor:
    """All weights 1."""
    return tf.ones_like(w)


def unchanged(b: Tensor) -> Tensor:
    """The bias as it is."""
    return b


# ------------------------------------------------------------------------------- machinery
@dataclass(frozen=True)
class Term:
    """One ``apply(u, rho(W))`` summand: an input modifier and a weight modifier.

    ``weight=None`` keeps the layer's weights (required for layers without weights).
    """

    input: InputModifier = identity
    weight: WeightModifier | None = None


@dataclass(frozen=True)
class Group:
    """Terms that share one denominator; their input relevance is scaled by ``coefficient``.

    ``bias`` modifies the bias added to the denominator; ``None`` leaves the bias out.
    ``where`` restricts the group to the outputs whose own value ``z`` (with bias) is
    ``"positive"`` (``z >= 0``) or ``"negative"`` (``z < 0``); relevance at the other outputs
    does not enter it. ``None``: every output.
    """

    terms: tuple[Term, ...]
    bias: WeightModifier | None = None
    stabilizer: float = 0.0
    coefficient: float = 1.0
    where: str | None = None


@dataclass
class Context:
    """What a rule sees of one node during the backward pass.

    Attributes
    ----------
    node
        The :class:`tf_lrp.graph.Node` (``node.layer``, ``node.linear``, ``node.call``).
    inputs, outputs
        The node's forward values (for a linear node, ``outputs[0]`` is ``z`` with bias).
    relevance
        Relevance at each output.
    nonnegative
        Per input, whether it is statically known to be >= 0.
    kernels, bias, z0
        For a linear node: its kernels and bias (read again in the backward pass) and the
        forward's ``z`` without bias.
    gates
        Per input, whether it is statically known to be a gate (values in [0, 1]).
    negative_silent
        Whether relevance at this node's output is statically known to be zero wherever the
        output is negative (a ReLU follows, and relevance above it vanishes with the value).
    input_bounds
        ``input_bounds(low, high) -> (low', high')`` maps bounds given in the model's input
        space to this node's input (through preprocessing layers such as ``Rescaling``).
    """

    node: object
    inputs: list[Tensor]
    outputs: list[Tensor]
    relevance: list[Tensor]
    nonnegative: list[bool]
    kernels: list[Tensor] | None = None
    bias: Tensor | None = None
    z0: Tensor | None = None
    gates: list[bool] | None = None
    negative_silent: bool = False
    input_bounds: Callable | None = None

    def gradient(self, upstream: Sequence[Tensor]) -> list[Tensor]:
        """Vector-Jacobian product of this node's operation with ``upstream`` (one per output)."""
        linear = self.node.linear
        if linear is not None:
            return [_linear_vjp(linear, self.kernels, self.inputs[0], upstream[0])]
        return _vjp(self.node.call, self.inputs, upstream)


def stabilize(z: Tensor, stabilizer: float) -> Tensor:
    """``z + stabilizer * sign+(z)`` with ``sign+(0) = +1``."""
    if not stabilizer:
        return z
    eps = tf.constant(stabilizer, z.dtype)
    return z + tf.where(z >= 0, eps, -eps)


def _vjp(fn: Callable[[list[Tensor]], list[Tensor]], us: list[Tensor],
         upstream: Sequence[Tensor]) -> list[Tensor]:
    """``(d fn / d us)^T upstream`` for an operation ``fn`` (one upstream tensor per output).

    The forward recorded on this local tape reaches only from ``us`` to the outputs, so an input
    that itself depends on another input contributes its direct partial derivative only. Where
    the transposed op needs no forward value (linear layers, reshapes) the forward recorded here
    is dead code, and TensorFlow prunes it from the traced graph.
    """
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(us)
        outs = fn(us)
    return list(tape.gradient(outs, us, output_gradients=list(upstream),
                              unconnected_gradients=tf.UnconnectedGradients.ZERO))


def _linear_vjp(linear, kernels: list[Tensor], u: Tensor, s: Tensor) -> Tensor:
    """``rho(W)^T s``: the transposed operation of ``linear.apply(., kernels)`` (at ``u``) on ``s``."""
    return _vjp(lambda v: [linear.apply(v[0], kernels)], [u], [s])[0]


def _modified(kernels: list[Tensor], weight: WeightModifier | None) -> list[Tensor]:
    """The kernels as a term's weight modifier makes them (``None``: unchanged)."""
    return kernels if weight is None else [weight(k) for k in kernels]


Part = tuple[Tensor, Callable[[Tensor], list]]  # (z_t, s -> relevance per input, None if none)


def _times_input(us: list, vjp: Callable[[Tensor], list]) -> Callable[[Tensor], list]:
    """Step 4 for one term: ``u * (rho(W)^T s)`` per input (``None`` where the term has no input)."""
    return lambda s: [None if u is None else u * c for u, c in zip(us, vjp(s))]


def _term_forward(ctx: Context, term: Term, us: list, cache: dict) -> Part:
    """Forward ``z_t`` of one term and its step-4 function.

    ``cache`` maps ``(id(input), weight modifier)`` to forwards already computed for this node,
    so that a weight modifier that declares a ``complement`` (``minus`` of ``plus``) is derived
    by linearity, ``apply(x, W-) = apply(x, W) - apply(x, W+)``, instead of a new convolution.
    """
    linear = ctx.node.linear
    plain = term.weight is None and all(u is x for u, x in zip(us, ctx.inputs))
    if linear is None:
        if term.weight is not None:
            raise UnsupportedLayerError(
                f"A rule that modifies weights was mapped to {ctx.node.name!r} "
                f"({type(ctx.node.layer).__name__}), which has no weights. Map a rule without "
                "weight modifiers (rules.Zero, rules.Epsilon, rules.Pass) to this layer class."
            )
        if plain:
            return ctx.outputs[0], _times_input(us, lambda s: ctx.gradient([s]))
        filled = [tf.zeros_like(x) if u is None else u for u, x in zip(us, ctx.inputs)]
        return ctx.node.call(filled)[0], _times_input(us, lambda s: _vjp(ctx.node.call, filled, [s]))
    if plain:
        return ctx.z0, _times_input(us, lambda s: ctx.gradient([s]))
    kernels = _modified(ctx.kernels, term.weight)
    u = us[0]
    complement = getattr(term.weight, "complement", None)
    if u is ctx.inputs[0] and (id(u), complement) in cache:
        z = ctx.z0 - cache[(id(u), complement)]
    else:
        z = linear.apply(u, kernels)
        cache[(id(u), term.weight)] = z
    return z, _times_input(us, lambda s: [_linear_vjp(linear, kernels, u, s)])


def _fused_forward(ctx: Context, live: list[tuple[Term, list]]) -> Part:
    """All terms of a group as one operation (see :attr:`tf_lrp.layers.Linear.input_axis`).

    ``sum_t apply(u_t, rho_t(W)) = apply(concat_t u_t, concat_t rho_t(W))``: one forward and
    one transposed operation with the inputs stacked on the channel axis, instead of one of each
    per term; the product ``u * c`` is then summed over the stacked parts.
    """
    linear = ctx.node.linear
    axis = linear.channel_axis
    u = tf.concat([us[0] for _, us in live], axis=axis)
    kernel = tf.concat([_modified(ctx.kernels, t.weight)[0] for t, _ in live],
                       axis=linear.input_axis)

    def contribute(s: Tensor) -> list:
        c = _linear_vjp(linear, [kernel], u, s)
        return [tf.add_n(tf.split(u * c, len(live), axis=axis))]

    return linear.apply(u, [kernel]), contribute


def _group_forward(ctx: Context, group: Group, cache: dict) -> list[Part]:
    """The non-vanishing terms of ``group``, fused into one where the layer allows it."""
    live = []
    for term in group.terms:
        us = [term.input(x, nn) for x, nn in zip(ctx.inputs, ctx.nonnegative)]
        if any(u is not None for u in us):
            live.append((term, us))
    linear = ctx.node.linear
    if len(live) > 1 and linear is not None and linear.input_axis is not None:
        return [_fused_forward(ctx, live)]
    return [_term_forward(ctx, term, us, cache) for term, us in live]


def propagate(ctx: Context, groups: Sequence[Group]) -> list[Tensor]:
    """The shared four-step LRP form (see the module docstring) over ``groups``.

    With several groups (alpha-beta), steps 1-2 run for every group before steps 3-4 of any,
    and the groups' steps 3-4 run one after the other (control dependencies): the forwards and
    the relevance at the output are freed before the transposed operations start, and only one
    group's products are alive at a time (VGG-16 alpha-beta peak memory 1.87x -> 1.30x that of
    the gradient).
    """
    cache: dict = {}
    staged = []
    for group in groups:
        if group.where == "negative" and ctx.negative_silent:
            continue  # no relevance arrives where z < 0
        relevance = ctx.relevance[0]
        if group.where is not None and not ctx.negative_silent:
            z_out = ctx.outputs[0]
            mask = z_out >= 0 if group.where == "positive" else z_out < 0
            relevance = tf.where(mask, relevance, tf.zeros_like(relevance))
        parts = _group_forward(ctx, group, cache)
        if not parts:
            continue
        if len(parts) == 1 and parts[0][0] is ctx.z0 and group.bias is unchanged:
            z = ctx.outputs[0]  # the forward's own z (with bias): nothing to recompute
        else:
            z = tf.add_n([z_t for z_t, _ in parts]) if len(parts) > 1 else parts[0][0]
            if group.bias is not None and ctx.bias is not None:
                z = ctx.node.linear.add_bias(z, group.bias(ctx.bias))
        s = tf.math.divide_no_nan(relevance, stabilize(z, group.stabilizer))
        staged.append((group.coefficient, parts, s))
    total: list[Tensor | None] = [None] * len(ctx.inputs)
    for coefficient, parts, s in staged:
        # every denominator first, then one group's products after the other
        waits = [s for _, _, s in staged] + [r for r in total if r is not None]
        with tf.control_dependencies(waits if len(staged) > 1 else []):
            for _, contribute in parts:
                for i, r in enumerate(contribute(s)):
                    if r is None:
                        continue
                    r = r if coefficient == 1.0 else coefficient * r
                    total[i] = r if total[i] is None else total[i] + r
    return [tf.zeros_like(x) if r is None else r for r, x in zip(total, ctx.inputs)]


# ------------------------------------------------------------------------------- rules
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


class Pass(Rule):
    """Relevance passes unchanged (activations; only where input and output shapes agree)."""

    zeros = "relay"

    def __call__(self, ctx: Context) -> list[Tensor]:
        return list(ctx.relevance)

    def check(self, node, facts: Facts) -> str | None:
        if len(facts.input_shapes) != 1 or facts.input_shapes != facts.output_shapes:
            return ("rules.Pass() only fits layers with one input of the output's shape; this "
                    f"one maps {facts.input_shapes} to {facts.output_shapes}")
        return None


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
}
