"""Helpers for the MICRA-Net tutorial.

MICRA-Net (Bilodeau et al., Nature Machine Intelligence 2022) is a small CNN
trained with image-level labels only; Grad-CAM maps from all of its layers are
combined to segment, detect and count structures in microscopy images.
The lessons in ``notebooks/`` show the ideas; this package holds the code they share.

The package is layered; each folder may import only from the folders below it::

    cli        the ``micranet`` command: every subcommand's arguments
    tutorial   the lessons' scaffolding: demo data and models, baselines, comparison, viewer
    apps       whole tasks: predict on a folder, make a training set from your folder, describe a zoo,
               export it to bioimage.io
    train      training from image-level labels | analysis  maps -> masks, objects, counts, scores
    io         files: images, ModelZoo HDF5, checkpoints, training HDF5, the published downloads
    model      the network, Grad-CAM of its eight layers, BatchNorm re-estimation
    base       errors, safe file writing, array checks, the table of published data sets

Every public name has one home, its module: ``from micranet_utils.model.gradcam import
local_maps``. The sub-packages and their modules are loaded on first use, so
``import micranet_utils`` and ``micranet --help`` start at once.
"""

import lazy_loader as lazy

__version__ = "0.1.0"

SUBPACKAGES = ("base", "model", "io", "analysis", "train", "apps", "tutorial", "cli")
"""tuple of str: the sub-packages, from the bottom of the stack to its top."""

__getattr__, __dir__, _ = lazy.attach(__name__, submodules=list(SUBPACKAGES))
__all__ = ["__version__", "SUBPACKAGES", *SUBPACKAGES]
