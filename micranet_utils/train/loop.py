"""The training loop behind :func:`micranet_utils.train.runs.train`.

Kept apart from the public functions so that each file reads in one go:
this one holds the loop itself (one process, or one rank under torchrun)
and the small pieces it is made of: the batch plan, the batch augmentation,
the class-balance checks, freezing and the validation metrics.

Reproducibility rests on one rule: every random draw is a function of
``(seed, epoch, batch, rank)``. The batch order of an epoch comes from
``seed`` and ``epoch``; before each batch the augmentation generator and
torch's global generator (dropout) are re-seeded from ``(seed, epoch, batch,
rank)``. Resuming at any saved batch position therefore replays exactly the
draws of an uninterrupted run, with any number of DataLoader workers.
"""

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader

from ..base.devices import pick_device
from ..base.errors import ArgumentError, DatasetError, MicranetError
from ..io import checkpoints
from ..io.training_files import CropDataset
from ..io.zoo import load_zoo
from ..model.batchnorm import recalibrate_batchnorm
from ..model.network import LAYERS, MICRANet
from .batching import augment_batch, batch_plan, BatchList, mix_seed



class TrainingError(MicranetError):
    """Training cannot start or had to stop (NaN loss, a run folder already in use ...)."""


@dataclass
class TrainResult:
    """What :func:`~micranet_utils.train.runs.train` and ``resume`` return.

    Attributes
    ----------
    run_dir : Path
    best, last : Path
        ``best.hdf5`` (lowest validation loss) and ``last.hdf5`` (resumable).
    history : list of dict
        One row per epoch (the columns of ``history.csv``).
    best_epoch : int
        1-based epoch of ``best.hdf5``.
    best_loss : float
    params : dict
        The trainer_params stored in the checkpoints.
    model : MICRANet or None
        The network at the end of training (the last epoch, not the best one).
    """

    run_dir: Path
    best: Path
    last: Path
    history: list = field(default_factory=list)
    best_epoch: int = 0
    best_loss: float = math.inf
    params: dict = field(default_factory=dict)
    model: object = None

def freeze_parameters(model, names):
    """Set ``requires_grad = False`` on the parameters named by `names`.

    Parameters
    ----------
    model : MICRANet
    names : sequence of str
        ``"all-conv"``, block names ``"1a"`` .. ``"4b"``, or module names
        (``"conv1a"``, ``"bnorm1a"``, ``"linear1"``).

    Returns
    -------
    list of str
        The names of the frozen parameters.
    """
    modules = [name for name, module in model.named_children() if list(module.parameters())]
    chosen = set()
    for name in names:
        if name == "all-conv":
            chosen.update(m for m in modules if m != "linear1")
        elif name in LAYERS:
            chosen.update((f"conv{name}", f"bnorm{name}"))
        elif name in modules:
            chosen.add(name)
        else:
            raise ArgumentError(f"freeze: cannot freeze {name!r}; choose 'all-conv', a block "
                                f"({', '.join(LAYERS)}) or a module ({', '.join(modules)})")
    frozen = []
    for key, parameter in model.named_parameters():
        if key.split(".")[0] in chosen:
            parameter.requires_grad_(False)
            frozen.append(key)
    return frozen


def check_freeze(names):
    """`names` (a list of str) if :func:`freeze_parameters` knows every one of them, before any data is read."""
    freeze_parameters(MICRANet(num_classes=1), names)
    return list(names)


_STATE_FIELDS = {"epoch": int, "position": int, "epoch_sums": dict, "history": list, "best_loss": (int, float),
                 "best_epoch": int, "scheduler": dict, "optimizer": dict, "rng": dict}
_PARAM_FIELDS = ("size", "step", "foreground_fraction", "label_fraction", "seed", "lr", "epochs", "data_aug",
                 "pos_weight", "freeze", "hdf5_training_path", "hdf5_validation_path", "dataloader_params",
                 "scheduler", "device", "amp", "deterministic", "model_name")


def check_training_state(state, params, path):
    """`state` (from :func:`~micranet_utils.io.checkpoints.read_training_state`) if it can be resumed.

    Raises
    ------
    TrainingError
        A part of the state or of the recorded settings is missing or of the
        wrong kind (a damaged or hand-edited ``last.hdf5``).
    """
    wrong = [key for key, kind in _STATE_FIELDS.items()
             if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool)]
    wrong += [key for key in _PARAM_FIELDS if key not in params]
    if not wrong and (state["epoch"] < 0 or state["position"] < 0):
        wrong = ["epoch" if state["epoch"] < 0 else "position"]
    if wrong:
        raise TrainingError(f"{path}: the training state is damaged ({', '.join(wrong)} missing or wrong); "
                            "start a new run from best.hdf5 with --restore-from")
    return state


DEFAULT_POS_WEIGHT = (3.3, 1.6)
"""tuple of float: the original's pos_weight for Actin (rings, fibers)."""


def resolve_pos_weight(pos_weight, targets, class_names, path):
    """pos_weight as a list of floats, one per class; checks the class balance.

    Parameters
    ----------
    pos_weight : sequence of float, "auto", "balanced" or None
        ``"auto"`` (the default of ``train``): the original Actin's
        :data:`DEFAULT_POS_WEIGHT` when the data have two classes, else
        ``"balanced"`` (negatives / positives of each class in the training crops).
    targets : ndarray of bool, shape (N, C)
        Image-level labels of the training crops.
    class_names : sequence of str
    path : Path
        Named in the messages.

    Raises
    ------
    DatasetError
        When a class is positive in every crop or in none (nothing to learn), or
        when `pos_weight` has the wrong length.
    """
    positives = targets.sum(axis=0)
    for name, count in zip(class_names, positives):
        if count == len(targets):
            raise DatasetError(f"{path}: every crop is positive for {name}: the classifier cannot learn it "
                               f"({len(targets)} crops); add images without {name} or raise label_fraction")
        if count == 0:
            raise DatasetError(f"{path}: no crop is positive for {name}: the classifier cannot learn it "
                               f"({len(targets)} crops); add images with {name} or lower label_fraction")
    if pos_weight is None:
        return [1.0] * len(class_names)
    if pos_weight == "auto":
        pos_weight = DEFAULT_POS_WEIGHT if len(class_names) == len(DEFAULT_POS_WEIGHT) else "balanced"
    if pos_weight == "balanced":
        return [round(float((len(targets) - p) / p), 3) for p in positives]
    weights = [float(w) for w in pos_weight]
    if len(weights) != len(class_names):
        raise DatasetError(f"{path}: pos_weight has {len(weights)} values but the data have "
                           f"{len(class_names)} classes ({', '.join(class_names)}); give one per class "
                           "or pos_weight='balanced'")
    return weights


def classification_metrics(counts, class_names):
    """Accuracy and F1 per class from confusion counts.

    Parameters
    ----------
    counts : ndarray, shape (4, C)
        Rows: true positives, false positives, false negatives, true negatives.
    class_names : sequence of str

    Returns
    -------
    dict
        ``accuracy_<name>``, ``f1_<name>`` (1.0 when a class is neither present nor
        predicted) and the four counts ``tp_<name>`` ... per class.
    """
    metrics = {}
    for c, name in enumerate(class_names):
        tp, fp, fn, tn = (float(v) for v in counts[:, c])
        total = tp + fp + fn + tn
        metrics[f"accuracy_{name}"] = (tp + tn) / total if total else float("nan")
        metrics[f"f1_{name}"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
        metrics.update({f"{key}_{name}": int(v) for key, v in zip(("tp", "fp", "fn", "tn"), (tp, fp, fn, tn))})
    return metrics


def _setup_distributed(device_choice):
    """(rank, world size, device, whether we created the process group) from torchrun's variables."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        device = pick_device(device_choice)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    return rank, world, device, created


def _all_sum(tensor, world):
    if world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class _Run:
    """One training run (one process, or one rank of a torchrun job)."""

    def __init__(self, params, run_dir, state, progress, callback, weights=None):
        self.params, self.run_dir, self.state = params, Path(run_dir), state
        self.progress, self.callback, self.weights = progress, callback, weights
        self.loaders = []

    def fit(self):
        self.rank, self.world, self.device, created = _setup_distributed(self.params["device"])
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            self._build()
            return self._epochs()
        finally:
            for loader in self.loaders:      # stop persistent workers now, even after an error
                iterator = getattr(loader, "_iterator", None)
                if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                    iterator._shutdown_workers()
                loader._iterator = None
            for dataset in (getattr(self, "train_set", None), getattr(self, "valid_set", None)):
                if dataset is not None:
                    dataset.close()          # the HDF5 handles this process opened
            torch.use_deterministic_algorithms(was_deterministic)
            if created:
                dist.destroy_process_group()

    # -- setting up ---------------------------------------------------------------
    def _datasets(self):
        p = self.params
        crops = dict(size=p["size"], step=p["step"], foreground_fraction=p["foreground_fraction"],
                     label_fraction=p["label_fraction"], augment=0.0)
        train_set = CropDataset(p["hdf5_training_path"], **crops)
        valid_set = CropDataset(p["hdf5_validation_path"], **crops)
        batch_size = p["dataloader_params"]["batch_size"]
        if len(train_set) < batch_size:
            raise DatasetError(
                f"{train_set.path}: {len(train_set)} crops of {p['size']} x {p['size']} pixels pass the "
                f"foreground rule, fewer than one batch of {batch_size}; lower batch_size, use a smaller "
                "size or step, or add images")
        if len(valid_set) == 0:
            raise DatasetError(f"{valid_set.path}: no crop of {p['size']} x {p['size']} pixels passes the "
                               "foreground rule; nothing to validate on")
        if valid_set.num_classes != train_set.num_classes:
            raise DatasetError(f"{valid_set.path}: {valid_set.num_classes} classes, but the training file "
                               f"{train_set.path} has {train_set.num_classes}")
        if batch_size % self.world:
            raise TrainingError(f"batch_size {batch_size} cannot be split evenly over {self.world} processes")
        p["pos_weight"] = resolve_pos_weight(p["pos_weight"], train_set.targets(), train_set.class_names,
                                             train_set.path)
        p["class_names"] = list(train_set.class_names)
        p["num_crops"] = {"training": len(train_set), "validation": len(valid_set)}
        return train_set, valid_set

    def _build(self):
        """Data, model, optimizer, scheduler and loss; the saved state when resuming."""
        p, device = self.params, self.device
        if p["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.amp = device.type == "cuda" and p["amp"] in ("auto", True, "true", "True")
        self.train_set, self.valid_set = self._datasets()
        torch.manual_seed(p["seed"])
        model = MICRANet(self.train_set.num_classes, int(self.train_set[0][0].shape[0]))
        if self.weights is not None:
            model.load_state_dict(self.weights)
        elif p.get("restore-from"):
            _restore(model, p["restore-from"])
        freeze_parameters(model, p["freeze"])
        # Not channels_last, although a CPU step runs ~1.2x to 1.4x faster in it (benchmarks/training.py):
        # its convolutions add in another order, so the weights would no longer equal a plain NCHW
        # training step to the bit (lesson 03 checks that they do).
        self.model = model.to(device)
        trainable = [q for q in model.parameters() if q.requires_grad]
        if not trainable:
            raise TrainingError(f"freeze={p['freeze']} leaves no parameter to train")
        # foreach: the same values as the per-parameter loop (bitwise), fewer kernel calls
        self.optimizer = torch.optim.Adam(trainable, lr=p["lr"], foreach=True)
        s = p["scheduler"]
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode=s["mode"], factor=s["factor"], patience=s["patience"],
            threshold=s["threshold"], threshold_mode=s["threshold_mode"], min_lr=s["min_lr"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.pos_weight = torch.tensor(p["pos_weight"], dtype=torch.float32, device=device)
        self.augment_generator = torch.Generator()
        self.history, self.best_loss, self.best_epoch = [], math.inf, 0
        self.start = (0, 0, {"loss": 0.0, "batches": 0, "seconds": 0.0})
        if self.state is not None:
            state = self.state
            try:
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
                if self.amp and state.get("scaler"):
                    self.scaler.load_state_dict(state["scaler"])
                checkpoints.restore_rng(state, {"augment": self.augment_generator})
            except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
                raise TrainingError(f"{self.run_dir / 'last.hdf5'}: the training state does not fit this model "
                                    f"({type(err).__name__}: {str(err)[:100]}); start a new run from best.hdf5 "
                                    "with --restore-from") from None
            self.start = (state["epoch"], state["position"], state["epoch_sums"])
            self.history, self.best_loss, self.best_epoch = state["history"], state["best_loss"], state["best_epoch"]
        self.network = model
        if self.world > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        workers = p["dataloader_params"]["num_workers"]
        if workers is None:

            workers = default_num_workers(self.world)
        self.train_batches, self.valid_batches = BatchList(), BatchList()
        self.loaders = [DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                                   persistent_workers=workers > 0, pin_memory=device.type == "cuda")
                        for dataset, batches in ((self.train_set, self.train_batches),
                                                 (self.valid_set, self.valid_batches))]

    # -- the loop -------------------------------------------------------------------
    def _epochs(self):
        from tqdm.auto import tqdm

        p, rank = self.params, self.rank
        writer = self._writer() if rank == 0 else None
        if rank == 0:
            checkpoints.write_json(self.run_dir / "trainer_params.json", p)
        start_epoch, position, sums = self.start
        for epoch in range(start_epoch, p["epochs"]):
            started = time.time() - sums.get("seconds", 0.0)
            lr = self.optimizer.param_groups[0]["lr"]
            sums = self._train_epoch(epoch, position, sums, started, lr, tqdm)
            position = 0
            if self.world > 1:       # BatchNorm statistics: rank 0's are the model's (as DDP's forward does)
                for buffer in self.model.buffers():
                    dist.broadcast(buffer, 0)
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": sums["loss"] / max(sums["batches"], 1)}
            self._recalibrate_batchnorm()
            row.update(self._validate())
            row["seconds"] = round(time.time() - started, 3)
            self.scheduler.step(row["valid_loss"])
            row["best"] = int(row["valid_loss"] < self.best_loss)
            self.history.append(row)
            sums = {"loss": 0.0, "batches": 0, "seconds": 0.0}
            if row["best"]:
                self.best_loss, self.best_epoch = row["valid_loss"], epoch + 1
                if rank == 0:
                    checkpoints.save_checkpoint(self.run_dir / "best.hdf5", self.model, p, p["model_name"])
            self._save_last(epoch + 1, 0, sums)
            if rank == 0:
                self._report(row, writer, tqdm)
            if self.callback is not None:
                self.callback({"event": "epoch", "epoch": epoch + 1, "row": row, "rank": rank})
        if writer is not None:
            writer.close()
        if self.world > 1:
            dist.barrier()
        return TrainResult(self.run_dir, self.run_dir / "best.hdf5", self.run_dir / "last.hdf5",
                           self.history, self.best_epoch, self.best_loss, p, self.model.eval())

    def _train_epoch(self, epoch, position, sums, started, lr, tqdm):
        """Train from batch `position` to the end of `epoch`; returns the running loss sums."""
        p, rank, world, device = self.params, self.rank, self.world, self.device
        seed, every = p["seed"], p.get("checkpoint_every") or 0
        plan = batch_plan(len(self.train_set), p["dataloader_params"]["batch_size"], seed,
                          epoch)[:p.get("max_batches") or None]
        self.train_batches.batches = [batch[rank::world] for batch in plan[position:]]
        self.network.train()
        criterion = torch.nn.BCEWithLogitsLoss(pos_weight=self.pos_weight)
        bar = tqdm(total=len(plan), initial=position, desc=f"epoch {epoch + 1}/{p['epochs']}", leave=False,
                   disable=not (self.progress and rank == 0))
        for index, (images, targets) in enumerate(self.loaders[0], start=position):
            torch.manual_seed(mix_seed(seed, epoch, index, rank))        # dropout
            self.augment_generator.manual_seed(mix_seed(seed, epoch, index, rank, 1))
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            images = augment_batch(images, p["data_aug"], self.augment_generator)
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.network(images)
            loss = criterion(logits.float(), targets)
            value = float(_all_sum(loss.detach().clone(), world)) / world
            if not math.isfinite(value):
                raise TrainingError(
                    f"the training loss became {value} at epoch {epoch + 1}, batch {index + 1}; training "
                    f"stopped; {self._saved_state()}. Try a lower lr, or check the images for extreme values")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            sums = {"loss": sums["loss"] + value, "batches": sums["batches"] + 1}
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.1e}")
            if self.callback is not None:
                self.callback({"event": "batch", "epoch": epoch + 1, "batch": index + 1, "loss": value,
                               "lr": lr, "rank": rank})
            if every and (index + 1) % every == 0 and index + 1 < len(plan):
                self._save_last(epoch, index + 1, {**sums, "seconds": time.time() - started})
        bar.close()
        return sums

    def _saved_state(self):
        """What the run folder really holds to go on from, in words (for the NaN-loss message)."""
        last, best = self.run_dir / "last.hdf5", self.run_dir / "best.hdf5"
        if last.is_file():
            return f"{last} keeps the last good state (resume with --resume {self.run_dir})"
        if best.is_file():
            return f"{best} keeps the best model so far; no resumable state was saved"
        return "nothing was saved yet (no checkpoint before this batch)"

    def _recalibrate_batchnorm(self):
        """Exact BatchNorm statistics from evenly spread training crops (same on every rank)."""
        count = min(int(self.params.get("bn_recalibration_crops", 0) or 0), len(self.train_set))
        if count <= 0:
            return
        indices = np.linspace(0, len(self.train_set) - 1, count).round().astype(int)
        size = self.params["dataloader_params"]["batch_size"]

        def batches():
            for start in range(0, count, size):
                yield torch.stack([self.train_set[int(i)][0] for i in indices[start:start + size]])

        recalibrate_batchnorm(self.model, batches())

    @torch.no_grad()
    def _validate(self):
        """Loss (mean over every validation crop and class), accuracy and F1 per class."""
        p, device, valid_set = self.params, self.device, self.valid_set
        plan = batch_plan(len(valid_set), p["dataloader_params"]["batch_size"], 0, 0, shuffle=False,
                          drop_last=False)[:p.get("max_batches") or None]
        self.valid_batches.batches = [b[self.rank::self.world] for b in plan if b[self.rank::self.world]]
        self.model.eval()
        classes = valid_set.num_classes
        totals = torch.zeros(2 + 4 * classes, dtype=torch.float64)
        for images, targets in self.loaders[1]:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(images).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, targets, pos_weight=self.pos_weight, reduction="sum")
            predicted, truth = logits > 0, targets > 0.5
            counts = torch.stack([(predicted & truth).sum(0), (predicted & ~truth).sum(0),
                                  (~predicted & truth).sum(0), (~predicted & ~truth).sum(0)])
            totals += torch.cat([torch.stack([loss.double().cpu(), torch.tensor(float(targets.numel()),
                                 dtype=torch.float64)]), counts.flatten().double().cpu()])
        totals = _all_sum(totals, self.world).numpy()
        metrics = classification_metrics(totals[2:].reshape(4, classes), valid_set.class_names)
        row = {"valid_loss": float(totals[0] / totals[1])}
        row["valid_accuracy"] = float(np.mean([metrics[f"accuracy_{n}"] for n in valid_set.class_names]))
        row.update({f"valid_{key}": value for key, value in metrics.items()})
        return row

    def _save_last(self, epoch, position, sums):
        """Write ``last.hdf5`` (rank 0 only): weights plus everything needed to resume."""
        if self.rank != 0:
            return
        state = {"format": 1, "epoch": epoch, "position": position, "epoch_sums": sums,
                 "history": self.history, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                 "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                 "world_size": self.world}
        checkpoints.save_checkpoint(self.run_dir / "last.hdf5", self.model, self.params,
                                    self.params["model_name"], state, self.optimizer,
                                    {"augment": self.augment_generator})

    def _writer(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:        # tensorboard is an optional extra: silent without it
            return None
        return SummaryWriter(str(self.run_dir / "logs"))

    def _report(self, row, writer, tqdm):
        names = self.params["class_names"]
        checkpoints.write_history(self.run_dir / "history.csv", self.history)
        last = row["epoch"] == self.params["epochs"]
        if last or time.monotonic() - getattr(self, "_plotted", -math.inf) > 60:   # plotting takes ~1 s
            checkpoints.plot_history(self.run_dir / "history.png", self.history, names)
            self._plotted = time.monotonic()
        f1 = ", ".join(f"{n} {row[f'valid_f1_{n}']:.3f}" for n in names)
        tqdm.write(f"epoch {row['epoch']}/{self.params['epochs']}: train loss {row['train_loss']:.4f}, "
                   f"valid loss {row['valid_loss']:.4f}{' (best)' if row['best'] else ''}, "
                   f"lr {row['lr']:.1e}, valid F1 {f1}, {row['seconds']:.0f} s")
        if writer is not None:
            for key in ("train_loss", "valid_loss", "lr", "valid_accuracy"):
                writer.add_scalar(key, row[key], row["epoch"])
            for n in names:
                writer.add_scalar(f"f1/{n}", row[f"valid_f1_{n}"], row["epoch"])


def _restore(model, path):
    """Load the weights of the zoo at `path` into `model` (all but linear1 if the classes differ)."""
    source, _ = load_zoo(path)
    if source.in_channels != model.in_channels:
        raise TrainingError(f"{path}: the model takes {source.in_channels} input channel(s), the data "
                            f"have {model.in_channels}")
    weights = source.state_dict()
    if source.num_classes != model.num_classes:
        weights = {k: v for k, v in weights.items() if not k.startswith("linear1.")}
        print(f"{path}: {source.num_classes} classes, the data have {model.num_classes}: restoring every "
              "layer but linear1, which starts from random weights")
    model.load_state_dict(weights, strict=source.num_classes == model.num_classes)


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
