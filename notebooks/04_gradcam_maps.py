# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/04_gradcam_maps.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F04_gradcam_maps.ipynb)
#
# # 04 · Grad-CAM maps from every layer
#
# **Goal.** Compute Grad-CAM by hand and with `local_maps`, read the eight maps MICRA-Net
# gives for each class, and *measure* how well each layer's map finds the structures that the
# network was never shown pixel by pixel.
#
# **Steps.**
# 1. Load the demo model (trained in lesson 03) and a test crop with its pixel truth.
# 2. Grad-CAM from first principles for one layer: activation, gradient, weights, weighted sum.
# 3. All eight layers for both classes, in one call.
# 4. Why early layers are sharp and late layers are semantic.
# 5. How well each layer agrees with the pixel truth: ROC AUC per layer and class.
# 6. The same map from a Grad-CAM library.
# 7. Explore: a layer / class slider.

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

DATASET = "demo"  # "demo": offline synthetic data with pixel truth (the only choice with truth here)
FAST = is_fast()  # MICRANET_FAST=1 (CI): fewer test crops, same assertions
DEVICE = "auto"  # "auto", "cpu" or "cuda"

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import rankdata

from micranet_utils.io.zoo import load_zoo
from micranet_utils.model.network import LAYERS
from micranet_utils.tutorial.comparison import load_test_crops
from micranet_utils.tutorial.demo_data import ensure_demo
from micranet_utils.model.gradcam import LAYER_STRIDES, local_maps, predicted, sequential_view
from micranet_utils.tutorial.demo_models import ensure_demo_model
from micranet_utils.tutorial.lessons import setup

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE, allowed=("demo",))

# %% [markdown]
# ## 1. A trained model and a crop with pixel truth
#
# `ensure_demo_model()` returns the model lesson 03 trained on the synthetic STED-like demo
# data (it trains it now, in a few minutes, if this lesson runs alone). The test split of the
# demo data set holds, besides the images, a pixel mask for each class: **rings** (periodic
# stripes across a dendrite) and **fibers** (lines along it). The network only ever saw
# *yes/no* labels per crop; the masks are here to grade it.

# %%
model_path = ensure_demo_model(progress=False)
model, params = load_zoo(model_path, device=device)
size = int(params["size"])
demo_files = ensure_demo(fast=FAST, progress=False)
test = load_test_crops(demo_files["testing"], size=size, max_crops=48 if FAST else 400)
class_names = tuple(test["class_names"])
test_images, test_truth = torch.as_tensor(test["images"]), test["masks"]   # (N, 1, S, S), (N, 2, S, S)
contains = test_truth.mean(axis=(-1, -2)) > 0.05     # the image-level label rule: > 5 % of the crop


both = np.flatnonzero(contains.all(axis=1))
example = int(both[0]) if len(both) else 0
image, truth = test_images[example], test_truth[example]
print(f"model: {model_path.name}, crops of {size} px, classes {class_names}")
print(f"{len(test_images)} test crops; {contains.sum(axis=0).tolist()} contain {class_names}; "
      f"crop {example} contains both")

fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
axes[0].imshow(image[0], cmap="magma")
axes[0].set_title("test crop")
for ax, name, mask in zip(axes[1:], class_names, truth):
    ax.imshow(mask, cmap="gray")
    ax.set_title(f"pixel truth: {name}")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# The crop (left) and where its rings and fibers really are (white). Keep these masks in mind:
# every map below is scored against them.

# %% [markdown]
# ## 2. Grad-CAM from first principles, for one layer
#
# Grad-CAM asks: *if this layer's activation changed, how would the score of the class
# change?* For a layer with activation $A$ (K channels of h×w pixels, after the ReLU) and the
# **logit** $y_c$ of class $c$ (the score before the sigmoid):
#
# 1. the gradient $G = \partial y_c / \partial A$, one number per channel and pixel;
# 2. one weight per channel, $\alpha_k$ = the mean of $G_k$ over the pixels: how much, on
#    average, channel $k$ pushes the class score up (positive) or down (negative);
# 3. the map $M = \sum_k \alpha_k A_k$: the channels that support the class, where they fire;
# 4. MICRA-Net then clips negative values of the deepest map only (layer 4b), rescales each map
#    to [0, 1] (min-max), and repeats each pixel to come back to the crop size.
#
# Here it is for layer 3b and the class rings, with nothing but PyTorch:

# %%
LAYER, CLASS = "3b", 0
x = image[None].to(device)                       # (1, 1, size, size)
with torch.enable_grad():
    logits, activations = model.forward_with_activations(x)
    A = activations[LAYERS.index(LAYER)]         # (1, K, h, w)
    (G,) = torch.autograd.grad(logits[0, CLASS], A)
alpha = G.mean(dim=(2, 3))                       # (1, K): one weight per channel
M = (alpha[:, :, None, None] * A).sum(dim=1)     # (1, h, w): weighted sum over channels
if LAYER == "4b":
    M = M.clamp(min=0)
M = (M - M.min()) / (M.max() - M.min() + 1e-12)  # min-max to [0, 1]
stride = LAYER_STRIDES[LAYERS.index(LAYER)]
by_hand = M.repeat_interleave(stride, dim=1).repeat_interleave(stride, dim=2)[0].detach().cpu().numpy()
print(f"layer {LAYER}: activation {tuple(A.shape)}, gradient {tuple(G.shape)}, "
      f"alpha {tuple(alpha.shape)}, map {tuple(M.shape)} -> upsampled {by_hand.shape}")
print(f"channels with positive weight: {(alpha > 0).sum().item()} of {alpha.shape[1]}")

# %%
order = alpha[0].argsort(descending=True).cpu()
fig, axes = plt.subplots(1, 5, figsize=(15, 3))
axes[0].imshow(A[0, order[0]].detach().cpu(), cmap="viridis")
axes[0].set_title(f"A, channel {order[0].item()} (largest α)")
axes[1].imshow(A[0, order[-1]].detach().cpu(), cmap="viridis")
axes[1].set_title(f"A, channel {order[-1].item()} (smallest α)")
axes[2].bar(np.arange(alpha.shape[1]), alpha[0, order].detach().cpu().numpy(), width=1.0)
axes[2].axhline(0, color="k", lw=0.5)
axes[2].set_title("α per channel, sorted")
axes[3].imshow(M[0].detach().cpu(), cmap="inferno")
axes[3].set_title(f"Σ α·A ({M.shape[-2]}×{M.shape[-1]}), normalised")
axes[4].imshow(image[0], cmap="gray")
axes[4].imshow(by_hand, cmap="inferno", alpha=0.5)
axes[4].set_title("upsampled, over the crop")
for ax in axes[[0, 1, 3, 4]]:
    ax.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# A few channels get large positive weights (left of the bar chart): they respond to what
# makes this crop a "rings" crop. The channel with the smallest weight counts *against* rings.
# The weighted sum (fourth panel) is brightest where the supporting channels fire; repeated
# `stride` = 4 times per axis it lines up with the crop.
#
# `local_maps` computes exactly this, for all eight layers and all classes at once:

# %%
maps, logits = local_maps(model, image[None], device=device)  # (1, 2, 8, size, size), (1, 2)
difference = np.abs(maps[0, CLASS, LAYERS.index(LAYER)] - by_hand).max()
print(f"maps {maps.shape}, logits {logits.shape}; largest difference from the hand-made map: {difference:.1e}")
assert maps.shape == (1, len(class_names), 8, size, size)
assert difference < 1e-5

# %% [markdown]
# ## 3. Eight layers, two classes
#
# The network predicts a class present when the sigmoid of its logit is above 0.5
# (`predicted`). Each row below is one class, each column one layer, from the first
# convolution (1a) to the last (4b).

# %%
calls = predicted(logits)[0]
probabilities = torch.sigmoid(torch.as_tensor(logits[0])).numpy()
fig, axes = plt.subplots(2, 9, figsize=(18, 4.4))
for c, name in enumerate(class_names):
    axes[c, 0].imshow(truth[c], cmap="gray")
    axes[c, 0].set_title(f"{name}: p={probabilities[c]:.2f}\n(truth)", fontsize=9)
    for layer, layer_name in enumerate(LAYERS):
        axes[c, layer + 1].imshow(maps[0, c, layer], cmap="inferno", vmin=0, vmax=1)
        axes[c, layer + 1].set_title(layer_name, fontsize=9)
for ax in axes.flat:
    ax.axis("off")
plt.suptitle("Grad-CAM of every layer: rings (top), fibers (bottom)")
plt.tight_layout()
plt.show()
print("predicted present:", {n: bool(p) for n, p in zip(class_names, calls)})

# %% [markdown]
# Read the grid from left to right. The first layers (1a, 1b) draw every bright edge of the
# crop, in full resolution, for both classes alike: their maps look like the image. The deepest
# layers (4a, 4b) are blocky (one value per 8×8 pixels) but differ between the two rows: each
# lights up where *its* class is. The middle layers are in between. The original method
# combines them (lesson 05) to get maps both sharp and specific.

# %% [markdown]
# ## 4. Why early layers are sharp and late layers semantic
#
# Two properties of a layer set what its map can show (lesson 02 computed them):
#
# * its **grid step** (1, 1, 2, 2, 4, 4, 8, 8 pixels): the map has one value per step, so
#   details smaller than the step are lost in 3a-4b;
# * its **receptive field** (3 px for 1a up to 68 px for 4b): a unit of 1a sees a 3×3 patch, an
#   edge at most; only a unit that sees a stretch of dendrite can tell stripes *across* it
#   (rings) from lines *along* it (fibers).
#
# Both can be measured on the maps of the test crops:
#
# * **detail**: the fraction of neighbouring pixel pairs whose map values differ. A map made of
#   8×8 blocks can change only at one pair in eight.
# * **class agreement**: the correlation between the rings map and the fibers map of the same
#   crop, at the same layer (its absolute value, averaged over crops). Near 1: the layer draws
#   the same picture whatever the class (the sign aside); near 0: each class gets its own picture.

# %%
start = time.perf_counter()
test_maps, test_logits = local_maps(model, test_images, device=device)          # (N, 2, 8, S, S)
seconds = time.perf_counter() - start
print(f"local_maps: {len(test_images)} crops x {len(class_names)} classes x 8 layers in {seconds:.1f} s")


def correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / (np.sqrt((a @ a) * (b @ b)) + 1e-12))


detail = np.array([np.mean(np.diff(test_maps[:, :, layer], axis=-1) != 0) for layer in range(8)])
signed_agreement = np.array([np.mean([correlation(m[0, layer], m[1, layer]) for m in test_maps])
                             for layer in range(8)])
agreement = np.array([np.mean([abs(correlation(m[0, layer], m[1, layer])) for m in test_maps])
                      for layer in range(8)])

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'layer':7}{'grid step':>10}{'map cells':>11}")
for name, stride in zip(LAYERS, LAYER_STRIDES):
    print(f"{name:7}{stride:>10}{f'{size // stride}x{size // stride}':>11}")

# %%
print(f"{'layer':7}{'detail':>8}{'|class agreement|':>19}{'(signed)':>10}")
for name, d, a, sa in zip(LAYERS, detail, agreement, signed_agreement):
    print(f"{name:7}{d:8.2f}{a:19.2f}{sa:10.2f}")
assert detail[0] > 0.5 > detail[7], detail
assert agreement[:2].mean() > agreement[7] + 0.2, agreement

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(LAYERS, detail, "o-", label="detail (sharpness)")
ax.plot(LAYERS, agreement, "s-", label="|rings map vs fibers map| correlation")
ax.set_ylim(0, 1.05)
ax.set_xlabel("layer")
ax.legend(fontsize=8)
ax.set_title("Deeper: coarser, and more specific to the class")
plt.tight_layout()
plt.show()

# %% [markdown]
# Detail falls with the grid step, as it must: the first layers change value at almost every
# pixel, 4b only at the edges of its 8×8 blocks. Class agreement falls too: in the first
# layers the rings map and the fibers map of a crop are strongly correlated (often
# *negatively*: the same bright lines, counted for one class and against the other), so these
# layers only know "bright line here". Only in the deepest layer, 4b, are the two maps nearly
# unrelated (about 0.1 in the full-mode run stored here, against 0.6 to 0.8 before it): 4b has
# learned which arrangement of lines makes each class. That is what *semantic* means here, and
# it is a property of the last layer rather than a steady climb.

# %% [markdown]
# ## 5. How well does each layer find the structures? ROC AUC against pixel truth
#
# A map is good when the pixels of the structure score higher than the other pixels. The
# **ROC AUC** measures exactly this: the probability that a randomly chosen structure pixel
# has a higher map value than a randomly chosen background pixel. 1.0 is a perfect ranking,
# 0.5 is chance, below 0.5 is backwards. It needs no threshold, so it grades the maps
# themselves, before any post-processing.
#
# We compute it twice for every layer and class:
#
# * over the **whole crop**, on the crops that contain the class: can the map find the
#   structure at all?
# * **rings against fibers**, on the crops that hold pixels of both (however few; not
#   necessarily *present* by the 5 % rule): among the pixels that belong to
#   one of the two structures, do the pixels of *this* class score higher than those of the
#   other? The demo data draw rings and fibers with the same lines and the same brightness;
#   what differs is their *arrangement* (stripes across the dendrite, or lines along it).
#
# The raw image brightness, scored the same way, is the baseline a map should beat. (It is
# not at 0.5 for rings against fibers: the ring truth covers the whole lattice, dark gaps
# between the stripes included, while a fiber's truth is the bright line itself.)

# %%
def roc_auc(scores, truth):
    """Probability that a positive pixel outranks a negative one (ties count half)."""
    scores, truth = np.ravel(scores), np.ravel(truth).astype(bool)
    n_pos, n_neg = truth.sum(), (~truth).sum()
    if n_pos == 0 or n_neg == 0:
        return np.nan
    ranks = rankdata(scores)                      # average ranks for ties
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


assert roc_auc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
assert roc_auc([1, 1, 1, 1], [0, 0, 1, 1]) == 0.5

with_both = np.flatnonzero(test_truth.any(axis=(-1, -2)).all(axis=1))   # pixels of both classes, any amount
auc = {"whole crop": np.full((2, 9), np.nan), "rings vs fibers": np.full((2, 9), np.nan)}
for c in range(2):
    for column in range(9):                       # 8 layers, then the raw image as baseline
        def score(i):
            return test_maps[i, c, column] if column < 8 else test_images[i, 0].numpy()
        auc["whole crop"][c, column] = np.nanmean(
            [roc_auc(score(i), test_truth[i, c]) for i in np.flatnonzero(contains[:, c])])
        pairs = []
        for i in with_both:
            only_one = test_truth[i, 0] != test_truth[i, 1]       # pixels of exactly one structure
            pairs.append(roc_auc(score(i)[only_one], test_truth[i, c][only_one]))
        auc["rings vs fibers"][c, column] = np.nanmean(pairs) if pairs else np.nan
print(f"{contains.sum(axis=0).tolist()} crops contain {class_names}; {len(with_both)} hold pixels of both")

# %%
columns = list(LAYERS) + ["image"]
for where, table in auc.items():
    print(f"ROC AUC, {where}")
    print(f"{'':8}" + "".join(f"{n:>7}" for n in columns))
    for c, name in enumerate(class_names):
        print(f"{name:8}" + "".join(f"{v:7.2f}" for v in table[c]))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
for ax, (where, table) in zip(axes, auc.items()):
    for c, name in enumerate(class_names):
        line, = ax.plot(LAYERS, table[c, :8], "o-", label=f"{name}: Grad-CAM")
        ax.axhline(table[c, 8], color=line.get_color(), ls=":", label=f"{name}: image brightness")
    ax.axhline(0.5, color="k", lw=0.5)
    ax.set_title(f"ROC AUC, {where}")
    ax.set_xlabel("layer")
axes[0].set_ylabel("ROC AUC (1 = perfect, 0.5 = chance)")
axes[1].legend(fontsize=8, loc="lower left")
plt.tight_layout()
plt.show()

whole, versus = auc["whole crop"], auc["rings vs fibers"]
for c, name in enumerate(class_names):
    best = int(np.nanargmax(versus[c, :8]))
    print(f"{name}: whole crop, best layer {LAYERS[int(np.nanargmax(whole[c, :8]))]} "
          f"(AUC {np.nanmax(whole[c, :8]):.2f}, brightness {whole[c, 8]:.2f}); "
          f"against the other class, best layer {LAYERS[best]} (AUC {versus[c, best]:.2f}, "
          f"brightness {versus[c, 8]:.2f})")
assert len(with_both) > 0
assert np.all(whole[:, 6:8].max(axis=1) > 0.6), whole                               # deep layers find it
assert np.all(whole[:, 6:8].max(axis=1) > whole[:, 0:2].mean(axis=1) + 0.1), whole   # better than early
deep_best, early_best = versus[:, 2:8].max(axis=1), versus[:, 0:2].max(axis=1)   # per class
told_apart = (deep_best > 0.65) & (deep_best > early_best + 0.1)
for c, name in enumerate(class_names):
    print(f"{name} vs the other, on {len(with_both)} crops: best of 2a-4b {deep_best[c]:.2f}, best of 1a/1b "
          f"{early_best[c]:.2f}, brightness {versus[c, 8]:.2f} -> "
          f"{'told apart' if told_apart[c] else 'not told apart'} by a deeper layer")
assert told_apart.any(), versus           # at least one class is told apart; the text says which

# %% [markdown]
# Over the whole crop (left), the deep layers rank the structure's pixels above the rest and
# the early layers do not: their maps, as section 4 showed, mark bright lines for either
# class, sometimes with the wrong sign (an AUC below 0.5 means the map is *lower* on the
# structure). The raw brightness (dotted) does as well as the best layer, or better, because in
# the demo data the structures *are* the bright things: brightness finds actin, but not which
# actin. The right panel asks exactly that, and its answer is one-sided. In the full-mode
# run stored here, the *rings* maps of 3b, 4a and 4b rank ring pixels above fiber pixels
# (AUC 0.89 to 0.98, against 0.43 for brightness and at most 0.43 for 1a and 1b). The *fibers*
# maps do not rank fiber pixels above ring pixels: 0.46 to 0.50 at 3b, 4a and 4b, chance level,
# and at best 0.61 (2b) against 0.57 for brightness. Fiber pixels are a little brighter on
# average than the ring lattice with its gaps, which is why brightness is not at 0.5.
#
# So the deep ring maps are specific to rings, while the deep fiber maps are as high on the
# rings as on the fibers of these crops. And "these crops" are few: only a handful of the
# 64-px test crops hold pixels of both structures (4 here), so this panel is a hint, not a
# measurement; the masks of lesson 05 are scored on every test crop. The whole-crop panel,
# on all crops that contain each class, is the solid result: deep above early, for both
# classes. The assertions check that, and that at least one class is told apart by a deeper
# layer; the numbers change with the training (fast mode trains fewer epochs on fewer images).

# %% [markdown]
# ## 6. The same map from a Grad-CAM library
#
# Grad-CAM is available in libraries such as [Captum](https://captum.ai) (`LayerGradCam`) and
# pytorch-grad-cam. They hook the output of a *module*; in MICRA-Net the ReLU is a function
# call, so `sequential_view(model)` rebuilds the network as an `nn.Sequential` (sharing the
# same weights) with one ReLU module per layer. A library computes one layer per call (a
# forward and a backward pass each), which is why `local_maps`, which reads all eight layers
# from one pass, is faster (see `benchmarks/gradcam.py`).

# %%
LIB_LAYER = "4b"
view = sequential_view(model).eval()
ours = maps[0, CLASS, LAYERS.index(LIB_LAYER)]
try:
    from captum.attr import LayerAttribution, LayerGradCam
except ImportError:
    library = "hand-written hooks (Captum is not installed: pip install captum)"
    saved = {}
    module = getattr(view, f"relu{LIB_LAYER}")
    handle = module.register_forward_hook(lambda m, i, out: saved.update(act=out, hook=out.register_hook(
        lambda g: saved.update(grad=g))))
    with torch.enable_grad():
        score = view(image[None].to(device).requires_grad_(True))[0, CLASS]
        score.backward()
    handle.remove()
    model.zero_grad(set_to_none=True)                  # .backward() filled parameter gradients
    cam = (saved["grad"].mean(dim=(2, 3), keepdim=True) * saved["act"]).sum(dim=1, keepdim=True)
    cam = cam.clamp(min=0) if LIB_LAYER == "4b" else cam
    cam = torch.nn.functional.interpolate(cam, size=(size, size), mode="nearest")
else:
    library = "Captum LayerGradCam"
    method = LayerGradCam(view, getattr(view, f"relu{LIB_LAYER}"))
    cam = method.attribute(image[None].to(device), target=CLASS, relu_attributions=(LIB_LAYER == "4b"))
    cam = LayerAttribution.interpolate(cam, (size, size), "nearest")
cam = cam[0, 0].detach().cpu().numpy()
theirs = (cam - cam.min()) / (cam.max() - cam.min() + 1e-12)   # the same min-max as MICRA-Net
library_difference = np.abs(theirs - ours).max()

fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
axes[0].imshow(ours, cmap="inferno")
axes[0].set_title(f"local_maps, {LIB_LAYER}, {class_names[CLASS]}")
axes[1].imshow(theirs, cmap="inferno")
axes[1].set_title(library.split(" (")[0], fontsize=9)
axes[2].imshow(np.abs(theirs - ours), cmap="gray", vmin=0, vmax=1e-5)
axes[2].set_title("|difference| (scale 0 to 1e-5)")
for ax in axes:
    ax.axis("off")
plt.tight_layout()
plt.show()
print(f"{library}: largest difference {library_difference:.1e}")
assert library_difference < 1e-5

# %% [markdown]
# The two maps agree to rounding error (black difference image): MICRA-Net's local maps are
# plain Grad-CAM, applied to every layer and rescaled. What is specific to MICRA-Net is that
# *all* layers are used, and how they are combined (next lesson).

# %% [markdown]
# ## 7. Explore: a layer / class slider
#
# In JupyterLab, move the sliders to compare any layer and class on any of the test crops.
# (On a static page, such as GitHub or the CI run, the widget does not show; the figure after
# it shows the same view for the example crop.)

# %%
def show_map(crop=0, layer="4b", class_name=class_names[0], ax=None):
    c, layer_index = class_names.index(class_name), LAYERS.index(layer)
    own_figure = ax is None
    if own_figure:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(test_images[crop, 0], cmap="gray")
    ax.imshow(test_maps[crop, c, layer_index], cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    ax.contour(test_truth[crop, c], levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_title(f"crop {crop}, layer {layer}, {class_name}", fontsize=9)
    ax.axis("off")
    if own_figure:
        plt.show()
    return ax


try:
    import ipywidgets as widgets
    from IPython.display import display

    slider = widgets.interactive(
        show_map,
        crop=widgets.IntSlider(min=0, max=len(test_images) - 1, value=example, description="crop"),
        layer=widgets.SelectionSlider(options=list(LAYERS), value="4b", description="layer"),
        class_name=widgets.ToggleButtons(options=list(class_names), description="class"),
        ax=widgets.fixed(None))
    display(slider)
except ImportError:
    print("ipywidgets is not installed: the static figure below shows the same view")

# %%
fig, axes = plt.subplots(2, 4, figsize=(13, 6.6))
for row, class_name in enumerate(class_names):
    for col, layer in enumerate(("1a", "2b", "3b", "4b")):
        show_map(example, layer, class_name, ax=axes[row, col])
plt.suptitle(f"Test crop {example}: map (colour) and true outline (cyan)")
plt.tight_layout()
plt.show()
assert len(fig.axes) == 8 and all(ax.images for ax in fig.axes)

# %% [markdown]
# ## What you learned
# - A Grad-CAM map is a weighted sum of a layer's channels, with weights = the spatial mean of
#   the gradient of the class **logit**; MICRA-Net clips the last map (4b) at zero and rescales
#   each map to [0, 1].
# - `local_maps(model, images)` gives all 8 layers × classes for a batch in one forward pass
#   and one backward pass per class; it matches the hand computation and Captum.
# - Early layers are sharp but follow brightness; deep layers are coarse (8-pixel blocks) and
#   find the structures far better. Whether they also tell rings from fibers is measured by a
#   ROC AUC restricted to pixels of either structure: here the ring maps do, the fiber maps do
#   not, on the few crops that hold both. ROC AUC against pixel truth needs no threshold.
#
# ## Try this on your data
# 1. Load your model with `model, params = load_zoo("my_model.hdf5")`.
# 2. Read crops of the size it was trained on (`mu.images.read_image`, then cut tiles), shape
#    (N, channels, H, W), scaled like the training data.
# 3. `maps, logits = local_maps(model, crops, progress=True)`; `predicted(logits)` says which
#    classes the network calls present (for EM / P. vivax-like models use
#    `normalize=False` and the zoo's `class_thresholds`, see `original_settings`).
# 4. Plot `maps[i, c]` as in section 3; if you have a few hand-drawn masks, compute the ROC
#    AUC per layer as in section 5 to see which layers see your structure.
