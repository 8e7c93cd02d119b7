"""Check a folder of your images and their image-level labels before anything is written.

The first half of ``micranet make-dataset`` (:mod:`micranet_utils.apps.make_dataset`, whose notes
describe the label formats and the checks): :func:`validate_folder` reads the
whole folder and returns a :class:`Report` of every problem, per file, and of
the images that can be used; :func:`foreground_mask` gives the foreground that
both the crop count here and the written pixel labels use.
"""

import csv
import glob
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..base.checks import non_negative_int, positive_int
from ..base.errors import DatasetError, ImageError
from ..io.training_files import crop_positions
from ..io.images import check_channels, find_images, IMAGE_SUFFIXES, normalize_intensity, read_image

__all__ = ["Problem", "Record", "Report", "validate_folder", "foreground_mask", "FOREGROUNDS", "FILENAME_COLUMNS",
           "NEGATIVE_FOLDER", "CROP_STEP", "FOREGROUND_FRACTION"]

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
        Passed to :func:`~micranet_utils.io.images.read_image`.
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
    crop_size = positive_int("crop_size", crop_size, 8)       # the network's coarsest layer
    channels = positive_int("channels", channels)
    for key, value in (("channel", channel), ("plane", plane)):
        if value is not None:
            non_negative_int(key, value)
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
