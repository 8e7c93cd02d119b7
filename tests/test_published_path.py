"""The published-model path, offline: download, every published zoo through ``micranet predict``.

The files are a small stand-in in the exact published layout, served on
127.0.0.1 (``tests/published_archive.py``; fixtures ``published_server`` and
``published_home`` in ``conftest.py``). The weights are random, so these tests
check mechanics (layout, group choice, folds, the commands' outputs), never a
score. The lessons' ``DATASET = "actin"`` branches are run in
``tests/test_lessons_published.py``.
"""

import csv
import json

import h5py
import numpy as np
import pytest
import tifffile
from published_archive import (
    ARCHIVE_URL,
    CLASS_THRESHOLD,
    EM_SUPERVISIONS,
    MODEL_NAME,
    PVIVAX_FOLDS,
    SPLIT_IMAGES,
    ZOOS,
)

from micranet_utils.analysis.ensemble import ensemble_members
from micranet_utils.base.datasets import get_dataset
from micranet_utils.cli import main
from micranet_utils.io import download as dl
from micranet_utils.io.download import published_path
from micranet_utils.io.training_files import (
    CropDataset,
    check_training_file,
    find_split_files,
)
from micranet_utils.io.zoo import list_models, load_zoo

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline_env(monkeypatch):
    monkeypatch.setenv("MICRANET_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("MICRANET_DOWNLOAD_TIMEOUT", "5")
    monkeypatch.setattr(dl, "_WARNED", set())
    monkeypatch.setattr(dl, "_NOTE_SHOWN", False)


def test_download_all_end_to_end(published_server, offline_env, tmp_path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("MICRANET_BASE_URL", published_server.url)
    assert main(["download", "all", "--home", str(home), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "Bilodeau" in out and "UNVERIFIED" in err                # licence note; no hash recorded yet
    tree = home / "MICRA-Net"
    assert sorted(p.name for p in (tree / "models").iterdir()) == sorted(f for f, _ in ZOOS.values())
    assert sorted(p.name for p in (tree / "models-ilastik").iterdir()) == [
        "ActinModelZoo-ilastik.hdf5", "CTCModelZoo-ilastik.hdf5"]
    record = json.loads((tree / ".micranet-archive.json").read_text())
    assert record["url"].endswith(ARCHIVE_URL) and record["verified"] is False
    assert not (home / "MICRA-Net.tar.gz").exists()                # deleted after extraction

    # the zoo layouts, as the original predict scripts read them
    assert list_models(tree / "models" / "ActinModelZoo.hdf5") == {
        "MICRANet": [MODEL_NAME], "MaskRCNN": [MODEL_NAME], "UNet": [MODEL_NAME]}
    em = list_models(tree / "models" / "EMModelZoo.hdf5")
    assert sorted(em) == sorted(f"MICRANet-{s}" for s in EM_SUPERVISIONS)
    pvivax = tree / "models" / "PVivaxModelZoo.hdf5"
    assert ensemble_members(pvivax, group="MICRANet-finetuned") == [f"{MODEL_NAME}/{f}" for f in PVIVAX_FOLDS]
    assert ensemble_members(pvivax, group="MICRANet-naive") == []
    for dataset, (file_name, group) in ZOOS.items():
        model, params = load_zoo(tree / "models" / file_name, group=group,
                                 name=f"{MODEL_NAME}/0" if dataset == "pvivax" else None)
        info = get_dataset(dataset)
        assert (model.num_classes, model.in_channels) == (info.num_classes, info.in_channels)
        assert group == info.zoo_group
        if dataset in ("em", "pvivax"):
            assert params["class_thresholds"] == [CLASS_THRESHOLD]

    # the training files, in the published layout, with both labels present and absent
    files = find_split_files(tree / "datasets")
    assert [p.name for p in files.values()] == [f"{s}_01-04-19.hdf5" for s in SPLIT_IMAGES]
    for split, path in files.items():
        summary = check_training_file(path)
        assert summary is not None
        targets = CropDataset(path, size=256).targets()
        assert ((0 < targets.mean(axis=0)) & (targets.mean(axis=0) < 1)).all(), (split, targets.mean(axis=0))
    with h5py.File(tree / "models-ilastik" / "CTCModelZoo-ilastik.hdf5", "r") as file:
        assert "Ilastik-FS" in file

    # a second run finds everything in the cache and downloads nothing
    before = len(published_server.requests)
    assert main(["download", "all", "--home", str(home), "--no-progress"]) == 0
    assert len(published_server.requests) == before


def test_published_path_downloads_on_first_use(published_server, offline_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MICRANET_BASE_URL", published_server.url)
    monkeypatch.setenv("MICRANET_HOME", str(tmp_path / "home"))
    with pytest.warns(dl.UnverifiedDownloadWarning):
        path = published_path("models", "EMModelZoo.hdf5", progress=False)
    assert path == tmp_path / "home" / "MICRA-Net" / "models" / "EMModelZoo.hdf5"
    load_zoo(path, group="MICRANet-1:5")


def _tiny_image(folder, channels, seed=0, size=(72, 88)):
    """A small 8-bit image (channels last for RGB, as P. vivax smears are stored)."""
    rng = np.random.default_rng(seed)
    shape = size + ((channels,) if channels > 1 else ())
    path = folder / "tiny.tif"
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rng.integers(0, 255, shape, dtype=np.uint8),
                     photometric="rgb" if channels == 3 else "minisblack")
    return path


PREDICT_CASES = [  # (data set, extra arguments, folds expected in the manifest)
    ("actin", [], 0),
    ("ctc", [], 0),
    ("em", [], 0),                                            # default group MICRANet-1:5
    ("em", ["--group", "MICRANet-1:16"], 0),
    ("pvivax", [], len(PVIVAX_FOLDS)),                        # MICRANet-finetuned: the folds averaged
    ("pvivax", ["--group", "MICRANet-naive"], 0),
]


@pytest.mark.parametrize("dataset, extra, folds", PREDICT_CASES,
                         ids=["actin", "ctc", "em", "em-1:16", "pvivax-finetuned", "pvivax-naive"])
def test_predict_with_each_published_zoo(published_home, tmp_path, capsys, dataset, extra, folds):
    info = get_dataset(dataset)
    zoo = published_home / "MICRA-Net" / "models" / info.zoo_file
    image = _tiny_image(tmp_path / "in", info.in_channels)
    out = tmp_path / "out"
    code = main(["predict", "--model", str(zoo), "--input", str(image), "--output", str(out),
                 "--recipe", info.recipe, "--quiet", "--device", "cpu"] + extra)
    assert code == 0, capsys.readouterr().err
    with tifffile.TiffFile(out / "tiny_masks.tif") as tif:
        masks = tif.asarray()
    expected_masks = info.num_classes // 2 if dataset == "ctc" else info.num_classes
    assert masks.reshape(-1, 72, 88).shape[0] == expected_masks
    result = json.loads((out / "tiny_result.json").read_text())
    assert all(result["predicted"]) and len(result["probability"]) == info.num_classes   # called present
    with open(out / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest.get("folds") or []) == folds
