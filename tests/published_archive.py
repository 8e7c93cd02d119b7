"""A small stand-in for the published MICRA-Net files, in their exact layout, for offline tests.

Development and CI machines have no network, so the published path (``micranet
download``, the zoos, the lessons' ``DATASET = "actin"`` branches) is exercised
against this stand-in, served on 127.0.0.1 (see ``tests/http_server.py``)
through ``MICRANET_BASE_URL``. It mirrors what the original code reads
(reference §3, §10; the original loaders are cited per item):

``MICRA-Net.tar.gz`` (top folder ``MICRA-Net/``)
    ``models/ActinModelZoo.hdf5``
        ``MICRANet`` (Actin ``train.py``: ``trainer_params`` with ``size`` at the
        top and ``model_params.{num_classes, num_input_images}`` nested),
        ``UNet`` (Actin ``baseline/UNet/train.py``: ``model_params.{in_channels,
        out_channels, depth, number_filter}``) and ``MaskRCNN`` (Actin
        ``baseline/MaskRCNN/train.py``: torchvision's ResNet-50 FPN Mask R-CNN,
        ``model_params`` with ``num_classes`` 3, ``pretrained``,
        ``pretrained_backbone``, ``min_size``, ``max_size``, ``image_mean``,
        ``image_std``); each ARCH -> one model ``"%Y%m%d-%H%M%S_<seed>"`` -> weights.
    ``models/CTCModelZoo.hdf5``
        ``MICRANet``, flat ``trainer_params`` (``num_classes`` 6).
    ``models/EMModelZoo.hdf5``
        ``MICRANet-<S>`` for S in 2:1, 1:1, 1:2, 1:5, 1:8, 1:16 (EM ``predict.py``),
        flat ``trainer_params`` and ``class_thresholds`` (one per class).
    ``models/PVivaxModelZoo.hdf5``
        ``MICRANet-naive`` (ARCH -> model -> weights) and ``MICRANet-finetuned``
        (ARCH -> model -> fold -> weights, an ensemble; P. vivax ``predict.py``),
        flat ``trainer_params`` (``num_input_images`` 3) and ``class_thresholds``.
    ``datasets/{training,validation,testing}_01-04-19.hdf5``
        Actin training layout (Actin ``loader.py``): groups of ``data`` (N, H, W)
        float32 and ``label`` (N, 3, H, W) with ``attrs["shapes"]``; the images
        are the demo's synthetic STED-like ones, 256 px, a few per split.
``MICRA-Net/models-ilastik/ActinModelZoo-ilastik.hdf5``, ``CTCModelZoo-ilastik.hdf5``
    Separate downloads; groups ``Ilastik`` and ``Ilastik-FS`` (``baseline/Ilastik/extract.py``)
    holding a stand-in Ilastik project (its usual top-level entries, no classifier).

MNIST is not in the archive: its weights live in the original repository
(``src/MNIST/pretrained``), not in ``models/`` (reference §10).

What differs from the real files, on purpose: the weights are random (one
random sign per weight times the scale of the layer's default initialisation;
the MICRA-Nets' last layer is positive, so that they call every class present
and the maps and masks downstream are not empty; the Mask R-CNN's are the
constant weights of a fresh BatchNorm and zeros elsewhere), and every array is stored with HDF5's gzip filter, which readers
do not see, so that the archive stays under a few MB. The ``trainer_params``
of the CTC, EM and P. vivax zoos hold the keys their loaders use; the rest of
their published contents is not documented (reference §3a: unverified).
Nothing here asserts a score.
"""

import io
import json
import tarfile

import h5py
import numpy as np
import torch

from micranet_utils.model.network import MICRANet
from micranet_utils.tutorial.demo_data import synth_split

BUCKET = "/flclab-micranet"
ARCHIVE_URL = f"{BUCKET}/MICRA-Net.tar.gz"
ILASTIK_URLS = {"ActinModelZoo-ilastik.hdf5": f"{BUCKET}/MICRA-Net/models-ilastik/ActinModelZoo-ilastik.hdf5",
                "CTCModelZoo-ilastik.hdf5": f"{BUCKET}/MICRA-Net/models-ilastik/CTCModelZoo-ilastik.hdf5"}
MODEL_NAME = "20190401-101112_42"          # "%Y%m%d-%H%M%S_<seed>", as the original names its models
EM_SUPERVISIONS = ("2:1", "1:1", "1:2", "1:5", "1:8", "1:16")
PVIVAX_FOLDS = ("0", "1", "2")
CLASS_THRESHOLD = 0.5
DATASET_DATE = "01-04-19"
SPLIT_IMAGES = {"training": 12, "validation": 4, "testing": 4}
IMAGE_SIZE = 256
"""The contents, for the tests' expectations."""

ZOOS = {"actin": ("ActinModelZoo.hdf5", "MICRANet"), "ctc": ("CTCModelZoo.hdf5", "MICRANet"),
        "em": ("EMModelZoo.hdf5", "MICRANet-1:5"), "pvivax": ("PVivaxModelZoo.hdf5", "MICRANet-finetuned")}
"""Data set -> (zoo file, default group), as the original predict scripts choose them."""

_COMPRESS = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def _actin_params():
    """trainer_params as the original Actin ``train.py`` writes them (reference §3a)."""
    return {"model_name": MODEL_NAME, "restore-from": None, "freeze": False, "savefolder": "./MICRA-Net/Results",
            "datetime": MODEL_NAME.split("_")[0], "dry_run": False, "size": 256, "seed": 42, "lr": 0.001,
            "epochs": 250, "cuda": True, "data_aug": 0.5, "step": 0.75, "pos_weight": [3.3, 1.6],
            "hdf5_training_path": f"./MICRA-Net/datasets/training_{DATASET_DATE}.hdf5",
            "hdf5_validation_path": f"./MICRA-Net/datasets/validation_{DATASET_DATE}.hdf5",
            "hdf5_testing_path": f"./MICRA-Net/datasets/training_{DATASET_DATE}.hdf5",
            "dataloader_params": {"shuffle": True, "num_workers": 4, "pin_memory": True, "drop_last": True,
                                  "batch_size": 64},
            "model_params": {"num_classes": 2, "num_input_images": 1},
            "scheduler": {"patience": 10, "threshold": 0.01, "min_lr": 1e-05, "factor": 0.1, "verbose": True}}


def _baseline_params(model_params, batch_size=32):
    """trainer_params of the original Actin U-Net and Mask R-CNN ``train.py``."""
    params = _actin_params()
    for key in ("restore-from", "freeze"):
        params.pop(key)
    params.update(lr=1e-4, epochs=700, pos_weight=[1.0], adjust_pos_weight=False, model_params=model_params)
    params["dataloader_params"]["batch_size"] = batch_size
    return params


def _flat_params(num_classes, in_channels):
    """Flat trainer_params (CTC, EM, P. vivax): the keys their predict scripts pass to MICRANet."""
    return {"model_name": MODEL_NAME, "size": 512, "seed": 42, "num_classes": num_classes,
            "num_input_images": in_channels, "lr": 0.001, "data_aug": 0.5, "step": 0.75}


def random_sign_state(model, seed):
    """A state_dict for `model` (built on the ``meta`` device is enough): random signs, fresh BatchNorms.

    Each weight and bias is a random sign times its layer's default
    initialisation scale, 1 / sqrt(fan-in); BatchNorms keep the statistics of a
    fresh layer. Low-entropy numbers compress well, and the network is still a
    generic random network.
    """
    rng = np.random.default_rng(seed)
    state = {}
    for prefix, module in model.named_modules():
        local = module.state_dict(keep_vars=True) if not list(module.children()) else {}
        batchnorm = isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        fan_in = int(np.prod(local["weight"].shape[1:])) if "weight" in local and local["weight"].ndim > 1 else 1
        for name, value in local.items():
            key, shape = f"{prefix}.{name}" if prefix else name, tuple(value.shape)
            dtype = np.dtype(str(value.dtype).replace("torch.", ""))
            if batchnorm:
                state[key] = np.full(shape, 1 if name in ("weight", "running_var") else 0, dtype)
            else:
                signs = rng.integers(0, 2, size=shape, dtype=np.int8) * 2 - 1
                state[key] = (signs / np.sqrt(fan_in)).astype(dtype)
    assert list(state) == list(model.state_dict()), "every weight, in the model's order"
    return state


class _Constant:
    """A weight whose every value is `fill`: written as an HDF5 fill value, taking no space."""

    def __init__(self, shape, fill, dtype):
        self.shape, self.fill, self.dtype = tuple(shape), fill, str(dtype).replace("torch.", "")


def _maskrcnn_fill(key):
    """A fresh BatchNorm's weight and variance are 1; every other Mask R-CNN weight is 0 here."""
    batchnorm = ".bn" in key or ".downsample.1." in key or key.startswith("backbone.body.bn1")
    return 1 if batchnorm and key.endswith(("weight", "running_var")) else 0


def _write_weights(group, state):
    for key, value in state.items():
        if isinstance(value, _Constant):
            chunked = {"chunks": True, **_COMPRESS} if value.shape else {}
            group.create_dataset(key, shape=value.shape, dtype=value.dtype, fillvalue=value.fill, **chunked)
        else:
            group.create_dataset(key, data=value, **(_COMPRESS if value.ndim else {}))


def _write_arch(file, arch, params, models, class_thresholds=None):
    """One architecture group: ``attrs`` and ``{model: state}`` or ``{model: {fold: state}}``."""
    group = file.create_group(arch)
    group.attrs["trainer_params"] = json.dumps(params, sort_keys=True, indent=4)
    if class_thresholds is not None:
        group.attrs["class_thresholds"] = np.asarray(class_thresholds, dtype=np.float64)
    for name, content in models.items():
        node = group.create_group(name)
        if all(isinstance(v, dict) for v in content.values()):
            for fold, state in content.items():
                _write_weights(node.create_group(fold), state)
        else:
            _write_weights(node, content)


def _micranet(num_classes, in_channels, seed):
    """Random MICRA-Net weights whose classifier calls every class present (see the module notes)."""
    with torch.device("meta"):
        state = random_sign_state(MICRANet(num_classes, in_channels), seed)
    state["linear1.weight"] = np.abs(state["linear1.weight"])      # features are >= 0 (ReLU, max pool)
    state["linear1.bias"] = np.full_like(state["linear1.bias"], 0.5)
    return state


def _hdf5_bytes(write):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as file:
        write(file)
    return buffer.getvalue()


def actin_zoo(with_baselines=True):
    """``ActinModelZoo.hdf5``: ``MICRANet`` (+ ``UNet`` and ``MaskRCNN``), as bytes."""
    def write(file):
        _write_arch(file, "MICRANet", _actin_params(), {MODEL_NAME: _micranet(2, 1, 1)})
        if not with_baselines:
            return
        from micranet_utils.tutorial.baselines.maskrcnn import ORIGINAL, build_maskrcnn
        from micranet_utils.tutorial.baselines.unet import ACTIN_MODEL_PARAMS, UNet

        with torch.device("meta"):
            unet = UNet(**ACTIN_MODEL_PARAMS)
        _write_arch(file, "UNet", _baseline_params(dict(ACTIN_MODEL_PARAMS)),
                    {MODEL_NAME: random_sign_state(unet, 2)})
        config = {k: v for k, v in ORIGINAL.items() if k not in ("backbone",)}
        with torch.device("meta"):        # shapes only: no 170 MB of random initialisation
            maskrcnn = build_maskrcnn(num_classes=2, in_channels=1, backbone="resnet50", **config)
        state = {k: _Constant(v.shape, _maskrcnn_fill(k), v.dtype) for k, v in maskrcnn.state_dict().items()}
        model_params = {"num_classes": 2 + 1, "num_input_images": 1, "pretrained": False,
                        "pretrained_backbone": False, "min_size": 256, "max_size": 256,
                        "image_mean": [0.0110], "image_std": [0.0212]}
        _write_arch(file, "MaskRCNN", _baseline_params(model_params), {MODEL_NAME: state})
    return _hdf5_bytes(write)


def ctc_zoo():
    return _hdf5_bytes(lambda file: _write_arch(file, "MICRANet", _flat_params(6, 1),
                                                {MODEL_NAME: _micranet(6, 1, 3)}))


def em_zoo():
    def write(file):
        for k, supervision in enumerate(EM_SUPERVISIONS):
            _write_arch(file, f"MICRANet-{supervision}", _flat_params(1, 1), {MODEL_NAME: _micranet(1, 1, 10 + k)},
                        class_thresholds=[CLASS_THRESHOLD])
    return _hdf5_bytes(write)


def pvivax_zoo():
    def write(file):
        params = _flat_params(1, 3)
        _write_arch(file, "MICRANet-naive", params, {MODEL_NAME: _micranet(1, 3, 20)},
                    class_thresholds=[CLASS_THRESHOLD])
        folds = {fold: _micranet(1, 3, 21 + k) for k, fold in enumerate(PVIVAX_FOLDS)}
        _write_arch(file, "MICRANet-finetuned", params, {MODEL_NAME: folds}, class_thresholds=[CLASS_THRESHOLD])
    return _hdf5_bytes(write)


def training_file(split, seed=0):
    """One split in the published Actin training layout (two groups), as bytes."""
    images, labels, shapes = synth_split(seed, split, SPLIT_IMAGES[split], IMAGE_SIZE)
    half = (len(images) + 1) // 2

    def write(file):
        for name, part in (("2019-01-04_a", slice(0, half)), ("2019-01-04_b", slice(half, None))):
            group = file.create_group(name)
            group.create_dataset("data", data=images[part], **_COMPRESS)
            label = group.create_dataset("label", data=labels[part], **_COMPRESS)
            label.attrs["shapes"] = shapes[part]
    return _hdf5_bytes(write)


def ilastik_zoo(group_name):
    """A zoo holding a stand-in Ilastik project (its usual top-level entries) in `group_name`."""
    def write(file):
        project = file.create_group(group_name)
        project.create_dataset("ilastikVersion", data=b"1.3.2")
        project.create_dataset("workflowName", data=b"Pixel Classification")
        project.create_group("Input Data")
        project.create_group("FeatureSelections")
        classification = project.create_group("PixelClassification")
        classification.create_dataset("LabelNames", data=[b"rings", b"fibers", b"background"])
    return _hdf5_bytes(write)


def archive_members():
    """Path inside ``MICRA-Net/`` -> bytes, for the archive."""
    members = {"models/ActinModelZoo.hdf5": actin_zoo(), "models/CTCModelZoo.hdf5": ctc_zoo(),
               "models/EMModelZoo.hdf5": em_zoo(), "models/PVivaxModelZoo.hdf5": pvivax_zoo()}
    for split in SPLIT_IMAGES:
        members[f"datasets/{split}_{DATASET_DATE}.hdf5"] = training_file(split)
    return members


def make_tar(members, top="MICRA-Net/"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(top + name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def published_files():
    """URL path -> bytes: everything ``micranet download all`` fetches, for ``FileServer``."""
    files = {ARCHIVE_URL: make_tar(archive_members())}
    files[ILASTIK_URLS["ActinModelZoo-ilastik.hdf5"]] = ilastik_zoo("Ilastik")
    files[ILASTIK_URLS["CTCModelZoo-ilastik.hdf5"]] = ilastik_zoo("Ilastik-FS")
    return files
