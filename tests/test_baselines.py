"""Baselines: U-Net against the original's wiring, Otsu, Ilastik extraction, Mask R-CNN, comparison."""

import json

import h5py
import numpy as np
import pytest
import torch
from model_helpers import randomise_batchnorm
from original_unet import original_unet
from torch.utils.data import TensorDataset

from micranet_utils.tutorial.baselines import otsu, unet
from micranet_utils.tutorial.baselines.ilastik import extract_ilastik_project
from micranet_utils.base.errors import ZooError


@pytest.fixture
def actin_unet():
    return randomise_batchnorm(unet.UNet(**unet.ACTIN_MODEL_PARAMS), seed=3)


def test_unet_equals_original_forward_with_original_key_names(actin_unet):
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        ours = actin_unet(x)
        theirs = original_unet(actin_unet.state_dict(), x, depth=4)
    assert ours.shape == (2, 2, 64, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_unet_actin_configuration_size():
    # 16-32-64-128 filters, 1 input channel, 2 output maps: the original's parameter count
    assert sum(p.numel() for p in unet.UNet(**unet.ACTIN_MODEL_PARAMS).parameters()) == 483170


def _write_original_layout(path, model):
    """A zoo written as the original's save_ckpt does: UNet/<name>/<key>, trainer_params JSON."""
    params = {"size": 256, "lr": 1e-4, "model_params": {"in_channels": 1, "out_channels": 2,
                                                        "depth": 4, "number_filter": 4}}
    with h5py.File(path, "w") as file:
        group = file.create_group("UNet")
        group.attrs["trainer_params"] = json.dumps(params, sort_keys=True, indent=4)
        node = group.create_group("20190401-101112_42")
        for key, value in model.state_dict().items():
            node.create_dataset(key, data=value.numpy())


def test_load_unet_reads_the_published_layout(tmp_path, actin_unet):
    path = tmp_path / "ActinModelZoo.hdf5"
    _write_original_layout(path, actin_unet)
    loaded, params = unet.load_unet(path)
    assert params["model_params"]["number_filter"] == 4
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), actin_unet(x))


def test_save_then_load_unet_round_trip_keeps_other_groups(tmp_path, actin_unet):
    path = tmp_path / "zoo.hdf5"
    with h5py.File(path, "w") as file:
        file.create_group("MICRANet").attrs["trainer_params"] = "{}"
    unet.save_unet(path, actin_unet, {"size": 256, "seed": 1})
    with h5py.File(path, "r") as file:
        assert set(file) == {"MICRANet", "UNet"}
        params = json.loads(file["UNet"].attrs["trainer_params"])
    assert params["model_params"]["out_channels"] == 2 and params["size"] == 256
    loaded, _ = unet.load_unet(path)
    for key, value in actin_unet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_load_unet_rejects_micranet_weights(tmp_path, random_model):
    from micranet_utils.io.zoo import save_zoo

    path = tmp_path / "zoo.hdf5"
    save_zoo(path, random_model, {"size": 256}, group="UNet")
    with pytest.raises(ZooError, match="U-Net"):
        unet.load_unet(path)
    with pytest.raises(ZooError, match="no group 'Other'"):
        unet.load_unet(path, group="Other")


def _squares(count, size=32, seed=0):
    """Crops with one bright square (class 0) and one dim bar (class 1) on noise."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.1, 0.03, (count, 1, size, size)).astype(np.float32)
    masks = np.zeros((count, 2, size, size), np.float32)
    for k in range(count):
        y, x = rng.integers(2, size - 10, 2)
        images[k, 0, y:y + 8, x:x + 8] += 0.8
        masks[k, 0, y:y + 8, x:x + 8] = 1
        row = rng.integers(0, size - 3)
        images[k, 0, row:row + 3, :] += 0.4
        masks[k, 1, row:row + 3, :] = 1
    targets = masks.reshape(count, 2, -1).max(-1)
    return TensorDataset(torch.from_numpy(images), torch.from_numpy(targets), torch.from_numpy(masks))


def test_train_unet_lowers_the_loss_and_records_time():
    data = _squares(16)
    model, info = unet.train_unet(data, _squares(8, seed=1), epochs=8, batch_size=8, lr=1e-2,
                                  progress=False)
    history = info["history"]
    assert info["epochs"] == 8 and info["train_seconds"] > 0
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert 1 <= info["best_epoch"] <= 8
    assert info["params"]["model_params"] == unet.ACTIN_MODEL_PARAMS
    probabilities = unet.predict_unet(model, data.tensors[0][:4].numpy())
    assert probabilities.shape == (4, 2, 32, 32)
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_otsu_finds_bright_square_and_repeats_it_per_class():
    images = np.zeros((2, 1, 16, 16), np.float32)
    images[0, 0, 4:8, 4:8] = 1
    masks = otsu.otsu_masks(images, num_classes=2, sigma=0)
    assert masks.shape == (2, 2, 16, 16) and masks.dtype == bool
    assert masks[0, 0].sum() == 16 and masks[0, 0, 4:8, 4:8].all()
    np.testing.assert_array_equal(masks[:, 0], masks[:, 1])
    assert not masks[1].any()          # a constant crop has no structure


def test_otsu_rejects_colour_images():
    with pytest.raises(ValueError, match="3 channels"):
        otsu.otsu_masks(np.zeros((1, 3, 8, 8)))


def _tiny_ilastik_zoo(path):
    with h5py.File(path, "w") as file:
        project = file.create_group("Ilastik")
        project.attrs["note"] = "from the zoo"
        project.create_dataset("ilastikVersion", data=b"1.3.2")
        project.create_group("PixelClassification").create_dataset("LabelNames", data=[b"rings", b"fibers"])
        file.create_group("MICRANet")


def test_extract_ilastik_project_copies_the_group_to_the_top(tmp_path):
    zoo = tmp_path / "ActinModelZoo-ilastik.hdf5"
    _tiny_ilastik_zoo(zoo)
    keys = extract_ilastik_project(zoo, tmp_path / "ACTIN.ilp")
    assert sorted(keys) == ["PixelClassification", "ilastikVersion"]
    with h5py.File(tmp_path / "ACTIN.ilp", "r") as project:
        assert project["ilastikVersion"][()] == b"1.3.2"
        assert list(project["PixelClassification/LabelNames"][()]) == [b"rings", b"fibers"]
        assert project.attrs["note"] == "from the zoo"


def test_extract_ilastik_project_without_group_writes_nothing(tmp_path):
    zoo = tmp_path / "zoo.hdf5"
    with h5py.File(zoo, "w") as file:
        file.create_group("MICRANet")
    with pytest.raises(ZooError, match="no Ilastik project"):
        extract_ilastik_project(zoo, tmp_path / "out.ilp")
    assert list(tmp_path.iterdir()) == [zoo]
    with pytest.raises(ZooError, match="no such model file"):
        extract_ilastik_project(tmp_path / "absent.hdf5", tmp_path / "out.ilp")
    text = tmp_path / "notes.hdf5"
    text.write_text("not a zoo")
    with pytest.raises(ZooError, match="notes.hdf5: not a readable HDF5 file"):
        extract_ilastik_project(text, tmp_path / "out.ilp")
    assert not (tmp_path / "out.ilp").exists()


# --- Mask R-CNN -------------------------------------------------------------------------------

def test_instance_targets_follow_ids_classes_and_drop_small_objects():
    from micranet_utils.tutorial.baselines.maskrcnn import instance_targets

    labels = np.zeros((2, 32, 32), np.int32)
    labels[0, 2:10, 3:9] = 5          # ring, 8x6 box
    labels[0, 20:22, 20:30] = 7       # ring, only 2 rows high: dropped (< 4 px)
    labels[1, 12:30, 14:19] = 5       # fiber with the same id as the ring: still its own object
    target = instance_targets(labels)
    assert target["labels"].tolist() == [1, 2]
    assert target["boxes"].tolist() == [[3, 2, 8, 9], [14, 12, 18, 29]]
    assert target["masks"].shape == (2, 32, 32) and target["masks"].dtype == torch.uint8
    assert target["masks"][0].sum() == 48 and target["masks"][1].sum() == 90
    empty = instance_targets(np.zeros((2, 8, 8), int))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 8, 8)


def test_original_maskrcnn_configuration_has_torchvision_parameter_names():
    import torchvision

    from micranet_utils.tutorial.baselines.maskrcnn import build_maskrcnn, ORIGINAL

    reference = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3)
    ours = build_maskrcnn(num_classes=2, **ORIGINAL).state_dict()
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    expected["backbone.body.conv1.weight"] = torch.Size([64, 1, 7, 7])   # the 1-channel first conv
    assert {k: v.shape for k, v in ours.items()} == expected


def _instance_dataset(count, seed=0):
    from micranet_utils.tutorial.baselines.maskrcnn import instance_targets

    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        image = rng.normal(0.1, 0.02, (1, 64, 64)).astype(np.float32)
        labels = np.zeros((2, 64, 64), np.int32)
        for obj in range(3):
            y, x = rng.integers(4, 44, 2)
            channel = obj % 2
            labels[channel, y:y + 14, x:x + 10] = obj + 1
            image[0, y:y + 14, x:x + 10] += 0.5 + 0.3 * channel
        items.append((torch.from_numpy(image), instance_targets(labels)))
    return items


def test_train_predict_save_load_small_maskrcnn(tmp_path):
    from micranet_utils.tutorial.baselines import maskrcnn

    config = {**maskrcnn.SMALL, "min_size": 64, "max_size": 64, "fpn_channels": 16,
              "representation_size": 32, "mask_layers": [16]}
    model, info = maskrcnn.train_maskrcnn(_instance_dataset(4), _instance_dataset(2, seed=1), epochs=2,
                                          batch_size=2, lr=1e-3, config=config, progress=False)
    assert info["epochs"] == 2 and np.isfinite(info["history"][-1]["train_loss"])
    assert len(info["params"]["model_params"]["image_mean"]) == 1
    images = np.stack([item[0].numpy() for item in _instance_dataset(3, seed=2)])
    from micranet_utils.model.batchnorm import recalibrate_batchnorm

    before = model.backbone.body.bn1.running_var.clone()
    recalibrate_batchnorm(model, images, forward=maskrcnn.backbone_forward)
    assert not torch.allclose(before, model.backbone.body.bn1.running_var)
    masks, instances = maskrcnn.predict_maskrcnn(model, images, score_threshold=0.0)
    assert masks.shape == (3, 2, 64, 64) and masks.dtype == bool and len(instances) == 3
    for image_masks, found in zip(masks, instances):     # semantic masks = union of instances
        for c in range(2):
            union = np.zeros((64, 64), bool)
            for label, obj in zip(found["labels"], found["masks"]):
                union |= obj if label == c else False
            np.testing.assert_array_equal(image_masks[c], union)
    path = tmp_path / "zoo.hdf5"
    maskrcnn.save_maskrcnn(path, model, info["params"])
    loaded, _ = maskrcnn.load_maskrcnn(path)
    again, _ = maskrcnn.predict_maskrcnn(loaded, images, score_threshold=0.0)
    np.testing.assert_array_equal(again, masks)


# --- comparison -------------------------------------------------------------------------------

def _tiny_split(path, n=2, size=64):
    """A published-layout file: one group, rings as two squares, fibers as one bar, all foreground."""
    data = np.zeros((n, size, size), np.float32)
    label = np.zeros((n, 3, size, size), np.uint8)
    label[:, 2] = 1
    for k in range(n):
        label[k, 0, 4:12, 4:12] = 1
        label[k, 0, 40:50, 40:50] = 2
        label[k, 1, 20:24, 0:30] = 1
        data[k] = 0.1 + 0.8 * (label[k, :2] > 0).any(axis=0)
    with h5py.File(path, "w") as file:
        group = file.create_group("g")
        group.create_dataset("data", data=data)
        group.create_dataset("label", data=label).attrs["shapes"] = np.tile([size, size], (n, 1))
    return path


def test_true_centroids_match_a_per_object_loop():
    from micranet_utils.tutorial.comparison import true_centroids

    labels = np.zeros((1, 2, 16, 16), np.int32)
    labels[0, 0, 1:4, 1:4] = 3
    labels[0, 0, 10:12, 8:16] = 9
    labels[0, 1, 5, 5] = 1
    found = true_centroids(labels)
    for c in range(2):
        expected = [np.argwhere(labels[0, c] == i).mean(axis=0) for i in np.unique(labels[0, c]) if i]
        np.testing.assert_allclose(found[0][c], np.reshape(expected, (-1, 2)))


def test_score_masks_perfect_empty_and_merged(tmp_path):
    from micranet_utils.tutorial.comparison import load_test_crops, score_masks

    test = load_test_crops(_tiny_split(tmp_path / "testing.hdf5"), size=32, step=1.0)
    assert test["images"].shape == (8, 1, 32, 32) and test["labels"].shape == (8, 2, 32, 32)
    assert test["class_names"] == ("rings", "fibers")
    perfect = score_masks(test["masks"], test, max_distance=2, min_area=1)
    for key in ("dice", "iou", "detection_f1"):
        assert perfect[key] == {"rings": 1.0, "fibers": 1.0}
    assert perfect["count_error"] == {"rings": 0.0, "fibers": 0.0}
    empty = score_masks(np.zeros_like(test["masks"]), test, min_area=1)
    assert empty["dice"]["rings"] == 0.0 and empty["detection_f1"]["fibers"] == 0.0
    # one mask for both classes (Otsu): rings' Dice falls by the fibers' pixels
    union = np.repeat(test["masks"].any(axis=1, keepdims=True), 2, axis=1)
    merged = score_masks(union, test, min_area=1)
    rings, fibers = test["masks"][:, 0].sum(), test["masks"][:, 1].sum()
    assert merged["dice"]["rings"] == pytest.approx(2 * rings / (2 * rings + fibers))
    with pytest.raises(ValueError, match="shape"):
        score_masks(test["masks"][:2], test)


def test_annotation_cost_counts_crops_pixels_and_objects(tmp_path):
    from micranet_utils.tutorial.comparison import annotation_cost

    cost = annotation_cost(_tiny_split(tmp_path / "training.hdf5", n=3), size=32, step=1.0)
    assert cost == {"crops": 12, "image_labels": 24, "images": 3, "pixels": 3 * 64 * 64 * 2, "objects": 9}


def test_write_comparison_keeps_other_keys_and_table_lists_methods(tmp_path):
    from micranet_utils.tutorial.comparison import comparison_entry, format_table, plot_comparison, write_comparison

    scores = {"dice": {"rings": 0.71234, "fibers": 0.6}, "iou": {"rings": 0.5, "fibers": 0.4}}
    comparison = {"micranet": comparison_entry(scores, 12.34, "image-level", 100),
                  "otsu": comparison_entry(scores, None, "none", 0)}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"lessons": {"01": "ok"}}))
    write_comparison(comparison, path, key="comparison")
    data = json.loads(path.read_text())
    assert data["lessons"] == {"01": "ok"}
    assert data["comparison"]["micranet"]["dice"]["rings"] == 0.7123
    assert data["comparison"]["micranet"]["train_seconds"] == 12.3
    alone = write_comparison(comparison, tmp_path / "comparison.json")
    assert json.loads(alone.read_text()) == data["comparison"]
    table = format_table(comparison)
    assert "| MICRA-Net | image-level | 100 | 12 | 0.71 | 0.60 |" in table and "| Otsu | none |" in table
    ax = plot_comparison(comparison)
    assert len(ax.patches) == 4


def test_choose_recipe_picks_the_quantile_matching_the_truth_fraction():
    from micranet_utils.tutorial.comparison import choose_recipe

    rng = np.random.default_rng(0)
    truth = np.zeros((4, 2, 32, 32), bool)
    truth[:, :, :, :13] = True                                   # 40 % of each crop
    layers = truth[:, :, None].astype(np.float32) + 0.05 * rng.random((4, 2, 8, 32, 32), dtype=np.float32)
    images = rng.random((4, 1, 32, 32), dtype=np.float32)
    best, dice = choose_recipe(layers, np.ones((4, 2), bool), images, truth, thresholds=(0.4, 0.6, 0.8),
                               sigmas=(1.0,))
    assert best == {"threshold": 0.6, "sigma": 1.0}
    assert set(dice) == {(0.4, 1.0), (0.6, 1.0), (0.8, 1.0)}
    assert np.mean(dice[0.6, 1.0]) > np.mean(dice[0.8, 1.0])


def test_otsu_threshold_adapts_to_each_crop_where_a_quantile_cannot():
    from micranet_utils.tutorial.comparison import choose_recipe, micranet_segment

    rng = np.random.default_rng(1)
    truth = np.zeros((3, 1, 32, 32), bool)
    for n, width in enumerate((6, 13, 19)):                      # 19 %, 41 %, 59 % of the crop
        truth[n, 0, :, :width] = True
    layers = truth[:, :, None].astype(np.float32) + 0.05 * rng.random((3, 1, 8, 32, 32), dtype=np.float32)
    images = rng.random((3, 1, 32, 32), dtype=np.float32)
    present = np.ones((3, 1), bool)
    best, dice = choose_recipe(layers, present, images, truth, thresholds=(0.4, 0.6, 0.8, "otsu"), sigmas=(0.5,))
    assert best == {"threshold": "otsu", "sigma": 0.5}
    assert dice["otsu", 0.5][0] > 0.9 > max(dice[q, 0.5][0] for q in (0.4, 0.6, 0.8))
    absent = micranet_segment(layers, np.zeros((3, 1), bool), images, "otsu", 0.5)
    assert not absent.any()                                     # classes predicted absent stay empty


def test_masks_from_instances_keep_the_scores_above_the_threshold_and_choose_threshold():
    from micranet_utils.tutorial.baselines.maskrcnn import masks_from_instances
    from micranet_utils.tutorial.comparison import choose_threshold

    objects = np.zeros((3, 8, 8), bool)
    objects[0, :2], objects[1, 4:], objects[2, :, :2] = True, True, True
    found = [{"labels": np.array([0, 0, 1]), "scores": np.array([0.9, 0.2, 0.6]), "masks": objects}]
    masks = masks_from_instances(found, (8, 8), 2, score_threshold=0.5)
    np.testing.assert_array_equal(masks[0, 0], objects[0])
    np.testing.assert_array_equal(masks[0, 1], objects[2])
    truth = np.stack([objects[0] | objects[1], objects[2]])[None]
    best, dice = choose_threshold(lambda t: masks_from_instances(found, (8, 8), 2, t), truth, (0.1, 0.5))
    assert best == 0.1 and dice[0.1][0] == 1.0 and dice[0.5][0] < 1.0
