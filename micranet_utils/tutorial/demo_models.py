"""The lessons' trained demo models: MICRA-Net, U-Net and Mask R-CNN on the demo data.

Each ``ensure_demo_*`` function reuses the model a previous lesson trained in the
work folder, or trains it with the settings of this module (full or fast mode),
so that any lesson can be opened alone. These are the tutorial's scaffolding:
training your own model goes through :func:`micranet_utils.train.runs.train`.
"""

from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from ..base.errors import ZooError
from ..io.training_files import CropDataset
from ..io.zoo import load_zoo, read_group, save_zoo
from ..train.runs import resume, train
from .baselines import maskrcnn, unet
from .demo_data import demo_folder, ensure_demo
from . import lessons


# -- MICRA-Net ---------------------------------------------------------------------------------
DEMO_SETTINGS = {
    "full": dict(size=64, batch_size=32, epochs=12, lr=1e-3, lr_patience=2, augment=0.5),
    "fast": dict(size=64, batch_size=32, epochs=10, lr=1e-3, lr_patience=2, augment=0.5),
}
"""dict: the training settings of the lessons' demo model, in full and fast mode.

The recipe with smaller crops (64 px: more, cheaper optimizer steps per epoch),
few epochs and a shorter plateau patience (2), so that a laptop with 2 CPU
cores trains a good model in minutes. Measured on the demo data (full mode,
seed 0): the validation loss is noisy while the learning rate is 1e-3 (batch
statistics still move), and settles after the first reduction, with F1 about
0.9 for both classes.
"""


DEMO_MODEL_VERSION = 2
"""int: bumped whenever the engine or DEMO_SETTINGS change what the demo model learns
(2: BatchNorm statistics re-estimated before validation). Older demo models are retrained."""


def demo_run_dir(work_dir=None, fast=None, seed=0):
    """The run folder where :func:`ensure_demo_model` trains (``<work_dir>/runs/demo_micranet_<mode>_seed<seed>``)."""
    work = Path(work_dir) if work_dir is not None else lessons.work_dir()
    fast = lessons.is_fast() if fast is None else bool(fast)
    return work / "runs" / f"demo_micranet_v{DEMO_MODEL_VERSION}_{'fast' if fast else 'full'}_seed{seed}"


def ensure_demo_model(work_dir=None, fast=None, seed=0, progress=True, retrain=False):
    """The lessons' trained demo model: reuse it, finish it, or train it.

    Looks for ``<work_dir>/models/demo_micranet.hdf5``. When it is missing (or
    `retrain` is set), the demo data are generated if needed
    (:func:`micranet_utils.tutorial.demo_data.ensure_demo`) and the model is trained with
    :data:`DEMO_SETTINGS` in :func:`demo_run_dir` (an interrupted run is resumed,
    a finished one reused); its ``best.hdf5`` is then copied to the models
    folder. A model trained in fast mode is retrained when full mode asks for it.

    Parameters
    ----------
    work_dir : str or Path, optional
        Default :func:`micranet_utils.tutorial.lessons.work_dir`.
    fast : bool, optional
        Default: the ``MICRANET_FAST`` environment variable.
    seed : int
    progress : bool
    retrain : bool
        Ignore an existing model file (the run folder is still reused).

    Returns
    -------
    Path
        The ModelZoo file of the trained demo model.
    """
    work = Path(work_dir) if work_dir is not None else lessons.work_dir()
    fast = lessons.is_fast() if fast is None else bool(fast)
    target = work / "models" / "demo_micranet.hdf5"
    if target.is_file() and not retrain:
        _, params = load_zoo(target)
        current = params.get("demo_model_version") == DEMO_MODEL_VERSION
        if current and (fast or not params.get("demo_fast", False)):
            return target
    run_dir = demo_run_dir(work, fast, seed)
    if (run_dir / "last.hdf5").is_file():
        result = resume(run_dir, progress=progress)
    else:
        splits = ensure_demo(folder=demo_folder(work, fast), seed=seed, fast=fast, progress=progress)
        result = train(splits["training"], run_dir, validation=splits["validation"], seed=seed,
                       progress=progress, **DEMO_SETTINGS["fast" if fast else "full"])
    model, params = load_zoo(result.best)
    params.update(demo_fast=fast, demo_model_version=DEMO_MODEL_VERSION, best_epoch=result.best_epoch,
                  best_valid_loss=result.best_loss,
                  run_dir=str(run_dir))
    save_zoo(target, model, params, name=params["model_name"])
    return target


# -- the baselines -----------------------------------------------------------------------------
def cached_zoo(models, name, fast, read_params, train_and_save):
    """Reuse a trained demo model or train it, with the lessons' fast/full rule.

    Full mode uses ``<models>/<name>.hdf5``; fast mode reuses that file when it
    exists and otherwise uses ``<models>/<name>-fast.hdf5``, so the two modes
    never replace each other's file.

    Parameters
    ----------
    models : Path
        The models folder.
    name : str
        File stem, e.g. ``"demo_unet"``.
    fast : bool
    read_params : callable
        ``read_params(path) -> trainer_params``; raises :class:`ZooError` on a bad file.
    train_and_save : callable
        ``train_and_save(path)``: trains and writes `path` atomically.

    Returns
    -------
    Path
    """
    full, quick = models / f"{name}.hdf5", models / f"{name}-fast.hdf5"
    for path in ((full, quick) if fast else (full,)):
        if path.is_file():
            try:
                read_params(path)
                return path
            except ZooError:
                pass                           # unreadable cache: train again
    target = quick if fast else full
    train_and_save(target)
    return target


def ensure_demo_baseline(name, table, read_params, train_and_save, work_dir=None, fast=None, seed=0):
    """A demo baseline of the lessons: reuse ``<work_dir>/models/<name>.hdf5`` or train it.

    What the ``ensure_demo_*`` functions of the baselines share: the demo data
    (generated when missing), the training settings of the mode, and the cache
    rule of :func:`cached_zoo`.

    Parameters
    ----------
    name : str
        File stem, e.g. ``"demo_unet"``.
    table : dict
        The baseline's ``DEMO_SETTINGS``: ``"full"`` and ``"fast"`` -> training settings.
    read_params : callable
        ``read_params(path) -> trainer_params``; raises :class:`ZooError` on a bad file.
    train_and_save : callable
        ``train_and_save(target, splits, settings, fast)``: trains on the demo
        `splits` (split name -> file) with `settings` (the mode's row of `table`
        plus the crop ``size``) and writes the zoo file `target` atomically.
    work_dir : str or Path, optional
        Default :func:`micranet_utils.tutorial.lessons.work_dir`.
    fast : bool, optional
        Default: the ``MICRANET_FAST`` setting. Fast mode reuses a full-mode model
        if one exists, else trains its own ``-fast`` file.
    seed : int
        Seed of the demo data.

    Returns
    -------
    Path
        The model-zoo file.
    """
    fast = lessons.is_fast() if fast is None else bool(fast)
    work, splits = demo_paths(work_dir, fast, seed)
    settings = demo_settings(table, fast)
    return cached_zoo(work / "models", name, fast, read_params,
                      lambda target: train_and_save(target, splits, settings, fast))


def demo_paths(work_dir, fast, seed):
    """(work folder, demo split files) of the lessons, generating the demo data if needed."""
    work = Path(work_dir) if work_dir is not None else lessons.work_dir()
    folder = demo_folder(work, fast)
    return work, ensure_demo(folder=folder, seed=seed, fast=fast, progress=False)


def demo_settings(table, fast):
    """A baseline's demo training settings, with the crop size of the demo MICRA-Net."""
    mode = "fast" if fast else "full"
    return {"size": int(DEMO_SETTINGS[mode]["size"]), **table[mode]}


UNET_DEMO_SETTINGS = {
    "full": dict(epochs=12, batch_size=32, lr=1e-3, augment=0.5),
    "fast": dict(epochs=3, batch_size=32, lr=1e-3, augment=0.5),
}
"""dict: training of the lessons' demo U-Net, on the same crops as the demo MICRA-Net.

The crop size is the demo MICRA-Net's (:data:`DEMO_SETTINGS`) and
so is the number of epochs in full mode. The learning rate is 1e-3 rather than the
original's 1e-4: with a dozen epochs instead of 700, 1e-4 leaves the U-Net
under-trained, which would flatter MICRA-Net.
"""


def ensure_demo_unet(work_dir=None, fast=None, seed=0, progress=True):
    """The lessons' U-Net trained on the demo crops: reuse ``<work_dir>/models/demo_unet.hdf5`` or train it.

    Parameters
    ----------
    work_dir : str or Path, optional
        Default :func:`micranet_utils.tutorial.lessons.work_dir`.
    fast : bool, optional
        Default: the ``MICRANET_FAST`` setting. Fast mode reuses a full-mode model if one
        exists, else trains its own ``-fast`` file (see :func:`ensure_demo_baseline`).
    seed : int
    progress : bool

    Returns
    -------
    Path
        The model-zoo file (group ``"UNet"``); its trainer_params hold ``train_seconds``.
    """
    def train_and_save(target, splits, settings, fast):
        crops = dict(size=settings["size"], return_masks=True)
        train = CropDataset(splits["training"], augment=settings["augment"], seed=seed, **crops)
        valid = CropDataset(splits["validation"], **crops)
        model, info = unet.train_unet(train, valid, epochs=settings["epochs"], batch_size=settings["batch_size"],
                                 lr=settings["lr"], seed=seed, progress=progress)
        unet.save_unet(target, model, {**info["params"], "demo_fast": fast,
                                  "hdf5_training_path": str(splits["training"])})

    return ensure_demo_baseline("demo_unet", UNET_DEMO_SETTINGS, lambda path: unet.load_unet(path)[1],
                                       train_and_save, work_dir, fast, seed)


MASKRCNN_DEMO_SETTINGS = {
    "full": dict(epochs=5, batch_size=4, lr=1e-3, augment=0.5, max_crops=None),
    "fast": dict(epochs=1, batch_size=4, lr=1e-3, augment=0.5, max_crops=32),
}
"""dict: training of the lessons' demo Mask R-CNN (:data:`~micranet_utils.tutorial.baselines.maskrcnn.SMALL` configuration), on the
demo MICRA-Net's crop size.

Fast mode only checks that the whole path runs (32 crops, one epoch): its
Mask R-CNN has not learned anything yet. The learning rate is 1e-3 (original
1e-4 over 700 epochs).
"""


def _spread(length, count):
    """At most `count` indices evenly spread over ``range(length)``."""
    return sorted(set(np.linspace(0, length - 1, min(length, count)).round().astype(int).tolist()))


def ensure_demo_maskrcnn(work_dir=None, fast=None, seed=0, progress=True):
    """The lessons' Mask R-CNN trained on the demo crops: reuse ``<work_dir>/models/demo_maskrcnn.hdf5`` or train it.

    Arguments and cache rule as :func:`ensure_demo_unet`;
    returns the model-zoo file (group ``"MaskRCNN"``), whose trainer_params hold ``train_seconds``.
    """
    def train_and_save(target, splits, settings, fast):
        size = settings["size"]
        train = maskrcnn.InstanceCrops(CropDataset(splits["training"], size=size), augment=settings["augment"], seed=seed)
        valid = maskrcnn.InstanceCrops(CropDataset(splits["validation"], size=size))
        if settings["max_crops"]:
            train = Subset(train, _spread(len(train), settings["max_crops"]))
            valid = Subset(valid, _spread(len(valid), settings["max_crops"] // 2))
        config = {**maskrcnn.SMALL, "min_size": size, "max_size": size}
        model, info = maskrcnn.train_maskrcnn(train, valid, epochs=settings["epochs"], batch_size=settings["batch_size"],
                                     lr=settings["lr"], seed=seed, config=config, progress=progress)
        maskrcnn.save_maskrcnn(target, model, {**info["params"], "demo_fast": fast,
                                      "hdf5_training_path": str(splits["training"])})

    return ensure_demo_baseline("demo_maskrcnn", MASKRCNN_DEMO_SETTINGS, lambda path: read_group(path, group=maskrcnn.GROUP)[1],
                                       train_and_save, work_dir, fast, seed)
