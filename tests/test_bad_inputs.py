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


def labelled_folder(root, count=6, side=128):
    """`root`/images with `count` good images and `root`/labels.csv (one class, alternating)."""
    folder = root / "images"
    folder.mkdir(parents=True)
    rows = ["filename,rings"]
    for i in range(count):
        good_image(folder / f"im{i}.tif", shape=(side, side), seed=i)
        rows.append(f"im{i}.tif,{i % 2}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


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
    folder = labelled_folder(tmp_path)
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


# ---------------------------------------------------------------- 6. never a silent wrong result (issue 16)

def _predict(capsys, folder, out, zoo, *extra):
    return run_cli(capsys, "predict", "--model", zoo, "--input", folder, "--output", out, "--device", "cpu",
                   "--quiet", *extra)


def _strict_json(path):
    """The JSON in `path`, failing on the bare NaN / Infinity that strict JSON readers refuse."""
    def refuse(constant):
        raise AssertionError(f"{path}: holds {constant}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_predict_output_names_never_collide(tmp_path, zoo, capsys):
    """Class 1: a.tif / a.tiff share a stem, and a_tif.tiff is a.tif's stem plus its ending."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["a.tif", "a.tiff", "a_tif.tiff", "A.TIF"]
    for seed, name in enumerate(names):
        good_image(folder / name, shape=(64, 64), seed=seed)
    out = tmp_path / "out"
    code, _, err = _predict(capsys, folder, out, zoo)
    assert code == 0, err
    results = sorted(out.glob("*_result.json"))
    assert len(results) == len(names), [p.name for p in results]
    assert sorted(_strict_json(p)["file"] for p in results) == sorted(names)
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(names)
    code, _, err = _predict(capsys, folder, out, zoo)                   # the rerun finds every result
    assert code == 0 and f"0 analysed, {len(names)} already done" in err, err


def test_predict_refuses_an_output_folder_inside_its_input(tmp_path, zoo, capsys):
    """Class 2: the outputs would be analysed as images on the next run."""
    folder = tmp_path / "in"
    folder.mkdir()
    good_image(folder / "cell.tif")
    before = snapshot(folder)
    for out in (folder, folder / "results"):
        code, _, err = _predict(capsys, folder, out, zoo)
        assert code == 2 and "outside the input folder" in err and len(err.strip().splitlines()) == 1, err
    assert snapshot(folder) == before


def test_predict_resume_after_the_model_changed_is_refused(tmp_path, capsys):
    """Class 3: results are bound to the model's SHA-256, in manifest.json and in each result file."""
    from micranet_utils.base.files import file_sha256

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        good_image(folder / f"cell{i}.tif", seed=i)
    zoo_path = tmp_path / "model.hdf5"
    torch_seed = __import__("torch").manual_seed
    torch_seed(1)
    save_zoo(zoo_path, MICRANet(num_classes=2).eval(), {"size": 64})
    out = tmp_path / "out"
    assert _predict(capsys, folder, out, zoo_path)[0] == 0
    torch_seed(2)
    save_zoo(zoo_path, MICRANet(num_classes=2).eval(), {"size": 64})     # retrained, same path
    code, _, err = _predict(capsys, folder, out, zoo_path)
    assert code == 2 and "another model" in err and len(err.strip().splitlines()) == 1, err
    (out / "manifest.json").unlink()                                     # as after an interrupted first run
    code, _, err = _predict(capsys, folder, out, zoo_path)
    assert code == 2 and "another model" in err, err
    code, _, err = _predict(capsys, folder, out, zoo_path, "--overwrite")
    assert code == 0 and "2 analysed" in err, err
    sha = file_sha256(zoo_path)
    assert _strict_json(out / "manifest.json")["model_sha256"] == sha
    assert all(_strict_json(p)["model_sha256"] == sha for p in out.glob("*_result.json"))


def _broken_zoo(path):
    """Finite weights that overflow inside the network: every logit is NaN."""
    import torch

    model = MICRANet(num_classes=2).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("conv") and name.endswith("weight"):
                parameter.mul_(1e30)
    return save_zoo(path, model, {"size": 64})


def test_predict_nan_from_the_model_fails_the_image(tmp_path, capsys):
    """Class 4: no empty mask with exit 0, no bare NaN in the JSON files."""
    folder = tmp_path / "in"
    folder.mkdir()
    good_image(folder / "cell.tif")
    out = tmp_path / "out"
    code, _, err = _predict(capsys, folder, out, _broken_zoo(tmp_path / "broken.hdf5"))
    assert code == 1 and "cell.tif" in err and "NaN" in err, err
    assert not list(out.glob("cell*")), "outputs were written for an image the model could not analyse"
    manifest = _strict_json(out / "manifest.json")
    assert "cell.tif" in manifest["failed"] and manifest["images"] == []
    assert (out / "results.csv").read_text().count("\n") == 1


@pytest.mark.parametrize("name", ["../escaped", "sub/dir", ".hidden", "", "a b", "x\\y"])
def test_make_dataset_name_must_be_a_plain_name(tmp_path, capsys, name):
    """Class 5: --name is part of file names; a path would write outside --output or merge splits."""
    folder = labelled_folder(tmp_path, side=64)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "make-dataset", "--images", folder, "--labels", tmp_path / "labels.csv",
                           "--output", tmp_path / "out", "--crop-size", 32, "--name", name)
    assert code == 2 and "plain name" in err, err
    assert snapshot(tmp_path) == before


def _tiny_training_folder(folder):
    import sys as _sys
    _sys.path.insert(0, str(Path(__file__).parent))
    from training_data import write_tiny_folder
    return write_tiny_folder(folder)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, zoo):
    """Small inputs shared by the bad-argument cases below."""
    root = tmp_path_factory.mktemp("cli")
    data = _tiny_training_folder(root / "data")
    images = labelled_folder(root, count=4, side=64)
    bad_shapes = root / "bad_shapes"
    _tiny_training_folder(bad_shapes)
    with h5py.File(bad_shapes / "training_tiny.hdf5", "a") as file:
        file["images/label"].attrs["shapes"] = np.array(["sixty-four"] * 12).reshape(6, 2).astype("S")
    return {"root": root, "data": data, "images": images, "labels": root / "labels.csv", "zoo": zoo,
            "bad_shapes": bad_shapes}


_TRAIN = ("train", "--data", "{data}", "--output", "{out}", "--dry-run", "--device", "cpu", "--no-progress",
          "--size", "32", "--batch-size", "4")
_MAKE = ("make-dataset", "--images", "{images}", "--labels", "{labels}", "--output", "{out}", "--crop-size", "32")
_PREDICT = ("predict", "--model", "{zoo}", "--input", "{images}", "--output", "{out}", "--device", "cpu", "--quiet")
BAD_VALUES = {
    "demo-data n-images": (("demo-data", "--output", "{out}", "--n-images", "2", "--quiet"), "n_images"),
    "demo-data size": (("demo-data", "--output", "{out}", "--size", "8", "--quiet"), "size"),
    "demo-data seed": (("demo-data", "--output", "{out}", "--seed", "-1", "--size", "64", "--n-images", "4",
                        "--quiet"), "seed"),
    "train size": (_TRAIN + ("--size", "4"), "size"),
    "train batch-size": (_TRAIN + ("--batch-size", "0"), "batch_size"),
    "train epochs": (_TRAIN + ("--epochs", "0"), "epochs"),
    "train step": (_TRAIN + ("--step", "0"), "step"),
    "train lr nan": (_TRAIN + ("--lr", "nan"), "lr"),
    "train lr negative": (_TRAIN + ("--lr", "-0.1"), "lr"),
    "train freeze": (_TRAIN + ("--freeze", "conv9z"), "freeze"),
    "train workers": (_TRAIN + ("--workers", "-1"), "num_workers"),
    "train augment": (_TRAIN + ("--augment", "1.5"), "augment"),
    "train shapes not numeric": (("train", "--data", "{bad_shapes}", "--output", "{out}", "--dry-run",
                                  "--device", "cpu", "--no-progress", "--size", "32", "--batch-size", "4"),
                                 "shapes"),
    "make-dataset crop 0": (_MAKE + ("--crop-size", "0"), "crop_size"),
    "make-dataset crop 1": (_MAKE + ("--crop-size", "1"), "crop_size"),
    "make-dataset split nan": (_MAKE + ("--split", "nan", "1", "1"), "split"),
    "make-dataset split inf": (_MAKE + ("--split", "1", "inf", "1"), "split"),
    "predict device": (_PREDICT + ("--device", "banana"), "banana"),
    "predict tile": (_PREDICT + ("--tile", "4", "--overlap", "0"), "tile"),
    "predict overlap": (_PREDICT + ("--tile", "64", "--overlap", "64"), "overlap"),
    "download retries": (("download", "models", "--home", "{out}", "--retries", "-1", "--no-progress"), "retries"),
    "download timeout": (("download", "models", "--home", "{out}", "--timeout", "0", "--no-progress"), "timeout"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_one_line_exit_two(cli_files, tmp_path, capsys, case):
    """Class 6: every bad value is refused before any work, in one line naming it."""
    argv, word = BAD_VALUES[case]
    fill = {**{k: str(v) for k, v in cli_files.items()}, "out": str(tmp_path / "out")}
    before = snapshot(cli_files["root"])
    code, _, err = run_cli(capsys, *(a.format(**fill) for a in argv))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and word in err, err
    assert "images are 4x4" not in err
    assert snapshot(cli_files["root"]) == before
    no_partial_files(tmp_path)


def test_demo_data_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ("demo-data", "--output", out, "--n-images", "4", "--size", "64", "--quiet")
    assert run_cli(capsys, *args)[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(capsys, *args, "--seed", "1")
    assert code == 2 and "--overwrite" in err, err
    assert snapshot(out) == before
    assert run_cli(capsys, *args, "--seed", "1", "--overwrite")[0] == 0
    assert snapshot(out) != before


@pytest.fixture(scope="module")
def dry_run(cli_files):
    """A finished dry run (copy it before changing it)."""
    run = cli_files["root"] / "run"
    assert main(["train", "--data", str(cli_files["data"]), "--output", str(run), *_TRAIN[5:]]) == 0
    return run


@pytest.mark.parametrize("damage", ["state not JSON", "state missing parts", "negative epochs"])
def test_train_resume_bad_state_is_one_line(dry_run, tmp_path, capsys, damage):
    import shutil

    run = shutil.copytree(dry_run, tmp_path / "run")
    argv = ["train", "--resume", run, "--no-progress"]
    if damage == "negative epochs":
        argv += ["--epochs", "-3"]
    else:
        with h5py.File(run / "last.hdf5", "a") as file:
            group = next(file[k] for k in file if "state" in k.lower())
            if damage == "state not JSON":
                group.attrs["state"] = "{not json"
            else:
                state = json.loads(group.attrs["state"])
                del state["history"], state["epoch"]
                group.attrs["state"] = json.dumps(state)
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "epochs" in err if damage == "negative epochs" else "damaged" in err, err


@pytest.mark.parametrize("damage", ["manifest.json", "cell_result.json", "fields"])
def test_predict_damaged_previous_results_are_one_line(tmp_path, zoo, capsys, damage):
    folder = tmp_path / "in"
    folder.mkdir()
    good_image(folder / "cell.tif")
    out = tmp_path / "out"
    assert _predict(capsys, folder, out, zoo)[0] == 0
    if damage == "fields":
        (out / "cell_result.json").write_text('{"file": "cell.tif"}')
    else:
        (out / damage).write_text('{"truncated": ')
    code, _, err = _predict(capsys, folder, out, zoo)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--overwrite" in err, err
    assert _predict(capsys, folder, out, zoo, "--overwrite")[0] == 0


def test_predict_read_only_output_is_found_before_any_image(tmp_path, zoo, capsys, monkeypatch):
    """Class 7: a probe file, before the first image is analysed."""
    import micranet_utils.apps.predict as predict_module

    folder = tmp_path / "in"
    folder.mkdir()
    good_image(folder / "cell.tif")
    out = tmp_path / "out"
    out.mkdir()
    analysed = []
    original = predict_module.analyse_image
    monkeypatch.setattr(predict_module, "analyse_image", lambda *a, **k: analysed.append(1) or original(*a, **k))
    _fail_writes_under(monkeypatch, out, errno.EROFS)
    code, _, err = _predict(capsys, folder, out, zoo)
    assert code == 2 and "out" in err and "read-only" in err.lower(), err
    assert analysed == [], "an image was analysed although the output folder cannot be written"


def test_nan_loss_message_says_what_really_exists(tmp_path, monkeypatch):
    """Class 7: the NaN-loss error must not promise a last.hdf5 that was never written."""
    import torch
    import micranet_utils.train.loop as loop
    from micranet_utils.train.runs import train
    from micranet_utils.train.loop import TrainingError

    monkeypatch.setattr(loop, "augment_batch", lambda images, p, g: images * torch.nan)
    data = _tiny_training_folder(tmp_path / "data")
    with pytest.raises(TrainingError, match="loss became nan") as info:
        train(data, tmp_path / "run", size=32, batch_size=4, epochs=1, num_workers=0, progress=False)
    assert not (tmp_path / "run" / "last.hdf5").exists()
    assert "last.hdf5 keeps" not in str(info.value) and "nothing was saved" in str(info.value)


def test_results_csv_neutralises_spreadsheet_formulas(tmp_path, zoo, capsys):
    """Class 7: file names starting with = + - @ are prefixed with ' in results.csv (OWASP)."""
    import csv

    folder = tmp_path / "in"
    folder.mkdir()
    names = ["=HYPERLINK(1).tif", "+1.tif", "-2.tif", "@SUM.tif", "plain.tif"]
    for seed, name in enumerate(names):
        good_image(folder / name, shape=(64, 64), seed=seed)
    out = tmp_path / "out"
    assert _predict(capsys, folder, out, zoo)[0] == 0
    with open(out / "results.csv", newline="") as handle:
        first = [row[0] for row in csv.reader(handle)][1:]
    assert sorted(first) == sorted("'" + n if n[0] in "=+-@" else n for n in names)
