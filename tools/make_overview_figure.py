"""Draw docs/overview.png, the README's one-figure summary of MICRA-Net.

    python tools/make_overview_figure.py

Uses the lessons' trained demo model (trained first if missing, as lesson 03
does) on one crop of the demo TEST split: the crop, its two image-level labels,
the Grad-CAM maps of a shallow and a deep layer for the predicted class, and the
segmentation against the pixel truth the network never saw. Every number drawn
is computed here.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from micranet_utils.io.zoo import load_zoo
from micranet_utils.io.training_files import CropDataset
from micranet_utils.tutorial.demo_data import ensure_demo
from micranet_utils.model.gradcam import local_maps, predicted
from micranet_utils.analysis.metrics import dice
from micranet_utils.analysis.recipes import segment
from micranet_utils.tutorial.demo_models import ensure_demo_model

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MICRANET_WORKDIR", str(ROOT / "outputs" / "work"))


def main(output=ROOT / "docs" / "overview.png", size=128, fast=True):
    """Draw the figure with the demo model of the given mode (the fast one trains in minutes)."""
    from micranet_utils.tutorial.demo_data import demo_folder

    model, _ = load_zoo(ensure_demo_model(fast=fast))
    files = ensure_demo(folder=demo_folder(fast=fast), fast=fast)
    crops = CropDataset(files["testing"], size=size, return_masks=True)
    # first test crop that holds both structures, so both classes can be shown
    for index in range(len(crops)):
        image, target, truth = crops[index]
        if target.sum() == 2:
            break
    maps, logits = local_maps(model, image[None].numpy())
    present = predicted(logits)
    masks = segment(maps, present, image[None].numpy(), recipe="actin")[0]
    truth = truth.numpy() > 0
    names = ("rings", "fibers")
    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    axes[0].imshow(image[0], cmap="magma")
    axes[0].set_title("1. a crop")
    probability = 1 / (1 + np.exp(-logits[0]))
    axes[1].axis("off")
    axes[1].text(0.05, 0.55, "2. trained with only\n   yes/no per crop:\n\n" + "\n".join(
        f"   {n}: label {int(t)}, predicted {p:.2f}" for n, t, p in zip(names, target, probability)),
        fontsize=11, va="center", family="monospace")
    axes[2].imshow(maps[0, 0, 1], cmap="viridis")
    axes[2].set_title("3. Grad-CAM, layer 1b (rings)")
    axes[3].imshow(maps[0, 0, 7], cmap="viridis")
    axes[3].set_title("4. Grad-CAM, layer 4b (rings)")
    overlay = np.zeros((*truth.shape[1:], 3))
    overlay[..., 0] = masks[0]
    overlay[..., 2] = truth[0]
    axes[4].imshow(overlay)
    axes[4].set_title(f"5. rings: mask (red), truth (blue),\nboth (magenta): Dice {dice(masks[0], truth[0]):.2f}",
                      fontsize=10)
    for ax in axes[[0, 2, 3, 4]]:
        ax.axis("off")
    fig.suptitle("MICRA-Net: image-level labels in, pixel masks out (offline demo data)", fontsize=12)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=80)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
