"""Concept Relevance Propagation (Achtibat et al., Nature Machine Intelligence 2023).

A heatmap says *where*; CRP says *what*: the relevance of a layer's channels (concepts) and,
for each, a **conditional heatmap**: the input relevance of the share of the decision that
passed through those channels. Conditions mask the relevance at a layer's output to chosen
channels during the backward pass (:meth:`tf_lrp.Analyzer.conditional`); many conditions per
sample run in one traced call that shares the forward pass and the backward pass above the
first conditioned layer.

- :func:`condition_masks`, :func:`condition_node`: conditions as the engine takes them.
- :func:`build_atlas`, :class:`Atlas`: for every channel of chosen layers, the samples of a
  dataset where it is most relevant and most active, with input crops, on disk, resumable.
- :func:`attribution_graph`: a channel's relevance split over the channels of a lower layer.
- :func:`explain_concepts`, :func:`concept_figures`: the top concepts of a layer per sample,
  their conditional heatmaps and reference crops, drawn per sample (PNG).

Submodules other than :mod:`~tf_lrp.concepts.conditions` (which the engine imports) load on
first use.
"""

from __future__ import annotations

import importlib

from tf_lrp.concepts.conditions import condition_masks, condition_node

_LAZY = {
    "Atlas": "atlas", "Reference": "atlas", "build_atlas": "atlas", "MODES": "atlas",
    "Contributions": "attribution", "attribution_graph": "attribution",
    "ConceptExplanation": "figures", "explain_concepts": "figures",
    "concept_figures": "figures",
}

__all__ = ["condition_masks", "condition_node", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'tf_lrp.concepts' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tf_lrp.concepts.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
