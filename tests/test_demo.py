"""Tests of the synthetic demo data: layout, determinism, balance, and that it is not trivial."""

import hashlib

import h5py
import numpy as np
import pytest
from skimage.filters import threshold_otsu

from micranet_utils.tutorial import demo_data as demo
from micranet_utils.io.training_files import check_training_file, CropDataset, find_split_files
from micranet_utils.tutorial.demo_data import ensure_demo, generate_blobs, generate_demo, synth_split, write_blobs


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """Eight 256-px training images (two of each label combination), 3 + 3 for the others."""
    return generate_demo(tmp_path_factory.mktemp("demo"), seed=5, n_images=8, size=256, progress=False)


@pytest.fixture(scope="module")
def big_split():
    """Eight full-size images, enough pixels of each class to compare intensities."""
    return synth_split(0, "testing", 8, 512)


def test_files_are_in_published_layout(small_demo):
    assert find_split_files(small_demo["training"].parent) == small_demo
    for split, path in small_demo.items():
        summary = check_training_file(path)                      # raises on any layout problem
        assert summary["num_classes"] == 2
        assert summary["images"] == (8 if split == "training" else 3)
        with h5py.File(path, "r") as file:
            assert file.attrs["synthetic"] and file.attrs["seed"] == 5 and file.attrs["split"] == split
            assert file.attrs["generator_version"] == demo.GENERATOR_VERSION
            for group in file.values():
                data, label = group["data"], group["label"]
                assert data.dtype == np.float32 and label.dtype == np.uint8
                assert label.shape == (data.shape[0], 3, 256, 256)
                assert set(np.unique(label[:, 2])) <= {0, 1}
                assert 0 <= data[()].min() and data[()].max() <= 1


def test_padding_outside_true_shape_is_zero():
    images, labels, shapes = synth_split(1, "training", 12, 128)
    assert (shapes < 128).any(), "some images should be smaller than the stored size"
    for image, label, (height, width) in zip(images, labels, shapes):
        assert not image[height:].any() and not image[:, width:].any()
        assert not label[:, height:].any() and not label[:, :, width:].any()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = generate_demo(tmp_path / "a", seed=2, n_images=4, size=128, progress=False)
    second = generate_demo(tmp_path / "b", seed=2, n_images=4, size=128, progress=False)
    third = generate_demo(tmp_path / "c", seed=3, n_images=4, size=128, progress=False)
    digest = {name: {split: hashlib.sha256(path.read_bytes()).hexdigest() for split, path in files.items()}
              for name, files in (("a", first), ("b", second), ("c", third))}
    assert digest["a"] == digest["b"]
    assert all(digest["a"][split] != digest["c"][split] for split in digest["a"])


def test_image_level_labels_balanced(small_demo):
    targets = CropDataset(small_demo["training"], size=128).targets()
    assert len(targets) >= 40
    positive = targets.mean(axis=0)
    assert ((0.2 < positive) & (positive < 0.6)).all(), positive
    combinations = np.bincount(targets[:, 0] * 2 + targets[:, 1], minlength=4)
    assert (combinations[:3] > 0).all(), combinations     # neither, fibers only, rings only


def test_each_image_has_at_most_the_structures_it_was_drawn_with():
    images, labels, _ = synth_split(4, "validation", 12, 256)
    drawn = np.array(demo._combinations(np.random.default_rng([4, 1]), 12))
    assert (drawn.sum(axis=0) == 6).all() and (drawn.sum(axis=1) == 1).sum() == 6   # four combinations, 3 each
    present = (labels[:, :2] > 0).any(axis=(2, 3))
    assert not (present & ~drawn).any()
    assert (present == drawn).all(axis=1).mean() >= 0.75   # a short dendrite may hold one patch only


def test_structures_lie_on_dendrites_and_are_instance_labelled(big_split):
    _, labels, _ = big_split
    structures = (labels[:, 0] > 0) | (labels[:, 1] > 0)
    assert (labels[:, 2][structures] == 1).all()
    assert labels[:, 0].max() >= 2 and labels[:, 1].max() >= 5        # several objects per image
    fraction = structures.sum() / (labels[:, 2] == 1).sum()
    assert 0.15 < fraction < 0.8, "truth is the structures, neither empty nor the whole dendrite"


def test_rings_are_periodic_across_the_axis(big_split):
    """The intensity inside ring patches has a spectral peak near the 190 nm (9-10 px) period."""
    images, labels, _ = big_split
    image, mask = images[labels[:, 0].max(axis=(1, 2)).argmax()], None
    k = labels[:, 0].max(axis=(1, 2)).argmax()
    mask = labels[k, 0] > 0
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(np.where(mask, image - image[mask].mean(), 0)))) ** 2
    freq = np.hypot(*np.meshgrid(*[np.fft.fftshift(np.fft.fftfreq(n)) for n in image.shape], indexing="ij"))
    radial = np.bincount(np.rint(freq * 512).astype(int).ravel(), spectrum.ravel())
    radial /= np.bincount(np.rint(freq * 512).astype(int).ravel())
    band = radial[20:200]                                 # periods between 2.5 and 25 px
    period = 512 / (20 + band.argmax())
    assert 8.5 <= period <= 10.5, period


def test_otsu_on_raw_intensity_does_not_separate_rings_from_fibers(big_split):
    """A global intensity threshold is close to chance at telling ring pixels from fiber pixels."""
    images, labels, _ = big_split
    rings, fibers = labels[:, 0] > 0, labels[:, 1] > 0
    ring_values, fiber_values = images[rings & ~fibers], images[fibers & ~rings]
    threshold = threshold_otsu(np.concatenate([ring_values, fiber_values]))
    above = ((ring_values > threshold).mean() + (fiber_values <= threshold).mean()) / 2
    balanced_accuracy = max(above, 1 - above)              # either side may be called "rings"
    assert balanced_accuracy < 0.65, balanced_accuracy


def test_ensure_demo_reuses_matching_files(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEFAULT_SIZE", 128)
    files = ensure_demo(tmp_path, seed=1, fast=True, progress=False)
    stamps = {split: path.stat().st_mtime_ns for split, path in files.items()}
    assert ensure_demo(tmp_path, seed=1, fast=True, progress=False) == files
    assert {split: path.stat().st_mtime_ns for split, path in files.items()} == stamps
    ensure_demo(tmp_path, seed=2, fast=True, progress=False)                    # other seed: regenerated
    assert files["training"].stat().st_mtime_ns != stamps["training"]
    with h5py.File(files["training"], "r") as file:
        assert file.attrs["seed"] == 2 and file.attrs["n_training_images"] == demo.FAST_N_IMAGES


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        generate_demo(tmp_path, n_images=2)
    with pytest.raises(ValueError, match="size"):
        generate_demo(tmp_path, size=16)
    assert not list(tmp_path.glob("*.hdf5"))


def test_cli_writes_files(tmp_path, capsys):
    from micranet_utils.cli import main

    assert main(["demo-data", "--output", str(tmp_path), "--seed", "3", "--n-images", "4",
                 "--size", "128", "--quiet"]) == 0
    assert "training_demo.hdf5" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.hdf5")) == [
        "testing_demo.hdf5", "training_demo.hdf5", "validation_demo.hdf5"]


def test_blobs_truth_is_consistent():
    images, instances, points = generate_blobs(3, size=128, seed=1, channels=3)
    assert images.shape == (3, 3, 128, 128) and images.dtype == np.float32
    assert instances.shape == (3, 128, 128) and instances.dtype == np.int32
    for instance, centres in zip(instances, points):
        assert instance.max() == len(centres) >= 3
        for obj, (row, col) in enumerate(centres, start=1):
            assert instance[int(round(row)), int(round(col))] == obj      # the point lies in its object
    signal = images[-1].mean(0)
    assert signal[instances[-1] > 0].mean() > 2 * signal[instances[-1] == 0].mean()
    again = generate_blobs(3, size=128, seed=1, channels=3)
    np.testing.assert_array_equal(again[0], images)


def test_blobs_file_reads_as_one_class_dataset(tmp_path):
    images, instances, _ = generate_blobs(2, size=96, seed=0, channels=3)
    path = write_blobs(tmp_path / "training_blobs.hdf5", images, instances)
    crops = CropDataset(path, size=64, step=0.75)
    assert crops.num_classes == 1 and crops.in_channels == 3 and crops.class_names == ("object",)
    assert len(crops) == 2 * 4                                # every position kept
    image, target = crops[0]
    assert image.shape == (3, 64, 64) and target.shape == (1,)


def test_default_folders_keep_fast_and_full_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("MICRANET_WORKDIR", str(tmp_path))
    monkeypatch.setattr(demo, "DEFAULT_SIZE", 96)
    monkeypatch.setattr(demo, "DEFAULT_N_IMAGES", 8)
    monkeypatch.setattr(demo, "FAST_N_IMAGES", 4)
    fast = ensure_demo(fast=True, progress=False)
    full = ensure_demo(fast=False, progress=False)
    assert fast["training"].parent == tmp_path / "demo-fast" and full["training"].parent == tmp_path / "demo"
    assert demo.demo_parameters(fast["training"])[2] == 4 and demo.demo_parameters(full["training"])[2] == 8
