"""Conditions of Concept Relevance Propagation: the forms a user writes them in, as masks.

Conditions mask the relevance at a layer's output to chosen channels during the backward pass
(:meth:`tf_lrp.Analyzer.conditional`). This module turns the forms a user writes conditions in
into masks, and names layers the way users know them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tf_lrp.errors import InputError
from tf_lrp.graph import Graph, Node

__all__ = ["condition_masks", "condition_node"]


def condition_node(graph: Graph, layer: str) -> Node:
    """The node whose output a condition on ``layer`` masks.

    ``layer`` is a node name or a Keras layer name; a BatchNormalization folded into the layer
    before it (node ``conv+bn``) is found by either name, and a Dense/Conv layer with an
    activation by its own name (the relevance before and after the activation is the same).
    """
    found = [n for n in graph.nodes if n.name == layer]
    found = found or [n for n in graph.nodes if layer in n.name.split("+")]
    if not found:
        names = ", ".join(n.name for n in graph.nodes if n.linear is not None)
        raise InputError(f"no layer named {layer!r} to condition on; layers with weights: "
                         f"{names}")
    node = found[0]
    if len(node.outputs) != 1:
        raise InputError(f"layer {layer!r} has {len(node.outputs)} outputs; conditions need one")
    return node


def _channels(graph: Graph, node: Node) -> int:
    c = graph.shapes.get(node.outputs[0], (None,))[-1]
    if c is None:
        raise InputError(f"layer {node.name!r} has no static channel count to condition on")
    return int(c)


def _check_channels(values: np.ndarray, c: int, layer: str) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "iu" or values.size and (values.min() < 0 or values.max() >= c):
        raise InputError(f"channels of {layer!r} must be integers in 0..{c - 1}")
    return values


def condition_masks(graph: Graph, conditions, n: int) -> dict[str, np.ndarray]:
    """Boolean masks ``{node name: (n, k, channels)}`` from the forms conditions come in.

    Parameters
    ----------
    graph
        The analyzer's graph.
    conditions
        - a list of ``k`` dicts ``{layer: [channels]}``: the same ``k`` conditions for every
          sample (a layer a dict leaves out keeps all its channels in that condition);
        - a dict ``{layer: array (n, k)}`` of channel indices: ``k`` conditions per sample, one
          channel each (the top-k channels of each sample, say);
        - a dict ``{layer: boolean array (n, k, channels)}``: the masks themselves.
    n
        The number of samples.
    """
    if isinstance(conditions, Mapping):
        out = {}
        ks = set()
        for layer, value in conditions.items():
            node = condition_node(graph, layer)
            c = _channels(graph, node)
            arr = np.asarray(value)
            if arr.dtype == bool:
                if arr.shape[0] != n or arr.ndim != 3 or arr.shape[2] != c:
                    raise InputError(f"mask for {layer!r} has shape {arr.shape}; expected "
                                     f"({n}, k, {c})")
                mask = arr
            else:
                if arr.ndim != 2 or arr.shape[0] != n:
                    raise InputError(
                        f"channels for {layer!r} have shape {arr.shape}; a dict of conditions "
                        f"takes (samples, k) channel indices, (samples, k, {c}) masks, or pass a "
                        "list of {layer: [channels]} dicts for conditions shared by all samples")
                arr = _check_channels(arr, c, layer)
                mask = np.zeros((n, arr.shape[1], c), bool)
                np.put_along_axis(mask, arr[..., None], True, axis=2)
            out[node.name] = mask
            ks.add(mask.shape[1])
        if len(ks) > 1:
            raise InputError(f"every conditioned layer needs the same number of conditions; got "
                             f"{sorted(ks)}")
        return out
    if not isinstance(conditions, Sequence) or not conditions or \
            not all(isinstance(c, Mapping) for c in conditions):
        raise InputError("conditions must be a list of {layer: [channels]} dicts or a dict of "
                         "per-sample channel arrays")
    layers = list(dict.fromkeys(layer for cond in conditions for layer in cond))
    out = {}
    for layer in layers:
        node = condition_node(graph, layer)
        c = _channels(graph, node)
        mask = np.ones((len(conditions), c), bool)
        for j, cond in enumerate(conditions):
            if layer in cond:
                mask[j] = False
                mask[j, _check_channels(np.atleast_1d(cond[layer]), c, layer)] = True
        out[node.name] = np.broadcast_to(mask, (n, *mask.shape))
    return out
