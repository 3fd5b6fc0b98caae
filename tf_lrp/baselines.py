"""Sampling-based attribution baselines: SmoothGrad, Integrated Gradients, and a random control.

They share the call signature of every analyzer, ``method(model)(x, target=None)``, and explain the
same output (the logits: a final softmax is stripped).

SmoothGrad and Integrated Gradients average the gradient over many inputs derived from each sample
(noisy copies; points on the path from a baseline). Inside the analyzer's one ``tf.function`` the
batch is tiled: ``count`` derived inputs of all ``B`` samples go through the model as one batch of
``count * B``. ``chunk_size`` caps ``count * B`` (peak memory); a ``tf.while_loop`` runs as many
passes as needed. The target is resolved on the clean input first, so ``target=None`` explains
the class the model predicts for ``x``, not for a noisy or interpolated copy.

Randomness is seeded and reproducible:

- :class:`SmoothGrad` draws its noise with stateless random ops from ``(seed, sample index k)``:
  the same input batch always gives the same explanation, whatever ``chunk_size``.
- :class:`Random` draws from a ``tf.random.Generator`` created (seeded) when the analyzer is
  built: successive calls (and the sub-batches of one call) get fresh values, and a new
  ``Random(model, seed=s)`` repeats the sequence.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lrp.base import BaseAnalyzer
from tf_lrp.gradients import Gradient

__all__ = ["IntegratedGradients", "Random", "SmoothGrad"]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _AveragedGradient(Gradient):
    """Mean gradient over ``n`` inputs derived from each sample (see the module docstring).

    Subclasses define :meth:`_points` (the derived inputs) and may override :meth:`_finish`.
    """

    def __init__(self, model, *, n: int, chunk_size: int, **kwargs):
        self._n = _check_positive_int("the number of samples/steps", n)
        self.chunk_size = _check_positive_int("chunk_size", chunk_size)
        super().__init__(model, **kwargs)

    def _points(self, xs, ks):
        """Derived inputs for indices ``ks`` (shape ``[count]``), as ``[count * B, ...]`` each."""
        raise NotImplementedError

    def _finish(self, xs, mean_gradients):
        return mean_gradients

    def _resolve_targets(self, xs, targets):
        y = self._predict(xs)
        return tf.where(targets < 0, tf.argmax(y, axis=1, output_type=tf.int32), targets)

    #: whether :meth:`_finish` returns gradients (multiplied by the embedding for tokens)
    _returns_gradient = True

    def _explain(self, xs, targets):
        targets = self._resolve_targets(xs, targets)
        zs = self._space(xs)  # embedding vectors for token inputs (see Gradient)
        batch = tf.shape(xs[0])[0]
        per_pass = tf.maximum(1, self.chunk_size // batch)
        n = self._n

        def body(start, sums):
            count = tf.minimum(per_pass, n - start)
            points = self._points(zs, tf.range(start, start + count))
            grads = self._gradient(points, tf.tile(targets, [count]),
                                   [_tile(x, count) for x in xs])
            new = []
            for s, g, z in zip(sums, grads, zs):
                g = tf.reshape(g, tf.concat([[count, batch], tf.shape(z)[1:]], axis=0))
                new.append(tf.ensure_shape(s + tf.reduce_sum(g, axis=0), z.shape))
            return start + count, new

        _, sums = tf.while_loop(lambda start, _: start < n, body,
                                (tf.constant(0), [tf.zeros_like(z) for z in zs]))
        out = self._finish(zs, [s / n for s in sums])
        return [self._to_input(i, z, r, self._returns_gradient)
                for i, (z, r) in enumerate(zip(zs, out))]


def _tile(x, count):
    """``[count * B, ...]``: ``count`` copies of the batch, copy-major (matches tiled targets)."""
    return tf.tile(x, tf.concat([[count], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))


class SmoothGrad(_AveragedGradient):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

    ``R = 1/n sum_k grad f_c(x + eps_k)``, ``eps_k ~ N(0, sigma^2)`` with
    ``sigma = noise_level * (max(x) - min(x))`` per sample (over all its features).

    Parameters
    ----------
    model
        A built ``keras.Model`` or a path to a model file.
    noise_level
        Noise standard deviation relative to each sample's value range (Smilkov et al.
        recommend 0.1-0.2). ``0`` gives the plain gradient.
    n_samples
        Number of noisy copies per sample.
    seed
        Seed of the noise; the same input batch always gives the same explanation.
    chunk_size
        Largest number of noisy inputs (batch x copies) in one forward/backward pass.
    **kwargs
        ``output``, ``batch_size``, ``jit_compile``: see :class:`~tf_lrp.base.BaseAnalyzer`.
    """

    def __init__(self, model, noise_level: float = 0.15, n_samples: int = 50, *, seed: int = 0,
                 chunk_size: int = 1024, **kwargs):
        if not np.isfinite(noise_level) or noise_level < 0:
            raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
        self.noise_level = float(noise_level)
        self.n_samples = _check_positive_int("n_samples", n_samples)
        self.seed = int(seed)
        super().__init__(model, n=n_samples, chunk_size=chunk_size, **kwargs)

    def _noise(self, x, ks, j: int):
        """Noise of shape ``[count, B, ...]``; copy ``k`` depends on ``(seed, j, k)`` only."""
        base = tf.constant([self.seed, j], tf.int64)

        def draw(k):
            seed = tf.random.experimental.stateless_fold_in(base, tf.cast(k, tf.int64))
            return tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype)

        return tf.map_fn(draw, ks, fn_output_signature=tf.TensorSpec(x.shape, x.dtype))

    def _points(self, xs, ks):
        count = tf.shape(ks)[0]
        out = []
        for j, x in enumerate(xs):
            flat = tf.reshape(x, (tf.shape(x)[0], -1))
            spread = tf.reduce_max(flat, axis=1) - tf.reduce_min(flat, axis=1)
            sigma = tf.reshape(self.noise_level * spread, [-1] + [1] * (x.shape.rank - 1))
            noisy = x[None] + sigma[None] * self._noise(x, ks, j)
            out.append(tf.reshape(noisy, tf.concat([[count * tf.shape(x)[0]], tf.shape(x)[1:]], 0)))
        return out


class IntegratedGradients(_AveragedGradient):
    """Integrated Gradients (Sundararajan et al. 2017), midpoint Riemann sum.

    ``R = (x - b) * 1/m sum_{k=0}^{m-1} grad f_c(b + a_k (x - b))``, ``a_k = (k + 1/2) / m``.
    Completeness: ``sum R ~ f_c(x) - f_c(b)``; for a ReLU network the integrand is piecewise
    constant along the path and the midpoint error is at most its total variation / (2 m).
    For a linear model the result is exactly ``(x - b) * w``. For token inputs the path runs
    in embedding space, from the zero embedding (``baseline=0``, a number: every embedding
    component) or from the embedding of ``baseline_token`` (e.g. the padding token), and a
    token's value is summed over the embedding axis.

    Parameters
    ----------
    model
        A built ``keras.Model`` or a path to a model file.
    steps
        Number of points ``m`` on the path.
    baseline
        The reference input ``b``: a number, an array broadcastable to one sample's shape, or
        ``"mean"`` (each sample's mean over all axes but the last, i.e. its mean colour for
        channels-last images; the mean of all features for ``(batch, features)`` inputs). A list gives one baseline per input of a multi-input model.
    baseline_token
        For models with token inputs: the token id whose embedding is the baseline (instead
        of ``baseline``).
    chunk_size
        Largest number of path points (batch x steps) in one forward/backward pass.
    **kwargs
        ``output``, ``batch_size``, ``jit_compile``: see :class:`~tf_lrp.base.BaseAnalyzer`.
    """

    _returns_gradient = False

    def __init__(self, model, steps: int = 50, baseline=0.0, *, baseline_token: int | None = None,
                 chunk_size: int = 1024, **kwargs):
        self.steps = _check_positive_int("steps", steps)
        super().__init__(model, n=steps, chunk_size=chunk_size, **kwargs)
        if baseline_token is not None and not self._tokens:
            raise ValueError("baseline_token is for models with token inputs (an Embedding "
                             "reading a model input); this model has none")
        self.baseline_token = None if baseline_token is None else int(baseline_token)
        n_inputs = len(self.graph.inputs)
        baselines = list(baseline) if isinstance(baseline, (list, tuple)) else [baseline] * n_inputs
        if len(baselines) != n_inputs:
            raise ValueError(f"got {len(baselines)} baselines for a model with {n_inputs} inputs")
        self.baseline = [
            _check_baseline(b, shape, dtype) if i not in self._tokens else float(b)
            for i, (b, shape, dtype) in enumerate(
                zip(baselines, self.graph.input_shapes, self.graph.input_dtypes))]

    def _baselines(self, xs):
        out = []
        for i, (b, x) in enumerate(zip(self.baseline, xs)):
            if i in self._tokens and self.baseline_token is not None:
                table = tf.convert_to_tensor(self._tokens[i].layer.embeddings)
                b = tf.cast(table[self.baseline_token], x.dtype)
            if isinstance(b, str):  # "mean"
                axes = list(range(1, x.shape.rank - 1)) if x.shape.rank > 2 else [1]
                b = tf.reduce_mean(x, axis=axes, keepdims=True)
            out.append(tf.broadcast_to(tf.cast(b, x.dtype), tf.shape(x)))
        return out

    def _points(self, xs, ks):
        alphas = (tf.cast(ks, xs[0].dtype) + 0.5) / self.steps
        count = tf.shape(ks)[0]
        out = []
        for x, b in zip(xs, self._baselines(xs)):
            a = tf.reshape(tf.repeat(alphas, tf.shape(x)[0]), [-1] + [1] * (x.shape.rank - 1))
            out.append(_tile(b, count) + a * _tile(x - b, count))
        return out

    def _finish(self, xs, mean_gradients):
        return [(x - b) * g for x, b, g in zip(xs, self._baselines(xs), mean_gradients)]


def _check_baseline(baseline, shape: tuple, dtype: str):
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be a number, an array or 'mean', got {baseline!r}")
        return baseline
    b = np.asarray(baseline, dtype=dtype)
    try:
        np.broadcast_shapes(b.shape, tuple(1 if d is None else d for d in shape))
    except ValueError:
        raise ValueError(
            f"baseline of shape {b.shape} does not broadcast to one sample of shape {shape}; "
            "pass a number, an array of the sample's shape, or 'mean'"
        ) from None
    if b.ndim > len(shape):
        raise ValueError(f"baseline of shape {b.shape} has more axes than one sample {shape}")
    if not np.isfinite(b).all():
        raise ValueError("baseline contains NaN or Inf")
    return b


class Random(BaseAnalyzer):
    """Uniform random relevance in [0, 1), independent of the model: the evaluation's control.

    Parameters
    ----------
    model
        A built ``keras.Model`` or a path (only its input shapes are used; ``predict`` works).
    seed
        Seed of the generator created here; a new ``Random(model, seed=s)`` repeats its values.
    **kwargs
        ``output``, ``batch_size``: see :class:`~tf_lrp.base.BaseAnalyzer`.
    """

    def __init__(self, model, *, seed: int = 0, **kwargs):
        self.seed = int(seed)
        self._generator = tf.random.Generator.from_seed(self.seed)
        super().__init__(model, **kwargs)

    def reseed(self) -> None:
        """Start the generator from the seed again: the next calls repeat the first ones'
        values (the randomisation cascade reseeds seeded methods before every step)."""
        self._generator.reset_from_seed(self.seed)

    def _explain(self, xs, targets):
        return [self._generator.uniform(tf.shape(x), dtype=x.dtype if x.dtype.is_floating
                                        else tf.float32) for x in xs]
