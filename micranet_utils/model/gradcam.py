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
Two engines give the same maps (within 1e-5 in float32; see the note on
flat maps below). ``local_maps(..., engine=...)`` chooses:

``"fast"`` (the default for a plain :class:`MICRANet` on CPU)
    No autograd at all. One forward pass under ``torch.no_grad()`` keeps the
    activations, the 2x2 max-pool indices and the global max-pool argmax; the
    gradients are then back-propagated by hand, which is exact because the
    network is conv -> BatchNorm (eval) -> ReLU x 8, max pools, a global max
    pool, dropout (identity in eval) and one linear layer:

    1. all classes in one backward pass: the classes are stacked on the batch
       axis and share the ReLU masks, BatchNorm scales and pooling indices,
       one transposed convolution per layer for all of them;
    2. layer 4b's gradient is ``W_linear[c, k]`` at one pixel per channel (the
       global max), so ``alpha_4b = W_linear[c] / (h w)`` costs nothing and
       the gradient at 4a is a scatter of 3 x 3 weight slices instead of a
       transposed convolution;
    3. ``alpha_1a`` only needs the *spatial sum* of conv1b's transposed
       convolution, which is a sum over the 3 x 3 taps of the weight times the
       sum of conv1b's output gradient without one border row/column: the most
       expensive transposed convolution (32 -> 32 at full resolution) is
       replaced by a few reductions;
    4. the maps of all classes of a layer come from one batched matrix
       product at the layer's resolution and are written once, upsampled,
       into the output.

    The backward itself is :func:`micranet_utils.model.exported_maps.grad_cam_weights`,
    shared with the bioimage.io model (``MicranetMaps(backward="batched")``);
    it lives there because that module may import nothing of this package.
    Since the classes share one batch, a class's maps round slightly
    differently (below 1e-6) depending on which other classes are asked for;
    the autograd engine gives bit-identical maps for any subset.

    The forward runs in the default (contiguous) memory format, the transposed
    convolutions in channels_last. The forward must not use channels_last: its
    different rounding is amplified by the min-max normalisation of maps with a
    tiny range (a layer-1a map of range 4e-7 moved by 6e-2).

``"autograd"`` (the reference, and the default for anything else)
    One forward pass per chunk of images, then one backward pass per class
    with :func:`torch.autograd.grad` with respect to the eight activations
    only: no hooks, no parameter ``.grad`` filled, the graph freed after the
    last class. Works for any model with MICRA-Net's
    ``forward_with_activations`` (subclasses, replaced BatchNorms, models with
    hooks), on any device.

``"auto"`` (default) takes ``"fast"`` when the model is exactly a
:class:`MICRANet` built from the standard modules, without hooks, on CPU;
``"autograd"`` otherwise (the fast engine is not yet checked on a GPU).

Both engines compute the maps at the layer's resolution and write them straight
into the output array. Images are independent in eval mode, so a chunk computes
the same numbers as a loop over single images. Default chunks on CPU: two
256 x 256 images for autograd, four for the fast engine (whose backward batch
is four times the number of classes); on CUDA, 32 such images.

A map whose values are all nearly equal (range below about 1e-5 of its values)
is ill-conditioned after min-max normalisation: float32 rounding, different in
any two implementations (this one and the per-image reference included), is
divided by that range. The 1e-5 agreement holds for all other maps.
"""

from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..base.errors import ImageError, MicranetError
from .exported_maps import grad_cam_weights
from .network import LAYERS, MICRANet

LAYER_STRIDES = (1, 1, 2, 2, 4, 4, 8, 8)
"""tuple of int: how many input pixels one cell of each layer spans, per axis."""

_RELU_LAYERS = {"4b"}
_NORMALIZE_EPS = 1e-12
# Pixels (H * W summed over a chunk) processed per forward pass, per device type.
_CHUNK_PIXELS = {"cpu": 2 * 256 * 256, "cuda": 32 * 256 * 256}
_FAST_CHUNK_PIXELS = {"cpu": 4 * 256 * 256, "cuda": 32 * 256 * 256}
ENGINES = ("auto", "fast", "autograd")
"""tuple of str: the values of ``local_maps(..., engine=)``."""
_POOL_AFTER = {"1b", "2b", "3b"}
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
    """Write `cam` (..., h, w) into `out` (..., H, W), each cell repeated `stride` times.

    Trailing rows/columns that the pooling dropped (fewer than `stride`) take
    the last cell's value. `out` may be any strided view; it is written in place.
    """
    h, w = cam.shape[-2:]
    covered = out[..., :h * stride, :w * stride]
    expanded = cam[..., :, None, :, None].expand(*cam.shape[:-2], h, stride, w, stride)
    covered.unflatten(-1, (w, stride)).unflatten(-3, (h, stride)).copy_(expanded)
    if out.shape[-2] > h * stride:
        out[..., h * stride:, :w * stride] = out[..., h * stride - 1:h * stride, :w * stride]
    if out.shape[-1] > w * stride:
        out[..., :, w * stride:] = out[..., :, w * stride - 1:w * stride]


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


# -- the fast engine: a hand-written backward for all classes at once ---------------------------------


def _bn_scale(bn):
    """d bn(z) / dz per channel in eval mode: ``weight / sqrt(running_var + eps)``."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale * bn.weight if bn.weight is not None else scale


def _forward_for_backward(model, x):
    """Eval forward without a graph: logits, the 8 activations, pool indices, the global max's argmax."""
    activations, pool_indices = [], {}
    for name in LAYERS:
        x = torch.relu_(getattr(model, f"bnorm{name}")(getattr(model, f"conv{name}")(x)))
        activations.append(x)
        if name in _POOL_AFTER:
            x, pool_indices[name] = F.max_pool2d(x, 2, return_indices=True)
    pooled, argmax = F.adaptive_max_pool2d(x, 1, return_indices=True)
    logits = model.linear1(model.dropout(pooled.flatten(1)))
    return logits, activations, pool_indices, argmax.flatten(1)


def _emit(out, layer, activation, alpha, normalize):
    """Maps of all classes of one layer: ``sum_k alpha[b, c, k] A[b, k]``, then ReLU (4b) and min-max."""
    b, k, h, w = activation.shape
    cam = torch.bmm(alpha, activation.reshape(b, k, h * w))               # (b, C, h w)
    if LAYERS[layer] in _RELU_LAYERS:
        cam.clamp_(min=0)
    if normalize:
        low = cam.amin(dim=2, keepdim=True)
        high = cam.amax(dim=2, keepdim=True)
        cam.sub_(low).div_(high - low + _NORMALIZE_EPS)
    _write_upsampled(out[:, :, layer], cam.view(b, -1, h, w), LAYER_STRIDES[layer])


@torch.no_grad()
def _chunk_maps_fast(model, chunk, classes, normalize, out):
    """As :func:`_chunk_maps`, with the hand-written backward of all classes at once (module notes)."""
    model._check_input(chunk)
    logits, activations, pool_indices, argmax = _forward_for_backward(model, chunk)
    alphas = grad_cam_weights(
        activations, [pool_indices[name] for name in LAYERS if name in _POOL_AFTER], argmax,
        [getattr(model, f"conv{name}").weight for name in LAYERS],
        [_bn_scale(getattr(model, f"bnorm{name}")) for name in LAYERS], model.linear1.weight[classes])
    for layer, (activation, alpha) in enumerate(zip(activations, alphas)):
        _emit(out, layer, activation, alpha.contiguous(), normalize)
    return logits


def fast_engine_refusal(model, device):
    """Why the fast engine cannot compute `model`'s maps on `device`, or None when it can.

    The fast engine's hand-written backward holds for exactly MICRA-Net's layers
    in eval mode: a :class:`MICRANet` (not a subclass, which could change the
    forward pass), standard 3x3 convolutions and BatchNorms with running
    statistics, no hooks (a hook could change what autograd would see), on CPU.
    """
    if type(model) is not MICRANet:
        return f"the model is a {type(model).__name__}, not a plain MICRANet"
    if device.type != "cpu":
        return f"the fast engine is only checked on CPU, not on {device.type}"
    for name in LAYERS:
        conv, bn = getattr(model, f"conv{name}"), getattr(model, f"bnorm{name}")
        if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d:
            return f"layer {name} is not a standard Conv2d + BatchNorm2d"
        if (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode) != (
                (3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros"):
            return f"conv{name} is not a 3x3 convolution with padding 1"
        if bn.running_var is None or not bn.track_running_stats:
            return f"bnorm{name} has no running statistics"
    if type(model.linear1) is not nn.Linear or type(model.global_pool) is not nn.AdaptiveMaxPool2d:
        return "the classifier head is not MICRA-Net's"
    if _hook_count(model):
        return "the model has hooks"
    return None


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", ())) for m in model.modules())


def _choose_engine(engine, model, device):
    if engine not in ENGINES:
        raise MicranetError(f"engine must be one of {', '.join(map(repr, ENGINES))}, got {engine!r}")
    if engine == "autograd":
        return engine
    refusal = fast_engine_refusal(model, device)
    if refusal is None:
        return "fast"
    if engine == "fast":
        raise MicranetError(f"engine='fast' cannot be used here: {refusal}; use engine='autograd'")
    return "autograd"


def _auto_chunk_size(device, height, width, engine="autograd"):
    table = _FAST_CHUNK_PIXELS if engine == "fast" else _CHUNK_PIXELS
    pixels = table.get(device.type, table["cuda"])
    return max(1, pixels // (height * width))


def _module_modes(model):
    return [(module, module.training) for module in model.modules()]


def local_maps(model, images, classes=None, *, normalize=True, chunk_size=None, device=None,
               progress=False, engine="auto"):
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
        Images per forward pass. Default: chosen per device, engine and image
        size (two 256 x 256 images at a time on CPU with autograd, four with
        the fast engine, 32 on CUDA; more when the
        images are smaller), which keeps the working memory on CPU to a few
        hundred MB besides the returned maps.
    device : str or torch.device, optional
        Where to compute. Default (or ``"auto"``): the model's device. Another
        device moves the model there for the call and back afterwards.
    progress : bool, optional
        Show a tqdm progress bar over images.
    engine : {"auto", "fast", "autograd"}, optional
        How the gradients are computed (see the module notes). ``"auto"``:
        ``"fast"`` where :func:`fast_engine_refusal` finds nothing against it
        (a plain :class:`MICRANet` on CPU), ``"autograd"`` otherwise.
        ``"fast"`` raises :class:`MicranetError` where it does not apply.

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
    engine = _choose_engine(engine, model, device)
    chunk_maps = _chunk_maps_fast if engine == "fast" else _chunk_maps
    if chunk_size is None:
        chunk_size = _auto_chunk_size(device, *batch.shape[-2:], engine)
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
            chunk_logits = chunk_maps(model, chunk, chosen, normalize, out)
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
