"""Benchmark: the Actin recipe against a re-creation of the original procedure.

The original ``segment_cam`` fits scikit-learn's randomised PCA five times per
image and class and averages the scores. ``original_actin`` below re-creates
that procedure step by step with NumPy/SciPy only (the randomised range finder
with 4 LU power iterations and 10 oversamples, as scikit-learn's defaults for a
7-column matrix; scikit-image's Gaussian), so the benchmark runs without
scikit-learn. Both run in this process on the same maps; the script prints the
median time of each, their ratio, and the IoU of the masks.

It also times one redraw of :class:`micranet_utils.tutorial.viewer.Viewer` on the same maps.

Run: ``python benchmarks/recipes.py [--size 256] [--images 4] [--repeats 5]``
"""

import argparse
import statistics
import time

import numpy as np
from scipy import linalg, ndimage
from skimage.filters import gaussian

from micranet_utils.analysis import recipes
from micranet_utils.analysis.metrics import iou


def randomized_pca_scores(columns, rng, oversamples=10, iterations=4):
    """First principal-component scores by the randomised SVD (the original's solver)."""
    centred = columns - columns.mean(axis=0)
    basis = rng.normal(size=(centred.shape[1], 1 + oversamples))
    for _ in range(iterations):
        basis, _ = linalg.lu(centred @ basis, permute_l=True)
        basis, _ = linalg.lu(centred.T @ basis, permute_l=True)
    basis, _ = linalg.qr(centred @ basis, mode="economic")
    u_small, singular, vt = linalg.svd(basis.T @ centred, full_matrices=False)
    u = basis @ u_small[:, :1]
    sign = np.sign(vt[0, np.argmax(np.abs(vt[0]))])          # scikit-learn's svd_flip on V
    return u[:, 0] * singular[0] * sign


def original_foreground(image):
    h, w = image.shape
    binned = image.reshape(h // 8, 8, w // 8, 8).mean(axis=3).mean(axis=1)
    return (binned > np.quantile(binned, 0.5)).repeat(8, axis=0).repeat(8, axis=1)


def original_actin(maps, predicted, images, rng, repetitions=5):
    """The original Actin procedure, one image and class at a time."""
    masks = np.zeros(maps.shape[:2] + maps.shape[3:], bool)
    size = maps.shape[-1]
    for b in range(maps.shape[0]):
        for c in np.flatnonzero(predicted[b]):
            pixels = np.transpose(maps[b, c], (1, 2, 0)).reshape(-1, 8)
            index = (pixels[:, 7] > 0) & original_foreground(images[b, 0]).ravel()
            if index.sum() < 1:
                continue
            scores = np.zeros(len(pixels))
            for _ in range(repetitions):
                scores += randomized_pca_scores(pixels[:, :-1].astype(np.float64), rng)
            scores /= repetitions
            average = np.average(scores, weights=pixels[:, 7])
            scores = (scores - scores[index].min()) / (scores[index].max() - scores[index].min())
            if average < 0:
                scores = 1 - scores
            smooth = gaussian(scores.reshape(size, size), sigma=1)
            masks[b, c] = smooth > np.quantile(smooth, 0.8)
    return masks


def synthetic_case(rng, images, size):
    """Maps that point at random blobs: blurrier with depth, 4b blocky and partly zero."""
    truth = np.zeros((images, 2, size, size))
    rows, cols = np.indices((size, size))
    for b, c in np.ndindex(images, 2):
        for _ in range(6):
            y, x, r = rng.integers(0, size, 2).tolist() + [rng.integers(5, 25)]
            truth[b, c] += ((rows - y) ** 2 + (cols - x) ** 2) < r ** 2
    maps = np.stack([ndimage.gaussian_filter(truth, (0, 0, 1 + l, 1 + l)) + 0.05 * rng.random(truth.shape)
                     for l in range(8)], axis=2)
    deep = maps[:, :, 7].reshape(images, 2, size // 8, 8, size // 8, 8).mean(axis=(3, 5))
    deep = np.maximum(deep - 0.3 * deep.max(axis=(2, 3), keepdims=True), 0)
    maps[:, :, 7] = deep.repeat(8, axis=2).repeat(8, axis=3)
    low, high = maps.min(axis=(3, 4), keepdims=True), maps.max(axis=(3, 4), keepdims=True)
    maps = ((maps - low) / (high - low + 1e-12)).astype(np.float32)
    image = ndimage.gaussian_filter(truth.sum(axis=1, keepdims=True), (0, 0, 2, 2)) + 0.1 * rng.random((images, 1, size, size))
    return maps, np.ones((images, 2), bool), image.astype(np.float32)


def median_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    maps, predicted, images = synthetic_case(rng, args.images, args.size)
    t_original, original = median_time(lambda: original_actin(maps, predicted, images, rng), args.repeats)
    t_ours, ours = median_time(lambda: recipes.segment(maps, predicted, images, "actin"), args.repeats)
    pairs = predicted.sum()
    ious = [iou(ours[b, c], original[b, c]) for b, c in np.argwhere(predicted)]
    print(f"Actin recipe, {args.images} images x 2 classes of {args.size} x {args.size}, median of {args.repeats}")
    print(f"  original procedure (randomised PCA x5): {1e3 * t_original / pairs:8.2f} ms per image and class")
    print(f"  micranet_utils.analysis.recipes.segment        : {1e3 * t_ours / pairs:8.2f} ms per image and class")
    print(f"  speed-up: {t_original / t_ours:.1f}x   mask IoU: min {min(ious):.4f}, mean {np.mean(ious):.4f}")
    viewer_update(maps, predicted, images, args.repeats)


def viewer_update(maps, predicted, images, repeats):
    """Time one viewer redraw (slider moved) against the 0.5 s budget."""
    try:
        from micranet_utils.tutorial.viewer import Viewer
    except ImportError:
        return
    view = Viewer(images, maps, predicted)
    values = iter(np.linspace(0.6, 0.95, 2 * repeats + 2))
    first, _ = median_time(lambda: setattr(view.quantile, "value", next(values)), 1)
    again, _ = median_time(lambda: setattr(view.quantile, "value", next(values)), repeats)
    other, _ = median_time(lambda: setattr(view.sigma, "value", view.sigma.value + 0.25), repeats)
    print(f"Viewer update on {maps.shape[-1]} x {maps.shape[-1]}: quantile slider {1e3 * again:.0f} ms, "
          f"sigma slider {1e3 * other:.0f} ms (budget 500 ms; first draw of a class {1e3 * first:.0f} ms)")


if __name__ == "__main__":
    main()
