"""Tests of micranet_utils.io.training_files against a plain re-implementation of the original loader's rules."""

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from micranet_utils.io.training_files import check_training_file, CropDataset, find_split_files
from micranet_utils.base.errors import DatasetError


def write_training_file(path, seed=0, groups=(("a", 3, 70, 90), ("b", 2, 64, 64)), classes=2):
    """Small published-layout file: instance-labelled classes, a 0/1 foreground, padded images."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as file:
        for name, n, height, width in groups:
            data = np.zeros((n, height, width), np.float32)
            label = np.zeros((n, classes + 1, height, width), np.uint16)
            shapes = np.zeros((n, 2), int)
            for k in range(n):
                h, w = rng.integers(height // 2, height + 1), rng.integers(width // 2, width + 1)
                shapes[k] = h, w
                data[k, :h, :w] = rng.random((h, w))
                label[k, -1, :h, :w] = rng.random((h, w)) < rng.uniform(0.05, 0.6)
                for c in range(classes):
                    for obj in range(1, rng.integers(0, 4) + 1):   # a few rectangles, one id each
                        r, q = rng.integers(0, h), rng.integers(0, w)
                        label[k, c, r:r + rng.integers(2, 20), q:q + rng.integers(2, 20)] = obj
            group = file.create_group(name)
            group["data"] = data
            group["label"] = label
            group["label"].attrs["shapes"] = shapes
    return path


def reference_samples(path, size, step):
    """The original enumeration and label rule, written plainly on the whole file in memory."""
    samples, targets = [], []
    with h5py.File(path, "r") as file:
        for name, group in file.items():
            data, label, shapes = group["data"][()], group["label"][()], group["label"].attrs["shapes"]
            for k in range(len(data)):
                for j in range(0, shapes[k][0], int(size * step)):
                    for i in range(0, shapes[k][1], int(size * step)):
                        if label[k, -1, j:j + size, i:i + size].sum() >= 0.1 * size * size:
                            crop = np.zeros((label.shape[1] - 1, size, size), label.dtype)
                            part = label[k, :-1, j:j + size, i:i + size]
                            crop[:, :part.shape[1], :part.shape[2]] = part
                            image = np.zeros((size, size), np.float32)
                            part = data[k, j:j + size, i:i + size]
                            image[:part.shape[0], :part.shape[1]] = part
                            samples.append(((name, k, j, i), image, crop > 0))
                            targets.append(np.sum(crop > 0, axis=(1, 2)) > 0.05 * size * size)
    return samples, np.array(targets)


@pytest.fixture
def training_file(tmp_path):
    return write_training_file(tmp_path / "training_x.hdf5")


@pytest.mark.parametrize("size, step", [(32, 0.75), (24, 0.5), (40, 1.0)])
def test_crops_and_targets_match_original_rules(training_file, size, step):
    crops = CropDataset(training_file, size=size, step=step, return_masks=True)
    samples, targets = reference_samples(training_file, size, step)
    assert crops.positions == [s[0] for s in samples]
    assert len(crops) > 5
    np.testing.assert_array_equal(crops.targets(), targets)
    for n, (_, image, masks) in enumerate(samples):
        x, y, m = crops[n]
        assert x.shape == (1, size, size) and x.dtype == torch.float32
        np.testing.assert_array_equal(x[0].numpy(), image)
        np.testing.assert_array_equal(y.numpy(), targets[n].astype(np.float32))
        np.testing.assert_array_equal(m.numpy(), masks.astype(np.float32))


def test_both_labels_present_and_absent(training_file):
    targets = CropDataset(training_file, size=16, step=0.5).targets()
    assert targets.any(axis=0).all() and (~targets).any(axis=0).all()


def test_class_names_and_count(training_file):
    crops = CropDataset(training_file, size=32)
    assert crops.num_classes == 2 and crops.class_names == ("rings", "fibers")
    three = write_training_file(training_file.with_name("three.hdf5"), classes=3)
    assert CropDataset(three, size=32).class_names == ("class0", "class1", "class2")


def test_reads_crops_not_whole_file(training_file, monkeypatch):
    """Enumeration reads one foreground image at a time; an item reads one crop."""
    read_sizes = []
    original = h5py.Dataset.__getitem__

    def recording(self, key):
        out = original(self, key)
        read_sizes.append(np.asarray(out).size)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", recording)
    crops = CropDataset(training_file, size=32)
    assert max(read_sizes) <= 70 * 90                      # one image, one channel
    read_sizes.clear()
    crops[len(crops) - 1]
    assert max(read_sizes) <= 2 * 32 * 32                  # the two class channels of one crop


def test_missing_shapes_falls_back_to_stored_size(training_file):
    with h5py.File(training_file, "a") as file:
        for group in file.values():
            del group["label"].attrs["shapes"]
    crops = CropDataset(training_file, size=32)
    assert crops.positions[0][2:] == (0, 0) and len(crops) > 0
    with pytest.raises(DatasetError, match="shapes"):
        check_training_file(training_file)
    assert check_training_file(training_file, require_shapes=False)["groups"]["a"]["shapes"].startswith("missing")


def test_augmentations_follow_original_formulas(training_file):
    plain = CropDataset(training_file, size=32, return_masks=True)
    augmented = CropDataset(training_file, size=32, augment=1.0, seed=3, return_masks=True)
    x0, y0, m0 = plain[0]
    x1, y1, m1 = augmented[0]
    np.testing.assert_array_equal(y0, y1)
    rng = np.random.default_rng([3, torch.initial_seed()])     # same draws as the dataset
    rng.random(), rng.random(), rng.random()
    factor = np.clip(rng.lognormal(0.01, 0.1), 0, 1)
    rng.random()
    gamma = np.clip(rng.lognormal(0.005, np.sqrt(0.005)), 0, 1)
    expected = np.clip(np.clip(x0[0].numpy()[::-1, ::-1] * factor, 0, 1) ** gamma, 0, 1)
    np.testing.assert_allclose(x1[0].numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(m1.numpy(), m0.numpy()[:, ::-1, ::-1])
    assert 0 <= x1.min() and x1.max() <= 1


def test_dataloader_with_two_workers_is_reproducible(training_file):
    crops = CropDataset(training_file, size=32, augment=0.5)
    crops[0]                                   # an open handle in the parent must not leak into workers

    def run():
        torch.manual_seed(7)
        loader = DataLoader(crops, batch_size=4, num_workers=2, shuffle=True)
        return [(x.clone(), y.clone()) for x, y in loader]

    first, second = run(), run()
    assert sum(len(x) for x, _ in first) == len(crops)
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    plain = CropDataset(training_file, size=32)
    unaugmented = torch.cat([x for x, _ in DataLoader(plain, batch_size=5, num_workers=2)])
    np.testing.assert_array_equal(unaugmented[:, 0].numpy(), np.stack([plain[n][0][0].numpy() for n in range(len(plain))]))


def test_check_training_file_summary(training_file):
    summary = check_training_file(training_file)
    assert summary["images"] == 5 and summary["num_classes"] == 2
    group = summary["groups"]["a"]
    assert (group["height"], group["width"], group["label_channels"]) == (70, 90, 3)
    assert 0 <= group["data_min"] <= group["data_max"] <= 1


def _break(path, how):
    with h5py.File(path, "a") as file:
        group = file["b"]
        if how == "missing-data":
            del group["data"]
        elif how == "label-shape":
            del group["label"]
            group["label"] = np.zeros((2, 3, 60, 64), np.uint8)
        elif how == "nan":
            data = group["data"][()]
            data[1, 3, 3] = np.nan
            group["data"][...] = data
        elif how == "inf-label":
            del group["label"]
            group["label"] = np.full((2, 3, 64, 64), np.inf, np.float32)
            group["label"].attrs["shapes"] = [[64, 64], [64, 64]]
        elif how == "dtype":
            del group["data"]
            group["data"] = np.zeros((2, 64, 64), np.complex64)
        elif how == "dataset-at-root":
            file["loose"] = np.zeros(3)
        elif how == "bad-shapes":
            group["label"].attrs["shapes"] = [[64, 64], [65, 64]]


@pytest.mark.parametrize("how, message", [
    ("missing-data", "group 'b': missing dataset 'data'"),
    ("label-shape", "group 'b': 'label' has shape"),
    ("nan", "group 'b': 'data' of image 1 contains NaN"),
    ("inf-label", "group 'b': 'label' of image 0 contains NaN or infinity"),
    ("dtype", "group 'b': 'data' has dtype complex64"),
    ("dataset-at-root", "group 'loose': expected a group"),
    ("bad-shapes", "group 'b': label.attrs"),
])
def test_bad_files_name_file_and_group(training_file, how, message):
    _break(training_file, how)
    with pytest.raises(DatasetError, match=message) as err:
        check_training_file(training_file)
    assert str(training_file) in str(err.value)


def test_structural_errors_also_stop_the_dataset(training_file):
    _break(training_file, "label-shape")
    with pytest.raises(DatasetError, match="'b'"):
        CropDataset(training_file, size=32)


def test_not_hdf5_and_empty(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("not an HDF5 file")
    with pytest.raises(DatasetError, match="notes.hdf5: not a readable HDF5"):
        check_training_file(text)
    with pytest.raises(DatasetError, match="no such training file"):
        CropDataset(tmp_path / "absent.hdf5")
    h5py.File(tmp_path / "empty.hdf5", "w").close()
    with pytest.raises(DatasetError, match="holds no group"):
        check_training_file(tmp_path / "empty.hdf5")


def test_find_split_files(tmp_path):
    for name in ("training_01-04-19.hdf5", "validation_01-04-19.hdf5", "notes.txt"):
        (tmp_path / name).touch()
    found = find_split_files(tmp_path)
    assert found == {"training": tmp_path / "training_01-04-19.hdf5",
                     "validation": tmp_path / "validation_01-04-19.hdf5", "testing": None}
    (tmp_path / "testing_demo.hdf5").touch()
    assert find_split_files(tmp_path)["testing"].name == "testing_demo.hdf5"
    (tmp_path / "training_demo.hdf5").touch()
    with pytest.raises(DatasetError, match="several training files"):
        find_split_files(tmp_path)
    (tmp_path / "validation_01-04-19.hdf5").unlink()
    (tmp_path / "training_demo.hdf5").unlink()
    with pytest.raises(DatasetError, match="no validation_"):
        find_split_files(tmp_path)
