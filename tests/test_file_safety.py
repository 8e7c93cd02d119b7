"""Never a silent wrong result, file by file: what a file declares is checked before it is used.

1. HDF5 files that reach outside themselves (external links, external storage,
   virtual datasets, soft links to nothing), FIFOs given as HDF5 files;
2. sizes declared far beyond what the file holds (TIFF, PNG, HDF5);
3. interleaved TIFF samples that are not alpha;
4. zoo parameters and weights that cannot be right;
5. compressed archives cut short;
6. temporary files left by a killed writer.
"""

import bz2
import gzip
import io
import json
import lzma
import os
import re
import signal
import subprocess
import sys
import tarfile

import h5py
import numpy as np
import pytest
import tifffile
import torch

from micranet_utils.analysis.ensemble import ensemble_members, load_ensemble
from micranet_utils.base.errors import DatasetError, DownloadError, ImageError, MicranetError, ZooError
from micranet_utils.base.files import remove_stale_temporaries
from micranet_utils.io.archives import safe_extract
from micranet_utils.cli import main
from micranet_utils.io.images import read_image
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


# ---------------------------------------------------------------- 2. declared sizes

def _tiff_declaring(path, height, width):
    """A few hundred bytes of deflate-compressed TIFF whose tags declare height x width pixels."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib", rowsperstrip=16)
    with tifffile.TiffFile(path, mode="r+") as tif:
        for tag, value in (("ImageWidth", width), ("ImageLength", height), ("RowsPerStrip", height)):
            tif.pages[0].tags[tag].overwrite(value)
    return path


def test_tiff_declaring_huge_size_is_refused_before_reading(tmp_path, monkeypatch, capsys):
    path = _tiff_declaring(tmp_path / "bomb.tif", 60000, 60000)
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError, match="bomb.tif: declares 60000 x 60000 values .*MICRANET_MAX_PIXELS"):
        read_image(path)
    small = _tiff_declaring(tmp_path / "small.tif", 16, 16)
    with pytest.raises(ImageError, match="more than the limit of 100"):
        read_image(small, max_pixels=100)
    monkeypatch.setenv("MICRANET_MAX_PIXELS", "255")
    with pytest.raises(ImageError, match="more than the limit of 255"):
        read_image(small)
    assert read_image(small, max_pixels=256).shape == (1, 16, 16)
    monkeypatch.setenv("MICRANET_MAX_PIXELS", "lots")
    with pytest.raises(MicranetError, match="MICRANET_MAX_PIXELS='lots': expected a positive whole number"):
        read_image(small)


def test_png_size_is_checked_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(path)
    with pytest.raises(ImageError, match=r"grey.png: declares 20 x 30 x 1 values \(600 values\)"):
        read_image(path, max_pixels=599)
    assert read_image(path, max_pixels=600).shape == (1, 20, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)        # Pillow's own limit, said as such
    with pytest.raises(ImageError, match="grey.png: .*PIL.Image.MAX_IMAGE_PIXELS"):
        read_image(path)


def test_hdf5_dataset_declaring_too_many_bytes_is_refused(tmp_path, monkeypatch):
    zoo = save_zoo(tmp_path / "zoo.hdf5", MICRANet(2), {"size": 64}, name=MODEL)
    with h5py.File(zoo, "a") as file:                       # 400 TB declared, a few kB on disk
        file.create_dataset("huge", shape=(10 ** 7, 10 ** 7), dtype="f4", chunks=(64, 64), compression="gzip")
    with pytest.raises(ZooError, match=r"zoo.hdf5: dataset /huge .*declares 400,000,000,000,000 bytes.*"
                                       "MICRANET_MAX_DATASET_BYTES"):
        load_zoo(zoo)
    training = write_tiny_split(tmp_path / "training_x.hdf5")
    monkeypatch.setenv("MICRANET_MAX_DATASET_BYTES", "1000")
    with pytest.raises(DatasetError, match="training_x.hdf5: dataset /images/data .*more than the limit of 1,000"):
        check_training_file(training)


def test_training_images_declaring_too_many_pixels_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "training_x.hdf5"
    with h5py.File(path, "w") as file:                      # one 60000 x 60000 image, nothing stored
        group = file.create_group("g")
        group.create_dataset("data", shape=(1, 60000, 60000), dtype="u1", chunks=(1, 256, 256))
        group.create_dataset("label", shape=(1, 3, 60000, 60000), dtype="u1", chunks=(1, 1, 256, 256))
    for reader in (check_training_file, lambda p: CropDataset(p, size=32)):
        with pytest.raises(DatasetError, match="training_x.hdf5: group 'g': declares images of 60000 x 60000 "
                                               "values in 'data'.*MICRANET_MAX_PIXELS"):
            reader(path)


# ---------------------------------------------------------------- 3. TIFF extra samples that are not alpha

@pytest.mark.parametrize("kind, extrasamples, expected", [
    ("four unspecified samples", None, 4),                  # minisblack, ExtraSamples (0, 0, 0)
    ("RGB + unspecified", [0], 4),
    ("RGB + unassociated alpha", [2], 3),
    ("RGB + associated alpha", [1], 3),
])
def test_only_samples_marked_alpha_are_dropped(tmp_path, kind, extrasamples, expected):
    samples = np.stack([np.full((8, 9), 10 * (k + 1), np.uint16) for k in range(4)], axis=-1)
    path = tmp_path / "four.tif"
    if extrasamples is None:
        tifffile.imwrite(path, samples, photometric="minisblack", planarconfig="contig")
    else:
        tifffile.imwrite(path, samples, photometric="rgb", extrasamples=extrasamples)
    image = read_image(path)
    assert image.shape == (expected, 8, 9)
    assert list(image[:, 0, 0]) == [10, 20, 30, 40][:expected]
    if expected == 4:
        assert read_image(path, channel=3)[0, 0, 0] == 40   # --channel 3 is the real fourth channel
    else:
        with pytest.raises(ImageError, match="channel 3 requested but the image has 3"):
            read_image(path, channel=3)


def test_grey_plus_unspecified_sample_keeps_both(tmp_path):
    path = tmp_path / "two.tif"
    samples = np.stack([np.full((8, 9), 5, np.uint8), np.full((8, 9), 7, np.uint8)], axis=-1)
    tifffile.imwrite(path, samples, photometric="minisblack", planarconfig="contig", extrasamples=[0])
    assert list(read_image(path)[:, 0, 0]) == [5, 7]
    tifffile.imwrite(path, samples, photometric="minisblack", planarconfig="contig", extrasamples=[2])
    assert list(read_image(path)[:, 0, 0]) == [5]


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


# ---------------------------------------------------------------- 5. archives cut short

def _tar(members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


MEMBERS = {"MICRA-Net/models/A.hdf5": b"a" * 3000, "MICRA-Net/models/B.hdf5": b"b" * 3000}
WHOLE = _tar(MEMBERS)
FIRST_MEMBER = 512 + 3072                       # header and padded data of A.hdf5 only


@pytest.mark.parametrize("name, data, problem", [
    ("cut between members.tar.gz", gzip.compress(WHOLE[:FIRST_MEMBER]), "incomplete archive"),
    ("cut between members.tar", WHOLE[:FIRST_MEMBER], "incomplete archive"),
    ("cut in the end marker.tar.gz", gzip.compress(WHOLE[:FIRST_MEMBER + 3584 + 512]), "incomplete archive"),
    ("no gzip trailer.tar.gz", gzip.compress(WHOLE)[:-8], "ended before the end-of-stream marker"),
    ("wrong crc.tar.gz", gzip.compress(WHOLE)[:-8] + bytes(4) + gzip.compress(WHOLE)[-4:], "CRC check failed"),
    ("cut.tar.xz", lzma.compress(WHOLE)[:-20], "ended before the end-of-stream marker"),
])
def test_archive_cut_short_is_refused_and_nothing_extracted(tmp_path, name, data, problem):
    archive = tmp_path / name
    archive.write_bytes(data)
    destination = tmp_path / "home" / "tree"
    with pytest.raises(DownloadError, match=f"{re.escape(name)}: .*{problem}"):
        safe_extract(archive, destination, root="MICRA-Net")
    assert not destination.exists() and os.listdir(tmp_path / "home") == []


@pytest.mark.parametrize("compress", [bytes, gzip.compress, bz2.compress, lzma.compress])
def test_whole_archives_are_extracted(tmp_path, compress):
    archive = tmp_path / "whole.tar"
    archive.write_bytes(compress(WHOLE))
    destination = safe_extract(archive, tmp_path / "tree", root="MICRA-Net")
    assert (destination / "models" / "B.hdf5").read_bytes() == MEMBERS["MICRA-Net/models/B.hdf5"]


# ---------------------------------------------------------------- 6. temporaries of killed writers

KILLED_WRITER = """
import os, signal, sys
from micranet_utils.base.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""

RERUN = """
import sys
from micranet_utils.base.files import write_atomic
write_atomic(sys.argv[1], lambda tmp: tmp.write_text("whole"))
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL and process ids are POSIX")
def test_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "history.csv"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    (left,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(".history.csv.") and not target.exists()
    other = tmp_path / ".notes.csv.1-abc.tmp"              # another file's temporary: not touched
    other.write_text("x")
    os.utime(other, (0, 0))
    subprocess.run([sys.executable, "-c", RERUN, str(target)], check=True)
    assert target.read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.csv.1-abc.tmp", "history.csv"]


@pytest.mark.skipif(os.name != "posix", reason="process ids are POSIX")
def test_temporaries_still_being_written_are_kept(tmp_path):
    target = tmp_path / "out.json"
    running = tmp_path / f".out.json.{os.getppid()}-abcd.tmp"     # its process runs
    recent = tmp_path / ".out.json.999999999-abcd.tmp"            # no such process, but written just now
    for path in (running, recent):
        path.write_text("being written")
    os.utime(running, (0, 0))
    assert remove_stale_temporaries(target) == []
    os.utime(recent, (0, 0))
    assert remove_stale_temporaries(target) == [recent]
    assert running.exists()
