"""Turn a folder of your own images and their image-level labels into training files.

Example: ``micranet make-dataset --images lab/ --labels lab/labels.csv --output lab-dataset/``

**Labels.** Either a CSV file whose first column holds the file names (relative
to the images folder; header ``filename``) and one 0/1 column per class (the
header names the classes), or no CSV and one sub-folder per class (a sub-folder
called ``negative`` holds images with none of the classes).

**Checked first.** The whole folder is read and every problem reported, per file,
before anything is written: unreadable, empty, NaN pixels, wrong channel count,
smaller than a crop, missing from the CSV, CSV row without a file, duplicate,
label not 0/1, a class never positive or never negative. Errors stop (exit
status 2); warnings do not. The images folder is only ever read.

**Written.** ``training_<name>.hdf5``, ``validation_<name>.hdf5`` and
``testing_<name>.hdf5`` in the published layout (one group per image, ``data``
``(1, H, W)`` float32 in [0, 1] after per-image percentile normalisation,
``label`` ``(1, K+1, H, W)`` uint8 with ``label.attrs["shapes"]``; file
attribute ``class_names``), plus ``split_<name>.csv`` saying where each image
went. All files appear together at the end, or none do.

**Image labels become pixel labels.** The published files carry one pixel mask
per class, and a crop is called positive for a class when more than 5 % of it is
labelled. Here the class channel ``c`` of an image positive for ``c`` is its
foreground mask (all zeros otherwise). Crops are only kept when at least 10 % of
their pixels are foreground, so every kept crop of an image gets that image's
labels, and crops of empty background are never used. The foreground comes from
a mask folder (same file names; non-zero = foreground), or is computed with
Otsu's threshold on the smoothed image (``foreground="otsu"``), or is the whole
image (``foreground="all"``).
"""

import csv
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from ..base.checks import finite_non_negative, non_negative_int, output_folder, plain_name, spreadsheet_text
from ..base.errors import ArgumentError, DatasetError
from ..base.files import atomic_path
from ..io.images import normalize_intensity, read_image
from ..io.training_files import SPLITS
from .folder_check import foreground_mask, validate_folder

__all__ = ["make_dataset", "write_dataset", "split_images", "check_options"]


def check_options(*, name="inhouse", split=(0.7, 0.15, 0.15), seed=0):
    """Check the options of :func:`make_dataset` before any image is read; returns (name, split, seed).

    `name` must be a plain name (it becomes part of file names: a ``/`` or
    ``..`` would write outside the output folder, or several splits into one
    file); `split` three finite fractions of at least 0, not all 0; `seed` a
    whole number of at least 0.
    """
    name = plain_name("name", name)
    try:
        values = list(split)
    except TypeError:
        raise ArgumentError(f"split must be three fractions, got {split!r}") from None
    if len(values) != 3:
        raise ArgumentError(f"split must be three fractions (training, validation, testing), got {split!r}")
    values = tuple(finite_non_negative(f"split ({part})", value) for part, value in zip(SPLITS, values))
    if sum(values) <= 0:
        raise ArgumentError(f"split: at least one fraction must be above 0, got {values}")
    return name, values, non_negative_int("seed", seed)


def split_images(labels, fractions=(0.7, 0.15, 0.15), seed=0):
    """Assign whole images to training / validation / testing, stratified per class.

    Iterative stratification (Sechidis et al., 2011) over the positives *and*
    the negatives of every class: the rarest of these groups is placed first,
    each of its images going to the split that still wants most of that group
    (ties: the split with most room left, then at random, seeded). Every split
    receives exactly its share of images (at least one when its fraction is
    not zero), so that each class is represented as evenly as the images allow.

    Parameters
    ----------
    labels : array-like, shape (N, K)
        0/1 labels of each image.
    fractions : (float, float, float)
        Share of images for training, validation, testing (normalised to sum 1).
    seed : int

    Returns
    -------
    ndarray of int, shape (N,)
        0 = training, 1 = validation, 2 = testing.
    """
    labels = np.asarray(labels, int).reshape(len(labels), -1)
    fractions = np.asarray(fractions, float)
    n, wanted = len(labels), np.count_nonzero(fractions)
    if fractions.shape != (3,) or (fractions < 0).any() or fractions.sum() <= 0:
        raise DatasetError(f"split must be three non-negative fractions, got {tuple(fractions)}")
    if n < wanted:
        raise DatasetError(f"{n} usable image(s) cannot fill {wanted} splits; add images")
    fractions = fractions / fractions.sum()
    room = np.floor(fractions * n).astype(int)
    room[np.argsort(-(fractions * n - room), kind="stable")[: n - room.sum()]] += 1
    for s in np.flatnonzero((room == 0) & (fractions > 0)):
        room[np.argmax(room)] -= 1
        room[s] += 1
    groups = np.concatenate([labels == 1, labels == 0, np.ones((n, 1), bool)], axis=1)
    wants = fractions[:, None] * groups.sum(axis=0)[None, :]          # (3 splits, groups)
    rng = np.random.default_rng(seed)
    remaining = set(range(n))
    assigned = np.full(n, -1)
    while remaining:
        left = groups[sorted(remaining)].sum(axis=0)
        group = int(np.argmin(np.where(left > 0, left, n + 1)))
        for index in rng.permutation([i for i in sorted(remaining) if groups[i, group]]):
            score = np.where(room > 0, wants[:, group] + 1e-9 * room, -np.inf)
            best = np.flatnonzero(score >= score.max() - 1e-12)
            split = int(rng.choice(best))
            assigned[index] = split
            room[split] -= 1
            wants[split] -= groups[index]
            remaining.discard(int(index))
    return assigned


def make_dataset(images, labels, output, *, masks=None, crop_size=256, split=(0.7, 0.15, 0.15), seed=0,
                 channels=1, channel=None, plane=None, projection=None, foreground="otsu",
                 percentiles=(1.0, 99.8), name="inhouse", progress=True):
    """Check a folder of images, then write training / validation / testing files.

    Parameters
    ----------
    images, labels, masks, crop_size, channels, channel, plane, projection, foreground
        As in :func:`validate_folder` (``labels=None``: class sub-folders).
    output : str or Path
        Folder for the data set files; must not be inside `images`.
    split : (float, float, float)
        Fractions of *images* (not crops) for training, validation and testing.
    seed : int
        Seed of the split; the same folder and seed give the same files.
    percentiles : (float, float) or None
        Per-image normalisation (see :func:`~micranet_utils.io.images.normalize_intensity`);
        ``None`` keeps the values as read (they must already lie in [0, 1]).
    name : str
        Files are ``<split>_<name>.hdf5`` and ``split_<name>.csv``.
    progress : bool
        Show progress bars.

    Returns
    -------
    dict of str to Path
        ``{"training": ..., "validation": ..., "testing": ..., "table": ...}`` (a split
        with fraction 0 is left out).

    Raises
    ------
    DatasetError
        When the folder check finds errors; the message is the full report.
        Nothing is written then, and the images folder is never modified.
    """
    check_options(name=name, split=split, seed=seed)
    report = validate_folder(images, labels, masks=masks, crop_size=crop_size, channels=channels,
                             channel=channel, plane=plane, projection=projection, foreground=foreground,
                             progress=progress)
    if not report.ok:
        raise DatasetError(f"{images}: the folder has problems; nothing was written\n{report}")
    return write_dataset(report, output, images=images, masks=masks, split=split, seed=seed,
                         read_options=dict(channel=channel, plane=plane, projection=projection),
                         foreground=foreground, percentiles=percentiles, name=name, progress=progress)


def write_dataset(report, output, *, images, masks=None, split=(0.7, 0.15, 0.15), seed=0, read_options=None,
                  foreground="otsu", percentiles=(1.0, 99.8), name="inhouse", progress=True):
    """Write the files of :func:`make_dataset` from a clean :class:`Report` (all at once, or nothing)."""
    name, split, seed = check_options(name=name, split=split, seed=seed)
    output = Path(output)
    images = Path(images)
    if not report.ok:
        raise DatasetError(f"{images}: the report has errors; nothing was written")
    output_folder("output", output, inputs=[("images", images), ("masks", masks)])
    records = [r for r in report.records if r.crops > 0]
    if not records:
        raise DatasetError(f"{images}: no image gives a crop with enough foreground; nothing was written")
    assigned = split_images([r.labels for r in records], split, seed)
    used = [s for s in range(3) if (assigned == s).any()]
    paths = {SPLITS[s]: output / f"{SPLITS[s]}_{name}.hdf5" for s in used}
    paths["table"] = output / f"split_{name}.csv"
    for other in output.glob("*_*.hdf5") if output.is_dir() else []:
        if other.name.split("_")[0] in SPLITS and other not in paths.values():
            raise DatasetError(f"{output}: already holds {other.name}; use another --name or an empty folder")
    attrs = dict(class_names=list(report.class_names), seed=seed, split=list(split), foreground=foreground,
                 percentiles=list(percentiles) if percentiles else "none", created_by="micranet make-dataset")
    with ExitStack() as stack:
        temps = {key: stack.enter_context(atomic_path(path)) for key, path in paths.items()}
        handles = {s: stack.enter_context(h5py.File(temps[SPLITS[s]], "w")) for s in used}
        for handle in handles.values():
            handle.attrs.update(attrs)
        for index, (record, s) in enumerate(tqdm(list(zip(records, assigned)), desc="Writing", leave=False,
                                                           disable=not progress)):
            _write_image(handles[s], f"{index:05d}", record, masks, read_options or {}, foreground, percentiles)
        for handle in handles.values():
            handle.close()
        _write_table(temps["table"], records, assigned, report.class_names)
    return paths


def _write_image(handle, key, record, masks, read_options, foreground, percentiles):
    """One group: ``data`` (1, H, W) or (1, C, H, W) float32, ``label`` (1, K+1, H, W) uint8."""
    image = read_image(record.path, **read_options)
    mask = foreground_mask(image, record.name, masks, foreground)
    if percentiles:
        image = normalize_intensity(image, *percentiles)
    elif image.min() < 0 or image.max() > 1:
        raise DatasetError(f"{record.name}: values span {image.min():g}..{image.max():g}, not [0, 1]; "
                           "use the default normalisation")
    label = np.stack([mask * value for value in record.labels] + [mask]).astype(np.uint8)
    data = image[0] if image.shape[0] == 1 else image
    chunks = (1,) + data.shape[:-2] + tuple(min(n, 256) for n in data.shape[-2:])
    group = handle.create_group(key)
    group.attrs["source"] = record.name
    group.attrs["labels"] = np.asarray(record.labels, np.uint8)
    group.create_dataset("data", data=data[None], chunks=chunks)
    stored = group.create_dataset("label", data=label[None], compression="gzip", compression_opts=4,
                                  chunks=(1, 1) + chunks[-2:])
    stored.attrs["shapes"] = np.array([data.shape[-2:]], np.int64)


def _write_table(path, records, assigned, class_names):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "split", "crops", *class_names])
        for record, s in zip(records, assigned):
            writer.writerow([spreadsheet_text(record.name), SPLITS[s], record.crops, *record.labels])


