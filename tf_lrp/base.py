"""The machinery every analyzer shares (LRP and the gradient baselines).

:class:`BaseAnalyzer` owns the canonized graph of the model, input and target validation,
batching (with out-of-memory halving), one ``tf.function`` per analyzer with an input signature
whose batch axis is ``None`` (one trace per input shape; targets are a tensor, so a new target
never retraces), and the forward pass over the node list (which keeps what rules need: a linear
node's ``z0``, a recurrent node's states and gates; Keras masks are carried along).
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

from tf_lrp import canonizers, keras_adapter, plan
from tf_lrp.errors import InputError, LRPError
from tf_lrp.graph import Graph, Node, build_graph

Tensor = tf.Tensor


class _NeedsShapes(Exception):
    """Raised by :class:`BaseAnalyzer` when the graph can only be built for known input sizes."""


#: the size that stands for an unknown one when a deferred analyzer is probed at construction
PROBE_SIZE = 8


class _PerShape(type):
    """Metaclass of the analyzers: an analyzer whose model can only be walked for known input
    sizes (a custom layer that builds a causal mask with ``ops.arange(sequence_length)``, or a
    class token tiled to the batch size) is created *deferred*; its first call builds the
    analyzer for that input's shape (:meth:`BaseAnalyzer.for_shape`), and later calls reuse it.

    At construction the analyzer is built once for a probe shape (unknown sizes
    ``PROBE_SIZE``; the batch too, where the sizes alone do not suffice), so that a model that
    cannot be explained is refused then, not at the first call.
    """

    def __call__(cls, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except _NeedsShapes as needs:
            model, names, free_shapes, given = needs.args
        # the model as loaded or converted once (a path, a float32 copy), not again per shape
        args, kwargs = ((model, *args[1:]), kwargs) if args else \
            (args, {**kwargs, "model": model})
        probe = given or [tuple(PROBE_SIZE if d is None else d for d in s) for s in free_shapes]
        guessed = given is None and any(d is None for s in free_shapes for d in s)
        built: dict = {}
        try:
            try:
                built[None, tuple(map(tuple, probe))] = super().__call__(
                    *args, **{**kwargs, "input_shapes": probe})
                per_batch = False
            except _NeedsShapes:  # the sizes alone do not do: the batch size must be known too
                built[2, tuple(map(tuple, probe))] = super().__call__(
                    *args, **{**kwargs, "input_shapes": probe, "input_batch": 2})
                per_batch = True
        except LRPError as err:
            from tf_lrp import flatten

            text = str(err)
            if not guessed or flatten.STRUCTURAL in text or not (
                    "could not be flattened" in text or "could not be called" in text):
                raise
            # the probe's sizes were a guess (an audio model may need thousands of samples):
            # the first call decides
            built, per_batch = {}, False
        if given is not None and not per_batch:
            return next(iter(built.values()))
        obj = cls.__new__(cls)
        obj.model, obj._input_names = model, names
        obj._deferred = (args, kwargs)
        obj._per_batch = per_batch
        obj._by_shape = built
        obj.batch_size = kwargs.get("batch_size")
        return obj


def _specializes(method):
    """Run ``method`` on the analyzer built for ``x``'s shape when this one is deferred."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        if self.__dict__.get("_deferred") is not None:
            return getattr(self.for_input(x), method.__name__)(x, *args, **kwargs)
        return method(self, x, *args, **kwargs)

    return wrapper


def _batch_of(x) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else \
        x[0] if isinstance(x, (list, tuple)) else x
    return int(np.shape(first)[0])


def _shapes_of(x, names: list[str]) -> list[tuple]:
    if isinstance(x, dict):
        if sorted(x) != sorted(names):
            raise InputError(f"the inputs are named {sorted(x)}; the model's inputs are {names}")
        return [tuple(np.shape(x[k])[1:]) for k in names]
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    return [tuple(np.shape(a)[1:]) for a in xs]


class BaseAnalyzer(metaclass=_PerShape):
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
    input_shapes, input_batch
        The sizes of the model's inputs (without the batch axis) where the model leaves some
        open, and the batch size. Needed only where a custom layer can be flattened for known
        sizes alone (a causal mask built from the sequence length, a class token tiled to the
        batch); without them, such an analyzer is built on its first call for that input's
        shape (and batch size, where needed), and again for each new one (:meth:`for_shape`).

    Notes
    -----
    A final softmax is stripped with a warning: explanations are of the logits.
    """

    def __init__(self, model, *, output: int | str | None = None,
                 batch_size: int | None = None, jit_compile: bool = False,
                 input_shapes: list[tuple] | None = None, input_batch: int | None = None):
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
        if keras_adapter.low_precision(model):
            # relevance in 16-bit floats loses what LRP divides by; explain a float32 copy
            warnings.warn(f"{model.name} computes in 16-bit floats; tf_lrp explains a float32 "
                          "copy of it (its weights cast; later weight changes are not seen)",
                          stacklevel=3)
            model = keras_adapter.float32_copy(model)
        if input_batch is not None:  # a graph for this batch size only: one step each call
            batch_size = None
        self.model = model
        self.batch_size = batch_size
        self._memory_cap: int | None = None  # lowered when a step runs out of memory
        self._deferred = None
        shapes = None if input_shapes is None else [tuple(s) for s in input_shapes]
        graph = build_graph(model, shapes, keep=self._keeps_whole, batch=input_batch)
        if graph.needs_shapes and input_batch is None:
            raise _NeedsShapes(model, graph.input_names, graph.input_shapes, shapes)
        self.graph: Graph = canonizers.canonize(graph)
        self._output_key = self._select_output(output)
        out_shape = self.graph.shapes.get(self._output_key, (None,))[1:]
        self.num_outputs = math.prod(out_shape) if all(d is not None for d in out_shape) else None
        self._tokens = plan.token_inputs(self.graph)
        self._ranges = plan.value_ranges(self.graph)
        self._nonnegative = {k: r[0] >= 0.0 for k, r in self._ranges.items()}
        #: the signature of every traced call: the inputs with a free batch axis
        self._input_specs = specs = [tf.TensorSpec((None, *s), d) for s, d in
                                     zip(self.graph.input_shapes, self.graph.input_dtypes)]
        self._explain_fn = _traced(self._explain, [specs, tf.TensorSpec([None], tf.int32)],
                                   jit_compile)
        self._predict_fn = _traced(self._predict, [specs])
        self._explain_predict_fn = _traced(self._explain_predict,
                                           [specs, tf.TensorSpec([None], tf.int32)], jit_compile)

    def _keeps_whole(self, layer, name: str) -> bool:
        """Whether a custom layer stays one node (not flattened): for LRP, where the composite
        maps a rule to it; the gradient baselines flatten every custom layer."""
        return False

    def for_shape(self, input_shapes: list[tuple], batch: int | None = None) -> BaseAnalyzer:
        """This analyzer built for inputs of the given sizes (without the batch axis).

        For a deferred analyzer (see ``input_shapes``) the result is built once per shape and
        kept; for any other, the analyzer itself. ``batch``: the batch size, for models whose
        graph depends on it too (a class token tiled to the batch; then each batch size given
        builds its own analyzer, which takes the whole batch in one step).
        """
        if self.__dict__.get("_deferred") is None:
            return self
        batch = batch if self._per_batch else None
        if self._per_batch and batch is None:
            batch = 2
        key = (batch, tuple(tuple(s) for s in input_shapes))
        if key not in self._by_shape:
            args, kwargs = self._deferred
            extra = {"input_shapes": list(key[1])}
            if batch is not None:
                extra["input_batch"] = batch
            self._by_shape[key] = type(self)(*args, **{**kwargs, **extra})
        return self._by_shape[key]

    def for_input(self, x) -> BaseAnalyzer:
        """This analyzer built for the shape (and, where the graph needs it, the batch size) of
        the inputs ``x``: :meth:`for_shape` of ``x``'s sizes; the analyzer itself unless
        deferred."""
        if self.__dict__.get("_deferred") is None:
            return self
        return self.for_shape(_shapes_of(x, self._input_names),
                              _batch_of(x) if self._per_batch else None)

    @property
    def input_names(self) -> list[str]:
        """The model's input names, in the order of a relevance list (a deferred analyzer
        knows them without building a graph)."""
        return self.__dict__.get("_input_names") or self.graph.input_names

    def __getattr__(self, name: str):
        # only reached for attributes that do not exist: on a deferred analyzer, the ones the
        # graph would give
        if name.startswith("__") or self.__dict__.get("_deferred") is None:
            raise AttributeError(name)
        raise AttributeError(
            f"{type(self).__name__}.{name} depends on the input sizes: this model's graph is "
            "built per input shape (a custom layer needs known sizes). Fix: call the analyzer "
            "on inputs first, or use analyzer.for_shape([shape, ...])")

    @property
    def token_inputs(self) -> tuple[int, ...]:
        """Positions of the model inputs that are token ids (read by an ``Embedding``)."""
        return tuple(sorted(self._tokens))

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

    def _explain_predict(self, xs, targets):
        """Relevance and the explained output in one traced call (here: a second forward;
        the LRP analyzer reads the output off its own forward pass)."""
        return self._explain(xs, targets), self._predict(xs)

    def _explain(self, xs, targets):  # pragma: no cover - overridden
        raise NotImplementedError

    # ---------------------------------------------------------------- eager API
    def _by_name(self, x: dict) -> list:
        """Inputs given as a dict (KerasHub's ``{"token_ids": ..., "padding_mask": ...}``) in the
        model's input order."""
        names = self.graph.input_names
        if sorted(x) != sorted(names):
            raise InputError(f"the inputs are named {sorted(x)}; the model's inputs are "
                             f"{names}: pass a dict with exactly these keys (or a list in "
                             "that order)")
        return [x[name] for name in names]

    def _prepare(self, x) -> list[np.ndarray]:
        if isinstance(x, dict):
            x = self._by_name(x)
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

    @_specializes
    def predict(self, x) -> np.ndarray:
        """The explained output (logits: a final softmax is stripped) as ``(batch, outputs)``."""
        xs = self._prepare(x)
        parts = self._map_batches(lambda lo, chunk: self._predict_fn(chunk).numpy(), xs)
        return np.concatenate(parts)

    @_specializes
    def explain_and_predict(self, x, target=None):
        """``(relevance, outputs)``: :meth:`__call__`'s relevance and :meth:`predict`'s
        ``(batch, outputs)`` from one traced call per step (the LRP analyzer computes both from
        one forward pass). What the batch runs (distributed, Ray, the command line) call."""
        xs = self._prepare(x)
        t = self._targets(target, xs[0].shape[0])
        def step(lo, chunk):
            r, y = self._explain_predict_fn(chunk, tf.constant(t[lo:lo + chunk[0].shape[0]]))
            return [a.numpy() for a in r], y.numpy()

        parts = self._map_batches(step, xs)
        relevance = [np.concatenate([p[0][i] for p in parts]) for i in range(len(xs))]
        outputs = np.concatenate([p[1] for p in parts])
        return (relevance[0] if len(relevance) == 1 else relevance), outputs

    @_specializes
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
