"""Fold ensembles: several models of one zoo group, their combined maps averaged.

The published P. vivax zoo (``PVivaxModelZoo.hdf5``) keeps, in its group
``MICRANet-finetuned``, one model per fold of a cross-validation::

    MICRANet-finetuned
    ├── attrs["trainer_params"], attrs["class_thresholds"]   shared by the folds
    └── <model name>
        ├── <fold>          one group of weights per fold, named "MODEL/FOLD" here
        └── ...

(``MICRANet-naive`` holds one model whose weights sit directly under its name.)
:func:`load_ensemble` loads every fold; :func:`ensemble_segment` segments one
image with all of them; ``micranet predict`` uses both when the chosen group
holds folds and ``--name`` does not pick one.

What the original does with the folds
-------------------------------------
``src/PVivax/predict.py`` (``Predicter.predict``, lines 61-76) and ``gradCAM.py``:

1. every fold computes its own Grad-CAM maps, *not* min-max normalised, and
   its probabilities; a class is present **for that fold** when its probability
   is ``>= class_thresholds`` (predict.py l. 67-68);
2. for each class *that fold* calls present, the fold's combined map: the PCA7
   scores smoothed with sigma 3; the classes it calls absent stay all-zero
   (``gradCAM.segment_cam``, l. 79-95);
3. the maps are summed over the folds and divided by the **number of folds**
   (predict.py l. 61, 73, 75): a class found by only some folds is averaged
   with the zeros of the others, so it is kept, with a weaker map;
4. the averaged map is thresholded once (``gradCAM.threshold``: smoothed with
   sigma 10, Otsu, the object around the peak) whenever it is not all zero,
   i.e. as soon as one fold calls the class present (gradCAM.py l. 123).

There is no combined decision: ``Predicter.classify`` writes each fold's
decisions, shape (folds, B, C), without merging them (predict.py l. 104-105).
Here a class counts as present when *any* fold calls it present (its mask is
then made, as in step 4), and its reported probability is the largest over
the folds, so that "present" is "probability >= threshold" as for one model.
Otsu's threshold and the peak do not move when a map is scaled, so the mask of
a class equals the mask of the average over the folds that found it: the zeros
of the others only scale the map.

Differences, on purpose: each fold's combined map is computed by
:func:`micranet_utils.analysis.recipes.score_maps` (exact PCA, oriented so that the
structure is high, see :mod:`micranet_utils.analysis.recipes`); the original left the
sign to scikit-learn, so two folds could disagree in sign and cancel in the
mean. Large images are tiled per fold (:func:`micranet_utils.model.gradcam.tiled_maps`).
"""

from typing import NamedTuple

import h5py
import numpy as np

from ..base.datasets import DATASETS
from ..base.errors import MicranetError, ZooError
from ..io.zoo import DEFAULT_GROUP, load_zoo, open_zoo
from ..model.gradcam import original_settings, predicted, tiled_maps
from .recipes import get_recipe, score_maps, segment, threshold_scores


__all__ = ["ensemble_members", "load_ensemble", "gradcam_settings", "EnsembleResult", "ensemble_segment"]


def _find_members(path, name, group):
    """(group name or None, ["MODEL/FOLD", ...]); no members when the choice is not an ensemble."""
    if name is not None and "/" in str(name):
        return group, []                                    # one fold picked by name
    with open_zoo(path) as file:
        if group is None:
            candidates = [g for g in file.keys() if g.startswith(DEFAULT_GROUP)]
            group = DEFAULT_GROUP if DEFAULT_GROUP in file else (candidates[0] if len(candidates) == 1 else None)
        arch = file.get(group) if group is not None else None
        if not isinstance(arch, h5py.Group):
            return group, []                                # load_zoo says what is wrong
        models = list(arch.keys())
        model = name if name is not None else (models[0] if len(models) == 1 else None)
        node = arch.get(model) if model is not None else None
        if not isinstance(node, h5py.Group):
            return group, []
        folds = [key for key, item in node.items() if isinstance(item, h5py.Group)]
        if folds and len(folds) != len(node):
            raise ZooError(f"{path}: {node.name!r} mixes weights and sub-groups ({', '.join(node.keys())}); "
                           "expected either the weights of one model or one group per fold")
        return group, [f"{model}/{fold}" for fold in folds]


def ensemble_members(path, name=None, group=None):
    """The folds of an ensemble in a zoo file, as ``"MODEL/FOLD"`` names.

    Parameters
    ----------
    path : str or Path
        The zoo file.
    name, group : str, optional
        As in :func:`micranet_utils.load_zoo`: the model and its architecture group.

    Returns
    -------
    list of str
        One name per fold, in the file's (alphabetical) order, which
        :func:`micranet_utils.load_zoo` accepts as `name`. Empty when the chosen
        model holds its weights directly, when `name` already picks one fold,
        or when the group or model cannot be chosen (``load_zoo`` then says why).

    Examples
    --------
    >>> ensemble_members("PVivaxModelZoo.hdf5", group="MICRANet-finetuned")   # doctest: +SKIP
    ['20200304-101010_42/0', '20200304-101010_42/1', ...]
    """
    return _find_members(path, name, group)[1]


def load_ensemble(path, name=None, group=None, device="cpu"):
    """Load every fold of an ensemble (or the one model of a plain group).

    Parameters
    ----------
    path : str or Path
    name, group : str, optional
        As in :func:`micranet_utils.load_zoo`. ``name="MODEL/FOLD"`` loads that
        fold only.
    device : str or torch.device, optional

    Returns
    -------
    models : list of MICRANet
        One per fold, in eval mode; one model when the group is not an ensemble.
    params : dict
        The group's ``trainer_params`` (with ``class_thresholds``), shared by the folds.
    members : list of str
        The folds' ``"MODEL/FOLD"`` names; empty when a single model was loaded.

    Raises
    ------
    ZooError
        As :func:`micranet_utils.load_zoo`, naming the file and the fold: e.g. a
        fold whose weights have other shapes, classes or input channels than the others.
    """
    group, members = _find_members(path, name, group)
    if not members:
        model, params = load_zoo(path, name=name, group=group, device=device)
        return [model], params, []
    models = []
    for member in members:
        try:
            model, params = load_zoo(path, name=member, group=group, device=device)
        except ZooError as err:
            raise ZooError(f"{err} (fold {member!r} of the ensemble in group {group!r})") from None
        if models and (model.num_classes, model.in_channels) != (models[0].num_classes, models[0].in_channels):
            raise ZooError(f"{path}: fold {member!r} of group {group!r} has {model.num_classes} class(es) and "
                           f"{model.in_channels} input channel(s), but fold {members[0]!r} has "
                           f"{models[0].num_classes} and {models[0].in_channels}; the folds must match")
        models.append(model)
    return models, params, members


def gradcam_settings(recipe, params=None):
    """Grad-CAM normalisation and decision rule for a recipe name (see ``gradcam.original_settings``).

    The published data sets' own settings (with the zoo's ``class_thresholds``
    from `params`); for other recipe names, normalised maps and ``p > 0.5``.

    Returns
    -------
    dict
        ``normalize`` (bool), ``thresholds`` (float or list of float), ``strict`` (bool).
    """

    if recipe in DATASETS:
        return original_settings(recipe, params)
    return {"normalize": True, "thresholds": 0.5, "strict": True}


class EnsembleResult(NamedTuple):
    """What :func:`ensemble_segment` returns for one image (M models, C classes, K masks).

    Attributes
    ----------
    masks : ndarray of bool, shape (K, H, W)
        One mask per class (per class pair for ``ctc``), from the averaged scores.
    scores : ndarray of float32, shape (C, H, W)
        Mean over the models of each model's combined map (zero where it calls the class absent).
    maps : ndarray of float32, shape (C, 8, H, W)
        Mean over the models of their Grad-CAM maps (for display; the scores
        are combined from each model's own maps).
    logits : ndarray of float32, shape (M, C)
        Each model's logits.
    present : ndarray of bool, shape (M, C)
        Each model's decision.
    """

    masks: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    logits: np.ndarray
    present: np.ndarray


def segment_image(models, image, recipe, settings, tile=1024, overlap=128, device=None):
    """:func:`ensemble_segment` with a ready Recipe and settings, unchecked (used by ``predict``)."""
    if recipe.threshold == "blocks" and len(models) > 1:
        raise MicranetError(f"recipe {recipe.name!r} thresholds each model's maps and cannot average "
                            "several models; choose one fold (name='MODEL/FOLD', command line --name)")
    num_classes, (height, width) = models[0].num_classes, image.shape[1:]
    total_scores = np.zeros((num_classes, height, width), np.float64)
    total_maps = None                       # float32, summed in place: no extra copy for one model
    logits, present = [], []
    for model in models:
        maps, model_logits = tiled_maps(model, image, tile, overlap, settings["normalize"], device)
        model_present = predicted(model_logits[None], settings["thresholds"], strict=settings["strict"])
        if recipe.threshold == "blocks":
            masks = segment(maps[None], model_present, image[None], recipe)[0]
        else:
            total_scores += score_maps(maps[None], model_present, image[None], recipe)[0]
        total_maps = maps if total_maps is None else np.add(total_maps, maps, out=total_maps)
        logits.append(model_logits)
        present.append(model_present[0])
    present = np.array(present, bool)
    scores = (total_scores / len(models)).astype(np.float32)
    if recipe.threshold != "blocks":
        masks = threshold_scores(scores[None], present.any(axis=0)[None], recipe)[0]
    total_maps /= len(models)
    return EnsembleResult(masks, scores, total_maps, np.array(logits, np.float32), present)


def ensemble_segment(models, image, recipe="pvivax", params=None, *, tile=1024, overlap=128, device=None):
    """Segment one image with a fold ensemble, as the original P. vivax script does.

    For each model: Grad-CAM maps (normalised or not as the recipe's data set
    does: not for P. vivax), its decision per class, and its combined map per
    class it calls present (:func:`micranet_utils.analysis.recipes.score_maps`); the
    combined maps are averaged over *all* models (a model that calls a class
    absent adds zeros), and the mean is thresholded once with the recipe's rule
    (:func:`micranet_utils.analysis.recipes.threshold_scores`) for every class that at
    least one model calls present. See the module notes for the original.

    Parameters
    ----------
    models : sequence of MICRANet
        E.g. from :func:`load_ensemble`; same number of classes and input channels.
        One model gives exactly :func:`micranet_utils.analysis.recipes.segment` of its maps.
    image : ndarray, shape (C_in, H, W), or (H, W) for one channel
        Intensities as the models expect (see :func:`micranet_utils.io.images.prepare_image`).
    recipe : str or Recipe
        Any recipe but ``mnist`` (whose rule needs the maps themselves) when
        there are several models.
    params : dict, optional
        The zoo's trainer_params; its ``class_thresholds`` decide presence for
        EM and P. vivax (without them: probability >= 0.5).
    tile, overlap : int
        As in :func:`micranet_utils.model.gradcam.tiled_maps`.
    device : str or torch.device, optional

    Returns
    -------
    EnsembleResult
        ``masks`` bool (K, H, W), ``scores`` float32 (C, H, W), ``maps``
        float32 (C, 8, H, W), ``logits`` float32 (M, C), ``present`` bool (M, C).

    Examples
    --------
    >>> models, params, folds = load_ensemble("PVivaxModelZoo.hdf5",
    ...                                       group="MICRANet-finetuned")   # doctest: +SKIP
    >>> result = ensemble_segment(models, image, "pvivax", params)           # doctest: +SKIP
    >>> result.masks.shape, result.present.any(axis=0)                       # doctest: +SKIP
    ((1, 512, 512), array([ True]))
    """

    recipe = get_recipe(recipe)
    models = list(models)
    if not models:
        raise MicranetError("models: need at least one model")
    for k, model in enumerate(models[1:], start=1):
        if (model.num_classes, model.in_channels) != (models[0].num_classes, models[0].in_channels):
            raise MicranetError(f"models[{k}] has {model.num_classes} class(es) and {model.in_channels} input "
                                f"channel(s), models[0] has {models[0].num_classes} and {models[0].in_channels}")
    image = np.asarray(image, np.float32)
    image = image[None] if image.ndim == 2 else image
    if image.ndim != 3 or image.shape[0] != models[0].in_channels:
        raise MicranetError(f"image must have shape ({models[0].in_channels}, H, W) for these models; "
                            f"got {image.shape}")
    return segment_image(models, image, recipe, gradcam_settings(recipe.name, params), tile, overlap, device)
