"""tf_lrp.ray on a local Ray instance (one per test session, 2 CPUs): the Explainer callable
class, the one-call helper over image files, and ``tf-lrp explain --ray`` surviving a worker
process killed midway (Ray Data restarts the actor and retries its task)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install -e '.[ray]' (the test extra includes it)")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")

from tf_lrp import Analyzer, cli, load_model  # noqa: E402
from tf_lrp import ray as lrp_ray  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "saved_models" / "digits_mlp.h5"
LENET = ROOT / "saved_models" / "digits_lenet.h5"
PNGS = sorted((ROOT / "examples" / "digits").glob("*.png"))


@pytest.fixture(scope="session")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def analyzer_for(path: Path) -> Analyzer:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        return Analyzer(load_model(path), "epsilon_plus")


def assert_close(actual, expected) -> None:
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_explainer_columns_in_process():
    """The callable class itself (no actors): uint8 images, a validity mask, pass-through."""
    explainer = lrp_ray.Explainer(str(MLP), "epsilon_plus", target=None, valid_column="ok")
    images = np.stack([np.asarray(Image.open(p).convert("L"))[..., None] for p in PNGS[:4]])
    ok = np.array([True, False, True, True])
    out = explainer({"image": images, "ok": ok, "path": np.array([str(p) for p in PNGS[:4]])})
    assert set(out) == {"ok", "path", *lrp_ray.COLUMNS}  # the input column is dropped
    analyzer = analyzer_for(MLP)
    x = images[ok].astype(np.float32)
    assert_close(out["relevance"][ok], analyzer(x))
    assert not out["relevance"][1].any() and out["predicted_class"][1] == -1
    logits = analyzer.predict(x)
    assert list(out["predicted_class"][ok]) == list(logits.argmax(1))
    assert list(out["predicted_class"][ok]) == [int(p.stem[-1]) for p in np.array(PNGS[:4])[ok]]
    np.testing.assert_allclose(out["logit"][ok], logits.max(1), rtol=1e-5)
    np.testing.assert_allclose(out["relevance_sum"], out["relevance"].reshape(4, -1).sum(1),
                               rtol=1e-6)


def test_explain_dataset_reads_images_and_writes_shards(local_ray, tmp_path):
    out = lrp_ray.explain_dataset(str(MLP), [str(p) for p in PNGS], tmp_path / "out",
                                  shard_size=4, batch_size=3, actors=1)
    index = pd.read_csv(out / "index.csv")
    assert sorted(Path(p).name for p in index["input"]) == [p.name for p in PNGS]
    assert list(index["shard"]) == ["shards/shard-000000.npy"] * 4 + ["shards/shard-000001.npy"] * 2
    by_name = {p.name: np.asarray(Image.open(p).convert("L"), np.float32)[..., None] for p in PNGS}
    x = np.stack([by_name[Path(p).name] for p in index["input"]])
    saved = np.stack([np.load(out / r.shard)[r.row] for r in index.itertuples()])
    assert_close(saved, analyzer_for(MLP)(x))
    assert list(index["predicted_class"]) == [int(Path(p).stem[-1]) for p in index["input"]]


def test_cli_ray_survives_a_killed_worker(local_ray, tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(5).uniform(0, 255, (40, 32, 32, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    marker = str(tmp_path / "killed-once")
    base = lrp_ray.Explainer

    class DiesOnce(base):
        """Exits its worker process the first time it sees entry 17 (once: a marker file)."""

        def __call__(self, batch):
            if 17 in batch["seq"] and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().__call__(batch)

    monkeypatch.setattr(lrp_ray, "Explainer", DiesOnce)
    out = tmp_path / "out"
    code = cli.main(["explain", str(LENET), str(tmp_path / "x.npy"), "--out", str(out),
                     "--format", "shards", "--shard-size", "10", "--batch-size", "8", "--ray",
                     "--ray-actors", "1", "--composite", "epsilon_gamma_box"])
    stdout = capsys.readouterr().out
    assert code == 0 and "tf-lrp: 40 explained, 0 already done, 0 skipped" in stdout
    assert os.path.exists(marker)  # the worker really died once
    index = pd.read_csv(out / "index.csv")
    assert list(index["input"]) == [f"{tmp_path / 'x.npy'}[{i}]" for i in range(40)]
    saved = np.stack([np.load(out / r.shard)[r.row] for r in index.itertuples()])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        reference = Analyzer(load_model(LENET), "epsilon_gamma_box", low=0.0, high=255.0)
    assert_close(saved, reference(x))
    assert [len(np.load(p)) for p in sorted((out / "shards").glob("*.npy"))] == [10] * 4
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_explain_dataset_streams_one_job_and_resumes_like_a_local_run(local_ray, tmp_path,
                                                                      monkeypatch):
    """Entries in several blocks run in one job (each actor starts once); a decode failure is
    listed as skipped; ``resume=True`` redoes only the unfinished shard; a Dataset cannot
    resume."""
    import uuid

    from tf_lrp import InputError

    x = np.random.default_rng(6).uniform(0, 255, (10, 32, 32, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    log = tmp_path / "log"
    log.mkdir()

    class Logged(lrp_ray.Explainer):
        """Leaves a file per construction and per explained entry (actors are processes)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            (log / f"init-{uuid.uuid4().hex}").touch()

        def __call__(self, batch):
            for seq, ok in zip(batch["seq"].tolist(), batch["ok"].tolist()):
                if ok:
                    (log / f"seq-{seq}").touch()
            return super().__call__(batch)

    monkeypatch.setattr(lrp_ray, "SPOOL_ROWS", 4)  # 11 entries: three blocks, one job
    out = tmp_path / "out"
    options = dict(shard_size=4, batch_size=3, actors=2, explainer=Logged,
                   composite="epsilon_gamma_box", low=0.0, high=255.0)
    sources = [str(tmp_path / "x.npy"), str(tmp_path / "broken.png")]
    lrp_ray.explain_dataset(str(LENET), sources, out, **options)
    assert len(list(log.glob("init-*"))) == 2  # as many actors as CPUs: the read still runs
    assert sorted(int(p.name[4:]) for p in log.glob("seq-*")) == list(range(10))
    index = pd.read_csv(out / "index.csv")
    assert list(index["input"]) == [f"{tmp_path / 'x.npy'}[{i}]" for i in range(10)]
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["input"]) == [str(tmp_path / "broken.png")]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        reference = Analyzer(load_model(LENET), "epsilon_gamma_box", low=0.0, high=255.0)
    saved = np.stack([np.load(out / r.shard)[r.row] for r in index.itertuples()])
    assert_close(saved, reference(x))
    (out / "shards" / "shard-000001.csv").unlink()  # killed before shard 1's .csv was written
    for p in log.iterdir():
        p.unlink()
    lrp_ray.explain_dataset(str(LENET), sources, out, resume=True, **options)
    assert sorted(int(p.name[4:]) for p in log.glob("seq-*")) == [4, 5, 6, 7]
    again = pd.read_csv(out / "index.csv")
    assert list(again["input"]) == list(index["input"])
    np.testing.assert_allclose(again["relevance_sum"], index["relevance_sum"], rtol=1e-5,
                               atol=1e-5 * np.abs(index["relevance_sum"]).max())
    assert list(pd.read_csv(out / "skipped.csv")["input"]) == [str(tmp_path / "broken.png")]
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    with pytest.raises(InputError, match=r"resume=True\) needs files"):
        lrp_ray.explain_dataset(str(LENET), ray.data.from_numpy(x), tmp_path / "o2",
                                resume=True)


def test_explain_dataset_rows_of_a_dataset_numbered_across_batches(local_ray, tmp_path):
    """A Dataset without a path column: rows are labelled by their place in the Dataset (not
    in their batch), in order, each relevance that of its own row."""
    x = np.random.default_rng(8).uniform(0, 255, (5, 32, 32, 1)).astype(np.float32)
    blocks = ray.data.from_numpy([x[:2], x[2:4], x[4:]])  # one block per batch
    out = lrp_ray.explain_dataset(str(LENET), blocks, tmp_path / "out", column="data",
                                  batch_size=2, shard_size=3)
    index = pd.read_csv(out / "index.csv")
    assert list(index["input"]) == [f"data[{i}]" for i in range(5)]
    relevance = np.concatenate([np.load(p) for p in sorted((out / "shards").glob("*.npy"))])
    assert_close(relevance, analyzer_for(LENET)(x))
