"""In-house data sets with any number of classes train with the default settings.

The default ``pos_weight`` is the original Actin's (3.3, 1.6) for two classes;
with one class, three, or any other number, it is taken from the training
crops' balance (negatives / positives per class) instead of failing.
"""

import json

import h5py
import numpy as np
import pytest
from training_data import write_images

from micranet_utils.cli import main
from micranet_utils.io.training_files import CropDataset
from micranet_utils.train import loop
from micranet_utils.train.loop import DEFAULT_POS_WEIGHT

pytestmark = pytest.mark.usefixtures("one_thread")


def write_split(path, num_classes, n_images, side=64, seed=0):
    """A published-layout file with `num_classes` classes plus the foreground channel.

    Class c fills the c-th horizontal band of the images whose index has bit c
    set, and makes them brighter there, so every class is present in some
    crops and absent from others.
    """
    rng = np.random.default_rng(seed)
    data = rng.uniform(0, 0.2, (n_images, side, side)).astype(np.float32)
    label = np.zeros((n_images, num_classes + 1, side, side), np.uint16)
    label[:, -1] = 1
    band = side // num_classes
    for k in range(n_images):
        for c in range(num_classes):
            if (k >> c) & 1:
                label[k, c, c * band:(c + 1) * band] = 1 + k
                data[k, c * band:(c + 1) * band] += 0.5
    return write_images(path, data, label)


def test_auto_is_actin_for_two_classes_else_balanced():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], bool)
    assert loop.resolve_pos_weight("auto", targets[:, :2], ("a", "b"), "f") == list(DEFAULT_POS_WEIGHT)
    assert loop.resolve_pos_weight("auto", targets, ("a", "b", "c"), "f") == [1.0, 3.0, 1.0]
    assert loop.resolve_pos_weight("auto", targets[:, 1:2], ("b",), "f") == [3.0]


@pytest.mark.parametrize("num_classes", [1, 3])
def test_a_folder_of_any_class_count_trains_with_the_defaults(tmp_path, capsys, num_classes):
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "training_lab.hdf5", num_classes, 8)
    write_split(data / "validation_lab.hdf5", num_classes, 4, seed=1)
    run = tmp_path / "run"
    status = main(["train", "--data", str(data), "--output", str(run), "--dry-run", "--device", "cpu",
                   "--size", "32", "--batch-size", "8", "--no-progress"])    # no --pos-weight
    assert status == 0, capsys.readouterr().err
    with h5py.File(run / "best.hdf5", "r") as file:
        params = json.loads(file["MICRANet"].attrs["trainer_params"])
    assert params["model_params"]["num_classes"] == num_classes
    targets = CropDataset(data / "training_lab.hdf5", size=32).targets()
    positives = targets.sum(axis=0)
    expected = [round(float((len(targets) - p) / p), 3) for p in positives]
    assert params["pos_weight"] == expected and len(expected) == num_classes
