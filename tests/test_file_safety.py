"""Never a silent wrong result, file by file: what a file declares is checked before it is used.

1. HDF5 files that reach outside themselves (external links, external storage,
   virtual datasets, soft links to nothing), FIFOs given as HDF5 files;
2. sizes declared far beyond what the file holds (TIFF, PNG, HDF5);
3. interleaved TIFF samples that are not alpha;
4. zoo parameters and weights that cannot be right;
5. compressed archives cut short;
6. temporary files left by a killed writer.
"""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from micranet_utils.analysis.ensemble import ensemble_members, load_ensemble
from micranet_utils.base.errors import DatasetError, ZooError
from micranet_utils.cli import main
from micranet_utils.io.checkpoints import read_training_state, save_checkpoint
from micranet_utils.io.training_files import CropDataset, check_training_file
from micranet_utils.io.zoo import list_models, load_zoo, read_group, save_zoo
from micranet_utils.model.network import MICRANet
from micranet_utils.tutorial.baselines.ilastik import extract_ilastik_project
from training_data import write_tiny_split

MODEL = "m"
WEIGHT = f"MICRANet/{MODEL}/conv1a.weight"


# ---------------------------------------------------------------- 1. HDF5 reaching outside the file

def _outside(kind, file, where, tmp_path):
    """Replace dataset `where` of the open `file` by the same values kept outside the file."""
    values = file[where][()]
    del file[where]
    other = tmp_path / "elsewhere.hdf5"
    with h5py.File(other, "w") as source:
        source["values"] = values
    if kind == "external link":
        file[where] = h5py.ExternalLink(str(other), "/values")
    elif kind == "external storage":
        raw = tmp_path / "elsewhere.raw"
        raw.write_bytes(np.ascontiguousarray(values).tobytes())
        file.create_dataset(where, shape=values.shape, dtype=values.dtype, external=[(str(raw), 0, raw.stat().st_size)])
    elif kind == "virtual dataset":
        layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
        layout[...] = h5py.VirtualSource(str(other), "values", shape=values.shape)
        file.create_virtual_dataset(where, layout)
    elif kind == "dangling soft link":
        file[where] = h5py.SoftLink("/nowhere/at/all")
    elif kind == "soft link through an external link":
        file["a_door"] = h5py.ExternalLink(str(other), "/")
        file[where] = h5py.SoftLink("/a_door/values")
    return {"external link": "external link", "external storage": "external file",
            "virtual dataset": "virtual dataset", "dangling soft link": "soft link to /nowhere/at/all",
            "soft link through an external link": "external link"}[kind]


KINDS = ["external link", "external storage", "virtual dataset", "dangling soft link",
         "soft link through an external link"]


@pytest.mark.parametrize("kind", KINDS)
def test_zoo_reaching_outside_the_file_is_refused_by_every_reader(tmp_path, kind, capsys):
    path = save_zoo(tmp_path / "my zoo.hdf5", MICRANet(2), {"size": 64}, name=MODEL)
    with h5py.File(path, "a") as file:
        expected = _outside(kind, file, WEIGHT, tmp_path)
    readers = [load_zoo, read_group, list_models, ensemble_members, load_ensemble,
               lambda p: extract_ilastik_project(p, tmp_path / "project.ilp", group="MICRANet")]
    for reader in readers:
        with pytest.raises(ZooError, match=f"my zoo.hdf5: .*{expected}"):
            reader(path)
    code = main(["info", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1 and expected in err
    assert not (tmp_path / "project.ilp").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_training_file_reaching_outside_the_file_is_refused(tmp_path, kind):
    path = write_tiny_split(tmp_path / "training_x.hdf5")
    with h5py.File(path, "a") as file:
        expected = _outside(kind, file, "images/data", tmp_path)
    for reader in (check_training_file, lambda p: CropDataset(p, size=32)):
        with pytest.raises(DatasetError, match=f"training_x.hdf5: .*{expected}"):
            reader(path)


def test_checkpoint_reaching_outside_the_file_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "last.hdf5", MICRANet(2), {"size": 64}, MODEL, state={"epoch": 1})
    with h5py.File(path, "a") as file:
        _outside("external link", file, "training_state/rng/torch", tmp_path)
    with pytest.raises(ZooError, match="last.hdf5: /training_state/rng/torch is an external link"):
        read_training_state(path)


FIFO_READERS = """
import sys
from micranet_utils.base.errors import MicranetError
from micranet_utils.io.training_files import check_training_file
from micranet_utils.io.zoo import load_zoo
for reader in (load_zoo, check_training_file):
    try:
        reader(sys.argv[1])
    except MicranetError as err:
        print(err)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_named_as_hdf5_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "zoo.hdf5"
    os.mkfifo(fifo)
    try:       # in another process: a reader that blocks on the FIFO is killed, not waited for
        done = subprocess.run([sys.executable, "-c", FIFO_READERS, str(fifo)], capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a FIFO named like an HDF5 file blocked")
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("zoo.hdf5: not a regular file" in line for line in lines), done


# ---------------------------------------------------------------- 4. zoo parameters and weights

def _zoo(path, params=None, change=None):
    """A MICRA-Net zoo in the published layout, with `change(state)` applied to its numpy weights."""
    state = {key: value.numpy() for key, value in MICRANet(2).state_dict().items()}
    if change:
        change(state)
    with h5py.File(path, "w") as file:
        group = file.create_group("MICRANet")
        group.attrs["trainer_params"] = json.dumps(params or {"size": 64, "model_params": {"num_classes": 2}})
        for key, value in state.items():
            group.create_dataset(f"{MODEL}/{key}", data=value)
    return path


@pytest.mark.parametrize("params, message", [
    ({"num_classes": 0}, "num_classes is 0, expected a positive whole number"),
    ({"num_classes": -2}, "num_classes is -2"),
    ({"model_params": {"num_classes": 2.5}}, "model_params.num_classes is 2.5"),
    ({"num_classes": "2"}, "num_classes is '2'"),
    ({"num_classes": True}, "num_classes is True"),
    ({"num_input_images": 0}, "num_input_images is 0"),
    ({"size": -64}, "size is -64"),
    ({"class_names": "rings"}, "class_names is 'rings', expected a list of strings"),
    ({"class_names": ["rings", 2]}, "class_names is \\['rings', 2\\]"),
])
def test_zoo_parameters_that_cannot_be_right_are_refused(tmp_path, params, message, capsys):
    path = _zoo(tmp_path / "zoo.hdf5", params)
    with pytest.raises(ZooError, match=f"zoo.hdf5: trainer_params of '/MICRANet': {message}"):
        load_zoo(path)
    assert main(["info", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_zoo_parameters_given_as_whole_floats_are_accepted(tmp_path):
    path = _zoo(tmp_path / "zoo.hdf5", {"size": 64.0, "num_classes": 2.0, "class_names": ["a", "b"]})
    assert load_zoo(path)[0].num_classes == 2


def _as(dtype):
    def change(state):
        state["conv1a.weight"] = state["conv1a.weight"].astype(dtype)
    return change


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.complex64, np.bool_])
def test_weights_that_are_not_real_floats_are_refused(tmp_path, dtype):
    path = _zoo(tmp_path / "zoo.hdf5", change=_as(dtype))
    with pytest.raises(ZooError, match="zoo.hdf5: .*conv1a.weight'? (is stored as|has dtype)"):
        load_zoo(path)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float16_and_float64_weights_are_loaded_as_float32(tmp_path, dtype):
    stored = {}
    path = _zoo(tmp_path / "zoo.hdf5", change=lambda state: (_as(dtype)(state), stored.update(state)))
    model, _ = load_zoo(path)
    weight = model.state_dict()["conv1a.weight"]
    assert weight.dtype == torch.float32
    assert torch.equal(weight, torch.from_numpy(stored["conv1a.weight"].astype(np.float32)))


@pytest.mark.parametrize("key, value, message", [
    ("bnorm1a.running_var", -1.0, "BatchNorm variance\\) has negative values"),
    ("bnorm1a.running_mean", np.inf, "NaN or infinite"),
    ("linear1.weight", np.nan, "NaN or infinite"),
])
def test_broken_weights_are_refused_naming_the_tensor(tmp_path, key, value, message):
    def change(state):
        state[key] = state[key].copy()
        state[key].flat[0] = value
    path = _zoo(tmp_path / "zoo.hdf5", change=change)
    for reader in (load_zoo, read_group):
        with pytest.raises(ZooError, match=f"zoo.hdf5: weight '/MICRANet/{MODEL}/{key}' .*{message}"):
            reader(path)
