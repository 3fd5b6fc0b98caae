"""``tf-lrp explain``: stream inputs through the analyzer into per-sample files or shards.

::

    entries (lazy, numbered) -> sink.plan (--resume drops finished work)
        -> engine (tf.data decode + analyzer, on one device, every device, or a Ray cluster)
        -> sink.write (durable per batch / per shard) -> summary.csv or index.csv, skipped.csv
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

import numpy as np

from tf_lrp.cli.common import (
    EXIT_OK,
    EXIT_SKIPPED,
    SCALES,
    UsageError,
    engine,
    note,
)
from tf_lrp.cli.modelsetup import build_analyzer, setup_model
from tf_lrp.runs.inputs import Decoded, Entry, InputSpec, decoded_chunks, iter_entries
from tf_lrp.runs.outputs import Progress, Result, Skipped, locked, output_dir, remove_temporaries


def input_spec(analyzer) -> InputSpec:
    """The single input of the analyzer's model; :class:`UsageError` for multi-input models."""
    shapes = analyzer.graph.input_shapes
    if len(shapes) != 1:
        raise UsageError(
            f"the model has {len(shapes)} inputs ({', '.join(analyzer.graph.input_names)}); "
            "tf-lrp explain handles single-input models: use tf_lrp.Analyzer from Python"
        )
    return InputSpec(tuple(shapes[0]))


def check_target(analyzer, target: int | None) -> None:
    n = analyzer.num_outputs
    if target is not None and n is not None and target >= n:
        raise UsageError(f"--target {target} is out of range: the model explains {n} outputs "
                         f"(classes 0..{n - 1})")


#: Per-sample file formats: pictures, raw relevance, and for token models a table and a page.
FILE_FORMATS = ("png", "npy", "csv", "html")
#: The default for models whose input is token ids.
TOKEN_FORMATS = "png,npy,csv,html"


def parse_formats(text: str | None) -> tuple[str, ...]:
    """``--format``: ``shards``, or a comma list of ``png``, ``npy`` (and for token models
    ``csv``, ``html``)."""
    text = "png,npy" if text is None else text
    parts = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if parts == ("shards",):
        return parts
    if not parts or any(p not in FILE_FORMATS for p in parts):
        raise UsageError(f"--format {text!r}: expected png,npy (per-sample files, the default), "
                         "png, npy, csv, html (token models: per-token tables and coloured "
                         "tokens), or shards")
    return tuple(p for p in FILE_FORMATS if p in parts)


def read_vocab(path: str | None) -> list[str] | None:
    """``--vocab``: one token string per line, line ``i`` naming token id ``i``."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").rstrip("\r") for line in f]
    except OSError as err:
        raise UsageError(f"--vocab {path}: cannot be read ({err.strerror or err})") from None


class LocalEngine:
    """Decode with ``tf.data`` and explain in this process (on one device or, with a
    strategy, split over several: :func:`tf_lrp.distribute.explain`)."""

    def __init__(self, analyzer, spec: InputSpec, args, strategy=None):
        self.analyzer, self.spec, self.args, self.strategy = analyzer, spec, args, strategy

    def results(self, entries: Iterable[Entry]) -> Iterator[list[Result]]:
        scale = SCALES[self.args.scale]
        for chunk in decoded_chunks(entries, self.spec, scale, self.args.batch_size):
            yield self.explain_chunk(chunk)

    def explain_chunk(self, chunk: Decoded) -> list[Result]:
        results = [Result(entry, x, problem=problem) for entry, x, problem in chunk]
        groups: dict[tuple[int, ...], list[Result]] = {}
        for result in results:
            if result.problem is None:
                groups.setdefault(result.x.shape, []).append(result)
        for group in groups.values():  # one group unless the model takes any size
            self._group(group)
        return results

    def _group(self, group: list[Result]) -> None:
        x = np.stack([r.x for r in group])
        todo = np.array([r.entry.explain for r in group])
        target = self.args.target
        if todo.all():
            relevance, y = self._call(self._explain, x, target)
        else:
            y = self._call(self.analyzer.predict, x)
            relevance = None
            if todo.any():
                relevance = np.zeros_like(x)
                relevance[todo] = self._call(self._explain, x[todo], target)[0]
        everything = self.args.start == "all"
        for i, result in enumerate(group):
            result.predicted = int(np.argmax(y[i]))
            result.explained = None if everything else (
                target if target is not None else result.predicted)
            result.logit = float(y[i].sum() if everything else y[i][result.explained])
            if relevance is not None and todo[i]:
                result.relevance = relevance[i]

    def _explain(self, x, target):
        from tf_lrp import distribute

        if self.strategy is None:
            return self.analyzer.explain_and_predict(x, target)
        return distribute.explain(self.analyzer, x, self.strategy, target, return_outputs=True)

    def _call(self, fn, *arguments):
        errors = sys.modules["tf_lrp.errors"]
        try:
            return fn(*arguments)
        except errors.LRPError:
            raise
        except Exception as err:
            raise UsageError(f"explaining with {self.args.model} failed: "
                             f"{type(err).__name__}: {err}") from err


def _strategy(args):
    if args.devices is None:
        return None
    from tf_lrp import distribute

    try:
        return distribute.strategy_for(args.devices)
    except ValueError as err:
        raise UsageError(f"--devices {args.devices}: {err}") from None


def _ray_engine(args, setup, spec):
    if not spec.fixed:
        raise UsageError(f"--ray needs a model with a fixed input shape; this one takes "
                         f"{spec.shape}. Run without --ray")
    try:
        from tf_lrp import ray as lrp_ray
    except ImportError as err:
        raise UsageError(f"--ray: {err}") from None
    from tf_lrp.cli.modelsetup import model_output

    return lrp_ray.EntryEngine(args, setup, spec, scale=SCALES[args.scale],
                               output=model_output(args.model_output))


def _sink(args, out, spec, skip, tokens: bool = False):
    formats = parse_formats(args.format if args.format is not None or not tokens
                            else TOKEN_FORMATS)
    if not tokens and any(f in formats for f in ("csv", "html")):
        raise UsageError("--format csv and html are per-token outputs, for models whose input "
                         "is token ids (an Embedding reading the model input)")
    if formats == ("shards",):
        from tf_lrp.runs.shards import ShardSink

        if not spec.fixed:
            raise UsageError(
                f"--format shards needs a model with a fixed input shape; this one takes "
                f"{spec.shape} (any size). Use --format png,npy, which keeps each sample's size")
        return ShardSink(out, args.shard_size, tuple(spec.shape), args.resume, skip)
    from tf_lrp.cli.files import FileSink

    vocab = read_vocab(getattr(args, "vocab", None)) if tokens else None
    return FileSink(out, formats, args.resume, skip, args.zoom, args.quiet, tokens=tokens,
                    vocab=vocab)


def cmd_explain(args) -> int:
    """Run ``tf-lrp explain``; return the exit code."""
    parse_formats(args.format)  # a bad --format fails before the model loads
    tf_lrp = engine()
    strategy = _strategy(args)
    from tf_lrp import distribute

    with distribute.scope(strategy):
        analyzer, _, setup = build_analyzer(tf_lrp, args, start=args.start,
                                            setup=setup_model(tf_lrp, args))
    if analyzer.token_inputs:
        note("input: token ids (.npy arrays of integers; no pixel range)", args.quiet)
    else:
        setup.report_range(args.quiet)
    spec = input_spec(analyzer)
    check_target(analyzer, args.target)
    if strategy is not None:
        note(f"{strategy.num_replicas_in_sync} devices: "
             f"{', '.join(strategy.extended.worker_devices)}", args.quiet)
    out = output_dir(args.out)
    with locked(out):
        remove_temporaries(out)
        skip = Skipped(out)
        tokens = bool(analyzer.token_inputs)
        if getattr(args, "vocab", None) and not tokens:
            raise UsageError("--vocab names the tokens of a model whose input is token ids; "
                             "this model's input is not")
        sink = _sink(args, out, spec, skip, tokens)
        if args.ray is not None:
            runner = _ray_engine(args, setup, spec)
        else:
            runner = LocalEngine(analyzer, spec, args, strategy)
        progress = Progress(lambda: sum(1 for _ in iter_entries(args.inputs, spec)), args.quiet)
        complete, counted = False, 0
        try:
            for results in runner.results(sink.plan(iter_entries(args.inputs, spec))):
                sink.write(results, SCALES[args.scale])
                done = sink.done  # finished earlier (--resume): they count towards the total
                progress.update(len(results) + done - counted)
                counted = done
            complete = True
        finally:
            seconds = progress.close()
            sink.close(complete)
    if not args.quiet:
        rate = sink.explained / max(seconds, 1e-9)
        print(f"tf-lrp: {sink.explained} explained, {sink.done} already done, {skip.count} "
              f"skipped; outputs in {out} ({seconds:.1f} s, {rate:.1f} samples/s)")
    return EXIT_SKIPPED if skip.count else EXIT_OK
