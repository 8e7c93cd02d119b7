"""``micranet predict`` on images too large for memory: read, compute and write tile by tile.

Example::

    micranet predict --model ActinModelZoo.hdf5 --input mosaic.tif --output results/ --stream

:func:`predict_large` runs :func:`micranet_utils.analysis.streaming.stream_segment`
(the recipe's exact masks, tile by tile; see that module for what is
streamed and how) and writes, next to each other:

* for TIFF and other files, ``<name>_masks.tif`` (0/255 uint8, axes C, Y, X,
  one plane per mask) and ``<name>_labels.tif`` (uint32 object labels,
  8-connected, numbered in raster order as ``scipy.ndimage.label`` numbers
  the whole mask), both tiled BigTIFF written tile by tile;
* for an OME-Zarr input, ``<name>_masks.ome.zarr`` holding the masks and,
  under ``labels/objects``, the label image;
* ``<name>_result.json``, last: probabilities, decisions, object counts
  (merged across tile borders) and mask areas, as ``micranet predict`` writes
  for any image, with ``"streamed": true``.

Every file and store is written under a temporary name and renamed when
complete; the temporary per-pixel data (about 20 bytes per pixel and class at
their largest) go to a hidden folder in the output folder, removed at the end.
Peak memory depends on the tile size, not the image's: about 1 GB with the
default 512-pixel tiles on CPU (the network's activations of one tile).

When ``micranet predict`` streams (:func:`use_streaming`): with ``--stream``,
or by itself for images of more than :data:`STREAM_PIXELS` pixels, when the
recipe's threshold is streamed (Actin's quantile, ``otsu``, CTC's pair Otsu)
and one model (not a fold ensemble) is used. The streamed maps are the whole
image's Grad-CAM (one ``alpha`` per layer for the whole image), which the
in-memory path computes for images up to ``--tile`` pixels and approximates
by overlapping tiles beyond. No overlay picture or ``--maps`` file is written.
"""

import json
from pathlib import Path

import numpy as np

from ..analysis.streaming import stream_segment, streamable
from ..base.errors import MicranetError
from ..base.files import atomic_path
from ..io.tiles import open_tiles, write_ome_zarr, write_tiff_tiles

__all__ = ["STREAM_PIXELS", "STREAM_CHOICES", "use_streaming", "predict_large"]

STREAM_PIXELS = 8_000_000
"""int: images with more pixels are streamed by ``micranet predict`` (the in-memory path needs ~200 B/pixel)."""
STREAM_CHOICES = ("auto", "always", "never")
"""tuple of str: ``micranet predict --stream``: by size, every image, no image."""


def use_streaming(path, recipe, ensemble, stream="auto", channel=None, plane=None, projection=None):
    """Whether ``micranet predict`` streams this file: "always", "never", or "auto" by size.

    Raises
    ------
    MicranetError
        ``stream=True`` with a recipe or an ensemble that cannot be streamed.
    """
    if stream == "never":
        return False
    possible = streamable(recipe) and not ensemble and projection is None
    if stream == "always":
        if not possible:
            reason = ("a fold ensemble" if ensemble else "a projection of planes" if projection is not None
                      else f"recipe {recipe.name!r} ({recipe.threshold} threshold)")
            raise MicranetError(f"{path}: --stream: {reason} is not streamed (peak and block thresholds look at "
                                "the whole map, and folds are averaged in memory); run without --stream")
        return True
    if not possible or Path(path).suffix.lower() not in (".tif", ".tiff", ".zarr"):
        return False
    with open_tiles(path, channel=channel, plane=plane) as reader:
        return reader.shape[1] * reader.shape[2] > STREAM_PIXELS


def predict_large(model, path, output, recipe="actin", *, settings=None, stem=None, tile=512, margin=32,
                  normalize="auto", channel=None, plane=None, min_area=1, device=None, extra=None):
    """Segment, label and count one image of any size, tile by tile, and write the results.

    Parameters
    ----------
    model : MICRANet
    path : str or Path
        TIFF / OME-TIFF file, OME-Zarr folder, or any image ``read_image`` reads.
    output : str or Path
        Folder for the results (created).
    recipe : Recipe or str
        With a streamed threshold (``analysis.streaming.STREAMED``).
    settings : dict, optional
        Grad-CAM normalisation and decision rule (``ensemble.gradcam_settings``).
    stem : str, optional
        Output name; default the input's stem.
    tile, margin, normalize, channel, plane, min_area, device
        As for ``micranet predict`` (``tile`` here is the core of a network tile).
    extra : dict, optional
        More fields for the result record (e.g. the model's SHA-256).

    Returns
    -------
    dict
        The record written to ``<stem>_result.json``.
    """
    path, out = Path(path), Path(output)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or path.name.split(".")[0]
    with open_tiles(path, channel=channel, plane=plane) as reader:
        if reader.shape[0] != model.in_channels:
            raise MicranetError(f"{path}: image has {reader.shape[0]} channel(s); this MICRA-Net expects "
                                f"{model.in_channels}; choose one with --channel K")
        result, workspace = stream_segment(model, reader, recipe, settings, out, tile=tile, margin=margin,
                                           normalize=normalize, min_area=min_area, device=device)
        with workspace:
            count, height, width = result.masks.shape
            shape = (count, height, width)
            if reader.kind == "ome-zarr":
                files = [f"{stem}_masks.ome.zarr"]
                write_ome_zarr(out / files[0], {"image": (shape, np.uint8, result.mask_block),
                                                "labels/objects": (shape, np.uint32, result.label_block)})
            else:
                files = [f"{stem}_masks.tif", f"{stem}_labels.tif"]
                write_tiff_tiles(out / files[0], shape, np.uint8, result.mask_block)
                write_tiff_tiles(out / files[1], shape, np.uint32, result.label_block)
            probabilities = np.round(1.0 / (1.0 + np.exp(-result.logits.astype(np.float64))), 6)
            record = {"file": path.name, "height": int(height), "width": int(width),
                      "probability": probabilities.tolist(), "predicted": result.present.tolist(),
                      "count": result.counts.tolist(), "area": result.areas.tolist(),
                      "streamed": True, "tile": tile, "margin": margin, "thresholds": result.thresholds,
                      "outputs": files}
    record.update(extra or {})
    with atomic_path(out / f"{stem}_result.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1, allow_nan=False))
    return record
