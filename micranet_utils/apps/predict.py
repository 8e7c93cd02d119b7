"""Segment, detect and count on a folder of images with a trained MICRA-Net.

Example::

    micranet predict --model ActinModelZoo.hdf5 --input images/ --output results/ --recipe actin

For every image the command classifies it, computes the Grad-CAM maps of the
eight layers, applies the recipe (:mod:`micranet_utils.analysis.recipes`) and writes:

* ``<name>_masks.tif``: one 0/255 uint8 mask per class (per class pair for
  ``ctc``), axes C, Y, X, readable in Fiji/ImageJ;
* ``<name>_overlay.png``: the image with the masks in colour;
* ``<name>_maps.h5`` (with ``--maps``): the maps, float32 (C, 8, H, W);
* ``<name>_result.json``: the numbers of that image and the model's SHA-256
  (written last: an image whose result file exists is finished, and a rerun
  skips it);

``<name>`` is the file's stem, or its whole name when two inputs would share
outputs (``a.tif`` and ``a.png``; ``a.tif`` beside ``a_tif.png``): the outputs of
two inputs never collide (:func:`_output_stems`); ``manifest.json`` maps each
file to its ``<name>`` (``"outputs"``);

and, for the whole folder, ``results.csv`` (per image: class probabilities,
predicted labels, object counts and mask areas in pixels) and
``manifest.json`` (model file and its SHA-256, options, recipe constants,
package versions, which files failed and why). Every file is written
atomically: an interrupted run leaves complete files or none. File names that
a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR) get
a ``'`` before them in ``results.csv`` (OWASP's advice against CSV injection).

Checked before any image is analysed (exit status 2, one line): every number
(:mod:`micranet_utils.base.checks`), the device, that ``--output`` is not the
input folder nor inside it (its results would be read as images) and can be
written (a probe file), and, when resuming, that the earlier results were made
by the same model (SHA-256 in ``manifest.json`` and in each result file) with
the same options, in readable files; ``--overwrite`` redoes everything. A
model that gives NaN or infinite values for an image fails that image (exit
status 1): no empty mask, and no bare ``NaN`` in the JSON files, which are
strict JSON.

Intensities (``--normalize``). The published models were trained on images
stored as floating-point numbers already scaled by their authors (Actin about
0 to 0.3, CTC and MNIST 0 to 1, P. vivax standardised); the original scripts
fed such files to the network unchanged. ``auto`` (default) does the same for
floating-point images, and rescales images holding only whole numbers (8- or
16-bit camera data) per image to [0, 1] between their 1st and 99.8th
percentiles, as ``micranet make-dataset`` does for training on your own data.
``percentile`` always rescales, ``none`` never does.

Large images (``--tile``). An image larger than the tile side is cut into
overlapping square tiles; the maps of the tiles are averaged where they
overlap, and a class is present in the image when any tile finds it (the
largest logit is kept). Where the data set min-max normalises its maps
(Actin, CTC, MNIST), the stitched maps are normalised over the whole image,
as an untiled image is: normalising each tile on its own would stretch the
faint background of a tile without structures to the range of the
structures elsewhere. The recipe then runs once on the stitched maps.

Images of any size (``--stream``). An image of more than 8 megapixels
(:data:`micranet_utils.apps.stream_predict.STREAM_PIXELS`), or any image with
``--stream always``, is read, mapped and written tile by tile
(:mod:`micranet_utils.apps.stream_predict`) when the recipe's threshold can be
streamed (Actin, CTC, ``otsu``) and one model is used: same masks as the whole
image's maps give, peak memory set by ``--stream-tile``, masks and labels as
tiled BigTIFF (OME-Zarr for an OME-Zarr input), no overlay. ``--stream never``
keeps every image in memory.

Published zoos with several groups: EM uses ``MICRANet-1:5`` and P. vivax
``MICRANet-finetuned`` when ``--group`` is not given.

Fold ensembles (``--name``). P. vivax's ``MICRANet-finetuned`` holds one model
per fold. When the chosen model holds folds and ``--name`` does not pick one
(``--name MODEL/FOLD`` does), every fold is used, as the original did: each
fold's combined map (for the classes that fold calls present) is averaged over
all folds and the mean is thresholded once (:mod:`micranet_utils.analysis.ensemble`).
A class is then reported present when any fold calls it present, with the
largest probability of the folds; ``<name>_result.json`` also lists each
fold's probabilities and decisions, ``--maps`` saves the folds' mean maps,
and ``manifest.json`` names the folds (``"folds"``, empty for one model).

A file that cannot be analysed (empty, not an image, NaN pixels, wrong number
of channels, too small) is named on stderr with the reason and skipped; the
others are processed and the exit status is 1.
"""

import csv
import json
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import tifffile
import torch
from matplotlib.image import imsave
from tqdm.auto import tqdm

from .. import __version__
from ..analysis.detection import count
from ..analysis.ensemble import gradcam_settings, load_ensemble, segment_image
from ..analysis.recipes import get_recipe
from ..base.checks import non_negative_int, output_folder, positive_int, spreadsheet_text
from ..base.datasets import DATASETS
from ..base.devices import pick_device
from ..base.errors import ArgumentError, ImageError, MicranetError, ZooError
from ..base.files import atomic_path, file_sha256
from ..io.images import (IMAGE_SUFFIXES, check_channels, display_rgb, find_images, prepare_image,
                         read_image)
from ..model.tiled_gradcam import check_tiling
from .stream_predict import STREAM_CHOICES, predict_large, use_streaming

RESULTS_CSV, MANIFEST = "results.csv", "manifest.json"
COLORS = np.array([[1.0, 0.25, 0.25], [0.2, 0.9, 0.3], [0.3, 0.5, 1.0], [1.0, 0.8, 0.1],
                   [0.9, 0.3, 0.9], [0.1, 0.9, 0.9], [1.0, 0.55, 0.1], [0.6, 0.4, 1.0],
                   [0.6, 1.0, 0.5], [1.0, 0.6, 0.7]])


def overlay(image, masks):
    """RGB picture of `image` (grey, or its first 3 channels) with the masks blended in colour.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    masks : ndarray of bool, shape (K, H, W)

    Returns
    -------
    ndarray of float32, shape (H, W, 3), values in [0, 1]
    """

    rgb = display_rgb(image).astype(np.float32)
    for k, mask in enumerate(masks):
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * COLORS[k % len(COLORS)]
    return rgb


def mask_names(class_names, recipe):
    """Names of the masks a recipe returns: the classes, or class pairs for ``pair_otsu`` (CTC)."""
    if recipe.threshold == "pair_otsu":
        return [f"{a}-vs-{b}" for a, b in zip(class_names[0::2], class_names[1::2])]
    return list(class_names)


def _write_outputs(out, stem, image, masks, maps, record, save_maps):
    with atomic_path(out / f"{stem}_masks.tif") as tmp:
        tifffile.imwrite(tmp, masks.astype(np.uint8) * 255, imagej=True, metadata={"axes": "CYX"})
    with atomic_path(out / f"{stem}_overlay.png") as tmp:
        imsave(tmp, overlay(image, masks), format="png")
    if save_maps:
        with atomic_path(out / f"{stem}_maps.h5") as tmp:
            with h5py.File(tmp, "w") as file:
                file.create_dataset("maps", data=maps, compression="gzip", compression_opts=4)
                file.attrs["axes"] = "class, layer, y, x"
                file.attrs["layers"] = json.dumps(["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b"])
                if record.get("folds"):
                    file.attrs["mean_over_folds"] = json.dumps(record["folds"])
    with atomic_path(out / f"{stem}_result.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False))


def analyse_image(models, path, recipe, settings, options):
    """Read, classify, map and segment one file with one model or a fold ensemble (a list).

    Returns (image, masks, maps, record); for an ensemble the maps are the
    folds' mean and the record also holds each fold's probabilities and decisions.
    """

    models = list(models) if isinstance(models, (list, tuple)) else [models]
    image = read_image(path, channel=options["channel"], plane=options["plane"], projection=options["projection"],
                       min_size=options["min_size"])
    check_channels(image, models[0].in_channels, path, options.get("dataset"))
    image = prepare_image(image, options["normalize"])
    result = segment_image(models, image, recipe, settings, options["tile"], options["overlap"], options["device"])
    if not (np.isfinite(result.logits).all() and np.isfinite(result.maps).all()):
        raise ImageError(f"{path}: the model gives NaN or infinite values for this image (its weights may be "
                         "broken, or the image holds extreme values); no result is written")
    probabilities = np.round(1.0 / (1.0 + np.exp(-result.logits.astype(np.float64))), 6)
    record = {"file": path.name, "height": int(image.shape[1]), "width": int(image.shape[2]),
              "probability": probabilities.max(axis=0).tolist(),
              "predicted": result.present.any(axis=0).tolist(),
              "count": count(result.masks[None], options["min_area"])[0].tolist(),
              "area": [int(a) for a in result.masks.sum(axis=(1, 2))]}
    if len(models) > 1:
        record.update(folds=options.get("folds"), fold_probability=probabilities.tolist(),
                      fold_predicted=result.present.tolist())
    return image, result.masks, result.maps, record


def _output_stems(paths):
    """Output name per input, distinct by construction (compared without case, as macOS and Windows do).

    An input keeps its stem (``cell.tif`` -> ``cell_masks.tif``) unless that
    name is also another input's: then it takes its whole file name
    (``cell.tif_masks.tif``, ``cell.png_masks.tif``), repeated until no two
    names clash; whole names differing only in case get ``~1``, ``~2``.
    Whole names are distinct, so this ends, and no two inputs share outputs.
    """
    full = [p.name for p in paths]
    folded = [n.casefold() for n in full]
    twins = Counter(folded)
    seen = Counter()
    for i, key in enumerate(folded):
        if twins[key] > 1:
            seen[key] += 1
            full[i] = f"{full[i]}~{seen[key]}"
    stems, whole = [p.stem for p in paths], set()
    while True:
        names = [full[i] if i in whole else stems[i] for i in range(len(paths))]
        counts = Counter(n.casefold() for n in names)
        clashing = {i for i, n in enumerate(names) if counts[n.casefold()] > 1}
        if not clashing:
            return names
        whole |= clashing


def _write_csv(out, records, class_names, names):
    header = (["file", "height", "width"] + [f"probability_{c}" for c in class_names]
              + [f"predicted_{c}" for c in class_names] + [f"count_{m}" for m in names]
              + [f"area_px_{m}" for m in names])
    with atomic_path(out / RESULTS_CSV) as tmp:
        with open(tmp, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            for r in records:
                writer.writerow([spreadsheet_text(r["file"]), r["height"], r["width"]] + r["probability"]
                                + [int(p) for p in r["predicted"]] + r["count"] + r["area"])


def _load_models(options):
    """The model, or every fold of an ensemble: (models, params, fold names or [])."""
    device = pick_device(options["device"])
    try:
        loaded = load_ensemble(options["model"], name=options["name"], group=options["group"], device=device)
    except ZooError:
        # Published zoos with several groups (EM, P. vivax): try the group the data set uses.
        info = DATASETS.get(options["recipe"])
        if options["group"] is not None or info is None or info.zoo_group == "MICRANet":
            raise
        loaded = load_ensemble(options["model"], name=options["name"], group=info.zoo_group, device=device)
        options["group"] = info.zoo_group
    options["device"] = str(device)
    return loaded


def predict_folder(model, input, output, recipe="actin", *, name=None, group=None, device="auto",
                   save_maps=False, overwrite=False, tile=1024, overlap=128, normalize="auto",
                   channel=None, plane=None, projection=None, min_size=32, min_area=1, stream="auto",
                   stream_tile=512, progress=True):
    """Analyse every image of a folder (or one file) and write the results.

    Parameters
    ----------
    model : str or Path
        ModelZoo HDF5 file (``name`` and ``group`` as in :func:`micranet_utils.load_zoo`);
        a model holding folds is used as an ensemble unless ``name`` picks one
        fold as ``"MODEL/FOLD"`` (see the module notes).
    input : str or Path
        Folder of images (TIFF, PNG, JPEG, ...) or one image file.
    output : str or Path
        Folder for the results (created).
    recipe : str
        Post-processing recipe (:data:`micranet_utils.analysis.recipes.RECIPES`).
    save_maps, overwrite, tile, overlap, normalize, channel, plane, projection, min_size, min_area
        See ``micranet predict --help``.
    stream : {"auto", "always", "never"}
        Stream images above 8 megapixels, all, or none (see the module notes).
    stream_tile : int
        Side of the streamed tiles' cores, pixels (at least 128).

    Returns
    -------
    dict
        ``done`` (list of file names analysed now), ``skipped`` (finished
        earlier), ``failed`` (dict file name -> reason), ``ignored`` (not image files).
    """

    recipe = get_recipe(recipe)
    source, out = Path(input), Path(output)
    tile = positive_int("tile", tile, 8)
    overlap = non_negative_int("overlap", overlap)
    if overlap >= tile:
        raise ArgumentError(f"overlap must be smaller than tile; got tile {tile}, overlap {overlap}")
    min_size = positive_int("min_size", min_size, 8)       # the network's coarsest layer
    min_area = non_negative_int("min_area", min_area)
    for key, value in (("channel", channel), ("plane", plane)):
        if value is not None:
            non_negative_int(key, value)
    prepare_image(np.zeros((1, 1, 1), np.float32), normalize)           # checks the choice early
    if stream not in STREAM_CHOICES:
        raise ArgumentError(f"stream must be one of {', '.join(STREAM_CHOICES)}; got {stream!r}")
    stream_tile = check_tiling(stream_tile, 32)[0] if stream != "never" else stream_tile
    if source.is_file():
        paths, ignored = [source], []
    elif source.is_dir():
        paths = find_images(source)
        ignored = sorted(p.name for p in source.iterdir() if p.is_file() and not p.name.startswith(".")
                         and p.suffix.lower() not in IMAGE_SUFFIXES)
    else:
        raise MicranetError(f"{source}: no such file or folder")
    if not paths:
        raise MicranetError(f"{source}: no image files found (looked for {', '.join(IMAGE_SUFFIXES)})")
    options = dict(model=str(Path(model).resolve()), name=name, group=group, device=device, recipe=recipe.name,
                   maps=bool(save_maps), tile=tile, overlap=overlap, normalize=normalize,
                   channel=channel, plane=plane, projection=projection, min_size=min_size,
                   min_area=min_area)
    kept = {k: v for k, v in options.items() if k != "device"}
    nets, params, options["folds"] = _load_models(options)     # a bad model leaves no output folder behind
    output_folder("output", out, inputs=[("input", source)])
    sha256 = file_sha256(model)
    stems = _output_stems(paths)
    finished = {} if overwrite else _finished_results(out, paths, stems, kept, sha256)
    settings = gradcam_settings(recipe.name, params)
    options["dataset"] = recipe.name if recipe.name in DATASETS else None
    class_names = params.get("class_names") or (DATASETS[recipe.name].class_names
                                                if recipe.name in DATASETS else None)
    num_classes = nets[0].num_classes
    if not class_names or len(class_names) != num_classes:
        class_names = [f"class{i}" for i in range(num_classes)]
    summary = {"done": [], "skipped": [], "failed": {}, "ignored": ignored}
    for file_name in ignored:
        tqdm.write(f"micranet predict: ignored {file_name}: not an image file type", file=sys.stderr)
    records = {}
    for path, stem in zip(tqdm(paths, desc="images", unit="image", disable=not progress), stems):
        if path.name in finished:
            records[path.name] = finished[path.name]
            summary["skipped"].append(path.name)
            continue
        try:
            if use_streaming(path, recipe, len(nets) > 1, stream, channel, plane, projection):
                record = predict_large(nets[0], path, out, recipe, settings=settings, stem=stem, tile=stream_tile,
                                       normalize=normalize, channel=channel, plane=plane, min_area=min_area,
                                       device=options["device"], extra={"model_sha256": sha256})
            else:
                image, masks, maps, record = analyse_image(nets, path, recipe, settings, options)
                record["model_sha256"] = sha256
                _write_outputs(out, stem, image, masks, maps, record, save_maps)
        except MicranetError as err:
            reason = str(err)
        except (OSError, ValueError, RuntimeError, MemoryError) as err:
            reason = f"{path}: {type(err).__name__}: {err}"
        else:
            records[path.name] = record
            summary["done"].append(path.name)
            continue
        summary["failed"][path.name] = reason
        tqdm.write(f"micranet predict: skipped {path.name}: {reason}", file=sys.stderr)
    ordered = [records[p.name] for p in paths if p.name in records]
    _write_csv(out, ordered, class_names, mask_names(class_names, recipe))
    manifest = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "options": kept, "device": options["device"],
                "model_sha256": sha256, "recipe": asdict(recipe), "class_names": list(class_names),
                "masks": mask_names(class_names, recipe), "gradcam": settings, "folds": options["folds"],
                "versions": {"micranet_utils": __version__, "torch": torch.__version__, "numpy": np.__version__},
                "images": [p.name for p in paths if p.name in records],
                "outputs": {p.name: stem for p, stem in zip(paths, stems) if p.name in records},
                "failed": summary["failed"], "ignored": ignored}
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=str, allow_nan=False))
    return summary


def _read_json(path, what):
    """The dict in `path`, or a one-line error saying that the file is damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise MicranetError(f"{path}: not a readable {what} ({type(err).__name__}: {str(err)[:80]}); "
                            "delete it, use --overwrite, or another output folder") from None
    if not isinstance(value, dict):
        raise MicranetError(f"{path}: not a {what} (no JSON object); delete it, use --overwrite, or another "
                            "output folder")
    return value


_RECORD_FIELDS = {"file": str, "height": int, "width": int, "probability": list, "predicted": list,
                  "count": list, "area": list}


def _finished_results(out, paths, stems, kept, sha256):
    """{file name: record} of the images an earlier run finished with this model and these options.

    Checked before any image is analysed: results of another model (its SHA-256
    differs) or other options are never mixed with new ones (the run stops, and
    ``--overwrite`` redoes everything); a result file of another input (an
    output name that changed when files were added) is not trusted, and that
    image is analysed again.
    """
    if (out / MANIFEST).is_file():
        manifest = _read_json(out / MANIFEST, "manifest of micranet predict")
        previous = manifest.get("options") if isinstance(manifest.get("options"), dict) else {}
        changed = sorted(k for k in kept if previous.get(k) != kept[k])
        if changed:
            raise MicranetError(f"{out}: holds results made with other options ({', '.join(changed)}); "
                                "use --overwrite or another output folder")
        if manifest.get("model_sha256") != sha256:
            raise MicranetError(f"{out}: holds results of another model (SHA-256 "
                                f"{str(manifest.get('model_sha256'))[:12]}..., now {sha256[:12]}...); "
                                "use --overwrite to redo them, or another output folder")
    finished = {}
    for path, stem in zip(paths, stems):
        result_file = out / f"{stem}_result.json"
        if not result_file.is_file():
            continue
        record = _read_json(result_file, "result file of micranet predict")
        if not all(isinstance(record.get(key), kind) for key, kind in _RECORD_FIELDS.items()):
            raise MicranetError(f"{result_file}: not a result file of micranet predict (missing fields); "
                                "delete it, use --overwrite, or another output folder")
        if record.get("model_sha256") != sha256:
            raise MicranetError(f"{result_file}: was made with another model (or by an older version); "
                                "use --overwrite to redo every image, or another output folder")
        if record.get("file") == path.name:
            finished[path.name] = record
    return finished
