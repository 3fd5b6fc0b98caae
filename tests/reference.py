"""Independent float64 numpy reference for the LRP rules of tf_lrp (tests only).

Every layer is turned into explicit matrices acting on flattened (C-order, channels-last)
per-sample vectors: a convolution is unfolded by pushing unit vectors through a plain loop
implementation, so each rule reduces to the matrix formulas of the rule semantics::

    z_k = sum_j a_j W_jk + b_k,     R_j = sum over terms of  m_j * sum_k rho(W)_jk * s_k

This module deliberately does not import ``tf_lrp``: it is the ground truth the engine is
compared with. Shapes: activations ``a`` are ``(N, n_in)``, relevances ``R`` are ``(N, n_out)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Array = np.ndarray


# ----------------------------------------------------------------------------- helpers


def pos(x: Array) -> Array:
    """x+ = max(x, 0)."""
    return np.maximum(x, 0.0)


def neg(x: Array) -> Array:
    """x- = min(x, 0)."""
    return np.minimum(x, 0.0)


def sign_plus(z: Array) -> Array:
    """+1 where z >= 0, -1 where z < 0."""
    return np.where(z >= 0, 1.0, -1.0)


def safe_divide(r: Array, d: Array) -> Array:
    """r / d with the zero guard: 0 where d == 0 exactly."""
    d = np.asarray(d, dtype=np.float64)
    zero = d == 0
    return np.where(zero, 0.0, r / np.where(zero, 1.0, d))


def assert_relevance_close(got, want, rtol: float = 1e-5, atol_scale: float = 1e-5) -> None:
    """Elementwise comparison: ``rtol`` relative, plus an absolute slack scaled by max |want|.

    The absolute slack covers entries that are tiny through cancellation (float32 engine vs
    float64 reference); it is ``atol_scale`` times the largest reference magnitude.
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    atol = atol_scale * max(float(np.max(np.abs(want), initial=0.0)), 1e-12)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def randomize_weights(model, seed: int, bias_scale: float = 0.5):
    """Seeded random weights for a Keras model (duck-typed: no keras import here).

    Kernels ~ N(0, 1/fan_in) with fan_in the product of all but the last axis; 1-D weights
    (biases) ~ N(0, bias_scale^2), hence nonzero. Returns the model.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "layers"):  # nested model
            randomize_weights(layer, int(rng.integers(1 << 30)), bias_scale)
            continue
        values = []
        for w in layer.weights:
            shape = tuple(w.shape)
            scale = bias_scale if len(shape) == 1 else 1.0 / np.sqrt(np.prod(shape[:-1]))
            values.append(rng.normal(0.0, scale, shape).astype(w.dtype))
        if values:
            layer.set_weights(values)
    return model


# ----------------------------------------------------------------------------- loop ops


def _out_and_pad(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """Output length and leading padding of a TF/Keras 'valid' or 'same' window op."""
    if padding == "valid":
        return (n - k) // s + 1, 0
    if padding == "same":
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return out, total // 2
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def _windows(hw: tuple[int, int], pool: tuple[int, int], strides: tuple[int, int], padding: str):
    """Yield ``((i, j), [(r, c), ...])``: every output position and its valid input positions."""
    (h, w), (ph, pw), (sh, sw) = hw, pool, strides
    oh, top = _out_and_pad(h, ph, sh, padding)
    ow, left = _out_and_pad(w, pw, sw, padding)
    for i in range(oh):
        for j in range(ow):
            cells = [
                (i * sh + di - top, j * sw + dj - left)
                for di in range(ph)
                for dj in range(pw)
                if 0 <= i * sh + di - top < h and 0 <= j * sw + dj - left < w
            ]
            yield (i, j), cells


def _out_hw(hw, pool, strides, padding) -> tuple[int, int]:
    oh, _ = _out_and_pad(hw[0], pool[0], strides[0], padding)
    ow, _ = _out_and_pad(hw[1], pool[1], strides[1], padding)
    return oh, ow


def conv2d_loop(x: Array, kernel: Array, bias: Array, strides=(1, 1), padding="valid") -> Array:
    """Plain-loop 2D convolution (cross-correlation) of one sample ``x (H, W, Cin)``.

    ``kernel (kh, kw, Cin, Cout)`` as in Keras; zero padding is 'absent' (skipped).
    """
    kh, kw, _, cout = kernel.shape
    oh, top = _out_and_pad(x.shape[0], kh, strides[0], padding)
    ow, left = _out_and_pad(x.shape[1], kw, strides[1], padding)
    out = np.zeros((oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    r, c = i * strides[0] + di - top, j * strides[1] + dj - left
                    if 0 <= r < x.shape[0] and 0 <= c < x.shape[1]:
                        out[i, j] += x[r, c] @ kernel[di, dj]
            out[i, j] += bias
    return out


def depthwise2d_loop(x: Array, kernel: Array, bias: Array, strides=(1, 1), padding="valid") -> Array:
    """Plain-loop depthwise convolution; ``kernel (kh, kw, Cin, M)``, out channel = c * M + m."""
    kh, kw, cin, mult = kernel.shape
    expanded = np.zeros((kh, kw, cin, cin * mult))
    for c in range(cin):
        expanded[:, :, c, c * mult : (c + 1) * mult] = kernel[:, :, c, :]
    return conv2d_loop(x, expanded, bias, strides, padding)


def unfold(fn: Callable[[Array], Array], in_shape: Sequence[int]) -> tuple[Array, Array]:
    """Explicit matrix of an affine per-sample map: ``fn(x).ravel() == x.ravel() @ W + b``.

    Rows are obtained by pushing unit vectors through ``fn`` (bias removed).
    """
    n_in = int(np.prod(in_shape))
    b = np.asarray(fn(np.zeros(in_shape)), dtype=np.float64).ravel()
    rows = []
    for idx in range(n_in):
        e = np.zeros(n_in)
        e[idx] = 1.0
        rows.append(np.asarray(fn(e.reshape(in_shape)), dtype=np.float64).ravel() - b)
    return np.stack(rows), b


# ----------------------------------------------------------------------------- layers


@dataclass
class Linear:
    """Affine layer ``z = a @ W + b`` with ``W = K_1 @ K_2 @ ...`` (one factor per kernel).

    Rules modify the effective ``W``, not the factors.

    ``structures`` holds, per factor, the 0/1 matrix of connections the kernel actually makes
    (used by Flat). ``fixed_rule`` is set for weightless linear layers (average pooling).
    """

    factors: list[Array]
    bias: Array
    structures: list[Array]
    activation: str | None = None
    fixed_rule: object | None = None
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    @property
    def W(self) -> Array:
        """The effective matrix: the product of the factors."""
        out = self.factors[0]
        for k in self.factors[1:]:
            out = out @ k
        return out

    def rho(self, fn: Callable[[Array], Array]) -> Array:
        """``fn`` applied to the effective matrix (rules act on the layer's effective linear map;
        ``(D P)+`` is not ``D+ P+``)."""
        return fn(self.W)

    def rho_structure(self) -> Array:
        """0/1 matrix of the connections the effective map makes."""
        out = self.structures[0]
        for s in self.structures[1:]:
            out = out @ s
        return (out != 0).astype(np.float64)

    def preactivation(self, a: Array) -> Array:
        return a @ self.W + self.bias

    def forward(self, a: Array) -> Array:
        return activate(self.preactivation(a), self.activation)

    def relevance(self, rule, a: Array, R: Array) -> Array:
        return (self.fixed_rule or rule).relevance(self, a, R)


@dataclass
class MaxPool2D:
    """Max pooling on flattened ``(H, W, C)`` samples; relevance goes to the (first) winner."""

    in_shape: tuple[int, int, int]
    pool: tuple[int, int]
    strides: tuple[int, int]
    padding: str = "valid"
    activation: str | None = None
    out_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.out_shape = (*_out_hw(self.in_shape[:2], self.pool, self.strides, self.padding),
                          self.in_shape[2])

    def _winners(self, a: Array) -> Array:
        """Index (into the flat input) of the winner of every flat output, per sample."""
        h, w, c = self.in_shape
        x = a.reshape((a.shape[0], h, w, c))
        win = np.zeros((a.shape[0], *self.out_shape), dtype=np.int64)
        for (i, j), cells in _windows((h, w), self.pool, self.strides, self.padding):
            flat_cells = np.array([(r * w + cc) * c for r, cc in cells])
            vals = np.stack([x[:, r, cc, :] for r, cc in cells], axis=1)  # (N, cells, C)
            best = np.argmax(vals, axis=1)  # first maximum in row-major window order
            win[:, i, j, :] = flat_cells[best] + np.arange(c)
        return win.reshape(a.shape[0], -1)

    def forward(self, a: Array) -> Array:
        out = np.take_along_axis(a, self._winners(a), axis=1)
        return activate(out, self.activation)

    def relevance(self, rule, a: Array, R: Array) -> Array:
        out = np.zeros_like(a, dtype=np.float64)
        win = self._winners(a)
        for n in range(a.shape[0]):
            np.add.at(out[n], win[n], R[n])
        return out


def activate(z: Array, activation: str | None) -> Array:
    if activation in (None, "linear"):
        return z
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "tanh":
        return np.tanh(z)
    if activation in ("swish", "silu"):
        return z / (1.0 + np.exp(-z))
    raise ValueError(f"unsupported activation {activation!r}")


def _structure(fn: Callable[[Array], Array], kernel: Array, in_shape) -> Array:
    """0/1 connection matrix of a kernel: unfold with an all-ones kernel."""
    m, _ = unfold(lambda x: fn(x, np.ones_like(kernel)), in_shape)
    return (m != 0).astype(np.float64)


def dense(kernel: Array, bias: Array | None = None, activation: str | None = None) -> Linear:
    """Dense layer; ``kernel (n_in, n_out)`` as in Keras."""
    kernel = np.asarray(kernel, dtype=np.float64)
    bias = np.zeros(kernel.shape[1]) if bias is None else np.asarray(bias, dtype=np.float64)
    return Linear([kernel], bias, [np.ones_like(kernel)], activation,
                  in_shape=(kernel.shape[0],), out_shape=(kernel.shape[1],))


def _conv_layer(op, kernels, bias, in_shape, activation) -> Linear:
    """Chain of bias-free loop ops (one per kernel), then a single bias."""
    factors, structures, shape = [], [], tuple(in_shape)
    for kernel in kernels:
        kernel = np.asarray(kernel, dtype=np.float64)
        m, _ = unfold(lambda x, k=kernel, f=op: f(x, k), shape)
        factors.append(m)
        structures.append(_structure(op, kernel, shape))
        shape = op(np.zeros(shape), kernel).shape
    bias = np.zeros(shape[-1]) if bias is None else np.asarray(bias, dtype=np.float64)
    full_bias = np.broadcast_to(bias, shape).ravel().copy()
    return Linear(factors, full_bias, structures, activation, in_shape=tuple(in_shape),
                  out_shape=tuple(shape))


def conv2d(kernel, bias, in_shape, strides=(1, 1), padding="valid", activation=None) -> Linear:
    """Conv2D, ``kernel (kh, kw, Cin, Cout)``, ``in_shape (H, W, Cin)``."""

    def op(x, k):
        return conv2d_loop(x, k, np.zeros(k.shape[-1]), strides, padding)

    return _conv_layer(op, [kernel], bias, in_shape, activation)


def conv1d(kernel, bias, in_shape, stride=1, padding="valid", activation=None) -> Linear:
    """Conv1D, ``kernel (k, Cin, Cout)``, ``in_shape (L, Cin)`` (as a 2D conv of height 1)."""
    length, cin = in_shape

    def op(x, k):
        y = conv2d_loop(x.reshape(1, length, cin), k[None], np.zeros(k.shape[-1]),
                        (1, stride), padding)
        return y[0]

    return _conv_layer(op, [kernel], bias, in_shape, activation)


def depthwise_conv2d(kernel, bias, in_shape, strides=(1, 1), padding="valid",
                     activation=None) -> Linear:
    """DepthwiseConv2D, ``kernel (kh, kw, Cin, M)``."""

    def op(x, k):
        return depthwise2d_loop(x, k, np.zeros(k.shape[2] * k.shape[3]), strides, padding)

    return _conv_layer(op, [kernel], bias, in_shape, activation)


def separable_conv2d(depthwise_kernel, pointwise_kernel, bias, in_shape, strides=(1, 1),
                     padding="valid", activation=None) -> Linear:
    """SeparableConv2D: depthwise (strided, padded) then 1x1 pointwise, one bias at the end.

    Two factors; every rule applies rho to their product (the effective map).
    """
    dw_shape = depthwise_kernel.shape

    def op(x, k):
        if k.shape == dw_shape:
            return depthwise2d_loop(x, k, np.zeros(k.shape[2] * k.shape[3]), strides, padding)
        return conv2d_loop(x, k, np.zeros(k.shape[-1]))

    return _conv_layer(op, [depthwise_kernel, pointwise_kernel], bias, in_shape, activation)


def _pool_matrix(in_shape, pool, strides, padding) -> tuple[Array, tuple[int, int, int]]:
    """Average pooling matrix (padding excluded from the count, as TF does)."""
    h, w, c = in_shape
    oh, ow = _out_hw((h, w), pool, strides, padding)
    m = np.zeros((h * w * c, oh * ow * c))
    for (i, j), cells in _windows((h, w), pool, strides, padding):
        for r, cc in cells:
            for ch in range(c):
                m[(r * w + cc) * c + ch, (i * ow + j) * c + ch] = 1.0 / len(cells)
    return m, (oh, ow, c)


def average_pooling2d(in_shape, pool=(2, 2), strides=None, padding="valid",
                      activation=None) -> Linear:
    """AveragePooling2D: a fixed matrix, always explained by LRP-0 (zero guard)."""
    m, out_shape = _pool_matrix(in_shape, pool, strides or pool, padding)
    return Linear([m], np.zeros(m.shape[1]), [(m != 0).astype(float)], activation,
                  fixed_rule=Zero(), in_shape=tuple(in_shape), out_shape=out_shape)


def global_average_pooling2d(in_shape, activation=None) -> Linear:
    h, w, c = in_shape
    m, _ = _pool_matrix(in_shape, (h, w), (h, w), "valid")
    return Linear([m], np.zeros(c), [(m != 0).astype(float)], activation, fixed_rule=Zero(),
                  in_shape=tuple(in_shape), out_shape=(c,))


# ----------------------------------------------------------------------------- rules


@dataclass
class Epsilon:
    epsilon: float = 1e-6
    bias: bool = True

    def relevance(self, layer: Linear, a: Array, R: Array) -> Array:
        W = layer.W
        z = a @ W + (layer.bias if self.bias else 0.0)
        s = safe_divide(R, z + self.epsilon * sign_plus(z))
        return a * (s @ W.T)


def Zero() -> Epsilon:  # noqa: N802 - mirrors the rule's class name
    """LRP-0: epsilon 0 with the bias; only the zero guard protects the division."""
    return Epsilon(epsilon=0.0, bias=True)


@dataclass
class Gamma:
    """Generalized gamma (Andeol et al. 2021): per output, the pair of terms that pushes ``z``
    away from zero is amplified, with its own denominator."""

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def relevance(self, layer: Linear, a: Array, R: Array) -> Array:
        g = self.gamma
        w_up = layer.rho(lambda k: k + g * pos(k))
        w_dn = layer.rho(lambda k: k + g * neg(k))
        b = layer.bias
        z = a @ layer.W + b
        out = np.zeros_like(a, dtype=np.float64)
        for mask, w_a, w_b, bias in ((z >= 0, w_up, w_dn, b + g * pos(b)),
                                     (z < 0, w_dn, w_up, b + g * neg(b))):
            d = pos(a) @ w_a + neg(a) @ w_b + bias
            s = safe_divide(np.where(mask, R, 0.0), d + self.stabilizer * sign_plus(d))
            out += pos(a) * (s @ w_a.T) + neg(a) * (s @ w_b.T)
        return out


@dataclass
class AlphaBeta:
    alpha: float = 2.0
    beta: float = 1.0
    bias: bool = False

    def relevance(self, layer: Linear, a: Array, R: Array) -> Array:
        wp, wn = layer.rho(pos), layer.rho(neg)
        ap, an = pos(a), neg(a)
        zp = ap @ wp + an @ wn + (pos(layer.bias) if self.bias else 0.0)
        zn = ap @ wn + an @ wp + (neg(layer.bias) if self.bias else 0.0)
        sp, sn = safe_divide(R, zp), safe_divide(R, zn)
        rp = ap * (sp @ wp.T) + an * (sp @ wn.T)
        rn = ap * (sn @ wn.T) + an * (sn @ wp.T)
        return self.alpha * rp - self.beta * rn


def ZPlus() -> AlphaBeta:  # noqa: N802 - mirrors the rule's class name
    return AlphaBeta(alpha=1.0, beta=0.0, bias=False)


@dataclass
class ZBox:
    """z^B rule; ``low``/``high`` are scalars or arrays broadcastable to the layer's input."""

    low: float | Array
    high: float | Array

    @staticmethod
    def _bound(value, layer: Linear) -> Array:
        shape = layer.in_shape or (layer.W.shape[0],)
        return np.broadcast_to(np.asarray(value, dtype=np.float64), shape).reshape(1, -1)

    def relevance(self, layer: Linear, a: Array, R: Array) -> Array:
        W, wp, wn = layer.W, layer.rho(pos), layer.rho(neg)
        low, high = self._bound(self.low, layer), self._bound(self.high, layer)
        z = a @ W - low @ wp - high @ wn
        s = safe_divide(R, z)
        return a * (s @ W.T) - low * (s @ wp.T) - high * (s @ wn.T)


@dataclass
class WSquare:
    def matrix(self, layer: Linear) -> Array:
        return layer.rho(np.square)

    def relevance(self, layer: Linear, a: Array, R: Array) -> Array:
        m = self.matrix(layer)
        s = safe_divide(R, m.sum(axis=0, keepdims=True))
        return s @ m.T


@dataclass
class Flat(WSquare):
    def matrix(self, layer: Linear) -> Array:
        return layer.rho_structure()


# ----------------------------------------------------------------------------- chains

LayerLike = Linear | MaxPool2D | tuple


def as_layer(layer: LayerLike):
    """Accept ``(matrix, bias, activation)`` tuples as dense layers."""
    if isinstance(layer, tuple):
        return dense(*layer)
    return layer


def forward_chain(layers: Sequence[LayerLike], x: Array) -> list[Array]:
    """Activations ``[input, out_1, ..., out_L]``, each flattened to ``(N, n)``."""
    x = np.asarray(x, dtype=np.float64)
    acts = [x.reshape(x.shape[0], -1)]
    for layer in map(as_layer, layers):
        acts.append(layer.forward(acts[-1]))
    return acts


def start_relevance(output: Array, target=None, start: str = "output") -> Array:
    """Relevance at the model output ``(N, K)``.

    ``"output"``: ``output * one_hot(target)``; ``"all"``: the whole output;
    ``"logodds"`` (Montavon et al. 2019, sec. 10): ``R_c = z_c`` and ``R_k = -q_k z_k`` for
    ``k != c`` with ``q = softmax`` over the other logits, so ``sum R = sum_k q_k (z_c - z_k)``.
    """
    output = np.asarray(output, dtype=np.float64)
    if start == "all":
        return output.copy()
    if target is None:
        target = np.argmax(output, axis=1)
    target = np.broadcast_to(np.asarray(target), (output.shape[0],))
    mask = np.zeros_like(output)
    mask[np.arange(output.shape[0]), target] = 1.0
    if start == "output":
        return output * mask
    if start == "logodds":
        others = np.where(mask > 0, -np.inf, output)
        q = np.exp(others - others.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        return output * (mask - q)
    raise ValueError(f"unknown start {start!r}")


def lrp_chain(layers: Sequence[LayerLike], x: Array, start_R, rules=None,
              return_all: bool = False):
    """Expected LRP relevance of a sequential model.

    Parameters
    ----------
    layers
        ``Linear``/``MaxPool2D`` objects or ``(matrix, bias, activation)`` tuples, in order.
        The activation of a layer is split off: relevance passes through it unchanged.
    x
        Input batch ``(N, ...)``.
    start_R
        Relevance at the output ``(N, n_out)``, or a callable ``output -> relevance``.
    rules
        One rule object for every layer, or a list with one entry per layer (``None`` for
        weightless layers). Layers with a ``fixed_rule`` ignore it.
    return_all
        Also return the relevance at every layer's output (post-activation), in order.

    Returns
    -------
    Relevance at the input, flattened ``(N, n_in)`` (and the per-layer list if asked).
    """
    layers = [as_layer(layer) for layer in layers]
    if rules is None or not isinstance(rules, list | tuple):
        rules = [rules] * len(layers)
    acts = forward_chain(layers, x)
    R = start_R(acts[-1]) if callable(start_R) else np.asarray(start_R, dtype=np.float64)
    per_layer = [R]
    for layer, a, rule in zip(reversed(layers), reversed(acts[:-1]), reversed(rules),
                              strict=True):
        R = layer.relevance(rule, a, R)
        per_layer.append(R)
    per_layer = per_layer[::-1]  # per_layer[0] is the input relevance
    if return_all:
        return R, per_layer[1:]
    return R
