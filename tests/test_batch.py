"""Batch runs at scale (issue 10): lazy inputs, shards and index, durable batches, resume,
locking, and runs killed with SIGKILL midway then resumed.

The shipped LeNet (32x32x1, pixels 0..255) explains small random inputs; relevance is
compared with the in-process analyzer with a tolerance (other batch compositions pick other
float32 kernels).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tf_lrp import Analyzer, cli, load_model
from tf_lrp.runs import inputs as cli_inputs
from tf_lrp.runs import outputs as cli_outputs

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "saved_models" / "digits_lenet.h5"
DIGITS = ROOT / "examples" / "digits"  # 28x28 PNGs: resized to 32x32 for LeNet


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_close(actual, expected) -> None:
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture(scope="module")
def analyzer():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*softmax")
        return Analyzer(load_model(LENET), "epsilon_plus")


@pytest.fixture(scope="module")
def pixels():
    """40 random 32x32 'images' (pixel values 0..255)."""
    return np.random.default_rng(0).uniform(0, 255, (40, 32, 32, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory, pixels):
    """An image store: a tree of .npy samples and PNGs, with one corrupt file."""
    root = tmp_path_factory.mktemp("store")
    for i in range(10):
        folder = root / ("a" if i < 5 else "b/deep")
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"s{i:02d}.npy", pixels[i])
    np.save(root / "batch.npy", pixels[10:20])
    for png in sorted(DIGITS.glob("*.png"))[:3]:
        shutil.copy(png, root / "a" / png.name)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    return root


def store_inputs(store: Path, analyzer) -> dict[str, np.ndarray]:
    """What each input of the store decodes to, by index label."""
    x = {}
    for path in sorted(store.rglob("*.npy")):
        array = np.load(path)
        if array.ndim == 4:
            x.update({f"{path}[{i}]": a for i, a in enumerate(array)})
        else:
            x[str(path)] = array
    for path in sorted(store.rglob("test*.png")):
        image = Image.open(path).convert("L").resize((32, 32), Image.Resampling.BILINEAR)
        x[str(path)] = np.asarray(image, np.float32)[..., None]
    return x


def test_enumeration_is_lazy_ordered_and_names_problems(store, tmp_path, pixels):
    spec = cli_inputs.InputSpec((32, 32, 1))
    (tmp_path / "dup").mkdir()
    np.save(tmp_path / "dup" / "x.npy", pixels[0])
    shutil.copy(sorted(DIGITS.glob("*.png"))[0], tmp_path / "dup" / "x.png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{store / 'a' / 's00.npy'}\n\ndup/x.npy\nmissing.npy\n")
    entries = cli_inputs.iter_entries([str(store), f"@{listing}", str(tmp_path / "dup"),
                                       str(store / "b" / "*" / "*.npy")], spec)
    assert next(entries).name == "a/s00"  # a generator: nothing is listed up front
    rest = list(entries)
    names = ["a/s00"] + [e.name for e in rest]
    assert names[:5] == ["a/s00", "a/s01", "a/s02", "a/s03", "a/s04"]  # sorted, depth-first
    assert names[5:8] == ["a/" + p.stem for p in sorted(DIGITS.glob("*.png"))[:3]]
    assert names[8:9] == ["b/broken"] and names[9:14] == [f"b/deep/s{i:02d}" for i in range(5, 10)]
    assert names[14:24] == [f"batch_{i}" for i in range(10)]
    # the list: an absolute path by its stem, a relative one by its path; the dup directory;
    # the glob's names are relative to its fixed part (store/b)
    assert names[24:] == ["s00", "dup/x", "missing", "x", "x"] + \
        [f"deep/s{i:02d}" for i in range(5, 10)]
    assert [e.seq for e in rest] == list(range(1, len(rest) + 1))
    problems = [(e.name, e.problem) for e in rest if e.problem]
    assert problems == [("missing", "no such file or directory"),
                        ("x", "its output name 'x' is taken by an earlier input; rename one of "
                              "them or explain them separately")]
    assert rest[-6].path.endswith("x.png")  # the second 'x' is the one refused


def test_shards_index_and_skipped(store, analyzer, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "explain", LENET, store, "--out", out, "--format", "shards",
                            "--shard-size", "7", "--batch-size", "5")
    assert code == 1 and re.search(r"^tf-lrp: skipped .*broken\.png: cannot be read as an image",
                                   err, re.M)
    assert "tf-lrp: 23 explained, 0 already done, 1 skipped" in stdout and "samples/s" in stdout
    index = pd.read_csv(out / "index.csv")  # pandas reads it in one line
    assert list(index.columns) == list(cli.INDEX_COLUMNS)
    expected = store_inputs(store, analyzer)
    assert sorted(index["input"]) == sorted(expected) and index["input"].is_unique
    shards = sorted((out / "shards").glob("shard-*.npy"))
    assert [p.name for p in shards] == [f"shard-{k:06d}.npy" for k in range(4)]
    # 24 entries in shards of 7: the broken file is entry 8, in shard 1, which has 6 rows
    assert [len(np.load(p)) for p in shards] == [7, 6, 7, 3]
    x = np.stack([expected[name] for name in index["input"]])
    reference = analyzer(x)
    saved = np.stack([np.load(out / row.shard, mmap_mode="r")[row.row]
                      for row in index.itertuples()])
    assert_close(saved, reference)
    logits = analyzer.predict(x)
    assert (index["predicted_class"] == logits.argmax(1)).all()
    assert (index["explained_class"] == index["predicted_class"]).all()
    np.testing.assert_allclose(index["logit"], logits.max(1), rtol=1e-5)
    np.testing.assert_allclose(index["relevance_sum"], saved.reshape(len(x), -1).sum(1),
                               rtol=1e-5, atol=1e-5 * np.abs(index["relevance_sum"]).max())
    skipped = read_rows(out / "skipped.csv")
    assert [r["input"] for r in skipped] == [str(store / "b" / "broken.png")]
    assert "cannot be read as an image" in skipped[0]["reason"]
    assert not temporaries(out)
    # the shard's own .csv (what --resume rebuilds the index from): the documented columns,
    # the skipped input as a row with only its label and reason
    with open(out / "shards" / "shard-000001.csv", newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["input", "row", "predicted_class", "explained_class", "logit",
                       "relevance_sum", "error"]
    broken = [r for r in rows if r[0].endswith("broken.png")]
    assert len(broken) == 1 and broken[0][1:6] == ["", "", "", "", ""]
    assert "cannot be read as an image" in broken[0][6]
    # every shard is a version 1.0 .npy whose data starts at byte 256, 64-byte aligned
    for path in shards:
        raw = path.read_bytes()[:256]
        assert raw[:8] == b"\x93NUMPY\x01\x00" and raw[255:256] == b"\n"
        assert int.from_bytes(raw[8:10], "little") + 10 == 256
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    assert manifest == {"shard_size": 7, "sample_shape": [32, 32, 1], "version": 1}


def test_shard_resume_redoes_only_unfinished_shards(store, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["explain", LENET, store, "--out", out, "--format", "shards", "--shard-size", "7", "-q"]
    assert run(capsys, *argv)[0] == 1
    index_before = pd.read_csv(out / "index.csv")
    shard = out / "shards"
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard.iterdir()}
    # a run killed after shard 2's .npy was moved into place, before its .csv; a temporary file
    (shard / "shard-000002.csv").unlink()
    (shard / ".shard-000003.npy.0123456789abcdef.tmp").write_bytes(b"half")
    # and a shard whose .npy holds fewer rows than its .csv lists (a file that lies): redone
    np.save(shard / "shard-000003.npy", np.load(shard / "shard-000003.npy")[:-1])
    mtimes.pop("shard-000003.npy")
    (shard / "shard-000000.npy").write_bytes(b"\x93NUMPY garbage")  # unreadable: redone
    mtimes.pop("shard-000000.npy")
    with open(out / "index.csv", "a") as stream:
        stream.write("half a row")  # an index append cut short
    code, stdout, _ = run(capsys, *argv[:-1], "--resume")
    # the broken file, skipped in shard 1 by the first run, still counts (and is listed)
    assert code == 1 and "tf-lrp: 17 explained, 7 already done, 1 skipped" in stdout
    skipped = read_rows(out / "skipped.csv")  # rebuilt from the shards' .csv files
    assert [r["input"] for r in skipped] == [str(store / "b" / "broken.png")]
    assert skipped[0]["reason"].startswith("cannot be read as an image")
    after = {p.name: p.stat().st_mtime_ns for p in shard.iterdir()}
    unchanged = {n for n in mtimes if mtimes[n] == after.get(n)}
    assert {"shard-000001.npy", "shard-000001.csv"} <= unchanged
    assert not {"shard-000000.csv", "shard-000002.npy", "shard-000003.csv"} & unchanged
    assert np.load(shard / "shard-000003.npy").shape[0] == 3
    assert not temporaries(out)
    index_after = pd.read_csv(out / "index.csv")  # rebuilt: the cut row is gone
    columns = ["input", "shard", "row", "predicted_class", "explained_class"]
    pd.testing.assert_frame_equal(index_after[columns], index_before[columns])
    for column in ("logit", "relevance_sum"):  # shard 2 was explained in other batches
        np.testing.assert_allclose(index_after[column], index_before[column], rtol=1e-5,
                                   atol=1e-5 * np.abs(index_before[column]).max())
    # resuming a finished run changes nothing
    code, stdout, _ = run(capsys, *argv[:-1], "--resume")
    assert code == 1 and "tf-lrp: 0 explained, 24 already done, 1 skipped" in stdout
    pd.testing.assert_frame_equal(pd.read_csv(out / "index.csv"), index_after)
    # without --resume everything is redone
    code, stdout, _ = run(capsys, *argv[:-1])
    assert code == 1 and "tf-lrp: 23 explained, 0 already done, 1 skipped" in stdout
    # another shard size cannot resume these shards
    code, _, err = run(capsys, *argv[:-3], "--shard-size", "5", "--resume", "-q")
    assert code == 2 and err.strip().endswith(
        f"--resume: {out} holds shards of 7 samples of shape (32, 32, 1); this run makes 5 of "
        "(32, 32, 1). Resume with --shard-size 7 and the same model, or choose another --out")


def test_per_sample_files_mirror_the_tree(store, tmp_path, capsys, analyzer):
    out = tmp_path / "files"
    code, stdout, _ = run(capsys, "explain", LENET, store / "b", store / "a" / "s00.npy",
                          "--out", out, "--format", "npy")
    assert code == 1 and "tf-lrp: 6 explained, 0 already done, 1 skipped" in stdout
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npy")) == \
        [f"deep/s{i:02d}.npy" for i in range(5, 10)] + ["s00.npy"]
    assert not list(out.rglob("*.png"))
    rows = read_rows(out / "summary.csv")
    assert [r["input"] for r in rows] == [f"deep/s{i:02d}" for i in range(5, 10)] + ["s00"]
    expected = store_inputs(store, analyzer)
    assert_close(np.load(out / "deep" / "s07.npy"),
                 analyzer(expected[str(store / "b" / "deep" / "s07.npy")][None])[0])
    assert [r["input"] for r in read_rows(out / "skipped.csv")] == [str(store / "b" / "broken.png")]


def test_one_sync_per_batch_and_the_directory_lock(tmp_path, capsys, monkeypatch, pixels):
    np.save(tmp_path / "x.npy", pixels[:10])
    syncs = []
    real = cli_outputs.sync_files
    monkeypatch.setattr(cli_outputs, "sync_files", lambda paths, root: (syncs.append(len(paths)),
                                                                        real(paths, root)))
    out = tmp_path / "out"
    assert run(capsys, "explain", LENET, tmp_path / "x.npy", "--out", out, "--batch-size", "4",
               "-q")[0] == 0
    # 3 batches of files (2 files per sample) and the summary written through atomic_write
    assert syncs == [8, 8, 4]
    with cli_outputs.locked(out):  # another run writing to the same directory
        code, _, err = run(capsys, "explain", LENET, tmp_path / "x.npy", "--out", out, "-q")
    assert code == 2 and "another tf-lrp explain is writing to" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--format", "tiff"], "expected png,npy"),
    (["--devices", "9"], "--devices 9"),
])
def test_option_errors(argv, message, tmp_path, capsys, pixels):
    np.save(tmp_path / "x.npy", pixels[:2])
    code, _, err = run(capsys, "explain", LENET, tmp_path / "x.npy", "--out", tmp_path / "o",
                       *argv)
    assert code == 2 and message in err and "Traceback" not in err


def _start(argv: list[str]) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "tf_lrp", "explain", *argv, "-q"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Two runs started at once (their start-ups overlap), each killed with SIGKILL as soon
    as it has committed some work: per-sample files (300 samples, batches of 8) and shards
    (600 samples, shards of 50). Returns ``{mode: (argv, out, x)}``."""
    folder = tmp_path_factory.mktemp("killed")
    x = np.random.default_rng(1).uniform(0, 255, (600, 32, 32, 1)).astype(np.float32)
    np.save(folder / "many.npy", x)
    np.save(folder / "few.npy", x[:300])
    runs = {
        "files": ([str(LENET), str(folder / "few.npy"), "--out", str(folder / "files"),
                   "--batch-size", "8"], folder / "files", x[:300],
                  lambda o: len(list(o.glob("*.png"))) >= 16),
        "shards": ([str(LENET), str(folder / "many.npy"), "--out", str(folder / "shards"),
                    "--format", "shards", "--shard-size", "50", "--batch-size", "25"],
                   folder / "shards", x, lambda o: len(list(o.glob("shards/shard-*.csv"))) >= 2),
    }
    processes = {mode: _start(run[0]) for mode, run in runs.items()}
    deadline = time.monotonic() + 180
    try:
        while any(p.returncode is None for p in processes.values()):
            for mode, process in processes.items():
                if process.returncode is not None:
                    continue
                out, ready = runs[mode][1], runs[mode][3]
                if out.exists() and ready(out):
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=60)
                elif process.poll() is not None:
                    pytest.fail(f"the {mode} run ended before it was killed: "
                                f"{process.stderr.read()}")
            assert time.monotonic() < deadline, "no output within 180 s"
            time.sleep(0.005)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for mode, process in processes.items():
        assert process.returncode == -signal.SIGKILL, mode
    return {mode: run[:3] for mode, run in runs.items()}


def test_sigkill_then_resume_per_sample_files(killed, capsys, analyzer):
    argv, out, x = killed["files"]
    done = {p.stem for p in out.glob("*.png")} & {p.stem for p in out.glob("*.npy")}
    assert 16 <= len(done) < len(x)  # killed midway
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.stem in done}
    code, stdout, _ = run(capsys, "explain", *argv, "--resume")
    assert code == 0
    assert f"{len(x) - len(done)} explained, {len(done)} already done, 0 skipped" in stdout
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in before.items())
    names = [f"few_{i}" for i in range(len(x))]
    assert sorted(p.stem for p in out.glob("*.npy")) == sorted(names)
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names)
    rows = read_rows(out / "summary.csv")
    assert [r["input"] for r in rows] == names  # each exactly once, in input order
    assert not temporaries(out)
    check = [0, len(done) - 1, len(done), len(x) - 1]  # around the kill
    assert_close(np.stack([np.load(out / f"few_{i}.npy") for i in check]), analyzer(x[check]))
    for i in check:
        total = np.load(out / f"few_{i}.npy").sum(dtype=np.float64)
        assert float(rows[i]["relevance_sum"]) == pytest.approx(total, rel=1e-12)


def test_sigkill_then_resume_shards(killed, capsys, analyzer):
    argv, out, x = killed["shards"]
    path = argv[1]
    finished = sorted(p.stem for p in (out / "shards").glob("shard-*.csv"))
    assert 2 <= len(finished) < 12
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("shard-*")
              if p.stem in finished}
    code, stdout, _ = run(capsys, "explain", *argv, "--resume")
    assert code == 0
    assert f"{50 * len(finished)} already done" in stdout
    assert all((out / "shards" / n).stat().st_mtime_ns == t for n, t in before.items())
    index = pd.read_csv(out / "index.csv")
    assert list(index["input"]) == [f"{path}[{i}]" for i in range(len(x))]  # once, in order
    assert list(index["row"]) == [i % 50 for i in range(len(x))]
    assert not temporaries(out)
    for k, shard in enumerate(sorted((out / "shards").glob("shard-*.npy"))):
        assert np.load(shard, mmap_mode="r").shape == (50, 32, 32, 1)
        assert shard.name == f"shard-{k:06d}.npy"
    check = [0, 50 * len(finished) - 1, 50 * len(finished), len(x) - 1]
    saved = np.stack([np.load(out / index["shard"][i], mmap_mode="r")[index["row"][i]]
                      for i in check])
    assert_close(saved, analyzer(x[check]))


def test_shard_header_and_a_relevance_of_the_wrong_shape(tmp_path):
    from tf_lrp.runs import shards
    from tf_lrp.runs.common import UsageError
    from tf_lrp.runs.inputs import Entry
    from tf_lrp.runs.outputs import Result, Skipped

    data = np.arange(30, dtype=np.float32).reshape(5, 3, 2)
    (tmp_path / "h.npy").write_bytes(shards.npy_header((5, 3, 2)) + data.tobytes())
    np.testing.assert_array_equal(np.load(tmp_path / "h.npy"), data)
    with pytest.raises(ValueError, match=r"^sample shape \(1, .*\) is too long for a shard header$"):
        shards.npy_header((1,) * 80)
    sink = shards.ShardSink(tmp_path, 4, (3, 2), False, Skipped(tmp_path))
    result = Result(Entry(0, "a_0", "a.npy", 0), None, np.zeros((2, 3)), 1, None, 0.5)
    with pytest.raises(UsageError, match=r"the relevance of a\.npy\[0\] has shape \(2, 3\), "
                                             r"not the shard's \(3, 2\)"):
        sink.write([result], (0.0, 255.0))
    sink.close(False)


def test_sync_files_one_syncfs_or_an_fsync_per_file(tmp_path, monkeypatch):
    """Durability is not visible without a power cut, so the calls are checked: one syncfs of
    the output's file system on Linux; where it is missing or fails, an fsync of every file
    (each its own); directories fsynced, missing ones passed over; temporaries counted."""
    paths = [tmp_path / f"f{i}" for i in range(3)]
    for p in paths:
        p.write_bytes(b"x")
    if sys.platform.startswith("linux"):
        assert cli_outputs._SYNCFS is not None
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            assert cli_outputs._libc_syncfs()(fd) == 0
        finally:
            os.close(fd)
    synced, fsynced = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(os.fstat(fd).st_ino),
                                                 real_fsync(fd)))
    inodes = [p.stat().st_ino for p in paths]
    for syncfs, want_syncfs, want_fsync in (
            (lambda fd: synced.append(os.fstat(fd).st_ino) or 0, 1, []),  # syncfs works
            (lambda fd: synced.append(os.fstat(fd).st_ino) or -1, 1, inodes),  # it fails
            (None, 0, inodes)):  # not on this platform
        synced.clear()
        fsynced.clear()
        monkeypatch.setattr(cli_outputs, "_SYNCFS", syncfs)
        cli_outputs.sync_files(paths, tmp_path)
        assert synced == [tmp_path.stat().st_ino] * want_syncfs and fsynced == want_fsync
        cli_outputs.sync_files([], tmp_path)
        assert len(synced) == want_syncfs and fsynced == want_fsync  # nothing to sync
    fsynced.clear()
    cli_outputs.sync_directories([tmp_path / "missing", tmp_path])
    assert fsynced == [tmp_path.stat().st_ino]
    (tmp_path / ".f0.0123456789abcdef.tmp").write_bytes(b"half")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".g.fedcba9876543210.tmp").write_bytes(b"half")
    (tmp_path / ".hidden").mkdir()  # not ours: hidden directories are not entered
    (tmp_path / ".hidden" / ".h.0123456789abcdef.tmp").write_bytes(b"theirs")
    assert cli_outputs.remove_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        ".h.0123456789abcdef.tmp", ".hidden", "f0", "f1", "f2", "sub"]
    # what atomic_write leaves when killed is what remove_temporaries removes; the file it
    # writes has the mode any new file gets (0o666 less the umask)
    from tf_lrp import storage

    temp = storage.temp_path(tmp_path / "a.npy")
    assert temp.parent == tmp_path and cli_outputs.TEMP_PATTERN.match(temp.name)
    storage.atomic_write(tmp_path / "a.npy", lambda stream: stream.write(b"data"))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.npy").stat().st_mode & 0o777 == 0o666 & ~umask


def test_output_dir_made_with_its_parents_or_refused_whole(tmp_path, capsys, pixels):
    from tf_lrp.runs.common import UsageError

    made = cli_outputs.output_dir(str(tmp_path / "a" / "b"))
    assert made == tmp_path / "a" / "b" and made.is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"^--out .*/file exists and is not a directory$"):
        cli_outputs.output_dir(str(tmp_path / "file"))
    with pytest.raises(UsageError, match=r"^cannot create the output directory .*/file/sub: "):
        cli_outputs.output_dir(str(tmp_path / "file" / "sub"))
    np.save(tmp_path / "x.npy", pixels[:1])
    out = tmp_path / "out"
    with cli_outputs.locked(cli_outputs.output_dir(str(out))):
        code, _, err = run(capsys, "explain", LENET, tmp_path / "x.npy", "--out", out, "-q")
    assert code == 2 and err.strip().endswith(
        f"another tf-lrp explain is writing to {out}; wait for it to end or choose another --out")


def test_skipped_counts_every_input_and_start_all_is_written_as_all(tmp_path, capsys, pixels):
    skip = cli_outputs.Skipped(tmp_path)
    skip("a.png", "first reason")
    skip("b.png", "second reason", record=False)  # counted, listed by its shard instead
    assert skip.count == 2 and skip.rows == [("a.png", "first reason")]
    np.save(tmp_path / "x.npy", pixels[:3])
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "explain", LENET, tmp_path / "x.npy", "--out", out,
                          "--format", "shards", "--start", "all")
    assert code == 0 and "tf-lrp: 3 explained, 0 already done, 0 skipped" in stdout
    index = pd.read_csv(out / "index.csv")
    assert list(index["explained_class"]) == ["all"] * 3


def test_progress_on_a_log_counts_and_estimates(capsys, monkeypatch):
    """Not a terminal: a line per ``log_seconds`` with the samples so far, the total counted
    in the background and the ETA; quiet: nothing, and the total is not counted."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    counted = []
    progress = cli_outputs.Progress(lambda: counted.append(1) or 10, quiet=False, log_seconds=0)
    for _ in range(100):  # the count runs in a thread
        if progress.total is not None:
            break
        time.sleep(0.01)
    assert progress.bar.disable and progress.total == 10 and counted == [1]
    progress.update(4)
    progress.update(2)
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert [re.sub(r"ETA \S+ \(.*", "ETA", line) for line in lines] == [
        "tf-lrp: 4 samples of 10, ETA", "tf-lrp: 6 samples of 10, ETA"]
    assert progress.close() >= 0
    quiet = cli_outputs.Progress(lambda: counted.append(2) or 10, quiet=True, log_seconds=0)
    quiet.update(3)
    time.sleep(0.05)
    assert quiet.n == 3 and quiet.total is None and counted == [1]
    assert capsys.readouterr().err == ""
    slow = cli_outputs.Progress(None, quiet=False)  # the default: a line a minute at most
    slow.update(1)
    assert slow.log_seconds == 60.0 and capsys.readouterr().err == ""


def test_progress_rate_and_eta_on_a_clock(capsys, monkeypatch):
    """With a controlled clock: a line when ``log_seconds`` have passed (not before), the rate
    since the start, the ETA of the rest; without a total, no ETA; on a terminal the bar gets
    the total."""
    now = [1.0]
    monkeypatch.setattr(cli_outputs.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    progress = cli_outputs.Progress(None, quiet=False, log_seconds=2.0)
    progress.total = 10  # as the counting thread sets it
    for t, n in ((3.0, 4), (5.0, 2), (6.0, 1)):
        now[0] = t
        progress.update(n)
    assert [line for line in capsys.readouterr().err.splitlines() if line] == [
        "tf-lrp: 4 samples of 10, ETA 00:00:03 (2.0 samples/s)",
        "tf-lrp: 6 samples of 10, ETA 00:00:02 (1.5 samples/s)"]
    now[0] = 8.5
    assert progress.close() == 7.5  # the seconds since the start (1.0)
    untold = cli_outputs.Progress(None, quiet=False, log_seconds=0.0)
    now[0] = 14.5  # it started at 8.5
    untold.update(3)
    assert capsys.readouterr().err.strip() == "tf-lrp: 3 samples (0.5 samples/s)"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = cli_outputs.Progress(lambda: 12, quiet=False)
    for _ in range(100):
        if bar.total is not None:
            break
        time.sleep(0.01)
    assert not bar.bar.disable and bar.bar.total == 12
    bar.close()
