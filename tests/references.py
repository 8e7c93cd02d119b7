"""Plain references for the five post-processing recipes, written from the reference (§6, §7, §11).

Nothing here calls :mod:`micranet_utils`: the constants are copied from the
reference's description of the original scripts, not from ``RECIPES``; the
PCA is an SVD of the (pixels, 7) matrix instead of the package's 7x7
eigen-decomposition; smoothing, Otsu, hole filling and labelling use the
scikit-image functions the original scripts used (``gaussian``,
``threshold_otsu``, ``remove_small_holes``, ``measure.label``); the loops
follow the original per image, class and component.

Where the package departs from the original on purpose (recipes module
docstring and reference §11), these references follow the package's
documented rule, and say so:

* **sign of the first principal component** (#8): the original orients it by
  the 4b-weighted mean for Actin and EM only and keeps scikit-learn's sign
  elsewhere, a sign that is arbitrary and has changed between library
  versions. The package orients every recipe, so the references do too; the
  SVD's own sign never matters.
* **empty gate** (#19b): an empty mask instead of an exception.
* **peak object** (#18, #19): the 8-connected object holding the peak pixel,
  else the innermost object whose outline encloses it, else an empty mask;
  always of the image's shape. (The original tests the peak against traced
  contours, which are open when the object touches the padded border.)
* **MNIST boxes**: several components' results are merged (OR); the original
  overwrote the box.
"""

import numpy as np
from skimage import measure
from skimage.filters import gaussian, threshold_otsu
from skimage.morphology import remove_small_holes

# the published constants (reference §7), one entry per data set
SETTINGS = {
    "actin": {"foreground": True, "normalize": True, "sigma": 1.0},
    "ctc": {"foreground": False, "normalize": True, "sigma": 3.0},
    "em": {"foreground": False, "normalize": True, "sigma": 1.0, "peak_sigma": 5.0, "peak_quantile": 0.9},
    "pvivax": {"foreground": False, "normalize": False, "sigma": 3.0, "peak_sigma": 10.0, "peak_quantile": None},
    "mnist": {"foreground": False, "normalize": False, "sigma": 0.0},
}
ACTIN_QUANTILE = 0.8
HOLE_AREA = 2500
MNIST_CERTAINTY = 0.3


def reference_foreground(image):
    """The original rule on multiples of 8: 8x8 bin means above their median, repeated."""
    h, w = image.shape
    binned = np.zeros((h // 8, w // 8))
    for j in range(h // 8):
        for i in range(w // 8):
            binned[j, i] = image[j * 8:(j + 1) * 8, i * 8:(i + 1) * 8].mean()
    keep = binned > np.quantile(binned, 0.5)
    return np.kron(keep, np.ones((8, 8), bool)).astype(bool)


def reference_pca7(maps, sign=1):
    """Scores (H, W) on the first principal component of layers 1a-4a, structure high.

    An exact SVD of the centred (pixels, 7) matrix, then oriented so that the
    4b-weighted mean of the scores is positive (the package's rule for every
    recipe, see the module docstring). ``sign=-1`` returns the opposite
    orientation, to show a test that the sign matters on its input.
    """
    pixels = maps.reshape(8, -1).T.astype(np.float64)                  # (H*W, 8)
    centred = pixels[:, :7] - pixels[:, :7].mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    scores = centred @ vt[0]
    if np.average(scores, weights=np.maximum(pixels[:, 7], 0)) < 0:
        scores = -scores
    return sign * scores.reshape(maps.shape[1:])


def reference_raw(maps, image, name, sign=1, sigma=None):
    """The "raw" map of one image and class (8, H, W) -> (H, W), or None when the gate is empty.

    Gate: 4b > 0 (and, for Actin, the foreground); min-max over the gate pixels
    only (Actin, CTC, EM), applied to every pixel; Gaussian smoothing (`sigma`
    replaces the recipe's).
    """
    settings = dict(SETTINGS[name], **({} if sigma is None else {"sigma": sigma}))
    gate = maps[7] > 0
    if settings["foreground"]:
        gate &= reference_foreground(np.mean(image, axis=0) if image.ndim == 3 else image)
    if gate.sum() < 1:
        return None
    scores = reference_pca7(maps, sign)
    if settings["normalize"]:
        low, high = scores[gate].min(), scores[gate].max()
        scores = (scores - low) / (high - low)
    if settings["sigma"] > 0:
        scores = gaussian(scores, sigma=settings["sigma"])
    return scores


def reference_pair_otsu(raw):
    """CTC: D_k = raw[2k] - raw[2k+1]; Otsu of D_k's non-zero values (>=); empty when D_k is all zero."""
    masks = []
    for k in range(len(raw) // 2):
        difference = raw[2 * k] - raw[2 * k + 1]
        values = difference[difference != 0]
        masks.append(difference >= threshold_otsu(values) if values.size else np.zeros(difference.shape, bool))
    return np.array(masks)


def _holes(component):
    """The holes of `component` (bool): background pixels not 4-connected to the array border."""
    background = measure.label(~component, connectivity=1)
    outside = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    return (background != 0) & ~np.isin(background, outside)


def reference_peak(raw, sigma, quantile, hole_area=HOLE_AREA):
    """EM, P. vivax: the one object around the peak of `raw` (H, W) -> bool (H, W).

    Pad 1 px of zeros, take the argmax, smooth again, keep > quantile (EM) or
    >= Otsu (P. vivax, unless the map is all zero), fill holes of fewer than
    `hole_area` pixels, then the 8-connected object holding the peak, else the
    innermost one enclosing it (the package's rule, see the module docstring).
    """
    padded = np.pad(raw.astype(np.float64), 1)
    peak = np.unravel_index(np.argmax(padded), padded.shape)
    smooth = gaussian(padded, sigma=sigma)
    if quantile is not None:
        binary = smooth > np.quantile(smooth, quantile)
    elif smooth.min() == smooth.max() == 0:
        binary = np.zeros(smooth.shape, bool)
    else:
        binary = smooth >= threshold_otsu(smooth)
    binary = remove_small_holes(binary, max_size=hole_area - 1)          # holes of < hole_area pixels
    objects = measure.label(binary, connectivity=2)
    if objects[peak]:
        chosen = objects == objects[peak]
    else:
        chosen, smallest = np.zeros(padded.shape, bool), np.inf
        for j in range(1, objects.max() + 1):
            component = objects == j
            holes = _holes(component)
            if holes[peak] and component.sum() + holes.sum() < smallest:
                chosen, smallest = component, component.sum() + holes.sum()
    return chosen[1:-1, 1:-1]


def reference_block_otsu(values):
    """Original MNIST threshold_image on an array whose sides are multiples of 8."""
    rows, cols = values.shape[0] // 8, values.shape[1] // 8
    spread = np.array([[np.ptp(values[j * 8:j * 8 + 8, i * 8:i * 8 + 8]) for i in range(cols)] for j in range(rows)])
    active = spread > threshold_otsu(spread)
    out = np.zeros(values.shape, bool)
    for j in range(rows):
        for i in range(cols):
            if active[j, i]:
                block = values[j * 8:j * 8 + 8, i * 8:i * 8 + 8]
                out[j * 8:j * 8 + 8, i * 8:i * 8 + 8] = block > threshold_otsu(block)
    return out


def reference_mnist(maps, sign=1):
    """MNIST, one image and digit (8, H, W): block Otsu on each confident 4-connected 4b component.

    The component's box must reach 0.3 in 4b; scores outside the component are
    0 inside its box; 4b is 8x8-blocky, so boxes are multiples of 8.
    """
    mask = np.zeros(maps.shape[1:], bool)
    raw = reference_raw(maps, None, "mnist", sign)
    if raw is None:
        return mask
    components = measure.label(maps[7] > 0, connectivity=1)
    for region in measure.regionprops(components):
        top, left, bottom, right = region.bbox
        if maps[7, top:bottom, left:right].max() < MNIST_CERTAINTY:
            continue
        inside = components[top:bottom, left:right] == region.label
        mask[top:bottom, left:right] |= reference_block_otsu(np.where(inside, raw[top:bottom, left:right], 0.0))
    return mask


def reference_segment(maps, predicted, images, name, sign=1):
    """All five recipes on (B, C, 8, H, W) maps: bool (B, C, H, W), or (B, C/2, H, W) for CTC."""
    batch, classes = maps.shape[:2]
    masks = np.zeros((batch, classes) + maps.shape[3:], bool)
    raws = np.zeros(masks.shape)
    for b in range(batch):
        for c in range(classes):
            if not predicted[b, c]:
                continue
            if name == "mnist":
                masks[b, c] = reference_mnist(maps[b, c], sign)
                continue
            raw = reference_raw(maps[b, c], None if images is None else images[b], name, sign)
            if raw is None:
                continue
            raws[b, c] = raw
            if name == "actin":
                masks[b, c] = raw > np.quantile(raw, ACTIN_QUANTILE)
            elif name in ("em", "pvivax"):
                masks[b, c] = reference_peak(raw, SETTINGS[name]["peak_sigma"], SETTINGS[name]["peak_quantile"])
    if name == "ctc":
        return np.array([reference_pair_otsu(raw) for raw in raws])
    return masks
