# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/02_architecture.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F02_architecture.ipynb)
#
# # 02 · The MICRA-Net architecture
#
# **Goal.** Know MICRA-Net layer by layer: what each of its eight convolutions sees, how
# many numbers it learns, which layers Grad-CAM will read in lesson 04, and how a trained
# model is stored in and loaded from a *model-zoo* file.
#
# **Steps.**
# 1. Build the network and print a table of shapes from a real forward pass.
# 2. Compute the receptive field of every layer, in pixels and in nanometres.
# 3. Count the parameters, layer by layer.
# 4. Look at what the eight layers compute on a demo image.
# 5. See why image-level labels need one sigmoid per class.
# 6. Save a model in the published ModelZoo layout, inspect it with h5py, and load it back.

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

DATASET = "demo"  # "demo": offline synthetic data; "actin": also load the published Actin model zoo
FAST = is_fast()  # MICRANET_FAST=1 (CI): less work, same assertions
DEVICE = "auto"  # "auto", "cpu" or "cuda"

# %%
import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch

from micranet_utils.base.datasets import DATASETS
from micranet_utils.base.errors import ZooError
from micranet_utils.io.zoo import load_zoo, save_zoo
from micranet_utils.model.network import count_parameters, LAYERS, MICRANet
from micranet_utils.tutorial.lessons import setup

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE)

# %% [markdown]
# ## 1. Eight convolutions, three poolings, one linear layer
#
# MICRA-Net is a plain, VGG-like classifier. Four *blocks* of two 3×3 convolutions
# (each followed by batch normalisation and a ReLU) are separated by 2×2 max-pooling, which
# halves the image three times. A *global* max pool then keeps, for each of the 256 feature
# channels, its strongest response anywhere in the image, and one linear layer turns these
# 256 numbers into one score (a *logit*) per class.
#
# The Actin model has two classes: **rings** (the periodic F-actin lattice across dendrites)
# and **fibers** (longitudinal F-actin bundles). We build it and follow one 256×256 crop
# through it, printing the shape of every intermediate result.

# %%
info = DATASETS["actin"]
model = MICRANet(num_classes=info.num_classes, in_channels=info.in_channels).eval()

rows = []


def record(name):
    def hook(module, inputs, output):
        params = sum(p.numel() for p in module.parameters())
        rows.append((name, type(module).__name__, tuple(inputs[0].shape), tuple(output.shape), params))
    return hook


handles = [module.register_forward_hook(record(name))
           for name, module in model.named_children() if name != "maxpool"]
with torch.no_grad():
    logits = model(torch.zeros(1, 1, 256, 256))
for handle in handles:
    handle.remove()

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'module':<12}{'type':<18}{'input':<22}{'output':<22}{'parameters':>11}")
for name, kind, shape_in, shape_out, params in rows:
    print(f"{name:<12}{kind:<18}{str(shape_in):<22}{str(shape_out):<22}{params:>11,}")
print(f"logits: {tuple(logits.shape)}  (batch, classes)")

# %% [markdown]
# Read the table from top to bottom: `conv1a` turns the 1-channel image into 32 feature maps
# of the same size; every `bnorm` keeps the shape; the pooling between blocks is not listed
# (it has no parameters) but you see its effect: 256 → 128 → 64 → 32 pixels. The deepest
# maps (`conv4b`) are 32×32 with 256 channels; `global_pool` reduces each channel to one number;
# `linear1` maps the 256 numbers to 2 logits. Note that the batch axis (the leading 1) is kept:
# the original implementation dropped it for a single image.
#
# The network accepts any image size, not only the 256×256 crops it was trained on: the
# global pool adapts to whatever size reaches it. This matters when you apply a model to
# your own images.

# %%
# NBVAL_CHECK_OUTPUT
for shape in [(1, 1, 256, 256), (1, 1, 250, 333), (4, 1, 128, 128)]:
    with torch.no_grad():
        out = model(torch.rand(*shape))
    print(f"input {shape} -> logits {tuple(out.shape)}")
    assert out.shape == (shape[0], info.num_classes)

# %% [markdown]
# ## 2. How far does each layer see? The receptive field
#
# A pixel of a layer's output depends on a square window of the input: its *receptive
# field*. Each 3×3 convolution widens it by 2 steps of the current grid, and each pooling
# doubles the grid step. Here we compute it exactly, then check it empirically: we perturb
# one input pixel and see which output pixels of each layer change.

# %%
def receptive_fields():
    size, step, fields = 1, 1, {}
    for name in LAYERS:
        size += 2 * step                 # a 3x3 convolution
        fields[name] = (size, step)
        if name in ("1b", "2b", "3b"):   # then a 2x2 max-pool
            size += step
            step *= 2
    return fields


fields = receptive_fields()
PIXEL_NM = 20  # published Actin STED images: about 20 nm per pixel

# %%
# Empirical check: which output pixels react to one input pixel? Their span, mapped back
# through the grid step, must fit in the computed receptive field.
x = torch.zeros(1, 1, 256, 256)
x_poked = x.clone()
x_poked[0, 0, 128, 128] = 1.0
with torch.no_grad():
    _, acts = model.forward_with_activations(x)
    _, acts_poked = model.forward_with_activations(x_poked)
for name, a, b in zip(LAYERS, acts, acts_poked):
    changed = (a - b).abs().sum(dim=1)[0] > 0
    rows_changed = torch.nonzero(changed.any(dim=1)).flatten()
    span_in_input = (rows_changed.max() - rows_changed.min() + 1).item() * fields[name][1]
    assert span_in_input <= fields[name][0] + fields[name][1], (name, span_in_input)

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'layer':<7}{'grid step (px)':>15}{'receptive field (px)':>22}{'(nm at 20 nm/px)':>18}")
for name, (size, step) in fields.items():
    print(f"{name:<7}{step:>15}{size:>22}{size * PIXEL_NM:>18,}")

# %% [markdown]
# Layer 1a sees 3×3 pixels (60 nm): enough for an edge, not for a pattern. Actin rings repeat
# every ~190 nm (about 10 pixels), so from layer 2a on (10 px, 200 nm) a unit can see one
# period, from 2b on (14 px) more than one, and the deepest layer 4b sees 68 px (1.4 µm): a stretch of dendrite with several
# rings or a long fiber. That is why, in lesson 04, early Grad-CAM maps are sharp but not
# specific, and late maps are specific but coarse (their grid step is 8 pixels).

# %%
fig, ax = plt.subplots(figsize=(6, 3.2))
names = list(fields)
ax.bar(names, [fields[n][0] for n in names], color="tab:blue", label="receptive field")
ax.bar(names, [fields[n][1] for n in names], color="tab:orange", label="grid step")
ax.axhline(190 / PIXEL_NM, color="k", ls="--", lw=1)
ax.text(0, 190 / PIXEL_NM + 2, "one actin-ring period (~190 nm)", fontsize=8)
ax.set_ylabel("pixels")
ax.set_xlabel("layer")
ax.set_title("Each layer sees more of the image, on a coarser grid")
ax.legend(loc="upper left")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Where the parameters are

# %%
per_layer = {}
for name, p in model.named_parameters():
    layer = name.split(".")[0].replace("conv", "").replace("bnorm", "")
    per_layer[layer] = per_layer.get(layer, 0) + p.numel()
total = count_parameters(model)

# %%
# NBVAL_CHECK_OUTPUT
for layer, n in per_layer.items():
    print(f"{layer:<8}{n:>10,}  {100 * n / total:5.1f} %")
print(f"{'total':<8}{total:>10,}")
assert total == 1_174_114
assert len(model.state_dict()) == 58

# %% [markdown]
# About 1.17 million parameters, three quarters of them in the last block (4a, 4b), where 256 channels
# meet 256 channels. The `state_dict` holds 58 tensors: weights and biases of 8 convolutions
# and 1 linear layer, plus 5 tensors per batch-norm layer (scale, shift, running mean, running
# variance, and a counter).
#
# How does that compare with the fully supervised networks of lesson 06? We build them (random
# weights, nothing is trained) and count:

# %%
# NBVAL_CHECK_OUTPUT
from micranet_utils.tutorial.baselines import maskrcnn, unet

others = {"U-Net (original Actin configuration)": unet.UNet(**unet.ACTIN_MODEL_PARAMS),
          "Mask R-CNN, small (lesson 06)": maskrcnn.build_maskrcnn(**maskrcnn.SMALL),
          "Mask R-CNN, published (ResNet-50)": maskrcnn.build_maskrcnn(**maskrcnn.ORIGINAL)}
sizes = {name: count_parameters(network, trainable_only=False) for name, network in others.items()}
for name, n in sizes.items():
    print(f"{name:<38}{n:>12,}  {n / total:5.1f} x MICRA-Net")
assert sizes["U-Net (original Actin configuration)"] < total < sizes["Mask R-CNN, small (lesson 06)"]

# %% [markdown]
# MICRA-Net is small by today's standards, but not the smallest here: the original's U-Net
# has less than half its parameters. The Mask R-CNN that lesson 06 trains on a CPU has about
# 10 times more, and the published one (a ResNet-50 trunk) about 37 times more. Size is not
# what sets the methods apart; the kind of annotation each needs is (lesson 06).

# %% [markdown]
# ## 4. The eight layers Grad-CAM reads
#
# Lesson 04 will ask, for each of these eight layers, *which of its activations pushed the
# score of a class up*. Before any training, look at what the layers compute on a demo image:
# one channel of each of the eight post-ReLU activations (random weights here, so the
# patterns are generic filters, not yet rings or fibers).

# %%
from micranet_utils.tutorial.demo_data import ensure_demo
from micranet_utils.io.training_files import CropDataset

demo_files = ensure_demo(fast=FAST, progress=False)
crops = CropDataset(demo_files["testing"], size=256)
image, target = crops[0]
with torch.no_grad():
    _, activations = model.forward_with_activations(image[None])

fig, axes = plt.subplots(1, 9, figsize=(15, 2.2))
axes[0].imshow(image[0], cmap="magma")
axes[0].set_title("input crop", fontsize=9)
for ax, name, act in zip(axes[1:], LAYERS, activations):
    channel = act[0].flatten(1).std(dim=1).argmax()  # the most varied channel
    ax.imshow(act[0, channel], cmap="viridis")
    ax.set_title(f"{name}: {act.shape[-2]}x{act.shape[-1]}", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The input crop (left) and one activation per layer: 256×256 maps for 1a/1b, then 128, 64 and
# 32 pixels. The deeper the layer, the coarser its grid. With random weights the deep layers
# mostly react to the image border (where the zero padding starts): training, in lesson 03,
# is what makes them respond to rings and fibers. Grad-CAM maps inherit exactly these
# resolutions, and are upsampled back to the image size by repeating pixels.

# %% [markdown]
# ## 5. Image-level labels: one sigmoid per class
#
# MICRA-Net is trained on crops labelled only "contains rings: yes/no" and "contains fibers:
# yes/no". Both can be true at once, so this is *multi-label* classification: each logit goes
# through its own sigmoid to give a probability, and the loss is a binary cross-entropy per
# class (not a softmax over classes). A crop is called positive for a class when at least 5 %
# of its area is covered by that structure (the rule lesson 01 shows).
#
# An untrained network gives probabilities near 0.5 for everything: it knows nothing yet.
# Lesson 03 trains it.

# %%
with torch.no_grad():
    probabilities = torch.sigmoid(model(image[None]))[0]
for name, label, prob in zip(info.class_names, target, probabilities):
    print(f"{name:<7} true label {int(label)}   untrained probability {prob:.2f}")
assert torch.all((probabilities > 0) & (probabilities < 1))

# %% [markdown]
# ## 6. Model-zoo files: how trained models are stored
#
# The original authors publish their trained models as HDF5 *model zoos*: one group per
# architecture (`MICRANet`, `UNet`, ...), one sub-group per saved model, one dataset per
# tensor of the `state_dict`, and the training settings as JSON in the attribute
# `trainer_params`. `save_zoo` writes that exact layout (atomically: a crash never leaves a
# half-written file) and `load_zoo` reads it back with strict key and shape checks. No
# pickle is involved, so opening a zoo file cannot run code.

# %%
zoo_path = WORK / "models" / "lesson02_untrained.hdf5"
save_zoo(zoo_path, model, {"size": 256, "seed": 0, "note": "untrained, lesson 02"},
            name="lesson02_0")


def show_tree(path, max_weights=4):
    with h5py.File(path, "r") as file:
        for arch in file:
            print(f"{arch}/   attrs: {list(file[arch].attrs)}")
            for name, group in file[arch].items():
                keys = list(group)
                print(f"  {name}/   ({len(keys)} tensors)")
                for key in keys[:max_weights]:
                    print(f"    {key:<28}{str(group[key].shape):<18}{group[key].dtype}")
                print("    ...")


show_tree(zoo_path)

# %%
loaded, params = load_zoo(zoo_path)
with torch.no_grad():
    same = torch.equal(loaded(image[None]), model(image[None]))
print("trainer_params:", {k: params[k] for k in ("size", "model_params")})
print("identical logits after the round trip:", same)
assert same

# %% [markdown]
# `trainer_params` tells how to rebuild the network: the crop `size` and, under
# `model_params`, `num_classes` and `num_input_images` (the original's name for input
# channels). A file in the wrong layout gives an error that names the file and the problem,
# for example a missing tensor:

# %%
broken = WORK / "models" / "lesson02_broken.hdf5"
save_zoo(broken, model, {"size": 256}, name="broken")
with h5py.File(broken, "a") as file:
    del file["MICRANet/broken/conv2a.weight"]
try:
    load_zoo(broken)
except ZooError as err:
    message = str(err)
    print(message.replace(str(WORK), "WORK"))
assert "conv2a.weight" in message and broken.name in message and "MICRANet/broken" in message

# %% [markdown]
# ### The published Actin model
# With `DATASET = "actin"` this cell downloads the authors' model zoo (once; see lesson 01)
# and loads their trained network with the same function. Offline, it is skipped.

# %%
if DATASET == "actin":
    from micranet_utils.io.download import published_path

    actin_zoo = published_path("models", "ActinModelZoo.hdf5")
    show_tree(actin_zoo)
    published, published_params = load_zoo(actin_zoo)
    print("published model:", published.num_classes, "classes, crop size", published_params["size"])
else:
    print("DATASET is 'demo': the published model is not downloaded in this run.")

# %% [markdown]
# ## What you learned
# - MICRA-Net is a small VGG-like classifier: 8 convolutions in 4 blocks, 3 poolings, a global
#   max pool and one linear layer; about 1.17 M parameters, most of them in the last block.
# - Each layer sees a larger window (3 px for 1a, 68 px for 4b) on a coarser grid (1 to 8 px):
#   shallow layers are sharp, deep layers see whole structures.
# - The classifier is multi-label: one sigmoid per class, trained from image-level labels.
# - Trained models live in HDF5 model zoos; `save_zoo` / `load_zoo` read and write the published
#   layout without pickle, and any image size works at inference.
#
# ## Try this on your data
# - Check the pixel size of your microscope: if it is far from 20 nm, rescale your images so
#   that your structures span as many pixels as actin rings do here (about 10 px per period),
#   or the receptive fields above will not match the structures.
# - Count your channels: `MICRANet(num_classes=K, in_channels=C)` builds a network for
#   C-channel images and K labels; lesson 07 trains one on a folder of your images.
# - Open any zoo file you are given with `micranet info FILE.hdf5` before using it.
