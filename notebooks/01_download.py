# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/01_download.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F01_download.ipynb)
#
# # 01 · The data: published files, a demo set with pixel truth, crops and image-level labels
#
# **Goal.** Know what MICRA-Net is trained on: the layout of a training file, how it is cut
# into crops, how each crop gets its yes/no labels, and why this tutorial also carries a
# synthetic data set whose pixel truth is known exactly.
#
# **Steps.**
# 1. Get the data: the offline demo set (default) or the published Actin files.
# 2. Open a training file with h5py: groups, datasets, shapes, dtypes.
# 3. Compare demo images with real STED images of F-actin, at the same scale.
# 4. See the pixel truth: rings, fibers, dendrite.
# 5. Cut images into crops with the original rules and derive the image-level labels.
# 6. Read crops lazily for training, with the original augmentations.
# 7. Measure two trivial baselines against the pixel truth: the numbers to beat later.

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

DATASET = "demo"  # "demo": offline synthetic data with pixel truth; "actin": the published files (GBs)
FAST = is_fast()  # MICRANET_FAST=1 (CI): less work, same assertions
DEVICE = "auto"  # not used here: nothing is trained in this lesson

# %%
import time
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from torch.utils.data import DataLoader

from micranet_utils.base.datasets import DATASETS
from micranet_utils.io.training_files import check_training_file, CropDataset, find_split_files
from micranet_utils.tutorial.demo_models import DEMO_SETTINGS
from micranet_utils.tutorial.lessons import setup

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE)
# crop side in pixels: the demo model's (64 px, lessons 03 to 06) or the published Actin model's (256 px)
CROP = DEMO_SETTINGS["full"]["size"] if DATASET == "demo" else DATASETS["actin"].crop_size
PIXEL_NM = 20                                                          # both data sets: 20 nm per pixel
print(f"crop size: {CROP} px")

# %% [markdown]
# ## 1. Get the data
#
# **Demo (default, offline).** `micranet_utils.tutorial.demo_data` draws STED-like images of F-actin in
# dendrites: periodic *rings* across the dendrite (the 190 nm lattice of the membrane
# skeleton), longitudinal *fibers*, both, or neither, with a blurred, noisy acquisition. It
# writes three files, `training_demo.hdf5`, `validation_demo.hdf5` and `testing_demo.hdf5`, in
# exactly the layout of the published ones. The same seed always gives the same files, and
# `ensure_demo` reuses them when they are already in the work folder. From a terminal:
# `micranet demo-data --output DIR --seed 0`.
#
# **Actin (published).** The authors' files are in one archive of several gigabytes. The
# first download prints their licence note: the data are theirs, for non-commercial research,
# and you should cite the paper. The archive is cached in `MICRANET_HOME`
# (`micranet download datasets` does the same from a terminal).

# %%
start = time.perf_counter()
if DATASET == "demo":
    from micranet_utils.tutorial.demo_data import ensure_demo

    files = ensure_demo(fast=FAST)          # WORK/demo (WORK/demo-fast in fast mode): made once, then reused
else:
    from micranet_utils.io.download import fetch_published, NOTE

    print(NOTE)                             # whose data these are, their licence, what to cite
    tree = fetch_published("datasets")      # several GB the first time; then read from the cache
    files = find_split_files(tree / "datasets")
print(f"ready in {time.perf_counter() - start:.1f} s")
for split, path in files.items():
    size = f"{path.stat().st_size / 1e6:.0f} MB" if path else ""
    print(f"{split:>10}: {path.name if path else '(none)'} {size}")

# %% [markdown]
# ## 2. Inside a training file
#
# A training file is plain HDF5: folders (*groups*) of arrays (*datasets*). We walk one with
# h5py and print every group, dataset, shape and dtype, and the attributes.

# %%
def show_layout(path, max_groups=4):
    with h5py.File(path, "r") as file:
        print(path.name)
        for key, value in file.attrs.items():
            print(f"  @{key} = {value}")
        for n, (name, group) in enumerate(file.items()):
            if n == max_groups:
                print(f"  ... {len(file) - max_groups} more groups")
                break
            print(f"  {name}/")
            for key, dataset in group.items():
                print(f"    {key:<6} shape {dataset.shape}, dtype {dataset.dtype}")
                for attr, value in dataset.attrs.items():
                    print(f"      @{attr}: array {np.shape(value)}, first rows {np.asarray(value)[:2].tolist()}")


show_layout(files["training"])

# %% [markdown]
# What each part holds:
#
# | item | shape | meaning |
# | --- | --- | --- |
# | `<group>/data` | (N, H, W) | N images, float32 intensities in [0, 1]; images of one group are stacked, smaller ones zero-padded |
# | `<group>/label` | (N, 3, H, W) | channel 0 = rings, 1 = fibers (integer ids, one per object, 0 = none); channel 2 = dendrite mask (0/1) |
# | `label.attrs["shapes"]` | (N, 2) | true (height, width) of each image before padding |
#
# The group names carry no meaning. `check_training_file` checks a file against this layout
# (it is what to run first on a file you made yourself) and summarises it:

# %%
summary = check_training_file(files["training"])
print(f"{summary['images']} images, {summary['num_classes']} classes")
for name, group in summary["groups"].items():
    print(f"  {name}: {group['images']} images {group['height']}x{group['width']}, data {group['data_dtype']} "
          f"in [{group['data_min']:.2f}, {group['data_max']:.2f}], label {group['label_dtype']}")
    assert group["label_channels"] == 3 and 0 <= group["data_min"] and group["data_max"] <= 1

# %% [markdown]
# ## 3. Demo images beside real STED images
#
# The original repository ships two real STED images of F-actin in neurons (256×256 px,
# 20 nm pixels, no labels). When they are present (in a clone of this tutorial's development
# checkout, `../shared/fixtures/upstream-samples/actin`), we show them beside 256×256 windows of
# training images, with the same colour map, the same intensity range and the same scale bar.

# %%
def find_real_samples():
    for folder in [Path.cwd(), *Path.cwd().resolve().parents]:
        candidate = folder / "shared" / "fixtures" / "upstream-samples" / "actin"
        if candidate.is_dir():
            return sorted(candidate.glob("*.tif"))
    return []


def first_images(path, count):
    """The first `count` images of a file: (group, index, image (H, W), label (3, H, W), true shape)."""
    out = []
    with h5py.File(path, "r") as file:
        for name, group in file.items():
            for k in range(group["data"].shape[0]):
                if len(out) == count:
                    return out
                out.append((name, k, group["data"][k], group["label"][k], tuple(group["label"].attrs["shapes"][k])))
    return out


def scale_bar(ax, microns=1, color="white"):
    pixels = microns * 1000 / PIXEL_NM
    ax.plot([10, 10 + pixels], [240, 240], color=color, lw=3)
    ax.text(10 + pixels / 2, 232, f"{microns} µm", color=color, ha="center", fontsize=8)


real_paths = find_real_samples()
examples = first_images(files["training"], 8)
def busiest_window(image, label, side=256):
    """The side x side window of `image` holding the most dendrite (stride 64 px)."""
    starts = [(r, c) for r in range(0, image.shape[0] - side + 1, 64) for c in range(0, image.shape[1] - side + 1, 64)]
    r, c = max(starts, key=lambda rc: label[2, rc[0]:rc[0] + side, rc[1]:rc[1] + side].sum())
    return image[r:r + side, c:c + side]


windows = [busiest_window(image, label) for _, _, image, label, _ in examples[:4]]
if real_paths:
    import tifffile

    real = [tifffile.imread(p).astype(np.float32)[:256, :256] for p in real_paths[:2]]
else:
    real = []
    print("The real sample images are not available here (they live outside this repository); "
          "only the training images are shown.")
shown = windows[: 4 - len(real)] + real
vmax = float(np.percentile(np.concatenate([w.ravel() for w in shown]), 99.5))
fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4))
for n, (ax, window) in enumerate(zip(axes, shown)):
    ax.imshow(window, cmap="hot", vmin=0, vmax=vmax)
    scale_bar(ax)
    is_real = n >= len(shown) - len(real)
    ax.set_title(f"real sample {real_paths[n - len(shown) + len(real)].stem}" if is_real
                 else f"{DATASET} training image {n}", fontsize=9)
    ax.axis("off")
plt.suptitle(f"256x256 px windows, 20 nm pixels, one intensity range (0 to {vmax:.2f})", fontsize=10)
plt.tight_layout()
plt.show()

# %% [markdown]
# What to notice: at the same scale, the rings of the demo images repeat every 9 to 10 px
# (190 nm) like the faint periodic pattern in the real images, and the fibers are thin lines
# along the dendrite. The demo images are cleaner and more regular than real neurons (no
# spines, no out-of-focus haze, straight-ish dendrites): they are a teaching set, made so that
# every step can be checked against a known truth, not a replacement for real data.

# %%
if real:
    ranges = [(float(w.mean()), float(np.percentile(w, 99.5))) for w in windows + real]
    for name, (mean, high) in zip([f"{DATASET} {n}" for n in range(len(windows))] +
                                  [p.stem for p in real_paths[:2]], ranges):
        print(f"{name:>10}: mean {mean:.3f}, 99.5th percentile {high:.3f}")
    assert max(high for _, high in ranges) < 1.0   # both live in [0, 1], far from saturation

# %% [markdown]
# ## 4. The pixel truth
#
# Each image comes with three masks. The ring mask covers each patch of the periodic lattice
# (first to last ring, across the stripes); the fiber mask covers each fiber, widened to the
# resolution of the microscope (6 px); the dendrite mask is the foreground. MICRA-Net will
# never see the first two: it is trained from image-level yes/no labels only. We keep them to
# *measure* what it finds.

# %%
def truth_overlay(label):
    rgb = np.zeros(label.shape[1:] + (3,))
    rgb[..., 2] = 0.35 * (label[2] > 0)            # dendrite: dark blue
    rgb[label[0] > 0] = (1.0, 0.2, 0.4)            # rings: pink
    rgb[label[1] > 0] = (0.2, 1.0, 0.4)            # fibers: green
    return rgb


def has(label, channel):
    return bool((label[channel] > 0).any())


both = [n for n, example in enumerate(examples) if has(example[3], 0) and has(example[3], 1)] or [0]
index = max(both, key=lambda n: (examples[n][3][2] > 0).sum())   # the one with most dendrite
group_name, image_index, image, label, shape = examples[index]
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
axes[0].imshow(image, cmap="hot", vmax=np.percentile(image, 99.5))
axes[0].set_title(f"training image {index} (true size {shape[0]}x{shape[1]})")
axes[1].imshow(truth_overlay(label))
axes[1].set_title("truth: rings (pink), fibers (green), dendrite (blue)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()
print(f"ring objects: {len(np.unique(label[0])) - 1}, fiber objects: {len(np.unique(label[1])) - 1}, "
      f"dendrite: {100 * (label[2] > 0).mean():.0f}% of the image")

# %% [markdown]
# Where the image is smaller than the stored array (its true `shapes` entry), the rest is
# zero padding in both the image and the labels. The ring and fiber channels hold one integer
# per object (instance labels), as in the published files: MICRA-Net uses only `label > 0`,
# but instance ids let the Mask R-CNN baseline of lesson 06 count objects.

# %% [markdown]
# ## 5. Crops and image-level labels: the original rules
#
# The original loader cuts every image into square crops and keeps only those that show
# enough dendrite; each kept crop gets one yes/no label per class:
#
# * positions: rows and columns `0, stride, 2·stride, …` inside the true image size, with
#   `stride = int(size × 0.75)`: neighbouring crops overlap by 25 %;
# * a crop is kept when the dendrite mask covers at least **10 %** of it;
# * a crop running past the image is zero-padded at the bottom and right;
# * a class is **present** when its pixels cover more than **5 %** of the crop.
#
# `CropDataset` applies exactly these rules (the tests compare it with a plain
# re-implementation, and it reads the demo files identically to the original loader). The
# published model used crops of 256 px; the demo lessons use 64 px (`DEMO_SETTINGS`), small
# enough to train on a CPU in minutes.

# %%
# NBVAL_CHECK_OUTPUT
stride = int(CROP * 0.75)
print(f"crop {CROP} px, stride {stride} px: a crop is kept when the dendrite covers >= {0.1 * CROP**2:.0f} px,")
print(f"and a class is present when it covers > {0.05 * CROP**2:.0f} px of it")

# %%
crops = CropDataset(files["training"], size=CROP, return_masks=True)
print(crops)
candidates = [(r, c) for r in range(0, shape[0], stride) for c in range(0, shape[1], stride)]
kept = {(r, c): n for n, (g, k, r, c) in enumerate(crops.positions) if (g, k) == (group_name, image_index)}
targets = crops.targets()

fig, ax = plt.subplots(figsize=(6, 6))
ax.imshow(truth_overlay(label))
for (r, c) in candidates:
    if (r, c) in kept:
        ring, fiber = targets[kept[(r, c)]]
        color = "white" if ring and fiber else (1, .2, .4) if ring else (.2, 1, .4) if fiber else "gray"
        ax.plot(c + CROP / 2, r + CROP / 2, "o", color=color, ms=9, mec="black")
    else:
        ax.plot(c + CROP / 2, r + CROP / 2, "x", color="red", ms=7)
r, c = next(iter(kept)) if kept else (0, 0)
ax.add_patch(Rectangle((c - 0.5, r - 0.5), CROP, CROP, fill=False, ec="yellow", lw=2))
ax.set_title(f"crop centres: kept (dot: pink rings, green fibers, white both, gray neither)\n"
             f"rejected, <10% dendrite (red x); one {CROP}px crop in yellow", fontsize=9)
ax.axis("off")
plt.show()
print(f"image {index}: {len(candidates)} positions, {len(kept)} kept")

# %% [markdown]
# Every kept position becomes one training example. Now a gallery of crops with the label
# the network is trained on, and the area of each class that decided it.

# %%
order = np.random.default_rng(0).permutation(len(crops))[:8]
fig, axes = plt.subplots(2, 8, figsize=(16, 4.6))
for column, n in enumerate(order):
    x, y, masks = crops[int(n)]
    areas = masks.mean(dim=(1, 2)).numpy()
    axes[0, column].imshow(x[0], cmap="hot", vmax=max(float(np.percentile(x[0], 99.5)), 1e-3))
    axes[0, column].set_title(f"rings {'yes' if y[0] else 'no'}, fibers {'yes' if y[1] else 'no'}", fontsize=8)
    axes[1, column].imshow(truth_overlay(np.concatenate([masks.numpy(), np.zeros((1, CROP, CROP))])))
    axes[1, column].set_title(f"area {100 * areas[0]:.0f}% / {100 * areas[1]:.0f}%", fontsize=8)
    assert list(y.numpy()) == list(areas > 0.05)           # the 5 % rule, checked on every crop shown
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to notice: the label says only *whether* a structure covers more than 5 % of the crop,
# not *where*. A crop with a sliver of rings (below 5 %) is labelled "no rings": the labels
# are slightly noisy near the threshold, as in the published data.
#
# The balance of these labels matters for training (the original loss weights the rarer
# positive class more). Here are the counts for each split:

# %%
def label_table(path):
    targets = CropDataset(path, size=CROP).targets()
    combos = np.bincount(targets[:, 0] * 2 + targets[:, 1], minlength=4)
    return len(targets), targets.mean(axis=0), combos


print(f"{'split':>10} {'crops':>6} {'rings':>6} {'fibers':>7}   neither / fibers only / rings only / both")
balance = {}
for split, path in files.items():
    if path is None:
        continue
    count, positive, combos = label_table(path)
    balance[split] = positive
    print(f"{split:>10} {count:>6} {positive[0]:>6.2f} {positive[1]:>7.2f}   {' / '.join(map(str, combos))}")
    assert count > 0 and ((0 < positive) & (positive < 1)).all()   # both labels present and absent
if DATASET == "demo":
    assert all(((0.2 < p) & (p < 0.6)).all() for p in balance.values()), balance

# %% [markdown]
# The `rings` and `fibers` columns are the fraction of crops labelled "yes"; the last columns
# count the four combinations. Crops with both are rarer than images with both: within an
# image, ring and fiber patches sit on different stretches of dendrite.
#
# ## 6. Reading crops for training: lazily, with augmentations
#
# The original loader reads the whole training file into memory before the first crop
# (16 GB and more for the published data). `CropDataset` reads one crop per item and opens the
# file separately in each `DataLoader` worker, so a 4 GB file is iterated in about 0.5 GB of
# memory (`benchmarks/data_memory.py` measures it). With `augment=0.5` each crop is flipped
# left-right, flipped up-down, darkened and brightened (gamma), each with probability 0.5, with
# the original's formulas. Labels do not change: they are flip-invariant.

# %%
train = CropDataset(files["training"], size=CROP, augment=0.5, seed=0)
loader = DataLoader(train, batch_size=16, shuffle=True, num_workers=0 if FAST else 2)
start = time.perf_counter()
images, labels = next(iter(loader))
print(f"one batch: images {tuple(images.shape)} {images.dtype}, labels {tuple(labels.shape)} "
      f"in {time.perf_counter() - start:.2f} s")
assert images.shape == (16, 1, CROP, CROP) and labels.shape == (16, 2)
assert 0 <= images.min() and images.max() <= 1

plain = CropDataset(files["training"], size=CROP)
original = plain[0][0][0]
draws = [train[0][0][0] for _ in range(4)]            # the same crop, drawn four times
fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
vmax = float(np.percentile(original, 99.5))
for ax, (title, picture) in zip(axes, [("crop 0, as stored", original)] +
                                [(f"augmented draw {d + 1}", draw) for d, draw in enumerate(draws)]):
    ax.imshow(picture, cmap="hot", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Each draw may flip the crop either way, scale its intensities by a factor just below 1
# (darker) and raise them to a power just below 1 (brighter): small changes that teach the
# network that orientation and exact brightness do not define a structure.
#
# ## 7. Why pixel truth matters: the numbers to beat
#
# MICRA-Net is trained on yes/no labels, yet later lessons ask it to draw masks. Without pixel
# truth there is no honest way to say how good those masks are: a picture can look convincing
# and be wrong. With it, every method gets a number, including trivial ones that any real
# method must beat. Two such baselines on the testing split:
#
# * **the whole dendrite**: call every dendrite pixel "rings" (and "fibers");
# * **a global Otsu threshold on intensity**: call every bright pixel "rings" (and "fibers").
#
# Neither can tell rings from fibers, since both are bright lines on the dendrite.

# %%
from skimage.filters import threshold_otsu

from micranet_utils.analysis.metrics import dice

test_images = first_images(files["testing"] or files["validation"], 4 if FAST else 12)
stack = np.stack([example[2] for example in test_images])
truth = np.stack([example[3] for example in test_images]) > 0
bright = stack > threshold_otsu(stack)
scores = {}
print(f"{'class':>8} {'whole dendrite':>15} {'Otsu':>6}")
for c, name in enumerate(crops.class_names):
    scores[name] = (dice(truth[:, 2], truth[:, c]), dice(bright, truth[:, c]))
    print(f"{name:>8} {scores[name][0]:>15.2f} {scores[name][1]:>6.2f}")
if DATASET == "demo":
    assert all(max(pair) < 0.6 for pair in scores.values()), scores   # below the goal of later lessons

# %% [markdown]
# The Dice coefficient (2|A∩B| / (|A|+|B|), 1 is perfect) of both baselines stays well below
# 0.6, the goal lesson 06 sets for MICRA-Net's segmentation: to pass, a method has to find
# *which* structure is where, not just where the actin is.
#
# ## What you learned
# - A MICRA-Net training file is HDF5: groups of `data` (N, H, W) and `label` (N, 3, H, W)
#   with the true image sizes in `label.attrs["shapes"]`; `check_training_file` checks one.
# - Images are cut into crops (25 % overlap) kept when at least 10 % is dendrite; a class is
#   "present" in a crop when it covers more than 5 % of it. These yes/no labels are all the
#   network is trained on.
# - `CropDataset` reads crops lazily (any file size), with the original augmentations.
# - The demo set has exact pixel truth, so every later result is a measured number, compared
#   with trivial baselines that must be beaten.
#
# ## Try this on your data
# - Put your images in the published layout (lesson 07 and `micranet make-dataset` do it from a
#   folder of TIFFs and masks), then run `check_training_file` on the result.
# - Choose the crop size so that a crop holds a few structures: 256 px at 20 nm (5 µm) for
#   actin; scale it with your pixel size.
# - Print the label table above for your file: if a class is present in less than about 10 %
#   of the crops, collect more examples or weight it in the loss (lesson 03).
