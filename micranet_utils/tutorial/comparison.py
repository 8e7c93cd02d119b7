"""MICRA-Net against its baselines, measured the same way on the same test crops.

Every method produces one binary mask per crop and class; the masks are scored
against the pixel truth of the test split with the same functions
(:mod:`micranet_utils.analysis.metrics`):

* Dice and IoU per class, pixels pooled over all test crops;
* detection F1 per class: the connected components of a mask are matched to
  the true objects (instance ids of the label channels) by their centroids,
  at most ``max_distance`` pixels apart;
* count error per class: mean absolute difference between the number of
  components and the number of true objects per crop.

What each method needed for training is reported next to its scores, in the
unit an annotator pays: one yes/no answer per crop and class (MICRA-Net),
every pixel of every training image outlined per class (U-Net, Mask R-CNN),
nothing (Otsu).
"""

import json
from pathlib import Path

import numpy as np

from ..analysis.detection import detect
from ..analysis.metrics import count_error, detection_scores, pixel_scores
from ..analysis.recipes import segment
from ..base.files import atomic_path
from ..io.training_files import CropDataset, open_training_file
from ..model.gradcam import local_maps, predicted


METHODS = {
    "micranet": {"title": "MICRA-Net", "supervision": "image-level"},
    "unet": {"title": "U-Net", "supervision": "pixel"},
    "maskrcnn": {"title": "Mask R-CNN", "supervision": "pixel (instances)"},
    "otsu": {"title": "Otsu", "supervision": "none"},
}
"""dict: the compared methods, their display names and the supervision they need."""


def load_test_crops(path, size=128, step=1.0, foreground_fraction=0.1, max_crops=None):
    """All test crops of a published-layout file, with their pixel and instance truth.

    Parameters
    ----------
    path : str or Path
        The test split (e.g. ``ensure_demo()["testing"]``).
    size : int
        Crop side; the same as the models were trained on.
    step : float
        Stride as a fraction of `size`; 1.0 (no overlap) counts every pixel once.
    foreground_fraction : float
        The crop rule of training (crops mostly outside the dendrites are skipped).
    max_crops : int, optional
        Keep at most this many crops, evenly spaced over the file (for large published splits).

    Returns
    -------
    dict
        ``images`` float32 (N, 1, S, S); ``labels`` int32 (N, C, S, S) instance
        ids (0 = none); ``masks`` bool (N, C, S, S) = labels > 0; ``class_names``.
    """
    crops = CropDataset(path, size=size, step=step, foreground_fraction=foreground_fraction)
    indices = np.arange(len(crops))
    if max_crops is not None and len(crops) > max_crops:
        indices = np.linspace(0, len(crops) - 1, int(max_crops)).round().astype(int)
    images, labels = [], []
    for index in indices:
        image, label = crops.read_crop(index)
        images.append(image[None])
        labels.append(label)
    crops.close()
    labels = np.asarray(labels, dtype=np.int32).reshape(len(labels), crops.num_classes, size, size)
    return {"images": np.asarray(images, dtype=np.float32).reshape(len(images), 1, size, size),
            "labels": labels, "masks": labels > 0, "class_names": tuple(crops.class_names)}


def micranet_maps(model, images):
    """Grad-CAM maps of the eight layers and the classes predicted present.

    Returns
    -------
    maps : ndarray of float32, shape (N, C, 8, S, S)
    present : ndarray of bool, shape (N, C)
    """

    maps, logits = local_maps(model, images)
    return maps, predicted(logits)


def micranet_segment(maps, present, images, threshold=0.8, sigma=1.0, recipe="actin"):
    """Masks from MICRA-Net's maps: the recipe's combined map, then a per-crop threshold.

    Parameters
    ----------
    maps : ndarray of float32, shape (N, C, 8, S, S)
    present : ndarray of bool, shape (N, C)
    images : ndarray, shape (N, 1, S, S)
    threshold : float or "otsu"
        A quantile of each crop's combined map (the published Actin rule: 0.8, i.e.
        the top 20 % of the crop), or ``"otsu"``: Otsu's threshold of each crop's
        combined map (the recipes' ``threshold="otsu"`` option, see
        :mod:`micranet_utils.analysis.recipes`), which adapts the mask's size to the crop.
    sigma : float
        Gaussian smoothing of the combined map (published: 1).
    recipe : str

    Returns
    -------
    ndarray of bool, shape (N, C, S, S)
        Empty for the classes predicted absent.
    """
    rule = {"threshold": "otsu"} if threshold == "otsu" else {"quantile": float(threshold)}
    return segment(maps, present, images, recipe, sigma=float(sigma), **rule)


def micranet_masks(model, images, threshold=0.8, sigma=1.0, recipe="actin"):
    """MICRA-Net's masks: Grad-CAM of the eight layers, the recipe's combined map, a threshold.

    Parameters
    ----------
    model : MICRANet
    images : ndarray of float32, shape (N, 1, S, S)
    threshold, sigma, recipe
        See :func:`micranet_segment`; choose them on the validation split
        (:func:`choose_recipe`), never on the test split.

    Returns
    -------
    masks : ndarray of bool, shape (N, C, S, S)
    present : ndarray of bool, shape (N, C)
        Classes the classifier predicts present (the others get empty masks).
    """
    maps, present = micranet_maps(model, images)
    return micranet_segment(maps, present, images, threshold, sigma, recipe), present


def choose_recipe(maps, present, images, truth, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9, "otsu"),
                  sigmas=(1.0, 2.0, 4.0), recipe="actin"):
    """The threshold and smoothing with the best mean Dice over classes, on *validation* crops.

    The published rule (quantile 0.8, sigma 1) was set on the authors' STED images; on other
    data (crop size, structure density) it is chosen again, here on validation crops.

    Parameters
    ----------
    maps, present : from :func:`micranet_maps` on the validation crops
    images : ndarray, shape (N, 1, S, S)
    truth : ndarray of bool, shape (N, C, S, S)
        Pixel truth of the validation crops.
    thresholds : sequence of float or "otsu"
        Quantiles, and ``"otsu"`` (see :func:`micranet_segment`).
    sigmas : sequence of float
    recipe : str

    Returns
    -------
    best : dict
        ``{"threshold": q or "otsu", "sigma": s}``, the arguments of :func:`micranet_segment`.
    dice : dict of (threshold, sigma) to ndarray, shape (C,)
        Validation Dice per class for every pair tried.
    """
    dice = {}
    for sigma in sigmas:
        for threshold in thresholds:
            threshold = threshold if threshold == "otsu" else float(threshold)
            masks = micranet_segment(maps, present, images, threshold, float(sigma), recipe)
            dice[(threshold, float(sigma))] = pixel_scores(masks, truth)["dice"]
    threshold, sigma = max(dice, key=lambda key: float(np.mean(dice[key])))
    return {"threshold": threshold, "sigma": sigma}, dice


def choose_threshold(make_masks, truth, thresholds):
    """The threshold whose masks have the best mean Dice over classes, on *validation* crops.

    Parameters
    ----------
    make_masks : callable
        ``make_masks(threshold) -> ndarray of bool, shape (N, C, S, S)``, e.g.
        ``lambda t: unet_probabilities >= t``.
    truth : ndarray of bool, shape (N, C, S, S)
    thresholds : sequence of float

    Returns
    -------
    best : float
    dice : dict of float to ndarray, shape (C,)
    """
    dice = {float(t): pixel_scores(make_masks(float(t)), truth)["dice"] for t in thresholds}
    return max(dice, key=lambda t: float(np.mean(dice[t]))), dice


def run_seconds(run_dir):
    """Training time of a :func:`micranet_utils.train.runs.train` run: the sum of its epochs' seconds.

    Returns
    -------
    float or None
        None when the run folder has no ``history.csv``.
    """
    import csv

    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        return float(sum(float(row["seconds"]) for row in csv.DictReader(handle)))


def true_centroids(labels):
    """Centroid of every labelled object, per crop and class.

    Parameters
    ----------
    labels : ndarray of int, shape (N, C, H, W)
        Instance ids, 0 = background.

    Returns
    -------
    list (N) of list (C) of ndarray of float, shape (K, 2)
        (row, column) centroids.
    """
    out = []
    for crop in np.asarray(labels):
        per_class = []
        for plane in crop:
            ids, inverse = np.unique(plane, return_inverse=True)
            inverse = inverse.reshape(plane.shape)
            rows, cols = np.indices(plane.shape)
            area = np.bincount(inverse.ravel(), minlength=len(ids))
            centroids = np.stack([np.bincount(inverse.ravel(), rows.ravel(), len(ids)),
                                  np.bincount(inverse.ravel(), cols.ravel(), len(ids))], axis=1)
            centroids = centroids / np.maximum(area, 1)[:, None]
            per_class.append(centroids[ids != 0])
        out.append(per_class)
    return out


def score_masks(masks, test, max_distance=16.0, min_area=16):
    """Pixel, detection and counting scores of one method's masks on the test crops.

    Parameters
    ----------
    masks : ndarray of bool, shape (N, C, S, S)
        The method's masks, in the order of ``test["images"]``.
    test : dict
        From :func:`load_test_crops`.
    max_distance : float
        Detection matching distance in pixels.
    min_area : int
        Predicted components smaller than this are ignored for detection and
        counting (speckle, not objects).

    Returns
    -------
    dict
        ``dice``, ``iou``, ``precision``, ``recall``, ``detection_f1`` and
        ``count_error`` (mean absolute error per crop): each a dict class name -> float.
    """
    masks = np.asarray(masks, bool)
    if masks.shape != test["masks"].shape:
        raise ValueError(f"masks have shape {masks.shape}, the test truth {test['masks'].shape}")
    names = test["class_names"]
    pixels = pixel_scores(masks, test["masks"])
    found = detect(masks, min_area=min_area)
    truth = true_centroids(test["labels"])
    result = {key: {name: float(pixels[key][c]) for c, name in enumerate(names)}
              for key in ("dice", "iou", "precision", "recall")}
    result["detection_f1"], result["count_error"] = {}, {}
    for c, name in enumerate(names):
        predicted_points = [image[c].centroids for image in found]
        true_points = [image[c] for image in truth]
        result["detection_f1"][name] = float(
            detection_scores(predicted_points, true_points, max_distance)["f1"])
        result["count_error"][name] = float(count_error(
            [len(p) for p in predicted_points], [len(t) for t in true_points])["absolute"])
    return result


def annotation_cost(training_path, size=128, step=0.75, foreground_fraction=0.1):
    """What each kind of supervision asks of an annotator, for one training file.

    Returns
    -------
    dict
        ``crops``: training crops; ``image_labels``: yes/no answers (crops x
        classes) for image-level supervision; ``images`` and ``pixels``: training
        images and the pixels to decide for every class (images x H x W x
        classes) for pixel supervision; ``objects``: instances to outline.
    """
    crops = CropDataset(training_path, size=size, step=step, foreground_fraction=foreground_fraction)
    images = pixels = objects = 0
    with open_training_file(training_path) as file:
        for group in file.values():
            label = group["label"]
            shapes = np.asarray(label.attrs.get("shapes", np.tile(label.shape[-2:], (label.shape[0], 1))))
            images += label.shape[0]
            pixels += int(np.prod(shapes, axis=1).sum()) * crops.num_classes
            for k in range(label.shape[0]):
                for plane in label[k, :-1]:
                    objects += len(np.unique(plane)) - 1
    return {"crops": len(crops), "image_labels": len(crops) * crops.num_classes,
            "images": images, "pixels": pixels, "objects": objects}


def comparison_entry(scores, train_seconds, supervision, annotations):
    """One method's entry of the comparison dict (JSON-serialisable)."""
    entry = {"supervision": supervision, "train_seconds": None if train_seconds is None
             else round(float(train_seconds), 1), "annotations": annotations}
    for key, values in scores.items():
        entry[key] = {name: round(float(value), 4) for name, value in values.items()}
    return entry


def format_table(comparison, class_names=("rings", "fibers")):
    """The comparison as a Markdown table (one row per method).

    Parameters
    ----------
    comparison : dict
        method -> entry (see :func:`comparison_entry`).

    Returns
    -------
    str
    """
    header = ["method", "supervision", "annotation", "train s"]
    for key in ("dice", "iou", "detection_f1", "count_error"):
        header += [f"{key.replace('_', ' ')} {name}" for name in class_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, entry in comparison.items():
        title = METHODS.get(method, {"title": method})["title"]
        seconds = "-" if entry.get("train_seconds") is None else f"{entry['train_seconds']:.0f}"
        row = [title, entry["supervision"], str(entry.get("annotations", "-")), seconds]
        for key in ("dice", "iou", "detection_f1", "count_error"):
            values = entry.get(key, {})
            row += [f"{values[name]:.2f}" if name in values else "-" for name in class_names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_comparison(comparison, metric="dice", class_names=("rings", "fibers"), ax=None):
    """Grouped bars: `metric` per class (groups) and method (bars).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    methods = list(comparison)
    width = 0.8 / max(len(methods), 1)
    for m, method in enumerate(methods):
        values = [comparison[method].get(metric, {}).get(name, np.nan) for name in class_names]
        x = np.arange(len(class_names)) + (m - (len(methods) - 1) / 2) * width
        bars = ax.bar(x, values, width, label=METHODS.get(method, {"title": method})["title"])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(class_names)), class_names)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, ncols=len(methods), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return ax


def write_comparison(comparison, path, key=None):
    """Write the comparison dict to the JSON file `path` (atomically).

    Parameters
    ----------
    comparison : dict
        method -> entry, e.g. ``{"micranet": {"dice": {"rings": .., "fibers": ..}, ...}, ...}``.
    path : str or Path
    key : str, optional
        ``None``: the file holds the comparison itself (``work_dir() / "comparison.json"``,
        which the tutorial runner copies into ``outputs/summary.json``). A key such as
        ``"comparison"``: merged under that key into an existing JSON file, whose other
        keys are kept.

    Returns
    -------
    Path
    """
    path = Path(path)
    data = comparison
    if key is not None:
        data = json.loads(path.read_text()) if path.is_file() else {}
        data[key] = comparison
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
