"""Training MICRA-Net from image-level labels: the original recipe, resumable.

The defaults are those of the original ``src/Actin/train.py``: Adam (lr 1e-3),
binary cross-entropy on the logits with ``pos_weight = [3.3, 1.6]`` (rings,
fibers; with another number of classes, the data's negatives / positives per
class), ReduceLROnPlateau on the validation loss (factor 0.1, patience 10,
relative threshold 0.01, min_lr 1e-5), batches of 64 crops of 256 x 256, 250
epochs, the four original augmentations each with probability 0.5, and the
model with the lowest validation loss kept. Every number is a parameter, and
all of them are recorded in the checkpoints' ``trainer_params``.

What differs from the original, and why:

* crops are read lazily from the HDF5 file (:class:`~micranet_utils.io.training_files.CropDataset`)
  instead of loading the whole file into memory;
* every random draw (batch order, augmentation, dropout) is a function of
  ``(seed, epoch, batch, rank)``, so a run resumed from ``last.hdf5`` ends with
  exactly the weights of an uninterrupted run, whatever the number of workers;
  the augmentations are applied to the whole batch, on the training device;
* the scheduler is stepped with the current validation loss; the original
  passes the running minimum instead, which for ``mode="min"`` with a relative
  threshold and no cooldown gives exactly the same learning rates (an epoch
  improves on ``best`` by the threshold only if it is itself the new minimum);
* before each validation the BatchNorm running statistics are re-estimated from
  training crops (:mod:`micranet_utils.model.batchnorm`): on dark microscopy crops the
  running averages need far more steps than a short training makes;
* the validation loss is the mean over every validation crop (the original
  averages per-batch means and drops the last partial batch), and accuracy
  and F1 per class are real ones (the original's "accuracy" is a true-positive
  fraction on logits >= 0.5);
* the run folder holds ``best.hdf5`` and ``last.hdf5`` (ModelZoo files the
  original loads), ``history.csv``, ``history.png`` and ``trainer_params.json``.

Command line::

    micranet train --data DEMO_FOLDER --output runs/demo --epochs 20 --size 128
    micranet train --resume runs/demo
    torchrun --nproc-per-node 4 -m micranet_utils train --data DATA --output RUN
"""

import datetime
from pathlib import Path

from ..base.checks import (finite_non_negative, finite_positive, fraction, non_negative_int, output_folder,
                           positive_int)
from ..base.devices import pick_device
from ..base.errors import ArgumentError, DatasetError
from ..io import checkpoints
from ..io.training_files import check_training_file, find_split_files
from ..io.zoo import load_zoo
from .loop import _Run, check_freeze, check_training_state, TrainingError

__all__ = ["train", "resume"]

def train(data, output, *, validation=None, size=256, step=0.75, foreground_fraction=0.1,
          label_fraction=0.05, augment=0.5, batch_size=64, epochs=250, lr=1e-3,
          pos_weight="auto", lr_factor=0.1, lr_patience=10, lr_threshold=0.01,
          min_lr=1e-5, seed=42, device="auto", amp="auto", deterministic=False, num_workers=None,
          restore_from=None, freeze=(), checkpoint_every=0, max_batches=None, dry_run=False,
          bn_recalibration_crops=256, progress=True, callback=None):
    """Train MICRA-Net on a published-layout data set with the original recipe.

    Parameters
    ----------
    data : str or Path
        A folder holding ``training_*.hdf5`` and ``validation_*.hdf5`` (the demo
        or published layout), or a training file (then give `validation`).
    output : str or Path
        The run folder; receives ``best.hdf5``, ``last.hdf5``, ``history.csv``,
        ``history.png`` and ``trainer_params.json``. Must not hold another run.
    validation : str or Path, optional
        Validation file, when `data` is a file.
    size, step, foreground_fraction, label_fraction : int, float, float, float
        Crop rules of :class:`~micranet_utils.io.training_files.CropDataset` (256, 0.75, 0.1, 0.05).
    augment : float
        Probability of each of the four original augmentations (0.5).
    batch_size : int
        Crops per optimizer step, over all processes (64). Incomplete batches are dropped.
    epochs : int
        Number of passes over the training crops (250).
    lr : float
        Adam learning rate (1e-3).
    pos_weight : sequence of float, "auto", "balanced" or None
        Weight of the positive term of each class in the loss. ``"auto"``: the
        original Actin's (3.3, 1.6) when the data have two classes, else
        ``"balanced"``; ``"balanced"`` uses negatives / positives of the training
        crops, None weighs 1.
    lr_factor, lr_patience, lr_threshold, min_lr : float, int, float, float
        ReduceLROnPlateau settings (0.1, 10, 0.01 relative, 1e-5).
    seed : int
        Seeds batch order, augmentation, dropout and the initial weights.
    device : {"auto", "cpu", "cuda"}
    amp : {"auto", True, False}
        Mixed precision (float16 autocast + gradient scaling); "auto" uses it on CUDA.
    deterministic : bool
        Ask PyTorch for deterministic kernels (slower on GPU; CPU runs already are).
    num_workers : int, optional
        DataLoader worker processes reading crops; default: :func:`default_num_workers`
        (one per spare CPU core, at most 4; none with 2 cores or fewer).
    restore_from : str or Path, optional
        A ModelZoo file (published or your own) to start from (fine-tuning). If its
        number of classes differs, every layer but ``linear1`` is restored.
    freeze : str or sequence of str
        Parameters kept fixed: ``"all-conv"`` (every layer but ``linear1``, the
        original ``--freeze``), block names ``"1a"`` ... ``"4b"`` (convolution and its
        batch norm), or module names ``"conv1a"``, ``"bnorm2b"`` ... Comma-separated text works.
    checkpoint_every : int
        Also save ``last.hdf5`` every this many batches (0: at the end of each epoch only).
    max_batches : int, optional
        Stop each epoch (training and validation) after this many batches.
    dry_run : bool
        One epoch of two training and two validation batches, no workers: checks
        the whole path in seconds.
    bn_recalibration_crops : int
        Before each validation, the BatchNorm running statistics are re-estimated
        exactly from this many training crops (evenly spread, no augmentation; see
        :mod:`micranet_utils.model.batchnorm`), so that the validated and saved model
        uses the statistics of the data it was trained on. 0 keeps the original's
        exponential averages, which need many epochs on dark microscopy images.
    progress : bool
        Show tqdm progress bars (loss and learning rate).
    callback : callable, optional
        Called on every process with a dict after each batch (``event="batch"``)
        and each epoch (``event="epoch"``, with the history row).

    Returns
    -------
    TrainResult

    Raises
    ------
    DatasetError
        Missing or wrong-layout files, a class always positive or always negative,
        fewer crops than one batch.
    TrainingError
        The run folder already holds a run, or the loss became NaN (training
        stops; ``last.hdf5`` keeps the last good epoch).
    """

    size, batch_size, epochs = positive_int("size", size, 8), positive_int("batch_size", batch_size), \
        positive_int("epochs", epochs)
    step = finite_positive("step", step)
    foreground_fraction, label_fraction = (fraction("foreground_fraction", foreground_fraction),
                                           fraction("label_fraction", label_fraction))
    augment = fraction("augment", augment)
    lr, min_lr = finite_positive("lr", lr), finite_non_negative("min_lr", min_lr)
    lr_factor = fraction("lr_factor", lr_factor, zero=False, one=False)
    lr_patience, lr_threshold = non_negative_int("lr_patience", lr_patience), finite_non_negative(
        "lr_threshold", lr_threshold)
    seed, checkpoint_every = non_negative_int("seed", seed), non_negative_int("checkpoint_every", checkpoint_every)
    bn_recalibration_crops = non_negative_int("bn_recalibration_crops", bn_recalibration_crops)
    num_workers = None if num_workers is None else non_negative_int("num_workers", num_workers)
    max_batches = None if max_batches is None else positive_int("max_batches", max_batches)
    if pos_weight not in (None, "auto", "balanced"):
        if isinstance(pos_weight, str):
            raise ArgumentError(f"pos_weight must be numbers, 'auto', 'balanced' or None, got {pos_weight!r}")
        pos_weight = [finite_non_negative("pos_weight", w) for w in pos_weight]
    if amp not in ("auto", True, False):
        raise ArgumentError(f"amp must be 'auto', True or False, got {amp!r}")
    pick_device(device)
    freeze = check_freeze(_freeze_list(freeze))
    if dry_run:
        epochs, max_batches, num_workers = 1, 2, 0
    train_path, valid_path = _split_paths(data, validation, find_split_files)
    for path in (train_path, valid_path):
        check_training_file(path)
    run_dir = Path(output)
    if (run_dir / "last.hdf5").exists():
        raise TrainingError(f"{run_dir}: already holds a run (last.hdf5); continue it with "
                            f"--resume {run_dir} or choose another --output")
    output_folder("output", run_dir)
    now = datetime.datetime.now()
    params = {
        "model_name": f"{now:%Y%m%d-%H%M%S}_{seed}", "datetime": f"{now:%Y%m%d-%H%M%S}",
        "restore-from": None if restore_from is None else str(Path(restore_from).resolve()),
        "freeze": freeze, "dry_run": bool(dry_run), "size": int(size),
        "seed": int(seed), "lr": float(lr), "epochs": int(epochs), "data_aug": float(augment),
        "step": float(step), "foreground_fraction": float(foreground_fraction),
        "label_fraction": float(label_fraction), "pos_weight": pos_weight,
        "hdf5_training_path": str(train_path.resolve()), "hdf5_validation_path": str(valid_path.resolve()),
        "dataloader_params": {"shuffle": True, "drop_last": True, "batch_size": int(batch_size),
                              "num_workers": num_workers},
        "scheduler": {"mode": "min", "factor": float(lr_factor), "patience": int(lr_patience),
                      "threshold": float(lr_threshold), "threshold_mode": "rel", "min_lr": float(min_lr)},
        "device": str(device), "amp": amp, "deterministic": bool(deterministic),
        "checkpoint_every": int(checkpoint_every), "max_batches": max_batches,
        "bn_recalibration_crops": int(bn_recalibration_crops),
    }
    return _Run(params, run_dir, None, progress, callback).fit()


def resume(run_dir, *, epochs=None, progress=True, callback=None, device=None):
    """Continue the run in `run_dir` from its ``last.hdf5``.

    The settings, data paths, weights, optimizer, scheduler, history and batch
    position come from the checkpoint; on CPU with the same seed the final
    weights are identical to those of an uninterrupted run.

    Parameters
    ----------
    run_dir : str or Path
        A run folder written by :func:`train`.
    epochs : int, optional
        New total number of epochs (to train longer than planned); at least the
        epochs already done.
    progress, callback
        As in :func:`train`.
    device : str, optional
        Override the recorded device (e.g. resume a GPU run on a CPU).

    Returns
    -------
    TrainResult
    """

    run_dir = Path(run_dir)
    last = run_dir / "last.hdf5"
    if not last.is_file():
        raise TrainingError(f"{run_dir}: no last.hdf5 to resume from (is it a run folder of 'micranet train'?)")
    model, params = load_zoo(last)
    state = checkpoints.read_training_state(last)
    state = check_training_state(state, params, last)
    params = dict(params)
    if epochs is not None:
        params["epochs"] = positive_int("epochs", epochs, max(1, state["epoch"]))
    if device is not None:
        pick_device(device)
        params["device"] = str(device)
    output_folder("run folder", run_dir)
    return _Run(params, run_dir, state, progress, callback, weights=model.state_dict()).fit()


def _split_paths(data, validation, find_split_files):
    data = Path(data)
    if data.is_dir():
        files = find_split_files(data)
        return files["training"], Path(validation) if validation else files["validation"]
    if not data.exists():
        raise DatasetError(f"{data}: no such training file or folder")
    if validation is None:
        raise DatasetError(f"{data}: a single training file was given; also give its validation file "
                           "(--validation FILE) or a folder holding training_*.hdf5 and validation_*.hdf5")
    return data, Path(validation)


def _freeze_list(freeze):
    if isinstance(freeze, str):
        freeze = freeze.split(",")
    return [name.strip() for name in (freeze or ()) if name and name.strip()]


# -- the demo model the lessons share ---------------------------------------------------------


# -- command line -----------------------------------------------------------------------------


