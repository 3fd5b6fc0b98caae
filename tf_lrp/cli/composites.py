"""``tf-lrp composites``: the registered composites and rules with their parameters."""

from __future__ import annotations

import re

from tf_lrp.cli.common import EXIT_OK, engine


def cmd_composites(args) -> int:
    tf_lrp = engine()
    # describe() renders postponed annotations as strings: show them unquoted
    entries = [(name, re.sub(r": '([^']*)'", r": \1", signature))
               for name, signature in tf_lrp.composites.describe()]
    width = max(len(name) for name, _ in entries)
    print("composites (--composite NAME, parameters with --param KEY=VALUE):")
    for name, signature in entries:
        if not signature.startswith("rules."):
            print(f"  {name:<{width}}  {signature}")
    print("rules (a rule name as --composite: that rule for every layer with weights):")
    for name, signature in entries:
        if signature.startswith("rules."):
            print(f"  {name:<{width}}  {signature[len('rules.'):]}")
    print("low/high (input bounds of z^B) default to the model's input range: [0, 255] if it "
          "starts with a Rescaling or Normalization layer, else [-1, 1] (--scale names another).")
    print("--rule KEY=RULE[:param=value,...] gives the layer class or named layer KEY a rule, "
          "e.g. --rule Dense=epsilon:epsilon=0.1.")
    return EXIT_OK
