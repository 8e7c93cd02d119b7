"""The recipes on images of any size: the same masks as :func:`recipes.segment`, tile by tile.

:mod:`micranet_utils.analysis.recipes` holds an image's eight maps per class in memory
(``C x 8 x H x W`` float32) because four of its steps use statistics of the
whole image. :func:`stream_segment` computes those statistics exactly in
passes over tiles, and keeps per-pixel intermediates in temporary files
(memory-mapped ``.npy`` in a hidden folder next to the output, removed at
the end), so that its memory depends on the tile size only:

========================  ==================================================
whole-image statistic     how it is streamed
========================  ==================================================
intensity percentiles     exact order statistics (histogram pass, then the
(``prepare_image``)       values of the one bin that holds each)
Actin foreground          8x8 block means of every tile (interior tiles are
                          cut on multiples of 8), their median in memory
                          (H W / 64 values)
Grad-CAM max pool and     :mod:`micranet_utils.model.tiled_gradcam`
``alpha``
min-max of each map       min and max of each tile's maps
PCA7 (7x7 covariance)     per-tile mean and centred cross products (float64),
                          merged exactly (Chan et al.)
orientation, gate range   sums and min/max per tile
Gaussian smoothing        each tile with a margin of ``int(4 sigma + 0.5)``
                          read back from the unsmoothed scores on disk
quantile threshold        exact order statistics, then numpy's own linear
                          interpolation (:func:`exact_quantile`)
Otsu threshold            the 256-bin histogram scikit-image builds, summed
                          over tiles
objects and counts        labels per tile, merged across tile borders
                          (8-connected) and numbered as ``ndimage.label``
========================  ==================================================

The streamed thresholds are ``quantile`` (Actin), ``otsu`` and ``pair_otsu``
(CTC). ``peak`` (EM, P. vivax) and ``blocks`` (MNIST) look at objects of the
whole map and are not streamed: :data:`STREAMED` lists what is.

Exactness: every step uses the same floating-point operations as the
whole-image path, except sums whose order changes (``alpha``, the PCA means
and covariance): the maps agree to about 1e-7 relative, so only a pixel
whose smoothed score lies within about 1e-6 of the threshold can differ. The
tests count such pixels (none on their images).
"""

import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.filters import threshold_otsu

from ..base.errors import MicranetError
from ..model.gradcam import LAYER_STRIDES, predicted
from ..model.tiled_gradcam import check_tiling, global_max, layer_cells, layer_weights, tile_cams, tile_windows
from .recipes import LAYER_4B, get_recipe
from .thresholds import BIN

__all__ = ["STREAMED", "exact_quantile", "Workspace", "StreamResult", "stream_segment", "streamable"]

STREAMED = ("quantile", "otsu", "pair_otsu")
"""tuple of str: the thresholds :func:`stream_segment` computes exactly tile by tile."""

_BINS = 1 << 16
_GATHER_LIMIT = 1 << 23           # values of one histogram bin gathered in memory at most
_EPS = 1e-12                      # as gradcam's min-max normalisation
_NORMALIZE_PERCENTILES = (1.0, 99.8)


def streamable(recipe):
    """Whether :func:`stream_segment` computes this recipe's masks (see :data:`STREAMED`)."""
    return get_recipe(recipe).threshold in STREAMED


# -- exact order statistics over chunks ---------------------------------------------------------------
def _lerp(a, b, t):
    """numpy's linear interpolation of quantiles (numpy.lib._function_base_impl._lerp)."""
    diff_b_a = b - a
    result = np.add(a, diff_b_a * t, out=...)
    np.subtract(b, diff_b_a * (1 - t), out=result, where=t >= 0.5, casting="unsafe", dtype=type(result.dtype))
    return result[()] if result.ndim == 0 else result


def _order_statistics(chunks, ranks, low, high, depth=0):
    """Values of the given 0-based ranks among all values of ``chunks()`` (all within [low, high])."""
    edges = np.linspace(float(low), float(high), _BINS + 1)
    edges[-1] = np.nextafter(float(high), np.inf)
    counts = np.zeros(_BINS, np.int64)
    for values in chunks():
        counts += np.bincount(np.searchsorted(edges, values.astype(np.float64, copy=False), "right") - 1,
                              minlength=_BINS)[:_BINS]
    before = np.concatenate([[0], np.cumsum(counts)])
    wanted = {}
    for rank in ranks:
        j = int(np.searchsorted(before, rank, "right") - 1)
        wanted.setdefault(j, []).append(rank)
    found, gather = {}, {}
    for j, in_bin in wanted.items():
        if counts[j] > _GATHER_LIMIT and depth < 3 and edges[j + 1] > np.nextafter(edges[j], np.inf):
            inner = _order_statistics(lambda j=j: (v[(v >= edges[j]) & (v < edges[j + 1])] for v in chunks()),
                                      [r - before[j] for r in in_bin], edges[j], np.nextafter(edges[j + 1], -np.inf),
                                      depth + 1)
            found.update({r: inner[r - before[j]] for r in in_bin})
        else:
            gather[j] = []
    if gather:
        for values in chunks():
            wide = values.astype(np.float64, copy=False)
            for j, parts in gather.items():
                parts.append(values[(wide >= edges[j]) & (wide < edges[j + 1])])
        for j, parts in gather.items():
            inside = np.sort(np.concatenate(parts))
            found.update({r: inside[r - before[j]] for r in wanted[j]})
    return found


def exact_quantile(chunks, q):
    """``np.quantile`` of all the values ``chunks()`` yields, without holding them.

    Parameters
    ----------
    chunks : callable
        ``chunks()`` returns a fresh iterable of 1-D arrays of one dtype; it is
        called a few times (one pass for the range, one for a histogram, one
        to gather the values of the bins that hold the wanted ranks).
    q : float or sequence of float
        As for ``np.quantile`` (linear method); a Python float gives a result
        of the values' dtype, as numpy's weak promotion does.

    Returns
    -------
    The same number(s) ``np.quantile(np.concatenate(list(chunks())), q)`` returns.
    """
    count, low, high, dtype = 0, np.inf, -np.inf, None
    for values in chunks():
        if values.size:
            count += values.size
            low, high = min(low, values.min()), max(high, values.max())
            dtype = values.dtype
    if count == 0:
        raise MicranetError("quantile of no values")
    weak = type(q) in (int, float)
    virtual = np.asanyarray((count - 1) * np.asanyarray(q, np.float64))
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= count - 1
    previous = np.where(above, count - 1, previous).astype(np.intp)
    following = np.where(above, count - 1, following).astype(np.intp)
    gamma = np.asanyarray(virtual - np.floor(virtual), dtype=virtual.dtype)     # irrelevant where above
    ranks = sorted(set(previous.ravel().tolist()) | set(following.ravel().tolist()))
    found = _order_statistics(chunks, ranks, low, high)
    lower = np.asarray(np.vectorize(found.get)(previous) if previous.ndim else found[int(previous)], dtype)
    upper = np.asarray(np.vectorize(found.get)(following) if following.ndim else found[int(following)], dtype)
    if weak:
        gamma = float(gamma)
    return _lerp(lower, upper, gamma)


# -- temporary per-pixel storage ------------------------------------------------------------------------
class Workspace:
    """A hidden folder of memory-mapped arrays, removed by :meth:`close`."""

    def __init__(self, parent):
        Path(parent).mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=".micranet-stream-", suffix=".tmp", dir=parent))
        self._arrays = {}

    def array(self, name, shape, dtype):
        self._arrays[name] = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype,
                                                       shape=tuple(shape))
        return self._arrays[name]

    def drop(self, name):
        array = self._arrays.pop(name, None)
        if array is not None:
            del array
            try:
                (self.folder / f"{name}.npy").unlink(missing_ok=True)
            except OSError:                 # still mapped (Windows): removed with the folder
                pass

    def close(self):
        self._arrays.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- intensities and foreground --------------------------------------------------------------------------
def _intensity_scaling(reader, mode, cores):
    """The function that scales a raw block as ``prepare_image(whole image, mode)`` scales it."""
    if mode not in ("auto", "percentile", "none"):
        raise MicranetError(f"normalize must be one of auto, percentile, none; got {mode!r}")
    if mode == "none":
        return lambda block: block
    if mode == "auto":
        whole, top = True, -np.inf
        for y0, y1, x0, x1 in cores:
            block = reader.read(y0, y1, x0, x1)
            whole = whole and bool(np.all(block == np.round(block)))
            top = max(top, float(block.max()))
        if not (whole and top > 1):
            return lambda block: block
    quantiles = np.true_divide(np.asarray(_NORMALIZE_PERCENTILES), 100)
    ranges = []
    for k in range(reader.shape[0]):
        def chunks(k=k):
            return (reader.read(*core)[k].astype(np.float64).ravel() for core in cores)
        ranges.append(exact_quantile(chunks, quantiles))

    def scale(block):
        flat = block.reshape(block.shape[0], -1).astype(np.float64)
        out = np.empty_like(flat)
        for k, (lo, hi) in enumerate(ranges):
            if hi > lo:
                out[k] = np.clip((flat[k] - lo) / (hi - lo), 0.0, 1.0)
            else:
                out[k] = flat[k] > lo
        return out.reshape(block.shape).astype(np.float32)
    return scale


def _block_means(read, height, width, cores):
    """8x8 block means of the channel mean, as :func:`recipes.foreground` computes them, tile by tile."""
    binned = np.empty((-(-height // BIN), -(-width // BIN)))
    for y0, y1, x0, x1 in cores:
        image = np.asarray(read(y0, y1, x0, x1), np.float64).mean(axis=0)
        rows, cols = -(-(y1 - y0) // BIN), -(-(x1 - x0) // BIN)
        padded = np.full((rows * BIN, cols * BIN), np.nan)
        padded[:y1 - y0, :x1 - x0] = image
        binned[y0 // BIN:y0 // BIN + rows, x0 // BIN:x0 // BIN + cols] = np.nanmean(
            padded.reshape(rows, BIN, cols, BIN), axis=(1, 3))
    return binned > np.quantile(binned, 0.5)


# -- the result ---------------------------------------------------------------------------------------------
class StreamResult(NamedTuple):
    """What :func:`stream_segment` found; the per-pixel arrays live in the workspace until it is closed.

    Attributes
    ----------
    logits : ndarray of float32, shape (C,)
    present : ndarray of bool, shape (C,)
    masks : memmap of uint8 (K, H, W), 1 inside
    labels : memmap of uint32 (K, H, W), labels numbered per tile
    relabel : list of K ndarray
        ``relabel[k][labels[k]]`` is the label image ``ndimage.label`` gives
        the whole mask k (8-connected, numbered in raster order).
    counts : ndarray of int64, shape (K,)
        Objects of at least `min_area` pixels (as :func:`detection.count`).
    areas : ndarray of int64, shape (K,)
        Mask pixels.
    thresholds : list of K float or None
        The threshold each mask used (None: empty mask).
    """

    logits: np.ndarray
    present: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    relabel: list
    counts: np.ndarray
    areas: np.ndarray
    thresholds: list

    def mask_block(self, k, y0, y1, x0, x1):
        return self.masks[k, y0:y1, x0:x1] * np.uint8(255)

    def label_block(self, k, y0, y1, x0, x1):
        return self.relabel[k][self.labels[k, y0:y1, x0:x1]]


# -- the engine ---------------------------------------------------------------------------------------------
def _upsampled(cams, j, y0, y1, x0, x1, height, width, norms):
    """The eight maps of class slot j over a core, at full resolution, normalised as local_maps does."""
    maps = np.empty((8, y1 - y0, x1 - x0), np.float32)
    for layer, stride in enumerate(LAYER_STRIDES):
        store = cams[j][layer]
        rows = np.minimum(np.arange(y0, y1) // stride, store.shape[0] - 1)
        cols = np.minimum(np.arange(x0, x1) // stride, store.shape[1] - 1)
        part = np.asarray(store[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])[rows - rows[0]][:, cols - cols[0]]
        if norms is not None:
            low, high = norms[j][layer]
            part = (part - low) / (high - low + np.float32(_EPS))
        maps[layer] = part
    return maps


def stream_segment(model, reader, recipe="actin", settings=None, workdir=".", *, tile=512, margin=32,
                   normalize="auto", min_area=1, device=None, progress=None, **overrides):
    """Masks, labels and counts of one large image, as ``recipes.segment`` on its whole-image maps.

    Parameters
    ----------
    model : MICRANet
    reader : TileReader
        From :func:`micranet_utils.io.tiles.open_tiles` (or any object with
        ``shape`` (C, H, W) and ``read(y0, y1, x0, x1)``).
    recipe : str or Recipe
        Its threshold must be one of :data:`STREAMED`.
    settings : dict, optional
        ``normalize``, ``thresholds``, ``strict`` (``ensemble.gradcam_settings``);
        default: normalised maps, ``p > 0.5``.
    workdir : str or Path
        Where the hidden temporary folder goes (next to the output).
    tile, margin : int
        Core side and margin of the network tiles (see
        :func:`micranet_utils.model.tiled_gradcam.check_tiling`).
    normalize : {"auto", "percentile", "none"}
        Intensities, as :func:`micranet_utils.io.images.prepare_image`.
    min_area : int
        Smallest object counted.
    device : torch.device, optional
        Default: the model's.
    progress : callable, optional
        ``progress(step_name)`` at each tile of the network passes.

    Returns
    -------
    StreamResult, Workspace
        Close the workspace (``with``) once the outputs are written.
    """
    recipe = get_recipe(recipe, **overrides)
    if recipe.threshold not in STREAMED:
        raise MicranetError(f"recipe {recipe.name!r} ({recipe.threshold} threshold) is not streamed; "
                            f"streamed thresholds: {', '.join(STREAMED)}")
    settings = settings or {"normalize": True, "thresholds": 0.5, "strict": True}
    tile, margin = check_tiling(tile, margin)
    channels, height, width = reader.shape
    if min(height, width) < 8:
        raise MicranetError(f"{getattr(reader, 'path', 'image')}: image is {height}x{width} pixels; "
                            "MICRA-Net needs at least 8x8")
    if recipe.threshold == "pair_otsu" and model.num_classes % 2:
        raise MicranetError(f"recipe {recipe.name!r} works on class pairs; got {model.num_classes} classes")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    note = progress or (lambda step: None)
    windows = tile_windows(height, width, tile, margin)
    cores = [core for core, _ in windows]
    workspace = Workspace(workdir)
    try:
        result = _run(model, reader, recipe, settings, workspace, windows, cores, tile, margin, normalize,
                      min_area, device, note)
    except BaseException:
        workspace.close()
        raise
    return result, workspace


def _run(model, reader, recipe, settings, ws, windows, cores, tile, margin, normalize, min_area, device, note):
    _, height, width = reader.shape
    training = model.training
    model.eval()
    try:
        scale = _intensity_scaling(reader, normalize, cores)

        def read(y0, y1, x0, x1):
            return scale(reader.read(y0, y1, x0, x1))

        keep = _block_means(read, height, width, cores) if recipe.gate_foreground else None
        maxima, cells = global_max(model, read, height, width, tile, margin, device, lambda: note("max"))
        with torch.inference_mode():
            logits = model.linear1(torch.from_numpy(maxima)[None].to(device)).float().cpu().numpy()
        present = predicted(logits, settings["thresholds"], strict=settings["strict"])[0]
        classes = [int(c) for c in np.flatnonzero(present)]
        smoothed = {}
        if classes:
            alphas = layer_weights(model, read, height, width, maxima, cells, classes, device, tile, margin)
            smoothed = _scores(model, read, recipe, settings, ws, windows, height, width, classes, alphas,
                               keep, device, note)
    finally:
        model.train(training)
    masks, thresholds = _threshold(recipe, ws, smoothed, model.num_classes, cores, height, width)
    labels, relabel, counts, areas = _objects(ws, masks, cores, width, min_area)
    return StreamResult(logits[0], present, masks, labels, relabel, counts, areas, thresholds)


def _scores(model, read, recipe, settings, ws, windows, height, width, classes, alphas, keep, device, note):
    """Steps 1-3 of the recipe for the present classes: {class: float32 memmap (H, W)} of smoothed scores."""
    cams = [[ws.array(f"cam{j}_{layer}", ((height // s), (width // s)), np.float32)
             for layer, s in enumerate(LAYER_STRIDES)] for j in range(len(classes))]
    low = np.full((len(classes), 8), np.inf, np.float32)
    high = np.full((len(classes), 8), -np.inf, np.float32)
    for (y0, y1, x0, x1), (wy0, wy1, wx0, wx1) in windows:
        x = torch.from_numpy(read(wy0, wy1, wx0, wx1)[None]).to(device)
        for layer, (cam, stride) in enumerate(zip(tile_cams(model, x, alphas), LAYER_STRIDES)):
            r0, r1 = layer_cells(y0, y1, stride, height)
            c0, c1 = layer_cells(x0, x1, stride, width)
            if r1 <= r0 or c1 <= c0:
                continue
            core = cam[:, r0 - wy0 // stride:r1 - wy0 // stride, c0 - wx0 // stride:c1 - wx0 // stride]
            core = core.float().cpu().numpy()
            for j in range(len(classes)):
                cams[j][layer][r0:r1, c0:c1] = core[j]
            low[:, layer] = np.minimum(low[:, layer], core.min(axis=(1, 2)))
            high[:, layer] = np.maximum(high[:, layer], core.max(axis=(1, 2)))
        note("maps")
    norms = [list(zip(low[j], high[j])) for j in range(len(classes))] if settings["normalize"] else None
    cores = [core for core, _ in windows]
    out = {}
    for j, c in enumerate(classes):
        out[c] = _combine(recipe, ws, cams, j, c, cores, height, width, norms, keep)
        for layer in range(8):
            ws.drop(f"cam{j}_{layer}")
    return out


def _combine(recipe, ws, cams, j, c, cores, height, width, norms, keep):
    """Combined, normalised, smoothed map of one class (float32 memmap), or None for an empty gate."""
    count, mean, scatter, gate_any = 0, np.zeros(7), np.zeros((7, 7)), False
    for y0, y1, x0, x1 in cores:                                     # PCA statistics
        maps = _upsampled(cams, j, y0, y1, x0, x1, height, width, norms)
        values = maps[:LAYER_4B].reshape(LAYER_4B, -1).astype(np.float64)
        n = values.shape[1]
        tile_mean = values.mean(axis=1)
        centred = values - tile_mean[:, None]
        delta = tile_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        scatter += centred @ centred.T + np.outer(delta, delta) * (count * n / total)
        count = total
        gate = _gate(maps, keep, y0, y1, x0, x1)
        gate_any = gate_any or bool(gate.any())
    if not gate_any:
        return None
    _, vectors = np.linalg.eigh(scatter / count)
    component = vectors[:, -1]
    component = component * np.sign(component[np.argmax(np.abs(component))] or 1.0)
    raw = ws.array(f"raw{c}", (height, width), np.float64)
    oriented, lows, highs = 0.0, [], []
    for y0, y1, x0, x1 in cores:                                     # unsmoothed scores
        maps = _upsampled(cams, j, y0, y1, x0, x1, height, width, norms)
        values = maps[:LAYER_4B].reshape(LAYER_4B, -1).astype(np.float64)
        scores = (component @ (values - mean[:, None])).reshape(y1 - y0, x1 - x0)
        raw[y0:y1, x0:x1] = scores
        oriented += float(np.sum(scores * np.maximum(maps[LAYER_4B], 0)))
        gate = _gate(maps, keep, y0, y1, x0, x1)
        if gate.any():
            lows.append(scores[gate].min())
            highs.append(scores[gate].max())
    sign = -1.0 if oriented < 0 else 1.0
    low, high = (min(lows), max(highs)) if sign > 0 else (-max(highs), -min(lows))
    radius = int(4.0 * recipe.sigma + 0.5) if recipe.sigma > 0 else 0
    out = ws.array(f"score{c}", (height, width), np.float32)
    for y0, y1, x0, x1 in cores:                                     # normalised, smoothed
        wy0, wy1 = max(0, y0 - radius), min(height, y1 + radius)
        wx0, wx1 = max(0, x0 - radius), min(width, x1 + radius)
        scores = np.array(raw[wy0:wy1, wx0:wx1])
        if sign < 0:
            scores = -scores
        if recipe.normalize:
            scores = (scores - low) / (high - low if high > low else 1.0)
        if recipe.sigma > 0:
            scores = ndimage.gaussian_filter(scores, recipe.sigma, mode="nearest", truncate=4.0)
        out[y0:y1, x0:x1] = scores[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    ws.drop(f"raw{c}")
    return out


def _gate(maps, keep, y0, y1, x0, x1):
    gate = maps[LAYER_4B] > 0
    if keep is not None:
        gate &= keep[np.arange(y0, y1)[:, None] // BIN, np.arange(x0, x1)[None, :] // BIN]
    return gate


def _score_tile(smoothed, c, core):
    y0, y1, x0, x1 = core
    if smoothed.get(c) is None:
        return np.zeros((y1 - y0, x1 - x0), np.float32)
    return np.asarray(smoothed[c][y0:y1, x0:x1])


def _range(chunks):
    low = min((v.min() for v in chunks() if v.size), default=None)
    high = max((v.max() for v in chunks() if v.size), default=None)
    return low, high


def _otsu_level(chunks, low, high):
    """skimage's threshold_otsu of all values ``chunks()`` yields, whose range is [low, high], low < high."""
    counts = sum(np.histogram(v, bins=256, range=(low, high))[0] for v in chunks())
    edges = np.histogram(np.array([low, high]), bins=256, range=(low, high))[1]
    return threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2.0))


def _threshold(recipe, ws, smoothed, num_classes, cores, height, width):
    pairs = recipe.threshold == "pair_otsu"
    count = num_classes // 2 if pairs else num_classes
    masks = ws.array("masks", (count, height, width), np.uint8)
    thresholds = [None] * count
    for k in range(count):
        if pairs:
            def values(k=k, core=None):
                return _score_tile(smoothed, 2 * k, core) - _score_tile(smoothed, 2 * k + 1, core)

            def chunks(k=k):
                return (d[d != 0] for d in (values(k, core) for core in cores))
            low, high = _range(chunks)
            if low is None:
                masks[k] = 0
                continue
            level = _otsu_level(chunks, low, high) if high > low else low
            for core in cores:
                y0, y1, x0, x1 = core
                masks[k, y0:y1, x0:x1] = values(k, core) >= level
        else:
            if smoothed.get(k) is None or not any(np.any(smoothed[k][y0:y1, x0:x1]) for y0, y1, x0, x1 in cores):
                masks[k] = 0
                continue

            def chunks(k=k):
                return (np.asarray(smoothed[k][y0:y1, x0:x1]).ravel() for y0, y1, x0, x1 in cores)
            if recipe.threshold == "quantile":
                level = exact_quantile(chunks, recipe.quantile)
            else:
                low, high = _range(chunks)
                if not high > low:
                    masks[k] = 0
                    continue
                level = _otsu_level(chunks, low, high)
            for y0, y1, x0, x1 in cores:
                masks[k, y0:y1, x0:x1] = smoothed[k][y0:y1, x0:x1] > level
        thresholds[k] = float(level)
    for c in list(smoothed):
        if smoothed[c] is not None:
            ws.drop(f"score{c}")
    return masks, thresholds


def _objects(ws, masks, cores, width, min_area):
    """Per-tile 8-connected labels merged across tile borders; numbering and counts as the whole mask's."""
    count, height = masks.shape[0], masks.shape[1]
    labels = ws.array("labels", masks.shape, np.uint32)
    relabel, counts, areas = [], np.zeros(count, np.int64), np.zeros(count, np.int64)
    structure = np.ones((3, 3), bool)
    row_cuts = sorted({y0 for y0, _, _, _ in cores} - {0})
    col_cuts = sorted({x0 for _, _, x0, _ in cores} - {0})
    for k in range(count):
        offset, sizes, firsts = 0, [np.zeros(1, np.int64)], [np.full(1, -1, np.int64)]
        for y0, y1, x0, x1 in cores:
            tile_labels, found = ndimage.label(masks[k, y0:y1, x0:x1], structure=structure)
            if found:
                flat = tile_labels.ravel()
                sizes.append(np.bincount(flat, minlength=found + 1)[1:])
                _, first = np.unique(flat, return_index=True)
                first = first[1:] if flat[first[0]] == 0 else first
                rows, cols = np.divmod(first, x1 - x0)
                firsts.append((rows + y0) * np.int64(width) + cols + x0)
                tile_labels[tile_labels > 0] += offset
            labels[k, y0:y1, x0:x1] = tile_labels
            offset += found
        sizes, firsts = np.concatenate(sizes), np.concatenate(firsts)
        a, b = [], []
        for cut in row_cuts:
            _link(labels[k, cut - 1, :], labels[k, cut, :], a, b)
        for cut in col_cuts:
            _link(labels[k, :, cut - 1], labels[k, :, cut], a, b)
        a = np.concatenate(a) if a else np.zeros(0, np.int64)
        b = np.concatenate(b) if b else np.zeros(0, np.int64)
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(offset + 1, offset + 1))
        _, component = connected_components(graph, directed=False)
        groups = component.max() + 1
        group_size = np.bincount(component, weights=sizes, minlength=groups).astype(np.int64)
        group_first = np.full(groups, np.iinfo(np.int64).max)
        np.minimum.at(group_first, component, np.where(firsts < 0, np.iinfo(np.int64).max, firsts))
        background = component[0]
        objects = [g for g in np.argsort(group_first, kind="stable") if g != background]
        number = np.zeros(groups, np.uint32)
        number[objects] = np.arange(1, len(objects) + 1, dtype=np.uint32)
        relabel.append(number[component])
        counts[k] = int(np.count_nonzero(group_size[objects] >= min_area)) if objects else 0
        areas[k] = int(sizes[1:].sum())
    return labels, relabel, counts, areas


def _link(first, second, a, b):
    """Pairs of labels 8-adjacent across a cut: first[i] with second[i - 1], second[i], second[i + 1]."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    n = len(first)
    for d in (-1, 0, 1):
        left = first[max(0, -d):n - max(0, d)]
        right = second[max(0, d):n - max(0, -d)]
        both = (left > 0) & (right > 0)
        a.append(left[both])
        b.append(right[both])
