"""Benchmark LRP against the gradient taken with the same library, in the same process.

    python scripts/benchmark.py --models vgg16 --batch-sizes 4 --quick
    python scripts/benchmark.py --models vgg16,resnet50,shipped --batch-sizes 1,4,16 \\
        --out benchmarks/RESULTS.md

For every model and batch size, each method is built fresh and called once (its *first call*:
building the analyzer, tracing and one run), then warmed up, then timed in interleaved rounds:
every round calls every method once, in a rotated order. Reported per method:

- the median steady-state time of one call (``__call__`` on a numpy batch, result as numpy);
- ``ratio``: the median over rounds of (method time / :class:`tf_lrp.analyzers.Gradient` time of
  the same round), so load from other processes cancels out;
- ``vs raw``: the same against a plain ``tf.function`` gradient of the raw Keras model output
  (reference only; the raw model keeps its softmax);
- the first-call time, and the trace time: first call minus the median (the cost of building
  and tracing the analyzer beyond one run);
- the peak memory of one steady-state call above the memory held before it, and its ratio to the
  Gradient's (see :func:`memory_worker` for how it is measured).

Models need no download: ``vgg16``/``resnet50`` are ``keras.applications`` architectures with
random weights (``weights=None``) at 224x224; ``lstm`` and ``transformer`` are sequence
classifiers with random weights over 128 tokens (vocabulary 1000, Embedding 64, LSTM 128; two
Transformer blocks of 4 heads, feed-forward 128) (:func:`sequence_model`); ``shipped`` means
every model in ``saved_models/``, and any other entry is a path to a model file. Inputs are
uniform in [-1, 1], token ids uniform over the vocabulary for models with integer inputs (no
raw gradient row: a token id has none); ``EpsilonGammaBox`` uses the bounds ``low=-1, high=1``.
For sequence models pass ``--composites attn_lrp,cp_lrp,epsilon``; ``hub_bert``,
``hub_llama`` and ``hub_llama_lm`` are KerasHub models (:func:`hub_model`, ``.[hub]``). The same script runs on a GPU unchanged when one is visible.

Progress goes to stderr, the markdown table to stdout (and is appended to ``--out``).

``--crp`` runs only the Concept Relevance Propagation benchmark instead (:func:`crp_benchmark`):
``k`` conditional heatmaps of one layer in one batched call against ``k`` separate
explanations, on VGG-16 (random weights) by default::

    python scripts/benchmark.py --crp --crp-layer block5_conv3 --crp-batch 4 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "saved_models"
COMPOSITES = ("epsilon", "EpsilonPlus", "EpsilonGammaBox", "EpsilonAlpha2Beta1")
GRADIENT = "Gradient"
RAW = "raw gradient"
#: Memory is measured in a child process started with these variables (see memory_worker).
MEMORY_ENV = {
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
COLUMNS = ("model", "batch", "method", "median s", "IQR s", "ratio", "vs raw", "first call s",
           "trace s", "peak MB", "mem ratio")

Explain = Callable[[np.ndarray], np.ndarray]
# keras.applications models end in a softmax; tf_lrp strips it and warns once per analyzer.
warnings.filterwarnings("ignore", message=".*ends in a softmax.*")


def log(message: str) -> None:
    """Progress to stderr."""
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- models
def expand_models(spec: str) -> list[str]:
    """Split ``--models``; ``shipped`` becomes every model file in ``saved_models/``."""
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item == "shipped":
            out += sorted(str(p) for p in SHIPPED.iterdir() if p.suffix in (".h5", ".keras"))
        else:
            out.append(item)
    return out


def model_name(spec: str) -> str:
    """A short display name for a model spec."""
    return Path(spec).stem if spec not in ("vgg16", "resnet50", "lstm", "transformer", *HUB) \
        else spec


SEQUENCE_LENGTH, VOCABULARY = 128, 1000


def sequence_model(kind: str):
    """A sequence classifier with random weights: ``"lstm"`` (Embedding -> LSTM(128) -> Dense)
    or ``"transformer"`` (Embedding + positions -> 2 blocks of MultiHeadAttention(4 x 16),
    residual, LayerNormalization, feed-forward GELU 128 -> 64, residual, LayerNormalization ->
    average pooling -> Dense)."""
    import keras
    from keras import layers as kl

    tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32")
    x = kl.Embedding(VOCABULARY, 64)(tokens)
    if kind == "lstm":
        return keras.Model(tokens, kl.Dense(4)(kl.LSTM(128)(x)), name="lstm")
    positions = np.random.default_rng(0).normal(0, 0.1, (1, SEQUENCE_LENGTH, 64)).astype("float32")
    x = x + positions
    for _ in range(2):
        x = kl.LayerNormalization()(kl.Add()([x, kl.MultiHeadAttention(4, 16)(x, x)]))
        f = kl.Dense(64)(kl.Dense(128, activation="gelu")(x))
        x = kl.LayerNormalization()(kl.Add()([x, f]))
    return keras.Model(tokens, kl.Dense(4)(kl.GlobalAveragePooling1D()(x)), name="transformer")


HUB = ("hub_bert", "hub_llama", "hub_llama_lm")


def hub_model(kind: str):
    """A KerasHub model with random weights (vocabulary 1000, 4 layers, hidden 256, 4 heads,
    intermediate 512; inputs ``[padding_mask, token_ids]`` or ``[padding_mask, segment_ids,
    token_ids]`` of 128 tokens): ``hub_bert`` (BertBackbone, pooled output -> Dense(4)),
    ``hub_llama`` (LlamaBackbone with 2 key/value heads, last position -> Dense(4)) and
    ``hub_llama_lm`` (LlamaCausalLM: the explained output is one next-token logit of
    ``(128, 1000)``)."""
    import keras
    import keras_hub

    size = dict(vocabulary_size=VOCABULARY, num_layers=4, hidden_dim=256, intermediate_dim=512)
    if kind == "hub_bert":
        b = keras_hub.models.BertBackbone(num_heads=4, max_sequence_length=SEQUENCE_LENGTH,
                                          **size)
        return keras.Model(b.inputs, keras.layers.Dense(4)(b.outputs[1]), name=kind)
    b = keras_hub.models.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **size)
    if kind == "hub_llama_lm":
        return keras_hub.models.LlamaCausalLM(backbone=b, preprocessor=None)
    return keras.Model(b.inputs, keras.layers.Dense(4)(b.output[:, -1]), name=kind)


def build_model(spec: str):
    """``vgg16``/``resnet50``, a sequence or KerasHub model with random weights, or a model
    file."""
    import keras

    import tf_lrp

    keras.utils.set_random_seed(0)
    if spec in HUB:
        return hub_model(spec)
    if spec == "vgg16":
        return keras.applications.VGG16(weights=None)
    if spec == "resnet50":
        return keras.applications.ResNet50(weights=None)
    if spec in ("lstm", "transformer"):
        return sequence_model(spec)
    return tf_lrp.load_model(spec)


def is_token_model(model) -> bool:
    """Whether the model's input is integer token ids."""
    return "int" in str(model.inputs[0].dtype)


def make_input(model, batch: int, seed: int = 0) -> np.ndarray | list[np.ndarray]:
    """A float32 batch uniform in [-1, 1] for a single-input model (token ids for a model with
    an integer input, uniform over its Embedding's vocabulary); for a KerasHub model a list in
    its input order (no padding, segment 0)."""
    if len(model.inputs) > 1:
        rng = np.random.default_rng(seed)
        return [rng.integers(1, VOCABULARY, (batch, SEQUENCE_LENGTH)).astype("int32")
                if kt.name == "token_ids" else np.full(
                    (batch, SEQUENCE_LENGTH), int(kt.name == "padding_mask"), "int32")
                for kt in model.inputs]
    shape = tuple(d or SEQUENCE_LENGTH for d in model.inputs[0].shape[1:])
    rng = np.random.default_rng(seed)
    if is_token_model(model):
        import keras

        vocab = next(layer.input_dim for layer in model.layers
                     if isinstance(layer, keras.layers.Embedding))
        return rng.integers(1, vocab, (batch, *shape)).astype("int32")
    return rng.uniform(-1, 1, (batch, *shape)).astype("float32")


# ------------------------------------------------------------------------------- methods
def make_composite(name: str):
    """The composite benchmarked under ``name`` (a preset class name or a registered name)."""
    from tf_lrp import composites

    presets = {
        "epsilon": lambda: composites.get("epsilon"),
        "EpsilonPlus": composites.EpsilonPlus,
        "EpsilonGammaBox": lambda: composites.EpsilonGammaBox(low=-1.0, high=1.0),
        "EpsilonAlpha2Beta1": composites.EpsilonAlpha2Beta1,
    }
    return presets[name]() if name in presets else composites.get(name)


def raw_gradient(model) -> Explain:
    """A plain ``tf.function`` gradient of the raw model's highest output w.r.t. its input."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)

    @tf.function(input_signature=[spec])
    def grad(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = model(x, training=False)
            selected = tf.reduce_sum(tf.reduce_max(tf.reshape(y, (tf.shape(y)[0], -1)), axis=1))
        return tape.gradient(selected, x)

    return lambda x: grad(x).numpy()


def method_factories(model, composites: Sequence[str]) -> dict[str, Callable[[], Explain]]:
    """Builders of every benchmarked method, raw gradient and Gradient first."""
    import tf_lrp

    factories: dict[str, Callable[[], Explain]] = {}
    if len(model.inputs) == 1 and not is_token_model(model):
        factories[RAW] = lambda: raw_gradient(model)
    factories[GRADIENT] = lambda: tf_lrp.analyzers.Gradient(model)
    for name in composites:
        factories[name] = lambda name=name: tf_lrp.Analyzer(model, make_composite(name))
    return factories


# ------------------------------------------------------------------------------- timing
def _timed(fn: Explain, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def benchmark(model, x: np.ndarray, composites: Sequence[str] = COMPOSITES, repeats: int = 10,
              warmup: int = 1) -> list[dict]:
    """Time every method on ``x``; one row (dict) per method.

    Parameters
    ----------
    model
        A Keras model.
    x
        The input batch.
    composites
        Names understood by :func:`make_composite`.
    repeats
        Interleaved timing rounds (each calls every method once).
    warmup
        Untimed calls per method after its first call.

    Returns
    -------
    list of dict
        Keys ``method``, ``median_s``, ``q1_s``, ``q3_s``, ``ratio`` (median over rounds of the
        time over the Gradient's time in the same round), ``ratio_raw`` (the same against the raw
        gradient; ``nan`` without one), ``first_call_s`` (build + trace + one run).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    fns: dict[str, Explain] = {}
    first: dict[str, float] = {}
    for name, factory in method_factories(model, composites).items():
        t0 = time.perf_counter()
        fns[name] = factory()
        fns[name](x)
        first[name] = time.perf_counter() - t0
        log(f"    {name}: first call {first[name]:.2f} s")
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(_timed(fns[name], x))
    rows = []
    for name in names:
        t = np.asarray(times[name])
        rows.append({
            "method": name,
            "median_s": float(np.median(t)),
            "q1_s": float(np.percentile(t, 25)),
            "q3_s": float(np.percentile(t, 75)),
            "ratio": float(np.median(t / np.asarray(times[GRADIENT]))),
            "ratio_raw": float(np.median(t / np.asarray(times[RAW]))) if RAW in times
            else float("nan"),
            "first_call_s": first[name],
        })
    return rows


# ------------------------------------------------------------------------------- CRP
CRP_BATCHED, CRP_PLAIN, CRP_SINGLE = "1 call, k conditions", "k explanations", \
    "k calls, 1 condition each"
CRP_FORWARD = "forward pass (once)"


def crp_model(size: int = 224):
    """VGG-16 with random weights at ``size`` x ``size`` (below 224 without the flattening
    top: global average pooling, then Dense(1000))."""
    import keras

    keras.utils.set_random_seed(0)
    if size == 224:
        return keras.applications.VGG16(weights=None)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3),
                                    pooling="avg")
    return keras.Model(base.input, keras.layers.Dense(1000)(base.output), name="vgg16")


def crp_benchmark(model, x: np.ndarray, layer: str, k: int = 8, composite: str = "EpsilonPlus",
                  repeats: int = 5, warmup: int = 1) -> dict:
    """Time ``k`` conditional heatmaps of ``layer`` (channels ``0..k-1``) in one call of
    :meth:`tf_lrp.Analyzer.conditional` against ``k`` separate explanations of ``x``
    (``analyzer(x)``) and against ``k`` calls with one condition each, in interleaved rounds
    (rotated order) on one analyzer; the forward pass alone (``analyzer.predict``) is timed in
    the same rounds, for the ratio that sharing only the forward pass would give.

    Returns
    -------
    dict
        ``median_s`` and ``q1_s``/``q3_s`` per method (one batched call; all ``k`` separate
        calls together), ``ratio`` and ``ratio_single`` (median over rounds of the batched
        time over the ``k`` separate explanations' / single-condition calls' time of the same
        round), ``ratio_forward_shared`` (that ratio, median over rounds),
        ``first_call_s`` per method, ``max_abs_diff`` (batched heatmaps against the
        single-condition ones, relative to their largest ``|R|``), ``times_s`` (every round).
    """
    import tf_lrp

    analyzer = tf_lrp.Analyzer(model, make_composite(composite))
    conditions = [{layer: [c]} for c in range(k)]
    methods = {
        CRP_BATCHED: lambda: analyzer.conditional(x, None, conditions),
        CRP_PLAIN: lambda: [analyzer(x) for _ in range(k)],
        CRP_SINGLE: lambda: [analyzer(x, conditions=c) for c in conditions],
        CRP_FORWARD: lambda: analyzer.predict(x),
    }
    first, outputs = {}, {}
    for name, fn in methods.items():
        t0 = time.perf_counter()
        outputs[name] = fn()
        first[name] = time.perf_counter() - t0
        log(f"    {name}: first call {first[name]:.2f} s")
    batched, single = outputs[CRP_BATCHED], np.stack(outputs[CRP_SINGLE], axis=1)
    diff = float(np.abs(batched - single).max() / max(np.abs(single).max(), 1e-30))
    for fn in methods.values():
        for _ in range(warmup):
            fn()
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
        log(f"    round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
    t = {n: np.asarray(v) for n, v in times.items()}
    return {
        "median_s": {n: float(np.median(v)) for n, v in t.items()},
        "q1_s": {n: float(np.percentile(v, 25)) for n, v in t.items()},
        "q3_s": {n: float(np.percentile(v, 75)) for n, v in t.items()},
        "ratio": float(np.median(t[CRP_BATCHED] / t[CRP_PLAIN])),
        "ratio_single": float(np.median(t[CRP_BATCHED] / t[CRP_SINGLE])),
        # expected from sharing the forward pass alone: (F + k (E - F)) / (k E), E = one
        # explanation, F = the forward pass, per round
        "ratio_forward_shared": float(np.median(
            (t[CRP_FORWARD] + t[CRP_PLAIN] - t[CRP_FORWARD] * k) / t[CRP_PLAIN])),
        "first_call_s": first, "max_abs_diff": diff, "rounds": repeats,
        "times_s": {n: [float(v) for v in vs] for n, vs in times.items()},
    }


def crp_table(result: dict, k: int) -> str:
    """The CRP benchmark as a markdown table."""
    lines = ["| method | median s | IQR s | first call s |", "|---|---|---|---|"]
    for name in (CRP_BATCHED, CRP_PLAIN, CRP_SINGLE, CRP_FORWARD):
        if name not in result["median_s"]:
            continue
        label = name.replace("k ", f"{k} ")
        lines.append(f"| {label} | {_fmt(result['median_s'][name], 2)} | "
                     f"{_fmt(result['q1_s'][name], 2)}-{_fmt(result['q3_s'][name], 2)} | "
                     f"{_fmt(result['first_call_s'][name], 2)} |")
    lines.append("")
    lines.append(f"ratio (batched / {k} explanations, median over rounds): "
                 f"**{result['ratio']:.2f}**; batched / {k} single-condition calls: "
                 f"{result['ratio_single']:.2f}; batched heatmaps vs single-condition ones: "
                 f"max |diff| / max |R| = {result['max_abs_diff']:.1e}")
    if "ratio_forward_shared" in result:
        lines.append("")
        lines.append(f"expected from sharing the forward pass alone, if the backward pass of "
                     f"{k} conditions cost {k} backward passes: (F + {k} (E - F)) / ({k} E) = "
                     f"{result['ratio_forward_shared']:.2f} (E: one explanation, F: the forward "
                     "pass; per round, median). Lower: the larger batch ran more efficiently; "
                     "higher: it ran less efficiently")
    times = {n: np.asarray(v) for n, v in result.get("times_s", {}).items()}
    if times:
        per_round = times[CRP_BATCHED] / times[CRP_PLAIN]
        lines.append("")
        lines.append(f"per-round ratios (batched / {k} explanations): "
                     + ", ".join(f"{r:.2f}" for r in per_round)
                     + f"; rounds at or under 0.60: {int(np.sum(per_round <= 0.6))} of "
                       f"{len(per_round)}")
    return "\n".join(lines)


def run_crp(args: argparse.Namespace) -> str:
    """``--crp``: the CRP benchmark as a markdown section."""
    model = crp_model(args.crp_size)
    x = make_input(model, args.crp_batch)
    log(f"CRP: vgg16 {args.crp_size}x{args.crp_size}, batch {args.crp_batch}, "
        f"{args.crp_conditions} conditions on {args.crp_layer}")
    result = crp_benchmark(model, x, args.crp_layer, args.crp_conditions, args.crp_composite,
                           args.repeats, args.warmup)
    return (f"## CRP: {args.crp_conditions} conditional heatmaps in one call, {machine()}\n\n"
            f"`python scripts/benchmark.py {' '.join(args.argv)}`: VGG-16 (random weights) "
            f"{args.crp_size}x{args.crp_size}, batch {args.crp_batch}, {args.crp_composite}, "
            f"conditions on channels 0..{args.crp_conditions - 1} of {args.crp_layer}; "
            f"{args.repeats} interleaved rounds after {args.warmup} warm-up call(s).\n\n"
            f"{crp_table(result, args.crp_conditions)}\n")


def _generation_methods(t: int) -> dict:
    """The methods :func:`run_generation` times, on ``hub_llama_lm`` with 128 random tokens."""
    import tf_lrp

    model = build_model("hub_llama_lm")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCABULARY, (1, SEQUENCE_LENGTH)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
    analyzer = tf_lrp.Analyzer(model, "attn_lrp")
    gradient = tf_lrp.analyzers.Gradient(model)
    positions = np.arange(SEQUENCE_LENGTH - t - 1, SEQUENCE_LENGTH - 1)
    targets = positions * VOCABULARY + ids[0, positions + 1]
    return {
        f"{t} tokens, one call": lambda: analyzer.explain_outputs(x, targets[:, None]),
        f"{t} separate explanations": lambda: [analyzer(x, target=[int(i)]) for i in targets],
        "one explanation": lambda: analyzer(x, target=[int(targets[-1])]),
        "gradient of one logit": lambda: gradient(x, target=[int(targets[-1])]),
    }


def generation_memory_worker(t: int, calls: int = 2) -> dict:
    """Peak memory (MB) of one steady-state call of each generation method (in a child with
    :data:`MEMORY_ENV`, as :func:`memory_worker`)."""
    methods = _generation_methods(t)
    peaks = {}
    for name, fn in methods.items():
        fn()
        peaks[name] = max(_peak_of_call(lambda _, fn=fn: fn(), None, False)
                          for _ in range(calls))
    return {"peak_mb": peaks}


def run_generation(args: argparse.Namespace) -> str:
    """``--generation``: ``T`` generated tokens of ``hub_llama_lm`` explained in one call
    (:meth:`tf_lrp.Analyzer.explain_outputs`, the targets as ``T`` copies sharing the forward
    pass) against ``T`` separate explanations, as a markdown section. The sequence: 128 tokens
    (random ids), the last ``T`` of them the explained generated tokens; composite AttnLRP.
    Interleaved rounds (rotated order); a plain gradient of one logit in the same rounds. Peak
    memory of one call in a child process (:func:`generation_memory_worker`)."""
    t = args.generation_tokens
    methods = _generation_methods(t)
    names = list(methods)
    for name, fn in methods.items():
        t0 = time.perf_counter()
        fn()
        log(f"    {name}: first call {time.perf_counter() - t0:.2f} s")
    batched = np.asarray(methods[names[0]]()[1])[0]
    separate = np.stack([np.asarray(r[1])[0] for r in methods[names[1]]()])
    diff = float(np.abs(batched - separate).max() / np.abs(separate).max())
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            methods[name]()
            times[name].append(time.perf_counter() - t0)
    peak: dict = {}
    if not args.no_memory:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--generation", "--memory-worker",
               "--generation-tokens", str(t)]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, **MEMORY_ENV}, timeout=3600)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        peak = json.loads(lines[-1])["peak_mb"] if lines else {}
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = statistics.median(a / b for a, b in zip(times[names[0]], times[names[1]]))
    rows = "\n".join(f"| {n} | {med[n]:.3f} | {med[n] / med[names[1]]:.2f} | "
                      f"{_fmt(peak.get(n), 0)} |" for n in names)
    return (f"## Generation: {t} generated tokens explained in one call, {machine()}\n\n"
            f"`python scripts/benchmark.py {' '.join(args.argv)}`: hub_llama_lm (LlamaCausalLM, "
            f"4 layers, hidden 256, vocabulary {VOCABULARY}, random weights), {SEQUENCE_LENGTH} "
            f"tokens, AttnLRP; the last {t} tokens' logits explained; {args.repeats} interleaved "
            f"rounds; peak memory of one call above the memory held before it (child process, "
            f"as for the tables above).\n\n| method | median s | / {t} separate | peak MB |\n"
            f"|---|---|---|---|\n{rows}\n\nOne call / {t} separate, median over rounds: "
            f"**{ratio:.2f}**; largest difference of the rows from the separate explanations: "
            f"{diff:.1e} of max|R|.\n")


# ------------------------------------------------------------------------------- memory
def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of this process in MB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _peak_of_call(fn: Explain, x: np.ndarray, gpu: bool) -> float:
    """Peak memory (MB) of one call above what is held just before it."""
    import gc

    import tensorflow as tf

    gc.collect()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
        before = tf.config.experimental.get_memory_info("GPU:0")["current"]
        fn(x)
        return (tf.config.experimental.get_memory_info("GPU:0")["peak"] - before) / 2**20
    before, _ = _rss_mb()
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark to the current RSS
        f.write("5")
    fn(x)
    return _rss_mb()[1] - before


def memory_worker(spec: str, batch: int, composites: Sequence[str], calls: int = 2) -> dict:
    """Peak memory of one steady-state call per method, in this process (run it in a child).

    On a GPU: ``get_memory_info('GPU:0')['peak']`` after ``reset_memory_stats``, minus the
    memory in use before the call. On CPU (``get_memory_info('CPU:0')`` reports 0 there): the
    process's peak resident set size (``VmHWM``, reset through ``/proc/self/clear_refs``) minus
    the RSS before the call. That only sees freed memory if it goes back to the OS, so the child
    runs with oneDNN off (its allocator pools freed blocks) and glibc told to ``mmap`` every block
    over 64 KiB (:data:`MEMORY_ENV`). Each method is called once untraced, then ``calls`` times;
    the largest peak counts.
    """
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    model = build_model(spec)
    x = make_input(model, batch)
    out = {"device": "GPU:0" if gpu else "CPU", "peak_mb": {}}
    for name, factory in method_factories(model, composites).items():
        fn = factory()
        fn(x)
        out["peak_mb"][name] = max(_peak_of_call(fn, x, gpu) for _ in range(calls))
        del fn
    return out


def measure_memory(spec: str, batch: int, composites: Sequence[str],
                   timeout: float = 3600) -> dict[str, float]:
    """Run :func:`memory_worker` in a fresh child process; method -> peak MB (empty on failure)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", "--models", spec,
           "--batch-sizes", str(batch), "--composites", ",".join(composites)]
    env = {**os.environ, **MEMORY_ENV}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"    memory: timed out after {timeout:.0f} s")
        return {}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        log(f"    memory: child failed (exit {done.returncode}): {done.stderr[-2000:]}")
        return {}
    return json.loads(lines[-1])["peak_mb"]


# ------------------------------------------------------------------------------- report
def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table (columns :data:`COLUMNS`)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [r["model"], str(r["batch"]), r["method"], _fmt(r["median_s"], 3),
                 f"{_fmt(r['q1_s'], 3)}-{_fmt(r['q3_s'], 3)}", _fmt(r["ratio"]),
                 _fmt(r["ratio_raw"]), _fmt(r["first_call_s"]),
                 _fmt(r["first_call_s"] - r["median_s"]), _fmt(r.get("peak_mb"), 1),
                 _fmt(r.get("mem_ratio"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo where there is one)."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def machine() -> str:
    """CPU model, cores, device, Python/TF/Keras versions and the date."""
    import keras
    import tensorflow as tf

    cpu = cpu_name()
    gpus = tf.config.list_physical_devices("GPU")
    device = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                       for g in gpus) or "CPU only"
    return (f"{cpu}, {os.cpu_count()} cores ({device}); Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}; "
            f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")


def report(rows: Sequence[dict], args: argparse.Namespace, memory: bool) -> str:
    """Header naming the machine and the run, then the table."""
    how = ("peak MB: one steady-state call in a child process (oneDNN off, glibc mmap threshold "
           "64 KiB; VmHWM reset via /proc/self/clear_refs, minus RSS before the call; on GPU "
           "get_memory_info peak)" if memory else "memory not measured")
    return (f"## {machine()}\n\n"
            f"`python scripts/benchmark.py {' '.join(args.argv)}`: {args.repeats} interleaved "
            f"rounds after {args.warmup} warm-up call(s); ratio = median over rounds of time / "
            f"tf_lrp Gradient time in the same round; vs raw = same against a plain tf.function "
            f"gradient of the Keras model; first call = build + trace + one run; trace = first call - median; {how}.\n\n"
            f"{markdown_table(rows)}\n")


def _append(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` atomically (write a temp file, then replace)."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(old.rstrip("\n") + "\n\n" + text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg16,resnet50,shipped",
                   help="comma-separated: vgg16, resnet50, shipped, or model file paths")
    p.add_argument("--batch-sizes", default="1,4,16")
    p.add_argument("--composites", default=",".join(COMPOSITES))
    p.add_argument("--repeats", type=int, default=10, help="interleaved timing rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    p.add_argument("--quick", action="store_true", help="3 rounds, no warm-up beyond the first call")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--out", type=Path, default=None, help="append the table to this markdown file")
    p.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--crp", action="store_true",
                   help="run only the CRP benchmark: k conditional heatmaps in one call vs k "
                        "explanations (VGG-16; see --crp-*)")
    p.add_argument("--crp-layer", default="block5_conv3", help="the conditioned layer")
    p.add_argument("--crp-conditions", type=int, default=8, help="conditions (k)")
    p.add_argument("--crp-batch", type=int, default=4, help="batch size")
    p.add_argument("--crp-size", type=int, default=224, help="input height and width")
    p.add_argument("--crp-composite", default="EpsilonPlus", help="composite")
    p.add_argument("--generation", action="store_true",
                   help="run only the generation benchmark: T generated tokens of hub_llama_lm "
                        "explained in one call vs T explanations")
    p.add_argument("--generation-tokens", type=int, default=16, help="generated tokens (T)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.repeats, args.warmup = 3, 0
    args.model_list = expand_models(args.models)
    args.batch_list = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.composite_list = [c.strip() for c in args.composites.split(",") if c.strip()]
    return args


def run(args: argparse.Namespace) -> list[dict]:
    """Benchmark every model x batch size; rows with memory columns filled in."""
    rows = []
    for spec in args.model_list:
        model = build_model(spec)
        for batch in args.batch_list:
            log(f"{model_name(spec)} batch {batch}: timing")
            x = make_input(model, batch)
            part = benchmark(model, x, args.composite_list, args.repeats, args.warmup)
            peaks = {}
            if not args.no_memory:
                log(f"{model_name(spec)} batch {batch}: memory (child process)")
                peaks = measure_memory(spec, batch, args.composite_list)
            base = peaks.get(GRADIENT)
            for r in part:
                peak = peaks.get(r["method"])
                r.update(model=model_name(spec), batch=batch, peak_mb=peak,
                         mem_ratio=peak / base if peak is not None and base else None)
            rows += part
            log(markdown_table(part))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker and args.generation:
        print(json.dumps(generation_memory_worker(args.generation_tokens)))
        return 0
    if args.memory_worker:
        out = memory_worker(args.model_list[0], args.batch_list[0], args.composite_list)
        print(json.dumps(out))
        return 0
    if args.crp or args.generation:
        text = run_crp(args) if args.crp else run_generation(args)
        print(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            _append(args.out, text)
        return 0
    rows = run(args)
    text = report(rows, args, memory=not args.no_memory)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _append(args.out, text)
        log(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
