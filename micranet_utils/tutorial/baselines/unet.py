"""U-Net: the fully supervised baseline, trained on pixel masks.

The architecture and the training recipe are those of the original Actin
baseline (Bilodeau et al. 2022, "baseline/UNet"):

* a first double convolution to ``2**number_filter`` channels, then
  ``depth - 1`` contracting steps (max-pool 2, double convolution, channels
  doubled) and as many expanding steps (2x2 transposed convolution, centre
  crop of the skip connection, concatenation, double convolution);
* a double convolution is (3x3 conv, padding 1 -> BatchNorm -> ReLU) x 2;
* a 1x1 convolution head and a sigmoid: one probability map per class;
* Adam (lr 1e-4), mean squared error between the sigmoid maps and the binary
  masks, batch 32, flips and the intensity augmentations of the data loader,
  best model kept by validation loss.

Module names follow the original (``firstConvolution``, ``contractingPath``,
``expandingPath``, ``lastConv``), so a published ``UNet`` zoo group loads with
``strict=True``.
"""

import numpy as np
import torch
from torch import nn

from ...io.zoo import read_group, save_zoo
from . import common

GROUP = "UNet"
"""str: HDF5 group of the U-Net weights in a model zoo (as in ``ActinModelZoo.hdf5``)."""

ACTIN_MODEL_PARAMS = {"in_channels": 1, "out_channels": 2, "depth": 4, "number_filter": 4}
"""dict: the original's U-Net configuration for Actin (16 filters in the first layer)."""


class _DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) twice; the weights live in ``self.conv``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        layers = []
        for cin in (in_channels, out_channels):
            layers += [nn.Conv2d(cin, out_channels, kernel_size=3, padding=1),
                       nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return self.conv(x)


class _Down(nn.Module):
    """Max-pool by 2, then a double convolution (``conv.0`` pool, ``conv.1`` convs)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Sequential(nn.MaxPool2d(2), _DoubleConv(in_channels, out_channels))

    def forward(self, x):
        return self.conv(x)


class _Up(nn.Module):
    """Transposed convolution up by 2, concatenation with the skip, double convolution."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.expand = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = _DoubleConv(in_channels, out_channels)

    def forward(self, x, skip):
        x = self.expand(x)
        skip = center_crop(skip, x.shape[-2:])
        return self.conv(torch.cat([x, skip], dim=1))


def center_crop(tensor, shape):
    """Central ``shape`` window of the last two axes of `tensor`.

    Parameters
    ----------
    tensor : Tensor, shape (N, C, H, W)
    shape : tuple of int
        (h, w) with h <= H and w <= W.

    Returns
    -------
    Tensor, shape (N, C, h, w)
    """
    top = (tensor.shape[-2] - shape[0]) // 2
    left = (tensor.shape[-1] - shape[1]) // 2
    return tensor[..., top:top + shape[0], left:left + shape[1]]


class UNet(nn.Module):
    """The original's U-Net, with sigmoid outputs.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for Actin).
    out_channels : int
        One output map per class (2 for Actin: rings, fibers).
    number_filter : int
        The first level has ``2**number_filter`` filters; each deeper level doubles it.
    depth : int
        Number of levels (``depth - 1`` poolings); H and W should be multiples of
        ``2**(depth - 1)``.

    Notes
    -----
    Input (N, in_channels, H, W) float; output (N, out_channels, H, W) in [0, 1].
    ``num_classes`` and ``in_channels`` attributes let :func:`micranet_utils.io.zoo.save_zoo`
    write the model.

    Examples
    --------
    >>> UNet(**ACTIN_MODEL_PARAMS)(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 2, 64, 64])
    """

    def __init__(self, in_channels=1, out_channels=2, number_filter=4, depth=4):
        super().__init__()
        if min(in_channels, out_channels, depth) < 1 or number_filter < 0:
            raise ValueError(f"invalid U-Net configuration: in_channels={in_channels}, "
                             f"out_channels={out_channels}, number_filter={number_filter}, depth={depth}")
        self.in_channels, self.num_classes = int(in_channels), int(out_channels)
        self.depth, self.number_filter = int(depth), int(number_filter)
        widths = [2 ** (number_filter + level) for level in range(depth)]
        self.firstConvolution = _DoubleConv(in_channels, widths[0])
        self.contractingPath = nn.ModuleList(
            _Down(widths[level], widths[level + 1]) for level in range(depth - 1))
        self.expandingPath = nn.ModuleList(
            _Up(widths[level + 1], widths[level]) for level in reversed(range(depth - 1)))
        self.lastConv = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x):
        x = self.firstConvolution(x)
        skips = [x]
        for down in self.contractingPath:
            x = down(x)
            skips.append(x)
        skips.pop()                       # the bottom level is not a skip connection
        for up in self.expandingPath:
            x = up(x, skips.pop())
        return torch.sigmoid(self.lastConv(x))

    def model_params(self):
        """The constructor arguments, in the original's ``model_params`` names."""
        return {"in_channels": self.in_channels, "out_channels": self.num_classes,
                "depth": self.depth, "number_filter": self.number_filter}


def train_unet(train_data, valid_data=None, epochs=10, batch_size=32, lr=1e-4, seed=0,
               device="cpu", max_seconds=None, progress=True):
    """Train a U-Net on pixel masks with the original's recipe.

    Parameters
    ----------
    train_data, valid_data : torch Dataset
        Items ``(image, target, masks)``: image float (C_in, S, S), masks float
        (C, S, S) in {0, 1} (e.g. ``CropDataset(..., return_masks=True)``);
        the image-level target is ignored. `valid_data` (no augmentation) picks
        the best epoch; without it the last epoch is kept.
    epochs : int
        Passes over `train_data` (the original: 700).
    batch_size : int
        The original: 32. The last incomplete batch is dropped when there is
        more than one batch (BatchNorm needs more than one crop).
    lr : float
        Adam learning rate (original 1e-4); reduced by 10 when the validation
        loss stalls for 10 epochs, as in the original.
    seed : int
    device : str or torch.device
    max_seconds : float, optional
        Stop after the epoch during which this much time has passed.
    progress : bool
        Show a tqdm bar over epochs.

    Returns
    -------
    model : UNet
        In eval mode, with the best weights.
    info : dict
        ``train_seconds``, ``epochs`` (run), ``best_epoch``, ``history``
        (list of dicts with ``epoch``, ``train_loss``, ``valid_loss``, ``lr``),
        and ``params`` (trainer_params for the zoo).
    """
    first_image, _, first_masks = train_data[0]
    model = UNet(in_channels=first_image.shape[0], out_channels=first_masks.shape[0],
                 number_filter=4, depth=4)
    criterion = nn.MSELoss()

    def loss_fn(model, batch, device):
        images, _, masks = batch
        return criterion(model(images.to(device)), masks.to(device))

    model, info = common.fit(model, loss_fn, train_data, valid_data, epochs=epochs,
                             batch_size=batch_size, lr=lr, seed=seed, device=device,
                             max_seconds=max_seconds, progress=progress, desc="U-Net")
    info["params"] = common.trainer_params(
        "unet", model.model_params(), size=int(first_image.shape[-1]), lr=lr, epochs=epochs,
        batch_size=batch_size, seed=seed, info=info, extra={"loss": "MSELoss", "pos_weight": [1.0]})
    return model, info


def predict_unet(model, images, batch_size=16, device="cpu"):
    """Probability maps of a U-Net.

    Parameters
    ----------
    model : UNet
    images : ndarray or Tensor, shape (N, C_in, H, W), float
    batch_size : int
    device : str or torch.device

    Returns
    -------
    ndarray of float32, shape (N, C, H, W)
        Sigmoid outputs in [0, 1]; threshold at 0.5 for masks.
    """
    return common.predict_batched(model, images, batch_size=batch_size, device=device)


def save_unet(path, model, params, name=None):
    """Write a U-Net into group ``"UNet"`` of a model-zoo HDF5 file (atomically).

    Other groups of an existing file are kept. ``params`` are trainer_params;
    ``model_params`` holds the original's U-Net arguments.
    """
    params = dict(params)
    params["model_params"] = {**(params.get("model_params") or {}), **model.model_params()}
    return save_zoo(path, model, params, name=name, group=GROUP)


def load_unet(path, name=None, group=GROUP, device="cpu"):
    """Load a U-Net from a model-zoo HDF5 file (ours or the published ``ActinModelZoo.hdf5``).

    Returns
    -------
    model : UNet
        In eval mode, loaded with ``strict=True``.
    params : dict
        The trainer_params.

    Raises
    ------
    ZooError
        When the file, the group or the weights do not fit a U-Net.
    """
    state, params = read_group(path, name, group)
    model_params = {**ACTIN_MODEL_PARAMS, **{k: v for k, v in (params.get("model_params") or {}).items()
                                            if k in ACTIN_MODEL_PARAMS}}
    model = UNet(**{k: int(v) for k, v in model_params.items()})
    common.load_weights(model, state, path, group, f"U-Net weights for {model_params}")
    return model.to(device).eval(), params


def masks_from_probabilities(probabilities, threshold=0.5):
    """Binary masks from U-Net probability maps: ``probabilities >= threshold``."""
    return np.asarray(probabilities) >= threshold


__all__ = ["UNet", "ACTIN_MODEL_PARAMS", "GROUP", "train_unet", "predict_unet", "save_unet",
           "load_unet", "masks_from_probabilities", "center_crop"]


