"""The search space of :func:`tf_lrp.tuning.tune`: the layout of a model's layers, the points
of the space and the composite-file object of a point."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from tf_lrp import composites

#: The rule families of the convolutions.
CONV_RULES = ("gamma", "z_plus", "alpha2_beta1", "alpha1_beta0")
#: The rules of the first layer (``"same"``: the rule of its block or of Dense layers).
FIRST_RULES = ("z_box", "flat", "w_square", "same")
#: The gamma values of each block.
GAMMAS = (0.0, 0.01, 0.03, 0.1, 0.25, 0.5, 1.0)
#: The range of epsilon (sampled log-uniformly).
EPSILON_RANGE = (1e-6, 1.0)
#: The blocks of convolutions, from the input up.
BLOCKS = ("lower", "middle", "upper")
#: The presets tried first on image models.
IMAGE_PRESETS = ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1",
                 "epsilon_plus_flat", "deep_taylor")
#: The presets tried first on models that read token ids.
TOKEN_PRESETS = ("attn_lrp", "cp_lrp")

_CONV_SPECS = {
    "z_plus": {"rule": "ZPlus"},
    "alpha2_beta1": {"rule": "AlphaBeta", "alpha": 2.0, "beta": 1.0},
    "alpha1_beta0": {"rule": "AlphaBeta", "alpha": 1.0, "beta": 0.0, "bias": True},
}
_FIRST_SPECS = {"flat": {"rule": "Flat"}, "w_square": {"rule": "WSquare"}}


@dataclasses.dataclass(frozen=True)
class Layout:
    """The layers of a model the search space refers to (names in graph order).

    Attributes
    ----------
    convolutions
        The convolution layers.
    blocks
        ``convolutions`` cut into three nearly equal parts (lower, middle, upper; earlier
        blocks take the remainder, so with fewer than three convolutions the upper blocks are
        empty).
    has_first
        Whether some layer with weights is reached from a model input through layers without
        weights only (the layer the first-layer rule applies to).
    tokens
        Whether the model reads token ids (an ``Embedding``).
    """

    convolutions: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    has_first: bool
    tokens: bool


def layout(model) -> Layout:
    """The :class:`Layout` of ``model`` (of its canonized graph, as the analyzer sees it)."""
    from keras import layers as kl

    from tf_lrp import canonizers, graph, plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = canonizers.canonize(graph.build_graph(model))
    after = dict.fromkeys(g.inputs, False)
    has_first, tokens, convolutions = False, False, []
    for node in g.nodes:
        weighted = plan.is_weighted(node)
        embedding = node.kind == "layer" and isinstance(node.layer, kl.Embedding)
        tokens = tokens or embedding
        has_first = has_first or (weighted and node.recurrent is None
                                  and not any(after.get(k, False) for k in node.inputs))
        for k in node.outputs:
            after[k] = weighted or embedding or any(after.get(k2, False) for k2 in node.inputs)
        name = getattr(node.layer, "name", None)
        if weighted and isinstance(node.layer, composites.CONVOLUTIONS) and \
                name not in convolutions:
            convolutions.append(name)
    blocks = tuple(tuple(convolutions[i] for i in part)
                   for part in np.array_split(np.arange(len(convolutions)), len(BLOCKS)))
    return Layout(tuple(convolutions), blocks, has_first, tokens)


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the search space; parameters that do not apply to the model are ``None``.

    Attributes
    ----------
    epsilon
        Of LRP-epsilon on Dense and the other layers with weights that are no convolutions.
    conv
        A :data:`CONV_RULES` family (``None``: the model has no convolutions).
    gammas
        Per block (lower, middle, upper), with ``conv="gamma"``; ``None`` for an empty block.
    first
        A :data:`FIRST_RULES` name (``None``: the model has no first layer, e.g. token ids).
    """

    epsilon: float
    conv: str | None = None
    gammas: tuple[float | None, ...] | None = None
    first: str | None = None

    def params(self) -> dict:
        """The parameters that apply, as a flat ``dict`` (for tables and the file's meta)."""
        out: dict = {"epsilon": self.epsilon}
        if self.conv is not None:
            out["conv"] = self.conv
        for block, gamma in zip(BLOCKS, self.gammas or ()):
            if gamma is not None:
                out[f"gamma_{block}"] = gamma
        if self.first is not None:
            out["first"] = self.first
        return out


def sample_point(rng: np.random.Generator, where: Layout) -> Point:
    """A random :class:`Point` for a model of layout ``where``."""
    low, high = np.log10(EPSILON_RANGE)
    epsilon = float(f"{10 ** rng.uniform(low, high):.2g}")
    conv = gammas = None
    if where.convolutions:
        conv = CONV_RULES[rng.integers(len(CONV_RULES))]
        draws = [GAMMAS[i] for i in rng.integers(len(GAMMAS), size=len(BLOCKS))]
        if conv == "gamma":
            gammas = tuple(g if block else None for g, block in zip(draws, where.blocks))
    first = FIRST_RULES[rng.integers(len(FIRST_RULES))] if where.has_first else None
    return Point(epsilon, conv, gammas, first)


def number_or_list(value):
    """A number or an array as a JSON value (a float, or nested lists); strings and ``None``
    stay."""
    if isinstance(value, str) or value is None:
        return value
    value = np.asarray(value, dtype=np.float64)
    return float(value) if value.ndim == 0 else value.tolist()


def spec_for(point: Point, where: Layout, low=-1.0, high=1.0) -> dict:
    """The composite-file object of ``point`` (see :func:`tf_lrp.composites.load`).

    The gamma of each block is written per layer name (``"layers"``); the other families map
    ``"CONVOLUTIONS"`` (``"classes"``); epsilon is the ``"default"``. ``low`` and ``high`` are
    the input bounds of z^B (numbers, or arrays broadcastable to the input).
    """
    epsilon = {"rule": "Epsilon", "epsilon": point.epsilon}
    layers, classes = {}, {}
    if point.conv == "gamma":
        for block, gamma in zip(where.blocks, point.gammas or ()):
            for name in block:
                layers[name] = {"rule": "Gamma", "gamma": gamma}
    elif point.conv is not None:
        classes["CONVOLUTIONS"] = dict(_CONV_SPECS[point.conv])
    first = None
    if point.first == "z_box":
        first = {"rule": "ZBox", "low": number_or_list(low), "high": number_or_list(high)}
    elif point.first in _FIRST_SPECS:
        first = dict(_FIRST_SPECS[point.first])
    return {"format": composites.FILE_FORMAT, "version": composites.FILE_VERSION,
            "first": first, "layers": layers, "classes": classes, "default": epsilon}
