"""Training MICRA-Net from image-level labels: the original recipe, resumable.

The defaults are those of the original ``src/Actin/train.py``: Adam (lr 1e-3),
binary cross-entropy on the logits with ``pos_weight = [3.3, 1.6]`` (rings,
fibers), ReduceLROnPlateau on the validation loss (factor 0.1, patience 10,
relative threshold 0.01, min_lr 1e-5), batches of 64 crops of 256 x 256, 250
epochs, the four original augmentations each with probability 0.5, and the
model with the lowest validation loss kept. Every number is a parameter, and
all of them are recorded in the checkpoints' ``trainer_params``.

What differs from the original, and why:

* crops are read lazily from the HDF5 file (:class:`~micranet_utils.data.CropDataset`)
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
  training crops (:mod:`micranet_utils.batchnorm`): on dark microscopy crops the
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
    torchrun --nproc-per-node 4 -m micranet_utils.training --data DATA --output RUN
"""

import datetime
import os
from pathlib import Path

from . import checkpoints
from .errors import DatasetError
from .training_loop import TrainingError, TrainResult, _Run

__all__ = ["train", "resume", "ensure_demo_model", "demo_run_dir", "default_num_workers", "TrainResult",
           "TrainingError", "DEMO_SETTINGS"]

DEFAULT_POS_WEIGHT = (3.3, 1.6)
"""tuple of float: the original's pos_weight for Actin (rings, fibers)."""


def train(data, output, *, validation=None, size=256, step=0.75, foreground_fraction=0.1,
          label_fraction=0.05, augment=0.5, batch_size=64, epochs=250, lr=1e-3,
          pos_weight=DEFAULT_POS_WEIGHT, lr_factor=0.1, lr_patience=10, lr_threshold=0.01,
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
        Crop rules of :class:`~micranet_utils.data.CropDataset` (256, 0.75, 0.1, 0.05).
    augment : float
        Probability of each of the four original augmentations (0.5).
    batch_size : int
        Crops per optimizer step, over all processes (64). Incomplete batches are dropped.
    epochs : int
        Number of passes over the training crops (250).
    lr : float
        Adam learning rate (1e-3).
    pos_weight : sequence of float or "balanced" or None
        Weight of the positive term of each class in the loss; ``"balanced"`` uses
        negatives / positives of the training crops, None weighs 1.
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
        :mod:`micranet_utils.batchnorm`), so that the validated and saved model
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
    from .data import check_training_file, find_split_files

    if dry_run:
        epochs, max_batches, num_workers = 1, 2, 0
    train_path, valid_path = _split_paths(data, validation, find_split_files)
    for path in (train_path, valid_path):
        check_training_file(path)
    run_dir = Path(output)
    if (run_dir / "last.hdf5").exists():
        raise TrainingError(f"{run_dir}: already holds a run (last.hdf5); continue it with "
                            f"--resume {run_dir} or choose another --output")
    for name, value, low in (("size", size, 8), ("batch_size", batch_size, 1), ("epochs", epochs, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    now = datetime.datetime.now()
    params = {
        "model_name": f"{now:%Y%m%d-%H%M%S}_{seed}", "datetime": f"{now:%Y%m%d-%H%M%S}",
        "restore-from": None if restore_from is None else str(Path(restore_from).resolve()),
        "freeze": _freeze_list(freeze), "dry_run": bool(dry_run), "size": int(size),
        "seed": int(seed), "lr": float(lr), "epochs": int(epochs), "data_aug": float(augment),
        "step": float(step), "foreground_fraction": float(foreground_fraction),
        "label_fraction": float(label_fraction), "pos_weight": pos_weight if pos_weight in (None, "balanced")
        else [float(w) for w in pos_weight],
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
        New total number of epochs (to train longer than planned).
    progress, callback
        As in :func:`train`.
    device : str, optional
        Override the recorded device (e.g. resume a GPU run on a CPU).

    Returns
    -------
    TrainResult
    """
    from .zoo import load_zoo

    run_dir = Path(run_dir)
    last = run_dir / "last.hdf5"
    if not last.is_file():
        raise TrainingError(f"{run_dir}: no last.hdf5 to resume from (is it a run folder of 'micranet train'?)")
    model, params = load_zoo(last)
    state = checkpoints.read_training_state(last)
    params = dict(params)
    if epochs is not None:
        params["epochs"] = int(epochs)
    if device is not None:
        params["device"] = str(device)
    return _Run(params, run_dir, state, progress, callback, weights=model.state_dict()).fit()


def default_num_workers(world_size=1):
    """DataLoader worker processes per loader when ``num_workers`` is not given.

    One per CPU core this process may use beyond the training process's own, at
    most 4; none where each training process has 2 cores or fewer. A worker is a
    fork of the training process: the pages it shares with it become its own as
    the trainer's memory changes, so each worker can end up costing as much
    memory as the trainer, and the training and validation loaders keep theirs
    for the whole run. Reading a crop costs a few percent of a training step on
    a CPU, so without a core to spare a worker saves no time.

    Parameters
    ----------
    world_size : int
        Training processes on this machine (torchrun), sharing its cores.

    Returns
    -------
    int
    """
    try:
        cores = len(os.sched_getaffinity(0))        # the cores this process may run on
    except AttributeError:                          # macOS, Windows
        cores = os.cpu_count() or 1
    per_process = cores // max(1, int(world_size))
    return 0 if per_process <= 2 else min(4, per_process - 1)


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
    from . import lessons

    work = Path(work_dir) if work_dir is not None else lessons.work_dir()
    fast = lessons.is_fast() if fast is None else bool(fast)
    return work / "runs" / f"demo_micranet_v{DEMO_MODEL_VERSION}_{'fast' if fast else 'full'}_seed{seed}"


def ensure_demo_model(work_dir=None, fast=None, seed=0, progress=True, retrain=False):
    """The lessons' trained demo model: reuse it, finish it, or train it.

    Looks for ``<work_dir>/models/demo_micranet.hdf5``. When it is missing (or
    `retrain` is set), the demo data are generated if needed
    (:func:`micranet_utils.demo.ensure_demo`) and the model is trained with
    :data:`DEMO_SETTINGS` in :func:`demo_run_dir` (an interrupted run is resumed,
    a finished one reused); its ``best.hdf5`` is then copied to the models
    folder. A model trained in fast mode is retrained when full mode asks for it.

    Parameters
    ----------
    work_dir : str or Path, optional
        Default :func:`micranet_utils.lessons.work_dir`.
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
    from . import demo, lessons
    from .zoo import load_zoo, save_zoo

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
        splits = demo.ensure_demo(folder=demo.demo_folder(work, fast), seed=seed, fast=fast, progress=progress)
        result = train(splits["training"], run_dir, validation=splits["validation"], seed=seed,
                       progress=progress, **DEMO_SETTINGS["fast" if fast else "full"])
    model, params = load_zoo(result.best)
    params.update(demo_fast=fast, demo_model_version=DEMO_MODEL_VERSION, best_epoch=result.best_epoch,
                  best_valid_loss=result.best_loss,
                  run_dir=str(run_dir))
    save_zoo(target, model, params, name=params["model_name"])
    return target


# -- command line -----------------------------------------------------------------------------
_EXAMPLES = """examples:
  micranet train --data micranet-work/demo --output runs/demo --size 128 --epochs 12
  micranet train --data micranet-work/demo --output runs/try --dry-run --device cpu
  micranet train --resume runs/demo
  micranet train --data DATA --output runs/ft --restore-from ActinModelZoo.hdf5 --freeze all-conv
  torchrun --nproc-per-node 4 -m micranet_utils.cli train --data DATA --output runs/ddp
"""


def cli_arguments(parser):
    """Add the arguments of ``micranet train`` to `parser`."""
    parser.epilog = _EXAMPLES
    where = parser.add_argument_group("data and run folder")
    where.add_argument("--data", help="folder with training_*.hdf5 and validation_*.hdf5, or a training file")
    where.add_argument("--validation", help="validation file, when --data is a file")
    where.add_argument("--output", help="run folder (best.hdf5, last.hdf5, history.csv, history.png)")
    where.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.hdf5")
    recipe = parser.add_argument_group("recipe (defaults: the original Actin training)")
    for flag, kind, default_text in (
            ("--size", int, "256"), ("--step", float, "0.75"), ("--foreground-fraction", float, "0.1"),
            ("--label-fraction", float, "0.05"), ("--augment", float, "0.5"), ("--batch-size", int, "64"),
            ("--epochs", int, "250"), ("--lr", float, "1e-3"), ("--lr-factor", float, "0.1"),
            ("--lr-patience", int, "10"), ("--lr-threshold", float, "0.01"), ("--min-lr", float, "1e-5"),
            ("--seed", int, "42")):
        recipe.add_argument(flag, type=kind, help=f"default {default_text}")
    recipe.add_argument("--pos-weight", nargs="+", metavar="W",
                        help="one weight per class, 'balanced' or 'none' (default 3.3 1.6)")
    tune = parser.add_argument_group("fine-tuning")
    tune.add_argument("--restore-from", metavar="ZOO", help="start from the weights of a ModelZoo file")
    tune.add_argument("--freeze", default="", help="comma-separated: all-conv, 1a..4b, conv1a, bnorm1a, ...")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--amp", default="auto", choices=("auto", "on", "off"), help="mixed precision on CUDA")
    run.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    run.add_argument("--workers", type=int,
                     help="DataLoader worker processes (default: spare cores, max 4; none with 2 cores or fewer)")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="also save last.hdf5 every N batches")
    run.add_argument("--max-batches", type=int, help="stop each epoch after this many batches")
    run.add_argument("--dry-run", action="store_true", help="two batches through the whole path, in seconds")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def cli_run(args):
    """Run ``micranet train``; returns the exit status."""
    progress = not args.no_progress
    if args.resume:
        result = resume(args.resume, epochs=args.epochs, progress=progress,
                        device=None if args.device == "auto" else args.device)
    else:
        if not args.data or not args.output:
            raise DatasetError("give --data and --output (or --resume RUN_DIR)")
        recipe = {key: getattr(args, key) for key in (
            "size", "step", "foreground_fraction", "label_fraction", "augment", "batch_size", "epochs",
            "lr", "lr_factor", "lr_patience", "lr_threshold", "min_lr", "seed")}
        recipe = {key: value for key, value in recipe.items() if value is not None}
        if args.pos_weight:
            word = args.pos_weight[0].lower()
            if len(args.pos_weight) == 1 and word in ("balanced", "none"):
                recipe["pos_weight"] = None if word == "none" else "balanced"
            else:
                recipe["pos_weight"] = _floats(args.pos_weight)
        result = train(args.data, args.output, validation=args.validation, restore_from=args.restore_from,
                       freeze=args.freeze, device=args.device,
                       amp={"auto": "auto", "on": True, "off": False}[args.amp],
                       deterministic=args.deterministic, num_workers=args.workers,
                       checkpoint_every=args.checkpoint_every, max_batches=args.max_batches,
                       dry_run=args.dry_run, progress=progress, **recipe)
    if os.environ.get("RANK", "0") == "0":
        print(f"best model: {result.best} (epoch {result.best_epoch}, validation loss {result.best_loss:.4f}); "
              f"resumable state: {result.last}")
    return 0


def _floats(values):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise DatasetError(f"--pos-weight expects numbers, 'balanced' or 'none', got {' '.join(values)}") from None
