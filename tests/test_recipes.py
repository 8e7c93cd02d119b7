"""Recipes: maps -> masks, detections and counts.

The Actin recipe is compared with a plain re-statement of the original
procedure written below (per-pixel loops where the package vectorises, SVD
where it uses the 7x7 covariance). The other recipes are checked on maps built
from known blobs: the mask must find the blob the maps point at.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.filters import gaussian, threshold_otsu

from micranet_utils.analysis import detection, recipes, thresholds
from micranet_utils.analysis.metrics import iou


# ----------------------------------------------------------------- plain references

def reference_foreground(image):
    """The original rule on multiples of 8: 8x8 bin means above their median, repeated."""
    h, w = image.shape
    binned = np.zeros((h // 8, w // 8))
    for j in range(h // 8):
        for i in range(w // 8):
            binned[j, i] = image[j * 8:(j + 1) * 8, i * 8:(i + 1) * 8].mean()
    keep = binned > np.quantile(binned, 0.5)
    return np.kron(keep, np.ones((8, 8), bool)).astype(bool)


def reference_actin(maps, predicted, images):
    """Original Actin segment_cam, one class at a time, with an exact SVD for the PCA."""
    masks = np.zeros(maps.shape[:2] + maps.shape[3:], bool)
    for b in range(maps.shape[0]):
        for c in range(maps.shape[1]):
            if not predicted[b, c]:
                continue
            pixels = maps[b, c].reshape(8, -1).T.astype(np.float64)        # (H*W, 8)
            index = (pixels[:, 7] > 0) & reference_foreground(images[b, 0]).ravel()
            if index.sum() < 1:
                continue
            centred = pixels[:, :7] - pixels[:, :7].mean(axis=0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            scores = centred @ vt[0]
            average = np.average(scores, weights=pixels[:, 7])
            scores = (scores - scores[index].min()) / (scores[index].max() - scores[index].min())
            if average < 0:
                scores = 1 - scores
            smooth = gaussian(scores.reshape(maps.shape[3:]), sigma=1)
            masks[b, c] = smooth > np.quantile(smooth, 0.8)
    return masks


def reference_per_image_otsu(maps, predicted, images, sigma):
    """The per-crop Otsu rule as lesson 06's comparison first wrote it: the Actin recipe's
    combined map, then, for each predicted class whose map is not constant, the pixels
    strictly above Otsu's threshold of that map."""
    scores = recipes.score_maps(maps, predicted, images, "actin", sigma=sigma)
    masks = np.zeros(scores.shape, bool)
    for b, c in np.ndindex(*predicted.shape):
        score = scores[b, c]
        if predicted[b, c] and score.max() > score.min():
            masks[b, c] = score > threshold_otsu(score)
    return masks


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
    ours = recipes.segment(maps, predicted, images, "actin")
    reference = reference_actin(maps, predicted, images)
    assert ours.shape == (3, 2, 64, 64) and ours.dtype == bool
    for b, c in np.ndindex(3, 2):
        assert iou(ours[b, c], reference[b, c]) >= 0.99
    assert not ours[~predicted].any()
    assert np.isclose(ours[predicted].mean(), 0.2, atol=0.01)     # top 20 % of the pixels


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
        np.testing.assert_array_equal(ours, reference_per_image_otsu(maps, predicted, images, sigma))
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
    from micranet_utils.tutorial.demo_data import generate_blobs
    from micranet_utils.analysis.metrics import precision, recall

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
