"""Tiny training files in the published layout, written by the training tests themselves."""

import h5py
import numpy as np


def write_tiny_split(path, n_images=4, side=64, seed=0, always=None, never=None):
    """Write a small published-layout file: 2 classes plus an all-ones foreground channel.

    Class 0 ("rings") fills the left part of some images, class 1 ("fibers")
    the top part of others; the image is brighter where a class is present, so a
    network can learn them. Crops of 32 px with step 0.75 give 9 crops per image.

    Parameters
    ----------
    path : Path
    n_images, side, seed : int
    always, never : int, optional
        Make this class present everywhere / nowhere (to test the balance checks).
    """
    rng = np.random.default_rng(seed)
    data = rng.uniform(0, 0.2, (n_images, side, side)).astype(np.float32)
    label = np.zeros((n_images, 3, side, side), np.uint16)
    label[:, 2] = 1
    for k in range(n_images):
        width = int(rng.integers(side // 4, side))
        if k % 2 == 0:
            label[k, 0, :, :width] = 1 + k
        else:
            label[k, 1, :width, :] = 1 + k
    if always is not None:
        label[:, always] = 1
    if never is not None:
        label[:, never] = 0
    data += 0.5 * (label[:, 0] > 0) + 0.3 * (label[:, 1] > 0)
    return write_images(path, data, label)


def write_images(path, data, label):
    """Write square images (N, side, side) and labels (N, C + 1, side, side) as one group; returns `path`."""
    with h5py.File(path, "w") as file:
        group = file.create_group("images")
        group.create_dataset("data", data=np.clip(data, 0, 1))
        group.create_dataset("label", data=label)
        group["label"].attrs["shapes"] = np.tile(data.shape[1:], (len(data), 1))
    return path


def write_tiny_folder(folder, n_train=6, n_valid=2, seed=0, **kwargs):
    """training_tiny.hdf5 and validation_tiny.hdf5 in `folder`; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tiny_split(folder / "training_tiny.hdf5", n_train, seed=seed, **kwargs)
    write_tiny_split(folder / "validation_tiny.hdf5", n_valid, seed=seed + 100)
    return folder


TINY = dict(size=32, batch_size=8, epochs=2, lr_patience=1, num_workers=0, progress=False)
"""Settings that train on the tiny files in about a second."""
