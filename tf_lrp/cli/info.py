"""``tf-lrp info``: the model's canonized layers, the rule each gets and the input range."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from tf_lrp.cli.common import EXIT_ERROR, EXIT_OK, engine, error, shape_text
from tf_lrp.cli.modelsetup import build_analyzer, report_warnings, setup_model


def _print_table(rows: Sequence[tuple[str, str, str]]) -> None:
    table = [("node", "layer", "rule"), *rows]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    print()
    for node, layer, rule in table:
        print(f"{node:<{widths[0]}}  {layer:<{widths[1]}}  {rule}")


def cmd_info(args) -> int:
    tf_lrp = engine()
    from tf_lrp import plan

    setup = setup_model(tf_lrp, args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = plan.rule_plan(setup.model, setup.composite)
    unsupported = [row for row in rows if row.rule is None]
    if not unsupported:
        analyzer, stripped, _ = build_analyzer(tf_lrp, args, setup=setup)
    else:
        stripped = report_warnings(setup.caught + list(caught), args.quiet)
    graph = setup.graph
    print(f"model      {args.model} ({type(setup.model).__name__})")
    for name, shape, dtype in zip(graph.input_names, graph.input_shapes, graph.input_dtypes):
        print(f"input      {name}: {shape_text(shape)} {dtype}")
    setup.report_range(args.quiet, to_stdout=True)
    if not unsupported:
        explained = analyzer.num_outputs if analyzer.num_outputs is not None else "?"
        print(f"explains   {explained} output values"
              + (" (logits: the final softmax is stripped)" if stripped else ""))
    print(f"composite  {setup.composite!r}")
    _print_table([(row.node, row.layer, row.rule or f"UNSUPPORTED: {row.reason}")
                  for row in rows])
    if unsupported:
        error(_unsupported_text(unsupported, tf_lrp.rules.RULES))
        return EXIT_ERROR
    return EXIT_OK


def _unsupported_text(rows, rule_classes) -> str:
    """The error of ``info`` for layers no rule fits: which ones, and the ``--rule`` fix."""
    by_class: dict[str, list[str]] = {}
    for row in rows:
        by_class.setdefault(row.layer, []).append(row.node)
    listed = "; ".join(f"{cls} ({', '.join(repr(n) for n in nodes)})"
                       for cls, nodes in by_class.items())
    example = next(iter(by_class))
    count = len(rows)
    return (
        f"no LRP rule fits {count} layer{'s' if count > 1 else ''} (flagged UNSUPPORTED above): "
        f"{listed}\n"
        f"fix: map a rule to the layer class or layer name with --rule, e.g. --rule "
        f"{example}=pass (relevance passes unchanged: right for elementwise layers); rules: "
        f"{', '.join(sorted(rule_classes))} (parameters: 'tf-lrp composites'). In Python: "
        "composites.Overrides(composite, "
        f"[({example!r}, rules.Pass())]). A custom layer with weights is described once with "
        "tf_lrp.layers.register_linear."
    )
