"""Every ``keras.applications`` constructor explained with tf_lrp's composites.

    python scripts/zoo.py                                   # every constructor, 96x96
    python scripts/zoo.py --models smallest                 # the smallest member of each family
    python scripts/zoo.py --models VGG16,MobileNet --size 128 --out /tmp/zoo.md

Each constructor is built with ``weights=None`` (no download) at ``--size`` (or the smallest
size the constructor accepts, if larger), ``classifier_activation=None``, in a child process of
its own (TensorFlow does not free graphs; a crash or time-out costs one row). In the child:

1. A fixed seeded random "image" batch, uniform in 0..255, goes through the family's own
   ``keras.applications.<family>.preprocess_input``: that is the model input ``x``. The bounds of
   ``EpsilonGammaBox``'s z^B rule are ``preprocess_input`` of an all-0 and an all-255 image (per
   channel; 0 and 255 for the families whose model rescales its input itself).
2. :func:`rescale_kernels` divides every kernel so that its layer's pre-activation output on ``x``
   has unit RMS: random initialisations otherwise let the logits of some families vanish
   (MobileNet's highest logit is ~1e-19 at 96x96), which hides wrong relevance. Biases stay zero
   and BatchNormalization keeps its initial statistics, so every layer is bias-free.
3. For each composite (``EpsilonPlus``, ``EpsilonAlpha2Beta1``, ``EpsilonGammaBox``): the first
   call (building the analyzer + tracing + one explanation), then the median of a few further
   calls interleaved with :class:`tf_lrp.analyzers.Gradient` calls on the same batch (the ratio
   is the median over rounds of analyzer time / gradient time, as in ``scripts/benchmark.py``);
   per sample ``sum(R) / logit`` for the explained (highest) logit and ``max|R| / |logit|``.
4. On networks whose only nonlinearities are ReLU/ReLU6, max pooling and routing (no gates),
   LRP-0 (``tf_lrp.Analyzer(model, rules.Zero())``) must equal gradient x input (a plain
   ``tf.GradientTape`` on the raw Keras model): reported as max|LRP-0 - GxI| / max|GxI|, in
   float32 and, with the same weights, in float64 (where both should agree to ~1e-10; in
   float32 Keras's own gradient is off by up to ~1e-2 of its maximum on deep nets).

Goals checked per row: ``EpsilonPlus`` conserves within 1 %; so does ``EpsilonAlpha2Beta1`` on
models without depthwise convolutions (see :data:`ALPHA_BETA_NOTE` for the others);
``EpsilonGammaBox`` never inflates (``|sum R| <= 2 |logit|``, ``max|R| <= 10 |logit|``).

Each child writes ``<results>/<constructor>.json``; the parent then writes the markdown report
(``--out``, default ``benchmarks/ZOO.md``) from every result file in ``--results``, so subsets
can be re-run (``--models``) and merged. Progress goes to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COMPOSITES = ("EpsilonPlus", "EpsilonAlpha2Beta1", "EpsilonGammaBox")
#: the smallest member of every family (``--models smallest``)
SMALLEST = ("VGG16", "ResNet50", "ResNet50V2", "InceptionV3", "InceptionResNetV2", "Xception",
            "MobileNet", "MobileNetV2", "MobileNetV3Small", "DenseNet121", "NASNetMobile",
            "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny")
#: tolerances of the goals
CONSERVE_TOL = 0.01
GAMMA_SUM_MAX = 2.0
GAMMA_ELEMENT_MAX = 10.0
LRP0_TOL = {"float32": 2e-2, "float64": 1e-8}
#: activations under which LRP-0 equals gradient x input (with max pooling and linear layers)
PIECEWISE_LINEAR = {"relu", "relu6", "linear"}

ALPHA_BETA_NOTE = """\
`EpsilonAlpha2Beta1` gives a convolution's input `R_j = sum_k (alpha z+_jk / z+_k - beta z-_jk /
z-_k) R_k`: alpha = 2 times the positive share of output k minus beta = 1 times its negative
share. It conserves (`alpha - beta = 1`) only where an output has contributions of both signs.
Where all contributions `z_jk = a_j w_jk` of an output are positive, `z-_k = 0`, the negative
share is empty (a division by an exact zero passes nothing) and the output hands down
`alpha R_k = 2 R_k`; where all are negative, `-beta R_k = -R_k`. That is the rule as defined
(Bach et al. 2015; Montavon et al. 2019 state conservation only for outputs with both shares),
not an engine error, and tf_lrp does not renormalise it away. In ordinary and separable
convolutions (tf_lrp takes the separable layer's effective kernel, a 3x3 window over every input
channel) each output sums hundreds of contributions and practically always has both signs. A
depthwise convolution's output sums one channel's 3x3 window, 9 contributions, fewer where the
input is a ReLU output with zeros or the window overlaps the padding: one-signed windows are
common, each passes 2 R_k, and the inflation compounds over the depthwise layers. The
`sum(R)/logit` column shows how much, for every model with depthwise convolutions."""


ZPLUS_NOTE = """\
`EpsilonPlus`'s z+ rule gives an output's relevance to its positive contributions, `R_j =
sum_k z+_jk / z+_k R_k` with `z+_k = sum_j x+_j w+_jk + x-_j w-_jk`. It conserves wherever
`z+_k > 0`. An output without any positive contribution (`z+_k = 0`, so its value is <= 0) has
nothing to hand its relevance to, and the rule drops it (a division by an exact zero passes
nothing; zennit's `ZPlus` does the same). In a ReLU network such an output is switched off
and carries no relevance, so nothing is lost. Under silu, GELU or hard swish, or on a linear
bottleneck (MobileNetV2/V3) or a residual stream (ConvNeXt), negative outputs carry relevance
(positive or negative), and what they carry is lost at z+ layers whose windows hold few
contributions: depthwise and grouped convolutions (9 or 49 per output, fewer at the border; on
the last stages of a 96 px input the map is 3x3 and most of each window is padding) and 1x1
convolutions with 16-32 input channels. For every row that misses the goal the script computes
`z+` itself from each layer's kernel and actual input and sums the relevance the analyzer puts on
outputs with `z+ = 0` (the *z+ = 0 outputs hold* figure): when it equals `1 - sum(R)/logit`,
that is the whole deviation."""


LRP0_NOTE = """\
Where one float32 column is ~1e-2 off the float64 truth and the other is not, a ReLU flipped: a
unit whose input lies within rounding of 0 is on in one forward pass and off in the other, and
the gradient (so gradient x input and LRP-0 alike) jumps there by that unit's whole share. Which
float32 computation lands on the float64 side depends on how the convolution kernels round
(Keras runs BatchNormalization after the convolution, tf_lrp folds it into the kernel; oneDNN on
or off), not on the relevance code. Checked on ResNet50: with oneDNN on, tf_lrp's LRP-0 is
1.4e-2 off and Keras's gradient x input 2.5e-6; with `TF_ENABLE_ONEDNN_OPTS=0` the two swap (the
same worst pixel, the same error), and the raw Keras float32 forward then differs from the float64
one in exactly one ReLU unit (`conv5_block1_1_relu`, input -1.7e-7 in float64, +5.4e-7 in
float32), where the layer-by-layer float32/float64 relevance difference jumps from 2e-6 to 2e-2.
In float64 no unit is that close to 0 and the two agree to ~1e-15."""


def log(message: str) -> None:
    """Progress to stdout."""
    print(message, flush=True)


# ------------------------------------------------------------------------------- constructors
def constructors() -> dict[str, Callable]:
    """Every model constructor in ``keras.applications`` and its submodules, by name.

    A constructor is a public callable whose name starts with a capital letter and that takes a
    ``weights`` argument; the same function exported by several submodules counts once.
    """
    import keras

    found: dict[str, Callable] = {}
    apps = keras.applications
    spaces = [apps] + [getattr(apps, n) for n in dir(apps)
                       if inspect.ismodule(getattr(apps, n)) and not n.startswith("_")]
    for space in spaces:
        for name in dir(space):
            obj = getattr(space, name)
            if name[:1].isupper() and callable(obj) and name not in found:
                try:
                    params = inspect.signature(obj).parameters
                except (TypeError, ValueError):
                    continue
                if "weights" in params:
                    found[name] = obj
    return dict(sorted(found.items()))


def family(fn: Callable):
    """The ``keras.applications`` submodule of a constructor (its ``preprocess_input``)."""
    import importlib

    return importlib.import_module("keras.applications." + fn.__module__.rsplit(".", 1)[1])


def build_model(name: str, size: int):
    """``keras.applications.<name>(weights=None)`` at ``size`` x ``size`` (or its minimum).

    ``classifier_activation=None`` where the constructor accepts it. If the constructor refuses
    ``size`` with "at least N", it is built at N.

    Returns
    -------
    (keras.Model, int)
        The model and the size it was built at.
    """
    import re

    import keras

    fn = constructors()[name]
    kwargs = {"weights": None}
    if "classifier_activation" in inspect.signature(fn).parameters:
        kwargs["classifier_activation"] = None
    keras.utils.set_random_seed(0)
    try:
        return fn(input_shape=(size, size, 3), **kwargs), size
    except ValueError as exc:
        found = re.search(r"at least (\d+)", str(exc))
        if not found or int(found.group(1)) <= size:
            raise
        size = int(found.group(1))
        keras.utils.set_random_seed(0)
        return fn(input_shape=(size, size, 3), **kwargs), size


def model_inputs(name: str, batch: int, size: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model input and the z^B bounds, through the family's ``preprocess_input``.

    Returns
    -------
    (x, low, high)
        ``x``: a seeded random image batch uniform in 0..255, preprocessed, float32
        ``(batch, size, size, 3)``; ``low``/``high``: ``preprocess_input`` of an all-0 and an
        all-255 pixel, per channel ``(3,)`` (elementwise min/max of the two).
    """
    prep = family(constructors()[name]).preprocess_input
    image = np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    x = np.asarray(prep(image.copy()), dtype="float32")
    ends = [np.asarray(prep(np.full((1, 1, 1, 3), v, "float32")), dtype="float32").reshape(3)
            for v in (0.0, 255.0)]
    return x, np.minimum(*ends), np.maximum(*ends)


# ------------------------------------------------------------------------------- rescaling
def _kernel(layer):
    """The kernel variable to rescale: the pointwise kernel of a separable convolution, the
    ``kernel`` of Dense/Conv/Depthwise layers, the scale of a ConvNeXt ``LayerScale``, ``None``
    for layers without one."""
    if type(layer).__name__ == "LayerScale":
        return getattr(layer, "gamma", None)
    for attr in ("pointwise_kernel", "kernel"):
        var = getattr(layer, attr, None)
        if var is not None and hasattr(var, "assign"):
            return var
    return None


def walk(model, x, hook: Callable) -> None:
    """Run ``model`` on ``x`` node by node in topological order (Keras's own graph walk),
    nested models expanded, every operation through ``hook(op, run, args, kwargs)``.

    ``run(*args, **kwargs)`` calls the operation in inference mode; ``hook`` returns the
    operation's output (usually ``run(*args, **kwargs)``), so it may observe or change the
    operation before the layers after it run.
    """
    import keras
    import tensorflow as tf
    from keras.src.models import functional

    def wrap(op):
        def call(*args, **kwargs):
            if isinstance(op, functional.Functional):
                return op._run_through_graph(args[0], operation_fn=wrap)
            if isinstance(op, keras.Sequential):
                y = args[0]
                for layer in op.layers:
                    y = wrap(layer)(y)
                return y
            return hook(op, functional.operation_fn(op, training=False), args, kwargs)

        return call

    model._run_through_graph(tf.convert_to_tensor(x, model.inputs[0].dtype), operation_fn=wrap)


def rescale_kernels(model, x, target: float = 1.0) -> dict[str, float]:
    """Rescale every kernel so its layer's pre-activation output on ``x`` has RMS ``target``.

    The model is run once, node by node in topological order (:func:`walk`); at each layer
    with a kernel (Dense, every convolution, depthwise; for ``SeparableConv`` the pointwise
    kernel; ConvNeXt's ``LayerScale``, whose initial 1e-6 would otherwise hide every residual
    branch), the layer's output with its activation switched off is computed on the actual
    (already rescaled) inputs, the kernel is divided by that output's root mean square
    ``sqrt(mean(z^2))``, and the layer is run again to feed the layers after it. Biases and
    BatchNormalization statistics are left as they are (zero and the initial mean 0, variance 1
    for random weights), so the model stays bias-free, and every layer's pre-activation has unit
    scale on ``x`` however deep it is. Nested models are walked too.

    Parameters
    ----------
    model
        A built Functional ``keras.Model``; its kernels are changed in place.
    x
        The input batch the scales are measured on.
    target
        The RMS every pre-activation output gets.

    Returns
    -------
    dict
        Layer name -> the factor its kernel was divided by (over ``target``).
    """
    import keras
    import tensorflow as tf

    scales: dict[str, float] = {}

    def hook(op, run, args, kwargs):
        kernel = _kernel(op)
        if kernel is None:
            return run(*args, **kwargs)
        activation = getattr(op, "activation", None)
        if activation is not None:
            op.activation = keras.activations.linear
        try:
            z = run(*args, **kwargs)
        finally:
            if activation is not None:
                op.activation = activation
        rms = float(tf.sqrt(tf.reduce_mean(tf.square(tf.cast(z, tf.float64)))))
        if rms > 0.0 and math.isfinite(rms):
            kernel.assign(kernel * tf.cast(target / rms, kernel.dtype))
            scales[op.name] = rms / target
        return run(*args, **kwargs)

    walk(model, x, hook)
    return scales


def clipped_relus(model) -> list:
    """The ``ReLU`` layers of ``model`` with a ``max_value`` (ReLU6)."""
    from keras import layers as kl

    return [op for op in _operations(model) if isinstance(op, kl.ReLU) and op.max_value is not None]


def saturation(model, x) -> float:
    """The fraction of ReLU6 inputs above 6 on ``x`` (where LRP-0 and the gradient part ways)."""
    clipped = set(map(id, clipped_relus(model)))
    counts = [0, 0]

    def hook(op, run, args, kwargs):
        if id(op) in clipped:
            a = np.asarray(args[0])
            counts[0] += int((a > float(op.max_value)).sum())
            counts[1] += a.size
        return run(*args, **kwargs)

    walk(model, x, hook)
    return counts[0] / counts[1] if counts[1] else 0.0


# ------------------------------------------------------------------------------- model facts
def activation_names(model) -> set[str]:
    """The names of every nonlinearity in ``model`` (``relu``, ``relu6``, ``swish``, ...), plus
    ``"gate"`` where a ``Multiply`` of tensors occurs (squeeze-and-excitation, hard swish)."""
    from keras import layers as kl

    from tf_lrp import weightless

    names: set[str] = set()
    for op in _operations(model):
        if isinstance(op, kl.ReLU):
            if op.threshold or op.negative_slope:
                names.add("leaky_relu")
            else:
                names.add("relu" if op.max_value is None else f"relu{op.max_value:g}")
        elif isinstance(op, (kl.LeakyReLU, kl.PReLU, kl.ELU, kl.Softmax)):
            names.add(type(op).__name__.lower())
        elif isinstance(op, kl.Multiply):
            names.add("gate")
        elif getattr(op, "activation", None) is not None:
            names.add(weightless.activation_name(op.activation) or "?")
        elif weightless.handling(op) == weightless.PASS and not weightless.is_elementwise(op):
            names.add(type(op).__name__.lower())  # keras.ops activation nodes
    return names - {"linear"}


def _operations(model):
    """Every operation of ``model``, nested models expanded."""
    import keras

    for op in model.layers if isinstance(model, keras.Sequential) else model.operations:
        if isinstance(op, keras.Model):
            yield from _operations(op)
        else:
            yield op


def has_depthwise(model) -> bool:
    """Whether ``model`` has a depthwise convolution or a grouped one (``groups > 1``, as in
    ConvNeXt); separable convolutions do not count (tf_lrp uses their effective kernel)."""
    from keras import layers as kl

    return any(isinstance(op, (kl.DepthwiseConv1D, kl.DepthwiseConv2D))
               or (getattr(op, "groups", 1) or 1) > 1 for op in _operations(model))


def is_piecewise_linear(names: set[str]) -> bool:
    """Whether LRP-0 must equal gradient x input (ReLU/ReLU6 nonlinearities only, no gates)."""
    return bool(names) and names <= PIECEWISE_LINEAR


# ------------------------------------------------------------------------------- measuring
def make_composite(name: str, low, high):
    """The composite measured under ``name``."""
    from tf_lrp import composites

    if name == "EpsilonGammaBox":
        return composites.EpsilonGammaBox(low=low, high=high)
    return getattr(composites, name)()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def gradient_x_input(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient x input of the highest output of the raw Keras model (a plain tape).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The attribution and the explained logit per sample.
    """
    import tensorflow as tf

    xt = tf.convert_to_tensor(x, model.inputs[0].dtype)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = model(xt, training=False)
        selected = tf.reduce_max(tf.reshape(y, (tf.shape(y)[0], -1)), axis=1)
        total = tf.reduce_sum(selected)
    g = tape.gradient(total, xt)
    return (xt * g).numpy(), selected.numpy()


def relevance_stats(R: np.ndarray, logit: np.ndarray) -> dict:
    """Per sample ``sum(R) / logit`` and ``max|R| / |logit|`` (lists)."""
    R = R.reshape(R.shape[0], -1).astype("float64")
    logit = logit.astype("float64")
    return {"sum_ratio": (R.sum(axis=1) / logit).tolist(),
            "max_ratio": (np.abs(R).max(axis=1) / np.abs(logit)).tolist(),
            "finite": bool(np.isfinite(R).all())}


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|``."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def time_against_gradient(fn, gradient, x: np.ndarray, rounds: int) -> dict:
    """Median seconds of ``fn(x)`` and ``gradient(x)`` and the median per-round ratio.

    Every round calls both, in alternating order, so load from other processes cancels out.
    """
    t_fn, t_grad = [], []
    for r in range(rounds):
        for which in ((fn, t_fn), (gradient, t_grad))[::1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            which[0](x)
            which[1].append(time.perf_counter() - t0)
    return {"second_s": float(np.median(t_fn)), "gradient_s": float(np.median(t_grad)),
            "ratio": float(np.median(np.asarray(t_fn) / np.asarray(t_grad)))}


def lrp0_check(model, x: np.ndarray) -> dict:
    """LRP-0 against gradient x input of the raw model, on ``model`` as it is (its dtype)."""
    import tf_lrp

    R0 = tf_lrp.Analyzer(model, tf_lrp.rules.Zero())(x)
    gxi, logit = gradient_x_input(model, x)
    return {"R": R0, "gxi": gxi, "logit": logit,
            "rel_diff": relative_difference(R0, gxi),
            "sum_ratio": (R0.reshape(len(x), -1).astype("float64").sum(1) / logit).tolist(),
            "gxi_sum_ratio": (gxi.reshape(len(x), -1).astype("float64").sum(1)
                              / logit).tolist()}


def float64_twin(name: str, size: int, model):
    """The same architecture built under float64 (floatx and dtype policy) with ``model``'s
    weights."""
    import keras

    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        twin, _ = build_model(name, size)
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)
    twin.set_weights([w.astype("float64") for w in model.get_weights()])
    return twin


def lrp0_section(name: str, size: int, model, x: np.ndarray, float64: bool) -> dict:
    """LRP-0 against gradient x input on a ReLU/ReLU6 network.

    ReLU6 is not positively homogeneous: where an input exceeds 6 the gradient is zero while
    LRP passes the relevance on, so on a ReLU6 network with saturated units the two differ by
    design. The difference is reported as built (``as_built``, with the saturated fraction),
    and the check proper runs with every ReLU6 switched to a plain ReLU (``max_value=None``), in
    float32 and, with the same weights, in float64.
    """
    out: dict = {}
    clipped = clipped_relus(model)
    limits = [layer.max_value for layer in clipped]
    try:
        if clipped:
            out["saturated"] = saturation(model, x)
            out["as_built"] = lrp0_check(model, x)["rel_diff"]
            for layer in clipped:
                layer.max_value = None
        f32 = lrp0_check(model, x)
        out.update(float32=f32["rel_diff"], sum_ratio=f32["sum_ratio"],
                   gxi_sum_ratio=f32["gxi_sum_ratio"])
        if float64:
            twin = float64_twin(name, size, model)
            for layer in clipped_relus(twin):
                layer.max_value = None
            f64 = lrp0_check(twin, x.astype("float64"))
            out.update(float64=f64["rel_diff"],
                       lrp0_f32_vs_truth=relative_difference(f32["R"], f64["gxi"]),
                       gxi_f32_vs_truth=relative_difference(f32["gxi"], f64["gxi"]))
        out["status"] = "ok"
    except Exception as exc:
        out["status"] = _first_line(exc)
        out["traceback"] = traceback.format_exc()[-3000:]
    finally:
        for layer, limit in zip(clipped, limits):
            layer.max_value = limit
    return out


def raw_gradient(model) -> Callable[[np.ndarray], np.ndarray]:
    """A ``tf.function`` gradient of the raw Keras model's highest output (timing reference)."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), model.inputs[0].dtype)

    @tf.function(input_signature=[spec])
    def grad(x):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            y = model(x, training=False)
            total = tf.reduce_sum(tf.reduce_max(tf.reshape(y, (tf.shape(y)[0], -1)), axis=1))
        return tape.gradient(total, x)

    return lambda x: grad(x).numpy()


def zplus_dropped(model, analyzer, x: np.ndarray, logit: np.ndarray) -> dict:
    """Where an ``EpsilonPlus`` explanation loses relevance: outputs without positive share.

    The z+ rule hands an output's relevance to its positive contributions
    ``z+_k = sum_j x+_j w+_jk + x-_j w-_jk``; where there are none (``z+_k = 0``) the relevance of
    that output is dropped. For every ``Conv``/``DepthwiseConv`` layer under z+, ``z+`` is
    computed here from the Keras layer's own kernel and its actual input (independently of the
    engine; a folded BatchNormalization with its initial statistics has a positive scale, which
    keeps every sign), and the relevance the analyzer puts on the outputs with ``z+ = 0``
    (``analyzer.layerwise``) is summed.

    Returns
    -------
    dict
        ``total``: per sample, the dropped relevance over the logit (``1 - sum(R)/logit`` if
        that is all the deviation); ``top``: the three layers dropping the most.
    """
    import keras
    import tensorflow as tf

    from tf_lrp import rules

    inputs: dict[int, object] = {}

    def capture(op, run, args, kwargs):
        if isinstance(op, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            inputs[id(op)] = args[0]
        return run(*args, **kwargs)

    walk(model, x, capture)
    layerwise = analyzer.layerwise(x)
    total = np.zeros(len(x))
    per_layer = []
    for node in analyzer.graph.nodes:
        layer = node.layer
        if id(layer) not in inputs or not isinstance(analyzer.rules.get(node.name), rules.ZPlus) \
                or node.name not in layerwise:
            continue
        a = tf.convert_to_tensor(inputs[id(layer)])
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            def op(v, k, layer=layer):
                return keras.ops.depthwise_conv(v, k, strides=layer.strides,
                                                padding=layer.padding,
                                                data_format=layer.data_format,
                                                dilation_rate=layer.dilation_rate)
        else:
            op = layer.convolution_op
        k = layer.kernel
        zp = op(tf.nn.relu(a), tf.nn.relu(k)) + op(tf.minimum(a, 0.0), tf.minimum(k, 0.0))
        mask = np.asarray(zp) == 0
        dropped = (layerwise[node.name] * mask).reshape(len(x), -1).sum(1) / logit
        total += dropped
        per_layer.append((float(np.abs(dropped).max()), node.name, dropped.tolist()))
    per_layer.sort(key=lambda t: -t[0])
    return {"total": total.tolist(), "top": [[n, d] for _, n, d in per_layer[:3]]}


def measure(name: str, size: int, batch: int, rounds: int, float64: bool) -> dict:
    """Everything about one constructor (runs in the child process); a JSON-able dict."""
    import tf_lrp

    warnings.filterwarnings("ignore", message=".*ends in a softmax.*")
    out: dict = {"model": name, "requested_size": size, "batch": batch, "rounds": rounds,
                 "float64_check": float64, "composites": {}}
    t0 = time.perf_counter()
    try:
        model, size = build_model(name, size)
    except Exception as exc:
        out["status"] = f"build failed: {_first_line(exc)}"
        return out
    out.update(size=size, params=int(model.count_params()), layers=len(model.layers),
               build_s=time.perf_counter() - t0)
    acts = activation_names(model)
    out.update(activations=sorted(acts), depthwise=has_depthwise(model),
               piecewise_linear=is_piecewise_linear(acts))
    x, low, high = model_inputs(name, batch, size)
    out.update(x_range=[float(x.min()), float(x.max())], low=low.tolist(), high=high.tolist())
    log(f"[{name}] built at {size}x{size} ({out['params'] / 1e6:.1f} M parameters, "
        f"{out['build_s']:.1f} s); nonlinearities: {', '.join(sorted(acts)) or '-'}; "
        f"depthwise: {out['depthwise']}")
    raw_before = np.asarray(model(x, training=False))
    t0 = time.perf_counter()
    scales = rescale_kernels(model, x)
    raw = np.asarray(model(x, training=False))
    out.update(rescale_s=time.perf_counter() - t0, rescaled_layers=len(scales),
               logit_before=np.abs(raw_before).max(axis=1).tolist(),
               logit_after=raw.max(axis=1).tolist())
    log(f"[{name}] rescaled {len(scales)} kernels in {out['rescale_s']:.1f} s; highest logit "
        f"{np.max(raw_before, axis=1)} -> {raw.max(axis=1)}")

    try:
        t0 = time.perf_counter()
        gradient = tf_lrp.analyzers.Gradient(model)
        gradient(x)
        out["gradient_first_s"] = time.perf_counter() - t0
    except Exception as exc:
        out["status"] = f"Gradient failed: {_first_line(exc)}"
        return out
    out["status"] = "ok"
    raw_grad = raw_gradient(model)
    raw_grad(x)
    timed = time_against_gradient(gradient, raw_grad, x, rounds)
    out.update(gradient_s=timed["second_s"], raw_gradient_s=timed["gradient_s"],
               gradient_vs_raw=timed["ratio"])
    log(f"[{name}] tf_lrp Gradient {timed['second_s']:.3f} s, raw Keras gradient "
        f"{timed['gradient_s']:.3f} s (x{timed['ratio']:.2f})")

    for comp in COMPOSITES:
        row: dict = {}
        out["composites"][comp] = row
        try:
            t0 = time.perf_counter()
            analyzer = tf_lrp.Analyzer(model, make_composite(comp, low, high))
            R = analyzer(x)
            row["first_s"] = time.perf_counter() - t0
            logits = analyzer.predict(x)
            logit = logits.max(axis=1)
            row.update(relevance_stats(R, logit))
            row["logit"] = logit.tolist()
            row.update(time_against_gradient(analyzer, gradient, x, rounds))
            row["status"] = "ok"
            if comp == "EpsilonPlus" and np.abs(np.asarray(row["sum_ratio"]) - 1).max() \
                    > CONSERVE_TOL:
                row["zplus_dropped"] = zplus_dropped(model, analyzer, x, logit)
                log(f"[{name}] {comp}: relevance on outputs with z+ = 0 / logit: "
                    f"{row['zplus_dropped']}")
            del analyzer, R
        except Exception as exc:
            row["status"] = _first_line(exc)
            row["traceback"] = traceback.format_exc()[-3000:]
        log(f"[{name}] {comp}: {format_row_log(row)}")

    if out["piecewise_linear"]:
        out["lrp0"] = lrp0_section(name, size, model, x, float64)
        log(f"[{name}] LRP-0 vs gradient x input: "
            f"{ {k: v for k, v in out['lrp0'].items() if k != 'traceback'} }")
    out["goals"] = goal_violations(out)
    return out


def format_row_log(row: dict) -> str:
    """One composite's result in one line (progress output)."""
    if row.get("status") != "ok":
        return row.get("status", "?")
    return (f"first {row['first_s']:.1f} s, second {row['second_s']:.2f} s, gradient "
            f"{row['gradient_s']:.2f} s (x{row['ratio']:.2f}); sum(R)/logit "
            f"{_ratios(row['sum_ratio'])}; max|R|/|logit| {max(row['max_ratio']):.3g}")


# ------------------------------------------------------------------------------- goals
def goal_violations(result: dict) -> list[str]:
    """The goals a model's result misses, as short sentences (empty: all met)."""
    name = result["model"]
    if result.get("status") != "ok":
        return [f"{name}: {result.get('status')}"]
    problems = []
    for comp, row in result["composites"].items():
        if row.get("status") != "ok":
            problems.append(f"{name} {comp}: {row.get('status')}")
            continue
        sums, peaks = np.asarray(row["sum_ratio"]), np.asarray(row["max_ratio"])
        if not row.get("finite", True) or not np.isfinite(sums).all():
            problems.append(f"{name} {comp}: non-finite relevance")
        elif comp == "EpsilonPlus" or (comp == "EpsilonAlpha2Beta1" and not result["depthwise"]):
            if np.abs(sums - 1).max() > CONSERVE_TOL:
                problems.append(f"{name} {comp}: sum(R)/logit = {_ratios(sums)} (goal: within "
                                f"{CONSERVE_TOL:.0%} of 1)")
        elif comp == "EpsilonGammaBox" and (np.abs(sums).max() > GAMMA_SUM_MAX
                                            or peaks.max() > GAMMA_ELEMENT_MAX):
            problems.append(f"{name} {comp}: inflates: sum(R)/logit = {_ratios(sums)}, "
                            f"max|R|/|logit| = {peaks.max():.3g} (goal: <= {GAMMA_SUM_MAX:g} "
                            f"and <= {GAMMA_ELEMENT_MAX:g})")
    lrp0 = result.get("lrp0")
    if lrp0 is not None:
        if lrp0.get("status") != "ok":
            problems.append(f"{name} LRP-0: {lrp0.get('status')}")
        else:
            for dtype, tol in LRP0_TOL.items():
                if dtype in lrp0 and not lrp0[dtype] <= tol:
                    problems.append(f"{name} LRP-0 vs gradient x input ({dtype}): max|diff|/max "
                                    f"= {lrp0[dtype]:.3g} (tolerance {tol:g})")
    return problems


def _ratios(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4f}" if abs(v) < 1e3 else f"{v:.3g}" for v in values)


# ------------------------------------------------------------------------------- parent
def git_commit() -> str:
    """The checkout's HEAD commit (short), with ``+dirty`` if tf_lrp/ has local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tf_lrp"], cwd=ROOT,
                               text=True, capture_output=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run_child(name: str, args: argparse.Namespace) -> dict:
    """Measure one constructor in a fresh Python process; its result dict."""
    path = args.results / f"{name}.json"
    path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--size",
           str(args.size), "--batch", str(args.batch), "--rounds", str(args.rounds),
           "--results", str(args.results)] + (["--no-float64"] if args.no_float64 else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, timeout=args.timeout)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    if path.exists():
        return json.loads(path.read_text())
    result = {"model": name, "status": f"child process failed (exit {code}) after "
              f"{time.perf_counter() - t0:.0f} s", "composites": {}}
    log(f"[{name}] {result['status']}")
    result["goals"] = goal_violations(result)
    result.update(commit=git_commit(), date=_now())
    path.write_text(json.dumps(result, indent=1))
    return result


def worker(name: str, args: argparse.Namespace) -> int:
    """The child: measure ``name`` and write its JSON result."""
    commit = git_commit()
    result = measure(name, args.size, args.batch, args.rounds, not args.no_float64)
    result.update(commit=commit, date=_now())
    args.results.mkdir(parents=True, exist_ok=True)
    tmp = args.results / f"{name}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, args.results / f"{name}.json")
    for problem in result["goals"]:
        log(f"[{name}] GOAL MISSED: {problem}")
    return 0


def _now() -> str:
    return f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"


# ------------------------------------------------------------------------------- report
def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _sci(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def machine() -> str:
    """CPU model and cores, Python/TF/Keras versions."""
    import keras
    import tensorflow as tf
    from benchmark import cpu_name

    return (f"{cpu_name()}, {os.cpu_count()} cores (CPU only, shared with other jobs); Python "
            f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")


def _mark(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def composite_table(results: Sequence[dict], comp: str) -> str:
    """One row per constructor for composite ``comp``."""
    head = ("| model | status | first call s | second call s | gradient s | second / gradient "
            "| sum(R)/logit per sample | max\\|R\\|/\\|logit\\| | goal met |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        row = r.get("composites", {}).get(comp)
        if row is None:
            lines.append(f"| {r['model']} | {r.get('status')} |  |  |  |  |  |  | **NO** |")
            continue
        if row.get("status") != "ok":
            lines.append(f"| {r['model']} | {row.get('status')} |  |  |  |  |  |  | **NO** |")
            continue
        missed = [g for g in r.get("goals", []) if g.startswith(f"{r['model']} {comp}:")]
        goal = "n/a (depthwise)" if comp == "EpsilonAlpha2Beta1" and r["depthwise"] else \
            _mark(not missed)
        if "zplus_dropped" in row:
            goal += (f" (z+ = 0 outputs hold {_ratios(row['zplus_dropped']['total'])}"
                     + ("; all of the deviation" if zplus_accounts(row) else "") + ")")
        lines.append(
            f"| {r['model']} | ok | {_fmt(row['first_s'], 1)} | {_fmt(row['second_s'], 3)} | "
            f"{_fmt(row['gradient_s'], 3)} | {_fmt(row['ratio'])} | {_ratios(row['sum_ratio'])}"
            f" | {max(row['max_ratio']):.3g} | {goal} |")
    return "\n".join(lines)


def models_table(results: Sequence[dict]) -> str:
    """Size, parameters, nonlinearities, build/rescale time and logits of every model."""
    lines = ["| model | size | parameters (M) | nonlinearities | depthwise | highest logit before "
             "/ after rescaling | build s | rescale s | Gradient s | raw Keras gradient s | "
             "Gradient / raw | engine commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "params" not in r:
            lines.append(f"| {r['model']} | - | - | - | - | {r.get('status')} | - | - | - | - | "
                         f"- | {r.get('commit', '?')} |")
            continue
        before = r.get("logit_before")
        after = r.get("logit_after")
        logits = (f"{max(before):.1e} / {max(after):.2f}" if before and after else "-")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params'] / 1e6:.1f} | "
            f"{', '.join(r.get('activations', [])) or '-'} | {'yes' if r.get('depthwise') else 'no'}"
            f" | {logits} | {_fmt(r.get('build_s'), 1)} | {_fmt(r.get('rescale_s'), 1)} | "
            f"{_fmt(r.get('gradient_s'), 3)} | {_fmt(r.get('raw_gradient_s'), 3)} | "
            f"{_fmt(r.get('gradient_vs_raw'))} | {r.get('commit', '?')} |")
    return "\n".join(lines)


def lrp0_table(results: Sequence[dict]) -> str:
    """LRP-0 against gradient x input on the ReLU/ReLU6 networks."""
    lines = ["| model | nonlinearities | ReLU6 inputs > 6 | as built (float32) | float32 | "
             "float64 | float32 LRP-0 vs float64 truth | float32 GxI vs float64 truth | "
             "LRP-0 sum(R)/logit | GxI sum/logit | within tolerance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lrp0 = r.get("lrp0")
        if lrp0 is None:
            continue
        acts = ", ".join(r["activations"])
        if lrp0.get("status") != "ok":
            lines.append(f"| {r['model']} | {acts} | {lrp0.get('status')} |  |  |  |  |  |  |  "
                         "| **NO** |")
            continue
        missed = [g for g in r.get("goals", []) if g.startswith(f"{r['model']} LRP-0")]
        sat = lrp0.get("saturated")
        lines.append(
            f"| {r['model']} | {acts} | {'-' if sat is None else f'{sat:.2%}'} | "
            f"{_sci(lrp0.get('as_built'))} | {_sci(lrp0.get('float32'))} | "
            f"{_sci(lrp0.get('float64'))} | {_sci(lrp0.get('lrp0_f32_vs_truth'))} | "
            f"{_sci(lrp0.get('gxi_f32_vs_truth'))} | {_ratios(lrp0.get('sum_ratio', []))} | "
            f"{_ratios(lrp0.get('gxi_sum_ratio', []))} | {_mark(not missed)} |")
    return "\n".join(lines)


def zplus_accounts(row: dict, tol: float = 2e-3) -> bool:
    """Whether the relevance on ``z+ = 0`` outputs is the whole deviation of ``sum(R)/logit``."""
    dropped = np.asarray(row.get("zplus_dropped", {}).get("total", []), "float64")
    sums = np.asarray(row.get("sum_ratio", []), "float64")
    return dropped.shape == sums.shape and dropped.size > 0 and \
        bool(np.abs(1.0 - sums - dropped).max() <= tol)


def zplus_summary(results: Sequence[dict]) -> str:
    """One line: which ``EpsilonPlus`` misses the ``z+ = 0`` outputs account for."""
    rows = [(r["model"], r["composites"]["EpsilonPlus"]) for r in results
            if r.get("composites", {}).get("EpsilonPlus", {}).get("status") == "ok"
            and np.abs(np.asarray(r["composites"]["EpsilonPlus"]["sum_ratio"]) - 1).max()
            > CONSERVE_TOL]
    if not rows:
        return "- Every `EpsilonPlus` row conserves within 1 %."
    full = [m for m, row in rows if zplus_accounts(row)]
    rest = [m for m, row in rows if "zplus_dropped" in row and not zplus_accounts(row)]
    unchecked = [m for m, row in rows if "zplus_dropped" not in row]
    return (f"- `EpsilonPlus` misses 1 % on {len(rows)} models; on "
            + (", ".join(full) if full else "none")
            + " the relevance of outputs without a positive contribution (z+ = 0, computed "
            "independently) is the whole deviation (to 2e-3 of the logit)"
            + (f"; not accounted for on {', '.join(rest)}" if rest else "")
            + (f"; not checked on {', '.join(unchecked)}" if unchecked else "") + ".")


def alpha_beta_depthwise(results: Sequence[dict]) -> str:
    """The alpha-beta ratios of the models with depthwise convolutions, one line."""
    items = []
    for r in results:
        row = r.get("composites", {}).get("EpsilonAlpha2Beta1", {})
        if r.get("depthwise") and row.get("status") == "ok":
            items.append(f"{r['model']} {_ratios(row['sum_ratio'])}")
    return "; ".join(items) if items else "no model with depthwise convolutions was measured"


def report(results: Sequence[dict], argv: Sequence[str]) -> str:
    """The markdown report of ``results`` (one dict per constructor)."""
    problems = [p for r in results for p in r.get("goals", [])]
    failed = [r["model"] for r in results if r.get("status") != "ok"
              or any(c.get("status") != "ok" for c in r.get("composites", {}).values())]
    dates = sorted({r.get("date", "?") for r in results})
    sizes = sorted({r.get("size") for r in results if r.get("size")})
    batch = sorted({r.get("batch") for r in results if r.get("batch")})
    parts = [
        "# keras.applications zoo",
        "",
        f"`python scripts/zoo.py {' '.join(argv)}`; results measured {dates[0]}"
        + (f" to {dates[-1]}" if len(dates) > 1 else "") + f" on {machine()}. "
        f"Every constructor with `weights=None`, input {', '.join(map(str, sizes))} px square, "
        f"batch {', '.join(map(str, batch))} (a seeded random image in 0..255 through the family's "
        "`preprocess_input`), kernels rescaled to unit-RMS pre-activations on that batch "
        "(`rescale_kernels`), biases zero. `EpsilonGammaBox` gets `low`/`high` = "
        "`preprocess_input` of an all-0 / all-255 image (0 / 255 where the model rescales its "
        "input itself). Times: first call = building the analyzer + tracing + one explanation; "
        "second call and gradient = medians over interleaved rounds on the same batch, with "
        "`tf_lrp.analyzers.Gradient` as the gradient; the machine is shared, so times are "
        "indicative. Goals: `EpsilonPlus` conserves within 1 % (sum(R)/logit); so does "
        "`EpsilonAlpha2Beta1` without depthwise convolutions; `EpsilonGammaBox` never inflates "
        "(\\|sum R\\| <= 2 \\|logit\\|, max\\|R\\| <= 10 \\|logit\\|); LRP-0 = gradient x input on "
        f"ReLU networks (float32 tolerance {LRP0_TOL['float32']:g} of the maximum, float64 "
        f"{LRP0_TOL['float64']:g}).",
        "",
        "## What the numbers say",
        "",
        f"- Models measured: {len(results)}; failing (a build, a composite or the child process): "
        + (", ".join(failed) if failed else "none") + ".",
        "- Goals missed: " + ("none." if not problems else ""),
    ]
    parts += [f"  - {p}" for p in problems]
    parts += [zplus_summary(results)]
    parts += [
        "- Alpha-beta on models with depthwise convolutions, `EpsilonAlpha2Beta1` sum(R)/logit: "
        + alpha_beta_depthwise(results) + ".",
        "",
        ZPLUS_NOTE,
        "",
        ALPHA_BETA_NOTE,
        "",
        "## Models",
        "",
        models_table(results),
        "",
    ]
    for comp in COMPOSITES:
        parts += [f"## {comp}", "", composite_table(results, comp), ""]
    parts += ["## LRP-0 against gradient x input (ReLU networks)", "",
              "Columns: max\\|LRP-0 - GxI\\| / max\\|GxI\\|. GxI is a plain `tf.GradientTape` "
              "gradient of the raw Keras model times the input. ReLU6 is not positively "
              "homogeneous: where its input exceeds 6 the gradient is 0 while LRP passes the "
              "relevance on, so on ReLU6 networks the two differ by design wherever units "
              "saturate (*as built*, with the saturated fraction); the float32/float64 columns "
              "are measured with every ReLU6 switched to a plain ReLU. float64: the same weights "
              "in a model built under `keras.config.set_floatx('float64')`, whose gradient x "
              "input is the truth the float32 results are compared with.", "",
              LRP0_NOTE, "", lrp0_table(results), ""]
    return "\n".join(parts)


def load_results(directory: Path, names: Sequence[str]) -> list[dict]:
    """The stored results of ``names`` (those that exist), in that order."""
    out = []
    for name in names:
        path = directory / f"{name}.json"
        if path.exists():
            out.append(json.loads(path.read_text()))
    return out


# ------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="all",
                   help="comma-separated constructor names, 'all' or 'smallest'")
    p.add_argument("--size", type=int, default=96, help="input height and width (default 96)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ZOO.md",
                   help="markdown report (default benchmarks/ZOO.md)")
    p.add_argument("--results", type=Path, default=Path("/tmp/zoo_results"),
                   help="directory of the per-model JSON results (default /tmp/zoo_results)")
    p.add_argument("--resume", action="store_true", help="skip models that have a result")
    p.add_argument("--report-only", action="store_true",
                   help="only write the report from the stored results")
    p.add_argument("--no-float64", action="store_true", help="skip the float64 LRP-0 check")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per model")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def model_list(spec: str) -> list[str]:
    """``--models`` as constructor names (``all``, ``smallest`` or a comma-separated list)."""
    names = list(constructors())
    if spec == "all":
        return names
    if spec == "smallest":
        return [n for n in SMALLEST if n in names]
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        raise SystemExit(f"unknown constructors {unknown}; known: {', '.join(names)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Run the children (or be one) and write the report."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.worker:
        return worker(args.worker, args)
    names = model_list(args.models)
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for i, name in enumerate(names, 1):
            if args.resume and (args.results / f"{name}.json").exists():
                log(f"== {name}: stored result kept ({i}/{len(names)})")
                continue
            log(f"== {name} ({i}/{len(names)})")
            t0 = time.perf_counter()
            result = run_child(name, args)
            log(f"== {name} done in {time.perf_counter() - t0:.0f} s; goals missed: "
                f"{len(result.get('goals', []))}")
    everything = load_results(args.results, list(constructors()))
    text = report(everything, args.argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.out)
    log(f"wrote {args.out} ({len(everything)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
