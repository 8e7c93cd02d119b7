"""Fold ensembles (P. vivax ``MICRANet-finetuned``): loading the folds, averaging, ``micranet predict``.

The zoos are written with h5py in the published nested layout (group ->
model -> fold -> weights), which :func:`micranet_utils.save_zoo` does not
write. The folds have different random weights; the exact check compares
:func:`ensemble_segment` with a plain reference written here from the
reference's description, none of it from the package: each fold's Grad-CAM
maps (tests/reference_gradcam.py), its raw map for the classes it calls
present (tests/references.py), the mean over all folds, the P. vivax
threshold rule.
"""

import json

import h5py
import numpy as np
import pytest
import tifffile
import torch
from model_helpers import randomise_batchnorm
from reference_gradcam import reference_local_maps
from references import SETTINGS, reference_peak, reference_raw

from micranet_utils import cli
from micranet_utils.analysis.ensemble import ensemble_members, ensemble_segment, load_ensemble
from micranet_utils.analysis.recipes import segment
from micranet_utils.base.errors import ZooError
from micranet_utils.model.gradcam import local_maps, predicted
from micranet_utils.model.network import MICRANet

GROUP, MODEL = "MICRANet-finetuned", "20200101-120000_42"
PARAMS = {"num_classes": 1, "num_input_images": 3, "size": 512, "seed": 42}
THRESHOLD = 0.6


pytestmark = pytest.mark.usefixtures("one_thread")


def fold_model(seed, present=True, num_classes=1, in_channels=3):
    """A random MICRA-Net; `present`: positive evidence and bias (class called present), else a large negative bias."""
    torch.manual_seed(seed)
    model = randomise_batchnorm(MICRANet(num_classes, in_channels), seed=seed)
    with torch.no_grad():
        model.linear1.weight.abs_()
        model.linear1.bias.fill_(3.0 if present else -30.0)
    return model


def write_fold_zoo(path, models, params=PARAMS, folds=None, naive=None):
    """A zoo in the published P. vivax layout: MICRANet-finetuned/MODEL/<fold>/<weights> (+ MICRANet-naive)."""
    groups = {GROUP: {f"{MODEL}/{fold}": m for fold, m in zip(folds or range(len(models)), models)}}
    if naive is not None:
        groups["MICRANet-naive"] = {MODEL: naive}
    with h5py.File(path, "w") as file:
        for group, members in groups.items():
            arch = file.create_group(group)
            arch.attrs["trainer_params"] = json.dumps(params, sort_keys=True, indent=4)
            arch.attrs["class_thresholds"] = np.array([THRESHOLD])
            for name, model in members.items():
                node = arch.create_group(str(name))
                for key, value in model.state_dict().items():
                    node.create_dataset(key, data=value.numpy())
    return path


def reference_ensemble(models, image):
    """The original's P. vivax loop, written plainly and without the package (reference §6, §7):
    per fold un-normalised Grad-CAM maps (tests/reference_gradcam.py), presence ``p >= threshold``,
    the raw map of the present classes (tests/references.py); sum / number of folds; the peak
    object of the mean, once."""
    total = np.zeros((len(models[0].linear1.bias),) + image.shape[1:])
    present = []
    for model in models:
        maps, logits = reference_local_maps(model, image[None], normalize=False)
        fold_present = 1.0 / (1.0 + np.exp(-logits[0].astype(np.float64))) >= THRESHOLD
        for c in np.flatnonzero(fold_present):
            raw = reference_raw(maps[0, c], image, "pvivax")
            total[c] += 0 if raw is None else raw
        present.append(fold_present)
    mean = total / len(models)
    pvivax = SETTINGS["pvivax"]
    masks = np.zeros(mean.shape, bool)
    for c in range(len(mean)):
        if np.any(mean[c]):
            masks[c] = reference_peak(mean[c], pvivax["peak_sigma"], pvivax["peak_quantile"])
    return masks, mean, np.array(present)


@pytest.fixture
def image():
    return np.random.default_rng(3).standard_normal((3, 96, 104)).astype(np.float32)


def test_ensemble_mask_equals_the_plain_reference(image):
    # random weights: folds whose peak-object masks are not empty on this noise image (seeds 1, 2 give none)
    models = [fold_model(4), fold_model(5), fold_model(3, present=False)]
    result = ensemble_segment(models, image, "pvivax", {"class_thresholds": [THRESHOLD]})
    masks, mean, present = reference_ensemble(models, image)
    assert present.tolist() == [[True], [True], [False]]           # one fold calls the class absent
    np.testing.assert_array_equal(result.present, present)
    np.testing.assert_allclose(result.scores, mean, rtol=1e-5, atol=1e-6)
    assert masks.any() and masks.mean() < 0.9
    np.testing.assert_array_equal(result.masks, masks)
    for model in models[:2]:                                        # the mean is not one fold's answer
        assert (ensemble_segment([model], image, "pvivax", {"class_thresholds": [THRESHOLD]}).masks != masks).any()
    assert result.maps.shape == (1, 8, 96, 104) and result.logits.shape == (3, 1)
    # the absent fold's zeros only scale the mean: the same mask as the two folds that found the class
    np.testing.assert_array_equal(ensemble_segment(models[:2], image, "pvivax", {"class_thresholds": [THRESHOLD]})
                                  .masks, masks)


def test_no_fold_present_gives_empty_masks(image):
    models = [fold_model(1, present=False), fold_model(2, present=False)]
    result = ensemble_segment(models, image, "pvivax", {"class_thresholds": [THRESHOLD]})
    assert not result.present.any() and not result.masks.any() and not result.scores.any()


@pytest.mark.parametrize("recipe", ["pvivax", "actin", "mnist"])
def test_one_model_ensemble_equals_the_single_model_path(recipe, image):
    in_channels = 3 if recipe == "pvivax" else 1
    model = fold_model(4, num_classes=2, in_channels=in_channels)
    picture = image[:in_channels]
    params = {"class_thresholds": [THRESHOLD, THRESHOLD]}
    result = ensemble_segment([model], picture, recipe, params)
    normalize = recipe != "pvivax"
    maps, logits = local_maps(model, picture[None], normalize=normalize)
    present = predicted(logits, THRESHOLD if recipe == "pvivax" else 0.5, strict=normalize)
    np.testing.assert_array_equal(result.masks, segment(maps, present, picture[None], recipe)[0])
    np.testing.assert_array_equal(result.maps, maps[0])
    assert result.masks.any()


def test_load_ensemble_reads_every_fold_in_the_published_layout(tmp_path):
    models = [fold_model(seed) for seed in (1, 2, 3)]
    path = write_fold_zoo(tmp_path / "PVivaxModelZoo.hdf5", models, naive=fold_model(9))
    assert ensemble_members(path, group=GROUP) == [f"{MODEL}/0", f"{MODEL}/1", f"{MODEL}/2"]
    assert ensemble_members(path, name=f"{MODEL}/1", group=GROUP) == []
    assert ensemble_members(path, group="MICRANet-naive") == []
    loaded, params, members = load_ensemble(path, group=GROUP)
    assert members == ensemble_members(path, group=GROUP) and params["class_thresholds"] == [THRESHOLD]
    for original, model in zip(models, loaded):
        for key, value in original.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
    one, _, members = load_ensemble(path, name=f"{MODEL}/2", group=GROUP)
    assert members == [] and len(one) == 1
    assert torch.equal(one[0].conv1a.weight, models[2].conv1a.weight)
    naive, _, members = load_ensemble(path, group="MICRANet-naive")
    assert members == [] and torch.equal(naive[0].conv1a.weight, fold_model(9).conv1a.weight)


def test_a_fold_of_another_shape_is_named(tmp_path):
    path = write_fold_zoo(tmp_path / "zoo.hdf5", [fold_model(1), fold_model(2, in_channels=1)], folds=["a", "b"])
    with pytest.raises(ZooError, match=rf"zoo\.hdf5.*{MODEL}/b.*conv1a\.weight has shape"):
        load_ensemble(path, group=GROUP)
    # without num_classes in trainer_params each fold's classes come from its weights: they must agree
    path = write_fold_zoo(tmp_path / "classes.hdf5", [fold_model(1), fold_model(2, num_classes=2)],
                          params={"num_input_images": 3, "size": 512}, folds=["a", "b"])
    with pytest.raises(ZooError, match=rf"classes\.hdf5: fold '{MODEL}/b' .* 2 class"):
        load_ensemble(path, group=GROUP)
    with h5py.File(path, "a") as file:
        file[f"{GROUP}/{MODEL}"].create_dataset("stray", data=np.zeros(3))
    with pytest.raises(ZooError, match="mixes weights and sub-groups"):
        ensemble_members(path, group=GROUP)


def test_bad_ensemble_arguments(image):
    with pytest.raises(ValueError, match="at least one model"):
        ensemble_segment([], image)
    with pytest.raises(ValueError, match=r"models\[1\] has 2 class"):
        ensemble_segment([fold_model(1), fold_model(2, num_classes=2)], image)
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        ensemble_segment([fold_model(1)], image[:1])
    with pytest.raises(ValueError, match="choose one fold"):
        ensemble_segment([fold_model(1, in_channels=1)] * 2, image[:1], "mnist")


def run(capsys, *args):
    status = cli.main(["predict", "--quiet", "--device", "cpu", *map(str, args)])
    return status, capsys.readouterr().err


def read_masks(folder, stem):
    masks = tifffile.imread(folder / f"{stem}_masks.tif")
    return masks.reshape(-1, *masks.shape[-2:]) > 0


def test_cli_averages_the_folds_and_name_picks_one(tmp_path, image, capsys):
    models = [fold_model(4), fold_model(5), fold_model(3, present=False)]
    path = write_fold_zoo(tmp_path / "zoo.hdf5", models, naive=fold_model(9))
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "smear.tif", image, photometric="minisblack", metadata={"axes": "CYX"})
    status, err = run(capsys, "--model", path, "--input", images, "--output", tmp_path / "all", "--recipe", "pvivax",
                      "--maps")
    assert status == 0, err
    manifest = json.loads((tmp_path / "all" / "manifest.json").read_text())
    assert manifest["folds"] == [f"{MODEL}/0", f"{MODEL}/1", f"{MODEL}/2"]
    expected = ensemble_segment(models, image, "pvivax", {"class_thresholds": [THRESHOLD]})
    assert expected.masks.any()
    np.testing.assert_array_equal(read_masks(tmp_path / "all", "smear"), expected.masks)
    record = json.loads((tmp_path / "all" / "smear_result.json").read_text())
    assert record["fold_predicted"] == [[True], [True], [False]] and record["predicted"] == [True]
    assert record["probability"][0] == max(p[0] for p in record["fold_probability"])
    with h5py.File(tmp_path / "all" / "smear_maps.h5", "r") as file:
        assert json.loads(file.attrs["mean_over_folds"]) == manifest["folds"]
        np.testing.assert_allclose(file["maps"][()], expected.maps, rtol=1e-5, atol=1e-7)

    status, err = run(capsys, "--model", path, "--input", images, "--output", tmp_path / "one", "--recipe", "pvivax",
                      "--name", f"{MODEL}/1")
    assert status == 0, err
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["folds"] == []
    assert "fold_predicted" not in json.loads((tmp_path / "one" / "smear_result.json").read_text())
    single = ensemble_segment(models[1:2], image, "pvivax", {"class_thresholds": [THRESHOLD]})
    assert single.masks.any() and (single.masks != expected.masks).any()
    np.testing.assert_array_equal(read_masks(tmp_path / "one", "smear"), single.masks)


def test_cli_names_the_file_and_fold_of_a_bad_fold(tmp_path, image, capsys):
    path = write_fold_zoo(tmp_path / "my zoo.hdf5", [fold_model(1), fold_model(2, in_channels=1)])
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "smear.tif", image, photometric="minisblack", metadata={"axes": "CYX"})
    status, err = run(capsys, "--model", path, "--input", images, "--output", tmp_path / "out", "--recipe", "pvivax")
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "my zoo.hdf5" in err and f"{MODEL}/1" in err
    assert not (tmp_path / "out").exists()


def test_cli_on_the_published_pvivax_samples(upstream_samples, tmp_path, capsys):
    """The whole path on two real 512 x 512 smears, two folds, default group chosen by the recipe."""
    models = [fold_model(1), fold_model(2)]
    path = write_fold_zoo(tmp_path / "PVivaxModelZoo.hdf5", models, naive=fold_model(9))
    images = tmp_path / "samples"
    images.mkdir()
    samples = sorted((upstream_samples / "pvivax").glob("*.tif"))[:2]
    for sample in samples:
        (images / sample.name).write_bytes(sample.read_bytes())
    status, err = run(capsys, "--model", path, "--input", images, "--output", tmp_path / "out", "--recipe", "pvivax")
    assert status == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["folds"] == [f"{MODEL}/0", f"{MODEL}/1"] and manifest["images"] == [s.name for s in samples]
    for sample in samples:
        masks = read_masks(tmp_path / "out", sample.stem)
        assert masks.shape == (1, 512, 512) and masks.any()
        record = json.loads((tmp_path / "out" / f"{sample.stem}_result.json").read_text())
        assert record["fold_predicted"] == [[True], [True]] and record["count"] == [1]
