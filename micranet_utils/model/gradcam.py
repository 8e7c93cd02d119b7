"""Grad-CAM "local maps" from all eight convolutional layers of MICRA-Net.

MICRA-Net is trained with image-level labels only. To see *where* it found a
class, Grad-CAM weighs each layer's feature maps by how much the class score
depends on them. :func:`local_maps` does this for the eight layers 1a ... 4b at
once, for every image and every requested class.

For one image, one class ``c`` and one layer with post-ReLU activation
``A`` of shape (K, h, w):

1. ``G = d logit_c / d A`` (the gradient of the *logit*, before the sigmoid);
2. ``alpha_k = mean over (h, w) of G_k`` (one weight per channel);
3. ``M = sum_k alpha_k * A_k`` (shape (h, w)); ``M = max(M, 0)`` for layer 4b only;
4. min-max normalisation ``(M - min M) / (max M - min M + 1e-12)`` (optional);
5. upsampling to the input size by repeating each value ``s`` times along
   rows and columns, ``s`` = 1, 1, 2, 2, 4, 4, 8, 8 (the layer's stride).

This is exactly what the original per-image ``class_activation_map`` computes,
for any input whose height and width are multiples of 8.

Inputs of other sizes
---------------------
The network accepts any size; max pooling then drops the last row/column of
odd-sized feature maps, so a layer of stride ``s`` has ``h = H // s`` rows.
Input pixel ``(y, x)`` takes the value of cell ``(min(y // s, h - 1),
min(x // s, w - 1))``: each cell is repeated ``s`` times and the few trailing
pixels (fewer than ``s``) that pooling ignored repeat the last cell (edge
padding). On multiples of 8 this is exactly the original repetition. The
original itself used the factor ``size // w`` from the width for both axes, so
it only worked on square, multiple-of-8 inputs.

What differs between the original scripts
-----------------------------------------
One function covers the five published data sets; the differences are
parameters:

==========  ===============  ==================  =============================
data set    classes looped   normalisation       prediction returned
==========  ===============  ==================  =============================
Actin       all (2)          min-max             ``sigmoid(logit) > 0.5``
CTC         all (6)          min-max             ``sigmoid(logit) > 0.5``
MNIST       all (10)         min-max             ``sigmoid(logit) > 0.5``
EM          all (1)          none (commented     probability, later
                             out)                ``>= class_thresholds``
P. vivax    all (1)          none (commented     probability, later
                             out)                ``>= class_thresholds``
==========  ===============  ==================  =============================

Use ``normalize=False`` for EM and P. vivax and
``predicted(logits, params["class_thresholds"], strict=False)`` for their
decision; :func:`original_settings` returns both for a data-set name. The
layer order (sorted keys in CTC/EM/P. vivax, insertion order elsewhere) is the
same 1a ... 4b everywhere. The graphical app of the original always normalises.

How it is computed here
-----------------------
One forward pass per chunk of images, then one backward pass per class with
:func:`torch.autograd.grad` with respect to the eight activations only: no
hooks, no parameter ``.grad`` filled, the graph freed after the last class.
The maps are formed at the layer's resolution and written straight into the
output array. Images are independent in eval mode, so a chunk computes the
same numbers as a loop over single images. On CPU the default chunk holds two
256 x 256 images: on an idle 2-core machine one or two images at a time were
fastest (the activations stay in cache), while on a machine shared with other
jobs larger chunks were (fewer thread synchronisations); two is close to the
best in both cases and keeps the working memory near 300 MB (see
``benchmarks/gradcam.py``). On CUDA, chunks of 32 such images stay on the
device.
"""

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..base.errors import ImageError, MicranetError
from .network import LAYERS

LAYER_STRIDES = (1, 1, 2, 2, 4, 4, 8, 8)
"""tuple of int: how many input pixels one cell of each layer spans, per axis."""

_RELU_LAYERS = {"4b"}
_NORMALIZE_EPS = 1e-12
# Pixels (H * W summed over a chunk) processed per forward pass, per device type.
_CHUNK_PIXELS = {"cpu": 2 * 256 * 256, "cuda": 32 * 256 * 256}
_ORIGINAL = {
    "actin": dict(normalize=True, strict=True),
    "ctc": dict(normalize=True, strict=True),
    "mnist": dict(normalize=True, strict=True),
    "em": dict(normalize=False, strict=False),
    "pvivax": dict(normalize=False, strict=False),
}


def layer_names():
    """The eight layer names, input to output: ``["1a", "1b", ..., "4b"]``."""
    return list(LAYERS)


def sequential_view(model):
    """The same network as an ``nn.Sequential`` with one ``nn.ReLU`` module per layer.

    Grad-CAM libraries (Captum's ``LayerGradCam``, pytorch-grad-cam) hook the
    output of a *module*; in :class:`MICRANet` the ReLU is a function call, so
    the post-ReLU activations have no module of their own. This view shares
    the model's convolution, normalisation and linear modules (and so its
    weights and train/eval state) and adds modules ``relu1a`` ... ``relu4b``.

    Parameters
    ----------
    model : MICRANet

    Returns
    -------
    torch.nn.Sequential
        ``view(x)`` equals ``model(x)``; ``getattr(view, "relu" + name)``
        outputs the activation of layer ``name``.
    """
    parts = []
    for name in LAYERS:
        parts += [(f"conv{name}", getattr(model, f"conv{name}")), (f"bnorm{name}", getattr(model, f"bnorm{name}")),
                  (f"relu{name}", nn.ReLU())]
        if name in ("1b", "2b", "3b"):
            parts.append((f"pool{name}", model.maxpool))
    parts += [("global_pool", model.global_pool), ("flatten", nn.Flatten(1)),
              ("dropout", model.dropout), ("linear1", model.linear1)]
    return nn.Sequential(OrderedDict(parts))


def original_settings(dataset, params=None):
    """Grad-CAM and decision settings the original scripts used for a data set.

    Parameters
    ----------
    dataset : str
        ``"actin"``, ``"ctc"``, ``"em"``, ``"mnist"`` or ``"pvivax"``.
    params : dict, optional
        trainer_params of a model zoo (from :func:`micranet_utils.load_zoo`);
        its ``"class_thresholds"`` are used where the original used them.

    Returns
    -------
    dict
        ``normalize`` (bool, for :func:`local_maps`), ``thresholds`` (float or
        list of float) and ``strict`` (bool, for :func:`predicted`).

    Examples
    --------
    >>> original_settings("em")
    {'normalize': False, 'strict': False, 'thresholds': 0.5}
    """
    key = str(dataset).lower()
    if key not in _ORIGINAL:
        raise MicranetError(f"unknown data set {dataset!r}; known: {', '.join(_ORIGINAL)}")
    settings = dict(_ORIGINAL[key], thresholds=0.5)
    if not settings["strict"] and params and params.get("class_thresholds") is not None:
        settings["thresholds"] = list(params["class_thresholds"])
    return settings


def predicted(logits, thresholds=0.5, *, strict=True):
    """Which classes the classifier calls present.

    Parameters
    ----------
    logits : ndarray or Tensor, shape (B, num_classes)
        Logits as returned by :func:`local_maps`.
    thresholds : float or sequence of float, optional
        Probability threshold, one for all classes or one per class.
    strict : bool, optional
        ``True``: ``sigmoid(logit) > threshold`` (Actin, CTC, MNIST);
        ``False``: ``>=`` (EM and P. vivax with their zoo's ``class_thresholds``).

    Returns
    -------
    ndarray of bool, shape (B, num_classes)

    Examples
    --------
    >>> predicted(np.array([[2.0, -1.0]]))
    array([[ True, False]])
    """
    logits = torch.as_tensor(logits).detach().cpu().float()
    if logits.ndim != 2:
        raise MicranetError(f"logits must have shape (B, num_classes), got {tuple(logits.shape)}")
    probabilities = torch.sigmoid(logits).numpy()
    thresholds = np.asarray(thresholds, dtype=np.float32)
    if thresholds.ndim > 1 or thresholds.size not in (1, logits.shape[1]):
        raise MicranetError(
            f"thresholds: expected one value or {logits.shape[1]} (one per class), got {thresholds.size}")
    return probabilities > thresholds if strict else probabilities >= thresholds


def _as_batch(images, in_channels):
    """Images as a float32 tensor (B, C, H, W), validated once."""
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        images = np.asarray(images)
    kind = "tensor" if isinstance(images, torch.Tensor) else "array"
    shape = tuple(images.shape)
    if len(shape) == 3:
        if in_channels != 1:
            raise ImageError(
                f"images: got an {kind} of shape {shape} (B, H, W) without a channel axis; "
                f"this MICRA-Net expects {in_channels} channels, pass shape (B, {in_channels}, H, W)")
        images = images[:, None]
    elif len(shape) != 4:
        raise ImageError(
            f"images: expected a batch of shape (B, {in_channels}, H, W), got an {kind} of shape {shape}"
            + ("; for one image use images[None]" if len(shape) == 2 else ""))
    batch = torch.as_tensor(images).detach()
    if batch.shape[1] != in_channels:
        raise ImageError(f"images have {batch.shape[1]} channel(s) (shape {shape}); "
                         f"this MICRA-Net expects {in_channels}")
    if batch.shape[0] == 0:
        raise ImageError("images: the batch is empty")
    if min(batch.shape[-2:]) < 8:
        raise ImageError(f"images are {batch.shape[-2]}x{batch.shape[-1]} pixels; MICRA-Net needs at least 8x8")
    if batch.is_complex():
        raise ImageError(f"images: complex values ({batch.dtype}) cannot be fed to the model")
    if batch.is_floating_point() and not torch.isfinite(batch).all():
        raise ImageError("images contain NaN or infinite values")
    return batch


def _as_classes(classes, num_classes):
    if classes is None:
        return list(range(num_classes))
    if np.ndim(classes) == 0:
        classes = [classes]
    chosen = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)) or int(c) != c or not 0 <= int(c) < num_classes:
            raise MicranetError(f"classes: {c!r} is not a class index of this model (0 to {num_classes - 1})")
        chosen.append(int(c))
    if not chosen:
        raise MicranetError("classes: the list is empty")
    return chosen


def _write_upsampled(out, cam, stride):
    """Write `cam` (b, h, w) into `out` (b, H, W), each cell repeated `stride` times.

    Trailing rows/columns that the pooling dropped (fewer than `stride`) take
    the last cell's value.
    """
    b, h, w = cam.shape
    covered = out[:, :h * stride, :w * stride]
    covered.view(b, h, stride, w, stride).copy_(cam[:, :, None, :, None].expand(b, h, stride, w, stride))
    if out.shape[1] > h * stride:
        out[:, h * stride:, :w * stride] = out[:, h * stride - 1:h * stride, :w * stride]
    if out.shape[2] > w * stride:
        out[:, :, w * stride:] = out[:, :, w * stride - 1:w * stride]


def _chunk_maps(model, chunk, classes, normalize, out):
    """Fill `out` (b, C, 8, H, W) for one chunk (b, C_in, H, W); return the logits (b, num_classes)."""
    chunk = chunk.requires_grad_(True)  # builds the graph even when the parameters are frozen
    with torch.enable_grad():
        logits, activations = model.forward_with_activations(chunk)
        for j, c in enumerate(classes):
            gradients = torch.autograd.grad(logits[:, c].sum(), activations,
                                            retain_graph=j < len(classes) - 1)
            with torch.no_grad():
                for layer, (name, stride, act, grad) in enumerate(
                        zip(LAYERS, LAYER_STRIDES, activations, gradients)):
                    alpha = grad.mean(dim=(2, 3))                          # (b, K)
                    cam = torch.einsum("bk,bkhw->bhw", alpha, act)        # (b, h, w)
                    if name in _RELU_LAYERS:
                        cam = cam.clamp_(min=0)
                    if normalize:
                        low = cam.amin(dim=(1, 2), keepdim=True)
                        high = cam.amax(dim=(1, 2), keepdim=True)
                        cam = (cam - low) / (high - low + _NORMALIZE_EPS)
                    _write_upsampled(out[:, j, layer], cam, stride)
            del gradients
    return logits.detach()


def _auto_chunk_size(device, height, width):
    pixels = _CHUNK_PIXELS.get(device.type, _CHUNK_PIXELS["cuda"])
    return max(1, pixels // (height * width))


def _module_modes(model):
    return [(module, module.training) for module in model.modules()]


def local_maps(model, images, classes=None, *, normalize=True, chunk_size=None, device=None,
               progress=False):
    """Grad-CAM maps of every image, class and layer, as the original computed them.

    Parameters
    ----------
    model : MICRANet
        Any :class:`micranet_utils.MICRANet`. It is used in eval mode; its
        train/eval state, device and parameters are left as they were.
    images : ndarray or Tensor, shape (B, C_in, H, W), or (B, H, W) for 1 channel
        Images already normalised as the model expects (float32; other numeric
        types are converted). Any H, W >= 8; see the module notes for sizes
        that are not multiples of 8.
    classes : int or sequence of int, optional
        Class indices to compute maps for, in the order wanted; all by default.
    normalize : bool, optional
        Min-max normalise each map to [0, 1] (Actin, CTC, MNIST). ``False``
        reproduces EM and P. vivax, which skip it.
    chunk_size : int, optional
        Images per forward pass. Default: chosen per device and image size
        (two 256 x 256 images at a time on CPU, 32 on CUDA; more when the
        images are smaller), which keeps the working memory on CPU to a few
        hundred MB besides the returned maps.
    device : str or torch.device, optional
        Where to compute. Default (or ``"auto"``): the model's device. Another
        device moves the model there for the call and back afterwards.
    progress : bool, optional
        Show a tqdm progress bar over images.

    Returns
    -------
    maps : ndarray of float32, shape (B, C, 8, H, W)
        ``maps[b, j, l]`` is the map of image ``b`` for class ``classes[j]``
        at layer ``LAYERS[l]``; in [0, 1] when `normalize`.
    logits : ndarray of float32, shape (B, num_classes)
        The classifier's logits (all classes), before the sigmoid; see
        :func:`predicted`.

    Examples
    --------
    >>> model = MICRANet(num_classes=2).eval()
    >>> maps, logits = local_maps(model, np.zeros((3, 1, 64, 64), np.float32))
    >>> maps.shape, logits.shape
    ((3, 2, 8, 64, 64), (3, 2))
    """
    batch = _as_batch(images, model.in_channels)
    chosen = _as_classes(classes, model.num_classes)
    home = next(model.parameters()).device
    device = home if device is None or str(device) == "auto" else torch.device(device)
    if chunk_size is None:
        chunk_size = _auto_chunk_size(device, *batch.shape[-2:])
    elif int(chunk_size) < 1:
        raise MicranetError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)

    n, height, width = batch.shape[0], *batch.shape[-2:]
    maps = np.empty((n, len(chosen), len(LAYERS), height, width), np.float32)
    maps_t = torch.from_numpy(maps)
    logits = np.empty((n, model.num_classes), np.float32)
    modes = _module_modes(model)
    bar = tqdm(total=n, desc="Grad-CAM", unit="image", disable=not progress)
    try:
        model.eval()
        if device != home:
            model.to(device)
        for start in range(0, n, chunk_size):
            chunk = batch[start:start + chunk_size].to(device=device, dtype=torch.float32)
            if device.type == "cpu":
                out = maps_t[start:start + chunk_size]
            else:
                out = torch.empty((chunk.shape[0], *maps.shape[1:]), device=device)
            chunk_logits = _chunk_maps(model, chunk, chosen, normalize, out)
            if device.type != "cpu":
                maps_t[start:start + chunk_size].copy_(out)
            logits[start:start + chunk_size] = chunk_logits.cpu().numpy()
            bar.update(chunk.shape[0])
    finally:
        bar.close()
        if device != home:
            model.to(home)
        for module, training in modes:
            module.training = training
    return maps, logits


def _tile_starts(length, tile, overlap):
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def tiled_maps(model, image, tile=1024, overlap=128, normalize=True, device=None):
    """Grad-CAM maps of one image of any size, by overlapping tiles when it is large.

    Parameters
    ----------
    model : MICRANet
    image : ndarray of float32, shape (C_in, H, W)
    tile, overlap : int
        Tile side and overlap between neighbouring tiles, in pixels.
    normalize : bool
        Min-max normalise each map over the whole image (see
        :func:`micranet_utils.model.gradcam.local_maps`).
    device : str or torch.device, optional

    Returns
    -------
    maps : ndarray of float32, shape (C, 8, H, W)
        Averaged over tiles where they overlap, then normalised (if `normalize`).
    logits : ndarray of float32, shape (C,)
        Largest logit over the tiles, per class.
    """
    if not 0 <= overlap < tile:
        raise MicranetError(f"need 0 <= overlap < tile; got tile={tile}, overlap={overlap}")
    height, width = image.shape[1:]
    rows, cols = _tile_starts(height, tile, overlap), _tile_starts(width, tile, overlap)
    if len(rows) == len(cols) == 1:
        maps, logits = local_maps(model, image[None], normalize=normalize, device=device)
        return maps[0], logits[0]
    total = np.zeros((model.num_classes, 8, height, width), np.float32)
    weight = np.zeros((height, width), np.float32)
    logits = np.full(model.num_classes, -np.inf, np.float32)
    for y in rows:
        for x in cols:
            window = (slice(y, y + tile), slice(x, x + tile))
            maps, tile_logits = local_maps(model, image[None, :, window[0], window[1]],
                                           normalize=False, device=device)
            total[(...,) + window] += maps[0]
            weight[window] += 1
            logits = np.maximum(logits, tile_logits[0])
    total /= weight
    if normalize:                                   # as local_maps does, over the stitched image
        low, high = total.min(axis=(2, 3), keepdims=True), total.max(axis=(2, 3), keepdims=True)
        total = (total - low) / (high - low + 1e-12)
    return total, logits
