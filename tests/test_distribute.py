"""tf_lrp.distribute and ``tf-lrp explain --devices``: each batch split over the devices of a
machine with MirroredStrategy, the same relevance as on one device (with a tolerance).

Two logical CPU devices stand in for GPUs; they must be configured before TensorFlow starts,
so the multi-device checks run in one subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_lrp import Analyzer, distribute, load_model

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "saved_models" / "digits_lenet.h5"

SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    warnings.filterwarnings("ignore", message=".*softmax")
    import pandas as pd
    import tf_lrp
    from tf_lrp import cli, distribute

    lenet, out = sys.argv[1], sys.argv[2]
    x = np.random.default_rng(3).uniform(0, 255, (13, 32, 32, 1)).astype(np.float32)
    targets = np.arange(13) % 10

    def close(actual, expected):
        np.testing.assert_allclose(actual, expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())

    single = tf_lrp.Analyzer(tf_lrp.load_model(lenet), "epsilon_gamma_box", low=0.0, high=255.0)
    strategy = distribute.strategy_for("all")
    with distribute.scope(strategy):
        mirrored = tf_lrp.Analyzer(tf_lrp.load_model(lenet), "epsilon_gamma_box", low=0.0,
                                   high=255.0)
    kernel = mirrored.model.trainable_variables[0]
    report = {"replicas": strategy.num_replicas_in_sync,
              "weights": type(kernel.value if hasattr(kernel, "value") else kernel).__name__}

    # batches of 8: the second global batch (5 samples) is split 3 + 2 (the last replica's
    # part differs in size)
    relevance, logits = distribute.explain(mirrored, x, strategy, targets, batch_size=8,
                                           return_outputs=True)
    close(relevance, single(x, targets))
    close(logits, single.predict(x))

    # the parts really run on the two devices: the analyzer's traced function is called once
    # per replica, placed on that replica's device
    step = distribute._step(mirrored, strategy)
    graph = step.get_concrete_function(
        *distribute._split(strategy, [x[:8]], targets[:8].astype(np.int32))).graph
    report["devices"] = sorted({op.device.split("/")[-1] for op in graph.get_operations()
                                if op.type.endswith("PartitionedCall")})

    np.save(out + "/x.npy", x)
    code = cli.main(["explain", lenet, out + "/x.npy", "--out", out + "/o", "--devices", "2",
                     "--composite", "epsilon_gamma_box", "--format", "shards", "-q",
                     "--batch-size", "6"])
    index = pd.read_csv(out + "/o/index.csv")
    saved = np.stack([np.load(out + "/o/" + r.shard)[r.row] for r in index.itertuples()])
    close(saved, single(x))
    report["cli"] = code
    print("REPORT " + json.dumps(report))
""")


def test_mirrored_strategy_equals_one_device(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(LENET), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT ", 1)[1])
    assert report["replicas"] == 2
    assert report["devices"] == ["device:CPU:0", "device:CPU:1"]
    assert report["cli"] == 0
    assert "Mirrored" in report["weights"] or "Distributed" in report["weights"], report


@pytest.fixture(scope="module")
def analyzer():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        return Analyzer(load_model(LENET), "epsilon_plus")


def test_one_device_and_datasets(analyzer):
    x = np.random.default_rng(4).uniform(0, 255, (7, 32, 32, 1)).astype(np.float32)
    expected = analyzer(x, 2)
    relevance, logits = distribute.explain(analyzer, x, None, 2, batch_size=3,
                                           return_outputs=True)
    np.testing.assert_allclose(relevance, expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(logits, analyzer.predict(x), rtol=1e-5, atol=1e-5)
    per_sample = np.array([1, 2, 3, 4, 5, 6, 7], np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((x, per_sample)).batch(3)
    expected = analyzer(x, per_sample)
    np.testing.assert_allclose(distribute.explain(analyzer, dataset), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_strategy_for_explains_bad_requests(analyzer):
    assert distribute.strategy_for(1) is None  # one device: no strategy needed
    with pytest.raises(ValueError, match="set_logical_device_configuration"):
        distribute.strategy_for(64)
    with pytest.raises(ValueError, match="'all' or a positive integer"):
        distribute.strategy_for("two")
    with pytest.raises(ValueError, match="no data"):
        distribute.explain(analyzer, tf.data.Dataset.from_tensor_slices(np.zeros((0, 32, 32, 1), np.float32)).batch(2))
