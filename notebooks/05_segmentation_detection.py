# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/05_segmentation_detection.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F05_segmentation_detection.ipynb)
#
# # 05 · From maps to masks, detections and counts
#
# **Goal.** Turn MICRA-Net's eight Grad-CAM maps into masks, objects and counts with the
# published recipe, written out in numpy and checked against the package, measure them
# against the pixel truth, tune the threshold and the smoothing on the validation split, see
# where it fails, and run the whole pipeline on a folder of images.
#
# **Steps.**
# 1. The model of lesson 03 and its maps on the test crops.
# 2. The Actin recipe in plain numpy, on one crop, then checked on every crop.
# 3. Masks, detections and counts for every test crop.
# 4. Measured against the truth: Dice, IoU, detection F1 and count error per class.
# 5. Tuning the threshold quantile and the smoothing on the *validation* split.
# 6. Where it fails.
# 7. An interactive viewer.
# 8. A folder of images, from the command line.
# 9. The other published recipes.

# %%
# Setup: on Colab this installs the tutorial package; elsewhere it does nothing.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    COLAB_PACKAGE = "micranet-utils @ git+https://github.com/micranet-tutorial/micranet-tutorial.git"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", COLAB_PACKAGE], check=True)

# %% tags=["parameters"]
from micranet_utils.tutorial.lessons import is_fast

DATASET = "demo"  # "demo": offline synthetic data with pixel truth; "actin": the published model and sample images
FAST = is_fast()  # MICRANET_FAST=1 (CI): fewer crops, same assertions
DEVICE = "auto"  # "auto", "cpu" or "cuda"

# %%
import csv
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from micranet_utils.base.datasets import get_dataset
from micranet_utils.io.zoo import load_zoo
from micranet_utils.tutorial import comparison, viewer
from micranet_utils.analysis import detection, metrics, recipes
from micranet_utils.model.gradcam import local_maps, predicted
from micranet_utils.model.network import LAYERS as LAYER_NAMES
from micranet_utils.tutorial.lessons import setup

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE)
HAVE_TRUTH = DATASET == "demo"

# %% [markdown]
# ## 1. A trained model and its maps
#
# With `DATASET = "demo"` we use the model lesson 03 trained on the synthetic STED-like crops
# (it is trained now if this lesson runs alone) and the crops of the demo **test** split, with
# their pixel truth for the two classes, rings and fibers. With `DATASET = "actin"` we use the
# authors' published model on the two sample images of the original repository: no truth
# there, so the measuring sections are skipped.
#
# `local_maps` gives, per crop and class, the eight layer maps `(N, C, 8, H, W)` and the
# classifier's logits; `predicted` turns the logits into present/absent (probability > 0.5).

# %%
if DATASET == "demo":
    from micranet_utils.tutorial.demo_data import ensure_demo
    from micranet_utils.tutorial.demo_models import ensure_demo_model

    model_path = ensure_demo_model(progress=False)
    model, params = load_zoo(model_path, device=device)
    size = int(params["size"])
    splits = ensure_demo(fast=FAST, progress=False)
    test = comparison.load_test_crops(splits["testing"], size=size)
    validation = comparison.load_test_crops(splits["validation"], size=size)
    if FAST:  # fewer crops, same steps
        test = {k: v[:16] if isinstance(v, np.ndarray) else v for k, v in test.items()}
        validation = {k: v[:16] if isinstance(v, np.ndarray) else v for k, v in validation.items()}
    images, class_names = test["images"], list(test["class_names"])
else:
    import pooch

    from micranet_utils.io.download import published_path
    from micranet_utils.io.images import read_image
    from micranet_utils.io.images import prepare_image

    model_path = published_path("models", "ActinModelZoo.hdf5")
    model, params = load_zoo(model_path, device=device)
    size = int(params["size"])
    # The two sample images of the original repository, pinned by their SHA-256.
    SAMPLES = {"image0.tif": "29e69054806bebf07fbec34fdd78c9a517345ef31ab235e85597f37861b40cea",
               "image1.tif": "e03386d7381d6910b174c1cb7e5b9e600cc09a1236e1f057dc6f428c0be8385e"}
    sample_dir = WORK / "actin_samples"
    sample_paths = [Path(pooch.retrieve(f"https://raw.githubusercontent.com/FLClab/MICRA-Net/HEAD/src/Actin/data/{name}",
                                        known_hash=f"sha256:{digest}", fname=name, path=sample_dir))
                    for name, digest in SAMPLES.items()]
    images = np.stack([prepare_image(read_image(p)) for p in sample_paths])
    class_names = list(get_dataset("actin").class_names)

start = time.perf_counter()
maps, logits = local_maps(model, images, device=device)
present = predicted(logits)
print(f"model {Path(model_path).name}: crops of {size} px, classes {class_names}")
print(f"maps {maps.shape} for {len(images)} crops in {time.perf_counter() - start:.1f} s")
print("predicted present:", {n: f"{present[:, c].sum()} of {len(images)}" for c, n in enumerate(class_names)})
if HAVE_TRUTH:
    truly = test["masks"].mean(axis=(2, 3)) > 0.05     # present: > 5 % of the crop, the training label rule
    print("truly present:    ", {n: f"{truly[:, c].sum()} of {len(images)}" for c, n in enumerate(class_names)})
    accuracy = (present == truly).mean(axis=0)
    print("classification accuracy:", {n: round(float(a), 2) for n, a in zip(class_names, accuracy)})
assert maps.shape == (len(images), len(class_names), 8, size, size)

# %% [markdown]
# The last two lines compare the classifier's yes/no answers with the truth: every mask below
# starts from these answers, since a class predicted absent gets an empty mask.

# %% [markdown]
# ## 2. The Actin recipe, in plain numpy
#
# The published recipe (`recipes.RECIPES["actin"]`) turns the eight maps of one crop and class
# into a mask in five steps:
#
# 1. **PCA7**: the seven maps 1a … 4a give seven numbers per pixel. Their first principal
#    component is the direction in which the pixels differ most; each pixel's coordinate on it
#    (its *score*) is one combined map. How much each layer counts is its *loading* (bar chart
#    below; 4a, the deepest of the seven, in orange).
# 2. **Sign**: a principal component has no sign of its own; the score is flipped if needed so
#    that it is high where the deepest map (4b, the most class-specific) is high.
# 3. **Gate and rescaling**: the pixels where 4b is positive *and* inside the foreground (8×8
#    blocks brighter than the median block) set the range that is rescaled to [0, 1].
# 4. **Smoothing**: a Gaussian filter, sigma = 1 pixel.
# 5. **Threshold**: keep the pixels above the crop's 0.8 quantile, i.e. the top 20 %.
#
# Here it is, written out; then we check that it gives exactly the masks of `recipes.segment`.
# (The original code averaged five randomised PCAs; the exact PCA of the 7×7 covariance gives
# the same masks, which the package's tests check against the original.)

# %%
def foreground_blocks(image):
    """(H, W) bool: the 8x8 blocks whose mean intensity is above the median block (H, W multiples of 8)."""
    height, width = image.shape
    blocks = image.astype(np.float64).reshape(height // 8, 8, width // 8, 8).mean(axis=(1, 3))
    return (blocks > np.quantile(blocks, 0.5)).repeat(8, axis=0).repeat(8, axis=1)


def actin_recipe(maps, image, quantile=0.8, sigma=1.0):
    """The Actin recipe for one crop and class: maps (8, H, W), image (H, W) -> mask (H, W), and each step."""
    # 1. PCA7: every pixel is a point in 7 dimensions, one per layer 1a..4a
    X = maps[:7].reshape(7, -1).astype(np.float64)          # (7, pixels)
    X = X - X.mean(axis=1, keepdims=True)                   # centre each layer
    covariance = X @ X.T / X.shape[1]                        # (7, 7)
    loadings = np.linalg.eigh(covariance)[1][:, -1]          # eigenvector of the largest eigenvalue
    score = (loadings @ X).reshape(maps.shape[1:])           # each pixel's coordinate on it
    # 2. sign: high where 4b is high
    if np.sum(score * np.maximum(maps[7], 0)) < 0:
        score, loadings = -score, -loadings
    # 3. gate and rescaling to [0, 1]
    gate = (maps[7] > 0) & foreground_blocks(image)
    if not gate.any():                                       # nothing to set the scale: empty mask
        return np.zeros(score.shape, bool), None
    low, high = score[gate].min(), score[gate].max()
    rescaled = (score - low) / (high - low)
    # 4. smoothing (the package keeps this map as float32)
    smooth = ndimage.gaussian_filter(rescaled, sigma, mode="nearest", truncate=4.0).astype(np.float32)
    # 5. threshold: the top (1 - quantile) of the crop's pixels
    mask = smooth > np.quantile(smooth, quantile)
    return mask, {"loadings": loadings, "score": score, "gate": gate, "smooth": smooth}


# One crop and class to follow: predicted present, truly present (demo data), with a non-empty gate.
pairs = [(i, c) for c in range(len(class_names)) for i in range(len(images))]
if HAVE_TRUTH:
    pairs.sort(key=lambda ic: (not present[ic], not truly[ic]))
example, CLASS = next(ic for ic in pairs if actin_recipe(maps[ic], images[ic[0], 0])[1] is not None)
crop_maps, crop_image = maps[example, CLASS], images[example, 0]
crop_mask, steps = actin_recipe(crop_maps, crop_image)
print(f"crop {example}, class {class_names[CLASS]}")
print("loadings 1a..4a:", np.round(steps["loadings"], 2).tolist())

panels = [(crop_image, "crop", "gray"), (crop_maps[1], "layer 1b", "magma"), (crop_maps[6], "layer 4a", "magma"),
          (crop_maps[7], "layer 4b", "magma"), (steps["score"], "1-2. PCA7 score", "coolwarm"),
          (steps["gate"], "3. gate: 4b > 0, foreground", "gray"), (steps["smooth"], "3-4. rescaled, smoothed", "magma"),
          (crop_mask, "5. top 20 %: the mask", "gray")]
if HAVE_TRUTH:
    panels.append((test["masks"][example, CLASS], f"truth ({class_names[CLASS]})", "gray"))
fig = plt.figure(figsize=(2.2 * len(panels), 5.2))
grid = fig.add_gridspec(2, len(panels), height_ratios=[1, 0.9])
for k, (picture, title, cmap) in enumerate(panels):
    ax = fig.add_subplot(grid[0, k])
    ax.imshow(picture, cmap=cmap)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
bars = fig.add_subplot(grid[1, 1:5])
bars.bar(LAYER_NAMES[:7], steps["loadings"], color=["C0"] * 6 + ["C1"])
bars.axhline(0, color="k", lw=0.5)
bars.set(title="the seven loadings of PCA7 (this crop and class)", xlabel="layer", ylabel="loading")
plt.tight_layout()
plt.show()

# The whole recipe by hand, on every crop and class predicted present, against the package
by_hand, all_loadings = np.zeros(maps.shape[:2] + maps.shape[3:], bool), []
for i, c in np.argwhere(present):
    by_hand[i, c], crop_steps = actin_recipe(maps[i, c], images[i, 0])
    if crop_steps is not None:
        all_loadings.append(crop_steps["loadings"])
package = recipes.segment(maps, present, images, "actin")
print(f"by hand vs recipes.segment: {int((by_hand != package).sum())} pixels differ "
      f"over {int(present.sum())} crop-class pairs")
assert (by_hand == package).all()
assert crop_mask.sum() <= np.ceil(0.2 * crop_mask.size)     # at most the top fifth (fewer when values tie)

# the loadings over all those crops: which layers the combined map is made of
all_loadings = np.array(all_loadings)
print(f"{'':>14}" + "".join(f"{n:>7}" for n in LAYER_NAMES[:7]))
print(f"{'mean loading':>14}" + "".join(f"{v:7.2f}" for v in all_loadings.mean(axis=0)))
print(f"{'mean |loading|':>14}" + "".join(f"{v:7.2f}" for v in np.abs(all_loadings).mean(axis=0)))

# %% [markdown]
# The hand-written recipe gives the package's masks exactly, on every crop and class
# predicted present (0 pixels differ).
#
# What the loadings say: the combined map is made mostly of the deep layers. On this crop
# 4a and 3b carry the largest loadings (0.81 and 0.48 in the full-mode run stored here), and
# over all crops too (mean |loading| 0.66 for 4a and 0.52 for 3b, 0.13 to 0.30 for 1a to 3a).
# So the PCA7 score is built of 8- and 4-pixel blocks, as the panel shows: it is *not* as
# sharp as the early layers. The early layers' small loadings add a little detail, and layer
# 1b, sharp but lit on every edge, hardly counts. The gate decides which pixels set the
# scale; the smoothing rounds the block edges; the threshold keeps the top fifth. That last
# choice is a prior, not a measurement: a crop with little structure still gets 20 % of its
# pixels — remember it when we look at failures.

# %% [markdown]
# ## 3. Masks, detections and counts for every crop
#
# `recipes.segment` runs the recipe on all crops and classes at once. `detection.detect` cuts
# each mask into connected objects (centroid, bounding box, area) and `detection.count` counts
# them; objects smaller than `MIN_AREA` pixels are speckle, not structures.

# %%
MIN_AREA = 16
start = time.perf_counter()
masks = recipes.segment(maps, present, images, "actin")
objects = detection.detect(masks, min_area=MIN_AREA)
counts = detection.count(masks, min_area=MIN_AREA)
print(f"masks {masks.shape} in {time.perf_counter() - start:.2f} s")
for c, name in enumerate(class_names):
    print(f"{name}: {counts[:, c].sum()} objects in {present[:, c].sum()} crops predicted present")
assert not masks[~present].any()          # absent class, empty mask

# %%
shown = list(range(min(4, len(images))))
if HAVE_TRUTH:  # two crops where each class is present and found
    shown = [int(i) for c in range(len(class_names)) for i in np.flatnonzero(present[:, c] & truly[:, c])[:2]] \
        or list(range(min(4, len(images))))
true_points = comparison.true_centroids(test["labels"]) if HAVE_TRUTH else None
fig, axes = plt.subplots(len(class_names), len(shown), figsize=(3 * len(shown), 3 * len(class_names)), squeeze=False)
for row, name in enumerate(class_names):
    for ax, i in zip(axes[row], shown):
        ax.imshow(images[i, 0], cmap="gray")
        ax.contour(masks[i, row], levels=[0.5], colors="red", linewidths=0.8)
        found = objects[i][row].centroids
        ax.plot(found[:, 1], found[:, 0], "x", color="yellow", ms=7, label="detected")
        if HAVE_TRUTH:
            ax.contour(test["masks"][i, row], levels=[0.5], colors="cyan", linewidths=0.6)
            ax.plot(true_points[i][row][:, 1], true_points[i][row][:, 0], "o", mfc="none", color="cyan",
                    ms=7, label="true")
        ax.set_title(f"crop {i}, {name}: {counts[i, row]} found", fontsize=9)
        ax.axis("off")
axes[0, 0].legend(loc="lower left", fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# Red: the mask; yellow crosses: the detected objects; cyan: the true outlines and centres
# (demo data only). A crop whose class is predicted absent has no red at all.

# %% [markdown]
# ## 4. Measured against the truth
#
# Four numbers per class, all from `micranet_utils.analysis.metrics` (pixels pooled over the crops):
#
# * **Dice** = 2|A∩B| / (|A| + |B|) and **IoU** = |A∩B| / |A∪B|: how well the mask overlaps
#   the true structure (1 = perfect);
# * **detection F1**: each true object is paired with at most one detected object, optimally
#   (Hungarian matching), if their centres are at most 16 pixels apart; F1 combines the share of
#   detections that are right and the share of true objects that are found;
# * **count error**: mean over crops of |found − true| objects.
#
# To know what a number is worth we compare with two references: the **same masks on the
# wrong crops** (shuffled: what overlap you get by chance with masks of that size), and the
# masks the recipe gives when the classifier's yes/no is replaced by the **true labels**
# (which separates the localisation from the classification errors).

# %%
def table(rows, title):
    """Print a per-class table of scores, with the mean over classes."""
    keys = ["dice", "iou", "precision", "recall", "detection_f1", "count_error"]
    print(title)
    print(f"{'':>10}" + "".join(f"{k:>14}" for k in keys))
    for name in class_names:
        print(f"{name:>10}" + "".join(f"{rows[k][name]:>14.3f}" for k in keys))
    print(f"{'mean':>10}" + "".join(f"{np.mean(list(rows[k].values())):>14.3f}" for k in keys))


if HAVE_TRUTH:
    scores_test = comparison.score_masks(masks, test, max_distance=16.0, min_area=MIN_AREA)
    table(scores_test, "MICRA-Net, Actin recipe, test crops")
    oracle_masks = recipes.segment(maps, truly, images, "actin")
    scores_oracle = comparison.score_masks(oracle_masks, test, max_distance=16.0, min_area=MIN_AREA)
    table(scores_oracle, "\nsame maps, true image labels instead of the classifier's")
    shuffled = np.roll(oracle_masks, 1, axis=0)
    chance = metrics.pixel_scores(shuffled, test["masks"])["dice"]
    print("\nDice of the same masks on the wrong crops (chance):",
          {n: round(float(d), 3) for n, d in zip(class_names, chance)})
    oracle_mean = np.mean(list(scores_oracle["dice"].values()))
    assert oracle_mean > chance.mean(), (oracle_mean, chance.mean())   # the maps localise better than chance
else:
    print("No pixel truth for the published sample images: this section needs DATASET = 'demo'.")

# %% [markdown]
# "True image labels" are the labels the network was trained to give: a class is present when
# it covers more than 5 % of the crop (lesson 01), the definition used throughout.
#
# Read the rows together. If the true-label row is much better than the first one, the
# classifier's yes/no is what costs most; if both are near the chance line, the maps themselves
# miss the structures. The count error is in objects per crop: compare it with the true
# number of objects per crop (a few for rings, more for fibers).

# %%
if HAVE_TRUTH:
    true_counts = np.array([[len(p) for p in crop] for crop in true_points])
    errors = metrics.count_error(counts, true_counts)
    fig, axes = plt.subplots(1, len(class_names), figsize=(4 * len(class_names), 3.6))
    for c, (ax, name) in enumerate(zip(axes, class_names)):
        top = max(true_counts[:, c].max(), counts[:, c].max()) + 1
        ax.plot([0, top], [0, top], color="gray", lw=0.8)
        ax.scatter(true_counts[:, c], counts[:, c] + np.random.default_rng(c).uniform(-0.15, 0.15, len(counts)), s=14)
        ax.set_xlabel("true objects per crop")
        ax.set_ylabel("objects found")
        ax.set_title(f"{name}: mean |error| {errors['absolute'][c]:.2f}, bias {errors['bias'][c]:+.2f}")
    plt.tight_layout()
    plt.show()

# %% [markdown]
# Points on the grey diagonal are perfect counts; a positive bias means the masks break a
# structure into several pieces (or add speckle), a negative one that they merge or miss them.

# %% [markdown]
# ## 5. Tuning the threshold and the smoothing, on the validation split
#
# The 0.8 quantile and sigma 1 were chosen by the authors for their data. On new data, choose
# them again — on the **validation** split, never on the test split (otherwise the test score
# is no longer an honest estimate). We try a small grid and keep the best mean Dice.

# %%
if HAVE_TRUTH:
    QUANTILES = [0.6, 0.7, 0.8, 0.9, 0.95]
    SIGMAS = [0.0, 1.0, 2.0, 4.0]
    val_maps, val_logits = local_maps(model, validation["images"], device=device)
    val_present = predicted(val_logits)
    sweep = np.zeros((len(QUANTILES), len(SIGMAS), len(class_names)))
    for i, q in enumerate(QUANTILES):
        for j, s in enumerate(SIGMAS):
            val_masks = recipes.segment(val_maps, val_present, validation["images"], "actin", quantile=q, sigma=s)
            sweep[i, j] = metrics.pixel_scores(val_masks, validation["masks"])["dice"]
    best_i, best_j = np.unravel_index(np.argmax(sweep.mean(axis=2)), sweep.shape[:2])
    best = {"quantile": QUANTILES[best_i], "sigma": SIGMAS[best_j]}

    fig, axes = plt.subplots(1, len(class_names), figsize=(4.5 * len(class_names), 3.4))
    for c, (ax, name) in enumerate(zip(axes, class_names)):
        for j, s in enumerate(SIGMAS):
            ax.plot(QUANTILES, sweep[:, j, c], "o-", label=f"sigma {s:g}")
        ax.axvline(0.8, color="gray", lw=0.6)
        ax.set_xlabel("threshold quantile")
        ax.set_ylabel("validation Dice")
        ax.set_title(name)
    axes[0].legend(fontsize=8)
    plt.tight_layout()
    plt.show()

    print("validation Dice, mean of the two classes")
    print(f"{'quantile':>9}" + "".join(f"{f'sigma {s:g}':>10}" for s in SIGMAS))
    for i, q in enumerate(QUANTILES):
        print(f"{q:>9}" + "".join(f"{v:10.3f}" for v in sweep[i].mean(axis=1)))
    tuned = recipes.segment(maps, present, images, "actin", **best)
    scores_tuned = comparison.score_masks(tuned, test, max_distance=16.0, min_area=MIN_AREA)
    print(f"best on validation: {best} (validation Dice {sweep[best_i, best_j].mean():.3f}; "
          f"published 0.8 / 1: {sweep[QUANTILES.index(0.8), SIGMAS.index(1.0)].mean():.3f})")
    print("test Dice, published constants:", {n: round(v, 3) for n, v in scores_test["dice"].items()})
    print("test Dice, tuned constants:    ", {n: round(v, 3) for n, v in scores_tuned["dice"].items()})
    assert sweep.shape == (5, 4, len(class_names)) and np.isfinite(sweep).all()
else:
    print("The sweep needs pixel truth: DATASET = 'demo'.")

# %% [markdown]
# Each line is one smoothing; the grey line marks the published quantile. The four lines lie
# on top of each other: here sigma changes the validation Dice by less than 0.01 at every
# quantile, so only the quantile matters (about 0.70 at 0.6 to 0.7, 0.65 at the published 0.8,
# 0.27 at 0.95, in the full-mode run stored here). A quantile of 0.8 keeps 20 % of each crop:
# if the structures cover less than that, a higher quantile gains precision, if more, a lower
# one gains recall. The two test rows show whether the choice made on validation carries over
# to unseen crops — it need not, with few crops.

# %% [markdown]
# ## 6. Where it fails
#
# Averages hide the bad cases. Below, for each class: a crop the classifier missed, the two
# crops with the lowest Dice among those where the class was found, and a crop where the
# classifier said "present" but the class covers at most 5 % of it, so not present by the
# training rule (such a crop gets a mask of mostly false positives).

# %%
if HAVE_TRUTH:
    for c, name in enumerate(class_names):
        found = np.flatnonzero(present[:, c] & truly[:, c])
        per_crop = np.array([metrics.dice(masks[i, c], test["masks"][i, c]) for i in found])
        worst = found[np.argsort(per_crop)[:2]]
        false_alarms = np.flatnonzero(present[:, c] & ~truly[:, c])
        missed = np.flatnonzero(~present[:, c] & truly[:, c])
        print(f"{name}: {len(missed)} crops missed by the classifier, {len(false_alarms)} false alarms; "
              f"lowest Dice where found: {np.round(np.sort(per_crop)[:2], 2).tolist()}")
        chosen = list(missed[:1]) + list(worst) + list(false_alarms[:1])
        fig, axes = plt.subplots(1, len(chosen), figsize=(3 * len(chosen), 3), squeeze=False)
        for ax, i in zip(axes[0], chosen):
            ax.imshow(images[i, 0], cmap="gray")
            ax.contour(test["masks"][i, c], levels=[0.5], colors="cyan", linewidths=0.7)
            if masks[i, c].any():
                ax.contour(masks[i, c], levels=[0.5], colors="red", linewidths=0.7)
            kind = "false alarm" if not truly[i, c] else ("missed" if not present[i, c] else "low Dice")
            ax.set_title(f"{name}, crop {i}: {kind}\nDice {metrics.dice(masks[i, c], test['masks'][i, c]):.2f}",
                         fontsize=9)
            ax.axis("off")
        plt.tight_layout()
        plt.show()

# %% [markdown]
# Typical failures, and what they teach:
# * **missed**: the classifier said "absent", so there is no mask at all, however good the maps;
# * **low Dice with a structure present**: the fixed 20 % is too much for a small patch (the
#   mask spreads over the neighbouring dendrite) or too little for a crop full of structure;
# * **false alarm**: the quantile rule always returns something; only the classifier can say
#   "nothing here".

# %% [markdown]
# ## 7. An interactive viewer
#
# `viewer.show` puts the crop, the map of any layer (or the combined map) and the mask side by
# side, with sliders for the threshold quantile and the smoothing, and a class selector. Move
# them and watch the mask (red) against the truth (cyan outline). Below it, the same view as a
# static figure (for reports, or when widgets are not available).

# %%
view = viewer.show(images, maps, predicted=present, class_names=class_names, recipe="actin",
                   truth=test["masks"] if HAVE_TRUTH else None)
view.image_choice.value = example
view.class_choice.value = CLASS
view

# %%
figure = viewer.show_static(images, maps, index=example, class_index=CLASS, recipe="actin",
                            truth=test["masks"] if HAVE_TRUTH else None, predicted=present,
                            class_name=class_names[CLASS])
plt.show()
assert (view.mask == masks[example, CLASS]).all()   # the viewer at its start values is the recipe
assert len(figure.axes) == 7

# %% [markdown]
# ## 8. A folder of images, from the command line
#
# For your own images, the same pipeline runs on a whole folder:
#
# ```
# micranet predict --model MODEL.hdf5 --input images/ --output results/ --recipe actin
# ```
#
# It writes a mask TIFF and an overlay PNG per image, a `results.csv` with the class
# probabilities, predicted labels, counts and areas, and a `manifest.json` recording the model
# file's hash and every option. A file it cannot read is named with the reason and skipped;
# rerunning skips the images already done. Here we call it from Python on a few test images
# and one broken file.

# %%
import tifffile

from micranet_utils import cli

folder = WORK / "lesson05_predict"
inputs, outputs = folder / "images", folder / "results"
inputs.mkdir(parents=True, exist_ok=True)
for i in range(min(3, len(images))):
    tifffile.imwrite(inputs / f"crop{i}.tif", images[i, 0])
(inputs / "broken.tif").write_text("not an image")
# paths relative to this notebook's folder, so that messages read like the ones you would type
status = cli.main(["predict", "--model", os.path.relpath(model_path), "--input", os.path.relpath(inputs),
                   "--output", os.path.relpath(outputs), "--recipe", "actin", "--device", str(device),
                   "--overwrite", "--quiet"])
with open(outputs / "results.csv") as handle:
    rows = list(csv.DictReader(handle))
print(f"exit status {status} (1: some files failed)")
for row in rows:
    print({k: row[k] for k in ["file"] + [f"probability_{n}" for n in class_names] + [f"count_{n}" for n in class_names]})
assert status == 1 and len(rows) == min(3, len(images))
plt.figure(figsize=(4, 4))
plt.imshow(plt.imread(outputs / "crop0_overlay.png"))
plt.title("crop0_overlay.png")
plt.axis("off")
plt.show()

# %% [markdown]
# The broken file was named on the error stream and skipped; the three crops have their
# results. Images larger than `--tile` pixels (default 1024) are cut into overlapping tiles
# whose maps are stitched; `--maps` also saves the eight maps per image (HDF5).

# %% [markdown]
# ## 9. The other published recipes
#
# Every published data set has its own last step; the first three (PCA7, gate, smoothing) are
# shared. Each recipe is a small table of constants, `recipes.RECIPES`, run by the same code:

# %%
# NBVAL_CHECK_OUTPUT
for name, recipe in recipes.RECIPES.items():
    print(f"{name:>7}: threshold={recipe.threshold:<9} sigma={recipe.sigma:<4} normalise={recipe.normalize!s:<5} "
          f"foreground gate={recipe.gate_foreground}")

# %% [markdown]
# * **ctc** (Cell Tracking Challenge): classes come in pairs; the mask of a pair is where the
#   first class's map exceeds the second's by more than Otsu's threshold, so `segment` returns
#   one mask per pair.
# * **em** and **pvivax**: one object per image — the thresholded blob around the strongest
#   response (0.9 quantile after heavy smoothing for EM, Otsu for P. vivax).
# * **mnist**: each connected region of layer 4b is thresholded block by block (Otsu in 8×8
#   blocks that have contrast), which separates touching digits.
#
# `recipes.segment(maps, present, images, recipe="em")` runs any of them; constants can be
# changed per call (`quantile=0.9, sigma=2`) or with `recipes.get_recipe("actin", sigma=2)`.

# %% [markdown]
# ## What you learned
# - A recipe turns eight Grad-CAM maps into a mask in four steps: PCA7 combination, a gate that
#   sets the scale, Gaussian smoothing, a threshold; detections and counts are the mask's
#   connected objects.
# - Masks are only as good as the yes/no answers: an absent prediction gives no mask, a false
#   alarm gives a mask of false positives.
# - Scores need references: the same masks on the wrong crops (chance) and the true labels
#   (classification removed) tell you what a Dice value means.
# - The threshold quantile and sigma are priors; tune them on validation data, report test data.
#   On the demo data only the quantile changes the Dice.
#
# ## Try this on your data
# 1. Train or fine-tune a model on your images (lessons 03 and 07), then run
#    `micranet predict --model your_model.hdf5 --input your_images/ --output results/`.
# 2. Annotate a handful of validation images by hand (even roughly) and rerun section 5 with
#    them to choose `quantile` and `sigma` for your structures.
# 3. Open `results.csv` in a spreadsheet: the counts and areas per image are the numbers you
#    will compare between conditions; check a few overlays before trusting them.
