"""micranet predict on a folder mixing good and bad files."""

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest
import tifffile
import torch

from micranet_utils import cli
from micranet_utils.io.zoo import save_zoo
from micranet_utils.model.gradcam import local_maps
from micranet_utils.io.images import prepare_image
from micranet_utils.model.gradcam import tiled_maps

GOOD = ["float.tif", "uint16_odd.tif", "grey.png"]
BAD = {"empty.tif": "empty", "notes.tif": "", "rgb.tif": "channel", "nan.tif": "NaN", "tiny.tif": "7x7"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def zoo(tmp_path, random_model):
    """An Actin-shaped model whose class 0 has a positive deepest map (non-empty masks)."""
    with torch.no_grad():
        random_model.linear1.weight.abs_()
    return save_zoo(tmp_path / "model.hdf5", random_model, {"size": 64}, name="test")


@pytest.fixture
def folder(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "float.tif", rng.random((64, 64), np.float32))
    tifffile.imwrite(images / "uint16_odd.tif", rng.integers(0, 4000, (70, 93), np.uint16))
    iio.imwrite(images / "grey.png", rng.integers(0, 255, (48, 40), np.uint8))
    (images / "empty.tif").write_bytes(b"")
    (images / "notes.tif").write_text("these are my notes, not an image\n")
    tifffile.imwrite(images / "rgb.tif", rng.integers(0, 255, (64, 64, 3), np.uint8), photometric="rgb")
    nan = rng.random((64, 64), np.float32)
    nan[3, 4] = np.nan
    tifffile.imwrite(images / "nan.tif", nan)
    tifffile.imwrite(images / "tiny.tif", rng.random((7, 7), np.float32))
    (images / "readme.txt").write_text("not an image type: ignored")
    return images


def run(capsys, *args):
    status = cli.main(["predict", "--quiet", *map(str, args)])
    return status, capsys.readouterr().err


def test_predict_folder_processes_good_files_and_names_bad_ones(zoo, folder, tmp_path, capsys):
    out = tmp_path / "out"
    status, err = run(capsys, "--model", zoo, "--input", folder, "--output", out, "--maps", "--device", "cpu")
    assert status == 1
    assert "Traceback" not in err
    for name, reason in BAD.items():
        line = next(line for line in err.splitlines() if f"skipped {name}" in line)
        assert reason in line
    assert "ignored readme.txt" in err
    for name in GOOD:
        stem = name.rsplit(".", 1)[0]
        masks = tifffile.imread(out / f"{stem}_masks.tif")
        assert masks.dtype == np.uint8 and masks.shape[0] == 2
        assert (out / f"{stem}_overlay.png").stat().st_size > 0
        assert (out / f"{stem}_maps.h5").is_file()
    assert tifffile.imread(out / "uint16_odd_masks.tif").shape == (2, 70, 93)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert sorted(r["file"] for r in rows) == sorted(GOOD)
    assert {"probability_rings", "predicted_fibers", "count_rings", "area_px_fibers"} <= set(rows[0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model_sha256"] == hashlib.sha256(zoo.read_bytes()).hexdigest()
    assert set(manifest["failed"]) == set(BAD)
    assert manifest["options"]["recipe"] == "actin" and manifest["versions"]["micranet_utils"]
    assert not list(out.glob(".*.tmp"))                  # nothing half written

    # A rerun skips finished images; --overwrite redoes them; other options are refused.
    before = (out / "float_masks.tif").stat().st_mtime_ns
    status, err = run(capsys, "--model", zoo, "--input", folder, "--output", out, "--maps", "--device", "cpu")
    assert status == 1 and "0 analysed, 3 already done, 5 failed" in err
    assert (out / "float_masks.tif").stat().st_mtime_ns == before
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 3
    status, err = run(capsys, "--model", zoo, "--input", folder, "--output", out, "--recipe", "em")
    assert status == 2 and "other options" in err and "Traceback" not in err
    status, err = run(capsys, "--model", zoo, "--input", folder, "--output", out, "--maps", "--overwrite")
    assert status == 1 and "3 analysed" in err


def test_predict_only_good_files_exits_zero(zoo, folder, tmp_path, capsys):
    for name in BAD:
        (folder / name).unlink()
    status, err = run(capsys, "--model", zoo, "--input", folder, "--output", tmp_path / "out")
    assert status == 0, err


def test_bad_arguments_exit_two_with_one_line(zoo, tmp_path, capsys):
    status, err = run(capsys, "--model", zoo, "--input", tmp_path / "missing", "--output", tmp_path / "o")
    assert status == 2 and "no such file or folder" in err
    (tmp_path / "empty_dir").mkdir()
    status, err = run(capsys, "--model", zoo, "--input", tmp_path / "empty_dir", "--output", tmp_path / "o")
    assert status == 2 and "no image files" in err
    status, err = run(capsys, "--model", tmp_path / "nope.hdf5", "--input", tmp_path, "--output", tmp_path / "o")
    assert status == 2 and "Traceback" not in err


def test_published_samples(upstream_samples, zoo, tmp_path, capsys):
    images = tmp_path / "samples"
    images.mkdir()
    for path in sorted((upstream_samples / "actin").glob("*.tif")):
        shutil.copy(path, images / path.name)
    status, err = run(capsys, "--model", zoo, "--input", images, "--output", tmp_path / "out", "--recipe", "actin")
    assert status == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    assert [r["file"] for r in rows] == ["image0.tif", "image1.tif"]
    assert all(r["height"] == "256" for r in rows)


def test_tiles_cover_the_image_and_keep_the_largest_logit(random_model):
    image = np.random.default_rng(1).random((1, 100, 150)).astype(np.float32)
    maps, logits = tiled_maps(random_model, image, tile=64, overlap=16)
    assert maps.shape == (2, 8, 100, 150) and np.isfinite(maps).all()
    tile_logits = [local_maps(random_model, image[None, :, y:y + 64, x:x + 64])[1][0]
                   for y in (0, 36) for x in (0, 48, 86)]
    np.testing.assert_allclose(logits, np.max(tile_logits, axis=0), rtol=1e-5)
    whole, whole_logits = tiled_maps(random_model, image, tile=256)
    np.testing.assert_allclose(whole_logits, local_maps(random_model, image[None])[1][0], rtol=1e-5)


def test_stitched_maps_are_normalised_over_the_whole_image(random_model):
    image = np.random.default_rng(2).random((1, 100, 150)).astype(np.float32)
    total, count = np.zeros((2, 8, 100, 150)), np.zeros((100, 150))
    for y in (0, 36):
        for x in (0, 48, 86):
            total[..., y:y + 64, x:x + 64] += local_maps(random_model, image[None, :, y:y + 64, x:x + 64],
                                                         normalize=False)[0][0]
            count[y:y + 64, x:x + 64] += 1
    raw, _ = tiled_maps(random_model, image, tile=64, overlap=16, normalize=False)
    np.testing.assert_allclose(raw, total / count, rtol=1e-4, atol=1e-6)
    low, high = raw.min(axis=(2, 3), keepdims=True), raw.max(axis=(2, 3), keepdims=True)
    maps, _ = tiled_maps(random_model, image, tile=64, overlap=16)
    flat = high == low                                      # e.g. a 4b map that is zero everywhere
    np.testing.assert_allclose(maps, np.where(flat, 0.0, raw - low) / np.where(flat, 1.0, high - low), atol=1e-5)


def test_prepare_image_auto_rescales_whole_numbers_only():
    counts = np.array([[[0, 100], [4000, 65535]]], np.float32)
    assert prepare_image(counts).max() <= 1.0
    scaled = np.array([[[0.0, 0.1], [0.25, 0.2]]], np.float32)
    np.testing.assert_array_equal(prepare_image(scaled), scaled)
    assert prepare_image(scaled, "percentile").max() == pytest.approx(1.0)


@pytest.mark.parametrize("dataset, folder_name", [("ctc", "cell-tracking-challenge"), ("em", "em"),
                                                  ("mnist", "mnist"), ("pvivax", "pvivax")])
def test_published_samples_of_every_dataset(upstream_samples, tmp_path, capsys, dataset, folder_name):
    """Every data set's zoo layout and recipe runs on a real crop (shapes only: where the
    masks land is checked with hand-built detectors in test_sample_masks.py)."""
    from micranet_utils.model.network import MICRANet
    from micranet_utils.base.datasets import get_dataset

    info = get_dataset(dataset)
    model = MICRANet(num_classes=info.num_classes, in_channels=info.in_channels).eval()
    with torch.no_grad():
        model.linear1.weight.abs_()
        model.linear1.bias.fill_(1.0)                   # every class predicted present
    zoo_path = save_zoo(tmp_path / "model.hdf5", model, {"size": info.crop_size}, name="test",
                        group=info.zoo_group)
    if info.zoo_group != "MICRANet":       # several groups, as in the published EM and P. vivax zoos
        save_zoo(zoo_path, model, {"size": info.crop_size}, name="test", group="MICRANet-other")
    images = tmp_path / "samples"
    images.mkdir()
    sample = sorted((upstream_samples / folder_name).glob("*.tif"))[0]
    pixels = tifffile.imread(sample)
    crop = pixels[..., 64:192, 64:192]                                  # a real crop, kept small for speed
    tifffile.imwrite(images / sample.name, crop, photometric="minisblack",
                     metadata={"axes": "CYX" if crop.ndim == 3 else "YX"})
    status, err = run(capsys, "--model", zoo_path, "--input", images, "--output", tmp_path / "out",
                      "--recipe", dataset, "--device", "cpu")
    assert status == 0, err
    masks = tifffile.imread(tmp_path / "out" / f"{sample.stem}_masks.tif")
    expected = info.num_classes // 2 if dataset == "ctc" else info.num_classes
    assert masks.reshape(-1, *masks.shape[-2:]).shape[0] == expected
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["gradcam"]["normalize"] == (dataset not in ("em", "pvivax"))
