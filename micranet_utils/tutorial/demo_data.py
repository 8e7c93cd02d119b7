"""The demo data sets: synthetic images with pixel truth, in the published training layout.

The published Actin data are gigabytes behind a network connection, and their
pixel labels cannot be checked against anything but themselves. This module
writes a small data set whose truth is known exactly, so that every lesson runs
offline and measures what it claims: STED-like F-actin images with rings and
fibers (:func:`generate_demo`, :func:`ensure_demo`), and blob-like cells for
detection and counting (:func:`generate_blobs`). What an image holds, and why,
is described in :mod:`micranet_utils.tutorial.demo_drawing`, which draws them.

Each image is drawn with rings only, fibers only, both or neither, in equal
numbers, so the image-level labels of the crops are roughly balanced.

Sizes: 512 x 512 images and crops of 128 px in the lessons give several hundred
training crops from a couple of dozen images, enough for MICRA-Net to learn
the task in minutes on a laptop CPU; the published model uses crops of 256.
"""

from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from ..base.checks import non_negative_int, output_folder, positive_int
from ..base.errors import ArgumentError, DatasetError
from ..base.files import atomic_path
from ..io.hdf5 import open_hdf5
from .demo_drawing import (blob_image, DEFAULT_SIZE, PSF_FWHM_PX, synth_actin_image)
from .lessons import is_fast, work_dir


__all__ = ["generate_demo", "ensure_demo", "demo_folder", "demo_parameters", "synth_split", "split_sizes",
           "generate_blobs", "write_blobs", "GENERATOR_VERSION", "SPLITS", "CLASS_NAMES",
           "DEFAULT_N_IMAGES", "FAST_N_IMAGES"]

GENERATOR_VERSION = "1"
SPLITS = ("training", "validation", "testing")
CLASS_NAMES = ("rings", "fibers")
DEFAULT_N_IMAGES = 24
FAST_N_IMAGES = 12


# --------------------------------------------------------------------------- files

def split_sizes(n_images):
    """Number of images per split: `n_images` for training, a third of it (at least 2) for the others."""
    n_images = positive_int("n_images", n_images, 4)      # one image of each label combination
    other = max(2, -(-int(n_images) // 3))
    return {"training": int(n_images), "validation": other, "testing": other}


def _combinations(rng, count):
    """Label combinations (rings, fibers), each of the four equally often, shuffled."""
    combos = [(True, False), (False, True), (True, True), (False, False)] * (count // 4 + 1)
    combos = combos[:count]
    rng.shuffle(combos)
    return combos


def synth_split(seed, split, n_images, size, progress=False):
    """Images and labels of one split, as the published file stores them.

    Returns
    -------
    images : ndarray, float32, shape (N, size, size)
    labels : ndarray, uint8, shape (N, 3, size, size)
    shapes : ndarray, int64, shape (N, 2)
        True (height, width); about one image in four is smaller and zero-padded,
        as images of different sizes are in the published files.
    """
    code = SPLITS.index(split)
    combos = _combinations(np.random.default_rng([seed, code]), n_images)
    images = np.zeros((n_images, size, size), np.float32)
    labels = np.zeros((n_images, 3, size, size), np.uint8)
    shapes = np.full((n_images, 2), size, np.int64)
    for k in tqdm(range(n_images), desc=f"demo {split}", disable=not progress, leave=False):
        rng = np.random.default_rng([seed, code, k])
        image, label = synth_actin_image(rng, size, *combos[k])
        if rng.random() < 0.25:                          # a smaller image, padded like the originals
            shapes[k, rng.integers(2)] = int(size * rng.uniform(0.7, 0.95))
        height, width = shapes[k]
        images[k, :height, :width] = image[:height, :width]
        labels[k, :, :height, :width] = label[:, :height, :width]
    return images, labels, shapes


def _write_split(path, images, labels, shapes, attrs):
    """Write one split in the published layout, in two groups, atomically."""
    half = (len(images) + 1) // 2
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as file:
        file.attrs.update(attrs)
        for name, part in (("demo-a", slice(0, half)), ("demo-b", slice(half, None))):
            group = file.create_group(name)
            group.create_dataset("data", data=images[part])
            label = group.create_dataset("label", data=labels[part], compression="gzip", compression_opts=4,
                                         shuffle=True, chunks=(1, 1) + labels.shape[2:])
            label.attrs["shapes"] = shapes[part]
    return Path(path)


def _demo_attrs(seed, split, n_images, n_training_images, size):
    """Root attributes of a demo file: what made it, so that it can be reused or remade."""
    return {"synthetic": True, "seed": int(seed), "generator": "micranet_utils.tutorial.demo_data",
            "generator_version": GENERATOR_VERSION, "split": split, "n_images": int(n_images),
            "n_training_images": int(n_training_images), "size": int(size), "pixel_size_nm": 20.0,
            "psf_fwhm_px": PSF_FWHM_PX, "class_names": list(CLASS_NAMES)}


def generate_demo(output, seed=0, n_images=None, size=None, progress=True, overwrite=False):
    """Write the demo training, validation and testing files into `output`.

    Parameters
    ----------
    output : str or Path
        Folder; created if needed.
    seed : int
        Same seed, same files (same bytes with the same h5py and HDF5 versions).
    n_images : int, optional
        Training images (default 24); validation and testing get a third as many each.
    size : int, optional
        Image side in pixels (default 512).
    progress : bool
        Show a progress bar.
    overwrite : bool
        Replace demo files already in `output`; without it they are refused
        (:class:`~micranet_utils.base.errors.ArgumentError`) and nothing is written.

    Returns
    -------
    dict
        ``{"training": Path, "validation": Path, "testing": Path}``, files named
        ``training_demo.hdf5`` and so on.

    Examples
    --------
    >>> files = generate_demo("demo", seed=3, n_images=8, size=256)   # doctest: +SKIP
    """
    n_images = positive_int("n_images", DEFAULT_N_IMAGES if n_images is None else n_images, 4)
    size = positive_int("size", DEFAULT_SIZE if size is None else size, 64)
    seed = non_negative_int("seed", seed)
    output = Path(output)
    existing = [output / f"{split}_demo.hdf5" for split in SPLITS if (output / f"{split}_demo.hdf5").exists()]
    if existing and not overwrite:
        raise ArgumentError(f"{existing[0]}: already exists; use --overwrite (overwrite=True) to replace the "
                            "demo files, or another folder")
    output_folder("output", output)
    files = {}
    for split, count in split_sizes(n_images).items():
        images, labels, shapes = synth_split(seed, split, count, size, progress)
        attrs = _demo_attrs(seed, split, count, n_images, size)
        files[split] = _write_split(output / f"{split}_demo.hdf5", images, labels, shapes, attrs)
    return files


def demo_parameters(path):
    """(seed, generator_version, n_training_images, size) stored in a demo file, or None."""
    try:
        with open_hdf5(path, DatasetError, "demo file") as file:
            attrs = file.attrs
            return (int(attrs["seed"]), str(attrs["generator_version"]),
                    int(attrs["n_training_images"]), int(attrs["size"]))
    except (OSError, KeyError, ValueError):
        return None


def demo_folder(work=None, fast=None):
    """Where the lessons keep the demo files: ``<work>/demo``, or ``<work>/demo-fast`` in fast mode.

    Fast and full mode use different folders so that they never replace each
    other's files while a lesson reads them.

    Parameters
    ----------
    work : str or Path, optional
        Default: :func:`micranet_utils.tutorial.lessons.work_dir`.
    fast : bool, optional
        Default: the ``MICRANET_FAST`` setting.
    """

    fast = is_fast() if fast is None else bool(fast)
    return (Path(work) if work is not None else work_dir()) / ("demo-fast" if fast else "demo")


def ensure_demo(folder=None, seed=0, fast=None, progress=True):
    """The demo files in `folder`, generated only when missing or made with other parameters.

    Parameters
    ----------
    folder : str or Path, optional
        Default: :func:`demo_folder` (shared by the lessons). Two processes asking
        for the same files at once both write identical files atomically, so
        readers never see a partial one.
    seed : int
    fast : bool, optional
        Fewer training images (12 instead of 24); default: the ``MICRANET_FAST`` setting.

    Returns
    -------
    dict
        ``{"training": Path, "validation": Path, "testing": Path}``
    """
    if fast is None:
        fast = is_fast()
    folder = Path(folder) if folder is not None else demo_folder(fast=fast)
    n_images = FAST_N_IMAGES if fast else DEFAULT_N_IMAGES
    wanted = (int(seed), GENERATOR_VERSION, n_images, DEFAULT_SIZE)
    files = {split: folder / f"{split}_demo.hdf5" for split in SPLITS}
    if all(demo_parameters(path) == wanted for path in files.values()):
        return files
    return generate_demo(folder, seed=seed, n_images=n_images, progress=progress, overwrite=True)


# --------------------------------------------------------------------------- blobs (detection, counting)

def generate_blobs(n_images, size=256, seed=0, channels=1):
    """A small detection and counting set: blob-like cells with instance and point truth.

    For the Cell Tracking Challenge and P. vivax recipes: bright, textured ellipses
    (cells or parasites) that never overlap, on a noisy background.

    Parameters
    ----------
    n_images : int
    size : int
        Image side in pixels.
    seed : int
        Same seed, same arrays.
    channels : int
        1 (fluorescence-like) or 3 (RGB-like, each channel a different tint).

    Returns
    -------
    images : ndarray, float32, shape (N, C, size, size)
        In [0, 1].
    instances : ndarray, int32, shape (N, size, size)
        0 background, 1..K one id per object.
    points : list of ndarray, float, shape (K, 2)
        Centre (row, col) of each object, in id order (row k is id k + 1).
    """
    if int(n_images) < 1 or int(size) < 32 or int(channels) < 1:
        raise ValueError(f"need n_images >= 1, size >= 32, channels >= 1; got {n_images}, {size}, {channels}")
    results = [blob_image(np.random.default_rng([seed, 7, k]), int(size), int(channels)) for k in range(int(n_images))]
    images, instances, points = zip(*results)
    return np.stack(images), np.stack(instances), list(points)


def write_blobs(path, images, instances, seed=0):
    """Write blobs in the published training layout (one class, whole image as foreground).

    ``data`` is (N, H, W) for one channel and (N, C, H, W) otherwise; ``label`` is
    (N, 2, H, W): instance ids (uint16), then a foreground of ones so that every
    crop is kept by the crop rule. Returns the path.
    """
    images, instances = np.asarray(images, np.float32), np.asarray(instances)
    data = images[:, 0] if images.shape[1] == 1 else images
    label = np.stack([instances.astype(np.uint16), np.ones_like(instances, np.uint16)], axis=1)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as file:
        file.attrs.update({"synthetic": True, "seed": int(seed), "generator": "micranet_utils.tutorial.demo_data.generate_blobs",
                           "generator_version": GENERATOR_VERSION, "class_names": ["object"]})
        group = file.create_group("blobs")
        group.create_dataset("data", data=data)
        group.create_dataset("label", data=label, compression="gzip", shuffle=True)
        group["label"].attrs["shapes"] = np.tile(images.shape[-2:], (len(images), 1))
    return Path(path)


# --------------------------------------------------------------------------- command line


