# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/micranet-tutorial/micranet-tutorial/blob/main/notebooks/03_training.ipynb) [![Binder](https://mybinder.org/badge_logo.svg)](https://mybinder.org/v2/gh/micranet-tutorial/micranet-tutorial/HEAD?labpath=notebooks%2F03_training.ipynb)
#
# # 03 · Training MICRA-Net from image-level labels
#
# **Goal.** Train MICRA-Net with the original recipe on the demo data, read its loss curves and
# learning-rate schedule, measure it per class, and know how to train, resume and fine-tune
# on your own data.
#
# **Steps.**
# 1. See what the network is told: crops and one yes/no label per class.
# 2. Understand the loss: binary cross-entropy per class, and `pos_weight`.
# 3. Write the training step by hand: forward, loss, backward, optimizer step; check that it
#    gives exactly the weights of the package's training.
# 4. Train (or reuse the model trained earlier) and look at the run folder.
# 5. Read the loss curves and the learning-rate schedule.
# 6. Measure per class: accuracy, F1 and the confusion matrix on the validation crops.
# 7. Check image-level predictions against the demo truth on whole test images.
# 8. Resume, fine-tune from a published model, scale out.

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

DATASET = "demo"  # "demo": offline synthetic data; "actin": also fine-tune the published Actin model
FAST = is_fast()  # MICRANET_FAST=1 (CI): less work, same assertions
DEVICE = "auto"  # "auto", "cpu" or "cuda"

# %%
import h5py
import matplotlib.pyplot as plt
import numpy as np
import torch

from micranet_utils.io.zoo import load_zoo
from micranet_utils.train.runs import resume, train
from micranet_utils.tutorial.demo_models import DEMO_SETTINGS, demo_run_dir, ensure_demo_model
from micranet_utils.io.checkpoints import read_history
from micranet_utils.io.training_files import CropDataset
from micranet_utils.tutorial.demo_data import ensure_demo
from micranet_utils.tutorial.lessons import setup

DATASET, FAST, device, WORK = setup(DATASET, FAST, DEVICE)
SETTINGS = DEMO_SETTINGS["fast" if FAST else "full"]
splits = ensure_demo(fast=FAST, progress=False)

# %% [markdown]
# ## 1. What the network is told
#
# MICRA-Net never sees a pixel mask. The training file holds whole images and, for each, the
# pixel labels of every class plus a *foreground* mask (the dendrites); the loader turns them
# into square crops with one yes/no label per class, with the rules of the original code:
#
# * crops are taken on a grid with a stride of 75 % of their side (25 % overlap);
# * a crop is kept only if at least 10 % of it is foreground: empty background teaches nothing;
# * a crop is *positive* for a class when more than 5 % of its pixels carry that class.
#
# Here are a few training crops with the only information the network gets about them.

# %%
crops = CropDataset(splits["training"], size=SETTINGS["size"])
targets = crops.targets()
rng = np.random.default_rng(0)
combos = [(1, 0), (0, 1), (1, 1), (0, 0)]
picks = [rng.choice(np.flatnonzero((targets == np.array(c, bool)).all(axis=1)), 2, replace=False)
         for c in combos]
fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
for column, (combo, chosen) in enumerate(zip(combos, picks)):
    for row, index in enumerate(chosen):
        image, target = crops[int(index)]
        axes[row, column].imshow(image[0], cmap="magma", vmax=np.percentile(image, 99.5))
        axes[row, column].set_title(f"rings: {'yes' if target[0] else 'no'}, fibers: {'yes' if target[1] else 'no'}")
        axes[row, column].axis("off")
fig.suptitle(f"Training crops of {SETTINGS['size']} px and their image-level labels")
plt.show()

# %% [markdown]
# Rings are periodic stripes *across* a dendrite, fibers continuous lines *along* it; both are
# made of the same bright lines, so brightness alone cannot tell them apart. The network will
# have to learn the arrangement, and it is only told *whether* each crop holds some.
#
# **Why is that enough?** The network ends with a *global max pool*: each of its 256 deepest
# feature channels reports only its strongest response anywhere in the crop. To say "rings:
# yes" the network must produce a strong response *somewhere*, and to say "no" on the crops
# without rings it must not respond to the look-alikes (fibers, bright puncta). Over hundreds of
# crops, the only consistent way to do both is to respond to the rings themselves. The
# gradient of each decision flows back only through the location that won the max pool, so the
# network learns *where* the evidence is without ever being told. Lesson 04 reads that
# knowledge back with Grad-CAM.

# %%
positives = targets.mean(axis=0)
print(f"{len(crops)} training crops of {crops.size} px")
for name, fraction in zip(crops.class_names, positives):
    print(f"  {name:<7} positive in {fraction:.0%} of the crops -> negatives/positives = {(1 - fraction) / fraction:.1f}")

# %% [markdown]
# ## 2. The loss, and what `pos_weight` does
#
# Each class has its own sigmoid, so the loss is a binary cross-entropy per class, averaged:
#
# $$\ell = -\big[\,w_c\, y \log \sigma(z) + (1-y) \log(1-\sigma(z))\,\big]$$
#
# where $z$ is the logit, $y \in \{0, 1\}$ the label and $w_c$ the **positive weight** of class
# $c$. With $w_c = 1$ a class that is present in only a quarter of the crops is cheap to ignore:
# always answering "no" is right 75 % of the time. Weighting each positive by about
# negatives / positives makes a missed positive cost as much, in total, as all the false alarms.
# The published Actin recipe uses `pos_weight = [3.3, 1.6]` for rings and fibers, roughly the
# imbalance of its data. On the demo data both classes are present in about a third of the
# crops (ratio about 2); we keep the original weights, which also favour recall, a good
# property for a segmentation that will be thresholded later.

# %%
logit = torch.tensor([-1.0])
for weight in (1.0, 3.3):
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([weight]))
    print(f"pos_weight {weight}: loss of a missed positive (logit -1) = {loss_fn(logit, torch.ones(1)).item():.3f}, "
          f"of a false alarm (logit +1) = {loss_fn(-logit, torch.zeros(1)).item():.3f}")

# %% [markdown]
# ## 3. The training step, by hand
#
# Training repeats one step over and over. For a batch of crops and their yes/no labels:
#
# 1. **forward**: the network gives one logit per crop and class;
# 2. **loss**: the weighted binary cross-entropy above, averaged over crops and classes;
# 3. **backward**: PyTorch computes the gradient of that loss with respect to every weight;
# 4. **step**: Adam moves every weight a little against its gradient.
#
# Here are the first three steps of the demo run, in plain PyTorch. Two package helpers
# choose *which* crops and *which* random draws: `batch_plan` shuffles the crops of an epoch
# from the seed, and `mix_seed` gives each batch its own seed for dropout and for the
# augmentations of lesson 01 (`augment_batch`: flips, darker, brighter). That is what makes a
# run repeatable, and resumable at any batch.

# %%
from micranet_utils.model.network import MICRANet
from micranet_utils.train.batching import augment_batch, batch_plan, mix_seed

SEED, EPOCH, STEPS = 0, 0, 3                   # the demo run's seed; the first 3 batches of epoch 1
torch.manual_seed(SEED)
network = MICRANet(num_classes=2, in_channels=1)          # random initial weights, drawn from the seed
optimizer = torch.optim.Adam(network.parameters(), lr=SETTINGS["lr"])
loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.3, 1.6]))   # rings, fibers (section 2)
augmenter = torch.Generator()
plan = batch_plan(len(crops), SETTINGS["batch_size"], SEED, EPOCH)        # lists of crop indices

network.train()                                # dropout on; BatchNorm normalises with the batch's statistics
hand_losses = []
for b, indices in enumerate(plan[:STEPS]):
    images = torch.stack([crops[i][0] for i in indices])      # (32, 1, 64, 64)
    labels = torch.stack([crops[i][1] for i in indices])      # (32, 2): 1 = yes, 0 = no
    torch.manual_seed(mix_seed(SEED, EPOCH, b, 0))           # this batch's dropout draws
    augmenter.manual_seed(mix_seed(SEED, EPOCH, b, 0, 1))    # this batch's augmentations
    images = augment_batch(images, SETTINGS["augment"], augmenter)
    logits = network(images)                   # 1. forward: (32, 2)
    loss = loss_fn(logits, labels)             # 2. loss: one number
    optimizer.zero_grad()
    loss.backward()                            # 3. backward: a gradient for every weight
    optimizer.step()                           # 4. step
    hand_losses.append(loss.item())
print("loss of each step, by hand:      ", [round(v, 4) for v in hand_losses])

# %% [markdown]
# Now the same three steps with the package's `train` (`max_batches=3`, one epoch), in a
# throw-away folder. Before validating, `train` normally re-estimates the BatchNorm statistics
# (section 4); we switch that off here, so that *every* tensor of the two networks, running
# statistics included, can be compared.

# %%
import tempfile

package_losses = []


def record(event):
    if event["event"] == "batch":
        package_losses.append(event["loss"])


with tempfile.TemporaryDirectory() as folder:
    run = train(splits["training"], folder, validation=splits["validation"], seed=SEED, max_batches=STEPS,
                bn_recalibration_crops=0, num_workers=0, progress=False, callback=record,
                **{**SETTINGS, "epochs": 1})
print("loss of each step, package train:", [round(v, 4) for v in package_losses])
print("pos_weight used by train:", run.params["pos_weight"])
ours, theirs = network.state_dict(), run.model.state_dict()
identical = [name for name in ours if torch.equal(ours[name], theirs[name])]
print(f"{len(identical)} of {len(ours)} tensors identical after {STEPS} steps")
assert hand_losses == package_losses and len(identical) == len(ours)

# %% [markdown]
# (The `epoch 1/1` line is `train` reporting on that three-step run: after three steps its
# validation scores mean nothing yet.)
#
# Equal to the last bit: the package's training loop is these four lines, plus bookkeeping
# (checkpoints, the learning-rate schedule, validation, several processes). Equality needs the
# same seed, the same batches and the same number of CPU threads (floating-point sums depend
# on how the work is split). The first losses are close to 1.0, what a network answering
# "50 %" for every crop scores with these weights and this class balance.

# %% [markdown]
# ## 4. Train
#
# `micranet_utils.train.runs.train` runs the original recipe: Adam (lr $10^{-3}$), the weighted
# loss above, the four original augmentations (flips, a darkening intensity scale, a
# brightening gamma; each with probability 0.5), `ReduceLROnPlateau` on the validation loss
# (×0.1 when it has not improved by 1 % for `patience` epochs), and the model with the lowest
# validation loss kept. The published model used 256-px crops, batches of 64 and 250 epochs
# (hours on a GPU). For the lessons we keep the recipe but take smaller crops and few epochs.
#
# One addition: before each validation, the BatchNorm running statistics are re-estimated
# from 256 training crops (`bn_recalibration_crops`). Microscopy crops are dark (mean about
# 0.02), and after only a few hundred steps the running averages the original relies on still
# remember their initial values: a model that is right in training mode answers "no" to
# everything in evaluation mode. The original's 250 epochs hide this; a short training does not.

# %%
# NBVAL_CHECK_OUTPUT
defaults = {"size": 256, "batch_size": 64, "epochs": 250, "lr": 1e-3, "lr_patience": 10, "augment": 0.5}
print(f"{'setting':<12}{'original':>10}{'lesson (full)':>15}{'lesson (fast)':>15}")
for key, value in defaults.items():
    print(f"{key:<12}{value:>10}{DEMO_SETTINGS['full'][key]:>15}{DEMO_SETTINGS['fast'][key]:>15}")

# %% [markdown]
# `ensure_demo_model()` trains with these settings in `WORK/runs/...` and copies the best model
# to `WORK/models/demo_micranet.hdf5`, where lessons 04 to 07 look for it. If an earlier run
# already trained it, it is reused; if a run was interrupted, it is resumed. The progress bar
# shows the loss and learning rate of each batch, and one line per epoch summarises validation.

# %%
model_path = ensure_demo_model(fast=FAST)
run_dir = demo_run_dir(fast=FAST)
if not (run_dir / "history.csv").is_file():      # the model came from elsewhere: train here too
    model_path = ensure_demo_model(fast=FAST, retrain=True)
history = read_history(run_dir / "history.csv")
print("model:", model_path.relative_to(WORK))
print("run folder:", sorted(p.name for p in run_dir.iterdir()))

# %% [markdown]
# The run folder holds everything about the run:
#
# * `best.hdf5`: the model with the lowest validation loss, a model-zoo file in the published
#   layout (the original code loads it);
# * `last.hdf5`: the model at the end of the last epoch, plus what is needed to resume exactly:
#   optimizer moments, scheduler, epoch, random states, history; as HDF5 arrays and JSON, never
#   pickle, so opening someone else's checkpoint cannot run code;
# * `history.csv` and `history.png`: one row per epoch; `trainer_params.json`: every setting.

# %%
with h5py.File(run_dir / "last.hdf5", "r") as file:
    print("groups in last.hdf5:", list(file))
    print("training_state holds:", list(file["training_state"]), "+ a JSON 'state' attribute")
print("trainer_params (first keys):", ", ".join(sorted(load_zoo(model_path)[1])[:10]), "...")

# %% [markdown]
# ## 5. Loss curves and the learning-rate schedule

# %%
epochs = [row["epoch"] for row in history]
fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.6))
ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="training (with augmentation, dropout)")
ax_loss.plot(epochs, [r["valid_loss"] for r in history], "o-", label="validation")
best = min(history, key=lambda r: r["valid_loss"])
ax_loss.axvline(best["epoch"], color="grey", ls=":", label=f"best: epoch {best['epoch']}")
ax_loss.set(xlabel="epoch", ylabel="weighted BCE", title="Loss")
ax_loss.legend()
ax_lr.semilogy(epochs, [r["lr"] for r in history], "o-", color="C2")
ax_lr.set(xlabel="epoch", ylabel="learning rate", title="ReduceLROnPlateau")
plt.show()

# %% [markdown]
# Both losses fall quickly: the task is learnable from yes/no labels. The validation loss is
# noisier than the training loss (fewer crops) and can rise for an epoch while the network
# re-organises; that is why the recipe keeps the *best* epoch, not the last. The learning rate
# stays at $10^{-3}$ until the validation loss stops improving by 1 % for `lr_patience` epochs,
# then drops tenfold: smaller steps to settle into the minimum. (The original code passes the
# best loss so far to the scheduler instead of the current one; for this scheduler, with a
# relative threshold, both give exactly the same schedule, which our tests check.)

# %% [markdown]
# ## 6. Per class: accuracy, F1, confusion
#
# The loss mixes both classes; what matters is how each one is recognised. On the validation
# crops we count, per class, the true and false positives and negatives (a crop is called
# positive when its probability exceeds 0.5). *Accuracy* is the fraction of crops called
# right; *F1* is the harmonic mean of precision and recall, and ignores the easy true negatives.

# %%
names = list(crops.class_names)
fig, axes = plt.subplots(1, len(names), figsize=(10, 3.4))
for name, ax in zip(names, axes):
    ax.plot(epochs, [r[f"valid_f1_{name}"] for r in history], "o-", label="F1")
    ax.plot(epochs, [r[f"valid_accuracy_{name}"] for r in history], "s--", label="accuracy")
    ax.set(title=name, xlabel="epoch", ylim=(0, 1.02))
    ax.legend()
plt.show()

# %%
model, params = load_zoo(model_path, device=device)
valid = CropDataset(splits["validation"], size=params["size"])
images = torch.stack([valid[i][0] for i in range(len(valid))])
truth = torch.stack([valid[i][1] for i in range(len(valid))]).numpy() > 0.5
with torch.no_grad():
    probabilities = torch.cat([torch.sigmoid(model(batch.to(device))).cpu() for batch in images.split(64)]).numpy()
called = probabilities > 0.5

fig, axes = plt.subplots(1, len(names), figsize=(8, 3.6))
for c, (name, ax) in enumerate(zip(names, axes)):
    matrix = np.array([[np.sum(~truth[:, c] & ~called[:, c]), np.sum(~truth[:, c] & called[:, c])],
                       [np.sum(truth[:, c] & ~called[:, c]), np.sum(truth[:, c] & called[:, c])]])
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, count, ha="center", va="center", fontsize=14,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set(xticks=[0, 1], xticklabels=["called no", "called yes"], yticks=[0, 1],
           yticklabels=["truly no", "truly yes"], title=name)
plt.tight_layout()
plt.show()

# %%
best_row = history[best["epoch"] - 1]
for c, name in enumerate(names):
    f1 = best_row[f"valid_f1_{name}"]
    print(f"{name:<7} best epoch: validation F1 {f1:.3f}, accuracy {best_row[f'valid_accuracy_{name}']:.3f}")
    assert f1 > 0.8, f"{name}: validation F1 {f1:.3f} is too low for the lessons that follow"
    # the model file is the best epoch: recomputing its counts gives the same F1
    tp, fp, fn = (np.sum(truth[:, c] & called[:, c]), np.sum(~truth[:, c] & called[:, c]),
                  np.sum(truth[:, c] & ~called[:, c]))
    assert abs(2 * tp / (2 * tp + fp + fn) - f1) < 0.02

# %% [markdown]
# Read the confusion matrices row by row: the bottom row holds the crops that truly contain the
# class; most should be on the right (found). The errors that remain are mostly crops near the
# 5 % area rule: a crop with 4 % rings is labelled "no" but looks like "yes". Such label noise is
# inherent to image-level labels made from areas, and harmless for segmentation.
#
# ## 7. Whole images: image-level predictions against the truth
#
# The network accepts any image size, so we can also ask it about whole 512 × 512 test images
# it has never seen (the testing split was not used for training or to choose the epoch). The
# truth is known exactly for the demo images: does the image contain rings? fibers?

# %%
with h5py.File(splits["testing"], "r") as file:
    test_images, test_truth = [], []
    for group in file.values():
        labels = group["label"][()]
        test_images.append(group["data"][()])
        test_truth.append((labels[:, :-1] > 0).any(axis=(2, 3)))
test_images, test_truth = np.concatenate(test_images), np.concatenate(test_truth)
with torch.no_grad():   # one whole image at a time
    test_probability = np.concatenate([torch.sigmoid(model(torch.from_numpy(image[None, None]).to(device))).cpu()
                                       for image in test_images])

count = min(8, len(test_images))
fig, axes = plt.subplots(1, count, figsize=(2.4 * count, 3))
for k, ax in enumerate(axes):
    ax.imshow(test_images[k], cmap="magma", vmax=np.percentile(test_images[k], 99.5))
    lines = [f"{name[0].upper()}: {test_probability[k, c]:.2f} ({'yes' if test_truth[k, c] else 'no'})"
             for c, name in enumerate(names)]
    ax.set_title("\n".join(lines), fontsize=9)
    ax.axis("off")
fig.suptitle("probability (truth), R = rings, F = fibers")
plt.show()
image_accuracy = ((test_probability > 0.5) == test_truth).mean(axis=0)
for name, value in zip(names, image_accuracy):
    print(f"{name:<7} image-level accuracy on {len(test_images)} test images: {value:.2f}")
assert image_accuracy.min() >= 0.75, image_accuracy

# %% [markdown]
# Whole images are easier than crops: an image either has a whole patch of rings or none,
# while crops cut structures at their edges. The network was trained on small crops (64 px
# here) and still answers for 512 px images, because its global max pool does not care about
# the input size.
#
# ## 8. Resume, fine-tune, scale out
#
# **Resume.** Training can be stopped at any time (even by a power cut): `last.hdf5` is written
# atomically at the end of every epoch (or every `checkpoint_every` batches). Every random draw
# (batch order, augmentation, dropout) is a function of the seed, the epoch and the batch, so a
# resumed run ends with exactly the same weights as an uninterrupted one on the CPU. Resuming a
# finished run does nothing; `epochs=` extends it:

# %%
extended = resume(run_dir, progress=False)
print(f"resumed a finished run: {len(extended.history)} epochs, best epoch {extended.best_epoch}")

# %% [markdown]
# From a terminal, the same run is
#
# ```bash
# micranet train --data WORK/demo --output WORK/runs/mine --size 64 --batch-size 32 --epochs 12 --lr-patience 2 --seed 0
# micranet train --resume WORK/runs/mine            # after an interruption
# micranet train --data WORK/demo --output /tmp/try --dry-run   # two batches through everything
# ```
#
# **Fine-tune.** `restore_from=` starts from any model-zoo file (the published one, or yours),
# and `freeze="all-conv"` trains only the final linear layer (the original `--freeze`); block
# names (`"1a"`, ... `"4b"`) freeze single blocks. With `DATASET = "actin"` the next cell
# downloads the published Actin model and fine-tunes it on the demo crops.

# %%
if DATASET == "actin":
    from micranet_utils.io.download import published_path

    zoo = published_path("models", "ActinModelZoo.hdf5")
    finetuned = train(splits["training"], WORK / "runs" / "lesson03_finetune_actin",
                               validation=splits["validation"], restore_from=zoo, freeze="all-conv",
                               **{**SETTINGS, "epochs": 2 if FAST else 4}) \
        if not (WORK / "runs" / "lesson03_finetune_actin" / "last.hdf5").exists() \
        else resume(WORK / "runs" / "lesson03_finetune_actin")
    for name in names:
        print(f"fine-tuned published model, {name}: validation F1 {finetuned.history[-1][f'valid_f1_{name}']:.3f}")
else:
    print("DATASET is 'demo': the published model is not downloaded in this run.")

# %% [markdown]
# **Scale out.** On a machine with several GPUs (or several machines), the same command runs
# under `torchrun`; each process reads its share of every batch, gradients are averaged
# (DistributedDataParallel, NCCL on GPUs, gloo on CPUs) and only the first process writes:
#
# ```bash
# torchrun --nproc-per-node 4 -m micranet_utils train --data DATA --output RUN
# ```
#
# ## What you learned
# - MICRA-Net learns from one yes/no label per class and crop; the global max pool makes the
#   network find *where* the evidence is, which Grad-CAM reads in the next lessons.
# - `pos_weight` balances rare positives against frequent negatives in the loss.
# - The recipe keeps the epoch with the lowest validation loss and divides the learning rate by
#   ten when validation stops improving; watch both curves.
# - Judge each class on its own: F1 and the confusion matrix tell more than the loss.
# - A run folder holds safe (pickle-free), resumable checkpoints in the published zoo layout.
#
# ## Try this on your data
# 1. Turn a folder of your images into training files (lesson 07, `micranet make-dataset`).
# 2. `micranet train --data YOUR_FOLDER --output runs/first --dry-run` checks the whole path in
#    seconds: files, class balance (a class present in every crop or in none is refused with a
#    clear message), batch size.
# 3. Train with `--size` close to the size of your structures' context (128 or 256), and
#    `--pos-weight balanced` if your classes are rare; start from the published model with
#    `--restore-from` when your images resemble STED actin.
# 4. Look at `history.png` and per-class F1 before trusting the maps of lesson 04.
