# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/07_inhouse_data.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F07_inhouse_data.ipynb)
#
# # 07 · Your own data: from a folder of images to a trained MICRA-Net and its masks
#
# **Goal.** Turn a folder of your microscope images and a spreadsheet of image-level labels
# into MICRA-Net training files, fine-tune a trained model on them, and get masks for new
# images; and know what to check when you do it with your own data.
#
# **Steps.**
# 1. Make a "lab folder" like the one you would bring: TIFFs from three acquisition set-ups
#    (8-bit, 12-bit in 16-bit files, 32-bit float) and a `labels.csv`. One file is broken.
# 2. Check the folder: the report names the broken file, and nothing is written.
# 3. Fix it, and write the training, validation and testing files (`make-dataset`).
# 4. Look at what was written: normalised intensities, foreground, crops and their labels.
# 5. Fine-tune a trained MICRA-Net on these files: adapt its normalisation statistics to
#    your images, then train its last layer (convolutions frozen).
# 6. Predict on new images with the Actin recipe, and compare with the truth.
# 7. A checklist for adapting all this to your data.

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

DATASET = "demo"  # start model: "demo" (trained offline in lesson 03) or "actin" (the published Actin zoo)
FAST = is_fast()  # MICRANET_FAST=1 (CI): less work, same assertions
DEVICE = "auto"  # "auto", "cpu" or "cuda"

# %%
import hashlib
import shutil

import h5py
import matplotlib.pyplot as plt
import numpy as np
import tifffile
import torch

from micranet_utils.io.zoo import load_zoo, save_zoo
from micranet_utils.model import gradcam
from micranet_utils.apps.export_bioimageio import preprocess
from micranet_utils.apps.folder_check import validate_folder
from micranet_utils.analysis import metrics, recipes
from micranet_utils.cli import main as micranet
from micranet_utils.io.training_files import CropDataset
from micranet_utils.tutorial.demo_drawing import synth_actin_image
from micranet_utils.io.images import normalize_intensity, read_image
from micranet_utils.tutorial.demo_models import ensure_demo_model
from micranet_utils.tutorial.lessons import setup
from micranet_utils.train.runs import train

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE)
HERE = WORK / "lesson07"                      # everything this lesson writes
N_IMAGES = 12 if FAST else 24                 # images in the lab folder
SIZE = 384 if FAST else 512                   # their side, in pixels (20 nm each)
CROP = 256 if DATASET == "actin" else 128     # crop side for the lab data set (any size works, see below)
EPOCHS = 2 if FAST else 8
print(f"{N_IMAGES} images of {SIZE}x{SIZE}; crops of {CROP}")

# %% [markdown]
# ## 1. A lab folder
#
# Your data usually arrive as a folder of TIFFs and a spreadsheet saying, for each image,
# which structures it shows. We make such a folder from the synthetic STED images of
# lesson 01 (F-actin **rings** and **fibers** in dendrites, 20 nm pixels), exported the way
# three different set-ups would: an 8-bit export, a 12-bit camera with a dark offset stored
# in 16-bit files, and photon counts as 32-bit floats. The same structure therefore has very
# different numbers in different files, which is the first thing a real folder throws at you.
#
# The labels are **image-level**: a 1 in the `rings` column says "this image has rings
# somewhere", nothing about where. That is all MICRA-Net needs. The pixel truth is kept
# aside, outside the folder, only to measure the masks at the end.

# %%
EXPORTS = {  # how each "set-up" writes intensities in [0, 1]
    "8-bit": lambda x: (x * 255).round().astype(np.uint8),
    "12-bit camera": lambda x: (100 + x * 3995).round().astype(np.uint16),
    "float photons": lambda x: (x * 100).astype(np.float32),
}
COMBINATIONS = [(1, 0), (0, 1), (1, 1), (0, 0)]  # (rings, fibers), in equal numbers


def make_lab_folder(folder, n_images, seed):
    """Write n_images TIFFs and labels.csv into folder; return the pixel truth by file name."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows, truth = ["filename,rings,fibers"], {}
    for i in range(n_images):
        rings, fibers = COMBINATIONS[i % 4]
        image, label = synth_actin_image(rng, SIZE, rings=bool(rings), fibers=bool(fibers))
        export = list(EXPORTS)[i % 3]
        name = f"neuron_{i:02d}.tif"
        tifffile.imwrite(folder / name, EXPORTS[export](image))
        rows.append(f"{name},{rings},{fibers}")
        truth[name] = label
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return truth


LAB = HERE / "lab_folder"
truth = make_lab_folder(LAB, N_IMAGES, seed=7)
print((LAB / "labels.csv").read_text()[:120] + "...")
for name in sorted(truth)[:3]:
    pixels = tifffile.imread(LAB / name)
    print(f"{name}: {pixels.dtype}, values {pixels.min()} .. {pixels.max()}")

# %% [markdown]
# The three files above hold the same kind of picture, but their values span 0-255,
# 100-4095 and 0-100. Now the accident: a copy from the microscope PC was interrupted and
# `neuron_05.tif` holds only its first 2 kB.

# %%
BROKEN = "neuron_05.tif"
good_bytes = (LAB / BROKEN).read_bytes()
(LAB / BROKEN).write_bytes(good_bytes[:2048])


def folder_fingerprint(folder):
    """SHA-256 over every file's name, size, modification time and content."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)} {stat.st_size} {stat.st_mtime_ns}".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


before = folder_fingerprint(LAB)

# %% [markdown]
# ## 2. Check the folder first
#
# `validate_folder` reads **every** image and the CSV, and lists every problem per file
# before anything is written: unreadable, empty, NaN pixels, wrong number of channels,
# smaller than a crop, an image missing from the CSV, a CSV row without a file, duplicates,
# a label that is not 0/1, a class that is never positive or never negative. Errors stop;
# warnings (for example an image with too little foreground to give a single crop) do not.

# %%
report = validate_folder(LAB, LAB / "labels.csv", crop_size=CROP, progress=False)
print(report)
assert not report.ok and [p.file for p in report.errors] == [BROKEN], report

# %% [markdown]
# The same check runs on the command line. `micranet make-dataset` prints the report,
# names the files with errors, exits with status 2 (what scripts and schedulers test), and
# writes nothing. Your folder is only ever read: its fingerprint is unchanged.

# %%
OUT = HERE / "dataset"
shutil.rmtree(OUT, ignore_errors=True)
command = ["make-dataset", "--images", os.path.relpath(LAB), "--labels", os.path.relpath(LAB / "labels.csv"),
           "--output", os.path.relpath(OUT), "--crop-size", str(CROP), "--seed", "0"]
status = micranet(command)
print("exit status:", status)
assert status == 2 and not OUT.exists()
assert folder_fingerprint(LAB) == before

# %%
# NBVAL_CHECK_OUTPUT
print("files with errors:", sorted({p.file for p in report.errors}), "| exit status:", status,
      "| output written:", OUT.exists(), "| lab folder unchanged:", folder_fingerprint(LAB) == before)

# %% [markdown]
# ## 3. Fix, then write the data set
#
# We copy the file again (here: write its intact bytes back) and run the same command.

# %%
(LAB / BROKEN).write_bytes(good_bytes)
status = micranet(command)
assert status == 0, status
print(sorted(p.name for p in OUT.iterdir()))

# %% [markdown]
# Four files were written, all at once at the very end (a crash half-way leaves none):
#
# * `training_inhouse.hdf5`, `validation_inhouse.hdf5`, `testing_inhouse.hdf5`: the
#   published layout, so that our training engine and the original MICRA-Net reader both
#   read them. Images are split **whole** (never crops of one image in two splits, which
#   would leak test images into training), seeded, and stratified so that every split has positives and negatives of each class.
# * `split_inhouse.csv`: which image went where, and how many crops it gives.

# %%
print((OUT / "split_inhouse.csv").read_text())

# %% [markdown]
# ## 4. What is in the files
#
# Each image is one HDF5 group with `data` (1, H, W) and `label` (1, 3, H, W):
#
# * `data` is the image rescaled **per image** so that its 1st percentile becomes 0 and its
#   99.8th percentile 1 (`normalize_intensity`). The published Actin data are in [0, 1], and
#   the augmentations assume it; per-image percentiles also make the 8-bit, 12-bit and float
#   exports comparable, and ignore a few hot pixels.
# * `label[-1]` is the **foreground**: here found by Otsu's threshold on the smoothed image
#   (give `--masks DIR` if you have drawn masks, or `--foreground all`). Training only uses
#   crops with at least 10 % foreground, so crops of empty background are skipped.
# * `label[c]` is that foreground where the image is labelled positive for class `c`, and
#   empty otherwise. The published files hold true pixel masks here, and a crop is positive
#   when more than 5 % of it is labelled; with our encoding every kept crop (≥ 10 %
#   foreground) therefore inherits its image's labels.

# %%
with h5py.File(OUT / "training_inhouse.hdf5", "r") as file:
    print("class names:", list(file.attrs["class_names"]))
    key = next(k for k in file if file[k].attrs["labels"].tolist() == [1, 0])
    group = file[key]
    data, label = group["data"][0], group["label"][0]
    source = group.attrs["source"]
    print(f"{key}: from {source}, data {data.shape} {data.dtype} in [{data.min():.2f}, {data.max():.2f}],",
          f"label {label.shape} {label.dtype}, image labels {group.attrs['labels'].tolist()}")
raw = read_image(LAB / source)[0]
positions = CropDataset(OUT / "training_inhouse.hdf5", size=CROP).positions
kept = [(row, col) for name, _, row, col in positions if name == key]

fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
axes[0].imshow(raw, cmap="magma")
axes[0].set_title(f"as read ({tifffile.imread(LAB / source).dtype})")
axes[1].imshow(data, cmap="magma", vmin=0, vmax=1)
axes[1].set_title("data: normalised to [0, 1]")
axes[2].imshow(label[-1], cmap="gray")
axes[2].set_title(f"foreground (Otsu); {len(kept)} crops kept")
for row, col in kept:
    axes[2].add_patch(plt.Rectangle((col, row), CROP, CROP, fill=False, color="tab:orange", lw=1.5))
axes[3].imshow(label[0], cmap="gray")
axes[3].set_title("label 'rings' = foreground (image is positive)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()
assert data.min() >= 0 and data.max() <= 1 and len(kept) > 0
np.testing.assert_array_equal(label[0], label[-1])      # positive for rings: the foreground
assert not label[1].any()                               # negative for fibers: empty

# %% [markdown]
# Notice how the Otsu foreground follows the bright parts of the dendrites, and that the
# orange crops (which overlap by 25 %) cover them while skipping the empty background. The
# crops are read back by the training engine with their image-level labels:

# %%
for split in ("training", "validation", "testing"):
    crops = CropDataset(OUT / f"{split}_inhouse.hdf5", size=CROP)
    fraction = crops.targets().mean(axis=0)
    print(f"{split:>10}: {len(crops):3d} crops; positive fraction rings {fraction[0]:.2f}, fibers {fraction[1]:.2f}")

# %% [markdown]
# ## 5. Fine-tune a trained model
#
# Training from scratch needs many images and hours. When your structures resemble those
# a model already knows, start from it. Here the start model is the demo model of lesson 03
# (`DATASET = "actin"`: the published Actin model, after `micranet download models`).

# %%
if DATASET == "actin":
    from micranet_utils.io.download import published_path

    START = published_path("models", "ActinModelZoo.hdf5")
else:
    START = ensure_demo_model()
start_model, start_params = load_zoo(START)
print(f"start model: {START.name}, trained on crops of {start_params['size']}")

# %% [markdown]
# ### 5a. Adapt the normalisation statistics to your images
#
# Each convolution of MICRA-Net is followed by *batch normalisation*, which subtracts a
# mean and divides by a standard deviation per feature channel. During training these come
# from each batch; for prediction the layer uses running averages stored in the model,
# measured on the images it was trained on. Your images have other statistics (here: the
# per-image percentile normalisation stretches them more than the demo images were), so
# the stored averages no longer fit. Re-measuring them on your training crops, with no
# weight changed, is a cheap first adaptation (known as *AdaBN*).
#
# `recalibrate_batchnorm` (the same step lesson 06 applies to its three networks) runs the
# training crops through the network and replaces each stored mean and variance by the
# average of what the layer measures on them. The crop size does not need to be the one the
# start model saw (64 px for the demo model): MICRA-Net takes any size, and 128-px crops keep
# more context of these larger images.

# %%
from micranet_utils.model.batchnorm import recalibrate_batchnorm

crops = CropDataset(OUT / "training_inhouse.hdf5", size=CROP)
lab_crops = np.stack([crops[i][0].numpy() for i in range(len(crops))])     # (N, 1, CROP, CROP)
adapted_model, _ = load_zoo(START)
recalibrate_batchnorm(adapted_model, lab_crops)
ADAPTED = HERE / "adapted.hdf5"
save_zoo(ADAPTED, adapted_model, start_params)
print(f"BatchNorm statistics re-measured on {len(lab_crops)} training crops of {CROP} px")

# the first layer's stored variance now matches what it really sees on the lab crops
sample = torch.stack([crops[i][0] for i in range(min(len(crops), 64))])
with torch.no_grad():
    seen = adapted_model.conv1a(sample).var(dim=(0, 2, 3))
for title, zoo_model in (("start model", start_model), ("adapted", adapted_model)):
    ratio = (zoo_model.bnorm1a.running_var / seen).median().item()
    print(f"{title:>12}: stored / measured variance of layer 1a = {ratio:.2f}")
np.testing.assert_allclose(adapted_model.bnorm1a.running_var, seen, rtol=0.25)

# %% [markdown]
# A ratio of 1 means the stored statistics fit the images. A ratio far from 1 means every
# layer's output is scaled wrongly at prediction time, and the classifier's decisions are
# shifted accordingly (compare the image-level calls in section 6).
#
# ### 5b. Fine-tune the last layer
#
# Now **restore** the adapted weights and **freeze** the convolutions, so that only the
# last linear layer (514 numbers for two classes) learns from your image-level labels. With
# classes that differ from the start model's, the same call works: every layer but `linear1`
# is restored. Unfreeze more (`freeze=["3a", "3b"]`, or nothing) when your images differ
# more, and give it more images and epochs.

# %%
RUN = HERE / "finetune"
shutil.rmtree(RUN, ignore_errors=True)
result = train(OUT, RUN, restore_from=ADAPTED, freeze="all-conv", size=CROP, batch_size=16,
               epochs=EPOCHS, lr=1e-3, lr_patience=2, pos_weight="balanced", seed=0,
               device=device, progress=False)
for row in result.history:
    print(f"epoch {row['epoch']}: training loss {row['train_loss']:.3f}, validation loss {row['valid_loss']:.3f}")
model, params = load_zoo(result.best)

# %% [markdown]
# The losses are the class-weighted binary cross-entropy of the crops
# (`pos_weight="balanced"` weighs each class by its negatives / positives in the training
# crops). Freezing really kept the convolutions: their weights are those of the start
# model, bit for bit, while the last layer moved.

# %%
start_weights, tuned_weights = start_model.state_dict(), model.state_dict()
conv_names = [name for name in tuned_weights if name.startswith("conv")]
assert all(torch.equal(start_weights[name], tuned_weights[name]) for name in conv_names)
assert not torch.equal(start_weights["linear1.weight"], tuned_weights["linear1.weight"])
assert all(np.isfinite(row["valid_loss"]) for row in result.history)
print(f"{len(conv_names)} convolution tensors unchanged; best epoch {result.best_epoch}")

# %% [markdown]
# ## 6. Predict on new images
#
# New images from the same lab are normalised with the *same* rule as the training files.
# First the image-level calls of the three models (start, adapted, fine-tuned); then masks
# exactly as for the published Actin model: the Grad-CAM maps of the eight layers
# (`gradcam.local_maps`), the classes called present (`gradcam.predicted`), and the
# **Actin recipe** (`recipes.segment`: first principal component of the maps, smoothed,
# top 20 % of the image).

# %%
new_truth = make_lab_folder(HERE / "new_images", 8 if FAST else 16, seed=99)
names = sorted(new_truth)
images = np.stack([normalize_intensity(read_image(HERE / "new_images" / n)) for n in names])
true_calls = np.array([[new_truth[n][c].any() for c in range(2)] for n in names])


def calls_of(zoo_model):
    """The model's yes/no calls on the new images, one whole image at a time."""
    device = next(zoo_model.parameters()).device
    with torch.no_grad():
        logits = torch.cat([zoo_model.eval()(image[None].to(device)).cpu() for image in torch.from_numpy(images)])
    return gradcam.predicted(logits.numpy())


print(f"{len(names)} new images x 2 classes = {true_calls.size} yes/no decisions; "
      f"one decision moves the accuracy by {1 / true_calls.size:.2f}")
for title, zoo_model in (("start model", start_model), ("adapted", adapted_model), ("fine-tuned", model)):
    model_calls = calls_of(zoo_model)
    accuracy = float((model_calls == true_calls).mean())
    print(f"{title:>12}: image-level accuracy {accuracy:.2f} "
          f"({np.sum(model_calls & ~true_calls)} false alarms, {np.sum(~model_calls & true_calls)} misses)")

maps, logits = gradcam.local_maps(model, images)
calls = gradcam.predicted(logits)
masks = recipes.segment(maps, calls, images, recipe="actin")
for c, name in enumerate(("rings", "fibers")):
    scores = [metrics.dice(masks[b, c], new_truth[n][c] > 0) for b, n in enumerate(names) if new_truth[n][c].any()]
    print(f"fine-tuned, {name}: mean Dice {np.mean(scores):.2f} over the {len(scores)} images that contain {name}")

# %% [markdown]
# *Image-level accuracy* is the fraction of (image, class) decisions that match the truth
# (0.5 is what always saying "absent" scores here). *Dice* compares a class's mask with its
# true pixels, on the images that contain the class; an image the classifier calls negative
# gets an empty mask and Dice 0. In fast mode the start model was itself trained for a few
# minutes only and fine-tuned for two epochs, so expect modest numbers; the full lesson
# (`FAST = False`) trains both for longer.
#
# How to read the three rows:
#
# * With a handful of new images, a difference of one or two decisions between two models is
#   noise (the first line says what one decision is worth). Judge a model on as many
#   held-out images as you can label, and on its validation F1 during training.
# * BatchNorm adaptation changes no weight: where it changes the calls, the stored statistics
#   did not fit your images (section 5a measured by how much).
# * Fine-tuning learns the last layer on *crops* (128 px here), and these images are 3 to 4
#   times wider. The global max pool of a larger image takes the maximum over more positions
#   and reaches higher values, so watch the false alarms on whole images; if they rise after
#   fine-tuning, fine-tune on larger crops, or call an image positive when one of its crops is.
#
# Whatever the model, the recipe's rules hold: a class called absent has an empty mask, and
# a class called present is marked on at most the top 20 % of its smoothed map.

# %%
assert masks.shape == (len(names), 2, SIZE, SIZE)
assert not masks[~calls].any()
assert all(masks[b, c].mean() <= 0.25 for b, c in np.argwhere(calls))

fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
both = [b for b, n in enumerate(names) if new_truth[n][0].any() and new_truth[n][1].any()]
for row, b in enumerate([both[0], 3]):
    axes[row, 0].imshow(images[b, 0], cmap="magma")
    axes[row, 0].set_title(f"{names[b]}: calls rings={calls[b, 0]}, fibers={calls[b, 1]}", fontsize=9)
    for c, colour in ((0, "Greens"), (1, "Blues")):
        axes[row, c + 1].imshow(images[b, 0], cmap="gray")
        axes[row, c + 1].imshow(np.ma.masked_where(~masks[b, c], masks[b, c]), cmap=colour, alpha=0.6,
                                vmin=0, vmax=1)
        if new_truth[names[b]][c].any():
            axes[row, c + 1].contour(new_truth[names[b]][c] > 0, levels=[0.5], colors="red", linewidths=0.6)
        axes[row, c + 1].set_title(f"{('rings', 'fibers')[c]}: mask (colour), truth (red)", fontsize=9)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# Top: an image with both structures; bottom: one with neither (its truth has no red
# outline). The masks (colour) should lie on the red outlines where the classifier calls
# the class present, and be absent where it calls it absent. They are coarse, because the
# network never saw a pixel label: they mark where its evidence for each class lies.

# %% [markdown]
# ### 6b. Share the model: a bioimage.io package
#
# Your colleagues may not use Python. The BioImage Model Zoo format is read by
# **deepImageJ** (Fiji), **ilastik**, **napari** (its bioimage.io plug-ins) and QuPath.
# `micranet export-bioimageio` writes the fine-tuned model as such a package:
# `rdf.yaml` (the description), the weights twice (PyTorch state dict with its
# architecture file, and TorchScript, which deepImageJ and QuPath run), a test image with
# the outputs it must give, a cover image, and a `README.md` with the method, a model card
# (training data, pixel size, classes, thresholds, scores, limits), the licence and the
# citation.
#
# Those programs only call the network's `forward`, often with gradients switched off,
# while Grad-CAM needs gradients. So the exported network back-propagates them itself,
# inside `forward`, and returns what you computed above with `local_maps` and the recipe:
# the Actin recipe's **combined map** of each class (steps 1-3: before the top-20 %
# threshold) and the class **probabilities**. The thresholds and the recipe's constants are
# in `rdf.yaml` (`config.micranet`), so that the masks can be made the same way there.
#
# The exporter refuses a model whose classes have no names, or that does not record its
# training crop size or pixel size: the lab images here are 20 nm per pixel, and the
# training files do not say so, hence `--pixel-size 20`.

# %%
PACKAGE = HERE / "demo.bioimageio"
cover_image = HERE / "cover_image.npy"            # a 192 px crop of a new image with both structures
np.save(cover_image, tifffile.imread(HERE / "new_images" / names[both[0]])[:192, :192])
status = micranet(["export-bioimageio", "--model", str(result.best), "--output", str(PACKAGE),
                   "--pixel-size", "20", "--test-image", str(cover_image), "--overwrite"])
assert status == 0
print(sorted(p.name for p in PACKAGE.iterdir()))
print((PACKAGE / "README.md").read_text().split("**Thresholds:**")[0].split("## Model card")[1])

# %% [markdown]
# The package's network must give the maps this lesson computes with `local_maps` and
# `recipes.score_maps`. Run its TorchScript weights as Fiji would, on the package's test
# image after the preprocessing `rdf.yaml` declares (each image's 1st and 99.8th
# percentiles to 0 and 1), and compare:

# %%
exported = torch.jit.load(str(PACKAGE / "weights_torchscript.pt"))
x = preprocess(np.load(PACKAGE / "test_input.npy"))          # (1, 1, 192, 192), as the rdf preprocesses it
with torch.no_grad():
    package_maps, package_probabilities = exported(torch.from_numpy(x))
layer_maps, logits = gradcam.local_maps(model, x)
ours = recipes.score_maps(layer_maps, np.ones(logits.shape, bool), x, "actin")
difference = float(np.abs(package_maps.numpy() - ours).max())
print(f"probabilities {np.round(package_probabilities.numpy()[0].astype(float), 3).tolist()}; largest difference between "
      f"the package's maps and micranet_utils: {difference:.1e}")
assert difference <= 1e-5

# %% [markdown]
# To check a package as the Model Zoo does, run `bioimageio test demo.bioimageio/rdf.yaml`
# in a terminal (it reruns the test image with both weight formats). Then open it: in Fiji,
# *Plugins > DeepImageJ > DeepImageJ Install Model* (choose the folder or its zip);
# in ilastik, the *Neural Network Classification* workflow; in napari, a bioimage.io
# plug-in. They show the two outputs: `maps` (one channel per class) and `probabilities`.
# The mask is one step away: keep the pixels above the 0.8 quantile of a class's map when
# its probability is above its threshold. Predict on whole images, never in tiles: each map
# is normalised over the image it was computed on.

# %% [markdown]
# ## 7. Checklist: adapting this to your data
#
# **Pixel size and rescaling.** A CNN learns structures in *pixels*. The published Actin
# model saw STED images with about 20 nm pixels (a 190 nm ring period is 9-10 px). If your
# pixels are 40 nm, rescale your images by 2 (`skimage.transform.rescale(image, 2)`) before
# `make-dataset`, or train from scratch; likewise for prediction. Compare the size of one
# structure, in pixels, with the same structure in the model's training images.
#
# **Channels.** The Actin model takes one channel. `--channel K` picks one channel of a
# multi-channel file; `--plane K` or `--projection max` handles z-stacks and time series
# (the reader refuses to guess). A 3-channel RGB export of a grey image is an error: export
# the raw data instead. A model for several channels needs `--channels N` and training from
# scratch.
#
# **Intensities.** Each image is rescaled by its own 1st and 99.8th percentiles. That is
# right when every image has some background and some signal; for images that are almost
# empty, draw foreground masks (`--masks`), and check the normalised images in the viewer.
#
# **Labelling.** One row per image, one 0/1 column per class, and *negatives*: images
# without the class teach the network what it is not (the check refuses a class that is
# never negative). The label of an image is given to each of its crops that has enough
# foreground, so a class that fills a small corner of a large image gives false positive
# crops: crop your images closer to the structure, or draw masks.
#
# **How many images.** For fine-tuning only the last layer, a few dozen images per class
# can be enough; unfreezing convolutions or training from scratch needs hundreds to
# thousands of crops per class (the published Actin set had thousands). Watch the
# validation loss in `history.csv`: when it rises while the training loss falls, you are
# memorising your images.
#
# **When the maps look wrong.** (1) Check the image-level calls first: a map is only
# meaningful for a class the classifier calls present. (2) Look at the eight maps layer by
# layer (lesson 04): if even 4b points at the background, the classifier learned a
# shortcut (brightness, a border, a label written on the image). (3) Compare pixel sizes
# and normalisation with the training data. (4) Try the recipe's settings (`quantile`,
# `sigma`, lesson 05) before retraining.
#
# ## What you learned
# - `micranet make-dataset` (and `micranet_utils.apps.make_dataset.make_dataset`) checks a whole folder first and
#   reports every problem per file; errors stop with status 2 and nothing written.
# - Image-level labels become training files in the published layout: per-image
#   normalisation to [0, 1], a foreground, and class channels from the image labels.
# - Images, not crops, are split into training, validation and testing.
# - Fine-tuning re-measures a trained model's batch-norm statistics on your images, restores
#   it and trains its last layer; the Actin recipe turns its Grad-CAM maps into masks.
#
# ## Try this on your data
# 1. Put your TIFFs in one folder and write `labels.csv` (`filename,class1,class2,...`).
# 2. `micranet make-dataset --images DIR --labels DIR/labels.csv --output DATA --check-only`,
#    and fix what the report lists.
# 3. Run it again without `--check-only`, then
#    `micranet train --data DATA --output runs/mine --restore-from MODEL.hdf5 --freeze all-conv`.
# 4. `micranet predict` on new images with the recipe of your model, and look at the maps.
