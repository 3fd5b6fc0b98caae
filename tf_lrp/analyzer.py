"""The LRP analyzer and the machinery every analyzer shares.

:class:`BaseAnalyzer` owns what all attribution methods share: the canonized graph of the model,
input and target validation, batching, one ``tf.function`` per analyzer with an input signature
whose batch axis is ``None`` (one trace per input shape; targets are a tensor, so a new target
never retraces), and the forward pass over the node list.

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

import functools
import math
import os
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_lrp import canonizers, composites, keras_adapter, plan, weightless
from tf_lrp import rules as lrp_rules
from tf_lrp.errors import InputError, UnsupportedLayerError
from tf_lrp.graph import Graph, Node, build_graph

Tensor = tf.Tensor

#: The relevance the backward pass starts from (see :class:`Analyzer`).
STARTS = ("output", "logodds", "all")


class BaseAnalyzer:
    """Shared machinery of all analyzers (LRP and the gradient baselines).

    Parameters
    ----------
    model
        A built ``keras.Model`` (Functional, Sequential, nested) or a path to a model file.
    output
        Which model output to explain: index or name. Needed only for multi-output models.
    batch_size
        Largest batch given to one step; larger inputs are split (caps peak memory).
        ``None`` passes the whole input at once. Either way, a step that runs out of memory is
        split in halves until it fits (with a ``ResourceWarning``), and later calls keep the
        smaller step.
    jit_compile
        Compile the traced function with XLA (off by default: slower on CPU in our tests).

    Notes
    -----
    A final softmax is stripped with a warning: explanations are of the logits.
    """

    def __init__(self, model, *, output: int | str | None = None,
                 batch_size: int | None = None, jit_compile: bool = False):
        if isinstance(model, (str, os.PathLike)):
            from tf_lrp.io import load_model

            model = load_model(model)
        if keras_adapter.is_keras2_model(model):
            raise TypeError(
                f"this {type(model).__name__} is a Keras 2 (tf_keras / tf.keras 2.x) model; "
                "tf_lrp explains Keras 3 models. Fix: save it as .h5 with Keras 2 "
                "(model.save('model.h5')) and load that file with tf_lrp.load_model('model.h5')"
            )
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"expected a keras.Model or a path to a model file, got {type(model).__name__}"
            )
        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self._memory_cap: int | None = None  # lowered when a step runs out of memory
        self.graph: Graph = canonizers.canonize(build_graph(model))
        self._output_key = self._select_output(output)
        out_shape = self.graph.shapes.get(self._output_key, (None,))[1:]
        self.num_outputs = math.prod(out_shape) if all(d is not None for d in out_shape) else None
        self._tokens = plan.token_inputs(self.graph)
        self._ranges = plan.value_ranges(self.graph)
        self._nonnegative = {k: r[0] >= 0.0 for k, r in self._ranges.items()}
        specs = [tf.TensorSpec((None, *s), d) for s, d in zip(self.graph.input_shapes,
                                                                self.graph.input_dtypes)]
        self._explain_fn = _traced(self._explain, [specs, tf.TensorSpec([None], tf.int32)],
                                   jit_compile)
        self._predict_fn = _traced(self._predict, [specs])

    # ---------------------------------------------------------------- setup
    def _select_output(self, output) -> int:
        outs, names = self.graph.outputs, self.graph.output_names
        if output is None:
            if len(outs) > 1:
                raise InputError(
                    f"the model has {len(outs)} outputs ({', '.join(names)}); pass output=<index "
                    "or name> to choose the one to explain"
                )
            return outs[0]
        if isinstance(output, str):
            matches = [i for i, n in enumerate(names) if n == output or n.split("/")[0] == output]
            if not matches:
                raise InputError(f"no model output named {output!r}; outputs: {', '.join(names)}")
            return outs[matches[0]]
        if not 0 <= int(output) < len(outs):
            raise InputError(f"output={output} is out of range: the model has {len(outs)} output(s)")
        return outs[int(output)]

    # ---------------------------------------------------------------- traced parts
    def _forward(self, xs: Sequence[Tensor], inject: dict[str, Tensor] | None = None
                 ) -> tuple[dict[int, Tensor], dict[str, Tensor]]:
        """Run the canonized graph; return the tensor values and each linear node's ``z0``.

        ``z0`` is a linear node's pre-activation without bias (rules without bias reuse it);
        for a recurrent node, what its rule needs. ``inject`` replaces the output of the named
        (Embedding) nodes, with the mask the node computes (gradients in embedding space).
        """
        values = dict(zip(self.graph.inputs, xs))
        z0s: dict[str, Tensor] = {}
        for node in self.graph.nodes:
            ins = [values[k] for k in node.inputs]
            if inject and node.name in inject:
                outs = [inject[node.name]]
                mask = node.layer.compute_mask(ins[0]) if hasattr(node.layer, "compute_mask") \
                    else None
                if mask is not None:
                    keras_adapter.set_mask(outs[0], mask)
            elif node.linear is not None:
                z0 = node.linear.apply(ins[0], node.linear.kernels())
                outs = [node.linear.add_bias(z0, node.linear.bias())]
                z0s[node.name] = z0
                _carry_mask(node, ins, outs)
            elif node.recurrent is not None:
                outs, z0s[node.name] = node.recurrent.forward(ins)
                if node.layer.return_sequences:
                    keras_adapter.set_mask(outs[0], keras_adapter.mask_of(ins[0]))
            else:
                outs = node.call(ins)
            values.update(zip(node.outputs, outs))
        return values, z0s

    def _output(self, values: dict[int, Tensor]) -> Tensor:
        y = values[self._output_key]
        return tf.reshape(y, (tf.shape(y)[0], -1))

    def _predict(self, xs):
        return self._output(self._forward(xs)[0])

    def _mask(self, y: Tensor, targets: Tensor) -> Tensor:
        """One-hot mask of the explained output; a negative target means the highest output."""
        index = tf.where(targets < 0, tf.argmax(y, axis=1, output_type=tf.int32), targets)
        return tf.one_hot(index, tf.shape(y)[1], dtype=y.dtype)

    def _explain(self, xs, targets):  # pragma: no cover - overridden
        raise NotImplementedError

    # ---------------------------------------------------------------- eager API
    def _prepare(self, x) -> list[np.ndarray]:
        shapes = self.graph.input_shapes
        if len(shapes) > 1:
            if not isinstance(x, (list, tuple)) or len(x) != len(shapes):
                raise InputError(
                    f"the model has {len(shapes)} inputs ({', '.join(self.graph.input_names)}); "
                    f"pass a list of {len(shapes)} arrays in that order"
                )
            xs = list(x)
        else:
            xs = [x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x]
        out = []
        for i, (a, shape, dtype) in enumerate(zip(xs, shapes, self.graph.input_dtypes)):
            out.append(_check_input(a, shape, dtype, self.graph.input_names[i]))
        if len({a.shape[0] for a in out}) > 1:
            raise InputError(f"the inputs have different batch sizes: {[a.shape[0] for a in out]}")
        return out

    def _targets(self, target, n: int) -> np.ndarray:
        if target is None:
            return np.full(n, -1, np.int32)
        t = np.asarray(target)
        if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(np.mod(t, 1) == 0)):
            raise InputError(f"target must be an integer or a sequence of integers, got {target!r}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64)
        if t.shape != (n,):
            raise InputError(
                f"target has {t.size} entries for a batch of {n}: pass one integer for all "
                "samples or one per sample"
            )
        hi = self.num_outputs
        bad = (t < 0) | (t >= hi) if hi is not None else (t < 0)
        if bad.any():
            raise InputError(
                f"target {t[bad][0]} is out of range: the explained output has {hi} entries "
                f"(valid targets 0..{(hi or 0) - 1})"
            )
        return t.astype(np.int32)

    def _map_batches(self, fn, xs: list[np.ndarray]) -> list:
        """``fn(offset, tensors)`` over steps of at most ``batch_size`` samples, in order.

        A step that runs out of memory (``tf.errors.ResourceExhaustedError``) is retried with
        half as many samples, and later steps and calls keep the smaller size (a
        ``ResourceWarning`` says which); only a single sample that does not fit raises.
        """
        n = xs[0].shape[0]
        lo, out = 0, []
        while lo < n:
            step = min(self.batch_size or n, self._memory_cap or n)
            try:
                out.append(fn(lo, [tf.convert_to_tensor(a[lo:lo + step]) for a in xs]))
            except tf.errors.ResourceExhaustedError as exc:
                if step == 1:
                    raise MemoryError(
                        f"{type(self).__name__}: a single sample does not fit in memory "
                        f"({exc.message.splitlines()[0][:200]}); use a smaller model or input, "
                        "or a device with more memory"
                    ) from exc
                self._memory_cap = step // 2
                warnings.warn(
                    f"{type(self).__name__}: out of memory on a step of {step} samples; "
                    f"continuing with {self._memory_cap} per step (pass batch_size="
                    f"{self._memory_cap} to start there)", ResourceWarning, stacklevel=3)
                continue
            lo += step
        return out

    def predict(self, x) -> np.ndarray:
        """The explained output (logits: a final softmax is stripped) as ``(batch, outputs)``."""
        xs = self._prepare(x)
        parts = self._map_batches(lambda lo, chunk: self._predict_fn(chunk).numpy(), xs)
        return np.concatenate(parts)

    def __call__(self, x, target=None):
        """Explain ``x``.

        Parameters
        ----------
        x
            A batch (``(batch, *input_shape)``, numeric, finite); a list of batches for a
            multi-input model.
        target
            ``None`` explains the highest output of each sample; an integer explains that output
            for every sample; a sequence gives one target per sample.

        Returns
        -------
        numpy.ndarray or list of numpy.ndarray
            float32 relevance of the same shape as ``x`` (a list for multi-input models).
        """
        xs = self._prepare(x)
        t = self._targets(target, xs[0].shape[0])
        parts = self._map_batches(
            lambda lo, chunk: [r.numpy() for r in self._explain_fn(
                chunk, tf.constant(t[lo:lo + chunk[0].shape[0]]))], xs)
        result = [np.concatenate([p[i] for p in parts]) for i in range(len(xs))]
        return result[0] if len(result) == 1 else result


def _carry_mask(node: Node, ins: list, outs: list) -> None:
    """Attach the Keras mask a masking-aware layer computed by ``tf_lrp`` passes on."""
    mask = keras_adapter.mask_of(ins[0]) if ins else None
    if mask is not None and getattr(node.layer, "supports_masking", False):
        keras_adapter.set_mask(outs[0], mask)


def _traced(method, signature=None, jit_compile: bool = False):
    """``tf.function`` of a bound method, with trace statistics of its own.

    TensorFlow counts traces per code object, so every new analyzer would look like a retrace of
    the previous one (and warn); a ``functools.partial`` has no code object and gets its own count.
    """
    # autograph off: the traced code has no tensor-dependent Python control flow (the loops run
    # over the node list), and converting it only costs tracing time
    return tf.function(functools.partial(method.__func__, method.__self__),
                       input_signature=signature, jit_compile=jit_compile, autograph=False)


def _check_input(a, shape: tuple, dtype: str, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"input {name!r} cannot be converted to an array: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"input {name!r} has dtype {arr.dtype}; expected a numeric array (it is cast to {dtype})"
        )
    expected = "(batch, " + ", ".join("?" if d is None else str(d) for d in shape) + ")"
    if arr.ndim == len(shape) and all(d is None or d == s for d, s in zip(shape, arr.shape)):
        raise InputError(
            f"input {name!r} has shape {arr.shape}, a single sample without batch axis; expected "
            f"{expected}. Fix: add a batch axis, x[np.newaxis]"
        )
    if arr.ndim != len(shape) + 1 or any(d is not None and d != s for d, s in zip(shape, arr.shape[1:])):
        raise InputError(f"input {name!r} has shape {arr.shape}; the model expects {expected}")
    if arr.shape[0] == 0:
        raise InputError(f"input {name!r} is an empty batch")
    arr = arr.astype(dtype, copy=False)
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"input {name!r} contains NaN or Inf in sample(s) {bad[:10].tolist()}; "
            "clean or drop them before explaining"
        )
    return arr


class Analyzer(BaseAnalyzer):
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
    output, batch_size, jit_compile
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
                 batch_size: int | None = None, jit_compile: bool = False, **composite_kwargs):
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        if relevance_filter is not None and not 0 < relevance_filter <= 1:
            raise ValueError(f"relevance_filter must be in (0, 1] or None, got {relevance_filter!r}")
        self.composite = composites.as_composite(composite, composite_kwargs)
        self.start = start
        self.relevance_filter = relevance_filter
        super().__init__(model, output=output, batch_size=batch_size, jit_compile=jit_compile)
        self.rules = self._assign_rules()
        self._silent = plan.silent_negatives(self.graph, self.rules)
        self._chains = plan.input_chains(self.graph)
        self._recompute = self._recompute_plan()
        self._layerwise_fn = None

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

    def _backward(self, xs, targets, keep_all: bool = False):
        values, z0s = self._forward(xs)
        relevance = {self._output_key: self._start(values[self._output_key], targets)}
        seen: dict[int, Tensor] = {}
        memo: dict = {}
        for node in reversed(self.graph.nodes):
            r_out = [relevance.pop(k, None) for k in node.outputs]
            if all(r is None for r in r_out):
                continue
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
                ctx = lrp_rules.Context(
                    node, [self._value(k, values, z0s, memo) for k in node.inputs],
                    [self._value(k, values, z0s, memo) for k in node.outputs],
                    r_out, [self._nonnegative.get(k, False) for k in node.inputs],
                    *((linear.kernels(), self._bias(node, memo), z0s[node.name]) if linear
                      else (None, None, None)),
                    gates=[weightless.is_gate(self._ranges.get(k, weightless.UNKNOWN))
                           for k in node.inputs],
                    negative_silent=node.name in self._silent,
                    input_bounds=self._input_bounds(node, values),
                    saved=z0s.get(node.name) if node.recurrent is not None else None,
                )
                r_in = self.rules[node.name](ctx)
            for k, r in zip(node.inputs, r_in):
                if r is None or not values[k].dtype.is_floating and k not in self.graph.inputs:
                    continue  # nothing passes to this input (a mask)
                relevance[k] = r if k not in relevance else relevance[k] + r
        # float inputs get relevance of their dtype; token (integer) inputs float32
        dtypes = [x.dtype if x.dtype.is_floating else tf.float32 for x in xs]
        inputs = [tf.cast(relevance[k], d) if k in relevance else tf.zeros(tf.shape(x), d)
                  for k, x, d in zip(self.graph.inputs, xs, dtypes)]
        return inputs, seen

    def _explain(self, xs, targets):
        return self._backward(xs, targets)[0]

    def _layerwise(self, xs, targets):
        inputs, seen = self._backward(xs, targets, keep_all=True)
        out = {n.name: seen[n.outputs[0]] for n in self.graph.nodes if n.outputs[0] in seen}
        for name, r in zip(self.graph.input_names, inputs):
            out["input" if len(inputs) == 1 else f"input/{name}"] = r
        return out

    def layerwise(self, x, target=None) -> dict[str, np.ndarray]:
        """Relevance at every node's output (and at the input), for conservation checks.

        Keys are node names (see :class:`tf_lrp.graph.Node`; a folded BatchNormalization is
        named ``conv+bn``), plus ``"input"`` (``"input/<name>"`` per input of multi-input models).
        Traced on first use; not batched.
        """
        if self._layerwise_fn is None:
            self._layerwise_fn = _traced(self._layerwise)
        xs = self._prepare(x)
        t = self._targets(target, xs[0].shape[0])
        xs = [tf.convert_to_tensor(a) for a in xs]
        return {k: v.numpy() for k, v in self._layerwise_fn(xs, tf.constant(t)).items()}
