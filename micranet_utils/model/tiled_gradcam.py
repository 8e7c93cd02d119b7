"""Grad-CAM of a whole image computed tile by tile, in memory that does not grow with the image.

:func:`micranet_utils.model.gradcam.local_maps` needs the whole image at once for two
reasons, and both are small: the logit is ``w_c . max over the image of A_4b``
(a global *max* pool), and each layer's weights ``alpha_k`` are the mean over
the image of ``d logit / d A_k``. Everything else is local: a layer's
activation at a cell depends only on the input pixels in its receptive field.

So the maps of the whole image are computed in three steps, none holding more
than one tile (:func:`tile_windows`: a core of ``tile`` pixels plus a margin
of at least :data:`RECEPTIVE_RADIUS` pixels on each side, aligned to 8 so that
the max pooling grid is the image's):

1. :func:`global_max`: one forward pass per tile gives, per 4b channel, the
   largest activation of its core and where (first in row-major order on
   ties, as PyTorch's max pool); the logits follow exactly;
2. :func:`layer_weights`: the gradient of ``logit_c`` reaches the network
   only through those at most 256 cells. Each cell's window (the cell, 32
   pixels each side), or the tile holding several when that is smaller, gets
   one forward and one backward pass per class, all windows of one size in
   one batch; the gradients summed over the windows and divided by the
   layer's size are the ``alpha`` of the whole image;
3. :func:`tile_cams`: per tile, ``sum_k alpha_k A_k`` (ReLU for 4b) at the
   layers' own resolutions, cropped to the core.

The results equal the whole image's up to the order of floating-point sums
(``alpha`` is summed over windows instead of over the whole map).
"""

import numpy as np
import torch

from ..base.errors import MicranetError
from .gradcam import LAYER_STRIDES

__all__ = ["RECEPTIVE_RADIUS", "ALIGN", "check_tiling", "tile_starts", "tile_windows", "layer_cells",
           "global_max", "layer_weights", "tile_cams"]

RECEPTIVE_RADIUS = 30
"""int: a 4b cell (8 x 8 input pixels) sees this many more input pixels on each side."""
ALIGN = 8
"""int: tiles start on multiples of the deepest stride, so pooling cuts them as it cuts the image."""
_WINDOW_MARGIN = 32                      # RECEPTIVE_RADIUS rounded up to ALIGN


def check_tiling(tile, margin):
    """Refuse a tile or margin that cannot give exact maps, in one line; return them as ints."""
    tile, margin = int(tile), int(margin)
    if margin < RECEPTIVE_RADIUS:
        raise MicranetError(f"margin {margin} is smaller than MICRA-Net's receptive field radius "
                            f"({RECEPTIVE_RADIUS} pixels); use a margin of {RECEPTIVE_RADIUS + 2} or more")
    if tile < 2 * RECEPTIVE_RADIUS + ALIGN:
        raise MicranetError(f"tile {tile} is smaller than MICRA-Net's receptive field "
                            f"({2 * RECEPTIVE_RADIUS + ALIGN} pixels); use a tile of at least 128")
    return tile - tile % ALIGN, margin + (-margin) % ALIGN


def tile_starts(length, tile):
    """Starts and stops of the cores along one axis: multiples of 8, the last one up to `length`."""
    starts = list(range(0, length, tile))
    if len(starts) > 1 and length - starts[-1] < tile // 2:
        starts.pop()                                       # a small remainder joins the last core
    return list(zip(starts, starts[1:] + [length]))


def tile_windows(height, width, tile, margin):
    """Every core with its window: list of ((y0, y1, x0, x1) core, (wy0, wy1, wx0, wx1) window)."""
    out = []
    for y0, y1 in tile_starts(height, tile):
        for x0, x1 in tile_starts(width, tile):
            out.append(((y0, y1, x0, x1), (max(0, y0 - margin), min(height, y1 + margin),
                                           max(0, x0 - margin), min(width, x1 + margin))))
    return out


def layer_cells(start, stop, stride, length):
    """Cells of a layer of `stride` whose pixels start in [start, stop) (the last core takes the rest)."""
    return start // stride, (stop // stride if stop < length else length // stride)


def _run(model, x, grad=False):
    if grad:
        x = x.requires_grad_(True)
        return model.forward_with_activations(x)
    with torch.inference_mode():
        return model.forward_with_activations(x)


def global_max(model, read, height, width, tile, margin, device, progress=None):
    """Per 4b channel: the largest activation over the image and its cell (row, column).

    Parameters
    ----------
    model : MICRANet
        In eval mode.
    read : callable
        ``read(y0, y1, x0, x1)`` -> float32 (C_in, h, w), intensities as the model expects.
    height, width, tile, margin : int
    device : torch.device
    progress : callable, optional
        Called with no argument after each tile.

    Returns
    -------
    maxima : ndarray of float32, shape (K,)
    cells : ndarray of int64, shape (K, 2)
    """
    best, where = None, None
    for (y0, y1, x0, x1), (wy0, wy1, wx0, wx1) in tile_windows(height, width, tile, margin):
        x = torch.from_numpy(read(wy0, wy1, wx0, wx1)[None]).to(device)
        deepest = _run(model, x)[1][-1][0]
        r0, r1 = layer_cells(y0, y1, 8, height)
        c0, c1 = layer_cells(x0, x1, 8, width)
        core = deepest[:, r0 - wy0 // 8:r1 - wy0 // 8, c0 - wx0 // 8:c1 - wx0 // 8]
        if core.numel() == 0:
            continue
        flat = core.reshape(core.shape[0], -1)
        values, index = flat.max(dim=1)             # first occurrence in the core
        values, index = values.cpu().numpy(), index.cpu().numpy()
        rows = r0 + index // core.shape[2]
        cols = c0 + index % core.shape[2]
        here = np.stack([rows, cols], axis=1)
        if best is None:
            best, where = values.copy(), here
        else:
            # larger wins; on a tie the earlier cell in the image's row-major order
            better = (values > best) | ((values == best) & ((rows < where[:, 0])
                                                            | ((rows == where[:, 0]) & (cols < where[:, 1]))))
            best[better], where[better] = values[better], here[better]
        if progress:
            progress()
    return best.astype(np.float32), where.astype(np.int64)


def _window(cell, length):
    """Input rows of the window around a 4b cell: 8 pixels plus 32 each side, inside the image."""
    start = max(0, cell * 8 - _WINDOW_MARGIN)
    return start, min(length, cell * 8 + 8 + _WINDOW_MARGIN)


def _merge_windows(windows):
    """Join overlapping windows while their bounding box is no larger than the two together."""
    boxes = list(windows.items())
    i = 0
    while i < len(boxes):
        j = i + 1
        while j < len(boxes):
            (a, ka), (b, kb) = boxes[i], boxes[j]
            union = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
            area = (union[1] - union[0]) * (union[3] - union[2])
            if area <= (a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]):
                boxes[i] = (union, ka + kb)
                del boxes[j]
                j = i + 1                                  # the larger box may now reach earlier ones
            else:
                j += 1
        i += 1
    return dict(boxes)


def _seed_windows(height, width, tile, margin, cells, live):
    """Windows to backpropagate from, each with its seeds: [((y0, y1, x0, x1), [channel, ...]), ...].

    Per tile core holding maxima: its whole window when that is smaller than
    the small windows (a cell and 32 pixels each side) of its distinct cells.
    """
    chosen = []
    for (y0, y1, x0, x1), window in tile_windows(height, width, tile, margin):
        r0, r1 = layer_cells(y0, y1, 8, height)
        c0, c1 = layer_cells(x0, x1, 8, width)
        inside = [k for k in live if r0 <= cells[k, 0] < r1 and c0 <= cells[k, 1] < c1]
        if not inside:
            continue
        small = {}
        for k in inside:
            key = _window(int(cells[k, 0]), height) + _window(int(cells[k, 1]), width)
            small.setdefault(key, []).append(k)
        small = _merge_windows(small)
        area = sum((b - a) * (d - c) for a, b, c, d in small)
        if area < (window[1] - window[0]) * (window[3] - window[2]):
            chosen += list(small.items())
        else:
            chosen.append((window, inside))
    return chosen


def layer_weights(model, read, height, width, maxima, cells, classes, device, tile=512, margin=32):
    """Grad-CAM ``alpha`` of every layer for the whole image, from windows around the 4b maxima.

    Returns
    -------
    list of 8 ndarray of float32, shape (len(classes), K_l)
    """
    weight = model.linear1.weight.detach()
    sizes = [(height // s) * (width // s) for s in LAYER_STRIDES]
    sums = [np.zeros((len(classes), getattr(model, f"bnorm{n}").num_features), np.float64)
            for n in ("1a", "1b", "2a", "2b", "3a", "3b", "4a")]
    live = [k for k in range(len(maxima)) if maxima[k] > 0]      # a dead channel's ReLU passes no gradient
    by_shape = {}
    for box, channels in _seed_windows(height, width, tile, margin, cells, live):
        by_shape.setdefault((box[1] - box[0], box[3] - box[2]), []).append((box, channels))
    for group in by_shape.values():
        batch = torch.from_numpy(np.stack([read(*box) for box, _ in group])).to(device)
        with torch.enable_grad():
            _, activations = _run(model, batch, grad=True)
            b_index, k_index, y_index, x_index = [], [], [], []
            for b, (box, channels) in enumerate(group):
                for k in channels:
                    b_index.append(b)
                    k_index.append(k)
                    y_index.append(int(cells[k, 0]) - box[0] // 8)
                    x_index.append(int(cells[k, 1]) - box[2] // 8)
            picked = activations[-1][b_index, k_index, y_index, x_index]
            for j, c in enumerate(classes):
                seed = (picked * weight[c, k_index].to(picked.device)).sum()
                grads = torch.autograd.grad(seed, activations[:-1], retain_graph=j < len(classes) - 1)
                for layer, grad in enumerate(grads):
                    sums[layer][j] += grad.sum(dim=(0, 2, 3)).cpu().numpy()
    alphas = [(s / n).astype(np.float32) for s, n in zip(sums, sizes[:-1])]
    alphas.append((weight[classes].double().cpu().numpy() / sizes[-1]).astype(np.float32))
    return alphas


def tile_cams(model, window, alphas):
    """Class activation maps of one window at each layer's resolution (not normalised).

    Parameters
    ----------
    window : Tensor, shape (1, C_in, h, w)
    alphas : list of 8 ndarray (C, K_l)

    Returns
    -------
    list of 8 Tensor, shape (C, h // s, w // s), on the window's device
    """
    _, activations = _run(model, window)
    cams = []
    with torch.inference_mode():
        for layer, act in enumerate(activations):
            alpha = torch.from_numpy(alphas[layer]).to(act.device)
            # one class at a time, in the form local_maps uses, so that the sums run in the same order
            cam = torch.cat([torch.einsum("bk,bkhw->bhw", alpha[j:j + 1], act) for j in range(len(alpha))])
            if layer == len(activations) - 1:
                cam = cam.clamp_(min=0)
            cams.append(cam)
    return cams
