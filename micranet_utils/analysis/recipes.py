"""From Grad-CAM maps to masks, detections and counts: the five published recipes.

MICRA-Net gives, for every image and class, eight maps (one per convolution
layer, ``L = 8``, from :func:`micranet_utils.model.gradcam.local_maps`). The original
repository turns them into masks with a different script per data set; here
every recipe is *data* (a :class:`Recipe` of a few constants, in the registry
:data:`RECIPES`) run by one implementation in four steps:

1. **combine** the seven maps 1a-4a into one by their first principal
   component ("PCA7", :func:`pca_scores`), oriented so that the structure is
   high (positive 4b-weighted mean);
2. **normalise** it to [0, 1] over a *gate*: the pixels where the deepest map
   4b is positive (and, for Actin, inside the image foreground, :func:`foreground`);
3. **smooth** it with a Gaussian filter (``sigma``);
4. **threshold** it, one of four published ways, or a fifth option:

   ========== ============================================================
   quantile   Actin: keep the pixels above the image's 0.8 quantile
   pair_otsu  CTC: Otsu on the difference of class pairs (0-1, 2-3, 4-5)
   peak       EM, P. vivax: smooth again, threshold (0.9 quantile or Otsu),
              keep the one object around the highest pixel
   blocks     MNIST: per 4b component, Otsu over 8x8 blocks of the scores
   otsu       option (``threshold="otsu"``): keep the pixels above Otsu's
              threshold of the image's map, one of the thresholds of the
              original's interactive app; the mask's size follows the image
              instead of being fixed by a quantile
   ========== ============================================================

Differences from the original scripts, on purpose (see the reference, §11):

* the PCA is exact and deterministic (eigenvectors of the 7x7 covariance)
  instead of five averaged randomised fits; the results agree to rounding;
* every recipe is oriented by the 4b-weighted mean (the original does it for
  Actin and EM only, elsewhere the sign depended on scikit-learn's convention);
* an empty gate gives an empty mask instead of an exception (#19b);
* any number of classes (#21) and any image size: the Actin foreground bins
  the image in 8x8 blocks, edge blocks averaging the pixels they have; MNIST
  blocks at the border of a component box are zero-padded to 8x8 (#20);
* the peak recipes return one (H, W) mask per class, also when no object
  contains the peak (#18, #19), and choose the object around the peak
  deterministically: the one containing it, else the innermost one enclosing it;
* MNIST objects whose bounding boxes overlap are merged (OR), not overwritten.

CTC masks follow the original's class pairs: ``segment`` returns C / 2 masks,
mask k holding the pixels where class 2k scores clearly above class 2k + 1.

The per-image threshold rules of step 4 are in :mod:`micranet_utils.analysis.thresholds`;
masks become objects and counts in :mod:`micranet_utils.analysis.detection`.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage

from ..base.arrays import to_numpy
from .thresholds import BIN, block_mask, otsu_mask, pair_masks, peak_mask, quantile_mask

__all__ = ["Recipe", "RECIPES", "get_recipe", "foreground", "pca_scores", "combined_map", "score_maps",
           "threshold_scores", "segment"]

LAYER_4B = 7          # index of the deepest layer, the gate
THRESHOLDS = ("quantile", "pair_otsu", "peak", "blocks", "otsu")


@dataclass(frozen=True)
class Recipe:
    """The constants of one post-processing recipe.

    Attributes
    ----------
    name : str
        Registry name.
    gate_foreground : bool
        Restrict the normalisation gate to the image foreground (Actin).
    normalize : bool
        Min-max normalise the combined map over the gate pixels.
    sigma : float
        Gaussian smoothing of the combined map, in pixels (0: none).
    threshold : str
        ``"quantile"``, ``"pair_otsu"``, ``"peak"``, ``"blocks"`` or ``"otsu"``.
    quantile : float
        ``quantile``: keep pixels above this quantile of the smoothed map.
    peak_sigma : float
        ``peak``: second smoothing before thresholding.
    peak_quantile : float or None
        ``peak``: quantile threshold; ``None`` uses Otsu's threshold.
    hole_area : int
        ``peak``: holes smaller than this (pixels) are filled.
    min_certainty : float
        ``blocks``: a 4b component is kept only if 4b reaches this value in its box.
    """

    name: str
    gate_foreground: bool = False
    normalize: bool = True
    sigma: float = 1.0
    threshold: str = "quantile"
    quantile: float = 0.8
    peak_sigma: float = 5.0
    peak_quantile: Optional[float] = 0.9
    hole_area: int = 2500
    min_certainty: float = 0.3


RECIPES = {r.name: r for r in [
    Recipe("actin", gate_foreground=True, sigma=1.0, threshold="quantile", quantile=0.8),
    Recipe("ctc", sigma=3.0, threshold="pair_otsu"),
    Recipe("em", sigma=1.0, threshold="peak", peak_sigma=5.0, peak_quantile=0.9),
    Recipe("pvivax", normalize=False, sigma=3.0, threshold="peak", peak_sigma=10.0, peak_quantile=None),
    Recipe("mnist", normalize=False, sigma=0.0, threshold="blocks", min_certainty=0.3),
]}
"""dict of str to Recipe: the published recipes by name."""


def get_recipe(recipe="actin", **overrides):
    """The :class:`Recipe` called `recipe` (or `recipe` itself), with some constants replaced.

    Raises
    ------
    ValueError
        Unknown recipe name or unknown constant, with the known ones listed.
    """
    if not isinstance(recipe, Recipe):
        if str(recipe).lower() not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
        recipe = RECIPES[str(recipe).lower()]
    fields = {f.name for f in dataclasses.fields(Recipe)} - {"name"}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown recipe setting(s) {sorted(unknown)}; known: {sorted(fields)}")
    if overrides.get("threshold", recipe.threshold) not in THRESHOLDS:
        raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}; got {overrides['threshold']!r}")
    return dataclasses.replace(recipe, **overrides)


def foreground(image):
    """Bright half of the image, decided on 8x8 blocks (the Actin gate).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (channels, H, W)
        Intensities; channels are averaged.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True in the 8x8 blocks whose mean intensity is above the median block
        mean. When H or W is not a multiple of 8 the last blocks are smaller
        and average the pixels they have.
    """
    image = np.asarray(image, np.float64)
    if image.ndim == 3:
        image = image.mean(axis=0)
    height, width = image.shape
    rows, cols = -(-height // BIN), -(-width // BIN)
    padded = np.full((rows * BIN, cols * BIN), np.nan)
    padded[:height, :width] = image
    binned = np.nanmean(padded.reshape(rows, BIN, cols, BIN), axis=(1, 3))
    keep = binned > np.quantile(binned, 0.5)
    return keep.repeat(BIN, axis=0).repeat(BIN, axis=1)[:height, :width]


def pca_scores(layers):
    """Scores of every pixel on the first principal component of the layers.

    Exact and deterministic: the leading eigenvector of the (L, L) covariance
    of the pixels; its sign makes the loading of largest magnitude positive.

    Parameters
    ----------
    layers : ndarray, shape (L, H, W)
        One map per layer (the recipes use layers 1a-4a, L = 7).

    Returns
    -------
    ndarray of float64, shape (H, W)
        Centred projection of each pixel, the same as scikit-learn's
        ``PCA(n_components=1).fit_transform`` up to rounding and sign.
    """
    values = np.asarray(layers, np.float64).reshape(len(layers), -1)
    centred = values - values.mean(axis=1, keepdims=True)
    covariance = centred @ centred.T / values.shape[1]
    _, vectors = np.linalg.eigh(covariance)
    component = vectors[:, -1]
    component = component * np.sign(component[np.argmax(np.abs(component))] or 1.0)
    return (component @ centred).reshape(np.shape(layers)[1:])


def combined_map(maps, image=None, recipe="actin", **overrides):
    """Steps 1-3 of a recipe for one image and class: the combined, normalised, smoothed map.

    Parameters
    ----------
    maps : ndarray, shape (8, H, W)
        The eight layer maps of one image and class.
    image : ndarray, shape (channels, H, W) or (H, W), optional
        Needed by recipes that gate on the foreground (Actin).
    recipe : str or Recipe
    **overrides
        Recipe constants to change, e.g. ``sigma=0`` for the unsmoothed map.

    Returns
    -------
    ndarray of float64, shape (H, W), or None
        None when the gate is empty (no pixel where 4b > 0, inside the foreground).
    """
    return _combined_map(np.asarray(maps), image, get_recipe(recipe, **overrides))


def _combined_map(maps, image, recipe):
    """:func:`combined_map` with a ready :class:`Recipe`."""
    gate = maps[LAYER_4B] > 0
    if recipe.gate_foreground:
        gate &= foreground(image)
    if not gate.any():
        return None
    scores = pca_scores(maps[:LAYER_4B])
    weights = np.maximum(maps[LAYER_4B], 0)
    if np.sum(scores * weights) < 0:
        scores = -scores
    if recipe.normalize:
        low, high = scores[gate].min(), scores[gate].max()
        scores = (scores - low) / (high - low if high > low else 1.0)
    if recipe.sigma > 0:
        scores = ndimage.gaussian_filter(scores, recipe.sigma, mode="nearest", truncate=4.0)
    return scores


def _check(maps, predicted, images, recipe):
    maps = to_numpy(maps, "maps (B, C, 8, H, W)", 5)
    predicted = to_numpy(predicted, "predicted (B, C)", 2, bool)
    images = to_numpy(images, "images (B, channels, H, W)", 4)
    if maps.shape[2] != 8:
        raise ValueError(f"maps must hold the 8 layers on axis 2; got shape {maps.shape}")
    if predicted.shape != maps.shape[:2]:
        raise ValueError(f"predicted has shape {predicted.shape} but maps have (B, C) = {maps.shape[:2]}")
    if images is None and recipe.gate_foreground:
        raise ValueError(f"recipe {recipe.name!r} needs the images (their foreground gates the maps)")
    if images is not None and (images.shape[0] != maps.shape[0] or images.shape[2:] != maps.shape[3:]):
        raise ValueError(f"images have shape {images.shape} but maps have (B, H, W) = "
                         f"{(maps.shape[0],) + maps.shape[3:]}")
    if recipe.threshold == "pair_otsu" and maps.shape[1] % 2:
        raise ValueError(f"recipe {recipe.name!r} works on class pairs; got {maps.shape[1]} classes")
    return maps, predicted, images


def score_maps(maps, predicted, images=None, recipe="actin", **overrides):
    """Steps 1-3 of a recipe: one smoothed, combined map per image and class.

    Parameters
    ----------
    maps : ndarray or Tensor, shape (B, C, 8, H, W)
        Grad-CAM maps of the eight layers.
    predicted : ndarray or Tensor of bool, shape (B, C)
        Classes the classifier says are present; the others stay zero.
    images : ndarray or Tensor, shape (B, channels, H, W), optional
        The input images; needed by recipes that gate on the foreground (Actin).
    recipe : str or Recipe
    **overrides
        Recipe constants to change, e.g. ``sigma=2``.

    Returns
    -------
    ndarray of float32, shape (B, C, H, W)
        The "raw" maps of the original scripts. Average them over models (the
        P. vivax folds) before :func:`threshold_scores` if you have several.
    """
    recipe = get_recipe(recipe, **overrides)
    maps, predicted, images = _check(maps, predicted, images, recipe)
    scores = np.zeros(maps.shape[:2] + maps.shape[3:], np.float32)
    for b, c in np.argwhere(predicted):
        combined = _combined_map(maps[b, c], None if images is None else images[b], recipe)
        if combined is not None:
            scores[b, c] = combined
    return scores


def _component_masks(maps, recipe):
    """MNIST: block-Otsu each 4-connected 4b component whose box reaches `min_certainty` in 4b."""
    deepest = maps[LAYER_4B]
    scores = _combined_map(maps, None, recipe)
    mask = np.zeros(deepest.shape, bool)
    if scores is None:
        return mask
    labels, _ = ndimage.label(deepest > 0)
    for j, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or deepest[box].max() < recipe.min_certainty:
            continue
        mask[box] |= block_mask(np.where(labels[box] == j, scores[box], 0.0))
    return mask


def threshold_scores(scores, predicted, recipe="actin", **overrides):
    """Step 4 of a recipe: combined maps -> masks.

    Parameters
    ----------
    scores : ndarray, shape (B, C, H, W)
        Output of :func:`score_maps` (possibly averaged over models).
    predicted : ndarray of bool, shape (B, C)
    recipe, **overrides
        As in :func:`score_maps`. The ``blocks`` recipe (MNIST) needs the maps
        and is only available through :func:`segment`.

    Returns
    -------
    ndarray of bool, shape (B, C, H, W), or (B, C/2, H, W) for ``pair_otsu`` (CTC)
    """
    recipe = get_recipe(recipe, **overrides)
    scores = np.asarray(scores)
    predicted = np.asarray(predicted, bool)
    if recipe.threshold == "pair_otsu":
        return np.stack([pair_masks(image) for image in scores])
    if recipe.threshold == "blocks":
        raise ValueError("the 'blocks' recipe works on the maps: call segment(maps, ...)")
    mask_of = _image_rule(recipe)
    masks = np.zeros(scores.shape, bool)
    for b, c in np.argwhere(predicted):
        if np.any(scores[b, c]):
            masks[b, c] = mask_of(scores[b, c])
    return masks


def _image_rule(recipe):
    """The recipe's threshold rule for one image's map: (H, W) -> bool (H, W)."""
    if recipe.threshold == "quantile":
        return lambda score: quantile_mask(score, recipe.quantile)
    if recipe.threshold == "otsu":
        return lambda score: otsu_mask(score, strict=True)
    return lambda score: peak_mask(score, recipe.peak_sigma, recipe.peak_quantile, recipe.hole_area)


def segment(maps, predicted, images=None, recipe="actin", **overrides):
    """Masks from Grad-CAM maps with one of the published recipes.

    Parameters
    ----------
    maps : ndarray or Tensor, shape (B, C, 8, H, W)
        Grad-CAM maps of the eight layers, e.g. from ``gradcam.local_maps``.
    predicted : ndarray or Tensor of bool, shape (B, C)
        Classes predicted present; the masks of the others are empty.
    images : ndarray or Tensor, shape (B, channels, H, W), optional
        The input images (needed by ``actin`` for its foreground gate).
    recipe : str or Recipe
        ``"actin"``, ``"ctc"``, ``"em"``, ``"mnist"``, ``"pvivax"`` or a :class:`Recipe`.
    **overrides
        Recipe constants to change, e.g. ``quantile=0.9, sigma=2``, or
        ``threshold="otsu"`` for Otsu's threshold of each image's map instead
        of the fixed quantile.

    Returns
    -------
    ndarray of bool, shape (B, C, H, W)
        One mask per image and class; for ``ctc`` (B, C/2, H, W), one per class pair.

    Examples
    --------
    >>> maps = np.random.rand(1, 2, 8, 32, 32).astype(np.float32)
    >>> segment(maps, [[True, False]], np.random.rand(1, 1, 32, 32)).shape
    (1, 2, 32, 32)
    """
    recipe = get_recipe(recipe, **overrides)
    maps, predicted, images = _check(maps, predicted, images, recipe)
    if recipe.threshold != "blocks":
        return threshold_scores(score_maps(maps, predicted, images, recipe), predicted, recipe)
    masks = np.zeros(maps.shape[:2] + maps.shape[3:], bool)
    for b, c in np.argwhere(predicted):
        masks[b, c] = _component_masks(maps[b, c], recipe)
    return masks
