"""The shared four-step machinery of every rule with weights (see :mod:`tf_lrp.rules`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import tensorflow as tf

from tf_lrp.errors import UnsupportedLayerError
from tf_lrp.rules.modifiers import InputModifier, WeightModifier, identity, unchanged

Tensor = tf.Tensor


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
    saved
        What the node's own forward kept for its rule (the states and gates of a recurrent
        layer), or ``None``.
    repeat
        ``k`` when the relevance holds ``k`` copies of every sample (``b * k + j``: conditions
        of Concept Relevance Propagation) while the forward values above are of the samples
        themselves: the modified forwards then run once per sample, only the transposed
        operations on every copy (:meth:`rep`). ``None``: the same batch.
    parameters
        A dict to collect the relevance of this node's parameters in (``"kernel"``: one
        tensor per kernel the rule reads, ``"bias"``), or ``None`` (see
        :meth:`tf_lrp.Analyzer.parameter_relevance`).
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
    saved: object = None
    repeat: object = None
    parameters: dict | None = None

    def rep(self, t: Tensor) -> Tensor:
        """``t`` (a forward value) repeated to the relevance's batch (see :attr:`repeat`)."""
        return t if self.repeat is None else tf.repeat(t, self.repeat, axis=0)

    def gradient(self, upstream: Sequence[Tensor]) -> list[Tensor]:
        """Vector-Jacobian product of this node's operation with ``upstream`` (one per output)."""
        linear = self.node.linear
        if linear is not None:
            return [_linear_vjp(linear.apply, self.kernels, self.rep(self.inputs[0]),
                                upstream[0])]
        return _vjp(self.node.call, [self.rep(x) for x in self.inputs], upstream)


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
    floats = [u for u in us if u.dtype.is_floating]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(floats)
        outs = fn(us)
    grads = iter(tape.gradient(outs, floats, output_gradients=list(upstream),
                               unconnected_gradients=tf.UnconnectedGradients.ZERO))
    # inputs that are not floats (masks, tokens) have no gradient: zeros
    return [next(grads) if u.dtype.is_floating else tf.zeros(tf.shape(u), upstream[0].dtype)
            for u in us]


def _linear_vjp(apply, kernels: list[Tensor], u: Tensor, s: Tensor) -> Tensor:
    """``rho(W)^T s``: the transposed operation of ``apply(., kernels)`` (at ``u``) on ``s``."""
    return _vjp(lambda v: [apply(v[0], kernels)], [u], [s])[0]


def _same(w: Tensor) -> Tensor:
    """The weights as they are, as a modifier (so that they are taken in effective form)."""
    return w


#: (z_t, s -> relevance per input (None if none), s -> relevance per kernel entry (or None))
Part = tuple[Tensor, Callable[[Tensor], list], Callable[[Tensor], list] | None]


def _weight_relevance(apply, kernels: list[Tensor], u: Tensor, s: Tensor) -> list[Tensor]:
    """``rho(W) * d(sum s * apply(u, rho(W))) / d rho(W)``: every kernel entry's shares
    ``u_j w_jk s_k`` summed over positions and samples."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(kernels)
        z = apply(u, kernels)
    grads = tape.gradient(z, kernels, output_gradients=s,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return [k * g for k, g in zip(kernels, grads)]


def _plain_weights(ctx: Context, u: Tensor) -> Callable[[Tensor], list]:
    """:func:`_weight_relevance` of the layer's own weights (its effective kernel if it has
    one: a multi-kernel layer's parameters are those of the map it computes)."""
    linear = ctx.node.linear
    if linear.effective is not None:
        return lambda s: _weight_relevance(linear.effective_apply,
                                           list(linear.effective(ctx.kernels)), u, s)
    return lambda s: _weight_relevance(linear.apply, list(ctx.kernels), u, s)


def _times_input(us: list, vjp: Callable[[Tensor], list],
                 rep: Callable[[Tensor], Tensor]) -> Callable[[Tensor], list]:
    """Step 4 for one term: ``u * (rho(W)^T s)`` per input (``None`` where the term has no input)."""
    return lambda s: [None if u is None or not u.dtype.is_floating else rep(u) * c
                      for u, c in zip(us, vjp(s))]


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
            return ctx.outputs[0], _times_input(us, lambda s: ctx.gradient([s]), ctx.rep), None
        filled = [tf.zeros_like(x) if u is None else u for u, x in zip(us, ctx.inputs)]
        return ctx.node.call(filled)[0], _times_input(
            us, lambda s: _vjp(ctx.node.call, [ctx.rep(f) for f in filled], [s]), ctx.rep), None
    if plain:
        return ctx.z0, _times_input(us, lambda s: ctx.gradient([s]), ctx.rep), \
            _plain_weights(ctx, ctx.inputs[0])
    kernels, apply = linear.modified(ctx.kernels, term.weight)
    u = us[0]
    complement = getattr(term.weight, "complement", None)
    if u is ctx.inputs[0] and (id(u), complement) in cache:
        z = ctx.z0 - cache[(id(u), complement)]
    else:
        z = apply(u, kernels)
        cache[(id(u), term.weight)] = z
    return z, _times_input(us, lambda s: [_linear_vjp(apply, kernels, ctx.rep(u), s)], ctx.rep), \
        lambda s: _weight_relevance(apply, list(kernels), u, s)


def _fused_forward(ctx: Context, live: list[tuple[Term, list]]) -> Part:
    """All terms of a group as one operation (see :attr:`tf_lrp.layers.Linear.input_axis`).

    ``sum_t apply(u_t, rho_t(W)) = apply(concat_t u_t, concat_t rho_t(W))``: one forward and
    one transposed operation with the inputs stacked on the channel axis, instead of one of each
    per term; the product ``u * c`` is then summed over the stacked parts.
    """
    linear = ctx.node.linear
    axis = linear.channel_axis
    u = tf.concat([us[0] for _, us in live], axis=axis)
    modified = [linear.modified(ctx.kernels, t.weight or _same) for t, _ in live]
    kernel = tf.concat([kernels[0] for kernels, _ in modified], axis=linear.input_axis)
    apply = modified[0][1]

    def contribute(s: Tensor) -> list:
        u_all = ctx.rep(u)
        c = _linear_vjp(apply, [kernel], u_all, s)
        return [tf.add_n(tf.split(u_all * c, len(live), axis=axis))]

    def weights(s: Tensor) -> list:
        r = _weight_relevance(apply, [kernel], u, s)[0]
        return [tf.add_n(tf.split(r, len(live), axis=linear.input_axis))]

    return apply(u, [kernel]), contribute, weights


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
            z_out = ctx.rep(ctx.outputs[0])
            mask = z_out >= 0 if group.where == "positive" else z_out < 0
            relevance = tf.where(mask, relevance, tf.zeros_like(relevance))
        parts = _group_forward(ctx, group, cache)
        if not parts:
            continue
        if len(parts) == 1 and parts[0][0] is ctx.z0 and group.bias is unchanged:
            z = ctx.outputs[0]  # the forward's own z (with bias): nothing to recompute
        else:
            z = tf.add_n([z_t for z_t, _, _ in parts]) if len(parts) > 1 else parts[0][0]
            if group.bias is not None and ctx.bias is not None:
                z = ctx.node.linear.add_bias(z, group.bias(ctx.bias))
        s = tf.math.divide_no_nan(relevance, stabilize(ctx.rep(z), group.stabilizer))
        staged.append((group.coefficient, parts, s))
        if ctx.parameters is not None:
            _collect_parameters(ctx, group, parts, s)
    total: list[Tensor | None] = [None] * len(ctx.inputs)
    for coefficient, parts, s in staged:
        # every denominator first, then one group's products after the other
        waits = [s for _, _, s in staged] + [r for r in total if r is not None]
        with tf.control_dependencies(waits if len(staged) > 1 else []):
            for _, contribute, _ in parts:
                for i, r in enumerate(contribute(s)):
                    if r is None:
                        continue
                    r = r if coefficient == 1.0 else coefficient * r
                    total[i] = r if total[i] is None else total[i] + r
    return [tf.zeros_like(ctx.rep(x)) if r is None else r for r, x in zip(total, ctx.inputs)]


def _collect_parameters(ctx: Context, group: Group, parts: list[Part], s: Tensor) -> None:
    """Add one group's parameter relevance to ``ctx.parameters``: every kernel entry's shares
    (:func:`_weight_relevance`) and the bias's ``b'_k * sum s_k``, times the coefficient."""
    if ctx.repeat is not None:
        raise UnsupportedLayerError("parameter relevance is not computed for k copies")
    c = group.coefficient
    axis = ctx.node.linear.channel_axis % len(s.shape)
    others = [i for i in range(len(s.shape)) if i != axis]
    for z_t, _, weights in parts:
        if weights is None:
            continue
        r = [c * t for t in weights(s)]
        old = ctx.parameters.get("kernel")
        ctx.parameters["kernel"] = r if old is None else [a + b for a, b in zip(old, r)]
        # per output unit: its kernel entries' shares summed, z_t * s over positions
        units = c * tf.reduce_sum(z_t * s, axis=others)
        ctx.parameters["units"] = units if "units" not in ctx.parameters else \
            ctx.parameters["units"] + units
    if group.bias is not None and ctx.bias is not None:
        b = group.bias(ctx.bias)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(b)
            zb = ctx.node.linear.add_bias(tf.zeros_like(s), b)
        r = c * b * tape.gradient(zb, b, output_gradients=s)
        ctx.parameters["bias"] = r if "bias" not in ctx.parameters else ctx.parameters["bias"] + r

