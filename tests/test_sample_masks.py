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
data set's recipe, and two things are checked:

* the saved Grad-CAM maps of class 0 equal, up to scale, the plain
  computation of what this network must give (:func:`expected_maps`: the
  stain above background, max-pooled to each layer's stride and repeated
  back); the maps of the absent class are zero;
* the mask of class 0 lands on an obvious reference, Otsu's threshold of the
  smoothed stain of the file as stored. Chance is the reference's share of
  the image; the *lift* ``(precision - chance) / (best - chance)`` (``best``:
  the highest precision a mask of that size can reach) is 0 for a mask placed
  at random and 1 for a perfect one, and must reach :data:`MIN_LIFT`. On the
  samples it is 0.73 to 1.0.

Swapped or flipped axes, misaligned tiles, shifted or badly upsampled
low-resolution maps, an inverted decision or an inverted intensity scaling
each make some of these tests fail (checked by injecting each bug). The DIC
sample of the Cell Tracking Challenge is left out: its relief contrast has no
"bright structure" for the reference to find (lift 0.3). A synthetic image
with one disc, whose sides are not multiples of 8, gives exact ground truth,
and a blank image must give no detection and empty masks.
"""

import json

import h5py
import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from micranet_utils.model.network import MICRANet
from micranet_utils import cli
from micranet_utils.base.datasets import get_dataset
from micranet_utils.io.zoo import save_zoo
from micranet_utils.io.images import read_image
from micranet_utils.model.network import LAYERS
from micranet_utils.apps.predict import predict_folder
from micranet_utils.io.images import prepare_image

STAINS = {"actin": [1.0], "ctc": [1.0], "mnist": [1.0], "em": [-1.0], "pvivax": [1.0, -1.0, 0.0]}
FOLDERS = {"actin": "actin", "ctc": "cell-tracking-challenge", "em": "em", "mnist": "mnist", "pvivax": "pvivax"}
MIN_LIFT = 0.5
MAX_OVERSIZE = 2.5                   # a mask covers at most 2.5 times the reference (not Actin: fixed 20 %)
PRESENT_BIAS = -0.01                 # class 0: present when the stain rises 0.01 above the background


pytestmark = pytest.mark.usefixtures("one_thread")


def classes_of(dataset):
    """Number of classes of the detector for `dataset`, and number of masks predict writes."""
    num_classes = 1 if get_dataset(dataset).num_classes == 1 else 2
    return num_classes, 1 if dataset == "ctc" else num_classes


def structure_detector(dataset, level):
    """A MICRA-Net for `dataset` whose class 0 responds to its stain above `level` (see module notes)."""
    model = MICRANet(classes_of(dataset)[0], get_dataset(dataset).in_channels)
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


def sample_detector(tmp_path, dataset, samples):
    """Zoo of a detector whose background is the median stain of `samples` as predict prepares them.

    Returns the zoo path, the level and, per sample, the stain the network
    sees (for the exact maps) and the stain of the file as stored (for the
    reference structures: a bug in the preparation must not move them).
    """
    images = [read_image(path) for path in samples]
    seen = [stain_of(prepare_image(image), dataset) for image in images]
    level = float(np.median(seen))
    stored = [stain_of(image, dataset) for image in images]
    return save_detector(tmp_path / "detector.hdf5", dataset, level), level, seen, stored


def minmax(values):
    """`values` scaled to [0, 1] (all zeros when constant)."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def expected_maps(stain, level):
    """The detector's eight Grad-CAM maps of class 0, written plainly, float64 (8, H, W).

    Layer ``l`` of the detector holds the stain above `level`, max-pooled over
    ``s x s`` cells (s = 1, 1, 2, 2, 4, 4, 8, 8), times a positive factor; its
    Grad-CAM map is that times another positive factor, each cell repeated
    ``s`` times (trailing pixels that pooling dropped repeat the last cell).
    Scaled to [0, 1], as ``local_maps(normalize=True)`` does.
    """
    above = np.maximum(stain.astype(np.float64) - level, 0.0)
    height, width = above.shape
    maps = []
    for stride in (1, 1, 2, 2, 4, 4, 8, 8):
        rows, cols = height // stride, width // stride
        pooled = above[:rows * stride, :cols * stride].reshape(rows, stride, cols, stride).max(axis=(1, 3))
        upsampled = pooled.repeat(stride, axis=0).repeat(stride, axis=1)
        upsampled = np.pad(upsampled, ((0, height - rows * stride), (0, width - cols * stride)), mode="edge")
        maps.append(minmax(upsampled))
    return np.stack(maps)


def check_maps(out, stem, stain, level, num_classes):
    """Saved maps: shape, finite, class 0 equal to :func:`expected_maps` (up to scale), other classes zero."""
    with h5py.File(out / f"{stem}_maps.h5", "r") as file:
        maps = file["maps"][()]
    assert maps.shape == (num_classes, 8) + stain.shape and np.isfinite(maps).all()
    scaled = np.stack([minmax(layer.astype(np.float64)) for layer in maps[0]])
    np.testing.assert_allclose(scaled, expected_maps(stain, level), atol=1e-4, err_msg=f"{stem}: maps")
    assert not maps[1:].any(), f"{stem}: maps of a class without evidence"


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


def check_mask(mask, reference, dataset, name):
    """One mask against its reference: not empty, on the structures, not oversized."""
    assert mask.any(), f"{name}: empty mask although the detector fires"
    value, precision, chance = lift(mask, reference)
    assert value >= MIN_LIFT, (f"{name}: mask misses the structures: precision {precision:.3f}, "
                               f"chance {chance:.3f}, lift {value:.2f}")
    if dataset != "actin":
        assert mask.mean() <= MAX_OVERSIZE * chance, f"{name}: mask covers {mask.mean():.3f} of the image"


def check_masks(out, stem, stain, dataset):
    """Masks of one image: shape, class 0 on the structures, the absent class empty."""
    masks = read_masks(out, stem)
    assert masks.shape == (classes_of(dataset)[1],) + stain.shape
    check_mask(masks[0], reference_structures(stain), dataset, stem)
    assert not masks[1:].any(), f"{stem}: mask of an absent class"


def copy_samples(samples, folder):
    folder.mkdir()
    for sample in samples:
        (folder / sample.name).write_bytes(sample.read_bytes())
    return folder


SAMPLES = [("ctc", "Fluo-N2DH-GOWT1_01_t013.tif"), ("ctc", "PhC-C2DH-U373_02_t004.tif"),
           ("em", "tile_r1-c1_S_035_1987_4796.tif"), ("mnist", "0_image-15.tif"), ("mnist", "1_image-9.tif"),
           ("pvivax", "0a3b53c7-e7ab-4135-80aa-fd2079d727d6.tif"),
           ("pvivax", "1b814efc-7bf9-40ae-8e13-49dc2c04732f_2.tif")]


@pytest.mark.parametrize("dataset, file_name", SAMPLES, ids=[f"{d}-{f[:12]}" for d, f in SAMPLES])
def test_masks_land_on_structures(upstream_samples, tmp_path, dataset, file_name):
    sample = upstream_samples / FOLDERS[dataset] / file_name
    zoo, level, [seen], [stored] = sample_detector(tmp_path, dataset, [sample])
    images = copy_samples([sample], tmp_path / "images")
    summary = predict_folder(zoo, images, tmp_path / "out", dataset, device="cpu", save_maps=True,
                             progress=False)
    assert summary["failed"] == {} and summary["done"] == [file_name]
    num_classes = classes_of(dataset)[0]
    check_maps(tmp_path / "out", sample.stem, seen, level, num_classes)
    check_masks(tmp_path / "out", sample.stem, stored, dataset)
    result = json.loads((tmp_path / "out" / f"{sample.stem}_result.json").read_text())
    assert result["predicted"] == [True] + [False] * (num_classes - 1) and result["count"][0] >= 1


def test_actin_samples_through_the_cli(upstream_samples, tmp_path, capsys):
    samples = sorted((upstream_samples / "actin").glob("*.tif"))
    zoo, level, seen, stored = sample_detector(tmp_path, "actin", samples)
    images = copy_samples(samples, tmp_path / "images")
    status = cli.main(["predict", "--quiet", "--model", str(zoo), "--input", str(images), "--maps",
                       "--output", str(tmp_path / "out"), "--recipe", "actin", "--device", "cpu"])
    assert status == 0, capsys.readouterr().err
    for path, stain, stain_stored in zip(samples, seen, stored):
        check_maps(tmp_path / "out", path.stem, stain, level, 2)
        check_masks(tmp_path / "out", path.stem, stain_stored, "actin")


@pytest.mark.parametrize("dataset, file_name, tile, overlap", [("actin", "image1.tif", 96, 24),
                                                              ("mnist", "0_image-13.tif", 128, 32)])
def test_tiled_prediction_stays_on_the_structures(upstream_samples, tmp_path, dataset, file_name, tile, overlap):
    """Tiles of an image with few structures: the stitched maps are normalised as a whole."""
    sample = upstream_samples / FOLDERS[dataset] / file_name
    zoo, _, _, [stored] = sample_detector(tmp_path, dataset, [sample])
    images = copy_samples([sample], tmp_path / "images")
    predict_folder(zoo, images, tmp_path / "whole", dataset, device="cpu", progress=False)
    predict_folder(zoo, images, tmp_path / "tiled", dataset, device="cpu", tile=tile, overlap=overlap,
                   progress=False)
    check_masks(tmp_path / "tiled", sample.stem, stored, dataset)
    whole, tiled = read_masks(tmp_path / "whole", sample.stem)[0], read_masks(tmp_path / "tiled", sample.stem)[0]
    assert (whole & tiled).sum() / (whole | tiled).sum() > 0.9


def disc_image(dataset, shape=(203, 298), centre=(60, 210), radius=22, strength=0.8):
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
    summary = predict_folder(zoo, images, tmp_path / "out", dataset, device="cpu", save_maps=True,
                             progress=False)
    assert summary["failed"] == {}
    check_maps(tmp_path / "out", "disc", stain_of(image, dataset), 0.0, classes_of(dataset)[0])
    masks = read_masks(tmp_path / "out", "disc")
    assert masks.shape == (classes_of(dataset)[1],) + disc.shape and not masks[1:].any()
    check_mask(masks[0], disc, dataset, "disc")
    blank = json.loads((tmp_path / "out" / "blank_result.json").read_text())
    assert not any(blank["predicted"]) and max(blank["probability"]) < 0.5
    assert not read_masks(tmp_path / "out", "blank").any()
