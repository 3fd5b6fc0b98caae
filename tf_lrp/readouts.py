"""What one backward pass answers besides the input heatmap: conditional heatmaps and concept
relevance (Concept Relevance Propagation), relevance at every layer, many weighted outputs at
once (a generation's tokens), and the relevance of the parameters.

:class:`Readouts` is a mixin of :class:`tf_lrp.Analyzer`; every method runs the analyzer's own
backward pass (``_backward``) in one traced call.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lrp import concepts
from tf_lrp.base import _specializes, _traced
from tf_lrp.errors import InputError


class Readouts:
    """Conditional heatmaps, concept and layer relevance, many outputs, parameters."""

    # ---------------------------------------------------------------- concepts (CRP)
    @_specializes
    def conditional(self, x, target=None, conditions=()) -> np.ndarray | list[np.ndarray]:
        """Conditional heatmaps (Concept Relevance Propagation, Achtibat et al. 2023).

        Parameters
        ----------
        x, target
            As for ``__call__``.
        conditions
            ``k`` conditions per sample, in one of the forms of
            :func:`tf_lrp.concepts.condition_masks`: a list of ``{layer: [channels]}`` dicts
            (the same for every sample), or a dict of per-sample channel indices
            ``{layer: (n, k)}`` (e.g. each sample's top-k channels) or masks.

        Returns
        -------
        numpy.ndarray
            ``(n, k, *input_shape)``: heatmap ``j`` of sample ``i`` is the input relevance of
            the relevance that passes the channels of condition ``j``. The ``k`` heatmaps of a
            sample share its forward pass and the backward pass above the first conditioned
            layer (one traced call; another ``k`` or other channels do not retrace). Over a
            partition of a layer's channels they sum to the plain heatmap where every path to
            the output passes that layer.
        """
        xs = self._prepare(x)
        n = xs[0].shape[0]
        t = self._targets(target, n)
        masks = concepts.condition_masks(self.graph, conditions, n)
        names = tuple(sorted(masks))
        if names not in self._conditional_fns:
            specs = self._input_specs
            mask_specs = {name: tf.TensorSpec((None, None, masks[name].shape[2]), tf.bool)
                          for name in names}
            self._conditional_fns[names] = _traced(
                self._conditional, [specs, tf.TensorSpec([None], tf.int32), mask_specs])
        fn = self._conditional_fns[names]
        k = next(iter(masks.values())).shape[1]
        parts = self._map_batches(lambda lo, chunk: [r.numpy() for r in fn(
            chunk, tf.constant(t[lo:lo + chunk[0].shape[0]]),
            {name: tf.constant(masks[name][lo:lo + chunk[0].shape[0]]) for name in names})], xs)
        result = [np.concatenate([p[i] for p in parts]).reshape(n, k, *xs[i].shape[1:])
                  for i in range(len(xs))]
        return result[0] if len(result) == 1 else result

    def _conditional(self, xs, targets, masks):
        return self._backward(xs, targets, masks=masks)[0]

    @_specializes
    def concept_relevance(self, x, target=None, layer: str = "") -> np.ndarray:
        """The relevance of every channel of ``layer`` per sample: ``(n, channels)``, summed over
        the other axes (positions). They sum to the relevance reaching the layer."""
        node = concepts.condition_node(self.graph, layer)
        r = self.layerwise(x, target)[node.name]
        return r.reshape(r.shape[0], -1, r.shape[-1]).sum(axis=1)

    @_specializes
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

    def _layerwise(self, xs, targets):
        inputs, seen = self._backward(xs, targets, keep_all=True)
        out = {n.name: seen[n.outputs[0]] for n in self.graph.nodes if n.outputs[0] in seen}
        for name, r in zip(self.graph.input_names, inputs):
            out["input" if len(inputs) == 1 else f"input/{name}"] = r
        return out

    # ---------------------------------------------------------------- many outputs at once
    @_specializes
    def explain_outputs(self, x, indices, weights=None) -> np.ndarray | list[np.ndarray]:
        """``k`` explanations per sample, each of a weighted sum of outputs, sharing the
        forward pass (one traced call; no retrace for another ``k`` or ``m``).

        Explanation ``j`` of sample ``i`` starts from the relevance ``weights[i, j, l] *
        y[i, indices[i, j, l]]`` at each flat output index ``indices[i, j, l]`` (the index as
        for ``target``: a ``(n, L, vocab)`` output is indexed ``position * vocab + token``).
        Weight 1 at one index is that output's explanation (as ``target``); ``(+1, -1)`` at
        two, the contrast ``y_a - y_b`` (LRP rules are linear in the start relevance); ones at
        several, their sum; coefficients ``onehot - q`` over a row, a log-odds start. Weight 0
        pads combinations of fewer outputs. The analyzer's ``start`` is not used.

        Parameters
        ----------
        x
            As for ``__call__``.
        indices
            ``(n, k, m)`` (or ``(k, m)`` / ``(k,)`` for every sample alike) flat output indices.
        weights
            Same shape, the coefficients; default 1.

        Returns
        -------
        numpy.ndarray
            ``(n, k, *input_shape)`` (a list of them for several inputs).
        """
        xs = self._prepare(x)
        n = xs[0].shape[0]
        idx = np.asarray(indices)
        w = np.ones(idx.shape, np.float32) if weights is None else np.asarray(weights, np.float32)
        if w.shape != idx.shape or idx.ndim not in (1, 2, 3) or idx.dtype.kind not in "iu":
            raise InputError(f"indices of shape {idx.shape} ({idx.dtype}) and weights of shape "
                             f"{w.shape}: expected integer indices (n, k, m), (k, m) or (k,) "
                             "and weights of the same shape")
        if idx.ndim == 1:
            idx, w = idx[:, None], w[:, None]
        if idx.ndim == 2:
            idx, w = (np.broadcast_to(a, (n, *a.shape)) for a in (idx, w))
        hi = self.num_outputs
        if idx.shape[0] != n or idx.size and (idx.min() < 0 or (hi and idx.max() >= hi)):
            raise InputError(f"indices for {idx.shape[0]} samples with values {idx.min()} to "
                             f"{idx.max()}: expected {n} samples and flat output indices in "
                             f"[0, {hi})")
        if self._seeded_fn is None:
            specs = self._input_specs
            self._seeded_fn = _traced(self._seeded, [
                specs, tf.TensorSpec([None, None, None], tf.int32),
                tf.TensorSpec([None, None, None], tf.float32)])
        k = idx.shape[1]
        parts = self._map_batches(lambda lo, chunk: [r.numpy() for r in self._seeded_fn(
            chunk, tf.constant(idx[lo:lo + chunk[0].shape[0]], tf.int32),
            tf.constant(w[lo:lo + chunk[0].shape[0]], tf.float32))], xs)
        result = [np.concatenate([p[i] for p in parts]).reshape(n, k, *xs[i].shape[1:])
                  for i in range(len(xs))]
        return result[0] if len(result) == 1 else result

    def _seeded(self, xs, indices, weights):
        return self._backward(xs, None, seeds=(indices, weights))[0]

    # ---------------------------------------------------------------- parameters
    @_specializes
    def parameter_relevance(self, x, target=None, per: str = "entry") -> dict:
        """The relevance of the model's own parameters, summed over ``x``'s samples.

        The share ``a_j w'_jk / z'_k R_k`` a rule gives input ``j`` of output ``k`` belongs to
        the weight ``w_jk`` that carries it (``w'``: the rule's modified weight: ``w+`` under
        z+, ``w + gamma w+`` under gamma ...); summed over positions and samples it is that
        kernel entry's relevance, and ``b'_k / z'_k R_k`` the bias's. Per output unit, kernel
        plus bias relevance is the relevance at the unit's output wherever the rule conserves
        (no stabilizer). Folded BatchNormalization and multi-kernel layers are one linear map:
        their parameters are those of the map they compute (the folded / effective kernel).

        Parameters
        ----------
        x, target
            As for ``__call__``.
        per
            ``"entry"``: per layer, ``{"kernel": array of the kernel's shape, "bias": array
            of the bias's shape}``; ``"filter"``: per layer, one value per output channel or
            unit (its kernel and bias relevance summed).

        Returns
        -------
        dict
            Layer name (a folded pair by its first layer's name) -> relevance. Layers whose
            rule does not propagate through their weights (recurrent cells, attention
            products) are absent.
        """
        if per not in ("entry", "filter"):
            raise InputError(f"per must be 'entry' or 'filter', got {per!r}")
        if self._parameters_fn is None:
            self._parameters_fn = _traced(self._parameters)
        xs = self._prepare(x)
        t = self._targets(target, xs[0].shape[0])
        totals: dict = {}
        for lo in range(0, xs[0].shape[0], self.batch_size or xs[0].shape[0]):
            chunk = [tf.convert_to_tensor(a[lo:lo + (self.batch_size or len(a))]) for a in xs]
            out = self._parameters_fn(chunk, tf.constant(t[lo:lo + chunk[0].shape[0]]))
            for name, parts in out.items():
                parts = {k: [v.numpy() for v in vs] if isinstance(vs, list) else vs.numpy()
                         for k, vs in parts.items()}
                if name not in totals:
                    totals[name] = parts
                else:
                    for k, v in parts.items():
                        totals[name][k] = [a + b for a, b in zip(totals[name][k], v)] \
                            if isinstance(v, list) else totals[name][k] + v
        result = {}
        for node in self.graph.nodes:
            if node.name not in totals:
                continue
            parts = totals[node.name]
            kernels = parts.get("kernel", [])
            units = parts["units"]
            bias = parts.get("bias", np.zeros_like(units))
            name = node.name.split("+")[0]
            if per == "entry":
                result[name] = {"kernel": kernels[0] if len(kernels) == 1 else kernels,
                                "bias": bias}
            else:
                result[name] = units + bias
        return result

    def _parameters(self, xs, targets):
        collected: dict = {}
        self._backward(xs, targets, parameters=collected)
        return collected
