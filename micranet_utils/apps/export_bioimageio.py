"""A trained MICRA-Net as a BioImage Model Zoo package (``micranet export-bioimageio``).

The package (bioimage.io model format 0.5, written with :mod:`bioimageio.spec`)
runs wherever that format runs: deepImageJ (Fiji), ilastik, napari (its
bioimage.io plug-ins), QuPath and ``bioimageio.core``. It holds:

* ``rdf.yaml``: the model description, with the recipe's constants, the
  classes and their thresholds under ``config.micranet``;
* ``micranet_maps.py`` and ``weights.pt``: the ``pytorch_state_dict`` weights
  (the zoo's state dict as stored) and their architecture, the file
  :mod:`micranet_utils.model.exported_maps`, which imports torch only;
* ``weights_torchscript.pt``: the same network scripted (``torch.jit.script``);
* ``test_input.npy``, ``test_output_maps.npy``, ``test_output_probabilities.npy``
  (and the same as ``sample_*.tif``);
* ``cover.png`` and ``README.md`` (the method, the model card, the licence and
  the citation).

The exported network's ``forward`` returns the recipe's combined map of every
class (steps 1-3 of :mod:`micranet_utils.analysis.recipes`) and the class
probabilities; the Grad-CAM gradients are back-propagated inside ``forward``
without autograd (see :mod:`micranet_utils.model.exported_maps`), so the runner
may disable gradients. The expected test outputs are computed with this
package's own :func:`~micranet_utils.model.gradcam.local_maps` and
:func:`~micranet_utils.analysis.recipes.score_maps`, not with the exported
network, so ``bioimageio test`` compares the export with the reference; before
anything is written, both weight formats are checked against it to 1e-5.

The package is written into a hidden folder beside `output` and renamed into
place at the end: `output` holds a complete package or is left as it was.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tifffile
import torch
from bioimageio.spec import __version__ as SPEC_VERSION
from bioimageio.spec import save_bioimageio_package_as_folder
from bioimageio.spec.model.v0_5 import (
    ArchitectureFromFileDescr, Author, AxisId, BatchAxis, BioimageioConfig, ChannelAxis, CiteEntry, ClipDescr, ClipKwargs, Config,
    Doi, FileDescr, Identifier, InputTensorDescr, IntervalOrRatioDataDescr, LicenseId, ModelDescr,
    OutputTensorDescr, ParameterizedSize, PytorchStateDictWeightsDescr, ReproducibilityTolerance, ScaleRangeDescr, ScaleRangeKwargs,
    SizeReference, SpaceInputAxis, SpaceOutputAxis, TensorId, TorchscriptWeightsDescr, Version, WeightsDescr)
from matplotlib.figure import Figure

from .. import __version__
from ..analysis.recipes import RECIPES, get_recipe, score_maps
from ..base.errors import ArgumentError, ZooError
from ..io.training_files import open_training_file
from ..io.zoo import load_zoo, model_settings
from ..model import exported_maps
from ..model.exported_maps import MicranetMaps
from ..model.gradcam import local_maps, original_settings, predicted

__all__ = ["export_bioimageio", "export_settings", "pixel_size_of", "channel_ids", "reference_outputs", "preprocess",
           "PAPER_DOI", "ARCHITECTURE_FILE", "TOLERANCE"]

PAPER_DOI = "10.1038/s42256-022-00472-w"
LICENSE = "GPL-3.0-or-later"
ARCHITECTURE_FILE = "micranet_maps.py"
"""str: the name of the architecture source inside the package."""
TOLERANCE = 1e-5
"""float: largest difference allowed between the exported network and the package's own maps."""
SCALE_RANGE = dict(min_percentile=1.0, max_percentile=99.8, eps=1e-6)
"""dict: the input preprocessing, as :func:`micranet_utils.io.images.normalize_intensity` (plus bioimageio's eps)."""
MIN_SIDE, SIDE_STEP = 32, 8
LIMITATIONS = """\
* **Image-level training, no pixel truth.** The maps show where the classifier found evidence
  for a class; they are not trained to match outlines. Their quality must be measured on
  images annotated by hand before the masks are trusted.
* **No mask without a "present" call.** A class the classifier misses gets no mask, however
  good its map; and a quantile threshold always returns pixels, so a false alarm gives a mask of
  false positives. Use `probabilities` with `config.micranet.class_thresholds` first.
* **Whole images only, no tiling.** The maps are normalised per image and the classifier pools
  globally; tiles would each be normalised on their own. Predict each image in one piece.
* **Same kind of images as the training data.** Other pixel sizes, stainings or microscopes
  change what the classifier sees; rescale to the training pixel size, or fine-tune.
* **No instance separation.** Touching structures of one class merge into one object.
* **The threshold (recipe step 4) is not in the network.** It is a prior (the quantile or
  Otsu's rule) that should be tuned on validation images and reported on test images.
"""


# -- settings --------------------------------------------------------------------------------------
def export_settings(params, recipe="actin", num_classes=None):
    """Keyword arguments of :class:`~micranet_utils.model.exported_maps.MicranetMaps` for a recipe.

    Parameters
    ----------
    params : dict
        trainer_params of the zoo (its ``class_thresholds`` are used for EM and P. vivax).
    recipe : str
        A name of :data:`~micranet_utils.analysis.recipes.RECIPES`.
    num_classes : int, optional
        Spreads a single threshold over the classes.

    Returns
    -------
    kwargs : dict
        ``normalize_layers, gate_foreground, normalize, sigma, strict, thresholds``.
    recipe : Recipe
    """
    r = get_recipe(recipe)
    settings = original_settings(r.name, params)
    thresholds = np.asarray(settings["thresholds"], float).reshape(-1).tolist()
    if len(thresholds) == 1 and num_classes:
        thresholds = thresholds * int(num_classes)
    return dict(normalize_layers=bool(settings["normalize"]), gate_foreground=bool(r.gate_foreground),
                normalize=bool(r.normalize), sigma=float(r.sigma), strict=bool(settings["strict"]),
                thresholds=thresholds), r


def pixel_size_of(params, pixel_size=None):
    """The training pixel size in nanometres, and where it was found.

    Looked up in this order: the explicit `pixel_size`; ``pixel_size_nm`` (or
    ``pixel_size``, taken as nanometres) in trainer_params; the root attribute
    ``pixel_size_nm`` of the training file trainer_params names
    (``hdf5_training_path``, when that file is still there: the demo data record it).

    Returns
    -------
    (float, str) or (None, None)
    """
    if pixel_size is not None:
        return float(pixel_size), "given with --pixel-size when exported"
    for key in ("pixel_size_nm", "pixel_size"):
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
            return float(value), f"trainer_params.{key}"
    training = params.get("hdf5_training_path")
    if isinstance(training, str) and Path(training).is_file():
        try:
            with open_training_file(training) as file:      # one root attribute: no dataset is read
                value = file.attrs.get("pixel_size_nm")
        except (OSError, ValueError):
            value = None
        if isinstance(value, (int, float, np.number)) and np.isfinite(value) and value > 0:
            return float(value), f"attribute pixel_size_nm of the training file {Path(training).name}"
    return None, None


def _check_zoo(path, model, params, pixel_size):
    """Class names, training size and pixel size of the zoo, or a one-line :class:`ZooError`."""
    names = params.get("class_names")
    if not names:
        raise ZooError(f"{path}: its classes have no names (no class_names in trainer_params); a bioimage.io "
                       "package names every output channel")
    if len(names) != model.num_classes:
        raise ZooError(f"{path}: trainer_params names {len(names)} classes ({', '.join(names)}) but the model has "
                       f"{model.num_classes}")
    if model_settings(params)["size"] is None:
        raise ZooError(f"{path}: no training crop size recorded (trainer_params.size); the model card needs it")
    value, source = pixel_size_of(params, pixel_size)
    if value is None:
        raise ZooError(f"{path}: no pixel size recorded (trainer_params.pixel_size_nm, or the training file's "
                       "pixel_size_nm attribute); give the training pixel size with --pixel-size NM")
    return [str(n) for n in names], value, source


def _check_output(output, overwrite):
    """Refuse an output that is a file, a folder of other files, or a package without `overwrite`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ArgumentError(f"{output}: exists and is not a folder")
    if output.is_dir():
        entries = list(output.iterdir())
        if (output / "rdf.yaml").exists():
            if not overwrite:
                raise ArgumentError(f"{output}: already holds a bioimage.io package (rdf.yaml); use --overwrite "
                                    "(overwrite=True) to replace it, or another folder")
        elif entries:
            raise ArgumentError(f"{output}: is not empty and holds no package (no rdf.yaml); choose an empty or "
                                "new folder")
    return output


# -- the reference ---------------------------------------------------------------------------------
def preprocess(raw):
    """What the package's preprocessing does to (B, C, H, W): per image and channel, percentiles 1 and
    99.8 to 0 and 1 (bioimageio ``scale_range`` with its eps), then clipped to [0, 1]."""
    raw = np.asarray(raw, np.float32)
    out = np.empty_like(raw)
    for b in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            low, high = np.percentile(raw[b, c].astype(np.float64),
                                      [SCALE_RANGE["min_percentile"], SCALE_RANGE["max_percentile"]])
            out[b, c] = np.clip((raw[b, c] - low) / (high - low + SCALE_RANGE["eps"]), 0.0, 1.0)
    return out


def reference_outputs(model, images, recipe, normalize_layers, only_predicted=False, thresholds=0.5, strict=True):
    """What the exported network must return, computed with the package's own functions.

    :func:`~micranet_utils.model.gradcam.local_maps` then
    :func:`~micranet_utils.analysis.recipes.score_maps` for every class (or only
    the predicted ones), and the sigmoid of the logits.

    Returns
    -------
    maps : ndarray of float32, (B, C, H, W)
    probabilities : ndarray of float32, (B, C)
    """
    r = get_recipe(recipe)
    layer_maps, logits = local_maps(model, images, normalize=normalize_layers)
    chosen = predicted(logits, thresholds, strict=strict) if only_predicted else np.ones(logits.shape, bool)
    maps = score_maps(layer_maps, chosen, images if r.gate_foreground else None, r)
    probabilities = torch.sigmoid(torch.from_numpy(logits)).numpy()
    return maps.astype(np.float32), probabilities.astype(np.float32)


def _synthetic_image(channels, size, seed=0):
    """A raw 12-bit-like test image: blurred bright spots and lines on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    image = np.zeros((channels, size, size))
    for c in range(channels):
        for _ in range(6):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(2, size / 10)]
            image[c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        for _ in range(3):
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-size / 3, size / 3)
            distance = (yy - size / 2) * np.cos(angle) - (xx - size / 2) * np.sin(angle) - offset
            image[c] += 0.7 * np.exp(-distance ** 2 / 4.0)
        image[c] += 0.05 * rng.standard_normal((size, size))
    image -= image.min()
    return (100.0 + 3900.0 * image / image.max())[None].astype(np.float32)


def _read_test_image(path):
    """A TIFF or .npy test image, (H, W) or (C, H, W)."""
    if not path.is_file():
        raise ArgumentError(f"{path}: no such test image file")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
    except (OSError, ValueError) as err:
        raise ArgumentError(f"{path}: cannot read the test image ({err})") from None
    raise ArgumentError(f"{path}: the test image must be a .tif, .tiff or .npy file")


def _test_image(test_image, channels, size):
    """The raw test image (1, C, H, W): a file, an array, or a synthetic image of side `size`."""
    if test_image is None:
        return _synthetic_image(channels, size)
    if isinstance(test_image, (str, os.PathLike)):
        test_image = _read_test_image(Path(test_image))
    image = np.asarray(test_image, np.float32)
    image = image[None, None] if image.ndim == 2 else (image[None] if image.ndim == 3 else image)
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] != channels:
        raise ArgumentError(f"test image: expected {channels} channel(s), (C, H, W) or (H, W); got shape "
                            f"{np.shape(test_image)}")
    height, width = image.shape[2:]
    if min(height, width) < MIN_SIDE:
        raise ArgumentError(f"test image: {height} x {width} pixels, smaller than {MIN_SIDE}")
    # the rdf's input sizes are MIN_SIDE + k * SIDE_STEP: crop to the largest such size
    height, width = [MIN_SIDE + (s - MIN_SIDE) // SIDE_STEP * SIDE_STEP for s in (height, width)]
    return np.ascontiguousarray(image[:, :, :height, :width])


# -- the files -------------------------------------------------------------------------------------
def _cover(path, image, maps, class_names):
    """cover.png, 2:1: the input, then the map of each class (at most three)."""
    shown = min(3, maps.shape[1])
    fig = Figure(figsize=(6, 3), dpi=100)
    axes = fig.subplots(1, 1 + shown, squeeze=False)[0]
    axes[0].imshow(image[0].mean(axis=0), cmap="gray")
    axes[0].set_title("input", fontsize=9)
    for j in range(shown):
        axes[j + 1].imshow(maps[0, j], cmap="magma")
        axes[j + 1].set_title(f"map: {class_names[j]}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)


def _scores_text(params):
    """The model card's scores: ``trainer_params.test_scores`` when recorded, else a plain statement."""
    scores = params.get("test_scores")
    if not isinstance(scores, dict) or not scores:
        return ("Not recorded. This model file holds no measured test scores (no `test_scores` in its "
                "trainer_params), so none are given here. Lesson 05 of the tutorial measures Dice, "
                "detection F1 and counts against pixel truth on the demo test split; record them with "
                "their intervals (trainer_params `test_scores`: {measure: {value, low, high}}) and "
                "export again before publishing this package.")
    lines = ["| measure | value | interval |", "|---|---|---|"]
    for name, value in sorted(scores.items()):
        if isinstance(value, dict):
            low, high = value.get("low"), value.get("high")
            interval = f"[{low}, {high}]" if low is not None and high is not None else "not recorded"
            lines.append(f"| {name} | {value.get('value')} | {interval} |")
        else:
            lines.append(f"| {name} | {value} | not recorded |")
    where = params.get("test_split", "the test split recorded with the model")
    return f"Measured on {where} (`trainer_params.test_scores`):\n\n" + "\n".join(lines)


def _training_text(params, size, pixel_size, pixel_source):
    """The model card's training-data paragraph, from trainer_params."""
    training = params.get("hdf5_training_path")
    validation = params.get("hdf5_validation_path")
    crops = params.get("num_crops") or {}
    lines = [f"* training file: `{Path(training).name if training else 'not recorded'}`"
             + (f", validation file: `{Path(validation).name}`" if validation else ""),
             f"* crops of {size} x {size} pixels"
             + (f" ({crops.get('training')} training, {crops.get('validation')} validation)" if crops else ""),
             f"* pixel size: {pixel_size:g} nm ({pixel_source})",
             f"* labels: image level only (one yes/no per class and crop), no pixel annotation"]
    if params.get("demo_model_version") is not None or "demo" in str(training or ""):
        lines.append("* the tutorial's synthetic demo data (STED-like F-actin images of rings and fibers, "
                     "made by `micranet demo-data`)")
    run = {k: params[k] for k in ("epochs", "seed", "lr", "pos_weight", "best_epoch", "best_valid_loss",
                                 "model_name") if k in params}
    if run:
        lines.append("* training run: " + ", ".join(f"{k} = {v}" for k, v in run.items()))
    return "\n".join(lines)


def _readme(*, name, recipe, kwargs, class_names, params, size, pixel_size, pixel_source, in_channels):
    """README.md: the method, the outputs, the model card, the validation, the licence and the citation."""
    comparison = ">" if kwargs["strict"] else ">="
    thresholds = ", ".join(f"{c}: {t:g}" for c, t in zip(class_names, kwargs["thresholds"]))
    gate = "4b > 0" + (" and image foreground" if kwargs["gate_foreground"] else "")
    return f"""# {name}

MICRA-Net (Bilodeau et al., *Nature Machine Intelligence* 4, 455-466, 2022,
doi:[{PAPER_DOI}](https://doi.org/{PAPER_DOI})) is a small VGG-like classifier trained
with image-level labels only. Its Grad-CAM maps, taken at all eight convolution layers
and combined, segment the structures it recognises.

## What the model computes

Input `raw` (batch, {in_channels} channel(s), y, x), any size with y, x = 32 + 8k. The
preprocessing written in `rdf.yaml` maps each image's 1st and 99.8th intensity
percentiles to 0 and 1 and clips to [0, 1].

Inside `forward`, for every class:

1. the classifier's logits; output **`probabilities`** (batch, class) = sigmoid(logits);
2. Grad-CAM at the 8 layers 1a ... 4b: the gradient of the class logit, its spatial mean as
   channel weights, the weighted sum of the activations (ReLU for 4b only),
   {'min-max normalised per map' if kwargs['normalize_layers'] else 'not normalised'}, upsampled
   to the image by repetition;
3. recipe **{recipe.name}**, steps 1-3: the first principal component of the seven maps 1a-4a,
   oriented so that the 4b-weighted sum is positive,
   {'min-max normalised over the gate (' + gate + ')' if kwargs['normalize'] else 'not normalised'},
   {'smoothed with a Gaussian (sigma ' + format(kwargs['sigma'], 'g') + ' px)' if kwargs['sigma'] > 0 else 'not smoothed'};
   zero where the gate is empty. Output **`maps`** (batch, class, y, x).

The gradients are back-propagated inside `forward` by hand, with the same kernels autograd
uses (no autograd), so the model runs where the runner disables gradients
(`torch.no_grad()`, `torch.inference_mode()`, TorchScript in deepImageJ or QuPath).

## From maps to masks (not in the network)

A class is present when its probability is {comparison} its threshold ({thresholds};
`config.micranet.class_thresholds`). Step 4 of the recipe, `threshold: {recipe.threshold}`
(constants in `config.micranet.recipe`), turns a map into a mask: for `quantile`, keep the
pixels above the map's {recipe.quantile:g} quantile. `micranet predict` in the
[tutorial package](https://github.com/micranet-tutorial/micranet-tutorial) does all four steps.

## Model card

**Classes:** {', '.join(class_names)}.

**Training data:**

{_training_text(params, size, pixel_size, pixel_source)}

**Thresholds:** {thresholds} (probability {comparison} threshold).

**Measured scores:** {_scores_text(params)}

**What the method cannot do:**

{LIMITATIONS}
## Validation

The test outputs in this package were computed with the tutorial's reference code
(`micranet_utils.model.gradcam.local_maps` and `micranet_utils.analysis.recipes.score_maps`),
not with the exported network. The exporter checked that both weight formats reproduce them
within {TOLERANCE:g}; `bioimageio test rdf.yaml` checks it again.

## Where to run it

deepImageJ (Fiji), ilastik (its neural-network workflow), napari (its bioimage.io plug-ins),
QuPath and Python (`bioimageio.core`) read this package. Use the `torchscript` weights
where only TorchScript is available (deepImageJ, QuPath).

## Licence and citation

{LICENSE}, as the MICRA-Net original and the tutorial. Please cite:
A. Bilodeau et al., "Microscopy analysis neural network to solve detection, enumeration
and segmentation from image-level annotations", *Nature Machine Intelligence* 4, 455-466
(2022), https://doi.org/{PAPER_DOI}
"""


def _check_against_reference(outputs):
    for label, got, want in outputs:
        diff = float(np.abs(got.detach().cpu().numpy() - want).max())
        if not diff <= TOLERANCE:
            raise RuntimeError(f"export check failed: {label} differ from micranet_utils by {diff:.2e} "
                               f"(> {TOLERANCE:g})")


def channel_ids(names):
    """bioimage.io channel names (identifiers) for class names: ``"F-actin rings"`` -> ``"F_actin_rings"``.

    The class names themselves stay in ``config.micranet.class_names`` and the README.
    """
    ids = []
    for j, name in enumerate(names):
        word = re.sub(r"\W+", "_", str(name)).strip("_")
        word = f"c_{word}" if word[:1].isdigit() else word
        ids.append(word if word.isidentifier() and word not in ids else f"class{j}")
    return ids


def _describe(staging, *, name, description, kwargs, recipe, class_names, in_channels, pixel_size, config):
    """The :class:`ModelDescr` of the staged files."""
    space = ParameterizedSize(min=MIN_SIDE, step=SIDE_STEP)
    raw = TensorId("raw")
    channels = [Identifier(f"channel{j}") for j in range(in_channels)]
    classes = [Identifier(c) for c in channel_ids(class_names)]
    scale = dict(unit="nanometer", scale=float(pixel_size))
    inputs = [InputTensorDescr(
        id=raw, description="raw image; its percentiles 1 and 99.8 are mapped to 0 and 1 by the preprocessing",
        axes=[BatchAxis(), ChannelAxis(channel_names=channels),
              SpaceInputAxis(id=AxisId("y"), size=space, **scale), SpaceInputAxis(id=AxisId("x"), size=space, **scale)],
        test_tensor=FileDescr(source=staging / "test_input.npy"),
        sample_tensor=FileDescr(source=staging / "sample_input.tif"),
        data=IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[ScaleRangeDescr(kwargs=ScaleRangeKwargs(axes=[AxisId("y"), AxisId("x")], **SCALE_RANGE)),
                       ClipDescr(kwargs=ClipKwargs(min=0.0, max=1.0))])]
    outputs = [
        OutputTensorDescr(
            id=TensorId("maps"), description=f"recipe '{recipe.name}' combined Grad-CAM map of every class",
            axes=[BatchAxis(), ChannelAxis(channel_names=classes),
                  SpaceOutputAxis(id=AxisId("y"), size=SizeReference(tensor_id=raw, axis_id=AxisId("y")), **scale),
                  SpaceOutputAxis(id=AxisId("x"), size=SizeReference(tensor_id=raw, axis_id=AxisId("x")), **scale)],
            test_tensor=FileDescr(source=staging / "test_output_maps.npy"),
            sample_tensor=FileDescr(source=staging / "sample_output_maps.tif"),
            data=IntervalOrRatioDataDescr(type="float32")),
        OutputTensorDescr(
            id=TensorId("probabilities"), description="classifier probability of every class (sigmoid of the logit)",
            axes=[BatchAxis(), ChannelAxis(channel_names=classes)],
            test_tensor=FileDescr(source=staging / "test_output_probabilities.npy"),
            sample_tensor=FileDescr(source=staging / "sample_output_probabilities.tif"),
            data=IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))]
    torch_version = Version(torch.__version__.split("+")[0])
    weights = WeightsDescr(
        pytorch_state_dict=PytorchStateDictWeightsDescr(
            source=staging / "weights.pt", pytorch_version=torch_version,
            architecture=ArchitectureFromFileDescr(source=staging / ARCHITECTURE_FILE,
                                                   callable=Identifier("MicranetMaps"), kwargs=kwargs)),
        torchscript=TorchscriptWeightsDescr(source=staging / "weights_torchscript.pt", pytorch_version=torch_version,
                                            parent="pytorch_state_dict"))
    return ModelDescr(
        name=name, description=description,
        authors=[Author(name="MICRA-Net tutorial contributors")],
        cite=[CiteEntry(text="Bilodeau et al., Microscopy analysis neural network to solve detection, enumeration "
                             "and segmentation from image-level annotations, Nature Machine Intelligence (2022)",
                        doi=Doi(PAPER_DOI))],
        license=LicenseId(LICENSE),
        documentation=FileDescr(source=staging / "README.md"),
        covers=[FileDescr(source=staging / "cover.png")],
        tags=["micra-net", "grad-cam", "weakly-supervised", "segmentation", "pytorch", "2d", "microscopy"],
        inputs=inputs, outputs=outputs, weights=weights, config=config)


def _stage(staging, *, zoo, model, params, recipe, kwargs, class_names, pixel_size, pixel_source, name,
           test_image, size):
    """Write every file of the package into `staging`; return its :class:`ModelDescr`."""
    net = MicranetMaps(num_classes=model.num_classes, in_channels=model.in_channels, **kwargs)
    net.load_state_dict(model.state_dict(), strict=True)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)           # "torch.jit.script is deprecated" (torch 2.14)
        scripted = torch.jit.script(net)
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, staging / "weights.pt")
    scripted.save(str(staging / "weights_torchscript.pt"))
    shutil.copyfile(exported_maps.__file__, staging / ARCHITECTURE_FILE)

    raw = _test_image(test_image, model.in_channels, size)
    image = preprocess(raw)
    maps, probabilities = reference_outputs(model, image, recipe, kwargs["normalize_layers"])
    with torch.no_grad():
        eager = net(torch.from_numpy(image))
        script = scripted(torch.from_numpy(image))
    _check_against_reference([("eager maps", eager[0], maps), ("eager probabilities", eager[1], probabilities),
                              ("torchscript maps", script[0], maps),
                              ("torchscript probabilities", script[1], probabilities)])
    for stem, array in (("input", raw), ("output_maps", maps), ("output_probabilities", probabilities)):
        np.save(staging / f"test_{stem}.npy", array)
        tifffile.imwrite(staging / f"sample_{stem}.tif", array)
    _cover(staging / "cover.png", image, maps, class_names)
    train_size = model_settings(params)["size"]
    (staging / "README.md").write_text(_readme(
        name=name, recipe=recipe, kwargs=kwargs, class_names=class_names, params=params, size=train_size,
        pixel_size=pixel_size, pixel_source=pixel_source, in_channels=model.in_channels), encoding="utf-8")
    # `bioimageio test` then checks the reproduced outputs to TOLERANCE, not its default 1e-3
    tolerance = ReproducibilityTolerance(absolute_tolerance=TOLERANCE, relative_tolerance=0.0,
                                         mismatched_elements_per_million=0)
    config = Config(bioimageio=BioimageioConfig(reproducibility_tolerance=[tolerance]), micranet={
        "recipe": dataclasses.asdict(recipe),
        "class_names": class_names,
        "class_thresholds": kwargs["thresholds"],
        "threshold_comparison": ">" if kwargs["strict"] else ">=",
        "gradcam": {"layers": ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b"],
                    "normalize_layers": kwargs["normalize_layers"], "relu_layers": ["4b"]},
        "pixel_size_nm": pixel_size, "pixel_size_source": pixel_source, "training_size": train_size,
        "tiling": "not supported: maps are normalised per image and the classifier pools globally",
        "test_scores": params.get("test_scores") or "not recorded",
        "source_zoo": Path(zoo).name,
        "trainer_params": json.loads(json.dumps(params, default=str)),
        "exported_with": {"micranet_utils": __version__, "bioimageio.spec": SPEC_VERSION, "torch": torch.__version__},
    })
    description = (f"MICRA-Net trained with image-level labels ({', '.join(class_names)}): the '{recipe.name}' "
                   "recipe's combined Grad-CAM map of every class, and the class probabilities.")
    return _describe(staging, name=name, description=description, kwargs=dict(
        num_classes=model.num_classes, in_channels=model.in_channels, **kwargs), recipe=recipe,
        class_names=class_names, in_channels=model.in_channels, pixel_size=pixel_size, config=config)


def export_bioimageio(zoo, output, *, name=None, group=None, recipe="actin", pixel_size=None, title=None,
                      test_image=None, size=128, overwrite=False):
    """Write the bioimage.io package of a MICRA-Net model zoo; return the path of its ``rdf.yaml``.

    Parameters
    ----------
    zoo : str or Path
        ModelZoo HDF5 file; its trainer_params must name the classes
        (``class_names``) and give the training crop size (``size``).
    output : str or Path
        Package folder: new, empty, or (with `overwrite`) a package to replace.
    name, group : str, optional
        The model inside the zoo, as in :func:`~micranet_utils.io.zoo.load_zoo`.
    recipe : str
        The recipe whose combined map the network returns (``actin``, ``ctc``, ``em``, ``pvivax``, ``mnist``).
    pixel_size : float, optional
        Training pixel size in nm, when the zoo does not record it (see :func:`pixel_size_of`).
    title : str, optional
        The package's name (default ``"MICRA-Net <recipe> (<zoo file stem>)"``).
    test_image : str, Path or ndarray, optional
        The raw test and cover image, (C, H, W) or (H, W), as an array or a .tif/.npy file; cropped
        to the sizes the package accepts (32 + 8k). Default: a synthetic 12-bit image of side `size`.
    size : int
        Side of the synthetic test image (a multiple of 8, at least 32).
    overwrite : bool
        Replace a package already in `output`.

    Returns
    -------
    Path
        ``output / "rdf.yaml"``.

    Raises
    ------
    ZooError
        Unreadable zoo, or no class names, training size or pixel size.
    ArgumentError
        Bad recipe, size or test image; `output` holds a package (without `overwrite`) or other files.
    """
    if str(recipe).lower() not in RECIPES:
        raise ArgumentError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if pixel_size is not None and not (np.isfinite(float(pixel_size)) and float(pixel_size) > 0):
        raise ArgumentError(f"pixel size must be a positive number of nm; got {pixel_size}")
    if int(size) < MIN_SIDE or int(size) % SIDE_STEP:
        raise ArgumentError(f"size must be a multiple of {SIDE_STEP} of at least {MIN_SIDE}; got {size}")
    output = _check_output(output, overwrite)
    model, params = load_zoo(zoo, name=name, group=group)
    class_names, pixel_nm, pixel_source = _check_zoo(zoo, model, params, pixel_size)
    kwargs, r = export_settings(params, recipe, model.num_classes)
    title = title or f"MICRA-Net {r.name} ({Path(zoo).stem})"

    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="micranet-export-") as staging:
            descr = _stage(Path(staging), zoo=zoo, model=model, params=params, recipe=r, kwargs=kwargs,
                           class_names=class_names, pixel_size=pixel_nm, pixel_source=pixel_source, name=title,
                           test_image=test_image, size=int(size))
            save_bioimageio_package_as_folder(descr, output_path=work)
        _move_into_place(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return output / "rdf.yaml"


def _move_into_place(work, output):
    """Rename the finished package `work` to `output`; an old package there is removed only afterwards."""
    os.chmod(work, 0o755)                            # mkdtemp makes it private
    if output.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, old / output.name)
        try:
            os.replace(work, output)
        except OSError:
            os.replace(old / output.name, output)
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, output)
