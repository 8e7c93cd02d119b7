"""Reading training files in the published layout: lazy crops and image-level labels.

A published training file (``training_01-04-19.hdf5`` and its siblings, or the
demo files of :mod:`micranet_utils.tutorial.demo_data`) holds one or more groups::

    <group>/data    (N, H, W)      image intensities, expected in [0, 1]
                                   ((N, C, H, W) for multi-channel images such as RGB)
    <group>/label   (N, C+1, H, W) one channel per class (instance ids, 0 = none),
                                   the last channel is the foreground (dendrite) mask
    <group>/label.attrs["shapes"]  (N, 2) true (height, width) of each image before padding

MICRA-Net never sees the pixel labels. It is trained on square crops, each with
one yes/no label per class, derived exactly as in the original loader:

* crop positions: rows ``range(0, h, int(size * step))`` and columns
  ``range(0, w, int(size * step))`` of each image's true shape ``(h, w)``
  (``step=0.75`` gives a 25 % overlap);
* a position is kept when the foreground channel sums to at least
  ``foreground_fraction * size**2`` inside the crop (10 % by default);
* crops running past the stored array are zero-padded at the bottom and right;
* the label of class ``c`` is ``count(label[c] > 0) > label_fraction * size**2``
  (more than 5 % of the crop by default).

Unlike the original, which reads the whole file into memory (16 GB and more for
the published data), :class:`CropDataset` reads only what one crop needs, and
opens the HDF5 file inside each :class:`~torch.utils.data.DataLoader` worker.
"""

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..base.errors import DatasetError
from .hdf5 import open_hdf5
from .limits import max_pixels, pixels_refused

SPLITS = ("training", "validation", "testing")
ACTIN_CLASSES = ("rings", "fibers")


def crop_positions(foreground, shape, size, step, foreground_fraction):
    """Crop corners of one image kept by the foreground rule.

    Parameters
    ----------
    foreground : ndarray, shape (H, W)
        Foreground (dendrite) channel as stored, padding included.
    shape : (int, int)
        True (height, width) of the image.
    size : int
        Crop side in pixels.
    step : float
        Stride as a fraction of `size` (stride = ``int(size * step)``).
    foreground_fraction : float
        Minimum sum of `foreground` inside the crop, as a fraction of ``size**2``.

    Returns
    -------
    list of (int, int)
        (row, col) of the top-left corner of each kept crop, row-major.
    """
    stride = int(size * step)
    minimum = foreground_fraction * size * size
    return [(row, col)
            for row in range(0, int(shape[0]), stride)
            for col in range(0, int(shape[1]), stride)
            if foreground[row:row + size, col:col + size].sum() >= minimum]


def pad_crop(array, size):
    """Zero-pad the last two axes of `array` at the bottom and right up to `size`."""
    missing = [(0, 0)] * (array.ndim - 2) + [(0, size - array.shape[-2]), (0, size - array.shape[-1])]
    return np.pad(array, missing) if any(after for _, after in missing) else array


def _shapes(group, path, name, fallback=True):
    """(N, 2) int array of true image shapes; the stored size when the attribute is missing."""
    label = group["label"]
    if "shapes" in label.attrs:
        try:
            shapes = np.asarray(label.attrs["shapes"], dtype=float).reshape(-1, 2)
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: group {name!r}: label.attrs['shapes'] is not an (N, 2) array of "
                               f"image sizes (not numbers)") from None
        if not (np.all(np.isfinite(shapes)) and np.all(shapes >= 1) and np.all(shapes == np.round(shapes))):
            raise DatasetError(f"{path}: group {name!r}: label.attrs['shapes'] holds sizes that are not "
                               "positive whole numbers")
        return shapes.astype(int)
    if not fallback:
        raise DatasetError(f"{path}: group {name!r}: label has no 'shapes' attribute "
                           "(the (N, 2) true image sizes); the original reader needs it")
    return np.tile(label.shape[-2:], (label.shape[0], 1))


class CropDataset(Dataset):
    """Square crops of a published-layout training file, with image-level labels.

    Parameters
    ----------
    path : str or Path
        HDF5 file in the published layout (see the module docstring).
    size : int
        Crop side in pixels (256 for the published Actin model).
    step : float
        Stride between crops as a fraction of `size`; 0.75 gives 25 % overlap.
    foreground_fraction : float
        Keep a crop when its foreground channel sums to at least this fraction of ``size**2``.
    label_fraction : float
        A class is present in a crop when more than this fraction of its pixels are labelled.
    augment : float
        Probability of each augmentation (left-right flip, up-down flip, darkening
        intensity scale, brightening gamma), as in the original; 0 for validation.
    seed : int or None
        Added to torch's per-process seed for the augmentation draws. With a fixed
        ``torch.manual_seed`` runs are reproducible, with or without workers.
    return_masks : bool
        Also return the pixel masks ``label > 0`` of each class (for measuring, never for training).
    normalize : callable or None
        Applied to each float32 image crop, shape (size, size); ``None`` keeps the
        stored values as the original does (they should already be in [0, 1]).

    Attributes
    ----------
    positions : list of (str, int, int, int)
        (group, image index, row, col) of every crop, in the original's order.
    num_classes : int
        Label channels minus the foreground channel (2 for Actin).
    in_channels : int
        Image channels (1, or C for (N, C, H, W) data).
    class_names : tuple of str

    Examples
    --------
    >>> crops = CropDataset("training_demo.hdf5", size=128)      # doctest: +SKIP
    >>> image, target = crops[0]   # (1, 128, 128) float32, (2,) float32 of 0/1
    """

    def __init__(self, path, size=256, step=0.75, foreground_fraction=0.1, label_fraction=0.05,
                 augment=0.0, seed=None, return_masks=False, normalize=None):
        self.path = Path(path)
        if int(size) <= 0 or not 0 < step:
            raise ValueError(f"size must be > 0 and step > 0, got size={size}, step={step}")
        if int(size * step) < 1:
            raise ValueError(f"size * step must be at least 1 pixel, got {size} * {step}")
        if not 0 <= augment <= 1:
            raise ValueError(f"augment is a probability in [0, 1], got {augment}")
        self.size, self.step = int(size), float(step)
        self.foreground_fraction, self.label_fraction = float(foreground_fraction), float(label_fraction)
        self.augment, self.seed, self.return_masks = float(augment), seed, bool(return_masks)
        self.normalize = normalize
        self._file, self._rng, self._pid, self._targets = None, None, None, None
        self.positions, self.num_classes, self.class_names = self._enumerate()

    def _enumerate(self):
        positions, channels, inputs = [], set(), set()
        with open_training_file(self.path) as file:
            names = [str(n) for n in file.attrs.get("class_names", [])]
            for name, group in file.items():
                _require_group(group, self.path, name)
                label = group["label"]
                channels.add(label.shape[1])
                inputs.add(1 if group["data"].ndim == 3 else group["data"].shape[1])
                for index, shape in enumerate(_shapes(group, self.path, name)):
                    foreground = label[index, -1]        # one image, one channel
                    positions += [(name, index, row, col) for row, col in
                                  crop_positions(foreground, shape, self.size, self.step,
                                                 self.foreground_fraction)]
        if len(channels) > 1 or len(inputs) > 1:
            raise DatasetError(f"{self.path}: groups disagree on the number of label channels {sorted(channels)} "
                               f"or image channels {sorted(inputs)}")
        self.in_channels = inputs.pop() if inputs else 1
        num_classes = channels.pop() - 1 if channels else 0
        if len(names) != num_classes:
            names = ACTIN_CLASSES if num_classes == 2 else tuple(f"class{c}" for c in range(num_classes))
        return positions, num_classes, tuple(names)

    def __len__(self):
        return len(self.positions)

    def __repr__(self):
        return (f"CropDataset({str(self.path)!r}, size={self.size}, step={self.step}, "
                f"{len(self)} crops, classes={self.class_names})")

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_file=None, _rng=None, _pid=None)  # h5py handles do not pickle
        return state

    def _handle(self):
        """The open HDF5 file of this process (opened on first use, again after a fork)."""
        if self._pid != os.getpid():
            self._file = open_training_file(self.path)  # an inherited handle is dropped, never used
            base = torch.initial_seed()             # the worker's own seed inside a DataLoader worker
            self._rng = np.random.default_rng(base if self.seed is None else [int(self.seed), base])
            self._pid = os.getpid()
        return self._file

    def read_crop(self, index):
        """Crop `index` as stored: image ([C,] size, size) float32, labels (classes, size, size)."""
        name, k, row, col = self.positions[index]
        group = self._handle()[name]
        rows, cols = slice(row, row + self.size), slice(col, col + self.size)
        image = pad_crop(group["data"][k, ..., rows, cols].astype(np.float32), self.size)
        labels = pad_crop(group["label"][k, :-1, rows, cols], self.size)
        return image, labels

    def crop_target(self, labels):
        """Image-level labels (C,) bool of label crops (C, size, size), by the area rule."""
        return (labels > 0).sum(axis=(-2, -1)) > self.label_fraction * self.size * self.size

    def __getitem__(self, index):
        image, labels = self.read_crop(index)
        target = self.crop_target(labels)
        masks = labels > 0
        if self.normalize is not None:
            image = np.asarray(self.normalize(image), dtype=np.float32)
        if self.augment > 0:
            image, masks = self._augmented(image, masks)
        image = np.ascontiguousarray(image if image.ndim == 3 else image[None])
        out = (torch.from_numpy(image), torch.from_numpy(target.astype(np.float32)))
        if self.return_masks:
            out += (torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)),)
        return out

    def _augmented(self, image, masks):
        """The original augmentations, each with probability ``augment``; masks follow the flips."""
        rng = self._rng
        if rng.random() < self.augment:                         # left-right flip
            image, masks = image[..., ::-1], masks[..., ::-1]
        if rng.random() < self.augment:                         # up-down flip
            image, masks = image[..., ::-1, :], masks[..., ::-1, :]
        if rng.random() < self.augment:                         # darken: factor in (0, 1]
            factor = np.clip(rng.lognormal(0.01, np.sqrt(0.01)), 0, 1)
            image = np.clip(image * factor, 0, 1)
        if rng.random() < self.augment:                         # brighten: gamma in (0, 1]
            gamma = np.clip(rng.lognormal(0.005, np.sqrt(0.005)), 0, 1)
            image = np.clip(image ** gamma, 0, 1)
        return image.astype(np.float32, copy=False), masks

    def targets(self):
        """Image-level labels of every crop, from the label channels only (no image is read).

        Returns
        -------
        ndarray of bool, shape (len(self), num_classes)
        """
        if self._targets is None:
            targets = np.zeros((len(self), self.num_classes), bool)
            by_image = {}
            for n, (name, k, row, col) in enumerate(self.positions):
                by_image.setdefault((name, k), []).append((n, row, col))
            with open_training_file(self.path) as file:
                for (name, k), crops in by_image.items():
                    labels = file[name]["label"][k, :-1] > 0      # one image's class channels
                    for n, row, col in crops:
                        targets[n] = self.crop_target(pad_crop(
                            labels[:, row:row + self.size, col:col + self.size], self.size))
            self._targets = targets
        return self._targets.copy()

    def close(self):
        """Close this process's HDF5 handle (reopened automatically on the next read)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._pid = None, None


def open_training_file(path):
    """Open `path` read-only (see :func:`~micranet_utils.io.hdf5.open_hdf5`), or raise :class:`DatasetError`."""
    return open_hdf5(path, DatasetError, "training file")


def _require_group(group, path, name):
    """Check that one item of the file has the published structure (shapes and ranks only)."""
    where = f"{path}: group {name!r}"
    if not isinstance(group, h5py.Group):
        raise DatasetError(f"{where}: expected a group holding 'data' and 'label', found a dataset")
    for key in ("data", "label"):
        if key not in group or not isinstance(group[key], h5py.Dataset):
            raise DatasetError(f"{where}: missing dataset {key!r} (expected 'data' (N, H, W) and 'label' (N, C, H, W))")
    data, label = group["data"], group["label"]
    if data.ndim not in (3, 4):
        raise DatasetError(f"{where}: 'data' has shape {data.shape}; expected (N, H, W) or (N, C, H, W)")
    if label.ndim != 4 or label.shape[0] != data.shape[0] or label.shape[2:] != data.shape[-2:]:
        raise DatasetError(f"{where}: 'label' has shape {label.shape} but 'data' has {data.shape}; "
                           f"expected (N, C, H, W) = ({data.shape[0]}, C, {data.shape[-2]}, {data.shape[-1]})")
    if label.shape[1] < 2:
        raise DatasetError(f"{where}: 'label' has {label.shape[1]} channel; expected one per class plus the foreground")
    limit = max_pixels()
    for key, item in (("data", data), ("label", label)):   # what one image reads at once
        refused = pixels_refused(int(np.prod(item.shape[1:], dtype=object)), limit,
                                 f"images of {' x '.join(map(str, item.shape[1:]))} values in {key!r}")
        if refused:
            raise DatasetError(f"{where}: {refused}")


def check_training_file(path, require_shapes=True):
    """Check a training file against the published layout and summarise it.

    Reads one image at a time, so it works on files larger than memory.

    Parameters
    ----------
    path : str or Path
        HDF5 file to check.
    require_shapes : bool
        The original reader needs ``label.attrs["shapes"]``; with False a missing
        attribute is accepted and the stored size used instead (as :class:`CropDataset` does).

    Returns
    -------
    dict
        ``{"path", "groups": {name: {"images", "channels", "height", "width", "label_channels",
        "data_dtype", "label_dtype", "data_min", "data_max", "shapes"}}, "images", "num_classes"}``;
        ``"shapes"`` is ``"attribute"`` or ``"missing (stored size used)"``.

    Raises
    ------
    DatasetError
        Naming the file and the group: not HDF5, missing group or dataset, label
        shape not matching data, wrong dtype, NaN or infinity, bad or missing shapes.
    """
    path = Path(path)
    summary = {"path": path, "groups": {}, "images": 0, "num_classes": None}
    with open_training_file(path) as file:
        if len(file) == 0:
            raise DatasetError(f"{path}: the file holds no group (expected groups with 'data' and 'label')")
        for name, group in file.items():
            _require_group(group, path, name)
            summary["groups"][name] = _check_group(group, path, name, require_shapes)
            summary["images"] += group["data"].shape[0]
            classes = group["label"].shape[1] - 1
            if summary["num_classes"] not in (None, classes):
                raise DatasetError(f"{path}: group {name!r} has {classes} classes, earlier groups {summary['num_classes']}")
            summary["num_classes"] = classes
    return summary


def _check_group(group, path, name, require_shapes):
    where = f"{path}: group {name!r}"
    data, label = group["data"], group["label"]
    if data.shape[0] == 0 or 0 in data.shape[-2:]:
        raise DatasetError(f"{where}: 'data' holds no image (shape {data.shape})")
    if data.dtype.kind not in "fiu":
        raise DatasetError(f"{where}: 'data' has dtype {data.dtype}; expected float or integer intensities")
    if label.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: 'label' has dtype {label.dtype}; expected integer ids or 0/1 masks")
    shapes = _shapes(group, path, name, fallback=not require_shapes)
    if shapes.shape[0] != data.shape[0] or (shapes <= 0).any() or (shapes > label.shape[2:]).any():
        raise DatasetError(f"{where}: label.attrs['shapes'] must be (N, 2) sizes within {label.shape[2:]}, "
                           f"got {shapes.shape[0]} rows ranging {shapes.min(initial=0)}..{shapes.max(initial=0)}")
    low, high = np.inf, -np.inf
    for k in range(data.shape[0]):
        for key, values in (("data", data[k]), ("label", label[k])):
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                raise DatasetError(f"{where}: '{key}' of image {k} contains NaN or infinity")
        low, high = min(low, float(data[k].min())), max(high, float(data[k].max()))
    return {"images": data.shape[0], "channels": 1 if data.ndim == 3 else data.shape[1],
            "height": data.shape[-2], "width": data.shape[-1],
            "label_channels": label.shape[1], "data_dtype": str(data.dtype), "label_dtype": str(label.dtype),
            "data_min": low, "data_max": high,
            "shapes": "attribute" if "shapes" in label.attrs else "missing (stored size used)"}


def find_split_files(folder):
    """Find the training, validation and (optional) testing files in `folder`.

    Matches ``training_*.hdf5``, ``validation_*.hdf5`` and ``testing_*.hdf5``, as
    in the published ``training_01-04-19.hdf5`` or the demo ``training_demo.hdf5``.

    Returns
    -------
    dict
        ``{"training": Path, "validation": Path, "testing": Path or None}``

    Raises
    ------
    DatasetError
        When training or validation is missing, or a split matches several files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder")
    found = {}
    for split in SPLITS:
        matches = sorted(folder.glob(f"{split}_*.hdf5"))
        if len(matches) > 1:
            raise DatasetError(f"{folder}: several {split} files ({', '.join(m.name for m in matches)}); "
                               "keep one per folder")
        if not matches and split != "testing":
            raise DatasetError(f"{folder}: no {split}_*.hdf5 file (expected e.g. {split}_01-04-19.hdf5)")
        found[split] = matches[0] if matches else None
    return found
