"""Recipes: maps -> masks, detections and counts.

Every recipe is compared with a plain re-statement of the original procedure
(tests/references.py: written from the reference's §7 with scikit-image and an
SVD, never with the package's functions), on structured and on random maps.
Where the package departs from the original on purpose (the sign of the
principal component, the object around the peak, ...), the reference follows
the package's documented rule and says so. Maps built from known blobs also
check that the masks find the blob the maps point at.
"""

import numpy as np
import pytest
import torch
from references import (
    reference_block_otsu,
    reference_foreground,
    reference_mnist,
    reference_pair_otsu,
    reference_peak,
    reference_raw,
    reference_segment,
)
from scipy import ndimage
from skimage.filters import gaussian, threshold_otsu

from micranet_utils.analysis import detection, recipes, thresholds
from micranet_utils.analysis.metrics import iou

# ----------------------------------------------------------------- plain references

def reference_per_image_otsu(maps, predicted, images, sigma):
    """The ``threshold="otsu"`` option written plainly: the Actin recipe's raw map (reference §7,
    from :func:`references.reference_raw`), then, for each predicted class whose map is not
    constant, the pixels strictly above Otsu's threshold of that map."""
    masks = np.zeros(maps.shape[:2] + maps.shape[3:], bool)
    for b, c in np.argwhere(predicted):
        score = reference_raw(maps[b, c], images[b], "actin", sigma=sigma)
        if score is not None and score.max() > score.min():
            masks[b, c] = score > threshold_otsu(score)
    return masks


def assert_masks_agree(ours, reference, tolerance=0.002):
    """Same shape, at most `tolerance` of the pixels differ (rounding at the threshold), not all empty."""
    assert ours.shape == reference.shape and ours.dtype == bool
    assert reference.any()
    differ = np.count_nonzero(ours != reference)
    assert differ <= tolerance * reference.size, f"{differ} of {reference.size} pixels differ"


# ----------------------------------------------------------------- synthetic maps

def blob(shape, center, radius):
    rows, cols = np.indices(shape)
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2


def maps_from_truth(truth, rng, noise=0.05, deep_floor=0.2, normalize=True):
    """Eight maps (8, H, W) that point at `truth`: blurrier with depth, 4b blocky and ReLU'd."""
    truth = truth.astype(float)
    layers = []
    for level in range(8):
        layer = gaussian(truth, sigma=1 + level) + noise * rng.standard_normal(truth.shape)
        stride = (1, 1, 2, 2, 4, 4, 8, 8)[level]
        h, w = truth.shape[0] // stride, truth.shape[1] // stride
        layer = layer[:h * stride, :w * stride].reshape(h, stride, w, stride).mean(axis=(1, 3))
        if level == 7:
            layer = np.maximum(layer - deep_floor * layer.max(), 0)
        if normalize:
            layer = (layer - layer.min()) / (np.ptp(layer) + 1e-12)
        layers.append(np.kron(layer, np.ones((stride, stride))))
    return np.stack(layers).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ----------------------------------------------------------------- the shared steps

def test_pca_scores_match_svd_up_to_sign(rng):
    layers = rng.random((7, 16, 24))
    ours = recipes.pca_scores(layers).ravel()
    centred = layers.reshape(7, -1).T - layers.reshape(7, -1).T.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    reference = centred @ vt[0]
    assert min(np.abs(ours - reference).max(), np.abs(ours + reference).max()) < 1e-9


def test_foreground_matches_original_rule_and_takes_any_size(rng):
    image = rng.random((64, 48))
    np.testing.assert_array_equal(recipes.foreground(image), reference_foreground(image))
    odd = recipes.foreground(rng.random((37, 21)))
    assert odd.shape == (37, 21) and 0 < odd.mean() < 1


# ----------------------------------------------------------------- actin

def actin_case(rng, size=64, batch=3):
    images = np.zeros((batch, 1, size, size), np.float32)
    maps = np.zeros((batch, 2, 8, size, size), np.float32)
    for b in range(batch):
        truth = blob((size, size), rng.integers(16, size - 16, 2), rng.integers(6, 12))
        images[b, 0] = gaussian(truth.astype(float), 2) + 0.1 * rng.random((size, size))
        maps[b, 0] = maps_from_truth(truth, rng)
        maps[b, 1] = maps_from_truth(~truth, rng)
    return maps, images


def test_actin_matches_plain_reference(rng):
    maps, images = actin_case(rng)
    predicted = np.array([[True, True], [True, False], [False, True]])
    maps[2, 1, 7][reference_foreground(images[2, 0])] = 0          # 4b > 0 only outside the foreground:
    assert maps[2, 1, 7].any()                                      # empty gate, no mask
    ours = recipes.segment(maps, predicted, images, "actin")
    reference = reference_segment(maps, predicted, images, "actin")
    assert ours.shape == (3, 2, 64, 64)
    assert_masks_agree(ours, reference)
    assert not ours[~predicted].any() and not ours[2, 1].any()
    assert np.isclose(ours[predicted][:-1].mean(), 0.2, atol=0.01)     # top 20 % of the pixels


def test_actin_mask_lies_on_the_structure(rng):
    size = 64
    truth = blob((size, size), (32, 32), 16)         # about 20 % of the image, as the 0.8 quantile keeps
    images = (gaussian(truth.astype(float), 2) + 0.05 * rng.random((size, size)))[None, None]
    maps = maps_from_truth(truth, rng)[None, None]
    mask = recipes.segment(maps, [[True]], images, "actin")[0, 0]
    assert iou(mask, truth) > 0.7
    # a negated combined map is flipped back by the 4b-weighted orientation
    flipped = maps.copy()
    flipped[:, :, :7] = 1 - flipped[:, :, :7]
    np.testing.assert_array_equal(recipes.segment(flipped, [[True]], images, "actin")[0, 0], mask)


def test_overrides_torch_inputs_and_any_size(rng):
    maps, images = actin_case(rng, size=64, batch=1)
    maps, images = maps[..., 3:53, 5:60], images[..., 3:53, 5:60]    # 50 x 55
    wide = recipes.segment(torch.from_numpy(maps), torch.tensor([[True, True]]), torch.from_numpy(images))
    narrow = recipes.segment(maps, [[True, True]], images, quantile=0.95, sigma=2)
    assert wide.shape == (1, 2, 50, 55)
    assert narrow.sum() < wide.sum()
    with pytest.raises(ValueError, match="unknown recipe setting"):
        recipes.segment(maps, [[True, True]], images, sigmaa=2)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.segment(maps, [[True, True]], images, recipe="nope")
    with pytest.raises(ValueError, match="needs the images"):
        recipes.segment(maps, [[True, True]], None, "actin")
    with pytest.raises(ValueError, match="predicted"):
        recipes.segment(maps, [[True]], images)


def test_otsu_option_matches_plain_per_image_otsu(rng):
    maps, images = actin_case(rng, batch=4)
    maps[3, 0, 7] = 0                                   # empty gate: constant map, empty mask
    predicted = np.array([[True, True], [True, False], [False, True], [True, True]])
    for sigma in (0.5, 1.0, 2.0):
        ours = recipes.segment(maps, predicted, images, "actin", threshold="otsu", sigma=sigma)
        assert_masks_agree(ours, reference_per_image_otsu(maps, predicted, images, sigma))
    assert not ours[~predicted].any() and not ours[3, 0].any()
    # Otsu follows each image: the mask is not a fixed fraction of the pixels as the quantile's is
    kept = predicted.copy()
    kept[3, 0] = False
    fractions = ours[kept].mean(axis=(1, 2))
    assert np.ptp(fractions) > 0.01
    with pytest.raises(ValueError, match="threshold must be one of"):
        recipes.segment(maps, predicted, images, "actin", threshold="otsu-per-crop")


def test_empty_gate_gives_empty_mask(rng):
    maps, images = actin_case(rng, batch=1)
    maps[:, :, 7] = 0
    for name in ("actin", "ctc", "em", "pvivax", "mnist"):
        classes = 2
        masks = recipes.segment(maps[:, :classes], np.ones((1, classes), bool), images, name)
        assert not masks.any(), name


# ----------------------------------------------------------------- the other recipes

def test_ctc_pairs_separate_the_two_classes(rng):
    size = 64
    cell = blob((size, size), (24, 40), 12)
    maps = np.stack([maps_from_truth(cell, rng), maps_from_truth(~cell, rng)] * 3)[None]
    predicted = np.array([[True, True, True, False, False, False]])
    masks = recipes.segment(maps, predicted, None, "ctc")
    assert masks.shape == (1, 3, size, size)
    assert iou(masks[0, 0], cell) > 0.7
    assert iou(masks[0, 1], cell) > 0.5                  # class 2 present, 3 absent: class 2 where it is high
    assert not masks[0, 2].any()                         # neither class of the pair predicted
    with pytest.raises(ValueError, match="pairs"):
        recipes.segment(maps[:, :5], predicted[:, :5], None, "ctc")


@pytest.mark.parametrize("name, normalize", [("em", True), ("pvivax", False)])
def test_peak_recipes_keep_the_object_around_the_peak(rng, name, normalize):
    size = 128
    strong, weak = blob((size, size), (40, 40), 16), blob((size, size), (90, 95), 14)
    truth = strong.astype(float) + 0.6 * weak
    maps = maps_from_truth(truth, rng, normalize=normalize)[None, None] * (1 if normalize else 7.0)
    mask = recipes.segment(maps, [[True]], None, name)[0, 0]
    assert mask.shape == (size, size)
    labels, count = ndimage.label(mask)
    assert count == 1
    assert mask[40, 40] and not mask[90, 95]
    assert iou(mask, strong) > 0.3


def test_peak_recipe_picks_the_object_whose_hole_holds_the_peak():
    score = np.zeros((40, 40))
    score[5:35, 5:35] = 1.0
    score[12:28, 12:28] = 0.0                             # a ring...
    score[20, 20] = 1.01                                  # ...with the peak in its hole, smoothed away
    recipe = recipes.get_recipe("em", peak_sigma=1.0, peak_quantile=0.7, hole_area=4)
    mask = recipes.threshold_scores(score[None, None], [[True]], recipe)[0, 0]
    assert mask[6, 6] and not mask[20, 20]
    np.testing.assert_array_equal(mask, reference_peak(score, sigma=1.0, quantile=0.7, hole_area=4))


def test_mnist_blocks_match_plain_reference(rng):
    values = np.zeros((32, 40))
    values[4:28, 8:30] = gaussian(rng.random((24, 22)), 1.5) * 5
    np.testing.assert_array_equal(thresholds.block_mask(values), reference_block_otsu(values))


def test_mnist_segments_confident_components_only(rng):
    size = 96
    digit = blob((size, size), (28, 30), 12) & ~blob((size, size), (28, 30), 5)    # a zero
    faint = blob((size, size), (72, 70), 10)
    maps = maps_from_truth(digit.astype(float) + faint, rng, deep_floor=0.3)[None, None]
    bright = ndimage.label(maps[0, 0, 7] > 0)[0]
    maps[0, 0, 7][bright == bright[72, 70]] *= 0.1                                  # below 0.3 certainty
    mask = recipes.segment(maps, [[True]], None, "mnist")[0, 0]
    assert mask[digit].mean() > 0.3
    assert not mask[faint].any()
    labels = detection.labels_from_masks(np.stack([mask, np.zeros_like(mask)])[None])
    assert set(np.unique(labels)) == {0, 1}


# ----------------------------------------------------------------- every recipe against its plain reference

def recipe_case(rng, name):
    """Maps (2, C, 8, S, S), predictions (2, C) and images for `name`: image 0 structured (blobs the
    maps point at), image 1 random (maps of a white-noise "truth", no structure the recipe was tuned for)."""
    if name == "actin":
        maps, images = actin_case(rng, batch=2)
        return maps, np.array([[True, True], [True, False]]), images
    size = {"ctc": 64}.get(name, 96)
    normalize, scale = (False, 7.0) if name == "pvivax" else (True, 1.0)
    # the noise of seed 1: with many other seeds EM's peak sits at the border, its smoothed object
    # misses it and both EM masks are empty (they agree, but check nothing)
    noise = gaussian(np.random.default_rng(1).random((size, size)), 3)
    noise = (noise - noise.min()) / np.ptp(noise)
    if name == "ctc":
        cell, other = blob((size, size), (24, 40), 12), blob((size, size), (44, 18), 9)
        truths = [[cell, ~cell, other, cell, cell, other], [noise, 1 - noise, noise.T, noise, 1 - noise.T, noise]]
        predicted = np.array([[True, True, True, False, False, True], [True, True, True, True, False, False]])
    else:
        strong, weak = blob((size, size), (40, 40), 16), blob((size, size), (70, 72), 10)
        if name == "mnist":
            strong &= ~blob((size, size), (40, 40), 7)                          # a zero
        truths = [[strong.astype(float) + 0.6 * weak], [noise]]
        predicted = np.array([[True], [True]])
    floor = 0.3 if name == "mnist" else 0.2
    maps = np.array([[maps_from_truth(t, rng, deep_floor=floor, normalize=normalize) for t in image_truths]
                     for image_truths in truths]) * scale
    return maps, predicted, None


@pytest.mark.parametrize("name", ["ctc", "em", "pvivax", "mnist"])
def test_recipe_matches_plain_reference(rng, name):
    """``segment`` against :func:`references.reference_segment`, written from reference §7 with the
    package's documented departures (every recipe oriented by the 4b-weighted mean, OR-merged MNIST
    boxes, the 8-connected object around the peak; see tests/references.py)."""
    maps, predicted, images = recipe_case(rng, name)
    ours = recipes.segment(maps, predicted, images, name)
    reference = reference_segment(maps, predicted, images, name)
    assert all(reference[b].any() for b in range(len(reference))), "a case gives no mask: it checks nothing"
    assert_masks_agree(ours, reference)
    if name in ("em", "pvivax"):                       # one object per image: the one around the peak
        assert [ndimage.label(m, np.ones((3, 3)))[1] for m in ours[:, 0]] == [1, 1]


@pytest.mark.parametrize("name", ["actin", "ctc", "em", "pvivax", "mnist"])
def test_sign_of_the_principal_component_never_matters(rng, name, monkeypatch):
    """Which way the first principal component points.

    The original orients it (4b-weighted mean of the scores made positive) for
    Actin and EM only; for CTC, MNIST and P. vivax it keeps the sign that
    scikit-learn's randomised PCA returns, an arbitrary choice of the
    linear-algebra library that changed between versions (reference §7, §11
    #8). The package orients *every* recipe (recipes module docstring; its
    ``pca_scores`` itself makes the largest loading positive), and we follow
    the package: results must not depend on a library's sign convention. So:

    1. negating layers 1a-4a (the covariance, hence the loadings, stay the
       same and the scores change sign, as with a convention that flips the
       loadings) leaves the masks unchanged;
    2. a PCA with the opposite convention (``pca_scores`` returning minus its
       scores) gives the same masks;
    3. on these maps the orientation matters: the reference oriented the
       other way gives other masks, so 1 and 2 are not vacuous.
    """
    maps, predicted, images = recipe_case(rng, name)
    masks = recipes.segment(maps, predicted, images, name)
    negated = maps.copy()
    negated[:, :, :7] *= -1
    np.testing.assert_array_equal(recipes.segment(negated, predicted, images, name), masks)
    pca_scores = recipes.pca_scores
    monkeypatch.setattr(recipes, "pca_scores", lambda layers: -pca_scores(layers))
    np.testing.assert_array_equal(recipes.segment(maps, predicted, images, name), masks)
    other_way = reference_segment(maps, predicted, images, name, sign=-1)
    assert np.count_nonzero(other_way != masks) > 0.01 * masks.size


def test_pca_scores_sign_makes_the_largest_loading_positive(rng):
    """The convention ``pca_scores`` documents, on its own: the scores are the centred pixels projected
    on the leading right singular vector whose entry of largest magnitude is positive."""
    layers = rng.random((7, 16, 24)) * np.arange(1, 8)[:, None, None]
    centred = layers.reshape(7, -1).T - layers.reshape(7, -1).T.mean(axis=0)
    loading = np.linalg.svd(centred, full_matrices=False)[2][0]
    for sign in (1, -1):                          # either sign the SVD might return
        oriented = sign * loading * np.sign(sign * loading[np.argmax(np.abs(loading))])
        np.testing.assert_allclose(recipes.pca_scores(layers).ravel(), centred @ oriented, atol=1e-9)
    np.testing.assert_allclose(recipes.pca_scores(-layers), -recipes.pca_scores(layers), atol=1e-12)


@pytest.mark.parametrize("shape", ["corner", "band"])
def test_peak_object_touching_two_borders_is_kept_whole(shape):
    """EM: the object around the peak touches two borders (a quarter disc in a corner; a band from the
    top to the bottom border). The original tests the peak against the object's traced contour, which
    is open where the object reaches the padded border (reference §7 EM, §11 #19); the package keeps
    the 8-connected object holding the peak (``thresholds.peak_mask``), and so does the reference:
    one object, the whole of it, not the other blob. (The band needs a lower quantile, 0.7: at 0.9
    the zero padding, smoothed, cuts its ends off the borders.)"""
    size, quantile = 96, {"corner": 0.9, "band": 0.7}[shape]
    score = np.zeros((size, size))
    if shape == "corner":
        score[blob((size, size), (0, 0), 34)] = 1.0
        peak, other, borders = (3, 3), (70, 80), (np.s_[0, :], np.s_[:, 0])       # top row, left column
    else:
        score[:, 40:56] = 1.0
        peak, other, borders = (50, 48), (20, 80), (np.s_[0, :], np.s_[-1, :])    # top and bottom rows
    score[peak] = 1.5
    score[blob((size, size), other, 8)] = 0.9
    mask = recipes.threshold_scores(score[None, None], [[True]], "em", peak_quantile=quantile)[0, 0]
    np.testing.assert_array_equal(mask, reference_peak(score, sigma=5.0, quantile=quantile))
    assert ndimage.label(mask, np.ones((3, 3)))[1] == 1 and mask[peak] and not mask[other]
    assert all(mask[border].any() for border in borders)


def hand_made_peak_cases():
    """Score maps (H, W) for the peak rule, the recipe constants they need, and what must be kept."""
    size = 48
    diagonal = np.zeros((size, size))
    diagonal[10:20, 10:20], diagonal[20:30, 20:30], diagonal[12, 12] = 1.0, 0.9, 1.2
    yield "diagonal", diagonal, {"peak_sigma": 0.0, "peak_quantile": 0.5, "hole_area": 4}, [(25, 25)], []
    size, middle = 96, (48, 48)
    spike = np.zeros((size, size))
    spike[blob((size, size), (30, 30), 7)], spike[blob((size, size), (65, 62), 16)] = 1.0, 0.75
    yield "spike", spike, {}, [(30, 30)], [(65, 62)]
    ring = blob((size, size), middle, 26) & ~blob((size, size), middle, 12)
    yield "small hole", ring + 1.01 * blob((size, size), middle, 0), {"peak_sigma": 1.0, "peak_quantile": 0.75}, \
        [middle, (48, 64)], []
    nested = 1.0 * (blob((size, size), middle, 20) & ~blob((size, size), middle, 12)) \
        + 0.9 * (blob((size, size), middle, 44) & ~blob((size, size), middle, 36))
    yield "nested rings", nested + 1.01 * blob((size, size), middle, 0), \
        {"peak_sigma": 1.0, "peak_quantile": 0.65, "hole_area": 4}, [(48, 64)], [middle, (48, 88)]


@pytest.mark.parametrize("case", list(hand_made_peak_cases()), ids=lambda case: case[0])
def test_peak_rule_matches_reference_on_hand_made_maps(case):
    """The peak rule (EM constants, some replaced) against :func:`references.reference_peak`:
    an object joined to the peak's only by a corner belongs to it (8-connected); the raw peak, not the
    smoothed one, chooses the object (a sharp spike beside a broad, fainter blob); holes smaller than
    ``hole_area`` are filled, so a peak in a small hole picks its ring, hole included; a peak in the hole
    of nested rings picks the innermost ring (the package's rule; the original's contour test let a
    later object overwrite the choice, reference §11 #19)."""
    name, score, overrides, kept, left = case
    recipe = recipes.get_recipe("em", **overrides)
    mask = recipes.threshold_scores(score[None, None].astype(float), [[True]], recipe)[0, 0]
    np.testing.assert_array_equal(mask, reference_peak(score, recipe.peak_sigma, recipe.peak_quantile,
                                                       recipe.hole_area))
    assert ndimage.label(mask, np.ones((3, 3)))[1] == 1
    assert all(mask[p] for p in kept) and not any(mask[p] for p in left), name


def test_ctc_pair_threshold_ignores_the_zeros_of_the_difference(rng):
    """CTC's Otsu threshold is computed over the non-zero values of the class difference only
    (reference §7): here class 0 scores on the left half only, class 1 nowhere."""
    scores = np.zeros((1, 2, 48, 48))
    scores[0, 0, :, :24] = gaussian(rng.random((48, 24)), 3) + 0.5
    masks = recipes.threshold_scores(scores, [[True, True]], "ctc")
    assert masks.shape == (1, 1, 48, 48)
    np.testing.assert_array_equal(masks[0], reference_pair_otsu(scores[0]))
    assert 0 < masks.sum() < scores[0, 0].astype(bool).sum() / 2


def test_mnist_components_touching_by_a_corner_are_separate(rng):
    """MNIST's 4b components are 4-connected (reference §7): a faint component (4b = 0.1 < 0.3) that
    touches a confident one only by a corner is not segmented with it."""
    maps = np.repeat(gaussian(rng.random((48, 48)), 2)[None], 8, axis=0) * np.arange(1, 9)[:, None, None]
    maps[7] = 0
    maps[7, :16, :16], maps[7, 16:32, 16:32] = 1.0, 0.1
    mask = recipes.segment(maps[None, None], [[True]], None, "mnist")[0, 0]
    np.testing.assert_array_equal(mask, reference_mnist(maps))
    assert mask[:16, :16].any() and not mask[16:].any()


# ----------------------------------------------------------------- detection and counting

def test_detect_and_count_by_hand():
    masks = np.zeros((1, 2, 10, 12), bool)
    masks[0, 0, 1:3, 1:4] = True                          # 6 px, centroid (1.5, 2)
    masks[0, 0, 6, 8] = True                              # 1 px
    masks[0, 0, 7, 9] = True                              # diagonal neighbour: same object (8-connected)
    objects = detection.detect(masks)[0][0]
    np.testing.assert_allclose(objects.centroids, [[1.5, 2.0], [6.5, 8.5]])
    np.testing.assert_array_equal(objects.boxes, [[1, 1, 3, 4], [6, 8, 8, 10]])
    np.testing.assert_array_equal(objects.areas, [6, 2])
    assert detection.detect(masks)[0][1].centroids.shape == (0, 2)
    np.testing.assert_array_equal(detection.count(masks), [[2, 0]])
    np.testing.assert_array_equal(detection.count(masks, min_area=3), [[1, 0]])


def test_labels_from_masks_highest_class_wins():
    masks = np.zeros((1, 3, 2, 2), bool)
    masks[0, 0, 0] = True
    masks[0, 2, :, 0] = True
    np.testing.assert_array_equal(detection.labels_from_masks(masks)[0], [[3, 1], [3, 0]])


# ----------------------------------------------------------------- all recipes on the demo blobs

@pytest.mark.parametrize("name", ["actin", "ctc", "em", "pvivax", "mnist"])
def test_every_recipe_finds_demo_blobs(rng, name):
    from micranet_utils.analysis.metrics import precision, recall
    from micranet_utils.tutorial.demo_data import generate_blobs

    images, instances, points = generate_blobs(2, size=128, seed=3)
    truth = instances > 0
    classes = 2 if name == "ctc" else 1
    maps = np.stack([np.stack([maps_from_truth(t if c % 2 == 0 else ~t, rng, deep_floor=0.1)
                               for c in range(classes)]) for t in truth])
    masks = recipes.segment(maps, np.ones((2, classes), bool), images, name)
    assert masks.shape == (2, 1, 128, 128)
    assert precision(masks[:, 0], truth) > 4 * truth.mean(), name     # masks sit on the blobs...
    assert recall(masks[:, 0], truth) > 0.3, name                       # ...and cover a good part of them
    if name in ("em", "pvivax"):          # one object, the one around the strongest response
        np.testing.assert_array_equal(detection.count(masks), [[1], [1]])
    else:
        found = detection.detect(masks, min_area=10)
        assert all(len(found[b][0].areas) >= 0.5 * len(points[b]) for b in range(2)), name
