"""The model side of ``tf-lrp``: load the model, decide the input range, build the composite
(``--composite`` or ``--composite-file``, ``--param``, ``--rule``) and the analyzer."""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass
from typing import Any

from tf_lrp.cli.common import (
    ASSUMED_SCALE,
    AUTO_SCALE,
    DEFAULT_COMPOSITE,
    PREPROCESSED_SCALE,
    PREPROCESSING_LAYERS,
    SCALES,
    UsageError,
    engine,
    note,
)
from tf_lrp.runs.inputs import image_mode


def rule_classes() -> dict[str, type]:
    """``tf_lrp.rules.RULES`` (imports TensorFlow, quietly)."""
    engine()
    from tf_lrp import rules

    return dict(rules.RULES)


def rule_signature(cls: type) -> str:
    """``Epsilon(epsilon: float = 1e-06, bias: bool = True)``."""
    return f"{cls.__name__}{inspect.signature(cls, eval_str=True)}"


def report_warnings(caught: list[warnings.WarningMessage], quiet: bool) -> bool:
    """Print recorded warnings as one short line each (repeats once); return whether a softmax
    was stripped."""
    stripped, seen = False, set()
    for w in caught:
        text = str(w.message)
        line = text.splitlines()[0] if text else w.category.__name__
        if line in seen:
            continue
        seen.add(line)
        if "softmax" in text and "stripped" in text:
            stripped = True
            note("note: the model ends in a softmax; the logits before it are explained", quiet)
        else:
            note(f"warning: {line}", quiet)
    return stripped


def _takes_bounds(signature: str) -> bool:
    return all(re.search(rf"[(,]\s*{p}\b", signature) for p in ("low", "high"))


def _composite_name(args) -> str:
    """``--composite``, or the default composite."""
    return (getattr(args, "composite", None) or DEFAULT_COMPOSITE).replace("-", "_").lower()


def _composite_file(tf_lrp, args) -> Any:
    """The composite of ``--composite-file`` (``None`` without it).

    Raises
    ------
    UsageError
        If ``--composite`` or ``--param`` is given too.
    tf_lrp.InputError
        If the file cannot be read or is not a valid composite file (the message says why).
    """
    path = getattr(args, "composite_file", None)
    if path is None:
        return None
    if getattr(args, "composite", None) is not None:
        raise UsageError("--composite and --composite-file are mutually exclusive: give a "
                         "composite by name or a composite file")
    if args.param:
        raise UsageError("--param sets parameters of a --composite given by name; a "
                         "--composite-file carries its parameters (edit the file, or map single "
                         "layers with --rule)")
    return tf_lrp.composites.load(path)


def _composite(tf_lrp, args, input_range: tuple[float, float]) -> Any:
    """The composite of ``--composite-file``, or the one named by ``--composite`` with
    ``--param`` values (bounds: ``input_range``)."""
    loaded = _composite_file(tf_lrp, args)
    if loaded is not None:
        return loaded
    name = _composite_name(args)
    signatures = dict(tf_lrp.composites.describe())
    if name not in signatures:
        raise UsageError(
            f"unknown composite or rule {args.composite!r}; choose one of: "
            f"{', '.join(signatures)} (see 'tf-lrp composites')"
        )
    params = dict(args.param)
    if _takes_bounds(signatures[name]):
        low, high = input_range
        params.setdefault("low", low)
        params.setdefault("high", high)
    try:
        return tf_lrp.composites.get(name, **params)
    except (TypeError, ValueError) as err:
        raise UsageError(
            f"bad --param for {name!r} ({err}); its parameters: {signatures[name]}"
        ) from None


def model_output(text: str | None) -> int | str | None:
    return int(text) if text is not None and text.isdigit() else text


@dataclass
class Setup:
    """A loaded model and what the options decide for it (before an analyzer is built)."""

    model: Any
    graph: Any  # the canonized tf_lrp.graph.Graph
    scale: str  # a key of SCALES
    scale_reason: str
    assumed: bool  # --scale auto found no preprocessing layer, and the range matters: a guess
    composite: Any
    caught: list[warnings.WarningMessage]

    @property
    def input_range(self) -> tuple[float, float]:
        return SCALES[self.scale]

    def range_text(self) -> str:
        low, high = self.input_range
        return f"[{low:g}, {high:g}] ({self.scale_reason})"

    def report_range(self, quiet: bool, to_stdout: bool = False) -> None:
        """The input range line (a note on stderr, or on stdout for ``info``); the warning
        about an assumed range is printed even with ``--quiet``."""
        if to_stdout:
            print(f"input range {self.range_text()}")
        else:
            note(f"input range {self.range_text()}", quiet)
        if self.assumed:
            low, high = self.input_range
            note(f"warning: the model carries no preprocessing (no {' or '.join(PREPROCESSING_LAYERS)}"
                  f" layer before its first layer with weights): image pixels 0..255 are mapped "
                  f"to [{low:g}, {high:g}] and input bounds default to it. If the model was "
                  "trained on another range, pass --scale 0_1 or --scale 0_255 (or give the "
                  "model a keras.layers.Rescaling layer at its start)")


def _preprocessing_layer(graph) -> str | None:
    """The class of the Rescaling/Normalization layer every first layer with weights is reached
    through from the model input (only layers without weights in between), or ``None``."""
    import keras

    from tf_lrp import plan

    classes = tuple(getattr(keras.layers, name) for name in PREPROCESSING_LAYERS)
    chains = plan.input_chains(graph)
    found = []
    for node in graph.nodes:
        if plan.is_weighted(node) and node.name in chains:
            layers = [n.layer for n in chains[node.name][1] if isinstance(n.layer, classes)]
            if not layers:
                return None
            found.append(type(layers[0]).__name__)
    return found[0] if found else None


def resolve_scale(args, graph) -> tuple[str, str, bool]:
    """``(scale, why, assumed)`` for ``--scale`` (``auto``: from the model's first layers)."""
    if args.scale != AUTO_SCALE:
        return args.scale, f"--scale {args.scale}", False
    layer = _preprocessing_layer(graph)
    if layer is not None:
        return PREPROCESSED_SCALE, f"the model starts with {layer}", False
    return ASSUMED_SCALE, "assumed: the model carries no preprocessing; see --scale", True


def _uses_bounds(tf_lrp, args) -> bool:
    """Whether the composite (by name; a file carries its bounds) or a ``--rule`` takes input
    bounds (low/high)."""
    signature = "" if getattr(args, "composite_file", None) else \
        dict(tf_lrp.composites.describe()).get(_composite_name(args), "")
    return _takes_bounds(signature) or any(
        {"low", "high"} <= set(inspect.signature(tf_lrp.rules.RULES[o.rule]).parameters)
        for o in args.rules)


def _keras_layer_names(model) -> set[str]:
    """Names of every layer of ``model``, nested models' layers included."""
    import keras

    names, stack = set(), list(model.layers)
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
    return names


def _overrides(tf_lrp, args, base, setup_graph, model, input_range) -> Any:
    """``base``, or ``composites.Overrides(base, ...)`` with the ``--rule`` options.

    A layer name wins over a class name; of several ``--rule`` for the same key, the last.

    Raises
    ------
    UsageError
        If a key names no layer and no layer class of the model.
    """
    if not args.rules:
        return base
    from tf_lrp import keras_adapter

    nodes = [n for n in setup_graph.nodes if n.kind == "layer"]
    custom = [la for la in keras_adapter.all_layers(model) if tf_lrp.flatten.is_custom(la)]
    # a custom layer is flattened into its parts unless a rule names it: then it stays whole
    names = {getattr(n.layer, "name", None) for n in nodes} | {n.name for n in nodes} | \
        {la.name for la in custom}
    classes = {type(n.layer).__name__ for n in nodes} | {type(la).__name__ for la in custom}
    for option in args.rules:
        if option.key in names or option.key in classes:
            continue
        if option.key in _keras_layer_names(model):
            raise UsageError(
                f"--rule {option.text}: the layer {option.key!r} has no node of its own in the "
                "explained graph (a BatchNormalization folded into the layer before it, or an "
                "input layer); map the rule to the layer it belongs to (see 'tf-lrp info "
                f"{args.model}')")
        raise UsageError(
            f"--rule {option.text}: no layer of the model is named {option.key!r} and none is "
            f"of class {option.key!r}; its layer classes: {', '.join(sorted(classes))} (its "
            f"layer names: 'tf-lrp info {args.model}')")
    rule_classes = tf_lrp.rules.RULES
    ordered = [o for o in reversed(args.rules) if o.key in names] + \
              [o for o in reversed(args.rules) if o.key not in names]
    mapping = []
    for option in ordered:
        cls = rule_classes[option.rule]
        params = dict(option.params)
        if {"low", "high"} <= set(inspect.signature(cls).parameters):
            params.setdefault("low", input_range[0])
            params.setdefault("high", input_range[1])
        mapping.append((option.key, cls(**params)))
    return tf_lrp.composites.Overrides(base, mapping)


def setup_model(tf_lrp, args) -> Setup:
    """Load the model, decide the input range and build the composite with the ``--rule``s.

    Raises
    ------
    tf_lrp.LRPError, UsageError
        If the model cannot be loaded or the options do not fit it (exit 2).
    """
    from tf_lrp import canonizers, graph

    _composite(tf_lrp, args, SCALES[ASSUMED_SCALE])  # a bad name or file fails before the
    # model loads
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = tf_lrp.load_model(args.model, safe_mode=not args.allow_lambda)
            canonized = canonizers.canonize(graph.build_graph(model))
        except tf_lrp.LRPError:
            raise
        except Exception as err:  # an engine bug or an exotic model: no traceback for users
            raise UsageError(f"cannot explain {args.model}: {type(err).__name__}: {err}") from err
    scale, why, assumed = resolve_scale(args, canonized)
    # the guess matters where image files can be fed, or for input bounds
    assumed = assumed and (any(image_mode(tuple(s)) for s in canonized.input_shapes)
                           or _uses_bounds(tf_lrp, args))
    composite = _overrides(tf_lrp, args, _composite(tf_lrp, args, SCALES[scale]), canonized,
                           model, SCALES[scale])
    args.scale = scale  # what image files are scaled to from here on
    return Setup(model, canonized, scale, why, assumed, composite, list(caught))


def build_analyzer(tf_lrp, args, start: str = "output", setup: Setup | None = None):
    """Build the analyzer; return ``(analyzer, softmax_stripped, setup)``.

    Raises
    ------
    tf_lrp.LRPError, UsageError
        If the model cannot be loaded or explained (reported by :func:`main`, exit 2).
    """
    setup = setup or setup_model(tf_lrp, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            analyzer = tf_lrp.Analyzer(setup.model, setup.composite, start=start,
                                       output=model_output(args.model_output))
        except tf_lrp.UnsupportedLayerError as err:
            raise UsageError(f"{err}\n'tf-lrp info {args.model}' lists every layer and the "
                             "rule it gets") from err
        except tf_lrp.LRPError:
            raise
        except Exception as err:  # an engine bug or an exotic model: no traceback for users
            raise UsageError(f"cannot explain {args.model}: {type(err).__name__}: {err}") from err
    stripped = report_warnings(setup.caught + list(caught), args.quiet)
    return analyzer, stripped, setup
