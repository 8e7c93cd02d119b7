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
import glob
import hashlib
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from .data import SPLITS, crop_positions
from .errors import DatasetError, ImageError
from .files import atomic_path
from .images import IMAGE_SUFFIXES, check_channels, find_images, normalize_intensity, read_image

FILENAME_COLUMNS = ("filename", "file", "image", "path")
NEGATIVE_FOLDER = "negative"
FOREGROUNDS = ("otsu", "all")
CROP_STEP, FOREGROUND_FRACTION = 0.75, 0.1      # CropDataset's defaults, used to count crops


@dataclass
class Problem:
    """One problem found in the folder: where, how bad, and what."""

    file: str
    severity: str          # "error" or "warning"
    message: str


@dataclass
class Record:
    """One usable image: where it is, its labels, its size and how many crops it gives."""

    name: str              # path relative to the images folder, with "/"
    path: Path
    labels: tuple          # one 0/1 per class
    shape: tuple = None    # (C, H, W)
    crops: int = 0


@dataclass
class Report:
    """Result of :func:`validate_folder`: every problem, and the images that can be used."""

    class_names: tuple = ()
    records: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def add(self, file, severity, message):
        self.problems.append(Problem(str(file), severity, message))

    @property
    def errors(self):
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self):
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self):
        """True when nothing stops writing the data set (warnings allowed)."""
        return not self.errors

    def __str__(self):
        lines = [f"{len(self.records)} images, classes {', '.join(self.class_names) or '(none)'}: "
                 f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        for file in dict.fromkeys(p.file for p in self.problems):
            lines.append(f"  {file}")
            lines += [f"    {p.severity}: {p.message}" for p in self.problems if p.file == file]
        return "\n".join(lines)


def validate_folder(images, labels=None, *, masks=None, crop_size=256, channels=1, channel=None,
                    plane=None, projection=None, foreground="otsu", progress=True):
    """Check a folder of images and their labels; report every problem, write nothing.

    Parameters
    ----------
    images : str or Path
        Folder of images (sub-folders allowed; with ``labels=None`` they are the classes).
    labels : str or Path, optional
        CSV of image-level labels (see the module notes); ``None`` for class sub-folders.
    masks : str or Path, optional
        Folder of foreground masks with the same relative names (any image ending).
    crop_size : int
        Side of the training crops; smaller images are errors.
    channels : int
        Channels every image must have after `channel` is applied.
    channel, plane, projection
        Passed to :func:`~micranet_utils.images.read_image`.
    foreground : {"otsu", "all"}
        Foreground when there is no mask folder.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Report
        ``report.problems`` (file, severity, message), ``report.records`` (usable
        images with their labels), ``report.ok``; ``print(report)`` lists them per file.
    """
    images = Path(images)
    if not images.is_dir():
        raise DatasetError(f"{images}: images folder not found")
    if foreground not in FOREGROUNDS:
        raise DatasetError(f"foreground must be one of {FOREGROUNDS}, got {foreground!r}")
    report = Report()
    skip = [Path(masks).resolve()] if masks is not None else []
    files = [f for f in find_images(images, recursive=True)
             if not any(folder in f.resolve().parents for folder in skip)]
    if labels is not None:
        _labels_from_csv(Path(labels), images, files, report)
    else:
        _labels_from_folders(images, files, report)
    digests = {}
    for record in tqdm(list(report.records), desc="Checking images", leave=False, disable=not progress):
        _check_image(record, report, digests, masks=masks, crop_size=crop_size, channels=channels,
                     read_options=dict(channel=channel, plane=plane, projection=projection),
                     foreground=foreground)
    _check_classes(report)
    return report


def _labels_from_csv(csv_path, images, files, report):
    """Fill ``report.records`` and ``report.class_names`` from a labels CSV."""
    where = csv_path.name
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{csv_path}: cannot read the labels CSV ({err})") from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count)          # spreadsheets in some locales write ";"
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    rows = [(reader.line_num, [cell.strip() for cell in row]) for row in reader if any(c.strip() for c in row)]
    if not rows:
        raise DatasetError(f"{csv_path}: the labels CSV is empty")
    header = rows[0][1]
    if header[0].lower() not in FILENAME_COLUMNS or len(header) < 2:
        raise DatasetError(f"{csv_path}: the first column must be named 'filename' and be followed by one "
                           f"0/1 column per class; found header {delimiter.join(header)!r}")
    classes = header[1:]
    if len(set(classes)) != len(classes) or not all(classes):
        raise DatasetError(f"{csv_path}: class names in the header must be unique and non-empty: {classes}")
    report.class_names = tuple(classes)
    on_disk = {f.relative_to(images).as_posix(): f for f in files}
    seen = {}
    for line, row in rows[1:]:
        name = row[0].replace("\\", "/").removeprefix("./")
        if name in seen:
            report.add(name, "error", f"duplicate: {where} lines {seen[name]} and {line} both label this file")
            continue
        seen[name] = line
        if len(row) != len(header):
            report.add(name, "error", f"{where} line {line} has {len(row)} columns; the header has {len(header)}")
            continue
        bad = [f"{c}={v!r}" for c, v in zip(classes, row[1:]) if _zero_one(v) is None]
        if bad:
            report.add(name, "error", f"label not 0/1 ({', '.join(bad)}) on {where} line {line}")
        if name not in on_disk:
            known = Path(name).suffix.lower() in IMAGE_SUFFIXES
            report.add(name, "error", f"{where} line {line} names this file but it is not in {images}"
                       if known else f"{where} line {line}: not an image file type ({', '.join(IMAGE_SUFFIXES)})")
            continue
        if not bad:
            report.records.append(Record(name, on_disk[name], tuple(_zero_one(v) for v in row[1:])))
    for name in on_disk:
        if name not in seen:
            report.add(name, "error", f"missing from the CSV: {where} has no row for this image")


def _zero_one(text):
    """0 or 1 from a CSV cell ("1", "0", "1.0" as spreadsheets write them); None otherwise."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value in (0.0, 1.0) else None


def _labels_from_folders(images, files, report):
    """Fill ``report.records`` from class sub-folders (``negative`` = no class)."""
    classes = sorted(d.name for d in images.iterdir()
                     if d.is_dir() and not d.name.startswith(".") and d.name != NEGATIVE_FOLDER)
    report.class_names = tuple(classes)
    first_seen = {}
    for file in files:
        relative = file.relative_to(images)
        name = relative.as_posix()
        if len(relative.parts) < 2:
            report.add(name, "error", "not in a class sub-folder; without a labels CSV every image must be in "
                       f"a folder named after its class (or in '{NEGATIVE_FOLDER}/')")
            continue
        if relative.name in first_seen:
            report.add(name, "error", f"duplicate: the same file name is in {first_seen[relative.name]}; "
                       "for images with several classes use a labels CSV")
            continue
        first_seen[relative.name] = name
        folder = relative.parts[0]
        report.records.append(Record(name, file, tuple(int(folder == c) for c in classes)))


def _check_image(record, report, digests, *, masks, crop_size, channels, read_options, foreground):
    """Read one image (and its mask), record its shape and crops, report what is wrong."""
    try:
        image = read_image(record.path, min_size=crop_size, **read_options)
        check_channels(image, channels, record.name)
    except ImageError as err:
        report.add(record.name, "error", str(err).replace(f"{record.path}: ", "").replace(f"{record.name}: ", ""))
        return
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    if digest in digests:
        report.add(record.name, "warning", f"duplicate: same pixels as {digests[digest]}; both are kept, "
                   "and may land in different splits")
    digests.setdefault(digest, record.name)
    try:
        mask = foreground_mask(image, record.name, masks, foreground)
    except ImageError as err:
        report.add(record.name, "error", str(err))
        return
    record.shape = image.shape
    record.crops = len(crop_positions(mask, image.shape[1:], crop_size, CROP_STEP, FOREGROUND_FRACTION))
    if record.crops == 0:
        report.add(record.name, "warning", f"no {crop_size}x{crop_size} crop has {FOREGROUND_FRACTION:.0%} "
                   "foreground; this image adds nothing (check its mask, or use foreground='all')")


def foreground_mask(image, name=None, masks=None, foreground="otsu"):
    """Foreground of one image: its mask file, Otsu on the smoothed image, or everything.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    name : str, optional
        Path of the image relative to its folder (needed with `masks`).
    masks : str or Path, optional
        Folder of masks; the mask of ``a/b.tif`` is ``a/b.<any image ending>`` there.
    foreground : {"otsu", "all"}

    Returns
    -------
    ndarray of uint8, shape (H, W), values 0/1
        Otsu: threshold of the per-image normalised intensity (mean over channels)
        smoothed by a Gaussian of sigma 2 px; all zeros for a constant image.
    """
    if masks is not None:
        stem = Path(name).with_suffix("").as_posix().removesuffix(".ome")
        found = [m for m in Path(masks).glob(f"{glob.escape(stem)}.*") if m.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise ImageError(f"no mask in {masks} (expected {stem}.tif or another image file)")
        mask = read_image(found[0]).max(axis=0) > 0
        if mask.shape != image.shape[1:]:
            raise ImageError(f"mask {found[0].name} is {mask.shape[0]}x{mask.shape[1]} but the image is "
                             f"{image.shape[1]}x{image.shape[2]}")
        return mask.astype(np.uint8)
    if foreground == "all":
        return np.ones(image.shape[1:], np.uint8)
    from skimage.filters import gaussian, threshold_otsu

    smooth = gaussian(normalize_intensity(image).mean(axis=0), sigma=2)
    if smooth.max() - smooth.min() < 1e-6:
        return np.zeros(smooth.shape, np.uint8)
    return (smooth > threshold_otsu(smooth)).astype(np.uint8)


def _check_classes(report):
    """Each class needs positive and negative images, or the network learns nothing from it."""
    if not report.class_names:
        report.add("(labels)", "error", "no classes found (CSV header or class sub-folders)")
        return
    table = np.array([r.labels for r in report.records], int).reshape(-1, len(report.class_names))
    for c, name in enumerate(report.class_names):
        if not table[:, c].any():
            report.add("(labels)", "error", f"class {name!r} is never positive; the network cannot learn it")
        elif table[:, c].all():
            report.add("(labels)", "error", f"class {name!r} is never negative; without images lacking it the "
                       "network cannot learn what distinguishes it")


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
        Per-image normalisation (see :func:`~micranet_utils.images.normalize_intensity`);
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
    output = Path(output)
    images = Path(images)
    if not report.ok:
        raise DatasetError(f"{images}: the report has errors; nothing was written")
    if output.resolve() == images.resolve() or images.resolve() in output.resolve().parents:
        raise DatasetError(f"{output}: the output folder must be outside the images folder {images}; "
                           "your folder is never written to")
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
            writer.writerow([record.name, SPLITS[s], record.crops, *record.labels])


def cli_arguments(parser):
    """Arguments of ``micranet make-dataset``."""
    parser.add_argument("--images", required=True, type=Path, help="folder of your images")
    parser.add_argument("--labels", type=Path, help="CSV: filename column, then one 0/1 column per class "
                        "(default: class sub-folders of --images)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the data set files")
    parser.add_argument("--masks", type=Path, help="folder of foreground masks with the same file names")
    parser.add_argument("--foreground", choices=FOREGROUNDS, default="otsu",
                        help="foreground without masks: Otsu threshold or the whole image (default: otsu)")
    parser.add_argument("--crop-size", type=int, default=256, help="training crop side in pixels (default: 256)")
    parser.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"),
                        help="fractions of images per split (default: 0.7 0.15 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--channels", type=int, default=1, help="channels the model takes (default: 1)")
    parser.add_argument("--channel", type=int, help="keep only this channel of each image (0-based)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--plane", type=int, help="for stacks: keep this plane (0-based)")
    choice.add_argument("--projection", choices=("max", "mean"), help="for stacks: project all planes")
    parser.add_argument("--name", default="inhouse", help="files are <split>_NAME.hdf5 (default: inhouse)")
    parser.add_argument("--check-only", action="store_true", help="only check the folder and print the report")


def cli_run(args):
    """Check the folder, print the report, write the files when there is no error."""
    import sys

    read_options = dict(channel=args.channel, plane=args.plane, projection=args.projection)
    report = validate_folder(args.images, args.labels, masks=args.masks, crop_size=args.crop_size,
                             channels=args.channels, foreground=args.foreground, **read_options)
    print(report, file=sys.stderr if report.problems else sys.stdout)
    if not report.ok:
        files = sorted({p.file for p in report.errors})
        print(f"micranet make-dataset: error: {len(report.errors)} problem(s) in {len(files)} file(s): "
              f"{', '.join(files)}; nothing was written", file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    paths = write_dataset(report, args.output, images=args.images, masks=args.masks, split=args.split,
                          seed=args.seed, read_options=read_options, foreground=args.foreground, name=args.name)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
