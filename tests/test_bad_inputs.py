"""Bad input, as a new user would feed it, into the five entry points.

Entry points: ``load_zoo`` (and ``micranet info``), the training-file reader
(``check_training_file`` / ``CropDataset``), ``micranet predict``,
``micranet make-dataset`` and ``micranet download``. For every kind of bad input:
a clear message naming the file, no traceback from the command line, and no
half-written file left behind.
"""

import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from micranet_utils.base.errors import DatasetError, ZooError
from micranet_utils.model.network import MICRANet
from micranet_utils.io.zoo import load_zoo, save_zoo
from micranet_utils.cli import main
from micranet_utils.io.training_files import check_training_file, CropDataset

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# ---------------------------------------------------------------- the bad files themselves

def _tiff(path, array):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns about zero-size arrays
        tifffile.imwrite(path, array)
    return path


def make_bad_images(folder):
    """Write one file per kind of bad image; returns {kind: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    good = rng.random((64, 64), dtype=np.float32)
    bad = {}
    bad["empty file"] = folder / "empty.tif"
    bad["empty file"].write_bytes(b"")
    bad["text file"] = folder / "notes.tif"
    bad["text file"].write_text("these are my notes, not an image\n")
    _tiff(folder / "whole.tif", (good * 60000).astype(np.uint16))
    data = (folder / "whole.tif").read_bytes()
    (folder / "whole.tif").unlink()
    bad["truncated TIFF"] = folder / "truncated.tif"
    bad["truncated TIFF"].write_bytes(data[: len(data) // 3])
    bad["NaN pixels"] = _tiff(folder / "nan.tif", np.where(good > 0.5, np.nan, good).astype(np.float32))
    bad["infinite pixels"] = _tiff(folder / "inf.tif", np.where(good > 0.9, np.inf, good).astype(np.float32))
    bad["RGB for a 1-channel model"] = _tiff(folder / "colour.tif", (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    bad["1x1 image"] = _tiff(folder / "pixel.tif", np.ones((1, 1), np.float32))
    bad["zero-size array"] = _tiff(folder / "zero.tif", np.zeros((0, 64), np.float32))
    bad["dangling link"] = folder / "moved.tif"
    bad["dangling link"].symlink_to(folder / "does-not-exist.tif")
    bad["symlink loop"] = folder / "loop_a.tif"
    (folder / "loop_b.tif").symlink_to(folder / "loop_a.tif")
    bad["symlink loop"].symlink_to(folder / "loop_b.tif")
    return bad


def good_image(path, shape=(96, 96), seed=1):
    rng = np.random.default_rng(seed)
    return _tiff(path, rng.random(shape, dtype=np.float32) * 0.3)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("zoo") / "model zoo é.hdf5"
    return save_zoo(path, MICRANet(num_classes=2).eval(), {"size": 64, "seed": 0})


def snapshot(folder):
    """Every file under `folder` with its bytes (links as their target)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_symlink():
            out[str(path)] = ("link", os.readlink(path))
        elif path.is_file():
            out[str(path)] = path.read_bytes()
    return out


def no_partial_files(folder):
    leftovers = [p for p in Path(folder).rglob("*") if p.name.endswith((".tmp", ".part", ".partial"))]
    assert not leftovers, f"half-written files left behind: {leftovers}"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return code, captured.out, captured.err


# ---------------------------------------------------------------- 1. load_zoo

def _truncated_hdf5(path, zoo):
    data = Path(zoo).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _wrong_layout_hdf5(path):
    with h5py.File(path, "w") as file:
        file.create_dataset("weights", data=np.zeros(3))
    return path


@pytest.mark.parametrize("kind", ["missing", "empty file", "text file", "truncated HDF5", "wrong layout",
                                  "folder", "symlink loop", "NaN weights"])
def test_load_zoo_names_the_file(tmp_path, zoo, kind, capsys):
    path = tmp_path / "bad zoo ü.hdf5"
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "text file":
        path.write_text("hello")
    elif kind == "truncated HDF5":
        _truncated_hdf5(path, zoo)
    elif kind == "wrong layout":
        _wrong_layout_hdf5(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "symlink loop":
        other = tmp_path / "other.hdf5"
        other.symlink_to(path)
        path.symlink_to(other)
    elif kind == "NaN weights":
        model = MICRANet(2)
        with __import__("torch").no_grad():
            model.conv1a.weight[0, 0, 0, 0] = float("nan")
        save_zoo(path, model, {"size": 64})
    with pytest.raises(ZooError, match="bad zoo ü.hdf5"):
        load_zoo(path)
    code, _, err = run_cli(capsys, "info", path)
    assert code == 2 and "bad zoo ü.hdf5" in err and len(err.strip().splitlines()) == 1


def test_zoo_with_spaces_and_accents_loads(zoo):
    model, params = load_zoo(zoo)
    assert model.num_classes == 2 and params["size"] == 64


# ---------------------------------------------------------------- 2. the training-file reader

def _training_file(path, data, label=None, shapes=True):
    with h5py.File(path, "w") as file:
        group = file.create_group("group0")
        group.create_dataset("data", data=data)
        if label is None:
            label = np.zeros((data.shape[0], 3, *data.shape[1:]), np.uint8)
            label[:, 2] = 1
        ds = group.create_dataset("label", data=label)
        if shapes:
            ds.attrs["shapes"] = np.array([data.shape[1:]] * data.shape[0])
    return path


@pytest.mark.parametrize("kind", ["missing", "empty file", "text file", "truncated HDF5", "wrong layout",
                                  "NaN", "inf", "zero-size", "label shape", "symlink loop"])
def test_training_reader_names_the_file(tmp_path, kind):
    path = tmp_path / "training set ß.hdf5"
    images = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "text file":
        path.write_text("hello")
    elif kind == "truncated HDF5":
        good = _training_file(tmp_path / "good.hdf5", images)
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "wrong layout":
        _wrong_layout_hdf5(path)
    elif kind == "NaN":
        images[0, 3, 3] = np.nan
        _training_file(path, images)
    elif kind == "inf":
        images[1, 5, 5] = np.inf
        _training_file(path, images)
    elif kind == "zero-size":
        _training_file(path, np.zeros((0, 64, 64), np.float32))
    elif kind == "label shape":
        _training_file(path, images, label=np.zeros((2, 3, 32, 32), np.uint8))
    elif kind == "symlink loop":
        other = tmp_path / "other.hdf5"
        other.symlink_to(path)
        path.symlink_to(other)
    with pytest.raises(DatasetError, match="training set ß.hdf5"):
        check_training_file(path)
    if kind in ("missing", "empty file", "text file", "wrong layout", "symlink loop"):
        with pytest.raises(DatasetError, match="training set ß.hdf5"):
            len(CropDataset(path, size=32))


# ---------------------------------------------------------------- 3. predict

def test_predict_names_every_bad_file_and_processes_the_good_ones(tmp_path, zoo, capsys):
    folder = tmp_path / "my images, day 1 é"
    bad = make_bad_images(folder)
    good = [good_image(folder / "good cell ñ.tif"), good_image(folder / "odd size.tif", shape=(70, 91))]
    before = snapshot(folder)
    out = tmp_path / "results ø"
    code, _, err = run_cli(capsys, "predict", "--model", zoo, "--input", folder, "--output", out,
                           "--recipe", "actin", "--device", "cpu", "--quiet", "--min-size", 16)
    assert code == 1, err
    for kind, path in bad.items():
        assert path.name in err, f"{kind}: {path.name} not named in stderr:\n{err}"
    for path in good:
        assert (out / f"{path.stem}_masks.tif").exists(), f"no masks for {path.name}"
    assert snapshot(folder) == before, "predict modified the input folder"
    no_partial_files(out)
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(good)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(json.dumps(manifest.get("failed", manifest))) > 0


def test_predict_rgb_message_speaks_the_users_language(tmp_path, zoo, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _tiff(folder / "colour.tif", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    code, _, err = run_cli(capsys, "predict", "--model", zoo, "--input", folder, "--output", tmp_path / "out",
                           "--device", "cpu", "--quiet")
    assert code == 1
    assert "colour.tif" in err and "3" in err and "1 channel" in err, err


def _fail_writes_under(monkeypatch, folder, err_no):
    """Make every atomic write below `folder` fail like a full or read-only disk."""
    import micranet_utils.base.files as files

    original = files.tempfile.mkstemp

    def failing_mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(Path(dir).resolve()).startswith(str(Path(folder).resolve())):
            raise OSError(err_no, os.strerror(err_no), str(dir))
        return original(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", failing_mkstemp)


@pytest.mark.parametrize("problem", ["read-only output folder", "disk full"])
def test_predict_unwritable_output_is_one_clear_line(tmp_path, zoo, capsys, monkeypatch, problem):
    folder = tmp_path / "in"
    folder.mkdir()
    good_image(folder / "cell.tif")
    out = tmp_path / "out"
    out.mkdir()
    if problem == "read-only output folder" and not IS_ROOT:
        out.chmod(0o500)
    else:  # root ignores permissions; a full disk cannot be made here: simulate both
        _fail_writes_under(monkeypatch, out, errno.EACCES if problem.startswith("read") else errno.ENOSPC)
    try:
        code, _, err = run_cli(capsys, "predict", "--model", zoo, "--input", folder, "--output", out,
                               "--device", "cpu", "--quiet")
    finally:
        out.chmod(0o700)
    assert code in (1, 2)
    assert "out" in err and ("ermission" in err or "space" in err.lower() or "read-only" in err), err
    assert not any(out.glob("*_masks.tif")), "a mask was written although writing fails"
    no_partial_files(out)


# ---------------------------------------------------------------- 4. make-dataset

def test_make_dataset_reports_every_bad_file_and_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "lab folder é"
    bad = make_bad_images(folder)
    rows = ["filename,rings,fibers"]
    for i in range(8):
        good_image(folder / f"good {i}.tif", shape=(128, 128), seed=i)
        rows.append(f"good {i}.tif,{i % 2},{(i // 2) % 2}")
    rows += [f"{p.name},1,0" for p in bad.values()]
    rows.append("ghost.tif,0,1")                      # a CSV row without a file
    rows.append("good 0.tif,1,1")                     # a duplicate row
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    before = snapshot(folder)
    out = tmp_path / "dataset"
    code, stdout, err = run_cli(capsys, "make-dataset", "--images", folder, "--labels", tmp_path / "labels.csv",
                                "--output", out, "--crop-size", 64)
    report = stdout + err
    assert code == 2, report
    for kind, path in bad.items():
        assert path.name in report, f"{kind}: {path.name} not in the report:\n{report}"
    assert "ghost.tif" in report and "good 0.tif" in report
    assert not out.exists() or not any(out.iterdir()), "make-dataset wrote output despite errors"
    assert snapshot(folder) == before, "make-dataset modified the user's folder"


def test_make_dataset_disk_full_leaves_nothing(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = ["filename,rings"]
    for i in range(6):
        good_image(folder / f"im{i}.tif", shape=(128, 128), seed=i)
        rows.append(f"im{i}.tif,{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "dataset"
    out.mkdir()
    _fail_writes_under(monkeypatch, out, errno.ENOSPC)
    code, _, err = run_cli(capsys, "make-dataset", "--images", folder, "--labels", tmp_path / "labels.csv",
                           "--output", out, "--crop-size", 64)
    assert code == 2, err
    assert "space" in err.lower(), err
    assert not any(out.iterdir()), list(out.iterdir())


# ---------------------------------------------------------------- 5. download

@pytest.mark.parametrize("problem", ["no server", "bad base URL", "read-only cache", "cache is a file"])
def test_download_problems_are_one_clear_line(tmp_path, capsys, monkeypatch, problem):
    home = tmp_path / "cache ü"
    monkeypatch.setenv("MICRANET_HOME", str(home))
    monkeypatch.setenv("MICRANET_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("MICRANET_DOWNLOAD_TIMEOUT", "2")
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MICRANET_BASE_URL", f"http://127.0.0.1:{port}")
    if problem == "bad base URL":
        monkeypatch.setenv("MICRANET_BASE_URL", "ftp:/nowhere")
    elif problem == "read-only cache":
        home.mkdir()
        if IS_ROOT:
            _fail_writes_under(monkeypatch, home, errno.EACCES)
            monkeypatch.setattr("shutil.disk_usage", _raise_eacces)
        else:
            home.chmod(0o500)
    elif problem == "cache is a file":
        home.write_text("not a folder")
    try:
        code, _, err = run_cli(capsys, "download", "ilastik", "--no-progress")
    finally:
        if home.is_dir():
            home.chmod(0o700)
    assert code == 2, err
    assert len(err.strip().splitlines()) <= 12 and err.strip(), err
    if problem == "bad base URL":
        assert "MICRANET_BASE_URL" in err
    elif problem == "cache is a file":
        assert "cache ü" in err
    else:
        assert str(port) in err or "cache ü" in err
    no_partial_files(tmp_path)


def _raise_eacces(path):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


# ---------------------------------------------------------------- the real command, as a process

def test_cli_process_prints_no_traceback(tmp_path):
    bad = tmp_path / "ça ne marche pas.hdf5"
    bad.write_text("not a zoo")
    script = Path(sys.executable).parent / "micranet"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "micranet_utils.cli"]
    result = subprocess.run(command + ["info", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "ça ne marche pas.hdf5" in result.stderr
