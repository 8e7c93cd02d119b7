"""Helpers for the MICRA-Net tutorial.

MICRA-Net (Bilodeau et al., Nature Machine Intelligence 2022) is a small CNN
trained with image-level labels only; Grad-CAM maps from all of its layers are
combined to segment, detect and count structures in microscopy images.
The lessons in ``notebooks/`` show the ideas; this package holds the code they share.
"""

from .datasets import DATASETS, DatasetInfo, get_dataset
from .errors import DatasetError, DownloadError, ImageError, MicranetError, ZooError
from .network import LAYERS, MICRANet, count_parameters
from .zoo import list_models, load_zoo, save_zoo

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "DatasetInfo", "get_dataset",
    "MicranetError", "ZooError", "DatasetError", "ImageError", "DownloadError",
    "LAYERS", "MICRANet", "count_parameters",
    "load_zoo", "save_zoo", "list_models",
]
