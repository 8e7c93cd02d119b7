"""Property-based tests of every ``micranet`` subcommand: arguments and small files drawn at random.

Each test draws arguments (valid, out of range, malformed) and small, possibly
broken, input files, calls :func:`micranet_utils.cli.main` in this process and
checks what must hold whatever the input:

* the exit status is 0, 1 or 2 (argparse's own refusals exit 2 too);
* no traceback on stderr;
* nothing is written outside the output folder, and every input file is
  unchanged (hashed before and after);
* no half-written file is left (``*.tmp``, ``*.part``, ``*.partial``).

The examples are few and derandomised (the same on every run), so that all the
tests together take about a minute on a laptop; raise ``MICRANET_FUZZ_EXAMPLES``
to search longer.
"""

import contextlib
import hashlib
import io
import os
import shutil
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
import tifffile
from hypothesis import event, HealthCheck, given, settings
from hypothesis import strategies as st

from micranet_utils.cli import main
from micranet_utils.io.zoo import save_zoo
from micranet_utils.model.network import MICRANet

sys.path.insert(0, str(Path(__file__).parent))
from training_data import write_tiny_folder  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SCALE = int(os.environ.get("MICRANET_FUZZ_EXAMPLES", "1"))


def fuzz(examples):
    """Hypothesis settings of these tests: `examples` per test (times MICRANET_FUZZ_EXAMPLES)."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ---------------------------------------------------------------- the invariants

def tree(root):
    """{relative path: SHA-256 of the bytes (or the link target)} of everything under `root`."""
    found = {}
    for path in Path(root).rglob("*"):
        if path.is_symlink():
            found[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run(argv):
    """(exit status, stderr) of ``micranet ARGV`` run in this process."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:              # argparse: --help (0) or a refused argument (2)
            code = stop.code
    return code, err.getvalue()


def check(root, out, argv):
    """Run ``micranet ARGV`` in the tree `root` and assert the invariants; returns (status, stderr)."""
    before = tree(root)
    code, err = run(argv)
    event(f"exit {code}")              # pytest --hypothesis-show-statistics: how many got how far
    after = tree(root)
    assert code in (0, 1, 2), f"exit status {code} for {argv}\n{err}"
    assert "Traceback" not in err, f"{argv}\n{err}"
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert not changed, f"{argv} changed or removed input files {changed}\n{err}"
    out = Path(out).resolve()
    outside = [p for p in set(after) - set(before)
               if not (Path(root, p).resolve() == out or out in Path(root, p).resolve().parents)]
    assert not outside, f"{argv} wrote outside the output folder: {outside}\n{err}"
    partial = [p for p in after if p.endswith((".tmp", ".part", ".partial"))]
    assert not partial, f"{argv} left half-written files {partial}\n{err}"
    return code, err


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Files every example copies: a tiny zoo, a tiny training folder, a few small images."""
    root = tmp_path_factory.mktemp("fuzz-shared")
    zoo = save_zoo(root / "zoo.hdf5", MICRANet(num_classes=2).eval(), {"size": 32, "seed": 0})
    data = write_tiny_folder(root / "data")
    return {"zoo": zoo, "data": data}


def _bytes_of(kind, good):
    """A file's bytes: the good one, or one of the usual ways files break."""
    if kind == "good":
        return good
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[: len(good) // 2]
    return b"not what you think it is\n"


FILE_KINDS = st.sampled_from(["good", "good", "good", "empty", "truncated", "text"])
NAMES = st.sampled_from(["cell", "=SUM(A1)", "+1", "-x", "@at", "a b é", "a", "a_tif", "A"])
SUFFIXES = st.sampled_from([".tif", ".tiff", ".TIF", ".png", ".txt"])


def _image(path, side, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "nan":
        array = np.full((side, side), np.nan, np.float32)
    else:
        array = (rng.random((side, side)) * 0.3).astype(np.float32)
    if path.suffix.lower() == ".png":
        from PIL import Image
        Image.fromarray((np.nan_to_num(array) * 255).astype(np.uint8)).save(path, format="png")
    else:
        tifffile.imwrite(path, array)
    if kind in ("empty", "truncated", "text"):
        path.write_bytes(_bytes_of(kind, path.read_bytes()))


# ---------------------------------------------------------------- one test per subcommand

@fuzz(15)
@given(kind=FILE_KINDS, name=st.one_of(st.none(), st.text(max_size=6)), group=st.one_of(st.none(),
       st.sampled_from(["MICRANet", "nope", ""])))
def test_info(shared, kind, name, group):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        zoo = root / "zoo file.hdf5"
        zoo.write_bytes(_bytes_of(kind, Path(shared["zoo"]).read_bytes()))
        argv = ["info", zoo] + (["--name", name] if name is not None else []) + (
            ["--group", group] if group is not None else [])
        code, err = check(root, root / "nothing", argv)
        if kind != "good":
            assert code == 2 and "zoo file.hdf5" in err, err


def prepared_output(path, kind, name):
    """An output path as a user may hand it over: absent, a file, or a folder already holding file `name`."""
    if kind == "file":
        path.write_text("a file, not a folder")
    elif kind not in ("fresh", "none"):
        path.mkdir()
        (path / name).write_text("precious")
    return path


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@fuzz(10)
@given(what=st.sampled_from(["all", "models", "datasets", "ilastik", "everything"]),
       retries=st.one_of(st.none(), st.integers(0, 1)),
       timeout=st.one_of(st.none(), st.sampled_from([0.5, 2.0])),
       home_kind=st.sampled_from(["fresh", "file", "existing"]), keep=st.booleans())
def test_download(what, retries, timeout, home_kind, keep):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        home = prepared_output(root / "cache", home_kind, "notes.txt")
        argv = ["download", what, "--no-progress", "--home", home]
        argv += (["--retries", retries] if retries is not None else []) + (
            ["--timeout", timeout] if timeout is not None else []) + (["--keep-archive"] if keep else [])
        environment = {"MICRANET_BASE_URL": f"http://127.0.0.1:{_closed_port()}", "MICRANET_HOME": str(home),
                       "MICRANET_DOWNLOAD_RETRIES": "0", "MICRANET_DOWNLOAD_TIMEOUT": "2"}
        with mock.patch.dict(os.environ, environment):
            code, err = check(root, home, argv)
        assert code == 2, err


@fuzz(15)
@given(n_images=st.sampled_from([-1, 0, 3, 4, 4]), size=st.sampled_from([-64, 0, 8, 63, 64, 64]),
       seed=st.sampled_from([-1, 0, 2]), existing=st.sampled_from(["none", "demo", "file", "other"]),
       overwrite=st.booleans())
def test_demo_data(n_images, size, seed, existing, overwrite):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        out = prepared_output(root / "demo", existing, "training_demo.hdf5" if existing == "demo" else "mine.txt")
        argv = ["demo-data", "--output", out, "--n-images", n_images, "--size", size, "--seed", seed, "--quiet"]
        if overwrite:       # --overwrite may replace the three demo files, and nothing else
            before = {p: d for p, d in tree(root).items() if not p.endswith("_demo.hdf5")}
            code, err = check(root, out, argv + ["--overwrite"]) if existing != "demo" else run(argv + ["--overwrite"])
            assert code in (0, 2) and "Traceback" not in err, err
            assert all(tree(root).get(p) == d for p, d in before.items()), err
        else:
            code, err = check(root, out, argv)
        if existing in ("demo", "file") and not overwrite:
            assert code == 2, err


def broken_values(valid, bad, broken, data):
    """`valid` with the values of the flags in `broken` replaced by bad ones drawn from `bad`."""
    values = dict(valid)
    for flag in broken:
        values[flag] = data.draw(st.sampled_from(bad[flag]), label=flag)
    return values


def _damage_training_file(path, damage):
    if damage == "text":
        path.write_text("not HDF5")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
    elif damage == "NaN pixels":
        with h5py.File(path, "a") as file:
            data = file["images/data"]
            data[0, 0, 0] = np.nan


TRAIN_VALID = {"--size": "32", "--batch-size": "4", "--epochs": "1", "--lr": "1e-3", "--augment": "0.5",
               "--step": "0.75", "--freeze": "1a", "--workers": "0"}
TRAIN_BAD = {"--size": ["4", "0", "-32", "1e9"], "--batch-size": ["0", "-4", "1000"], "--epochs": ["0", "-1"],
             "--lr": ["nan", "-1", "0", "inf"], "--augment": ["2", "-0.1", "nan"], "--step": ["0", "-1", "nan"],
             "--freeze": ["bogus", ",,", "linear1,all-conv"], "--workers": ["-1", "two"]}


@fuzz(15)
@given(broken=st.lists(st.sampled_from(sorted(TRAIN_BAD)), max_size=2, unique=True), data=st.data(),
       damage=st.sampled_from(["none", "none", "none", "text", "truncated", "NaN pixels"]))
def test_train_dry_run(shared, broken, data, damage):
    """From a valid dry run, break none, one or two values and maybe the training file."""
    values = broken_values(TRAIN_VALID, TRAIN_BAD, broken, data)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        copied = shutil.copytree(shared["data"], root / "data")
        _damage_training_file(copied / "training_tiny.hdf5", damage)
        out = root / "run"
        argv = ["train", "--data", copied, "--output", out, "--dry-run", "--device", "cpu", "--no-progress"]
        argv += [item for pair in values.items() for item in pair]
        code, err = check(root, out, argv)
        if broken or damage in ("text", "truncated"):
            assert code == 2, err
        else:
            assert code == 0 or "NaN" in err or "nan" in err, err


PREDICT_VALID = {"--tile": "1024", "--overlap": "128", "--min-size": "16", "--device": "cpu"}
PREDICT_BAD = {"--tile": ["-1", "0", "4", "7.5"], "--overlap": ["-1", "1024", "nan"], "--min-size": ["0", "-8"],
               "--device": ["banana", "cuda:7", "", "cpu:0:1"], "--normalize": ["sideways"],
               "--channel": ["-1"], "--plane": ["-2"]}   # a channel or plane an image lacks fails that image (1)


@fuzz(15)
@given(files=st.lists(st.tuples(NAMES, SUFFIXES, st.sampled_from(["good", "good", "good", "empty", "text", "nan"])),
                      min_size=1, max_size=3),
       broken=st.lists(st.sampled_from(sorted(PREDICT_BAD)), max_size=1), data=st.data(),
       where=st.sampled_from(["fresh", "fresh", "fresh", "input", "inside input"]),
       again=st.sampled_from(["no", "rerun", "overwrite", "damaged manifest", "damaged result"]))
def test_predict(shared, files, broken, data, where, again):
    """Small folders of good and broken images (colliding names, formula-like names), one value broken or none."""
    values = broken_values(PREDICT_VALID, PREDICT_BAD, broken, data)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        images = root / "in"
        images.mkdir()
        for seed, (name, suffix, kind) in enumerate(files):
            _image(images / f"{name}{suffix}", 32, kind, seed)
        out = {"fresh": root / "out", "input": images, "inside input": images / "results"}[where]
        argv = ["predict", "--model", shared["zoo"], "--input", images, "--output", out, "--quiet"]
        argv += [item for pair in values.items() for item in pair]
        code, err = check(root, out, argv)
        if where != "fresh" or broken:
            assert code == 2, err
        if code in (0, 1) and again != "no":
            if again == "damaged manifest":
                (out / "manifest.json").write_text("{")
            for result in out.glob("*_result.json") if again == "damaged result" else []:
                result.write_text("[1, 2")
            code, err = check(root, out, argv + (["--overwrite"] if again == "overwrite" else []))
            if again.startswith("damaged") and (again == "damaged manifest" or list(out.glob("*_result.json"))):
                assert code == 2 and "--overwrite" in err, err
        for path in out.glob("*.json") if where == "fresh" and again == "no" and out.is_dir() else []:
            assert "NaN" not in path.read_text(), f"{path} holds NaN"


def _labels_csv(path, count, broken):
    rows = ["filename,rings"] + [f"im{i}.tif,{i % 2}" for i in range(count)]
    if broken == "no header":
        rows = rows[1:]
    elif broken == "label 2":
        rows[1] = "im0.tif,2"
    elif broken == "missing row":
        rows = rows[:-1]
    elif broken == "ghost row":
        rows.append("ghost.tif,1")
    elif broken == "duplicate":
        rows.append("im0.tif,0")
    elif broken == "semicolons":
        rows = [r.replace(",", ";") for r in rows]
    path.write_text("\n".join(rows) + "\n")


MAKE_VALID = {"--crop-size": ["32"], "--split": ["0.5", "0.25", "0.25"], "--name": ["inhouse"],
              "--channels": ["1"], "--seed": ["0"]}
MAKE_BAD = {"--crop-size": [["0"], ["1"], ["1000"], ["-5"]],
            "--split": [["nan", "1", "1"], ["1", "inf", "1"], ["0", "0", "0"], ["1", "-1", "1"], ["1", "1"]],
            "--name": [["../up"], ["a/b"], [".hidden"], [""], ["x y"]], "--channels": [["0"], ["3"]],
            "--seed": [["-1"], ["1.5"]]}


@fuzz(12)
@given(broken=st.lists(st.sampled_from(sorted(MAKE_BAD)), max_size=1), data=st.data(),
       csv=st.sampled_from(["none", "none", "no header", "label 2", "missing row", "ghost row", "duplicate",
                            "semicolons"]),
       where=st.sampled_from(["fresh", "fresh", "fresh", "inside images"]),
       kinds=st.lists(st.sampled_from(["good", "good", "good", "empty", "nan"]), min_size=6, max_size=6))
def test_make_dataset(broken, data, csv, where, kinds):
    """A small labelled folder; one value, the CSV or some images broken, or nothing."""
    values = broken_values(MAKE_VALID, MAKE_BAD, broken, data)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        images = root / "images"
        images.mkdir()
        for i, kind in enumerate(kinds):
            _image(images / f"im{i}.tif", 48, kind, i)
        _labels_csv(root / "labels.csv", len(kinds), csv)
        out = root / "dataset" if where == "fresh" else images / "dataset"
        argv = ["make-dataset", "--images", images, "--labels", root / "labels.csv", "--output", out]
        argv += [item for flag, value in values.items() for item in [flag, *value]]
        code, err = check(root, out, argv)
        if broken or where != "fresh":
            assert code == 2, err
