import json

import h5py
import numpy as np
import pytest
import torch

from micranet_utils.model.network import MICRANet
from micranet_utils.base.errors import ZooError
from micranet_utils.io.zoo import list_models, load_zoo, save_zoo
from micranet_utils.io.zoo import read_group
from original_network import original_logits

# trainer_params as the original Actin train.py writes them (example values)
ACTIN_PARAMS = {
    "model_name": "20190401-101112_42", "restore-from": None, "freeze": False,
    "savefolder": "./MICRA-Net/Results", "datetime": "20190401-101112", "dry_run": False,
    "size": 256, "seed": 42, "lr": 0.001, "epochs": 250, "cuda": False, "data_aug": 0.5,
    "step": 0.75, "pos_weight": [3.3, 1.6],
    "dataloader_params": {"shuffle": True, "num_workers": 4, "pin_memory": True,
                          "drop_last": True, "batch_size": 64},
    "model_params": {"num_classes": 2, "num_input_images": 1},
    "scheduler": {"patience": 10, "threshold": 0.01, "min_lr": 1e-05, "factor": 0.1, "verbose": True},
}


def write_published_layout(path, state, params=ACTIN_PARAMS, group="MICRANet", name="20190401-101112_42"):
    """Write a zoo the way the original save_ckpt does: h5py, one dataset per key."""
    with h5py.File(path, "a") as file:
        arch = file.create_group(group)
        arch.attrs["trainer_params"] = json.dumps(params, sort_keys=True, indent=4)
        node = arch.create_group(name)
        for key, value in state.items():
            node.create_dataset(key, data=value.cpu().numpy())
    return path


def test_published_layout_loads_strictly_and_gives_original_logits(tmp_path, random_model):
    path = write_published_layout(tmp_path / "ActinModelZoo.hdf5", random_model.state_dict())
    model, params = load_zoo(path)
    assert params["size"] == 256 and params["pos_weight"] == [3.3, 1.6]
    x = torch.rand(2, 1, 256, 256)
    with torch.no_grad():
        ours = model(x)
        theirs = original_logits(random_model.state_dict(), x, size=256)
    assert not model.training
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_round_trip_is_exact(tmp_path, random_model):
    path = save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 256, "seed": 7})
    model, params = load_zoo(path)
    for key, value in random_model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert params["model_params"] == {"num_classes": 2, "num_input_images": 1}
    assert "num_classes" not in params  # never duplicated at the top level
    with h5py.File(path) as file:
        (name,) = file["MICRANet"].keys()
    assert name.endswith("_7")


def test_save_keeps_other_groups_and_replaces_own(tmp_path, random_model):
    path = tmp_path / "zoo.hdf5"
    with h5py.File(path, "w") as file:
        file.create_group("UNet").attrs["trainer_params"] = "{}"
    save_zoo(path, random_model, {"size": 256}, name="first")
    save_zoo(path, random_model, {"size": 256}, name="second")
    assert list_models(path) == {"MICRANet": ["second"], "UNet": []}


def test_save_failure_leaves_previous_file_intact(tmp_path, random_model):
    path = save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 256}, name="good")
    before = path.read_bytes()
    with pytest.raises(ValueError):
        save_zoo(path, random_model, {"no_size": True})
    with pytest.raises(TypeError):
        save_zoo(path, random_model, {"size": 256, "bad": object()}, name=object())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["zoo.hdf5"]


def test_other_datasets_flat_params_and_thresholds(tmp_path):
    model = MICRANet(num_classes=1, in_channels=3).eval()
    path = tmp_path / "PVivaxModelZoo.hdf5"
    write_published_layout(path, model.state_dict(), params={"num_classes": 1, "num_input_images": 3, "size": 512},
                           group="MICRANet-naive")
    with h5py.File(path, "a") as file:
        file["MICRANet-naive"].attrs["class_thresholds"] = np.array([0.4])
    loaded, params = load_zoo(path)
    assert loaded.in_channels == 3 and params["class_thresholds"] == [0.4]


def test_ensemble_member_chosen_by_path(tmp_path):
    model = MICRANet(num_classes=1, in_channels=3)
    path = tmp_path / "zoo.hdf5"
    with h5py.File(path, "w") as file:
        arch = file.create_group("MICRANet-finetuned")
        arch.attrs["trainer_params"] = json.dumps({"num_classes": 1, "num_input_images": 3, "size": 512})
        for fold in ("0", "1"):
            node = arch.create_group(f"model/{fold}")
            for key, value in model.state_dict().items():
                node.create_dataset(key, data=value.numpy())
    with pytest.raises(ZooError, match="ensemble"):
        load_zoo(path)
    loaded, _ = load_zoo(path, name="model/1")
    assert loaded.num_classes == 1


def test_several_models_must_be_named(tmp_path, random_model):
    path = write_published_layout(tmp_path / "zoo.hdf5", random_model.state_dict(), name="a")
    with h5py.File(path, "a") as file:
        file["MICRANet"].copy("a", "b")
    with pytest.raises(ZooError, match=r"2 models \(a, b\)"):
        load_zoo(path)
    assert load_zoo(path, name="b")[0].num_classes == 2


def test_read_group_gives_the_stored_weights_of_any_architecture(tmp_path):
    # a non-MICRA-Net group (as the baselines write): read_group builds no model
    state = {"down.0.weight": torch.randn(4, 1, 3, 3), "down.0.bias": torch.arange(4, dtype=torch.int64)}
    params = {"size": 64, "model_params": {"depth": 4}}
    path = write_published_layout(tmp_path / "zoo.hdf5", state, params=params, group="UNet", name="u")
    read, read_params = read_group(path, group="UNet")
    assert read.keys() == state.keys()
    for key, value in state.items():
        assert read[key].dtype == value.dtype and torch.equal(read[key], value), key
    assert read_params == params


def test_read_group_reads_what_load_zoo_loads(tmp_path, random_model):
    path = save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 256}, name="m", class_thresholds=[0.3, 0.6])
    state, params = read_group(path)
    model, load_params = load_zoo(path)
    assert params == load_params and params["class_thresholds"] == [0.3, 0.6]
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key


def test_read_group_errors_name_the_file_and_the_choices(tmp_path, random_model):
    path = write_published_layout(tmp_path / "zoo.hdf5", random_model.state_dict(), name="a")
    with h5py.File(path, "a") as file:
        file["MICRANet"].copy("a", "b")
    with pytest.raises(ZooError, match=r"zoo.hdf5: no group 'UNet'; groups in the file: MICRANet"):
        read_group(path, group="UNet")
    with pytest.raises(ZooError, match=r"zoo.hdf5: holds 2 models \(a, b\)"):
        read_group(path)
    with pytest.raises(ZooError, match=r"no model named 'c'; available: a, b"):
        read_group(path, name="c")
    assert read_group(path, name="b")[0].keys() == random_model.state_dict().keys()


# ---- bad files: each names the file and the problem -------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(ZooError, match="no such model file"):
        load_zoo(tmp_path / "nope.hdf5")


def test_empty_and_text_files(tmp_path):
    empty = tmp_path / "empty.hdf5"
    empty.write_bytes(b"")
    with pytest.raises(ZooError, match="empty.hdf5: empty file"):
        load_zoo(empty)
    text = tmp_path / "notes.hdf5"
    text.write_text("not a model")
    with pytest.raises(ZooError, match="notes.hdf5: not a readable HDF5"):
        load_zoo(text)


def test_truncated_file(tmp_path, random_model):
    path = save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 256})
    data = path.read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="cut.hdf5"):
        load_zoo(cut)


def test_missing_group_and_params(tmp_path, random_model):
    path = tmp_path / "zoo.hdf5"
    with h5py.File(path, "w") as file:
        file.create_group("UNet")
    with pytest.raises(ZooError, match="no group 'MICRANet'.*UNet"):
        load_zoo(path, group="MICRANet")
    path2 = tmp_path / "noparams.hdf5"
    with h5py.File(path2, "w") as file:
        file.create_group("MICRANet/m")
    with pytest.raises(ZooError, match="noparams.hdf5: .*no 'trainer_params'"):
        load_zoo(path2)


def test_missing_and_misshapen_weights(tmp_path, random_model):
    state = random_model.state_dict()
    missing = {k: v for k, v in state.items() if k != "conv2a.weight"}
    path = write_published_layout(tmp_path / "missing.hdf5", missing)
    with pytest.raises(ZooError, match="missing 1 weight.*conv2a.weight"):
        load_zoo(path)
    bad = dict(state, **{"conv2a.weight": torch.zeros(64, 32, 5, 5)})
    path = write_published_layout(tmp_path / "shape.hdf5", bad)
    with pytest.raises(ZooError, match=r"conv2a.weight has shape \(64, 32, 5, 5\), expected \(64, 32, 3, 3\)"):
        load_zoo(path)


def test_nan_weights_refused(tmp_path, random_model):
    state = dict(random_model.state_dict())
    state["linear1.bias"] = torch.tensor([float("nan"), 0.0])
    path = write_published_layout(tmp_path / "nan.hdf5", state)
    with pytest.raises(ZooError, match="NaN"):
        load_zoo(path)


def test_atomic_files_get_the_usual_permissions(tmp_path, random_model):
    import os
    import stat

    path = save_zoo(tmp_path / "zoo.hdf5", random_model, {"size": 256})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
