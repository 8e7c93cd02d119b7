"""What the trained baselines share: the training loop, batched prediction, cached demo models.

The loop is the original's skeleton (Adam, ReduceLROnPlateau, best model by
mean validation loss) with three documented corrections: the scheduler is fed
the current validation loss (the original fed the running minimum), the
validation pass never updates BatchNorm statistics, and those statistics are
re-estimated from training crops before each validation (dark images; see
:mod:`micranet_utils.model.batchnorm`).
"""

import copy
import datetime
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ...model.batchnorm import recalibrate_batchnorm
from ...base.errors import ZooError

SCHEDULER = {"factor": 0.1, "patience": 10, "threshold": 0.01, "min_lr": 1e-5}
"""dict: the original's ReduceLROnPlateau settings."""


def _freeze_batchnorm(model):
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _mean_loss(model, loss_fn, loader, device, train_mode):
    if train_mode:             # detection models only return losses in train mode
        model.train()
        _freeze_batchnorm(model)
    else:
        model.eval()
    losses = []
    with torch.no_grad():
        for batch in loader:
            losses.append(float(loss_fn(model, batch, device)))
    return float(np.mean(losses)) if losses else float("nan")


def fit(model, loss_fn, train_data, valid_data=None, epochs=10, batch_size=32, lr=1e-4, seed=0,
        device="cpu", max_seconds=None, progress=True, desc="training", collate_fn=None,
        valid_in_train_mode=False, bn_forward=None, bn_crops=256):
    """Train `model` by minimising ``loss_fn(model, batch, device)``.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(model, batch, device) -> scalar Tensor``.
    train_data, valid_data : torch Dataset
        `valid_data` picks the best epoch (lowest mean loss); without it the last is kept.
    epochs, batch_size, lr, seed : see :func:`micranet_utils.tutorial.baselines.unet.train_unet`
    device : str or torch.device
    max_seconds : float, optional
        Stop after the epoch during which this much time has passed.
    progress : bool
    desc : str
        Label of the progress bar.
    collate_fn : callable, optional
        For detection targets (lists of dicts).
    valid_in_train_mode : bool
        Compute the validation loss in train mode (BatchNorm frozen), as
        detection models only return losses in train mode.
    bn_forward : callable, optional
        ``bn_forward(model, images)`` for :func:`~micranet_utils.model.batchnorm.recalibrate_batchnorm`
        (default: the model itself).
    bn_crops : int
        Before each validation the BatchNorm statistics are re-estimated from
        this many training images (the first item of each sample), as
        MICRA-Net's training does; 0 disables it.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, with the weights of the best epoch.
    info : dict
        ``train_seconds``, ``epochs``, ``best_epoch``, ``history``.
    """
    if len(train_data) == 0:
        raise ValueError("the training set holds no crops")
    device = torch.device(device)
    torch.manual_seed(seed)
    model = model.to(device)
    generator = torch.Generator().manual_seed(seed)
    batch_size = max(1, min(int(batch_size), len(train_data)))
    train_loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=len(train_data) > batch_size, collate_fn=collate_fn)
    valid_loader = None
    if valid_data is not None and len(valid_data) > 0:
        valid_loader = DataLoader(valid_data, batch_size=batch_size, shuffle=False,
                                  collate_fn=collate_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", **SCHEDULER)
    history, best_loss, best_state, best_epoch = [], np.inf, None, 0
    bn_images = None
    if bn_crops:
        picks = np.unique(np.linspace(0, len(train_data) - 1, min(len(train_data), int(bn_crops))).round())
        bn_images = torch.stack([torch.as_tensor(train_data[int(i)][0]) for i in picks])
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        train_losses = []
        for batch in train_loader:
            loss = loss_fn(model, batch, device)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_losses.append(loss.item())
        train_loss = float(np.mean(train_losses))
        if bn_images is not None:
            recalibrate_batchnorm(model, bn_images, forward=bn_forward)
        valid_loss = (_mean_loss(model, loss_fn, valid_loader, device, valid_in_train_mode)
                      if valid_loader is not None else train_loss)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss,
                        "lr": optimizer.param_groups[0]["lr"]})
        scheduler.step(valid_loss)
        if valid_loader is None or valid_loss < best_loss:
            best_loss, best_epoch = valid_loss, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        bar.set_postfix(train=f"{train_loss:.4f}", valid=f"{valid_loss:.4f}")
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    return model.eval(), {"train_seconds": seconds, "epochs": len(history),
                          "best_epoch": best_epoch, "history": history}


def trainer_params(method, model_params, size, lr, epochs, batch_size, seed, info, extra=None):
    """trainer_params for a baseline zoo, in the original's spirit (JSON-serialisable)."""
    now = datetime.datetime.now()
    params = {"model_name": f"{now:%Y%m%d-%H%M%S}_{seed}", "datetime": f"{now:%Y%m%d-%H%M%S}",
              "method": method, "size": int(size), "lr": lr, "epochs": int(epochs),
              "epochs_run": int(info["epochs"]), "best_epoch": int(info["best_epoch"]),
              "train_seconds": float(info["train_seconds"]), "seed": int(seed),
              "dataloader_params": {"batch_size": int(batch_size), "shuffle": True, "drop_last": True},
              "scheduler": dict(SCHEDULER), "model_params": dict(model_params)}
    params.update(extra or {})
    return params


def predict_batched(model, images, batch_size=16, device="cpu"):
    """Run a dense model (N, C_in, H, W) -> (N, C, H, W) over `images` in batches, no grad.

    Returns
    -------
    ndarray of float32
    """
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    model = model.to(device).eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            outputs.append(model(images[start:start + batch_size].to(device)).cpu().numpy())
    return np.concatenate(outputs).astype(np.float32)


def load_weights(model, state, path, group, what):
    """``model.load_state_dict(state, strict=True)``; a mismatch becomes a :class:`ZooError`.

    Parameters
    ----------
    model : torch.nn.Module
    state : dict of str to Tensor
        From :func:`micranet_utils.io.zoo.read_group`.
    path : str or Path
        The zoo file, for the message.
    group : str
        Its group, for the message.
    what : str
        What the group should hold, for the message, e.g. ``"U-Net weights for {...}"``.

    Returns
    -------
    torch.nn.Module
        `model`, its weights loaded.
    """
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ZooError(f"{path}: group {group!r} does not hold {what}: {first}") from None
    return model


