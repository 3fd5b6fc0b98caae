"""Recurrent layers: SimpleRNN, LSTM and GRU unrolled in the traced function, and their LRP.

The forward pass runs each recurrent layer as a ``tf.scan`` over time (one trace for every
sequence length) with the layer's own weights and activations, and keeps the values the
backward pass needs (states, gates, pre-activations). It reproduces Keras's output, including
masking (a masked step keeps the previous state), ``go_backwards`` and ``return_state``.

Relevance follows Arras et al. (2017), "Explaining recurrent neural network predictions in
sentiment analysis", and Arras et al. (2019), "Explaining and interpreting LSTMs":

* a **gate** (input, forget, output gate of an LSTM; update and reset gate of a GRU) receives no
  relevance: all of a gated product goes to the signal ("signal-take-all");
* a **sum of states** (the LSTM cell ``c_t = f c_{t-1} + i g``, the GRU state
  ``h_t = z h_{t-1} + (1 - z) hh``) shares relevance in proportion to its summands, with the
  denominator stabilised by the epsilon of the layer's rule when it is an epsilon rule;
* elementwise activations (``tanh`` of the candidate and of the cell) pass relevance unchanged;
* the **linear map** into the candidate (input kernel and recurrent kernel with bias,
  ``[x_t, h_{t-1}] -> z``) takes the layer's rule, whatever it is (epsilon by default in every
  composite; any rule through :class:`tf_lrp.composites.LayerMap` on the layer class), applied
  per time step to the concatenated input.

Relevance at a masked step passes to the previous state unchanged. Bidirectional layers are
expanded into their two recurrent layers and a merge by :mod:`tf_lrp.canonizers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import keras
import tensorflow as tf
from keras import layers as kl

from tf_lrp import keras_adapter
from tf_lrp.layers import Linear
from tf_lrp.rules import Epsilon, Rule
from tf_lrp.rules.base import Facts
from tf_lrp.rules.propagation import Context, stabilize

Tensor = tf.Tensor

#: The recurrent layer classes tf_lrp unrolls (Bidirectional wrappers of them too).
RECURRENT = (kl.SimpleRNN, kl.LSTM, kl.GRU)
_CELLS = {kl.SimpleRNN: kl.SimpleRNNCell, kl.LSTM: kl.LSTMCell, kl.GRU: kl.GRUCell}
#: What the forward keeps per step for the backward (each ``(batch, units)``), per cell kind.
_SAVED = {"lstm": ("h_prev", "c_prev", "i", "f", "g", "zg", "c"),
          "gru": ("h_prev", "z", "r", "hh", "a", "h"),
          "simple": ("h_prev", "a")}


def _supported_text() -> str:
    return ("supported: keras.layers.SimpleRNN, LSTM, GRU (also in Bidirectional) with their own "
            "cells, stateful=False")


def check_layer(layer) -> str | None:
    """Why ``layer`` (an RNN layer) cannot be explained, or ``None`` if it can."""
    kind = type(layer).__name__
    if not isinstance(layer, RECURRENT):
        if isinstance(layer, kl.RNN):
            cell = type(getattr(layer, "cell", None)).__name__
            return (f"is a keras.layers.RNN with cell {cell}, whose gates tf_lrp does not know "
                    f"({_supported_text()})")
        return None
    if type(layer.cell) is not _CELLS[type(layer)]:
        return (f"is a {kind} with the custom cell {type(layer.cell).__name__} "
                f"({_supported_text()})")
    if layer.stateful:
        return (f"is a stateful {kind}: its state carries over between batches, so an "
                "explanation would depend on what was explained before. Fix: rebuild the model "
                "with stateful=False (the weights load unchanged) and pass the state as "
                f"initial_state ({_supported_text()})")
    if isinstance(layer, kl.GRU) and layer.cell.implementation not in (1, 2):
        return f"is a GRU with implementation={layer.cell.implementation} ({_supported_text()})"
    return None


@dataclass
class Recurrent:
    """One recurrent layer, unrolled (see the module docstring).

    Parameters
    ----------
    layer
        The Keras SimpleRNN, LSTM or GRU layer.
    flip_output
        Reverse the time axis of a sequence output back to input order (the backward layer of
        a Bidirectional wrapper does this).
    initial_states
        How many initial-state tensors the node reads after the sequence.
    mask_input
        Whether the node's last input is the mask (Keras passes the mask of a ``mask_zero``
        embedding as a tensor); otherwise the mask attached to the sequence is used, if any.
    """

    layer: keras.layers.Layer
    flip_output: bool = False
    initial_states: int = 0
    mask_input: bool = False

    @property
    def kind(self) -> str:
        return {kl.LSTM: "lstm", kl.GRU: "gru"}.get(type(self.layer), "simple")

    @property
    def n_states(self) -> int:
        return 2 if self.kind == "lstm" else 1

    # ------------------------------------------------------------ forward
    def _weights(self):
        cell = self.layer.cell
        w = tf.convert_to_tensor(cell.kernel)
        u = tf.convert_to_tensor(cell.recurrent_kernel)
        b = None if not cell.use_bias else tf.convert_to_tensor(cell.bias)
        return w, u, b

    def forward(self, values: Sequence[Tensor]) -> tuple[list[Tensor], dict]:
        """The layer's outputs on ``values`` (sequence, then initial states), and what the
        backward pass needs."""
        layer, cell = self.layer, self.layer.cell
        x = values[0]
        mask = values[-1] if self.mask_input else keras_adapter.mask_of(x)
        batch = tf.shape(x)[0]
        units = cell.units
        states = list(values[1:1 + self.initial_states])
        if not states:
            states = [tf.zeros((batch, units), x.dtype) for _ in range(self.n_states)]
        xs = tf.transpose(x, [1, 0, 2])  # time-major
        ms = None if mask is None else tf.transpose(tf.cast(mask, tf.bool), [1, 0])
        if layer.go_backwards:
            xs = tf.reverse(xs, [0])
            ms = None if ms is None else tf.reverse(ms, [0])
        w, u, b = self._weights()
        act, rec = cell.activation, getattr(cell, "recurrent_activation", None)
        kind = self.kind
        if kind == "gru":
            b_in, b_rec = (None, None) if b is None else (
                (b, None) if not cell.reset_after else (b[0], b[1]))
        xw = tf.einsum("tbf,fk->tbk", xs, w)
        if b is not None and kind != "gru":
            xw = xw + b
        elif kind == "gru" and b_in is not None:
            xw = xw + b_in

        def step(carry, elems):
            h, c = carry["h"], carry.get("c")
            xw_t, m_t = elems["xw"], elems.get("m")
            saved = {"h_prev": h}
            if kind == "lstm":
                z = xw_t + tf.matmul(h, u)
                zi, zf, zg, zo = tf.split(z, 4, axis=-1)
                i, f, o, g = rec(zi), rec(zf), rec(zo), act(zg)
                c_new = f * c + i * g
                h_new = o * act(c_new)
                saved.update(c_prev=c, i=i, f=f, g=g, zg=zg, c=c_new)
            elif kind == "gru":
                xz, xr, xh = tf.split(xw_t, 3, axis=-1)
                uz, ur, uh = tf.split(u, 3, axis=-1)
                rz, rr = tf.matmul(h, uz), tf.matmul(h, ur)
                if b_rec is not None:
                    brz, brr, brh = tf.split(b_rec, 3, axis=-1)
                    rz, rr = rz + brz, rr + brr
                zt, r = rec(xz + rz), rec(xr + rr)
                if cell.reset_after:
                    rh = tf.matmul(h, uh)
                    if b_rec is not None:
                        rh = rh + brh
                    a = xh + r * rh
                else:
                    a = xh + tf.matmul(r * h, uh)
                hh = act(a)
                h_new = zt * h + (1.0 - zt) * hh
                saved.update(z=zt, r=r, hh=hh, a=a, h=h_new)
            else:
                a = xw_t + tf.matmul(h, u)
                h_new = act(a)
                saved.update(a=a)
            if m_t is not None:
                keep = m_t[:, None]
                h_new = tf.where(keep, h_new, h)
                if kind == "lstm":
                    c_new = tf.where(keep, c_new, c)
            out = {"h": h_new, **({"c": c_new} if kind == "lstm" else {}), "saved": saved}
            return out

        elems = {"xw": xw, **({"m": ms} if ms is not None else {})}
        init = {"h": states[0], **({"c": states[1]} if kind == "lstm" else {})}
        zero_saved = {name: tf.zeros((batch, units), x.dtype) for name in _SAVED[kind]}
        scanned = tf.scan(step, elems, initializer={**init, "saved": zero_saved})
        hs = scanned["h"]  # (T, B, U)
        if layer.zero_output_for_mask and ms is not None:
            outs_seq = tf.where(ms[:, :, None], hs, tf.zeros_like(hs))
            last = outs_seq[-1]
        else:
            outs_seq, last = hs, hs[-1]
        if layer.return_sequences:
            seq = tf.transpose(outs_seq, [1, 0, 2])
            output = tf.reverse(seq, [1]) if self.flip_output else seq
        else:
            output = last
        final = [hs[-1]] + ([scanned["c"][-1]] if kind == "lstm" else [])
        outs = [output, *final] if layer.return_state else [output]
        saved = dict(scanned["saved"], xs=xs, ms=ms, h_all=hs)
        return outs, saved

    # ------------------------------------------------------------ backward
    def relevance(self, ctx: Context, rule: Rule) -> list[Tensor]:
        """Relevance at the layer's inputs (sequence, initial states) from that at its outputs."""
        layer = self.layer
        saved = ctx.saved
        xs, ms, kind = saved["xs"], saved["ms"], self.kind
        r_out = ctx.relevance
        steps = tf.shape(xs)[0]
        hs = saved["h_all"]
        # relevance arriving at each step's output
        if layer.return_sequences:
            r_seq = r_out[0]
            if self.flip_output:
                r_seq = tf.reverse(r_seq, [1])
            r_steps = tf.transpose(r_seq, [1, 0, 2])
        else:
            r_steps = tf.tensor_scatter_nd_update(
                tf.zeros_like(hs), [[steps - 1]], r_out[0][None])
        if layer.zero_output_for_mask and ms is not None:
            r_steps = tf.where(ms[:, :, None], r_steps, tf.zeros_like(r_steps))
        r_h = tf.zeros_like(hs[0])
        r_c = tf.zeros_like(hs[0])
        if layer.return_state:
            r_h = r_h + r_out[1]
            if kind == "lstm":
                r_c = r_c + r_out[2]
        eps = rule.epsilon if isinstance(rule, Epsilon) else 0.0
        w, u, b = self._weights()
        linear_step = self._linear_step(rule, w, u, b, ctx)

        def back(carry, elems):
            r_h_t = carry["r_h"] + elems["r_out"]
            r_c_t = carry["r_c"]
            if kind == "lstm":
                r_c_t = r_c_t + r_h_t  # h = o * tanh(c): all to c (gate o: none)
                den = stabilize(elems["c"], eps)
                r_c_prev = tf.math.divide_no_nan(elems["f"] * elems["c_prev"], den) * r_c_t
                r_pre = tf.math.divide_no_nan(elems["i"] * elems["g"], den) * r_c_t
                r_x, r_h_prev = linear_step(elems, r_pre)
            elif kind == "gru":
                den = stabilize(elems["h"], eps)
                r_direct = tf.math.divide_no_nan(elems["z"] * elems["h_prev"], den) * r_h_t
                r_pre = tf.math.divide_no_nan((1.0 - elems["z"]) * elems["hh"], den) * r_h_t
                r_x, r_h_lin = linear_step(elems, r_pre)
                r_h_prev, r_c_prev = r_direct + r_h_lin, r_c_t
            else:
                r_x, r_h_prev = linear_step(elems, r_h_t)
                r_c_prev = r_c_t
            if "m" in elems:  # a masked step: the state passes through unchanged
                keep = elems["m"][:, None]
                r_x = tf.where(keep, r_x, tf.zeros_like(r_x))
                r_h_prev = tf.where(keep, r_h_prev, r_h_t)
                r_c_prev = tf.where(keep, r_c_prev, carry["r_c"])
            return {"r_h": r_h_prev, "r_c": r_c_prev, "r_x": r_x}

        elems = {n: saved[n] for n in _SAVED[kind]}
        elems.update(x=xs, r_out=r_steps)
        if ms is not None:
            elems["m"] = ms
        init = {"r_h": r_h, "r_c": r_c, "r_x": tf.zeros_like(xs[0])}
        out = tf.scan(back, elems, initializer=init, reverse=True)
        r_x = out["r_x"]
        if layer.go_backwards:
            r_x = tf.reverse(r_x, [0])
        r_x = tf.transpose(r_x, [1, 0, 2])
        first = tf.nest.map_structure(lambda t: t[0], out)
        r_states = [first["r_h"]] + ([first["r_c"]] if kind == "lstm" else [])
        return [r_x, *r_states[:self.initial_states]] + ([None] if self.mask_input else [])

    def _linear_step(self, rule: Rule, w: Tensor, u: Tensor, b: Tensor | None, ctx: Context
                     ) -> Callable[[dict, Tensor], tuple[Tensor, Tensor]]:
        """``(elems, R at the candidate's pre-activation) -> (R at x_t, R at h_{t-1})``: the
        layer's rule on the linear map ``[x_t, h_{t-1}] -> z`` of one step."""
        kind, cell, layer = self.kind, self.layer.cell, self.layer
        n_in = w.shape[0]
        units = cell.units
        if kind == "lstm":
            kernel = tf.concat([w[:, 2 * units:3 * units], u[:, 2 * units:3 * units]], 0)
            bias = None if b is None else b[2 * units:3 * units]
        elif kind == "simple":
            kernel, bias = tf.concat([w, u], 0), b
        else:
            w_h, u_h = w[:, 2 * units:], u[:, 2 * units:]
            if b is None:
                b_in = b_rec = None
            elif cell.reset_after:
                b_in, b_rec = b[0][2 * units:], b[1][2 * units:]
            else:
                b_in, b_rec = b[2 * units:], None

        def dense(x, k):
            return tf.matmul(x, k[0])

        def run(elems, r_pre):
            x_t, h_prev = elems["x"], elems["h_prev"]
            pre = elems["zg"] if kind == "lstm" else elems["a"]
            if kind == "gru":
                r = elems["r"]
                if cell.reset_after:
                    def apply(v, k, r=r):
                        return tf.matmul(v[:, :n_in], k[0]) + r * tf.matmul(v[:, n_in:], k[1])

                    kernels = [w_h, u_h]
                    u_in = tf.concat([x_t, h_prev], -1)
                    eff_bias = None if b_in is None else b_in + (
                        0.0 if b_rec is None else r * b_rec)
                    axis = None
                else:
                    def apply(v, k):
                        return tf.matmul(v, k[0])

                    kernels = [tf.concat([w_h, u_h], 0)]
                    u_in = tf.concat([x_t, r * h_prev], -1)  # the gate r passes no relevance
                    eff_bias, axis = b_in, 0
            else:
                apply, kernels, eff_bias, axis = dense, [kernel], bias, 0
                u_in = tf.concat([x_t, h_prev], -1)
            linear = Linear(layer=layer, kernels=lambda: kernels, bias=lambda: eff_bias,
                            apply=apply, scale_output=lambda k, s: k, input_axis=axis)
            node = SimpleNamespace(name=ctx.node.name, layer=layer, linear=linear,
                                   call=lambda v: [linear.add_bias(apply(v[0], kernels), eff_bias)])
            z0 = pre if eff_bias is None else pre - eff_bias
            step_ctx = Context(node, [u_in], [pre], [r_pre], [False], kernels, eff_bias, z0)
            r_in = rule(step_ctx)[0]
            return r_in[:, :n_in], r_in[:, n_in:]

        return run


class RecurrentRule(Rule):
    """A recurrent layer's LRP (module docstring) with ``inner`` on its linear maps."""

    zeros = "unknown"

    def __init__(self, inner: Rule):
        self.params = {"inner": inner}
        self.inner = inner

    def __call__(self, ctx: Context) -> list[Tensor]:
        return ctx.node.recurrent.relevance(ctx, self.inner)

    def check(self, node, facts: Facts) -> str | None:
        if not hasattr(self.inner, "groups"):
            return (f"{self.inner!r} is not a rule for layers with weights; map a rule such as "
                    "rules.Epsilon() or rules.Gamma() to the recurrent layer")
        return None

    def __repr__(self) -> str:
        return f"Recurrent({self.inner!r})"


__all__ = ["RECURRENT", "Recurrent", "RecurrentRule", "check_layer"]
