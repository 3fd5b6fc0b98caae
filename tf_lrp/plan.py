"""What is decided about a canonized graph before anything is traced.

* :func:`value_ranges`: the interval every tensor is known to lie in (non-negative tensors drop
  their ``x-`` terms; tensors in [0, 1] are gates);
* :func:`assign_rules`: the rule of every node (the composite's, or the fixed handling of
  layers without weights), each checked against its node (:meth:`tf_lrp.rules.Rule.check`), and
  every node no rule fits, with the reason;
* :func:`silent_negatives`: the linear nodes whose negative outputs receive no relevance (a ReLU
  follows and relevance above it vanishes with the value), so rules that treat negative
  outputs separately (generalized gamma) skip that half;
* :func:`input_chains`: for layers reached from a model input through layers without weights,
  that chain, so that input bounds (z^B) given in the model's input space are mapped onto the
  layer's input;
* :func:`rule_plan`: the rule table of a model, unsupported nodes included (``tf-lrp info``).
"""

from __future__ import annotations

from typing import NamedTuple

from keras import layers as kl

from tf_lrp import attention, canonizers, composites, recurrent, weightless
from tf_lrp import rules as lrp_rules
from tf_lrp.graph import Graph, Node, build_graph

_FIXED: dict[str, lrp_rules.Rule] = {
    weightless.PASS: lrp_rules.Pass(),
    weightless.ROUTE: lrp_rules.Route(),
    weightless.PROPORTIONAL: lrp_rules.Zero(),
    weightless.NORMALIZATION: lrp_rules.Epsilon(),
    weightless.NONE: lrp_rules.NoRelevance(),
}


def keeps_whole(composite: composites.Composite):
    """``keep(layer, name)`` for :func:`tf_lrp.graph.build_graph`: a custom layer the composite
    maps a rule to (by class or by name) stays one node and gets that rule; any other custom
    layer is flattened into its parts."""
    def keep(layer, name: str) -> bool:
        probe = Node(name, layer, [], [], lambda values: values)
        return composite.rule_for_node(probe, first=False, weighted=False) is not None

    return keep


def is_weighted(node: Node) -> bool:
    """Whether a node counts as a layer with weights for composites (not elementwise affine)."""
    return (node.linear is not None and not weightless.is_elementwise(node.layer)) or \
        node.recurrent is not None


def value_ranges(graph: Graph) -> dict[int, weightless.Range]:
    """The interval every tensor of ``graph`` is statically known to lie in."""
    ranges = dict.fromkeys(graph.inputs, weightless.UNKNOWN)
    for node in graph.nodes:
        if is_weighted(node):
            value = weightless.UNKNOWN
        else:
            # a product marked by tf_lrp.structure has the range of the product it is
            layer = node.layer.layer if hasattr(node.layer, "held") else node.layer
            kind = None if node.kind == "activation" else \
                weightless.handling(layer, len(node.inputs))
            value = weightless.output_range(
                layer, kind, node.call,
                [ranges.get(k, weightless.UNKNOWN) for k in node.inputs],
                graph.shapes.get(node.inputs[0], (None,)) if node.inputs else (None,))
        for k in node.outputs:
            ranges[k] = value
    return ranges


def _fixed_rule(node: Node, gates: list[bool], preprocessing: bool = False
                ) -> lrp_rules.Rule | None:
    kind = weightless.handling(node.layer, len(node.inputs))
    if kind == weightless.PRODUCT:
        if any(gates) and not all(gates):
            return lrp_rules.SignalTakesAll()
        return lrp_rules.UniformProduct()
    if preprocessing and weightless.is_elementwise_op(node.layer, len(node.inputs)):
        # x - mean, x / std written with keras.ops in front of every layer with weights:
        # preprocessing, whose relevance passes as through Rescaling/Normalization layers
        return _FIXED[weightless.PASS]
    return _FIXED.get(kind)


def facts(graph: Graph, node: Node, ranges: dict) -> lrp_rules.Facts:
    """The :class:`tf_lrp.rules.Facts` of ``node``."""
    return lrp_rules.Facts(
        [tuple(graph.shapes.get(k, (None,))[1:]) for k in node.inputs],
        [tuple(graph.shapes.get(k, (None,))[1:]) for k in node.outputs],
        [weightless.is_gate(ranges.get(k, weightless.UNKNOWN)) for k in node.inputs],
    )


def assign_rules(graph: Graph, composite: composites.Composite, ranges: dict
                 ) -> tuple[dict[str, lrp_rules.Rule], list[tuple[Node, str]]]:
    """The rule of every node, and ``(node, reason)`` for every node no rule fits."""
    after_weights = dict.fromkeys(graph.inputs, False)
    assigned: dict[str, lrp_rules.Rule] = {}
    problems: list[tuple[Node, str]] = []
    for node in graph.nodes:
        weighted = is_weighted(node)
        first = weighted and node.recurrent is None and \
            not any(after_weights.get(k, False) for k in node.inputs)
        embedding = node.kind == "layer" and isinstance(node.layer, kl.Embedding) and \
            node.linear is None
        for k in node.outputs:
            after_weights[k] = weighted or embedding or weightless.is_linear_op(node.layer) or \
                any(after_weights.get(k2, False) for k2 in node.inputs)
        node_facts = facts(graph, node, ranges)
        refused = node.refusal or _refused(node)
        if refused:
            problems.append((node, refused))
            continue
        if node.constant:
            rule = _FIXED[weightless.NONE]  # its output does not depend on its inputs
        elif node.kind == "activation":
            rule = _FIXED[weightless.PASS]
        elif node.recurrent is not None:
            rule = composite.rule_for_node(node, first=False, weighted=True)
            rule = None if rule is None else recurrent.RecurrentRule(rule)
        elif isinstance(node.layer, attention.AttentionPart):
            rule = composite.rule_for_node(node, first=False, weighted=False) or \
                attention.default_rule(node.layer)
        elif embedding:
            rule = composite.rule_for_node(node, first=False, weighted=False) or \
                lrp_rules.EmbeddingSum()
        else:
            rule = composite.rule_for_node(node, first=first, weighted=weighted)
            if rule is None and not weighted:
                rule = _fixed_rule(node, node_facts.gates, preprocessing=not any(
                    after_weights.get(k, False) for k in node.inputs))
        if rule is None and node.inert:
            rule = _FIXED[weightless.NONE]  # nothing reaches it (a mask, a norm's variance)
        if rule is None:
            problems.append((node, "has weights but no rule in the composite" if weighted
                             else weightless.no_rule_reason(node.layer)
                             or "is not a layer type tf_lrp knows"))
            continue
        reason = rule.check(node, node_facts)
        if reason:
            problems.append((node, reason))
        else:
            assigned[node.name] = rule
    return assigned, problems


def _refused(node: Node) -> str | None:
    """Why a recurrent or attention node cannot be explained at all (whatever the rule)."""
    if node.kind != "layer" or node.recurrent is not None:
        return None
    layer = node.layer
    if isinstance(layer, kl.Bidirectional):
        layer = layer.forward_layer
    if isinstance(layer, kl.RNN):
        return recurrent.check_layer(layer) or "cannot be unrolled"
    return attention.check_layer(layer)


def unsupported_message(problems: list[tuple[Node, str]], composite) -> str:
    """The error for nodes no rule fits: each class once, with its layers and the fix."""
    by_class: dict[type, list[tuple[Node, str]]] = {}
    for node, reason in problems:
        by_class.setdefault(type(node.layer), []).append((node, reason))
    lines = []
    for cls, items in by_class.items():
        names = [n.name for n, _ in items]
        shown = ", ".join(repr(n) for n in names[:3]) + (
            f" and {len(names) - 3} more" if len(names) > 3 else "")
        reasons = "; ".join(dict.fromkeys(r for _, r in items))
        lines.append(f"  - {cls.__module__}.{cls.__name__} ({len(names)} layer"
                     f"{'s' if len(names) > 1 else ''}: {shown}): {reasons}")
    node, _ = problems[0]
    example = type(node.layer).__name__
    if len(node.inputs) == 1 and len(node.outputs) == 1:
        hint = (f"if {example} is elementwise, map rules.Pass() to it: "
                f"Analyzer(model, composites.Overrides({composite!r}, [({example!r}, "
                f"rules.Pass())])), on the command line --rule {example}=pass; if it only moves "
                "values, rules.Route(). ")
    else:
        hint = (f"{example} has {len(node.inputs)} inputs and {len(node.outputs)} output(s): "
                "no relaying rule fits it whole. ")
    return (
        f"cannot explain this model: no LRP rule fits {len(problems)} layer"
        f"{'s' if len(problems) > 1 else ''} of {len(by_class)} class"
        f"{'es' if len(by_class) > 1 else ''}:\n" + "\n".join(lines) + "\n"
        "Custom layers written with keras.ops and Keras layers are explained by their parts."
        "\nFix: " + hint +
        "A custom linear layer with weights: tf_lrp.layers.register_linear."
    )


def _keeps_zeros(node: Node, rule: lrp_rules.Rule, zero: dict[int, bool]) -> bool:
    """Whether ``rule`` gives ``node``'s inputs no relevance where they are zero."""
    if rule.zeros == "always":
        return True
    if rule.zeros != "relay" or not all(zero.get(k, False) for k in node.outputs):
        return False
    if isinstance(rule, lrp_rules.Pass):
        return weightless.keeps_zero(node.layer)
    if isinstance(rule, lrp_rules.Route):
        return node.linear is None and \
            weightless.handling(node.layer, len(node.inputs)) == weightless.ROUTE
    return True  # products: a zero factor makes the output zero


def silent_negatives(graph: Graph, rules: dict[str, lrp_rules.Rule]) -> set[str]:
    """Names of the linear nodes whose negative outputs statically receive no relevance.

    That holds where every reader of the node's output is a ReLU-type activation (zero for
    every input <= 0) with the Pass rule, and the relevance at the activation's output vanishes
    wherever the activation does (each rule above multiplies by its input or relays relevance
    only where values are non-zero, up to the explained output, whose relevance is
    proportional to it).
    """
    consumers = graph.consumers()
    zero: dict[int, bool] = {}
    for node in reversed(graph.nodes):
        for k in node.outputs:
            zero[k] = all(_keeps_zeros(c, rules[c.name], zero) for c in consumers.get(k, []))
    silent = set()
    for node in graph.nodes:
        if node.linear is None or len(node.outputs) != 1 or node.outputs[0] in graph.outputs:
            continue
        readers = consumers.get(node.outputs[0], [])
        if readers and all(isinstance(rules[c.name], lrp_rules.Pass)
                           and weightless.zeroes_negatives(c.layer)
                           and all(zero.get(k, False) for k in c.outputs) for c in readers):
            silent.add(node.name)
    return silent


def input_chains(graph: Graph) -> dict[str, tuple[int, list[Node]]]:
    """For each node reading a tensor derived from one model input through single-input
    layers without weights: ``(model input key, [nodes from the input to the node's input])``.
    """
    chains: dict[int, tuple[int, list[Node]]] = {k: (k, []) for k in graph.inputs}
    out: dict[str, tuple[int, list[Node]]] = {}
    for node in graph.nodes:
        if len(node.inputs) == 1 and node.inputs[0] in chains:
            out[node.name] = chains[node.inputs[0]]
            if not is_weighted(node) and len(node.outputs) == 1:
                key, path = chains[node.inputs[0]]
                chains[node.outputs[0]] = (key, [*path, node])
    return out


def token_inputs(graph: Graph) -> dict[int, Node]:
    """Model inputs that are token ids: ``{input position: the Embedding node reading it}``.

    An input counts when one ``Embedding`` reads it and nothing else does, except operations
    that compute masks from it (``NotEqual`` for ``mask_zero``). Gradient-based methods take
    their gradients with respect to that Embedding's output (embedding space).
    """
    consumers = graph.consumers()
    out: dict[int, Node] = {}
    for i, k in enumerate(graph.inputs):
        readers = [n for n in consumers.get(k, []) if not n.constant and
                   weightless.handling(n.layer, len(n.inputs)) != weightless.NONE]
        if len(readers) == 1 and isinstance(readers[0].layer, kl.Embedding) and \
                readers[0].linear is None:
            out[i] = readers[0]
    return out


class PlanRow(NamedTuple):
    """One node of :func:`rule_plan`: its name, layer class, rule (``None``: no rule fits)."""

    node: str
    layer: str
    rule: str | None
    reason: str


def rule_plan(model, composite=None, **composite_kwargs) -> list[PlanRow]:
    """The rule every node of ``model`` gets, unsupported nodes included (never raises for them).

    Parameters
    ----------
    model
        A built ``keras.Model``.
    composite
        As for :class:`tf_lrp.Analyzer`.
    """
    composite = composites.as_composite(composite, composite_kwargs)
    graph = canonizers.canonize(build_graph(model, keep=keeps_whole(composite)))
    assigned, problems = assign_rules(graph, composite, value_ranges(graph))
    reasons = {node.name: reason for node, reason in problems}
    return [PlanRow(n.name, type(n.layer).__name__ if n.kind == "layer" else "activation",
                    repr(assigned[n.name]) if n.name in assigned else None,
                    reasons.get(n.name, "")) for n in graph.nodes]
