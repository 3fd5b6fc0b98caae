"""The LRP analyzer and the machinery every analyzer shares.

:class:`~tf_lrp.base.BaseAnalyzer` (in :mod:`tf_lrp.base`, re-exported here) owns what all
attribution methods share: the canonized graph, validation, batching, tracing, the forward pass.

:class:`Analyzer` is LRP: one forward pass keeps every tensor's value, then relevance flows from
the explained output back to the input, node by node in reverse topological order, each node's
rule (chosen by a composite) mapping the relevance at its outputs to relevance at its inputs.
Relevance reaching a tensor read by several nodes is summed. Each rule's vector-Jacobian
products come from a small local ``tf.GradientTape`` over that node alone, and its work waits
(control dependencies) for the relevance it maps. Activation and pooling outputs that follow a
kept pre-activation are recomputed in the backward pass rather than kept
(:meth:`Analyzer._recompute_plan`).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tf_lrp import composites, plan, weightless
from tf_lrp import rules as lrp_rules
from tf_lrp.base import BaseAnalyzer, _carry_mask, _specializes
from tf_lrp.errors import UnsupportedLayerError
from tf_lrp.graph import Node
from tf_lrp.readouts import Readouts

__all__ = ["STARTS", "Analyzer", "BaseAnalyzer"]

Tensor = tf.Tensor

#: The relevance the backward pass starts from (see :class:`Analyzer`).
STARTS = ("output", "logodds", "all")


class _Repeated(dict):
    """A view of forward values with every sample repeated ``k`` times (``b * k + j``),
    computed on first use (see :meth:`Analyzer._backward`)."""

    def __init__(self, base: dict, k):
        super().__init__()
        self.base, self.k = base, k

    def __missing__(self, key):
        value = self.base[key]
        if isinstance(value, dict):
            raise UnsupportedLayerError(
                "conditions (concept relevance) above a recurrent layer are not supported: "
                "condition a layer below it")
        self[key] = tf.repeat(value, self.k, axis=0)
        return self[key]

    def get(self, key, default=None):
        return self[key] if key in self.base else default

    def __contains__(self, key) -> bool:
        return key in self.base


def _seed(y: Tensor, indices: Tensor, weights: Tensor) -> Tensor:
    """``(B * k, *y.shape[1:])`` start relevances: copy ``b * k + j`` holds ``weights[b, j, l]
    * y[b, indices[b, j, l]]`` at each flat index (repeated indices add up)."""
    n, k, m = tf.shape(indices)[0], tf.shape(indices)[1], tf.shape(indices)[2]
    flat = tf.reshape(y, (n, -1))
    picked = tf.gather(flat, indices, batch_dims=1) * tf.cast(weights, flat.dtype)
    rows = tf.repeat(tf.range(n * k), m)
    where = tf.stack([rows, tf.reshape(indices, [-1])], axis=1)
    r = tf.scatter_nd(where, tf.reshape(picked, [-1]), tf.stack([n * k, tf.shape(flat)[1]]))
    return tf.reshape(r, tf.concat([[n * k], tf.shape(y)[1:]], axis=0))


def _channel_mask(mask: Tensor, r: Tensor) -> Tensor:
    """``(B, k, C)`` mask as a factor for relevance ``r`` of shape ``(B * k, ..., C)``."""
    c = tf.shape(mask)[-1]
    flat = tf.reshape(tf.cast(mask, r.dtype), tf.stack([-1, c]))
    return tf.reshape(flat, tf.concat([[tf.shape(flat)[0]], tf.ones([r.shape.rank - 2], tf.int32),
                                       [c]], 0))


class Analyzer(Readouts, BaseAnalyzer):
    """Layer-wise Relevance Propagation.

    Parameters
    ----------
    model
        A built ``keras.Model`` or a path to a ``.keras``/``.h5`` file.
    composite
        A :class:`~tf_lrp.composites.Composite`, a single :class:`~tf_lrp.rules.Rule` (used for
        every layer with weights) or a registered name (``"epsilon_gamma_box"``; extra keyword
        arguments go to it). Default: ``EpsilonPlus``.
    start
        The relevance at the explained output that the backward pass starts from:

        - ``"output"`` (default): the selected output's value, ``y * one_hot(target)``;
          the input relevance of a conservative rule sums to it.
        - ``"logodds"``: the log-odds of the target class against the others, handled as in
          Montavon et al. (2019), "Layer-wise relevance propagation: an overview", sec. 10: the
          logit-difference layer ``z_c - z_k`` receives the softmin share
          ``q_k = softmax_{k != c}(z)`` and LRP-0 maps it onto the logits, ``R_c = z_c``,
          ``R_k = -q_k z_k``. The total ``sum_k q_k (z_c - z_k)`` equals the log-odds
          ``log(p_c / (1 - p_c))`` plus the entropy of ``q``.
        - ``"all"``: every output is explained at once, ``R = y`` (unsupervised; ``target`` is
          ignored).
    relevance_filter
        ``None`` (off) or a fraction in (0, 1]: before every layer with weights, only the top
        fraction of relevance values of each sample (largest values) pass; the others are set to 0.
    output, batch_size, jit_compile, input_shapes, input_batch
        See :class:`BaseAnalyzer`.
    **composite_kwargs
        Arguments of a composite given by name.

    Raises
    ------
    UnsupportedLayerError
        If a layer has no rule and no fixed handling; the message names it, its class and how
        to register a rule.
    """

    def __init__(self, model, composite=None, *, start: str = "output",
                 relevance_filter: float | None = None, output: int | str | None = None,
                 batch_size: int | None = None, jit_compile: bool = False,
                 input_shapes: list[tuple] | None = None, input_batch: int | None = None,
                 **composite_kwargs):
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if relevance_filter is not None and not 0 < relevance_filter <= 1:
            raise ValueError(f"relevance_filter must be in (0, 1] or None, got {relevance_filter!r}")
        self.composite = composites.as_composite(composite, composite_kwargs)
        self.start = start
        self.relevance_filter = relevance_filter
        super().__init__(model, output=output, batch_size=batch_size, jit_compile=jit_compile,
                         input_shapes=input_shapes, input_batch=input_batch)
        self.rules = self._assign_rules()
        self._silent = plan.silent_negatives(self.graph, self.rules)
        self._chains = plan.input_chains(self.graph)
        self._recompute = self._recompute_plan()
        self._layerwise_fn = None
        self._conditional_fns: dict[tuple, object] = {}
        self._seeded_fn = None
        self._parameters_fn = None

    def _keeps_whole(self, layer, name: str) -> bool:
        return plan.keeps_whole(self.composite)(layer, name)

    def _assign_rules(self) -> dict[str, lrp_rules.Rule]:
        assigned, problems = plan.assign_rules(self.graph, self.composite, self._ranges)
        if problems:
            raise UnsupportedLayerError(plan.unsupported_message(problems, self.composite))
        return assigned

    def _recompute_plan(self) -> dict[int, Node]:
        """Tensors the backward pass recomputes instead of keeping them from the forward pass.

        A node whose rule reads its forward output (:meth:`tf_lrp.rules.Rule.reads_output`) has
        that output kept anyway (for a linear node as ``z0``, from which ``z = z0 + b`` is
        recomputed). The chain of cheap single-input layers after it (activations, pooling,
        reshapes, padding, dropout: layers with fixed handling) is then recomputed when the
        backward pass reaches it, by the same operations on the same values, instead of being
        kept as well; so are chains from a model input. Maps each such tensor to its node.
        """
        anchored = set(self.graph.inputs)  # kept, or recomputed from what is kept
        recomputed: dict[int, Node] = {}
        for node in self.graph.nodes:
            cheap = node.linear is None and (
                node.kind == "activation" or weightless.handling(node.layer, len(node.inputs))
                in (weightless.PASS, weightless.ROUTE, weightless.PROPORTIONAL))
            if cheap and len(node.inputs) == 1 and node.inputs[0] in anchored:
                recompute = True
            elif self.rules[node.name].reads_output(
                    [self._nonnegative.get(k, False) for k in node.inputs]):
                recompute = node.linear is not None  # z from z0; other nodes' outputs are kept
            else:
                continue
            if recompute:
                recomputed.update(dict.fromkeys(node.outputs, node))
            anchored.update(node.outputs)
        return recomputed

    @staticmethod
    def _bias(node: Node, memo: dict) -> Tensor | None:
        """A linear node's bias, read once in the backward pass (a folded one costs ~10 ops)."""
        if ("bias", node.name) not in memo:
            memo["bias", node.name] = node.linear.bias()
        return memo["bias", node.name]

    def _value(self, key: int, values: dict, z0s: dict, memo: dict) -> Tensor:
        """The value of tensor ``key`` for the backward pass (see :meth:`_recompute_plan`).

        ``memo`` holds what the backward pass has recomputed so far (and biases it has read).
        """
        node = self._recompute.get(key)
        if node is None:
            return values[key]
        if key not in memo:
            if node.linear is not None:
                memo[key] = node.linear.add_bias(z0s[node.name], self._bias(node, memo))
                _carry_mask(node, [values[k] for k in node.inputs], [memo[key]])
            else:
                ins = [self._value(k, values, z0s, memo) for k in node.inputs]
                memo.update(zip(node.outputs, node.call(ins)))
        return memo[key]

    def _input_bounds(self, node: Node, values: dict):
        """``(low, high) -> (low', high')``: bounds in the model's input space mapped onto
        ``node``'s input through the layers without weights in front of it (``None``: the node
        is not reached from one model input that way, and bounds are taken as given)."""
        chain = self._chains.get(node.name)
        if chain is None:
            return None
        key, path = chain

        def input_bounds(low, high):
            x = values[key]
            ends = [tf.broadcast_to(tf.cast(v, x.dtype), tf.shape(x)) for v in (low, high)]
            for n in path:
                ends = [n.call([e])[0] for e in ends]
            return tf.minimum(*ends), tf.maximum(*ends)

        return input_bounds

    def rule_table(self) -> list[tuple[str, str, str]]:
        """``(node name, layer class, rule)`` for every node, in forward order."""
        return [(n.name, type(n.layer).__name__ if n.kind == "layer" else "activation",
                 repr(self.rules[n.name])) for n in self.graph.nodes]

    # ---------------------------------------------------------------- traced
    def _start(self, y: Tensor, targets: Tensor) -> Tensor:
        flat = tf.reshape(y, (tf.shape(y)[0], -1))
        if self.start == "all":
            r = flat
        else:
            mask = self._mask(flat, targets)
            if self.start == "output":
                r = flat * mask
            else:  # logodds
                others = tf.where(mask > 0, tf.constant(-np.inf, flat.dtype), flat)
                q = tf.nn.softmax(others, axis=1)
                r = flat * (mask - q)
        return tf.reshape(r, tf.shape(y))

    def _filter(self, r: Tensor) -> Tensor:
        n = math.prod(r.shape[1:])  # static: the batch axis is the only unknown one
        k = max(1, math.ceil(self.relevance_filter * n))
        if k >= n:
            return r
        flat = tf.reshape(r, (-1, n))
        threshold = tf.reduce_min(tf.math.top_k(flat, k=k, sorted=False).values, axis=1,
                                  keepdims=True)
        return tf.reshape(tf.where(flat >= threshold, flat, tf.zeros_like(flat)), tf.shape(r))

    def _backward(self, xs, targets, keep_all: bool = False, masks: dict | None = None,
                  seeds: tuple | None = None, parameters: dict | None = None,
                  outputs: dict | None = None):
        """Relevance at the inputs (and, with ``keep_all``, at every tensor).

        ``seeds``: ``(indices, weights)`` of :meth:`explain_outputs` (then ``targets`` is unused
        and inputs have ``B * k`` samples). ``parameters``: a dict that receives, per node
        with weights whose rule propagates through them, its parameter relevance
        (:meth:`parameter_relevance`). ``outputs``: receives the forward values (``"values"``).

        ``masks`` (Concept Relevance Propagation) maps node names to ``(B, k, channels)``
        masks: where the backward pass reaches the first of these nodes, the relevance of every
        tensor still in flight is repeated ``k`` times per sample (the pass above is shared),
        and at each of them the relevance at its output is multiplied by its mask; the
        forward values below are repeated alike. Inputs then have ``B * k`` samples.
        """
        values, z0s = self._forward(xs)
        if outputs is not None:
            outputs["values"] = values
        seen: dict[int, Tensor] = {}
        memo: dict = {}
        base_memo = memo
        if seeds is None:
            relevance = {self._output_key: self._start(values[self._output_key], targets)}
        else:  # k start relevances per sample: the forward pass is shared (k copies from here)
            relevance = {self._output_key: _seed(values[self._output_key], *seeds)}
            values, z0s = _Repeated(values, tf.shape(seeds[0])[1]), \
                _Repeated(z0s, tf.shape(seeds[0])[1])
            memo = {}  # values computed for the copies; base_memo keeps the samples' own
        for node in reversed(self.graph.nodes):
            r_out = [relevance.pop(k, None) for k in node.outputs]
            if all(r is None for r in r_out):
                continue
            if masks and node.name in masks:
                if not isinstance(values, _Repeated):  # the first condition: k copies from here
                    k = tf.shape(masks[node.name])[1]
                    values, z0s = _Repeated(values, k), _Repeated(z0s, k)
                    base_memo = memo
                    memo = {key: v for key, v in memo.items() if isinstance(key, tuple)}
                    relevance = {key: tf.repeat(r, k, axis=0) for key, r in relevance.items()}
                    r_out = [None if r is None else tf.repeat(r, k, axis=0) for r in r_out]
                r_out = [None if r is None else r * _channel_mask(masks[node.name], r)
                         for r in r_out]
            r_out = [tf.zeros_like(values[k]) if r is None else r for k, r in zip(node.outputs, r_out)]
            if keep_all:
                seen.update(zip(node.outputs, r_out))
            # Everything a rule computes (modified weights and forwards, the kernels read
            # again) waits for the relevance it maps: it then runs in the backward phase and
            # is freed layer by layer, instead of piling up during the forward pass.
            with tf.control_dependencies(r_out):
                if self.relevance_filter is not None and node.linear is not None:
                    r_out = [self._filter(r) for r in r_out]
                linear = node.linear
                # below a condition, a rule with weights runs its modified forwards on the
                # samples themselves and only its transposed operations on the k copies
                per_sample = isinstance(values, _Repeated) and linear is not None and \
                    isinstance(self.rules[node.name], lrp_rules.BasicRule)
                vals, zs, mem = (values.base, z0s.base, base_memo) if per_sample else \
                    (values, z0s, memo)
                ctx = lrp_rules.Context(
                    node, [self._value(k, vals, zs, mem) for k in node.inputs],
                    [self._value(k, vals, zs, mem) for k in node.outputs],
                    r_out, [self._nonnegative.get(k, False) for k in node.inputs],
                    *((linear.kernels(), self._bias(node, memo), zs[node.name]) if linear
                      else (None, None, None)),
                    gates=[weightless.is_gate(self._ranges.get(k, weightless.UNKNOWN))
                           for k in node.inputs],
                    negative_silent=node.name in self._silent,
                    input_bounds=self._input_bounds(node, vals),
                    saved=z0s.get(node.name) if node.recurrent is not None else None,
                    repeat=values.k if per_sample else None,
                    parameters={} if parameters is not None and linear is not None else None,
                )
                r_in = self.rules[node.name](ctx)
                if ctx.parameters:
                    parameters[node.name] = ctx.parameters
            for k, r in zip(node.inputs, r_in):
                forward = values.base if isinstance(values, _Repeated) else values
                if r is None or not forward[k].dtype.is_floating and k not in self.graph.inputs:
                    continue  # nothing passes to this input (a mask)
                relevance[k] = r if k not in relevance else relevance[k] + r
        # float inputs get relevance of their dtype; token (integer) inputs float32
        dtypes = [x.dtype if x.dtype.is_floating else tf.float32 for x in xs]
        inputs = [tf.cast(relevance[k], d) if k in relevance else tf.zeros(tf.shape(values[k]), d)
                  for k, d in zip(self.graph.inputs, dtypes)]
        return inputs, seen

    def _explain(self, xs, targets):
        return self._backward(xs, targets)[0]

    def _explain_predict(self, xs, targets):
        box: dict = {}
        relevance = self._backward(xs, targets, outputs=box)[0]
        return relevance, self._output(box["values"])

    # ---------------------------------------------------------------- concepts (CRP)
    @_specializes
    def __call__(self, x, target=None, conditions: dict | None = None):
        """Explain ``x`` (see :meth:`tf_lrp.base.BaseAnalyzer.__call__`).

        ``conditions={layer: [channels], ...}`` gives the conditional heatmap of Concept
        Relevance Propagation: only relevance passing through those channels of those layers
        reaches the input (:meth:`conditional` for many conditions at once).
        """
        if conditions is None:
            return super().__call__(x, target)
        if not isinstance(conditions, dict) or not all(
                np.ndim(v) <= 1 for v in conditions.values()):
            raise TypeError("conditions= takes one {layer: [channels]} dict; use "
                            "analyzer.conditional(x, target, [dict, ...]) for several")
        out = self.conditional(x, target, [conditions])
        return [r[:, 0] for r in out] if isinstance(out, list) else out[:, 0]
