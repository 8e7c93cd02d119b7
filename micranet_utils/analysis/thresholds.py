"""Step 4 of the recipes: the rules that turn one combined map into a mask.

Each function takes the map(s) of one image and returns a boolean mask of the
same height and width. :func:`micranet_utils.analysis.recipes.threshold_scores` picks
the rule named by a recipe and applies it to every image and class;
call these directly only to try a rule on a single map.
"""

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["BIN", "quantile_mask", "otsu_mask", "pair_masks", "fill_small_holes", "peak_mask", "block_mask"]

BIN = 8               # side of the Actin foreground bins and the MNIST blocks, in pixels


def quantile_mask(score, quantile):
    """Actin: the pixels strictly above the `quantile` of `score`.

    Parameters
    ----------
    score : ndarray, shape (H, W)
    quantile : float
        In [0, 1]; 0.8 keeps the top 20 % of the pixels.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    return score > np.quantile(score, quantile)


def otsu_mask(values, strict=False):
    """The values above Otsu's threshold; a constant array has no two classes: none above.

    Parameters
    ----------
    values : ndarray
        Any shape.
    strict : bool
        ``>`` instead of ``>=`` the threshold.

    Returns
    -------
    ndarray of bool, shape of `values`
    """
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(values.shape, bool)
    level = threshold_otsu(values)
    return values > level if strict else values >= level


def pair_masks(scores):
    """CTC: class 2k minus class 2k + 1, at or above Otsu's threshold of its non-zero values.

    Parameters
    ----------
    scores : ndarray, shape (C, H, W)
        Combined maps of one image; C even.

    Returns
    -------
    ndarray of bool, shape (C / 2, H, W)
    """
    masks = np.zeros((len(scores) // 2,) + scores.shape[1:], bool)
    for k, difference in enumerate(scores[0::2] - scores[1::2]):
        nonzero = difference != 0
        if nonzero.any():
            values = difference[nonzero]
            level = threshold_otsu(values) if values.max() > values.min() else values[0]
            masks[k] = difference >= level
    return masks


def fill_small_holes(binary, max_area):
    """Fill the 4-connected background regions smaller than `max_area` pixels.

    Parameters
    ----------
    binary : ndarray of bool, shape (H, W)
    max_area : int

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    holes, count = ndimage.label(~binary)
    small = np.bincount(holes.ravel(), minlength=count + 1) < max_area
    small[0] = False
    return binary | small[holes]


def peak_mask(score, sigma, quantile, hole_area):
    """EM, P. vivax: the one thresholded object around the highest value of `score`.

    `score` is smoothed again (Gaussian `sigma`), thresholded at its `quantile`
    (Otsu's threshold when `quantile` is None), holes smaller than `hole_area`
    are filled, and the 8-connected object holding the peak is kept; when the
    peak lies in a hole, the innermost object whose outline encloses it.

    Parameters
    ----------
    score : ndarray, shape (H, W)
    sigma : float
    quantile : float or None
    hole_area : int

    Returns
    -------
    ndarray of bool, shape (H, W)
        Empty when no object holds or encloses the peak.
    """
    padded = np.pad(score.astype(np.float64), 1)
    peak = np.unravel_index(np.argmax(padded), padded.shape)
    smooth = ndimage.gaussian_filter(padded, sigma, mode="nearest", truncate=4.0)
    if quantile is not None:
        binary = smooth > np.quantile(smooth, quantile)
    elif np.any(smooth):
        binary = otsu_mask(smooth)
    else:
        binary = np.zeros(smooth.shape, bool)
    binary = fill_small_holes(binary, hole_area)
    labels, count = ndimage.label(binary, structure=np.ones((3, 3)))
    chosen = labels[peak]
    if chosen == 0 and count:
        # the peak sits in a hole: take the innermost object whose filled outline encloses it
        enclosing = [(np.count_nonzero(filled), j) for j in range(1, count + 1)
                     if (filled := ndimage.binary_fill_holes(labels == j))[peak]]
        chosen = min(enclosing)[1] if enclosing else 0
    return (labels == chosen)[1:-1, 1:-1] if chosen else np.zeros(score.shape, bool)


def block_mask(values):
    """MNIST: Otsu inside the 8x8 blocks whose range is above Otsu's threshold of all block ranges.

    Parameters
    ----------
    values : ndarray, shape (H, W)
        Blocks at the right and bottom borders are zero-padded to 8x8.

    Returns
    -------
    ndarray of bool, shape (H, W)
    """
    height, width = values.shape
    rows, cols = -(-height // BIN), -(-width // BIN)
    padded = np.zeros((rows * BIN, cols * BIN))
    padded[:height, :width] = values
    blocks = padded.reshape(rows, BIN, cols, BIN).transpose(0, 2, 1, 3)
    spread = blocks.max(axis=(2, 3)) - blocks.min(axis=(2, 3))
    mask = np.zeros_like(blocks, bool)
    for j, i in np.argwhere(otsu_mask(spread, strict=True)):
        mask[j, i] = otsu_mask(blocks[j, i], strict=True)
    return mask.transpose(0, 2, 1, 3).reshape(padded.shape)[:height, :width]
