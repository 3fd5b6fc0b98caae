"""Smoke test of ``scripts/benchmark.py`` and the no-retracing guarantee it relies on.

The benchmark's core function runs on a tiny model with one round; the analyzers must trace
their explain function exactly once across targets and batch sizes (a retrace per call would
make every explanation pay the trace time).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

import tf_lrp
from tf_lrp import composites

ROOT = Path(__file__).resolve().parents[1]
L = keras.layers


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(7)
    x = keras.Input((8, 8, 2))
    y = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = L.MaxPooling2D()(y)
    y = L.Conv2D(4, 3, activation="relu")(y)
    y = L.Flatten()(y)
    y = L.Dense(5)(y)
    return keras.Model(x, y)


def test_benchmark_returns_one_sane_row_per_method(bench, tiny_model):
    x = bench.make_input(tiny_model, 3)
    assert x.shape == (3, 8, 8, 2) and x.dtype == np.float32 and np.abs(x).max() <= 1
    rows = bench.benchmark(tiny_model, x, bench.COMPOSITES, repeats=1, warmup=0)
    assert [r["method"] for r in rows] == [bench.RAW, bench.GRADIENT, *bench.COMPOSITES]
    for r in rows:
        assert 0 < r["q1_s"] <= r["median_s"] <= r["q3_s"] < 60, r
        assert 0 < r["first_call_s"] < 120, r
        assert np.isfinite(r["ratio"]) and r["ratio"] > 0, r
        assert np.isfinite(r["ratio_raw"]) and r["ratio_raw"] > 0, r
    by_name = {r["method"]: r for r in rows}
    assert by_name[bench.GRADIENT]["ratio"] == 1.0
    assert by_name[bench.RAW]["ratio_raw"] == 1.0
    table = bench.markdown_table([{**r, "model": "tiny", "batch": 3} for r in rows])
    lines = table.splitlines()
    assert len(lines) == len(rows) + 2
    assert lines[0].count("|") == len(bench.COLUMNS) + 1
    assert any(line.startswith("| tiny | 3 | EpsilonGammaBox |") for line in lines)


def test_benchmark_rejects_zero_repeats(bench, tiny_model):
    with pytest.raises(ValueError, match="repeats"):
        bench.benchmark(tiny_model, bench.make_input(tiny_model, 1), ["epsilon"], repeats=0)


def test_cli_arguments(bench):
    args = bench.parse_args(["--models", "vgg16,shipped", "--batch-sizes", "1,4", "--quick"])
    shipped = sorted(p for p in (ROOT / "saved_models").iterdir() if p.suffix in (".h5", ".keras"))
    assert args.model_list == ["vgg16", *map(str, shipped)]
    assert args.batch_list == [1, 4]
    assert args.composite_list == list(bench.COMPOSITES)
    assert (args.repeats, args.warmup) == (3, 0)


def test_every_benchmarked_composite_resolves(bench):
    assert isinstance(bench.make_composite("EpsilonGammaBox"), composites.EpsilonGammaBox)
    assert isinstance(bench.make_composite("epsilon"), composites.LayerMap)
    assert isinstance(bench.make_composite("deep_taylor"), composites.DeepTaylor)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_cpu_peak_memory_sees_a_transient_allocation(bench):
    def allocate(_):
        return np.ones(64 * 2**20 // 8).sum()  # 64 MiB, touched, freed on return

    assert 50 < bench._peak_of_call(allocate, None, gpu=False) < 200


@pytest.mark.parametrize(
    "make",
    [
        lambda m: tf_lrp.Analyzer(m, composites.EpsilonGammaBox(low=-1.0, high=1.0)),
        lambda m: tf_lrp.Analyzer(m, composites.EpsilonAlpha2Beta1(), batch_size=2),
        lambda m: tf_lrp.analyzers.Gradient(m),
    ],
    ids=["epsilon_gamma_box", "alpha2beta1_batched", "gradient"],
)
def test_one_trace_across_targets_and_batch_sizes(tiny_model, make):
    analyzer = make(tiny_model)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 2)).astype("float32")
    first = analyzer(x)
    for args in [(x, 1), (x, [0, 1, 2, 3, 4]), (x[:2], 4), (x[:1], None), (x[:3], np.int64(2))]:
        analyzer(*args)
    # exact on purpose: the same analyzer on the same batch (split the same way)
    np.testing.assert_array_equal(analyzer(x), first)
    assert analyzer._explain_fn.experimental_get_tracing_count() == 1
