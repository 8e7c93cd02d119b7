"""Helpers for the MICRA-Net tutorial.

MICRA-Net (Bilodeau et al., Nature Machine Intelligence 2022) is a small CNN
trained with image-level labels only; Grad-CAM maps from all of its layers are
combined to segment, detect and count structures in microscopy images.
The lessons in ``notebooks/`` show the ideas; this package holds the code they share.

Names that need PyTorch are imported on first use, so that light commands
(``micranet download``, ``micranet --help``) start at once.
"""

import importlib

from .datasets import DATASETS, DatasetInfo, get_dataset
from .errors import DatasetError, DownloadError, ImageError, MicranetError, ZooError

__version__ = "0.1.0"

_LAZY = {
    "LAYERS": "network", "MICRANet": "network", "count_parameters": "network",
    "load_zoo": "zoo", "save_zoo": "zoo", "list_models": "zoo",
    "local_maps": "gradcam", "predicted": "gradcam",
    "segment": "recipes", "detect": "recipes", "count": "recipes", "RECIPES": "recipes",
    "read_image": "images", "normalize_intensity": "images",
    "CropDataset": "data", "check_training_file": "data", "find_split_files": "data",
    "ensure_demo": "demo", "generate_demo": "demo", "generate_blobs": "demo",
    "train": "training", "resume": "training", "ensure_demo_model": "training",
    "dice": "metrics", "iou": "metrics", "detection_scores": "metrics", "count_error": "metrics",
    "check_channels": "images", "make_dataset": "inhouse", "validate_folder": "inhouse",
    "recalibrate_batchnorm": "batchnorm",
}
_SUBMODULES = {"network", "zoo", "download", "transfer", "demo", "data", "training", "gradcam",
               "recipes", "metrics", "images", "predict", "viewer", "baselines", "comparison",
               "inhouse", "lessons", "files", "cli", "batchnorm", "batching",
               "checkpoints", "training_loop", "thresholds", "detection", "demo_images", "inhouse_check",
               "ensemble"}

__all__ = ["DATASETS", "DatasetInfo", "get_dataset", "MicranetError", "ZooError", "DatasetError",
           "ImageError", "DownloadError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'micranet_utils' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
