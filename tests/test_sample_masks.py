"""``micranet predict`` masks land on the obvious structures of the published sample images.

The published ModelZoo weights cannot be downloaded offline, and a model with
random weights finds nothing in particular, so these tests build a
*structure detector* by hand: a MICRA-Net whose evidence for a class grows with
the local amount of one "stain" above the image background. Every layer is an
identity on the mean of its input channels (3x3 kernels with only the centre
tap, zero biases, BatchNorm at its initial statistics), except layer 1a, which
projects the input channels on a stain vector and subtracts a background
level. After the ReLUs, layer ``l`` holds the max-pooled "stain above
background" at its stride, Grad-CAM weighs it positively, and the classifier
calls class 0 present as soon as some pixel rises above the background; the
last class has no weights and a negative bias, so it is always absent.

The stain is the intensity for fluorescence, digits and phase contrast
(bright structures), minus the intensity for electron microscopy (dark
membranes on a bright background) and red minus green for P. vivax (the
parasite's purple Giemsa stain on pale red cells). The models keep the data
set's input channels but have two classes (one for EM and P. vivax), which
keeps the module fast; the recipes do not depend on the number of classes.

Each image then goes through the public predict path (the CLI once) with its
data set's recipe, and the mask of class 0 is compared with an obvious
reference: Otsu's threshold of the smoothed stain. Chance is the reference's
share of the image; the *lift* ``(precision - chance) / (best - chance)``
(``best``: the highest precision a mask of that size can reach) is 0 for a
mask placed at random and 1 for a perfect one. It would fall with wrong
intensity scaling, swapped or flipped axes, misaligned tiles, badly upsampled
low-resolution maps or inverted thresholds. The same detectors give empty
masks on images without any stain.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from micranet_utils import MICRANet, cli, get_dataset, save_zoo
from micranet_utils.images import read_image
from micranet_utils.network import LAYERS
from micranet_utils.predict import predict_folder, prepare_image

STAINS = {"actin": [1.0], "ctc": [1.0], "mnist": [1.0], "em": [-1.0], "pvivax": [1.0, -1.0, 0.0]}
FOLDERS = {"actin": "actin", "ctc": "cell-tracking-challenge", "em": "em", "mnist": "mnist", "pvivax": "pvivax"}
MIN_LIFT = 0.5
PRESENT_BIAS = -0.01                 # class 0: present when the stain rises 0.01 above the background


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run faster on one thread, the more so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def structure_detector(dataset, level):
    """A MICRA-Net for `dataset` whose class 0 responds to its stain above `level` (see module notes)."""
    info = get_dataset(dataset)
    num_classes = 1 if info.num_classes == 1 else 2
    model = MICRANet(num_classes, info.in_channels)
    with torch.no_grad():
        for name in LAYERS:
            conv = getattr(model, f"conv{name}")
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[:, :, 1, 1] = 1.0 / conv.in_channels
        model.conv1a.weight[:, :, 1, 1] = torch.tensor(STAINS[dataset])
        model.conv1a.bias.fill_(-level)
        model.linear1.weight.zero_()
        model.linear1.bias.fill_(-1.0)
        model.linear1.weight[0] = 1.0 / model.linear1.in_features
        model.linear1.bias[0] = PRESENT_BIAS
    return model.eval()


def stain_of(image, dataset):
    """Projection of a (C, H, W) image on the data set's stain vector, shape (H, W)."""
    return np.tensordot(np.asarray(STAINS[dataset], np.float32), image, axes=1)


def save_detector(path, dataset, level):
    info = get_dataset(dataset)
    return save_zoo(path, structure_detector(dataset, level), {"size": info.crop_size}, name="detector",
                    group=info.zoo_group)


def sample_detector(tmp_path, dataset, sample):
    """Zoo of a detector whose background level is the median stain of `sample` as predict prepares it."""
    stain = stain_of(prepare_image(read_image(sample)), dataset)
    return save_detector(tmp_path / "detector.hdf5", dataset, float(np.median(stain))), stain


def reference_structures(stain):
    """The obvious structures: Otsu's threshold of the stain smoothed over 2 pixels, bool (H, W)."""
    smooth = ndimage.gaussian_filter(stain.astype(np.float64), 2.0)
    return smooth > threshold_otsu(smooth)


def lift(mask, reference):
    """(precision - chance) / (best - chance) of `mask` against `reference`; also returns the three numbers."""
    chance = reference.mean()
    precision = (mask & reference).sum() / mask.sum()
    best = min(1.0, reference.sum() / mask.sum())
    return (precision - chance) / (best - chance), precision, chance


def read_masks(out, stem):
    masks = tifffile.imread(out / f"{stem}_masks.tif") > 0
    return masks.reshape(-1, *masks.shape[-2:])


def check_masks(out, stem, stain, expected_masks):
    """Masks of one image: shape, class 0 on the structures, the absent class empty. Returns the lift."""
    masks = read_masks(out, stem)
    assert masks.shape == (expected_masks,) + stain.shape
    mask = masks[0]
    assert mask.any(), f"{stem}: empty mask although the detector fires"
    value, precision, chance = lift(mask, reference_structures(stain))
    assert value >= MIN_LIFT, (f"{stem}: mask misses the structures: precision {precision:.3f}, "
                               f"chance {chance:.3f}, lift {value:.2f}")
    assert not masks[1:].any(), f"{stem}: mask of an absent class"
    return value


def copy_sample(sample, folder):
    folder.mkdir()
    (folder / sample.name).write_bytes(sample.read_bytes())
    return folder


SAMPLES = [("ctc", "Fluo-N2DH-GOWT1_01_t013.tif"), ("ctc", "PhC-C2DH-U373_02_t004.tif"),
           ("em", "tile_r1-c1_S_035_1987_4796.tif"), ("mnist", "0_image-15.tif"), ("mnist", "1_image-9.tif"),
           ("pvivax", "0a3b53c7-e7ab-4135-80aa-fd2079d727d6.tif"),
           ("pvivax", "1b814efc-7bf9-40ae-8e13-49dc2c04732f_2.tif")]


@pytest.mark.parametrize("dataset, file_name", SAMPLES, ids=[f"{d}-{f[:12]}" for d, f in SAMPLES])
def test_masks_land_on_structures(upstream_samples, tmp_path, dataset, file_name):
    sample = upstream_samples / FOLDERS[dataset] / file_name
    zoo, stain = sample_detector(tmp_path, dataset, sample)
    images = copy_sample(sample, tmp_path / "images")
    summary = predict_folder(zoo, images, tmp_path / "out", dataset, device="cpu", save_maps=True,
                             progress=False)
    assert summary["failed"] == {} and summary["done"] == [file_name]
    num_classes = 1 if get_dataset(dataset).num_classes == 1 else 2
    check_masks(tmp_path / "out", sample.stem, stain, 1 if dataset == "ctc" else num_classes)
    with h5py.File(tmp_path / "out" / f"{sample.stem}_maps.h5", "r") as file:
        maps = file["maps"][()]
    assert maps.shape == (num_classes, 8) + stain.shape and np.isfinite(maps).all()
    assert maps[0].max(axis=(1, 2)).min() > 0, "a layer map of the present class is zero everywhere"
    result = json.loads((tmp_path / "out" / f"{sample.stem}_result.json").read_text())
    assert result["predicted"][0] and result["count"][0] >= 1


def test_actin_samples_through_the_cli(upstream_samples, tmp_path, capsys):
    samples = sorted((upstream_samples / "actin").glob("*.tif"))
    stains = [stain_of(prepare_image(read_image(path)), "actin") for path in samples]
    zoo = save_detector(tmp_path / "detector.hdf5", "actin", float(np.median(stains)))
    images = tmp_path / "images"
    images.mkdir()
    for path in samples:
        (images / path.name).write_bytes(path.read_bytes())
    status = cli.main(["predict", "--quiet", "--model", str(zoo), "--input", str(images),
                       "--output", str(tmp_path / "out"), "--recipe", "actin", "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    for path, stain in zip(samples, stains):
        check_masks(tmp_path / "out", path.stem, stain, 2)


def test_tiled_prediction_stays_on_the_structures(upstream_samples, tmp_path):
    sample = upstream_samples / "actin" / "image1.tif"
    zoo, stain = sample_detector(tmp_path, "actin", sample)
    images = copy_sample(sample, tmp_path / "images")
    predict_folder(zoo, images, tmp_path / "whole", "actin", device="cpu", progress=False)
    predict_folder(zoo, images, tmp_path / "tiled", "actin", device="cpu", tile=96, overlap=24, progress=False)
    check_masks(tmp_path / "tiled", sample.stem, stain, 2)
    whole, tiled = read_masks(tmp_path / "whole", sample.stem)[0], read_masks(tmp_path / "tiled", sample.stem)[0]
    assert (whole & tiled).sum() / (whole | tiled).sum() > 0.5


def disc_image(dataset, shape=(200, 296), centre=(60, 210), radius=22, strength=0.8):
    """A (C, H, W) float32 image whose stain is `strength` inside a disc and 0 elsewhere, with its disc."""
    rows, cols = np.indices(shape)
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius ** 2
    stain = np.asarray(STAINS[dataset], np.float32)
    image = stain[:, None, None] * (strength * disc / float(stain @ stain))[None]
    return image.astype(np.float32), disc


@pytest.mark.parametrize("dataset", sorted(STAINS))
def test_one_disc_is_found_and_a_blank_image_gives_nothing(tmp_path, dataset):
    """Exact ground truth on a non-square image whose sides are not multiples of 8."""
    zoo = save_detector(tmp_path / "detector.hdf5", dataset, 0.0)
    image, disc = disc_image(dataset)
    images = tmp_path / "images"
    images.mkdir()
    for name, pixels in [("disc.tif", image), ("blank.tif", np.zeros_like(image))]:
        tifffile.imwrite(images / name, pixels, photometric="minisblack", metadata={"axes": "CYX"})
    summary = predict_folder(zoo, images, tmp_path / "out", dataset, device="cpu", progress=False)
    assert summary["failed"] == {}
    mask = read_masks(tmp_path / "out", "disc")[0]
    assert mask.any()
    value, precision, chance = lift(mask, disc)
    assert value >= MIN_LIFT, f"precision {precision:.3f}, chance {chance:.3f}"
    blank = json.loads((tmp_path / "out" / "blank_result.json").read_text())
    assert not any(blank["predicted"]) and max(blank["probability"]) < 0.5
    assert not read_masks(tmp_path / "out", "blank").any()
