"""``tf-lrp generate``: what a language model writes, and which earlier tokens made it.

::

    tf-lrp generate MODEL --prompt "..." [--max-new-tokens 16] --out DIR
                    [--target logit|logprob] [--contrast TOKEN] [--span I:J]
                    [--continuation "..."] [--composite attn_lrp] [--tokenizer VOCAB]

MODEL is a KerasHub preset directory or ``.keras`` file of a ``CausalLM`` (its preprocessor's
tokenizer reads the prompt), or a ``.keras`` model of token ids to next-token logits with a
word-level vocabulary (``--tokenizer``, or ``<stem>.vocab.txt`` beside the file). Writes
``DIR/generation.html`` (click a generated token to colour the earlier ones),
``matrix.png``, ``tokens.png``, ``relevance.npy``, ``relevance.csv`` and ``generation.json``
(:func:`tf_lrp.lm.explain_generation`). Exit codes: 0 written, 2 usage error or a model that
cannot be explained.
"""

from __future__ import annotations

import argparse

from tf_lrp.cli.common import EXIT_OK, UsageError, guarded, note, positive_int

_EPILOG = """\
examples:
  tf-lrp generate saved_models/lm_retrieval.keras --prompt "k3 v7 k1 v2 k5 v0 ? k1" \\
      --max-new-tokens 4 --out generation
  tf-lrp generate my_llama_preset/ --prompt "The capital of France is" --contrast " London" \\
      --out why_paris

outputs (in --out DIR): generation.html, matrix.png, tokens.png, relevance.npy,
  relevance.csv (one row per generated token), generation.json
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``generate`` command to ``subparsers``; return it."""
    p = subparsers.add_parser(
        "generate", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        help="generate text with a language model and explain every generated token",
        description="Generate greedily from a prompt and explain each generated token by the "
                    "relevance of every earlier token (one traced backward pass for all).")
    p.add_argument("model", metavar="MODEL", help="a KerasHub preset directory or .keras file")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument("--max-new-tokens", type=positive_int, default=16, metavar="N",
                   help="tokens to generate (default 16; fewer at the end token)")
    p.add_argument("--continuation", metavar="TEXT",
                   help="explain this continuation instead of generating")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--target", choices=["logit", "logprob"], default="logit",
                   help="explain each token's logit (default) or log-probability")
    p.add_argument("--contrast", metavar="TOKEN",
                   help="explain logit(chosen) - logit(TOKEN) instead")
    p.add_argument("--span", metavar="I:J",
                   help="explain the sum of generated tokens I..J-1 as one row")
    p.add_argument("--composite", default="attn_lrp", metavar="NAME",
                   help="composite (default attn_lrp; cp_lrp, epsilon ...)")
    p.add_argument("--tokenizer", metavar="VOCAB",
                   help="a word-level vocabulary file (one token per line) for plain models")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(handler=run, command="generate")
    return p


def _span(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        first, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise UsageError(f"--span takes I:J (generated tokens I to J-1), got {text!r}") from None
    return first, stop


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tf_lrp import lm

    if not Path(args.model).exists():
        raise UsageError(f"model {args.model!r} does not exist")
    if args.contrast is not None and args.target != "logit":
        raise UsageError("--contrast explains a difference of logits: drop --target")
    tokenizer = lm.WordTokenizer(args.tokenizer) if args.tokenizer else None
    target = ("contrast", args.contrast) if args.contrast is not None else args.target
    g = lm.explain_generation(args.model, args.prompt, args.max_new_tokens,
                              continuation=args.continuation, target=target,
                              span=_span(args.span), tokenizer=tokenizer,
                              composite=args.composite)
    paths = g.save(args.out)
    words = g.text()
    note(f"generated {' '.join(words[g.prompt_length:])!r} after {g.prompt_length} prompt "
         f"tokens; wrote {len(paths)} files to {args.out}", args.quiet)
    return EXIT_OK


#: Run ``tf-lrp generate``; return the exit code (errors are printed, exit 2).
run = guarded(_run)
