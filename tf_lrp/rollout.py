"""Attention rollout (Abnar & Zuidema 2020): the attention-weights baseline for transformers.

Each attention layer's weights ``A_l`` (the softmax of its scores, averaged over heads) are
mixed with the residual stream, ``Â_l = (A_l + I) / 2`` (rows renormalised), and multiplied
from the first layer to the last: ``rollout = Â_L ... Â_1``. Row ``p`` is the attribution of
position ``p``'s output to every input token. It reads the attention weights from the
analyzer's own forward pass (the graph's ``AttentionSoftmax`` nodes, in layer order), so it
works on every model tf_lrp explains with attention parts: KerasHub encoders and decoders,
``MultiHeadAttention``. It ignores values, MLPs and the output layer, and so cannot tell which
output it explains beyond the position: the baseline every transformer user knows, not an
explanation of a logit.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tf_lrp.attention import AttentionSoftmax

__all__ = ["attention_rollout"]


def attention_rollout(analyzer, x) -> np.ndarray:
    """``(n, L, L)`` rollout matrices of the batch ``x`` (row ``p``: position ``p``'s
    attribution to the input positions), for models with one token sequence.

    Parameters
    ----------
    analyzer
        A :class:`tf_lrp.Analyzer` of the model (any composite: only the forward pass is used).
    x
        The model's inputs, as for the analyzer.
    """
    a = analyzer.for_input(x)
    nodes = [n for n in a.graph.nodes if isinstance(n.layer, AttentionSoftmax)]
    if not nodes:
        raise ValueError("the model has no attention softmax: attention rollout needs one")
    values, _ = a._forward([tf.convert_to_tensor(v) for v in a._prepare(x)])
    out = None
    for node in nodes:
        w = values[node.outputs[0]].numpy().astype(np.float64)  # (n, heads, L, S)
        w = w.mean(axis=1) if w.ndim == 4 else w
        mixed = 0.5 * w + 0.5 * np.eye(w.shape[-1])[None]
        mixed /= mixed.sum(-1, keepdims=True)
        out = mixed if out is None else mixed @ out
    return out.astype(np.float32)
