"""Batch runs at scale: samples/s and peak memory of every way to run a dataset (issue 10).

    python scripts/benchmark_batch.py                 # everything (about 15 min on 2 cores)
    python scripts/benchmark_batch.py --only lenet    # or: vgg, memory

Each configuration runs in its own process (peak memory is the process's maximum RSS, TensorFlow
included), on the same inputs, batch size 32:

- ``analyzer``: the in-process ``Analyzer`` on the same batches (``predict`` + explain, what the
  command line computes), from a fresh analyzer (first-call tracing included, as in the CLI);
- ``cli png,npy`` / ``cli shards``: the whole ``tf-lrp explain`` streaming loop (tf.data
  decoding, explaining, durable writes), as the CLI reports it (model loading excluded);
- ``mirrored x2``: ``--devices 2`` with two logical CPU devices (MirroredStrategy);
- ``ray x1`` / ``ray x2``: ``--ray`` on a local Ray instance with 1 and 2 actors (actor start-up
  included: it is part of every Ray job);
- memory: ``cli shards`` and ``cli png,npy`` over 1,000 and 20,000 32x32 PNG files;
- ``--only ray-scale``: where Ray starts to pay. ``cli shards`` locally and with ``--ray``
  (2 actors) at several numbers of samples; a line ``seconds = fixed + n * per_sample`` fitted
  to each gives the fixed cost (Ray: starting the actors), the per-sample cost, and the number
  of samples from which the Ray run is the faster (if its per-sample cost is the lower).

The models: the shipped LeNet (32x32x1) and a VGG-16 at 64x64x3 (weights=None, 10 classes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "saved_models" / "digits_lenet.h5"
BATCH = 32


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cli(argv: list[str]) -> dict:
    from tf_lrp import cli

    stream = io.StringIO()
    with contextlib.redirect_stdout(stream):
        code = cli.main(argv)
    text = stream.getvalue()
    match = re.search(r"(\d+) explained.*\(([\d.]+) s, ([\d.]+) samples/s\)", text)
    if code != 0 or match is None:
        raise SystemExit(f"tf-lrp {' '.join(argv)} failed ({code}): {text}")
    return {"samples": int(match.group(1)), "seconds": float(match.group(2)),
            "samples_per_s": float(match.group(3))}


def worker(config: dict) -> dict:
    """Run one configuration in this process; return its figures."""
    if config.get("logical_cpus"):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * config["logical_cpus"])
    warnings.filterwarnings("ignore")
    import tensorflow  # noqa: F401 - imported before the clock starts, for every configuration

    cpu = _cpu_s()
    kind, model, data = config["kind"], config["model"], config["data"]
    out = config.get("out")
    if kind == "analyzer":
        import tf_lrp

        x = np.load(data, mmap_mode="r")
        analyzer = tf_lrp.Analyzer(tf_lrp.load_model(model), "epsilon_plus")
        start = time.perf_counter()
        for lo in range(0, len(x), BATCH):
            batch = np.asarray(x[lo:lo + BATCH], np.float32)
            analyzer.predict(batch)
            analyzer(batch)
        seconds = time.perf_counter() - start
        result = {"samples": len(x), "seconds": seconds, "samples_per_s": len(x) / seconds}
    else:
        argv = ["explain", model, data, "--out", out, "--batch-size", str(BATCH),
                "--format", config["format"]]
        if config.get("devices"):
            argv += ["--devices", str(config["devices"])]
        if config.get("actors"):
            from tf_lrp import ray as lrp_ray

            lrp_ray.init(None, num_cpus=os.cpu_count())
            argv += ["--ray", "--ray-actors", str(config["actors"])]
        result = _cli(argv)
    result["max_rss_mb"] = _rss_mb()
    with open("/proc/self/status") as status:  # what the run still holds at its end
        result["end_rss_mb"] = next(int(line.split()[1]) / 1024.0 for line in status
                                    if line.startswith("VmRSS"))
    # this process's CPU time from model loading to the end (Ray: the driver's share only)
    result["cpu_s"] = _cpu_s() - cpu
    return result


def run(config: dict) -> dict:
    """``worker(config)`` in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(config)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _vgg(folder: Path) -> str:
    import keras

    path = folder / "vgg16_64.keras"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    body = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    features = keras.layers.Flatten()(body(scaled))
    outputs = keras.layers.Dense(10)(keras.layers.Dense(256, activation="relu")(features))
    keras.Model(inputs, outputs).save(path)
    return str(path)


def throughput(name: str, model: str, x: np.ndarray, folder: Path, ray_too: bool = True):
    data = folder / f"{name}.npy"
    np.save(data, x)
    base = {"model": model, "data": str(data)}
    configs = [("analyzer", {"kind": "analyzer"}),
               ("cli png,npy", {"kind": "cli", "format": "png,npy"}),
               ("cli shards", {"kind": "cli", "format": "shards"}),
               ("mirrored x2 (cli shards)", {"kind": "cli", "format": "shards", "devices": 2,
                                             "logical_cpus": 2})]
    if ray_too:
        configs += [("ray x1 (cli shards)", {"kind": "cli", "format": "shards", "actors": 1}),
                    ("ray x2 (cli shards)", {"kind": "cli", "format": "shards", "actors": 2})]
    rows = []
    for label, config in configs:
        result = run({**base, **config, "out": str(folder / f"{name}-{len(rows)}")})
        rows.append((label, result))
        print(f"{name:6s} {label:26s} {result['samples_per_s']:9.1f} samples/s "
              f"{result['seconds']:7.1f} s  cpu {result['cpu_s']:6.1f} s  "
              f"peak {result['max_rss_mb']:7.0f} MB", flush=True)
    reference = rows[0][1]
    return [(label, r, r["samples_per_s"] / reference["samples_per_s"],
             reference["cpu_s"] / r["cpu_s"]) for label, r in rows]


def memory(folder: Path) -> list[tuple[str, int, dict]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    store = folder / "pngs"
    store.mkdir()
    for i in range(20_000):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            store / f"{i:05d}.png")
    small = folder / "pngs1k"
    small.mkdir()
    for i in range(1_000):
        os.link(store / f"{i:05d}.png", small / f"{i:05d}.png")
    rows = []
    for fmt in ("shards", "png,npy"):
        for n, data in ((1_000, small), (20_000, store)):
            result = run({"kind": "cli", "format": fmt, "model": str(LENET), "data": str(data),
                          "out": str(folder / f"mem-{fmt}-{n}")})
            rows.append((fmt, n, result))
            print(f"memory cli {fmt:8s} {n:6d} PNGs: peak {result['max_rss_mb']:7.1f} MB, "
                  f"at the end {result['end_rss_mb']:7.1f} MB, "
                  f"{result['samples_per_s']:.1f} samples/s", flush=True)
    return rows


RAY_SCALE = {"lenet": (1_024, 8_192, 32_768), "vgg": (32, 128, 384)}


def ray_scale(folder: Path, name: str, model: str, shape: tuple, sizes: tuple) -> dict:
    """Local ``cli shards`` and ``--ray`` with 2 actors at ``sizes`` samples; fitted lines."""
    rng = np.random.default_rng(1)
    fits = {}
    for label, extra in (("local", {}), ("ray x2", {"actors": 2})):
        points = []
        for n in sizes:
            data = folder / f"{name}-{n}.npy"
            if not data.exists():
                np.save(data, rng.uniform(0, 255, (n, *shape)).astype(np.float32))
            result = run({"kind": "cli", "format": "shards", "model": model, "data": str(data),
                          "out": str(folder / f"scale-{name}-{label}-{n}"), **extra})
            points.append((n, result["seconds"]))
            print(f"ray-scale {name:6s} {label:7s} n={n:6d} {result['seconds']:7.1f} s "
                  f"({result['samples_per_s']:.1f} samples/s)", flush=True)
        n, seconds = np.array(points, np.float64).T
        per_sample, fixed = np.polyfit(n, seconds, 1)
        fits[label] = {"points": points, "fixed_s": float(fixed), "per_sample_ms":
                       float(per_sample * 1e3)}
    local, remote = fits["local"], fits["ray x2"]
    gain = local["per_sample_ms"] - remote["per_sample_ms"]
    fits["break_even_samples"] = (float((remote["fixed_s"] - local["fixed_s"]) / (gain / 1e3))
                                  if gain > 0 else None)
    print(f"ray-scale {name}: local {local['fixed_s']:.1f} s + {local['per_sample_ms']:.3f} "
          f"ms/sample; ray x2 {remote['fixed_s']:.1f} s + {remote['per_sample_ms']:.3f} "
          f"ms/sample; Ray is faster from "
          f"{fits['break_even_samples'] or float('inf'):.0f} samples on", flush=True)
    return fits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("lenet", "vgg", "memory", "ray-scale"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))))
        return
    report: dict = {"cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        if args.only in (None, "lenet"):
            x = rng.uniform(0, 255, (8192, 32, 32, 1)).astype(np.float32)
            report["lenet"] = throughput("lenet", str(LENET), x, folder)
        if args.only in (None, "vgg"):
            x = rng.uniform(0, 255, (256, 64, 64, 3)).astype(np.float32)
            report["vgg"] = throughput("vgg", _vgg(folder), x, folder)
        if args.only in (None, "memory"):
            report["memory"] = memory(folder)
        if args.only in (None, "ray-scale"):
            report["ray_scale"] = {
                "lenet": ray_scale(folder, "lenet", str(LENET), (32, 32, 1), RAY_SCALE["lenet"]),
                "vgg": ray_scale(folder, "vgg", _vgg(folder), (64, 64, 3), RAY_SCALE["vgg"])}
    for name in ("lenet", "vgg"):
        for label, _, ratio, cpu_ratio in report.get(name, []):
            print(f"{name:6s} {label:26s} {ratio:5.2f} x the in-process analyzer's samples/s, "
                  f"{cpu_ratio:5.2f} x by CPU time (end to end, this process)")
    rows = report.get("memory", [])
    for fmt in ("shards", "png,npy"):
        for key in ("max_rss_mb", "end_rss_mb"):
            mb = {n: r[key] for f, n, r in rows if f == fmt}
            if len(mb) == 2:
                print(f"memory {fmt} {key}: 1k {mb[1000]:.1f} MB, 20k {mb[20000]:.1f} MB "
                      f"({100 * (mb[20000] / mb[1000] - 1):+.1f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
